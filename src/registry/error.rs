//! Typed registry errors, classified for retries and for the user: each
//! message says what failed, on which registry or image, and what to do.

use crate::types::{Digest, ManifestError};

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: authentication failed{detail}; check the username and password (ferry login {registry}, or password_env / password_file in the config)")]
    Unauthorized { registry: String, detail: String },
    #[error(
        "{registry}: access to {what} denied{detail}; check that your account may {action} it"
    )]
    Denied {
        registry: String,
        what: String,
        action: String,
        detail: String,
    },
    #[error(
        "{what} not found on {registry}{detail}; {}",
        not_found_hint(registry, repository, what)
    )]
    NotFound {
        registry: String,
        /// The repository asked in, for the hint.
        repository: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {method} {path} failed with HTTP {status}{detail}")]
    Http {
        registry: String,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}: rate limited (HTTP 429) after {attempts} attempts; wait and retry, or log in to raise the limit")]
    RateLimited { registry: String, attempts: u32 },
    /// A TLS handshake that failed for a reason no retry fixes (an
    /// untrusted certificate, a plain-HTTP server on the port).
    #[error("cannot connect to {registry} over TLS: {problem}")]
    Tls { registry: String, problem: String },
    #[error("cannot reach {registry}: {message}; check the address, that the registry is running, and TLS settings (ca_file, insecure)")]
    Connect { registry: String, message: String },
    #[error("{what}: digest mismatch: expected {expected}, calculated {actual}; the registry served corrupt or altered data, nothing was stored")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: response larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: usize },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{registry}: unexpected response: {message}")]
    Protocol { registry: String, message: String },
    #[error("{registry}: {message}")]
    Config { registry: String, message: String },
    #[error("{registry}: the upload session for {digest} was lost ({reason}); the blob is uploaded again")]
    UploadLost {
        registry: String,
        digest: Digest,
        reason: String,
    },
    /// A one-shot streamed upload that broke off or was refused with a
    /// transient status, or a download whose resume the registry would not
    /// serve: the transport cannot continue it, so the caller starts the
    /// blob over ([`RegistryError::is_restartable`]).
    #[error("{registry}: {what} broke off: {reason}")]
    StreamBroken {
        registry: String,
        what: String,
        reason: String,
    },
    /// Local bytes (the store's, an archive's) that fail their digest or
    /// size: not the registry's fault, and no retry can fix them.
    #[error("{what} at {path} is corrupt: {problem}; its copy stopped there, before the bad bytes could be taken as good. {hint}")]
    LocalCorrupt {
        what: String,
        path: String,
        problem: String,
        hint: &'static str,
    },
    #[error("{what}: local I/O failed: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Content that failed the verifier, named by `what`.
    pub fn unverified(what: String, error: crate::types::VerifyError) -> RegistryError {
        match error {
            crate::types::VerifyError::Size { expected, actual } => RegistryError::SizeMismatch {
                what,
                expected,
                actual,
            },
            crate::types::VerifyError::Digest {
                expected, actual, ..
            } => RegistryError::DigestMismatch {
                what,
                expected,
                actual,
            },
        }
    }

    /// Whether starting a whole blob transfer over could succeed where the
    /// transport's own retries cannot help: bytes that failed verification
    /// on the way, an upload session the registry lost, a streamed upload
    /// that broke off. Errors of requests the transport already retried
    /// (connection trouble, 408, 429, 5xx) are final: one retry policy,
    /// never multiplied.
    pub fn is_restartable(&self) -> bool {
        matches!(
            self,
            RegistryError::DigestMismatch { .. }
                | RegistryError::SizeMismatch { .. }
                | RegistryError::UploadLost { .. }
                | RegistryError::StreamBroken { .. }
        )
    }

    /// Whether a later attempt could succeed (connection trouble, 408, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connect { .. }
            | RegistryError::RateLimited { .. }
            | RegistryError::UploadLost { .. } => true,
            RegistryError::Http { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

/// The short error text a registry put in its JSON body, if any.
pub fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Option<Vec<Item>>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(Body {
        errors: Some(items),
    }) = serde_json::from_slice::<Body>(body)
    else {
        return String::new();
    };
    let text: Vec<String> = items
        .iter()
        .map(|item| {
            let code = item.code.as_deref().unwrap_or("");
            let message: String = item
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            format!("{code} {message}").trim().to_owned()
        })
        .take(3)
        .collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({})", text.join("; "))
    }
}

/// What to check when something is not found: the tag (listing the
/// repository's tags shows which exist), or, when the repository itself is
/// missing, its name.
fn not_found_hint(registry: &str, repository: &str, what: &str) -> String {
    if what == format!("{registry}/{repository}") {
        "check the repository name: it includes its namespace (Docker Hub's own images are library/NAME), and the registry may hide repositories you may not read".to_owned()
    } else {
        format!("check the name and tag (`ferry tags {registry}/{repository}` lists its tags)")
    }
}
