//! Resolving the `[[backup]]`, `[[retag]]` and `[[prune]]` tables (the
//! `[[sync]]` table and the shared pieces are in `resolve.rs`).

use super::super::jobs::*;
use super::{referrer_filter, Resolver};
use crate::policy::AliasKind;
use crate::types::Reference;
use toml::Spanned;

impl Resolver<'_> {
    /// Resolve a `[[backup]]` table.
    pub fn backup(&self, section: &BackupSection) -> Result<JobSpec, crate::config::ConfigError> {
        if section.images.is_empty() {
            return Err(self.error(
                section.name.span(),
                "backup has no images",
                "add images = [\"registry/app:*\"]",
            ));
        }
        let mut images = Vec::new();
        for image in &section.images {
            let text = image.get_ref();
            let image = match text.strip_suffix(":*") {
                Some(repository) if repository.ends_with("/*") || repository.ends_with("/**") => {
                    BackupImage::Under(
                        self.sync_source(&Spanned::new(image.span(), repository.to_owned()))?,
                    )
                }
                Some(repository) => BackupImage::AllTags(
                    self.repository(&Spanned::new(image.span(), repository.to_owned()))?,
                ),
                None => BackupImage::One(Reference::parse(text).map_err(|e| {
                    self.error(
                        image.span(),
                        e.to_string(),
                        "e.g. \"registry/app:1.0\", \"registry/app:*\" or \"registry/team/**:*\"",
                    )
                })?),
            };
            images.push(image);
        }
        let compress = section
            .compress
            .as_ref()
            .map_or("none".to_owned(), |c| c.get_ref().clone());
        if !["none", "gzip", "zstd"].contains(&compress.as_str()) {
            let span = section.compress.as_ref().expect("set").span();
            return Err(self.error(
                span,
                format!("compress = {compress:?}"),
                "use \"none\", \"gzip\" or \"zstd\"",
            ));
        }
        if let Some(keep) = &section.keep {
            if *keep.get_ref() == 0 {
                return Err(self.error(
                    keep.span(),
                    "keep = 0 would delete every backup",
                    "use keep ≥ 1, or remove it to keep all",
                ));
            }
        }
        let output = section.output.get_ref().clone();
        if !output.contains("{date}")
            && !output.contains("{time}")
            && !output.contains("{run}")
            && section.keep.is_some()
        {
            return Err(self.error(
                section.output.span(),
                "output has no {date}, {time} or {run}, so each run would overwrite the last",
                "e.g. output = \"/backups/app-{date}-{time}.tar\"",
            ));
        }
        if crate::types::object_settings::ObjectUrl::is_object(&output) {
            // Checked with the placeholders filled in as a run would.
            let sample = output
                .replace("{date}", "2026-01-31")
                .replace("{time}", "235959")
                .replace("{run}", "1")
                .replace("{job}", section.name.get_ref());
            match crate::types::object_settings::ObjectUrl::parse(&sample) {
                Ok(url) if !url.key.is_empty() => {}
                Ok(_) => {
                    return Err(self.error(
                        section.output.span(),
                        "output names a bucket but no key",
                        "e.g. output = \"s3://backups/ferry/{job}-{date}.tar\"",
                    ))
                }
                Err(e) => {
                    return Err(self.error(
                        section.output.span(),
                        e,
                        "e.g. output = \"s3://backups/ferry/{job}-{date}.tar\"",
                    ))
                }
            }
        }
        let spec = BackupSpec {
            images,
            filter: self.filter(&section.tags)?,
            output,
            keep: section.keep.as_ref().map(|k| *k.get_ref()),
            incremental: section.incremental,
            full_every: section
                .full_every
                .as_ref()
                .map_or(7, |f| (*f.get_ref()).max(1)),
            compress,
            platforms: self.platforms(&section.platforms)?.unwrap_or_default(),
            keep_in_store: section.keep_in_store,
            referrers: referrer_filter(&section.referrers),
        };
        self.common(
            &section.name,
            &section.schedule,
            section.dry_run,
            &section.jitter,
            &section.timezone,
            JobKind::Backup(spec),
        )
    }

    /// Resolve a `[[retag]]` table.
    pub fn retag(&self, section: &RetagSection) -> Result<JobSpec, crate::config::ConfigError> {
        let aliases = section
            .aliases
            .iter()
            .map(|a| {
                a.get_ref().parse::<AliasKind>().map_err(|e| {
                    self.error(a.span(), e, "aliases = [\"minor\", \"major\", \"latest\"]")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if aliases.is_empty() {
            return Err(self.error(
                section.repository.span(),
                "retag has no aliases",
                "aliases = [\"minor\", \"major\"]",
            ));
        }
        let repository = self.repository_target(&section.repository, false)?;
        let spec = RetagSpec {
            repository,
            aliases,
            prerelease: section.prerelease,
        };
        self.common(
            &section.name,
            &section.schedule,
            section.dry_run,
            &section.jitter,
            &section.timezone,
            JobKind::Retag(spec),
        )
    }

    /// Resolve a `[[prune]]` table.
    pub fn prune(&self, section: &PruneSection) -> Result<JobSpec, crate::config::ConfigError> {
        let older_than = section
            .older_than
            .as_ref()
            .map(|o| self.duration(o, "e.g. older_than = \"30d\""))
            .transpose()?;
        let filter = self.filter(&section.tags)?;
        // An include that any tag passes (`.*`) narrows nothing: probed with
        // tags of every shape, with no exclude or range beside it.
        let passes_all = filter.exclude.is_empty()
            && filter.semver.is_none()
            && filter.include.iter().any(|r| {
                [
                    "latest",
                    "1.0.0",
                    "v2.1-rc1",
                    "sha256-ab12.sig",
                    "Main_Build.9",
                ]
                .iter()
                .all(|tag| r.is_match(tag))
            });
        let narrows = !filter.include.is_empty() && !passes_all;
        // keep_latest = 0 removes every *selected* tag: fine when an include
        // filter narrows the selection, refused when it is the whole repository.
        let keep_latest = match &section.keep_latest {
            Some(n) if *n.get_ref() == 0 && !narrows && !section.allow_empty => {
                return Err(self.error(
                    n.span(),
                    "keep_latest = 0 with no tags.include that narrows the selection would delete every tag",
                    "narrow it with tags.include, use keep_latest ≥ 1, or set allow_empty = true",
                ))
            }
            other => other.as_ref().map(|n| *n.get_ref()),
        };
        if older_than.is_none() && keep_latest.is_none() && !narrows && !section.allow_empty {
            return Err(self.error(
                section.name.span(),
                "this prune selects every tag",
                "add older_than, keep_latest or tags.include (or allow_empty = true)",
            ));
        }
        let spec = PruneSpec {
            repository: self.repository_target(&section.repository, true)?,
            filter,
            older_than,
            keep_latest,
            allow_empty: section.allow_empty,
        };
        self.common(
            &section.name,
            &section.schedule,
            section.dry_run,
            &section.jitter,
            &section.timezone,
            JobKind::Prune(spec),
        )
    }
}
