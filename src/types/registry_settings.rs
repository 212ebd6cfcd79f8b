//! Per-registry settings as the config resolves them and the registry
//! client reads them: a plain value, so neither layer needs the other.

use super::Secret;
use std::path::PathBuf;

/// Per-registry settings from the config file.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Use plain HTTP (explicit per registry only).
    pub insecure: bool,
    /// Extra CA certificate(s) to trust, PEM.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS, PEM.
    pub client_cert: Option<PathBuf>,
    /// Key for `client_cert`, PEM.
    pub client_key: Option<PathBuf>,
    /// Username; the password comes from `password`.
    pub username: Option<String>,
    /// Password or token, resolved from `password_env` / `password_file`.
    pub password: Option<Secret>,
    /// Why the configured password could not be read (raised when the registry is used).
    pub password_error: Option<String>,
    /// Most requests in flight to this host, process-wide (default 16).
    pub max_connections: Option<usize>,
}

/// `max_connections` when the config does not say.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
