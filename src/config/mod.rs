//! The TOML config in two stages: a strict serde mirror of the file
//! (unknown keys rejected with file, line and column) resolved into
//! validated settings. Secrets come from `password_env` / `password_file`
//! (or docker's credentials); an inline `password` is accepted only when
//! the file is readable by its owner alone.

pub mod jobs;
pub mod notify;
pub mod objects;
pub mod registries;
mod resolve;

use crate::types::Platform;
use crate::types::RegistrySettings;
pub use jobs::{JobKind, JobSpec, RepositoryTarget};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The config version this ferry understands.
pub const CONFIG_VERSION: u32 = 1;

/// A config file could not be used; always a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}\n  hint: {hint}")]
    Invalid {
        path: String,
        message: String,
        hint: String,
    },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: Option<u32>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub defaults: DefaultsSection,
    #[serde(default)]
    pub registries: HashMap<String, registries::RegistrySection>,
    #[serde(default)]
    pub sync: Vec<jobs::SyncSection>,
    #[serde(default)]
    pub backup: Vec<jobs::BackupSection>,
    #[serde(default)]
    pub retag: Vec<jobs::RetagSection>,
    #[serde(default)]
    pub prune: Vec<jobs::PruneSection>,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub notify: Vec<notify::NotifySection>,
    #[serde(default)]
    pub object_store: objects::ObjectStoreSection,
    #[serde(default)]
    pub state: objects::StateSection,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// `HOST:PORT` for `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: Option<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: Option<PathBuf>,
}

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSection {
    pub concurrency: Option<usize>,
    pub bandwidth: Option<toml::Spanned<String>>,
    pub parallel_images: Option<usize>,
    pub platforms: Option<Vec<String>>,
    pub timezone: Option<toml::Spanned<String>>,
    pub stall_timeout: Option<toml::Spanned<String>>,
    pub catch_up: Option<toml::Spanned<String>>,
}

/// Platforms named in `[defaults] platforms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultPlatforms {
    Host,
    All,
    List(Vec<Platform>),
}

/// The validated config.
#[derive(Debug)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub store_path: Option<PathBuf>,
    pub concurrency: usize,
    /// Images a job copies at once (`parallel_images`).
    pub parallel_images: usize,
    pub platforms: DefaultPlatforms,
    pub registries: HashMap<String, RegistrySettings>,
    /// Jobs in file order: sync, backup, retag, prune tables.
    pub jobs: Vec<JobSpec>,
    /// The schedules' time zone (`[defaults] timezone`).
    pub timezone: crate::policy::cron::Zone,
    /// Whether a run missed during downtime runs once at start (`catch_up = "once"`).
    pub catch_up: bool,
    /// How long a network read may make no progress (`stall_timeout`).
    pub stall_timeout: std::time::Duration,
    /// Where the daemon serves metrics and health (`[daemon] metrics_addr`).
    pub metrics_addr: Option<String>,
    /// Webhooks called after job runs (`[[notify]]`).
    pub notify: Vec<notify::NotifySpec>,
    /// Bytes per second for downloads and for uploads (`[defaults] bandwidth`).
    pub bandwidth: Option<u64>,
    /// Object storage settings (`[object_store]`).
    pub objects: crate::types::object_settings::ObjectSettings,
    /// Job state on object storage (`[state]`); `None`: in the store.
    pub state: Option<objects::StateSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            store_path: None,
            concurrency: 6,
            parallel_images: 4,
            platforms: DefaultPlatforms::Host,
            registries: HashMap::new(),
            jobs: Vec::new(),
            timezone: crate::policy::cron::Zone::utc(),
            catch_up: true,
            stall_timeout: std::time::Duration::from_secs(120),
            metrics_addr: None,
            notify: Vec::new(),
            bandwidth: None,
            objects: Default::default(),
            state: None,
        }
    }
}

impl Config {
    /// Load and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate config text; `path` names it in errors and decides
    /// whether an inline secret is acceptable.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let file: ConfigFile = toml::from_str(text).map_err(|error| {
            let position = error.span().map(|span| line_column(text, span.start));
            let message = error.message().trim().to_owned();
            match position {
                Some((line, column)) => ConfigError::Parse {
                    path: format!("{shown}:{line}:{column}"),
                    message,
                },
                None => ConfigError::Parse {
                    path: shown.clone(),
                    message,
                },
            }
        })?;
        let invalid = |message: String, hint: &str| ConfigError::Invalid {
            path: shown.clone(),
            message,
            hint: hint.to_owned(),
        };
        match file.version {
            Some(CONFIG_VERSION) => {}
            Some(other) => {
                return Err(invalid(
                    format!("config version {other} is newer than this ferry understands"),
                    "upgrade ferry, or write `version = 1`",
                ))
            }
            None => {
                return Err(invalid(
                    "missing `version`".into(),
                    "add `version = 1` at the top",
                ))
            }
        }
        let concurrency = file.defaults.concurrency.unwrap_or(6);
        if !(1..=64).contains(&concurrency) {
            return Err(invalid(
                format!("defaults.concurrency = {concurrency}"),
                "use a number from 1 to 64",
            ));
        }
        let parallel_images = file.defaults.parallel_images.unwrap_or(4);
        if !(1..=64).contains(&parallel_images) {
            return Err(invalid(
                format!("defaults.parallel_images = {parallel_images}"),
                "use a number from 1 to 64",
            ));
        }
        let platforms = match file.defaults.platforms.as_deref() {
            None => DefaultPlatforms::Host,
            Some([all]) if all == "all" => DefaultPlatforms::All,
            Some(list) => DefaultPlatforms::List(
                list.iter()
                    .map(|p| {
                        p.parse()
                            .map_err(|e: crate::types::platform::PlatformError| {
                                invalid(
                                    e.to_string(),
                                    "write platforms = [\"linux/amd64\"] or [\"all\"]",
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let private = owner_only(path);
        let registries = registries::resolve(file.registries, &shown, private)?;
        let resolver = resolve::Resolver { path: &shown, text };
        let mut specs = Vec::new();
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut add = |spec: JobSpec, span: std::ops::Range<usize>| -> Result<(), ConfigError> {
            if names.insert(spec.name.clone(), ()).is_some() {
                return Err(resolver.error(
                    span,
                    format!("a second job is named {:?}", spec.name),
                    "job names must be unique",
                ));
            }
            specs.push(spec);
            Ok(())
        };
        for section in &file.sync {
            add(resolver.sync(section)?, section.name.span())?;
        }
        for section in &file.backup {
            add(resolver.backup(section)?, section.name.span())?;
        }
        for section in &file.retag {
            add(resolver.retag(section)?, section.name.span())?;
        }
        for section in &file.prune {
            add(resolver.prune(section)?, section.name.span())?;
        }
        // Run jobs in the order the file lists them, whatever their kind.
        let mut order: Vec<usize> = file
            .sync
            .iter()
            .map(|j| j.name.span().start)
            .chain(file.backup.iter().map(|j| j.name.span().start))
            .chain(file.retag.iter().map(|j| j.name.span().start))
            .chain(file.prune.iter().map(|j| j.name.span().start))
            .collect();
        let mut paired: Vec<(usize, JobSpec)> = order.drain(..).zip(specs.drain(..)).collect();
        paired.sort_by_key(|(start, _)| *start);
        let specs: Vec<JobSpec> = paired.into_iter().map(|(_, spec)| spec).collect();
        let timezone = match &file.defaults.timezone {
            None => crate::policy::cron::Zone::utc(),
            Some(zone) => resolver.zone(zone)?,
        };
        let catch_up = match file
            .defaults
            .catch_up
            .as_ref()
            .map(|c| (c.get_ref().as_str(), c.span()))
        {
            None | Some(("once", _)) => true,
            Some(("skip", _)) => false,
            Some((other, span)) => {
                return Err(resolver.error(
                    span,
                    format!("catch_up = {other:?}"),
                    "use \"once\" or \"skip\"",
                ))
            }
        };
        let stall_timeout = match &file.defaults.stall_timeout {
            None => std::time::Duration::from_secs(120),
            Some(text) => match resolver.duration(text, "e.g. stall_timeout = \"2m\"")? {
                0 => {
                    return Err(resolver.error(
                        text.span(),
                        "stall_timeout = 0 would abandon every read",
                        "e.g. stall_timeout = \"2m\"",
                    ))
                }
                seconds => std::time::Duration::from_secs(seconds),
            },
        };
        let bandwidth = match &file.defaults.bandwidth {
            None => None,
            Some(text) => Some(
                crate::types::rate::parse_rate(text.get_ref())
                    .map_err(|e| resolver.error(text.span(), e, "e.g. bandwidth = \"50MiB/s\""))?,
            ),
        };
        let webhooks = notify::resolve(&file.notify, &specs, &resolver, private)?;
        Ok(Config {
            path: Some(path.to_owned()),
            store_path: file.store.path,
            concurrency,
            parallel_images,
            platforms,
            registries,
            jobs: specs,
            timezone,
            catch_up,
            stall_timeout,
            metrics_addr: file.daemon.metrics_addr,
            notify: webhooks,
            bandwidth,
            objects: objects::object_settings(&file.object_store, &resolver, private)?,
            state: objects::state(&file.state, &resolver)?,
        })
    }
}

/// Whether only the owner may read `path` (no group or other bits).
fn owner_only(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_with_position() {
        let error = Config::parse(
            "version = 1\n[defaults]\nconcurrensy = 3\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("f.toml:3:1"), "{text}");
        assert!(text.contains("concurrensy"), "{text}");
    }

    #[test]
    fn refuses_newer_versions_and_bad_values() {
        assert!(Config::parse("version = 2\n", Path::new("f"))
            .unwrap_err()
            .to_string()
            .contains("newer"));
        assert!(
            Config::parse("version = 1\n[defaults]\nconcurrency = 0\n", Path::new("f")).is_err()
        );
        assert!(Config::parse(
            "version = 1\n[defaults]\nplatforms = [\"linux\"]\n",
            Path::new("f")
        )
        .is_err());
    }

    #[test]
    fn refuses_inline_secret_in_readable_file() {
        let text = "version = 1\n[registries.\"r.example\"]\nusername = \"u\"\npassword = \"p\"\n";
        let error = Config::parse(text, Path::new("/nonexistent/f.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("password_env"), "{error}");
        assert!(!error.contains("\"p\""), "{error}");
    }
}
