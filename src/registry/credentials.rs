//! Where credentials come from, in order: the config (`username` with
//! `password_env` / `password_file`), then docker's `config.json`
//! (`$DOCKER_CONFIG`, `auths`, `credHelpers`, `credsStore`). Also writes
//! `config.json` for `ferry login` / `ferry logout` as `docker login` does.

use super::auth::Credentials;
use super::transport::RegistrySettings;
use crate::types::reference::DOCKER_HUB;
use crate::types::Secret;
use base64::Engine as _;
use std::io::Write;
use std::path::PathBuf;

/// The key docker uses in `config.json` for a registry host.
pub fn docker_config_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// Docker's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
}

/// Resolve credentials for `registry`: config first, then docker's files.
pub fn resolve(registry: &str, settings: &RegistrySettings) -> Option<Credentials> {
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        return Some(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    from_docker_config(registry)
}

fn from_docker_config(registry: &str) -> Option<Credentials> {
    let path = docker_config_dir()?.join("config.json");
    let bytes = std::fs::read(&path).ok()?;
    let mut keys = vec![docker_config_key(registry)];
    if registry == DOCKER_HUB {
        keys.extend([
            "docker.io".to_owned(),
            "index.docker.io".to_owned(),
            "registry-1.docker.io".to_owned(),
        ]);
    } else {
        keys.push(format!("https://{registry}"));
    }
    for key in keys {
        match docker_credential::get_credential_from_reader(bytes.as_slice(), &key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                return Some(Credentials::Basic {
                    username,
                    password: Secret::new(password),
                })
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                return Some(Credentials::IdentityToken(Secret::new(token)))
            }
            Err(error) => tracing::debug!(registry, key, %error, "no docker credential"),
        }
    }
    None
}

/// Why `login` or `logout` could not update docker's config.
#[derive(Debug, thiserror::Error)]
pub enum CredentialStoreError {
    #[error("cannot find docker's config directory: set DOCKER_CONFIG or HOME")]
    NoConfigDir,
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON ({source}); fix or remove it")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("credential helper docker-credential-{helper} failed: {message}")]
    Helper { helper: String, message: String },
}

fn load_config(
) -> Result<(PathBuf, serde_json::Map<String, serde_json::Value>), CredentialStoreError> {
    let dir = docker_config_dir().ok_or(CredentialStoreError::NoConfigDir)?;
    let path = dir.join("config.json");
    let map = match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::Map::new(),
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| CredentialStoreError::Json {
                path: path.display().to_string(),
                source,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(source) => {
            return Err(CredentialStoreError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    Ok((path, map))
}

fn save_config(
    path: &std::path::Path,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CredentialStoreError> {
    let io = |source| CredentialStoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(map).map_err(|e| io(e.into()))?;
    text.push(b'\n');
    // Readable by its owner alone: it may hold credentials.
    crate::types::atomic_file::write_atomically(path, Some(0o600), |file| file.write_all(&text))
        .map_err(io)
}

fn helper_for(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    map.get("credHelpers")
        .and_then(|helpers| helpers.get(key))
        .or_else(|| map.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn run_helper(helper: &str, verb: &str, input: &str) -> Result<(), CredentialStoreError> {
    let program = format!("docker-credential-{helper}");
    let failure = |message: String| CredentialStoreError::Helper {
        helper: helper.to_owned(),
        message,
    };
    let mut child = std::process::Command::new(&program)
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failure(format!("cannot run {program}: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(|e| failure(e.to_string()))?;
    let output = child
        .wait_with_output()
        .map_err(|e| failure(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        // Helper output may echo what it was given: show only the status.
        Err(failure(format!("exited with {}", output.status)))
    }
}

/// Store credentials for `registry` like `docker login` (helper if configured, else `auths`).
/// Returns the file or helper that now holds them.
pub fn login(
    registry: &str,
    username: &str,
    password: &Secret,
) -> Result<String, CredentialStoreError> {
    let (path, mut map) = load_config()?;
    let key = docker_config_key(registry);
    if let Some(helper) = helper_for(&map, &key) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password.expose()});
        run_helper(&helper, "store", &input.to_string())?;
        return Ok(format!("docker-credential-{helper}"));
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    let auths = map.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    auths
        .as_object_mut()
        .expect("object")
        .insert(key, serde_json::json!({ "auth": auth }));
    save_config(&path, &map)?;
    Ok(path.display().to_string())
}

/// Remove stored credentials for `registry`; returns whether any were there.
pub fn logout(registry: &str) -> Result<bool, CredentialStoreError> {
    let (path, mut map) = load_config()?;
    let key = docker_config_key(registry);
    if let Some(helper) = helper_for(&map, &key) {
        run_helper(&helper, "erase", &key)?;
    }
    let removed = map
        .get_mut("auths")
        .and_then(|auths| auths.as_object_mut())
        .is_some_and(|auths| auths.remove(&key).is_some());
    if removed {
        save_config(&path, &map)?;
    }
    Ok(removed)
}
