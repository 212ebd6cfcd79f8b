//! Resolving the job tables into validated specs: schedules, durations,
//! tag filters, platforms and repositories checked, each error naming the
//! `file:line:column` of the value at fault and the fix.

use super::jobs::*;
use crate::policy::{Schedule, TagFilter};
use crate::types::{Platform, Reference};
use std::collections::HashMap;
use toml::Spanned;

mod tables;

/// Turns spans into `file:line:column` errors while resolving.
pub struct Resolver<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

impl Resolver<'_> {
    /// An error at a span.
    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
        hint: &str,
    ) -> super::ConfigError {
        let (line, column) = super::line_column(self.text, span.start);
        super::ConfigError::Invalid {
            path: format!("{}:{line}:{column}", self.path),
            message: message.into(),
            hint: hint.to_owned(),
        }
    }

    fn schedule(
        &self,
        value: &Option<Spanned<String>>,
    ) -> Result<Option<Schedule>, super::ConfigError> {
        value
            .as_ref()
            .map(|s| {
                s.get_ref().parse::<Schedule>().map_err(|e| {
                    self.error(
                        s.span(),
                        e,
                        "e.g. schedule = \"0 */6 * * *\", \"@daily\" or \"@every 30m\"",
                    )
                })
            })
            .transpose()
    }

    /// A duration in seconds (`90s`, `30m`, `24h`, `7d`), or an error at its position.
    pub fn duration(&self, text: &Spanned<String>, hint: &str) -> Result<u64, super::ConfigError> {
        crate::types::time::parse_duration(text.get_ref())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                self.error(
                    text.span(),
                    format!("bad duration {:?}", text.get_ref()),
                    hint,
                )
            })
    }

    /// A time zone: `UTC`, a fixed offset, or an IANA name.
    pub fn zone(
        &self,
        text: &Spanned<String>,
    ) -> Result<crate::policy::cron::Zone, super::ConfigError> {
        crate::policy::cron::Zone::parse(text.get_ref()).ok_or_else(|| {
            self.error(
                text.span(),
                format!("time zone {:?} is not known", text.get_ref()),
                "use \"UTC\", an offset like \"+02:00\", or an IANA name like \"Europe/Berlin\"",
            )
        })
    }

    fn jitter(&self, value: &Option<Spanned<String>>) -> Result<u64, super::ConfigError> {
        value
            .as_ref()
            .map_or(Ok(0), |text| self.duration(text, "e.g. jitter = \"5m\""))
    }

    fn regexes(&self, list: &[Spanned<String>]) -> Result<Vec<regex::Regex>, super::ConfigError> {
        list.iter()
            .map(|r| {
                regex::Regex::new(r.get_ref()).map_err(|e| {
                    self.error(
                        r.span(),
                        format!(
                            "bad regex {:?}: {}",
                            r.get_ref(),
                            e.to_string().lines().last().unwrap_or("")
                        ),
                        "patterns are regexes, e.g. \"^1\\\\.\"",
                    )
                })
            })
            .collect()
    }

    fn filter(&self, tags: &TagsSection) -> Result<TagFilter, super::ConfigError> {
        let regexes = |list: &[Spanned<String>]| self.regexes(list);
        let semver = match &tags.semver {
            None => None,
            Some(range) => Some(semver::VersionReq::parse(range.get_ref()).map_err(|e| {
                self.error(
                    range.span(),
                    format!("bad semver range {:?}: {e}", range.get_ref()),
                    "e.g. semver = \">=1.25, <2\"",
                )
            })?),
        };
        let keep_latest = match &tags.keep_latest {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.error(
                    n.span(),
                    "keep_latest = 0 keeps nothing",
                    "use a number ≥ 1, or remove it",
                ))
            }
            other => other.as_ref().map(|n| *n.get_ref()),
        };
        Ok(TagFilter {
            include: regexes(&tags.include)?,
            exclude: regexes(&tags.exclude)?,
            semver,
            keep_latest,
        })
    }

    fn platforms(
        &self,
        list: &Option<Vec<Spanned<String>>>,
    ) -> Result<Option<Vec<Platform>>, super::ConfigError> {
        list.as_ref()
            .map(|list| {
                list.iter()
                    .map(|p| {
                        p.get_ref().parse::<Platform>().map_err(|e| {
                            self.error(
                                p.span(),
                                e.to_string(),
                                "e.g. platforms = [\"linux/amd64\", \"linux/arm64\"]",
                            )
                        })
                    })
                    .collect()
            })
            .transpose()
    }

    fn repository(&self, text: &Spanned<String>) -> Result<Reference, super::ConfigError> {
        let reference = Reference::parse_repository_or_ref(text.get_ref()).map_err(|e| {
            self.error(
                text.span(),
                e.to_string(),
                "give a repository such as registry.example.com/team/app",
            )
        })?;
        if reference.tag().is_some() || reference.digest().is_some() {
            return Err(self.error(
                text.span(),
                format!(
                    "{} names a tag; a repository is expected here",
                    text.get_ref()
                ),
                "drop the :tag; select tags with tags = { ... }",
            ));
        }
        Ok(reference)
    }

    /// A sync `source`: a repository, or `HOST[/PREFIX]/*` (one level) or
    /// `/**` (every depth) for every repository under a prefix.
    fn sync_source(&self, text: &Spanned<String>) -> Result<SyncSource, super::ConfigError> {
        let raw = text.get_ref();
        let (rest, deep) = match (raw.strip_suffix("/**"), raw.strip_suffix("/*")) {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, false),
            (None, None) => return self.repository(text).map(SyncSource::Repository),
        };
        if rest.contains('*') {
            return Err(self.error(
                text.span(),
                format!("{raw}: a wildcard may only end the source"),
                "use HOST/prefix/* (one level) or HOST/prefix/** (every depth)",
            ));
        }
        let (registry, prefix) = match rest.split_once('/') {
            None => (rest.to_owned(), String::new()),
            Some(_) => {
                let reference = self.repository(&Spanned::new(text.span(), rest.to_owned()))?;
                (
                    reference.registry().to_owned(),
                    reference.repository().to_owned(),
                )
            }
        };
        if !rest.contains('.') && !rest.contains(':') && !rest.starts_with("localhost") {
            return Err(self.error(
                text.span(),
                format!("{raw}: a wildcard needs the registry host first"),
                "e.g. source = \"registry.internal:5000/team/**\"",
            ));
        }
        Ok(SyncSource::Under {
            registry,
            prefix,
            deep,
        })
    }

    fn repository_target(
        &self,
        text: &Spanned<String>,
        allow_whole_store: bool,
    ) -> Result<RepositoryTarget, super::ConfigError> {
        match text.get_ref().as_str() {
            "store" if allow_whole_store => Ok(RepositoryTarget::Store(None)),
            other => match other.strip_prefix("store/") {
                Some(rest) => {
                    let spanned = Spanned::new(text.span(), rest.to_owned());
                    Ok(RepositoryTarget::Store(Some(self.repository(&spanned)?)))
                }
                None => Ok(RepositoryTarget::Registry(self.repository(text)?)),
            },
        }
    }

    fn common(
        &self,
        name: &Spanned<String>,
        schedule: &Option<Spanned<String>>,
        dry_run: bool,
        jitter: &Option<Spanned<String>>,
        timezone: &Option<Spanned<String>>,
        kind: JobKind,
    ) -> Result<JobSpec, super::ConfigError> {
        let valid_name = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(self.error(
                name.span(),
                format!(
                    "job name {:?} must be letters, digits, '-', '_' or '.'",
                    name.get_ref()
                ),
                "e.g. name = \"mirror-nginx\"",
            ));
        }
        Ok(JobSpec {
            name: name.get_ref().clone(),
            schedule: self.schedule(schedule)?,
            schedule_text: schedule.as_ref().map(|s| s.get_ref().clone()),
            dry_run,
            jitter: self.jitter(jitter)?,
            timezone: timezone.as_ref().map(|z| self.zone(z)).transpose()?,
            kind,
        })
    }

    /// Resolve a `[[sync]]` table.
    pub fn sync(&self, section: &SyncSection) -> Result<JobSpec, super::ConfigError> {
        let texts = match section.source.get_ref() {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        };
        let sources = texts
            .iter()
            .map(|s| self.sync_source(&Spanned::new(section.source.span(), s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        // Listed repositories go to `target/<last path part>`: two with the
        // same last part would overwrite each other.
        let mut last_parts: HashMap<String, String> = HashMap::new();
        for (text, source) in texts.iter().zip(&sources) {
            if let (SyncSource::Repository(reference), true) = (source, sources.len() > 1) {
                let last = reference
                    .repository()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if let Some(other) = last_parts.insert(last.clone(), text.clone()) {
                    return Err(self.error(
                        section.source.span(),
                        format!("{other} and {text} would both be mirrored to target/{last}"),
                        "sync them in separate jobs, or use a wildcard (HOST/team/**), which keeps each repository's path",
                    ));
                }
            }
        }
        let wildcard = sources
            .iter()
            .any(|s| matches!(s, SyncSource::Under { .. }));
        let repositories = match &section.repositories {
            Some(narrowed) => TagFilter {
                include: self.regexes(&narrowed.include)?,
                exclude: self.regexes(&narrowed.exclude)?,
                semver: None,
                keep_latest: None,
            },
            None => TagFilter::default(),
        };
        if sources.is_empty() {
            return Err(self.error(
                section.source.span(),
                "source is empty",
                "give a repository or a list of them",
            ));
        }
        let target = self.repository_target(&section.target, true)?;
        if matches!(target, RepositoryTarget::Store(Some(_))) && (sources.len() > 1 || wildcard) {
            return Err(self.error(
                section.target.span(),
                "several sources cannot share one store repository",
                "use target = \"store\"",
            ));
        }
        if let Some(template) = &section.backup_overwritten {
            if !template.get_ref().contains("{tag}") {
                return Err(self.error(
                    template.span(),
                    "backup_overwritten must contain {tag}",
                    "e.g. backup_overwritten = \"{tag}-{date}\"",
                ));
            }
        }
        let split_repositories = match &section.split {
            None => false,
            Some(split) if split.get_ref() == "repositories" => true,
            Some(split) => {
                return Err(self.error(
                    split.span(),
                    format!("split = {:?}", split.get_ref()),
                    "the one way to split a sync job is split = \"repositories\"",
                ))
            }
        };
        let spec = SyncSpec {
            split_repositories,
            sources,
            repositories,
            target,
            filter: self.filter(&section.tags)?,
            platforms: self.platforms(&section.platforms)?,
            backup_overwritten: section
                .backup_overwritten
                .as_ref()
                .map(|t| t.get_ref().clone()),
            delete_extra: section.delete_extra,
            rate_limit_floor: section.rate_limit_floor.unwrap_or(10),
            referrers: referrer_filter(&section.referrers),
        };
        self.common(
            &section.name,
            &section.schedule,
            section.dry_run,
            &section.jitter,
            &section.timezone,
            JobKind::Sync(spec),
        )
    }
}

/// `referrers = true | false | { artifact_types = [...] }` (default: all).
pub(super) fn referrer_filter(section: &Option<ReferrersSection>) -> crate::types::ReferrerFilter {
    match section {
        None | Some(ReferrersSection::Enabled(true)) => crate::types::ReferrerFilter::All,
        Some(ReferrersSection::Enabled(false)) => crate::types::ReferrerFilter::None,
        Some(ReferrersSection::Narrowed(narrowed)) => {
            crate::types::ReferrerFilter::Types(narrowed.artifact_types.clone())
        }
    }
}
