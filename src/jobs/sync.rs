//! `[[sync]]`: mirror repositories to another registry or the store.
//! Up-to-date checks use manifest HEADs only (Docker Hub does not count
//! them against the pull limit), so an unchanged repository re-syncs with
//! no manifest or blob GETs. Optionally keeps the old image under a backup
//! tag before overwriting, and deletes target tags that left the selection.

use super::state::JobState;
use super::sync_tag::{sync_one, Done, Item};
use super::{ImageResult, JobContext, JobError, JobReport, Stop};
use crate::config::jobs::{SyncSource, SyncSpec};
use crate::config::RepositoryTarget;
use crate::engine::{plan_deletions, CopyOptions, Deletion, PlatformChoice, Repository};
use crate::types::referrer::image_tags;
use crate::types::Reference;
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where a source repository goes. A listed source: the target itself, or
/// (several sources) `target/<last path part>`; a wildcard source:
/// `target/<path below the prefix>`; the store: the source's own name.
fn target_for(
    spec: &SyncSpec,
    source: &Reference,
    relative: Option<&str>,
) -> Result<RepositoryTarget, Stop> {
    Ok(match &spec.target {
        RepositoryTarget::Registry(target) if relative.is_some() || spec.sources.len() > 1 => {
            let below = relative.unwrap_or_else(|| {
                source
                    .repository()
                    .rsplit('/')
                    .next()
                    .unwrap_or(source.repository())
            });
            let name = format!("{}/{below}", target.name());
            RepositoryTarget::Registry(
                Reference::parse_repository_or_ref(&name)
                    .map_err(|e| JobError::Refused(format!("{name}: {e}")))?,
            )
        }
        RepositoryTarget::Registry(target) => RepositoryTarget::Registry(target.clone()),
        RepositoryTarget::Store(_) => RepositoryTarget::Store(Some(source.clone())),
    })
}

/// The repositories a job covers, each with its target: listed ones as
/// they are, wildcards expanded through the registry's `_catalog`.
async fn repositories(
    context: &JobContext,
    spec: &SyncSpec,
    report: &mut JobReport,
) -> Result<Vec<(Reference, RepositoryTarget)>, Stop> {
    let mut found = Vec::new();
    for source in &spec.sources {
        match source {
            SyncSource::Repository(reference) => {
                found.push((reference.clone(), target_for(spec, reference, None)?));
            }
            SyncSource::Under { .. } => {
                let keep = |path: &str| spec.repositories.matches(path);
                for (reference, relative) in
                    super::catalog::repositories_under(context, source, keep, report).await?
                {
                    let target = target_for(spec, &reference, Some(&relative))?;
                    found.push((reference, target));
                }
            }
        }
    }
    Ok(found)
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
        Some(list) => PlatformChoice::from_list(list.clone(), false, PlatformChoice::All),
    };
    let options = CopyOptions {
        platforms,
        concurrency: context.concurrency,
        reporter: context.reporter.clone(),
        referrers: spec.referrers.clone(),
    };
    let mut repositories = repositories(context, spec, report).await?;
    // Split by repository: this shard takes the repositories it owns.
    if let (true, Some(shard)) = (spec.split_repositories, context.shard) {
        repositories.retain(|(source, _)| shard.takes(&source.name()));
    }
    let mut failed: Vec<String> = Vec::new();
    let (items, per_target) =
        select(context, spec, state, repositories, report, &mut failed).await?;
    // Images in parallel; a failure is reported and the others go on. On
    // SIGTERM or a deferral, images not yet started are skipped and those
    // in flight finish (a copy writes its tag last, so none is half-tagged).
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let options = &options;
    let mut results = futures_util::stream::iter(items)
        .map(|item| async move {
            let image = format!("{}:{}", item.source.name(), item.tag);
            let destination = item.target.describe();
            if stop.load(Ordering::Relaxed) || context.cancelled() {
                return (item, image, destination, None);
            }
            let span = tracing::info_span!("image", image = %image);
            let done =
                tracing::Instrument::instrument(sync_one(&item, spec, options, dry_run), span)
                    .await;
            (item, image, destination, Some(done))
        })
        .buffer_unordered(context.parallel_images);
    let mut stopped: Option<Stop> = None;
    while let Some((item, image, destination, done)) = results.next().await {
        if let Some(stop_with) = account(
            state,
            report,
            &item,
            image,
            &destination,
            done,
            &mut failed,
            context,
        ) {
            stop.store(true, Ordering::Relaxed);
            stopped.get_or_insert(stop_with);
        }
        if context.cancelled() {
            stop.store(true, Ordering::Relaxed);
        }
    }
    drop(results);
    if context.cancelled() {
        return Err(Stop::Cancelled);
    }
    if let Some(stop) = stopped {
        return Err(stop);
    }
    if spec.delete_extra {
        for (target, selected) in &per_target {
            delete_extra(target.as_ref(), selected, dry_run, state, report).await?;
        }
    }
    if !failed.is_empty() {
        let total = report.images.len();
        let others = match failed.len() == total {
            true => "none was synced".to_owned(),
            false => format!("the other {} were synced", total - failed.len()),
        };
        return Err(Stop::Failed(JobError::SomeFailed {
            what: "images",
            failed: failed.len(),
            total,
            others: format!("{others}; the next run retries the failed ones"),
            list: failed.join("; "),
        }));
    }
    Ok(())
}

/// The tags to bring up to date, each with its source client, its target
/// and what the state remembers of it: tag lists are read several at once
/// (a remote registry's latency dominates); a repository whose tags cannot
/// be listed is reported (in `failed`) and the others go on. Also each
/// target with the tags selected for it (for `delete_extra`).
#[allow(clippy::type_complexity)]
async fn select(
    context: &JobContext,
    spec: &SyncSpec,
    state: &JobState,
    repositories: Vec<(Reference, RepositoryTarget)>,
    report: &mut JobReport,
    failed: &mut Vec<String>,
) -> Result<(Vec<Item>, Vec<(Arc<dyn Repository>, Vec<String>)>), Stop> {
    // Tag lists, several at once (a remote registry's latency dominates).
    let listed: Vec<_> = futures_util::stream::iter(repositories)
        .map(|(source, target)| async move {
            let listing = async {
                let from = context.endpoints.registry(&source)?;
                let tags = from.listed_tags().await?;
                let target = context.repository(&target)?;
                Ok::<_, Stop>((from, tags, target))
            };
            let listing = listing.await;
            (source, listing)
        })
        .buffered(context.parallel_images)
        .collect()
        .await;
    let mut items = Vec::new();
    let mut per_target: Vec<(Arc<dyn Repository>, Vec<String>)> = Vec::new();
    for (source, listing) in listed {
        let (from, tags, target) = match listing {
            Ok(found) => found,
            Err(Stop::Failed(error)) => {
                let error = crate::types::error_text::error_chain(&error);
                failed.push(format!("{} ({error})", source.name()));
                report
                    .images
                    .push(ImageResult::failed(source.name(), None, error));
                continue;
            }
            Err(other) => return Err(other),
        };
        // Images are chosen from the image tags; the whole list (cosign
        // tags too) tells the referrer check what exists without a GET.
        let images = image_tags(tags.clone());
        let selected: Vec<String> = spec
            .filter
            .select(&images)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let tag_set = Arc::new(tags.iter().cloned().collect::<BTreeSet<String>>());
        for tag in &selected {
            items.push(Item {
                from: from.clone(),
                source: source.clone(),
                tag: tag.clone(),
                target: target.clone(),
                tags: tag_set.clone(),
                remembered: state.seen.get(&format!("{}:{tag}", source.name())).cloned(),
            });
        }
        per_target.push((target, selected));
    }
    Ok((items, per_target))
}

/// Put one image's outcome into the state and the report (`None`: it was
/// not started). Returns why the whole job stops, when it must (a
/// deferral, a signal).
#[allow(clippy::too_many_arguments)]
fn account(
    state: &mut JobState,
    report: &mut JobReport,
    item: &Item,
    image: String,
    destination: &str,
    done: Option<Result<Done, Stop>>,
    failed: &mut Vec<String>,
    context: &JobContext,
) -> Option<Stop> {
    let key = format!("{}:{}", item.source.name(), item.tag);
    let target = Some(format!("{destination}:{}", item.tag));
    match done {
        None => report.images.push(ImageResult::skipped(
            image,
            if context.cancelled() {
                "stopped before it started"
            } else {
                "deferred before it started"
            },
        )),
        Some(Ok(Done::Copied {
            seen,
            changes,
            backup_tag,
            bytes,
        })) => {
            report.bytes += bytes;
            state.seen.insert(key, seen);
            state.backup_tags.extend(backup_tag);
            report.changes.extend(changes);
            report
                .images
                .push(ImageResult::new(image, target, "copied", None));
        }
        Some(Ok(Done::Unchanged { seen, changes })) => {
            if let Some(seen) = seen {
                state.seen.insert(key, seen);
            }
            report.changes.extend(changes);
            report
                .images
                .push(ImageResult::new(image, target, "unchanged", None));
        }
        Some(Ok(Done::Gone)) => {
            report
                .notes
                .push(format!("{image} disappeared while syncing"));
            report
                .images
                .push(ImageResult::skipped(image, "disappeared while syncing"));
        }
        Some(Ok(Done::Deferred(why))) => {
            report
                .images
                .push(ImageResult::skipped(image, "deferred: rate limit"));
            return Some(Stop::Deferred(why));
        }
        Some(Err(Stop::Failed(error))) => {
            let error = crate::types::error_text::error_chain(&error);
            tracing::warn!("{image}: {error}");
            failed.push(format!("{image} ({error})"));
            report
                .images
                .push(ImageResult::failed(image, target, error));
        }
        Some(Err(other)) => return Some(other),
    }
    None
}

/// Remove target tags that left the selection. A registry deletes by
/// digest, so a tag whose digest a kept tag shares stays (with a note).
async fn delete_extra(
    target: &dyn Repository,
    selected: &[String],
    dry_run: bool,
    state: &JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let keep =
        |tag: &str| selected.iter().any(|s| s == tag) || state.backup_tags.iter().any(|b| b == tag);
    let (kept, extra): (Vec<_>, Vec<_>) =
        target.tags().await?.into_iter().partition(|t| keep(&t.tag));
    for (extra, deletion) in plan_deletions(&extra, &kept, target.deletes_by_digest()) {
        let name = target.reference(&extra.tag)?;
        match deletion {
            Deletion::SharedWith(keeper) => {
                report.notes.push(format!(
                    "{name} left the selection but shares {} with kept tag {keeper}; kept",
                    extra.digest
                ));
                continue;
            }
            Deletion::GoesWith(first) => {
                report.changes.push(format!(
                    "{} {name} (no longer selected; the same digest as {first})",
                    if dry_run { "would delete" } else { "deleted" }
                ));
                continue;
            }
            Deletion::Delete => {}
        }
        if dry_run {
            report.changes.push(format!("would delete {name}"));
            continue;
        }
        target.delete(&extra.tag, &extra.digest).await?;
        report
            .changes
            .push(format!("deleted {name} (no longer selected)"));
    }
    Ok(())
}
