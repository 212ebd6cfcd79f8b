//! `[[notify]]` tables: webhooks called after job runs (see `jobs::notify`).

use super::resolve::Resolver;
use super::{ConfigError, JobSpec};
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

/// Validate the `[[notify]]` tables against the config's jobs. A URL whose
/// variable or file cannot be read is kept as an error (raised by `config
/// check`, and logged when the webhook would be called).
pub(super) fn resolve(
    sections: &[NotifySection],
    specs: &[JobSpec],
    resolver: &Resolver<'_>,
    private: bool,
) -> Result<Vec<NotifySpec>, ConfigError> {
    let mut webhooks = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let name = format!("notify #{}", index + 1);
        let (url, unreadable) = super::registries::secret(
            resolver.path,
            &format!("{name}.url"),
            section.url.as_deref(),
            section.url_env.as_deref(),
            section.url_file.as_deref(),
            private,
        )?;
        let url = match (url, unreadable) {
            (Some(url), _) => Ok(url.expose().trim().to_owned()),
            (None, Some(error)) => Err(error),
            (None, None) => {
                return Err(ConfigError::Invalid {
                    path: resolver.path.to_owned(),
                    message: format!("{name} needs exactly one of url, url_env, url_file"),
                    hint: "e.g. url_env = \"FERRY_WEBHOOK\"".into(),
                })
            }
        };
        let url =
            url.and_then(
                |url| match url.starts_with("https://") || url.starts_with("http://") {
                    true => Ok(Secret::new(url)),
                    false => Err(format!(
                        "{name}: the URL is not http(s); give the webhook's full https:// URL"
                    )),
                },
            );
        let mut on = Vec::new();
        for word in &section.on {
            on.push(NotifyOn::parse(word.get_ref()).ok_or_else(|| {
                resolver.error(
                    word.span(),
                    format!("on = {:?} is not an event", word.get_ref()),
                    "use \"failure\", \"success\", \"change\" or \"deferred\"",
                )
            })?);
        }
        if on.is_empty() {
            on.push(NotifyOn::Failure);
        }
        for job in &section.jobs {
            if !specs.iter().any(|s: &JobSpec| &s.name == job.get_ref()) {
                return Err(resolver.error(
                    job.span(),
                    format!("{name}: no job is named {:?}", job.get_ref()),
                    "name jobs of this config, or drop `jobs` for all",
                ));
            }
        }
        let slack = match section.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => false,
            Some("slack") => true,
            Some(other) => {
                let span = section.format.as_ref().expect("set").span();
                return Err(resolver.error(
                    span,
                    format!("format = {other:?}"),
                    "use \"json\" (default) or \"slack\"",
                ));
            }
        };
        webhooks.push(NotifySpec {
            url,
            on,
            jobs: section.jobs.iter().map(|j| j.get_ref().clone()).collect(),
            slack,
        });
    }
    Ok(webhooks)
}
