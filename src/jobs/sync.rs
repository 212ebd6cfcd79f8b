//! `[[sync]]`: mirror repositories to another registry or the store.
//! Up-to-date checks use manifest HEADs only (Docker Hub does not count
//! them against the pull limit), so an unchanged repository re-syncs with
//! no manifest or blob GETs. Optionally keeps the old image under a backup
//! tag before overwriting, and deletes target tags that left the selection.

use super::state::{JobState, SeenTag};
use super::{JobContext, JobReport, Stop};
use crate::config::jobs::SyncSpec;
use crate::config::RepositoryTarget;
use crate::engine::{
    copy_image, copy_referrers, referrers_fingerprint, CopyOptions, Destination, PlatformChoice,
    Repository, Source,
};
use crate::types::time::{format_rfc3339, now_unix};
use crate::types::Digest;
use crate::types::Reference;
use std::collections::BTreeSet;

/// Where a source repository goes: under the target (by its last path
/// part when there are several sources), or into the store under its own name.
fn target_for(spec: &SyncSpec, source: &Reference) -> Result<RepositoryTarget, Stop> {
    Ok(match &spec.target {
        RepositoryTarget::Registry(target) if spec.sources.len() > 1 => {
            let base = source
                .repository()
                .rsplit('/')
                .next()
                .unwrap_or(source.repository());
            let name = format!("{}/{base}", target.name());
            RepositoryTarget::Registry(
                Reference::parse_repository_or_ref(&name)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?,
            )
        }
        RepositoryTarget::Registry(target) => RepositoryTarget::Registry(target.clone()),
        RepositoryTarget::Store(_) => RepositoryTarget::Store(Some(source.clone())),
    })
}

/// Expand `{tag}` and `{date}` in a backup tag template.
fn backup_tag(template: &str, tag: &str) -> String {
    let now = format_rfc3339(now_unix());
    let date = now[..10].replace('-', "");
    let time = now[11..19].replace(':', "");
    template
        .replace("{tag}", tag)
        .replace("{date}", &date)
        .replace("{time}", &time)
}

pub async fn run(
    context: &JobContext,
    spec: &SyncSpec,
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let platforms = match &spec.platforms {
        None => PlatformChoice::All,
        Some(list) => PlatformChoice::Subset(list.clone()),
    };
    let options = CopyOptions {
        platforms,
        concurrency: context.concurrency,
        reporter: context.reporter.clone(),
        referrers: spec.referrers.clone(),
    };
    for source in &spec.sources {
        let source_client = context.registries.client(source.registry())?;
        let tags = source_client.list_tags(source.repository()).await?;
        let selected: Vec<String> = spec
            .filter
            .select(&tags)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let target = context.repository(&target_for(spec, source)?)?;
        let tag_set: BTreeSet<String> = tags.iter().cloned().collect();
        let referrers_on = spec.referrers.enabled();
        for tag in &selected {
            if context.cancelled() {
                return Err(Stop::Cancelled);
            }
            let key = format!("{}:{tag}", source.name());
            let Some(head) = source_client
                .head_manifest(source.repository(), tag)
                .await?
            else {
                report
                    .notes
                    .push(format!("{}:{tag} disappeared while syncing", source.name()));
                continue;
            };
            if let Some(remaining) = head.rate_limit_remaining {
                if remaining < spec.rate_limit_floor {
                    return Err(Stop::Deferred(format!(
                        "{}: rate limit has {remaining} pulls left, below the floor of {}; deferred",
                        source.registry(),
                        spec.rate_limit_floor
                    )));
                }
            }
            let source_digest = head.digest.clone();
            let from = source.with_tag(tag);
            let current = target.digest(tag).await?;
            let destination = target.destination(tag)?;
            let remembered = state.seen.get(&key);
            let unchanged = match (&source_digest, &current) {
                (Some(source_digest), Some(current)) => {
                    (spec.platforms.is_none() && source_digest == current)
                        || remembered.is_some_and(|seen| {
                            seen.source.as_ref() == Some(source_digest)
                                && seen.target.as_ref() == Some(current)
                        })
                }
                _ => false,
            };
            let fingerprint = match (&source_digest, referrers_on) {
                // A broken referrers listing never stops the image itself.
                (Some(digest), true) => {
                    match referrers_fingerprint(&source_client, source, digest, &tag_set).await {
                        Ok(fingerprint) => Some(fingerprint),
                        Err(error) => {
                            report.notes.push(format!(
                                "referrers of {}:{tag} not checked: {error}",
                                source.name()
                            ));
                            None
                        }
                    }
                }
                _ => None,
            };
            if unchanged {
                let seen_referrers = remembered.and_then(|seen| seen.referrers.clone());
                if fingerprint.is_none() || fingerprint == seen_referrers {
                    continue;
                }
                // The image is unchanged but what refers to it is not.
                if dry_run {
                    report
                        .changes
                        .push(format!("would copy new signatures or SBOMs of {from}"));
                    continue;
                }
                let copied = copy_new_referrers(
                    &source_client,
                    &from,
                    &destination,
                    source_digest.as_ref(),
                    head.media_type.as_deref(),
                    &options,
                )
                .await?;
                let seen = state.seen.entry(key).or_insert_with(|| SeenTag {
                    source: source_digest.clone(),
                    target: current.clone(),
                    referrers: None,
                });
                seen.referrers = fingerprint;
                report.changes.push(format!(
                    "copied {copied} referrers (signatures, attestations, SBOMs) of {from}"
                ));
                continue;
            }
            let shown = destination.describe();
            if dry_run {
                report.changes.push(format!("would copy {from} → {shown}"));
                continue;
            }
            if let (Some(template), Some(old)) = (&spec.backup_overwritten, &current) {
                let backup = backup_tag(template, tag);
                target.put_tag(&backup, old).await?;
                state.backup_tags.push(backup.clone());
                report.changes.push(format!(
                    "kept the old {}:{tag} as {backup}",
                    target.describe()
                ));
            }
            let source_endpoint = Source::Registry {
                client: source_client.clone(),
                reference: from.clone(),
            };
            let outcome = copy_image(&source_endpoint, &destination, &options).await?;
            state.seen.insert(
                key,
                SeenTag {
                    source: source_digest,
                    target: Some(outcome.digest.clone()),
                    referrers: fingerprint,
                },
            );
            report.changes.push(format!(
                "copied {from} → {shown} ({}, {} blobs copied)",
                outcome.digest, outcome.blobs_copied
            ));
        }
        if spec.delete_extra {
            delete_extra(&target, &selected, dry_run, state, report).await?;
        }
    }
    Ok(())
}

/// Copy the referrers of an image that is already at the destination: its
/// own, and (for an index) its platform manifests'.
async fn copy_new_referrers(
    client: &std::sync::Arc<crate::registry::RegistryClient>,
    from: &Reference,
    destination: &Destination,
    digest: Option<&Digest>,
    media_type: Option<&str>,
    options: &CopyOptions,
) -> Result<usize, Stop> {
    let Some(digest) = digest else {
        return Ok(0);
    };
    let mut subjects = vec![digest.clone()];
    if media_type.is_some_and(crate::types::media::is_index) {
        let index = client
            .get_manifest(from.repository(), &digest.to_string())
            .await?;
        for child in index.children() {
            if let Ok(child) = crate::types::manifest::descriptor_digest(child) {
                subjects.push(child);
            }
        }
    }
    let source = Source::Registry {
        client: client.clone(),
        reference: from.clone(),
    };
    let copied = copy_referrers(&source, destination, subjects, options).await?;
    for note in copied.notes {
        tracing::warn!("{note}");
    }
    Ok(copied.copied)
}

/// Remove target tags that left the selection. A registry deletes by
/// digest, so a tag whose digest a kept tag shares stays (with a note).
async fn delete_extra(
    target: &Repository,
    selected: &[String],
    dry_run: bool,
    state: &JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let keep =
        |tag: &str| selected.iter().any(|s| s == tag) || state.backup_tags.iter().any(|b| b == tag);
    let listed = target.tags().await?;
    let mut kept_digests: Vec<Digest> = listed
        .iter()
        .filter(|t| keep(&t.tag))
        .map(|t| t.digest.clone())
        .collect();
    for extra in listed.iter().filter(|t| !keep(&t.tag)) {
        let name = target.reference(&extra.tag)?;
        if target.deletes_by_digest() && kept_digests.contains(&extra.digest) {
            report.notes.push(format!(
                "{name} left the selection but shares {} with a kept tag; kept",
                extra.digest
            ));
            continue;
        }
        if dry_run {
            report.changes.push(format!("would delete {name}"));
            continue;
        }
        target.delete(&extra.tag, &extra.digest).await?;
        kept_digests.push(extra.digest.clone());
        report
            .changes
            .push(format!("deleted {name} (no longer selected)"));
    }
    Ok(())
}
