//! `[[sync]]`: mirror repositories to another registry or the store.
//! Up-to-date checks use manifest HEADs only (Docker Hub does not count
//! them against the pull limit), so an unchanged repository re-syncs with
//! no manifest or blob GETs. Optionally keeps the old image under a backup
//! tag before overwriting, and deletes target tags that left the selection.

use super::state::{JobState, SeenTag};
use super::{JobContext, JobReport, Stop};
use crate::config::jobs::SyncSpec;
use crate::config::RepositoryTarget;
use crate::engine::{copy_image, CopyOptions, Destination, PlatformChoice, Source};
use crate::types::time::{format_rfc3339, now_unix};
use crate::types::Reference;

/// Where a source repository goes.
fn target_for(spec: &SyncSpec, source: &Reference) -> Option<Reference> {
    match &spec.target {
        RepositoryTarget::Registry(target) if spec.sources.len() > 1 => {
            let base = source
                .repository()
                .rsplit('/')
                .next()
                .unwrap_or(source.repository());
            Reference::parse_repository_or_ref(&format!("{}/{base}", target.name())).ok()
        }
        RepositoryTarget::Registry(target) => Some(target.clone()),
        RepositoryTarget::Store(_) => None,
    }
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
        let target = target_for(spec, source);
        let target_client = match &target {
            Some(target) => Some(context.registries.client(target.registry())?),
            None => None,
        };
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
            let (current, destination) = match (&target, &target_client) {
                (Some(target), Some(client)) => {
                    let current = client
                        .head_manifest(target.repository(), tag)
                        .await?
                        .and_then(|h| h.digest);
                    (
                        current,
                        Destination::Registry {
                            client: client.clone(),
                            reference: target.with_tag(tag),
                        },
                    )
                }
                _ => {
                    let current = context.store.lookup_tag(&from)?.map(|e| e.digest);
                    (
                        current,
                        Destination::Store {
                            store: context.store.clone(),
                            name: Some(from.clone()),
                        },
                    )
                }
            };
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
            if unchanged {
                continue;
            }
            let shown = destination.describe();
            if dry_run {
                report.changes.push(format!("would copy {from} → {shown}"));
                continue;
            }
            if let (Some(template), Some(old), Some(target), Some(client)) =
                (&spec.backup_overwritten, &current, &target, &target_client)
            {
                let backup = backup_tag(template, tag);
                let manifest = client
                    .get_manifest(target.repository(), &old.to_string())
                    .await?;
                client
                    .put_manifest(target.repository(), &backup, &manifest)
                    .await?;
                state.backup_tags.push(backup.clone());
                report
                    .changes
                    .push(format!("kept the old {}:{tag} as {backup}", target.name()));
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
                },
            );
            report.changes.push(format!(
                "copied {from} → {shown} ({}, {} blobs copied)",
                outcome.digest, outcome.blobs_copied
            ));
        }
        if spec.delete_extra {
            delete_extra(
                context, spec, source, &target, &selected, dry_run, state, report,
            )
            .await?;
        }
    }
    Ok(())
}

/// Remove target tags that left the selection. A registry deletes by
/// digest, so a tag whose digest a kept tag shares stays (with a note).
#[allow(clippy::too_many_arguments)]
async fn delete_extra(
    context: &JobContext,
    _spec: &SyncSpec,
    source: &Reference,
    target: &Option<Reference>,
    selected: &[String],
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    match target {
        Some(target) => {
            let client = context.registries.client(target.registry())?;
            let tags = match client.list_tags(target.repository()).await {
                Ok(tags) => tags,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let mut kept_digests = Vec::new();
            for tag in tags
                .iter()
                .filter(|t| selected.contains(t) || state.backup_tags.contains(t))
            {
                if let Some(digest) = client
                    .head_manifest(target.repository(), tag)
                    .await?
                    .and_then(|h| h.digest)
                {
                    kept_digests.push(digest);
                }
            }
            for tag in tags
                .iter()
                .filter(|t| !selected.contains(t) && !state.backup_tags.contains(t))
            {
                let Some(digest) = client
                    .head_manifest(target.repository(), tag)
                    .await?
                    .and_then(|h| h.digest)
                else {
                    continue;
                };
                if kept_digests.contains(&digest) {
                    report.notes.push(format!(
                        "{}:{tag} left the selection but shares {digest} with a kept tag; kept",
                        target.name()
                    ));
                    continue;
                }
                if dry_run {
                    report
                        .changes
                        .push(format!("would delete {}:{tag}", target.name()));
                    continue;
                }
                client.delete_manifest(target.repository(), &digest).await?;
                kept_digests.push(digest);
                report.changes.push(format!(
                    "deleted {}:{tag} (no longer selected)",
                    target.name()
                ));
            }
        }
        None => {
            let extra: Vec<String> = context
                .store
                .summaries()?
                .into_iter()
                .filter_map(|s| s.name)
                .filter(|n| {
                    n.name() == source.name()
                        && n.tag().is_some_and(|t| !selected.iter().any(|s| s == t))
                })
                .map(|n| n.to_string())
                .collect();
            for name in extra {
                if dry_run {
                    report
                        .changes
                        .push(format!("would remove {name} from the store"));
                } else {
                    context.store.rmi(std::slice::from_ref(&name), false)?;
                    report.changes.push(format!(
                        "removed {name} from the store (no longer selected)"
                    ));
                }
            }
        }
    }
    Ok(())
}
