//! `[registries."HOST"]`: credentials, TLS and limits per registry host,
//! and the secret rule every config secret follows (`KEY`, `KEY_env` or
//! `KEY_file`; inline only in a private config).

use super::ConfigError;
use crate::types::{RegistrySettings, Secret};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `[registries."host"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub insecure: bool,
    pub max_connections: Option<usize>,
}

/// Validate every `[registries."HOST"]` table.
pub(super) fn resolve(
    sections: HashMap<String, RegistrySection>,
    shown: &str,
    private: bool,
) -> Result<HashMap<String, RegistrySettings>, ConfigError> {
    let invalid = |message: String, hint: &str| ConfigError::Invalid {
        path: shown.to_owned(),
        message,
        hint: hint.to_owned(),
    };
    let mut registries = HashMap::new();
    for (host, section) in sections {
        let name = format!("registries.\"{host}\"");
        let (password, password_error) = secret(
            shown,
            &format!("{name}.password"),
            section.password.as_deref(),
            section.password_env.as_deref(),
            section.password_file.as_deref(),
            private,
        )?;
        if section.max_connections == Some(0) {
            return Err(invalid(
                format!("{name}.max_connections = 0 would never send a request"),
                "use 1 or more (default 16)",
            ));
        }
        let has_password = password.is_some() || password_error.is_some();
        if has_password && section.username.is_none() {
            return Err(invalid(
                format!("{name} has a password but no username"),
                "add username = \"…\"",
            ));
        }
        registries.insert(
            host.clone(),
            RegistrySettings {
                insecure: section.insecure,
                ca_file: section.ca_file,
                client_cert: section.client_cert,
                client_key: section.client_key,
                username: section.username,
                password,
                password_error,
                max_connections: section.max_connections,
            },
        );
    }
    Ok(registries)
}

/// A secret given as `KEY` (inline), `KEY_env` or `KEY_file` — at most
/// one. An inline secret is refused unless the config is private. A
/// variable or file that cannot be read only matters when the secret is
/// used: it comes back as the error to raise then (and by `config check`).
pub(crate) fn secret(
    shown: &str,
    key: &str,
    inline: Option<&str>,
    variable: Option<&str>,
    file: Option<&Path>,
    private: bool,
) -> Result<(Option<Secret>, Option<String>), ConfigError> {
    let invalid = |message: String, hint: String| ConfigError::Invalid {
        path: shown.to_owned(),
        message,
        hint,
    };
    let last = key.rsplit('.').next().unwrap_or(key);
    match (inline, variable, file) {
        (None, None, None) => Ok((None, None)),
        (Some(inline), None, None) => match private {
            true => Ok((Some(Secret::new(inline)), None)),
            false => Err(invalid(
                format!("{key} is inline in a file others can read"),
                format!("use {last}_env or {last}_file, or `chmod 600` the config"),
            )),
        },
        (None, Some(variable), None) => Ok(match std::env::var(variable) {
            Ok(value) => (Some(Secret::new(value)), None),
            Err(_) => (
                None,
                Some(format!(
                    "{shown}: {key}_env names {variable}, which is not set; export it, or remove {last}_env"
                )),
            ),
        }),
        (None, None, Some(file)) => Ok(match std::fs::read_to_string(file) {
            Ok(text) => (
                Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_owned())),
                None,
            ),
            Err(e) => (
                None,
                Some(format!(
                    "{shown}: {key}_file {}: {e}; check the path and its permissions",
                    file.display()
                )),
            ),
        }),
        _ => Err(invalid(
            format!("{key} is given more than once ({last}, {last}_env, {last}_file)"),
            "keep exactly one".into(),
        )),
    }
}
