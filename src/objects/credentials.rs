//! Where the endpoint, region and keys come from, first match wins: the
//! config's `[object_store]`, then the standard `AWS_*` variables, then the
//! profile (`AWS_PROFILE`, or the config's `profile`, else `default`) in
//! `~/.aws/credentials` and `~/.aws/config`. Pod and task identities
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_CONTAINER_CREDENTIALS_*`) are passed
//! on to the client when no key is set, and the EC2 instance profile is
//! used when asked for (`instance_credentials = true`): never a silent
//! request to the metadata address.

use super::ObjectError;
use crate::types::object_settings::ObjectSettings;
use crate::types::Secret;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use std::collections::HashMap;

pub struct Resolved {
    pub endpoint: Option<String>,
    pub region: String,
    pub allow_http: bool,
    pub path_style: bool,
    keys: Option<(String, Secret, Option<Secret>)>,
    identity: Vec<(AmazonS3ConfigKey, String)>,
}

impl Resolved {
    pub fn apply_credentials(&self, mut builder: AmazonS3Builder) -> AmazonS3Builder {
        if let Some((id, secret, token)) = &self.keys {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
            if let Some(token) = token {
                builder = builder.with_token(token.expose());
            }
        }
        for (key, value) in &self.identity {
            builder = builder.with_config(*key, value);
        }
        builder
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn truthy(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

/// One INI section of an AWS shared file: `[name]` or `[profile name]`.
fn profile_section(path: &std::path::Path, profile: &str) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut values = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside =
                name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
            continue;
        }
        if inside {
            if let Some((key, value)) = line.split_once('=') {
                values.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
    values
}

fn aws_file(variable: &str, name: &str) -> Option<std::path::PathBuf> {
    env(variable).map(Into::into).or_else(|| {
        std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".aws").join(name))
    })
}

pub fn resolve(settings: &ObjectSettings) -> Result<Resolved, ObjectError> {
    if let Some(error) = &settings.secret_error {
        return Err(ObjectError::Config(error.clone()));
    }
    let profile = settings
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let profile_config = aws_file("AWS_CONFIG_FILE", "config")
        .map(|p| profile_section(&p, &profile))
        .unwrap_or_default();
    let profile_keys = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .map(|p| profile_section(&p, &profile))
        .unwrap_or_default();
    if settings.profile.is_some() && profile_keys.is_empty() && profile_config.is_empty() {
        return Err(ObjectError::Config(format!(
            "[object_store] profile = {profile:?}: no such profile in ~/.aws/credentials or ~/.aws/config; add it, or remove `profile`"
        )));
    }
    let endpoint = settings
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .or_else(|| profile_config.get("endpoint_url").cloned())
        .map(|e| e.trim_end_matches('/').to_owned());
    let region = settings
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile_config.get("region").cloned())
        .unwrap_or_else(|| "us-east-1".into());
    let allow_http = settings
        .allow_http
        .or_else(|| env("AWS_ALLOW_HTTP").map(|v| truthy(&v)))
        .unwrap_or(false);
    if let Some(endpoint) = &endpoint {
        if endpoint.starts_with("http://") && !allow_http {
            return Err(ObjectError::Config(format!(
                "object storage endpoint {endpoint} is plain HTTP; say so with allow_http = true in [object_store] (or AWS_ALLOW_HTTP=true), or use https://"
            )));
        }
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(ObjectError::Config(format!(
                "object storage endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
    }
    let path_style = settings
        .path_style
        .or_else(|| env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").map(|v| !truthy(&v)))
        .unwrap_or(true);
    // Keys: config, else environment, else profile; never half of each.
    let from_config = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone(), None)),
        (None, None) => None,
        _ => {
            return Err(ObjectError::Config(
                "[object_store] sets only one of access_key_id and the secret access key; set both, or neither to use AWS_* variables or a profile".into(),
            ))
        }
    };
    let from_env = || match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Some((
            id,
            Secret::new(secret),
            env("AWS_SESSION_TOKEN").map(Secret::new),
        )),
        _ => None,
    };
    let from_profile = || {
        let id = profile_keys.get("aws_access_key_id")?;
        let secret = profile_keys.get("aws_secret_access_key")?;
        Some((
            id.clone(),
            Secret::new(secret.clone()),
            profile_keys
                .get("aws_session_token")
                .map(|t| Secret::new(t.clone())),
        ))
    };
    let keys = match settings.profile {
        // A profile the config names wins over stray variables.
        Some(_) => from_config.or_else(from_profile).or_else(from_env),
        None => from_config.or_else(from_env).or_else(from_profile),
    };
    let mut identity = Vec::new();
    if keys.is_none() {
        for (variable, key) in [
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                AmazonS3ConfigKey::WebIdentityTokenFile,
            ),
            ("AWS_ROLE_ARN", AmazonS3ConfigKey::RoleArn),
            ("AWS_ROLE_SESSION_NAME", AmazonS3ConfigKey::RoleSessionName),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
            ),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                AmazonS3ConfigKey::ContainerCredentialsFullUri,
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
            ),
        ] {
            if let Some(value) = env(variable) {
                identity.push((key, value));
            }
        }
        if identity.is_empty() && settings.instance_credentials {
            // The EC2 instance profile, through IMDSv2 (the endpoint can be
            // moved, as the AWS SDKs allow).
            let metadata = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".into());
            identity.push((
                AmazonS3ConfigKey::MetadataEndpoint,
                metadata.trim_end_matches('/').to_owned(),
            ));
        } else if identity.is_empty() {
            return Err(ObjectError::Config(
                "no credentials for object storage: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE or [object_store] profile), access_key_id with secret_access_key_env in [object_store], or instance_credentials = true on an EC2 instance with a role".into(),
            ));
        }
    }
    Ok(Resolved {
        endpoint,
        region,
        allow_http,
        path_style,
        keys,
        identity,
    })
}
