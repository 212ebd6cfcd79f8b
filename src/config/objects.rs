//! `[object_store]` (where buckets are, how to sign) and `[state]` (job
//! state on object storage, and how runs exclude each other there).

use super::resolve::Resolver;
use super::ConfigError;
use crate::types::object_settings::{ObjectSettings, ObjectUrl, MIN_PART_SIZE};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// `[object_store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSection {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
    pub path_style: Option<bool>,
    pub profile: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub part_size: Option<Spanned<String>>,
    #[serde(default)]
    pub instance_credentials: bool,
}

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    pub url: Option<Spanned<String>>,
    pub locking: Option<Spanned<String>>,
    pub lease: Option<Spanned<String>>,
}

/// How job runs on object storage keep out of each other's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// A lease per job run, by conditional writes (the server must enforce them).
    Leases,
    /// No leases: each job runs on one shard only (`--shard I/N`, one pod
    /// per index), and state is written without conditions.
    ShardsOnly,
}

/// Job state on object storage.
#[derive(Debug, Clone)]
pub struct StateSpec {
    pub url: ObjectUrl,
    pub locking: Locking,
    /// Seconds a lease lasts between renewals.
    pub lease_seconds: i64,
}

/// Resolve `[object_store]`. A secret that cannot be read is kept as an
/// error and raised when a bucket is used (like registry passwords).
pub fn object_settings(
    section: &ObjectStoreSection,
    resolver: &Resolver<'_>,
    private: bool,
) -> Result<ObjectSettings, ConfigError> {
    let invalid = |message: String, hint: &str| ConfigError::Invalid {
        path: resolver.path.to_owned(),
        message,
        hint: hint.to_owned(),
    };
    let (secret, secret_error) = super::registries::secret(
        resolver.path,
        "object_store.secret_access_key",
        section.secret_access_key.as_deref(),
        section.secret_access_key_env.as_deref(),
        section.secret_access_key_file.as_deref(),
        private,
    )?;
    let has_secret = secret.is_some() || secret_error.is_some();
    if has_secret != section.access_key_id.is_some() {
        return Err(invalid(
            "object_store sets only one of access_key_id and a secret access key".into(),
            "set both, or neither (then AWS_* variables or a profile are used)",
        ));
    }
    let part_size = match &section.part_size {
        None => None,
        Some(text) => {
            let size = crate::types::rate::parse_rate(text.get_ref())
                .map_err(|e| resolver.error(text.span(), e, "e.g. part_size = \"16MiB\""))?;
            if size < MIN_PART_SIZE {
                return Err(resolver.error(
                    text.span(),
                    format!(
                        "part_size = {:?} is below S3's 5 MiB minimum",
                        text.get_ref()
                    ),
                    "use 5MiB or more (default 16MiB)",
                ));
            }
            Some(size)
        }
    };
    Ok(ObjectSettings {
        endpoint: section.endpoint.clone(),
        region: section.region.clone(),
        allow_http: section.allow_http,
        path_style: section.path_style,
        profile: section.profile.clone(),
        access_key_id: section.access_key_id.clone(),
        secret_access_key: secret,
        secret_error,
        part_size,
        instance_credentials: section.instance_credentials,
    })
}

/// Resolve `[state]`: `None` keeps state in the store.
pub fn state(
    section: &StateSection,
    resolver: &Resolver<'_>,
) -> Result<Option<StateSpec>, ConfigError> {
    let Some(url) = &section.url else {
        if let Some(locking) = &section.locking {
            return Err(resolver.error(
                locking.span(),
                "state.locking without state.url",
                "add url = \"s3://BUCKET/PREFIX\", or remove locking",
            ));
        }
        return Ok(None);
    };
    let parsed = ObjectUrl::parse(url.get_ref())
        .map_err(|e| resolver.error(url.span(), e, "e.g. url = \"s3://backups/ferry-state\""))?;
    let locking = match section
        .locking
        .as_ref()
        .map(|l| (l.get_ref().as_str(), l.span()))
    {
        None | Some(("leases", _)) => Locking::Leases,
        Some(("shards-only", _)) => Locking::ShardsOnly,
        Some((other, span)) => {
            return Err(resolver.error(
                span,
                format!("locking = {other:?}"),
                "use \"leases\" (default) or \"shards-only\"",
            ))
        }
    };
    let lease_seconds = match &section.lease {
        None => 120,
        Some(text) => match resolver.duration(text, "e.g. lease = \"2m\"")? {
            seconds @ 3.. => seconds as i64,
            _ => {
                return Err(resolver.error(
                    text.span(),
                    "a lease shorter than 3s would expire between renewals",
                    "e.g. lease = \"2m\"",
                ))
            }
        },
    };
    Ok(Some(StateSpec {
        url: parsed,
        locking,
        lease_seconds,
    }))
}
