//! `[[notify]]` tables: webhooks called after job runs (see `jobs::notify`).

use crate::types::Secret;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// `[[notify]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// Inline URL (a secret: refused unless the config is private, like passwords).
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub on: Vec<Spanned<String>>,
    #[serde(default)]
    pub jobs: Vec<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

/// When a webhook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    Failure,
    Success,
    Change,
    Deferred,
}

impl NotifyOn {
    /// Parse a config word.
    pub fn parse(word: &str) -> Option<NotifyOn> {
        match word {
            "failure" => Some(NotifyOn::Failure),
            "success" => Some(NotifyOn::Success),
            "change" => Some(NotifyOn::Change),
            "deferred" => Some(NotifyOn::Deferred),
            _ => None,
        }
    }
}

/// A validated `[[notify]]`.
#[derive(Debug, Clone)]
pub struct NotifySpec {
    /// The URL, or why it could not be read (raised by `config check` and
    /// logged when the webhook would be called, like a missing password).
    pub url: Result<Secret, String>,
    pub on: Vec<NotifyOn>,
    /// Only these jobs (empty: every job).
    pub jobs: Vec<String>,
    /// `{"text": …}` for Slack-compatible incoming webhooks.
    pub slack: bool,
}
