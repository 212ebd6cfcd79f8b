//! `[[prune]]`: remove old tags from a registry repository or the store.
//! Age is when ferry first saw a tag at its digest (the store's first-seen
//! time, or this job's own record for registries), never the image
//! config's `created`. `keep_latest` keeps the newest N; a registry digest
//! is deleted only when no kept tag points at it; deleting every tag needs
//! `allow_empty = true`.

use super::state::JobState;
use super::{JobContext, JobReport, Stop};
use crate::config::jobs::PruneSpec;
use crate::config::RepositoryTarget;
use crate::policy::TagVersion;
use crate::types::time::now_unix;
use crate::types::Digest;
use std::collections::BTreeMap;

/// A tag considered for pruning.
struct Candidate {
    tag: String,
    digest: Digest,
    first_seen: i64,
}

/// Order newest first: by version when both are versions, else by first-seen time.
fn newest_first(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    match (TagVersion::parse(&a.tag), TagVersion::parse(&b.tag)) {
        (Some(x), Some(y)) => y.compare(&x),
        _ => b
            .first_seen
            .cmp(&a.first_seen)
            .then_with(|| a.tag.cmp(&b.tag)),
    }
}

pub async fn run(
    context: &JobContext,
    spec: &PruneSpec,
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let now = now_unix();
    // Every tag with its digest and age.
    let mut all: Vec<Candidate> = Vec::new();
    match &spec.repository {
        RepositoryTarget::Registry(repository) => {
            let client = context.registries.client(repository.registry())?;
            for tag in client.list_tags(repository.repository()).await? {
                let Some(digest) = client
                    .head_manifest(repository.repository(), &tag)
                    .await?
                    .and_then(|h| h.digest)
                else {
                    continue;
                };
                let first_seen = match state.first_seen.get(&tag) {
                    Some((seen, at)) if *seen == digest => *at,
                    _ => now,
                };
                state
                    .first_seen
                    .insert(tag.clone(), (digest.clone(), first_seen));
                all.push(Candidate {
                    tag,
                    digest,
                    first_seen,
                });
            }
            let present: Vec<String> = all.iter().map(|c| c.tag.clone()).collect();
            state.first_seen.retain(|tag, _| present.contains(tag));
        }
        RepositoryTarget::Store(repository) => {
            for summary in context.store.summaries()? {
                let Some(name) = &summary.name else { continue };
                if repository.as_ref().is_some_and(|r| r.name() != name.name())
                    || name.tag().is_none()
                {
                    continue;
                }
                let first_seen = summary.times.map_or(now, |t| t.first_seen);
                // In the whole store, a "tag" is the full name.
                let tag = if repository.is_some() {
                    name.tag().unwrap_or_default().to_owned()
                } else {
                    name.to_string()
                };
                all.push(Candidate {
                    tag,
                    digest: summary.digest.clone(),
                    first_seen,
                });
            }
        }
    }
    let mut candidates: Vec<&Candidate> =
        all.iter().filter(|c| spec.filter.matches(&c.tag)).collect();
    candidates.sort_by(|a, b| newest_first(a, b));
    let keep = spec.keep_latest.unwrap_or(0);
    let doomed: Vec<&Candidate> = candidates
        .iter()
        .skip(keep)
        .filter(|c| {
            spec.older_than
                .is_none_or(|age| now - c.first_seen >= age as i64)
        })
        .copied()
        .collect();
    if doomed.len() == all.len() && !all.is_empty() && !spec.allow_empty {
        return Err(Stop::Failed(anyhow::anyhow!(
            "this prune would remove every tag of the repository ({}); set allow_empty = true if that is intended",
            all.len()
        )));
    }
    let doomed_tags: Vec<&str> = doomed.iter().map(|c| c.tag.as_str()).collect();
    let kept: BTreeMap<&Digest, &str> = all
        .iter()
        .filter(|c| !doomed_tags.contains(&c.tag.as_str()))
        .map(|c| (&c.digest, c.tag.as_str()))
        .collect();
    let mut deleted: Vec<&Digest> = Vec::new();
    for candidate in doomed {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        match &spec.repository {
            RepositoryTarget::Registry(repository) => {
                if let Some(keeper) = kept.get(&candidate.digest) {
                    report.notes.push(format!(
                        "{}:{} kept: its digest is shared with kept tag {keeper}",
                        repository.name(),
                        candidate.tag
                    ));
                    continue;
                }
                let line = format!(
                    "{}:{} ({})",
                    repository.name(),
                    candidate.tag,
                    candidate.digest
                );
                if dry_run {
                    report.changes.push(format!("would delete {line}"));
                    continue;
                }
                if !deleted.contains(&&candidate.digest) {
                    let client = context.registries.client(repository.registry())?;
                    client
                        .delete_manifest(repository.repository(), &candidate.digest)
                        .await?;
                    deleted.push(&candidate.digest);
                }
                state.first_seen.remove(&candidate.tag);
                report.changes.push(format!("deleted {line}"));
            }
            RepositoryTarget::Store(repository) => {
                let name = match repository {
                    Some(repository) => repository.with_tag(&candidate.tag).to_string(),
                    None => candidate.tag.clone(),
                };
                if dry_run {
                    report
                        .changes
                        .push(format!("would remove {name} from the store"));
                    continue;
                }
                context.store.rmi(std::slice::from_ref(&name), false)?;
                report
                    .changes
                    .push(format!("removed {name} from the store"));
            }
        }
    }
    Ok(())
}
