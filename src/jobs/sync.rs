//! `[[sync]]`: mirror repositories to another registry or the store.
//! Up-to-date checks use manifest HEADs only (Docker Hub does not count
//! them against the pull limit), so an unchanged repository re-syncs with
//! no manifest or blob GETs. Optionally keeps the old image under a backup
//! tag before overwriting, and deletes target tags that left the selection.

use super::state::{JobState, SeenTag};
use super::{ImageResult, JobContext, JobError, JobReport, Stop};
use crate::config::jobs::{SyncSource, SyncSpec};
use crate::config::RepositoryTarget;
use crate::engine::{
    copy_image, copy_referrers, plan_deletions, CopyOptions, Deletion, Destination, PlatformChoice,
    Repository, TagHead,
};
use crate::types::referrer::image_tags;
use crate::types::time::now_unix;
use crate::types::Digest;
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

/// Expand `{tag}`, `{date}` and `{time}` in a backup tag template (the
/// one date expansion backup outputs use too).
fn backup_tag(template: &str, tag: &str) -> String {
    crate::types::time::expand_date_time(&template.replace("{tag}", tag), now_unix())
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

/// One selected tag to bring up to date.
struct Item {
    /// The source repository, and its name.
    from: Arc<dyn Repository>,
    source: Reference,
    tag: String,
    target: Arc<dyn Repository>,
    tags: Arc<BTreeSet<String>>,
    remembered: Option<SeenTag>,
}

/// What happened to one item.
enum Done {
    Copied {
        seen: SeenTag,
        changes: Vec<String>,
        backup_tag: Option<String>,
        bytes: u64,
    },
    Unchanged {
        seen: Option<SeenTag>,
        changes: Vec<String>,
    },
    Gone,
    Deferred(String),
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

/// Whether a tag needs no copy (pure): the target already has the source's
/// digest — or, when `platforms` rebuild what is copied (another digest),
/// both sides are still at the digests the last copy saw.
fn is_unchanged(
    rebuilt: bool,
    source: Option<&Digest>,
    target: Option<&Digest>,
    remembered: Option<&SeenTag>,
) -> bool {
    let (Some(source), Some(target)) = (source, target) else {
        return false;
    };
    (!rebuilt && source == target)
        || remembered.is_some_and(|seen| {
            seen.source.as_ref() == Some(source) && seen.target.as_ref() == Some(target)
        })
}

/// What the HEADs found for one tag, before anything is copied.
struct Looked {
    /// The source tag (`repository/path:tag`).
    from: Reference,
    head: TagHead,
    /// What the target's tag points at now.
    current: Option<Digest>,
    /// What refers to the source image now, when it could be told cheaply.
    fingerprint: Option<String>,
    destination: Box<dyn Destination>,
}

/// Bring one tag up to date: HEADs to see whether it changed (and whether
/// its referrers did), then the copy.
async fn sync_one(
    item: &Item,
    spec: &SyncSpec,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Some(head) = item.from.head(&item.tag).await? else {
        return Ok(Done::Gone);
    };
    if let Some(remaining) = head.rate_limit_remaining {
        if remaining < spec.rate_limit_floor {
            return Ok(Done::Deferred(format!(
                "{}: rate limit has {remaining} pulls left, below the floor of {}; deferred",
                item.source.registry(),
                spec.rate_limit_floor
            )));
        }
    }
    let from = item.source.with_tag(&item.tag);
    let current = item.target.digest(&item.tag).await?;
    let destination = item.target.destination(&item.tag)?;
    let unchanged = is_unchanged(
        spec.platforms.is_some(),
        head.digest.as_ref(),
        current.as_ref(),
        item.remembered.as_ref(),
    );
    let fingerprint = match (&head.digest, spec.referrers.enabled()) {
        // A broken referrers listing never stops the image itself.
        (Some(digest), true) => match item.from.referrers_fingerprint(digest, &item.tags).await {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                tracing::warn!("referrers of {from} not checked: {error}");
                None
            }
        },
        _ => None,
    };
    let looked = Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    };
    match unchanged {
        true => refresh_referrers(item, looked, options, dry_run).await,
        false => copy_tag(item, spec, looked, options, dry_run).await,
    }
}

/// An image already at the target: copy its referrers when what refers to
/// it changed since the last run.
async fn refresh_referrers(
    item: &Item,
    looked: Looked,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    } = looked;
    let seen_referrers = item
        .remembered
        .as_ref()
        .and_then(|seen| seen.referrers.clone());
    if fingerprint.is_none() || fingerprint == seen_referrers {
        return Ok(Done::Unchanged {
            seen: None,
            changes: Vec::new(),
        });
    }
    if dry_run {
        return Ok(Done::Unchanged {
            seen: None,
            changes: vec![format!("would copy new signatures or SBOMs of {from}")],
        });
    }
    let copied = copy_new_referrers(
        item.from.as_ref(),
        destination.as_ref(),
        head.digest.as_ref(),
        head.media_type.as_deref(),
        options,
    )
    .await?;
    let mut seen = item.remembered.clone().unwrap_or(SeenTag {
        source: head.digest.clone(),
        target: current,
        referrers: None,
    });
    seen.referrers = fingerprint;
    Ok(Done::Unchanged {
        seen: Some(seen),
        changes: vec![format!(
            "copied {copied} referrers (signatures, attestations, SBOMs) of {from}"
        )],
    })
}

/// Copy a changed tag (keeping the old image under the backup tag first,
/// when configured).
async fn copy_tag(
    item: &Item,
    spec: &SyncSpec,
    looked: Looked,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    } = looked;
    let (tag, target) = (&item.tag, &item.target);
    let shown = destination.describe();
    if dry_run {
        return Ok(Done::Unchanged {
            seen: None,
            changes: vec![format!("would copy {from} → {shown}")],
        });
    }
    let mut changes = Vec::new();
    let mut backup_tag_kept = None;
    if let (Some(template), Some(old)) = (&spec.backup_overwritten, &current) {
        let backup = backup_tag(template, tag);
        target.put_tag(&backup, old).await?;
        changes.push(format!(
            "kept the old {}:{tag} as {backup}",
            target.describe()
        ));
        backup_tag_kept = Some(backup);
    }
    let outcome = copy_image(
        item.from.source(tag)?.as_ref(),
        destination.as_ref(),
        options,
    )
    .await?;
    changes.push(format!(
        "copied {from} → {shown} ({}, {} blobs copied)",
        outcome.digest, outcome.blobs_copied
    ));
    Ok(Done::Copied {
        seen: SeenTag {
            source: head.digest,
            target: Some(outcome.digest.clone()),
            referrers: fingerprint,
        },
        changes,
        backup_tag: backup_tag_kept,
        bytes: outcome.bytes_copied,
    })
}

/// Copy the referrers of an image that is already at the destination: its
/// own, and (for an index) its platform manifests'.
async fn copy_new_referrers(
    from: &dyn Repository,
    destination: &dyn Destination,
    digest: Option<&Digest>,
    media_type: Option<&str>,
    options: &CopyOptions,
) -> Result<usize, Stop> {
    let Some(digest) = digest else {
        return Ok(0);
    };
    let mut subjects = vec![digest.clone()];
    let source = from.source(&digest.to_string())?;
    if media_type.is_some_and(crate::types::media::is_index) {
        let index = source.root().await?;
        for child in index.children() {
            if let Ok(child) = crate::types::manifest::descriptor_digest(child) {
                subjects.push(child);
            }
        }
    }
    let copied = copy_referrers(source.as_ref(), destination, subjects, options).await?;
    for note in copied.notes {
        tracing::warn!("{note}");
    }
    Ok(copied.copied)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_unchanged_when_the_target_holds_what_the_source_has() {
        let digest = |c: char| -> Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        let (a, b) = (digest('a'), digest('b'));
        // Copied as is: equal digests are unchanged, different ones are not.
        assert!(is_unchanged(false, Some(&a), Some(&a), None));
        assert!(!is_unchanged(false, Some(&a), Some(&b), None));
        // Nothing at the target, or the tag gone at the source: a copy.
        assert!(!is_unchanged(false, Some(&a), None, None));
        assert!(!is_unchanged(false, None, Some(&a), None));
        // Rebuilt for platforms: only the digests the last copy saw count.
        let seen = SeenTag {
            source: Some(a.clone()),
            target: Some(b.clone()),
            referrers: None,
        };
        assert!(is_unchanged(true, Some(&a), Some(&b), Some(&seen)));
        assert!(!is_unchanged(true, Some(&a), Some(&a), None));
        assert!(!is_unchanged(true, Some(&b), Some(&b), Some(&seen)));
    }

    #[test]
    fn a_backup_tag_uses_the_one_date_expansion() {
        let tag = super::backup_tag("{tag}-{date}", "1.0");
        let pattern = format!(r"^1\.0-{}$", crate::types::time::DATE_PATTERN);
        assert!(regex::Regex::new(&pattern).unwrap().is_match(&tag), "{tag}");
    }
}
