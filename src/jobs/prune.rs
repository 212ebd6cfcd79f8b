//! `[[prune]]`: remove old tags from a registry repository or the store.
//! Age is when ferry first saw a tag at its digest (the store's first-seen
//! time, or this job's own record for registries), never the image
//! config's `created`. `keep_latest` keeps the newest N; a registry digest
//! is deleted only when no kept tag points at it; deleting every tag needs
//! `allow_empty = true`.

use super::state::JobState;
use super::{ImageResult, JobContext, JobError, JobReport, Stop};
use crate::config::jobs::PruneSpec;
use crate::engine::{plan_deletions, Deletion, Repository, TaggedDigest};
use crate::policy::TagVersion;
use crate::types::time::now_unix;
use crate::types::Digest;

/// A tag considered for pruning.
struct Candidate {
    tag: String,
    digest: Digest,
    first_seen: i64,
}

/// The tag of a candidate: itself in one repository, the part after the
/// name when the whole store is pruned (candidates are full references).
fn tag_part(tag: &str) -> &str {
    match tag.rfind(':') {
        Some(at) if !tag[at..].contains('/') => &tag[at + 1..],
        _ => tag,
    }
}

/// Order newest first: by version when both are versions, else by first-seen time.
fn newest_first(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    match (
        TagVersion::parse(tag_part(&a.tag)),
        TagVersion::parse(tag_part(&b.tag)),
    ) {
        (Some(x), Some(y)) => y.compare(&x),
        _ => b
            .first_seen
            .cmp(&a.first_seen)
            .then_with(|| a.tag.cmp(&b.tag)),
    }
}

/// Every tag with its digest and age: the store keeps first-seen times;
/// for a registry this job remembers when it first saw each tag there
/// (and forgets tags that are gone).
async fn aged_tags(
    repository: &dyn Repository,
    state: &mut JobState,
    now: i64,
) -> Result<Vec<Candidate>, Stop> {
    let mut all: Vec<Candidate> = Vec::new();
    for listed in repository.tags().await? {
        let first_seen = match listed.first_seen {
            Some(at) => at,
            None => {
                let at = match state.first_seen.get(&listed.tag) {
                    Some((seen, at)) if *seen == listed.digest => *at,
                    _ => now,
                };
                state
                    .first_seen
                    .insert(listed.tag.clone(), (listed.digest.clone(), at));
                at
            }
        };
        all.push(Candidate {
            tag: listed.tag,
            digest: listed.digest,
            first_seen,
        });
    }
    let present: Vec<String> = all.iter().map(|c| c.tag.clone()).collect();
    state.first_seen.retain(|tag, _| present.contains(tag));
    Ok(all)
}

/// The tags the rule removes (pure): those the filter takes, newest
/// `keep_latest` kept, the rest when older than `older_than`.
fn select_doomed<'a>(all: &'a [Candidate], spec: &PruneSpec, now: i64) -> Vec<&'a Candidate> {
    let mut candidates: Vec<&Candidate> = all
        .iter()
        .filter(|c| spec.filter.matches(tag_part(&c.tag)))
        .collect();
    candidates.sort_by(|a, b| newest_first(a, b));
    let keep = spec.keep_latest.unwrap_or(0);
    candidates
        .into_iter()
        .skip(keep)
        .filter(|c| {
            spec.older_than
                .is_none_or(|age| now - c.first_seen >= age as i64)
        })
        .collect()
}

pub async fn run(
    context: &JobContext,
    spec: &PruneSpec,
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let now = now_unix();
    let repository = context.repository(&spec.repository)?;
    let all = aged_tags(repository.as_ref(), state, now).await?;
    let doomed = select_doomed(&all, spec, now);
    if doomed.len() == all.len() && !all.is_empty() && !spec.allow_empty {
        return Err(Stop::Failed(JobError::Refused(format!(
            "this prune would remove every tag of {} ({}); set allow_empty = true if that is intended",
            repository.describe(),
            all.len()
        ))));
    }
    let doomed_tags: Vec<&str> = doomed.iter().map(|c| c.tag.as_str()).collect();
    let tagged = |c: &Candidate| TaggedDigest {
        tag: c.tag.clone(),
        digest: c.digest.clone(),
        first_seen: Some(c.first_seen),
    };
    let kept: Vec<TaggedDigest> = all
        .iter()
        .filter(|c| !doomed_tags.contains(&c.tag.as_str()))
        .map(tagged)
        .collect();
    let doomed: Vec<TaggedDigest> = doomed.into_iter().map(tagged).collect();
    let mut not_deleted: Vec<&Digest> = Vec::new();
    let mut failed = Vec::new();
    let total = doomed.len();
    for (candidate, deletion) in plan_deletions(&doomed, &kept, repository.deletes_by_digest()) {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        let line = format!(
            "{} ({})",
            repository.reference(&candidate.tag)?,
            candidate.digest
        );
        match deletion {
            Deletion::SharedWith(keeper) => {
                report.notes.push(format!(
                    "{}:{} kept: its digest is shared with kept tag {keeper}",
                    repository.describe(),
                    candidate.tag
                ));
                continue;
            }
            _ if dry_run => {
                report.changes.push(format!("would delete {line}"));
                continue;
            }
            // Gone with an earlier tag of its digest, unless that failed.
            Deletion::GoesWith(first) if not_deleted.contains(&&candidate.digest) => {
                let error =
                    format!("not deleted: deleting {first}, which shares its digest, failed");
                failed.push(format!("{line} ({error})"));
                report.images.push(ImageResult::failed(line, None, error));
                continue;
            }
            Deletion::GoesWith(_) => {}
            Deletion::Delete => {
                // One tag that cannot be deleted is reported; the others still go.
                if let Err(error) = repository.delete(&candidate.tag, &candidate.digest).await {
                    let error = crate::types::error_text::error_chain(&error);
                    failed.push(format!("{line} ({error})"));
                    report.images.push(ImageResult::failed(line, None, error));
                    not_deleted.push(&candidate.digest);
                    continue;
                }
            }
        }
        state.first_seen.remove(&candidate.tag);
        report.changes.push(format!("deleted {line}"));
    }
    super::failed_images("tags", &failed, total)
}

#[cfg(test)]
mod tests {
    use super::{select_doomed, tag_part, Candidate};
    use crate::config::jobs::PruneSpec;
    use crate::config::RepositoryTarget;

    #[test]
    fn the_rule_keeps_the_newest_and_takes_only_what_is_old_enough() {
        let tag = |tag: &str, first_seen: i64| Candidate {
            tag: tag.into(),
            digest: crate::types::Digest::sha256_of(tag.as_bytes()),
            first_seen,
        };
        // Versions sort by version, the others by age.
        let all = [
            tag("1.0.0", 100),
            tag("1.2.0", 50),
            tag("1.1.0", 900),
            tag("dev", 10),
        ];
        let spec = PruneSpec {
            repository: RepositoryTarget::Store(None),
            filter: Default::default(),
            older_than: Some(500),
            keep_latest: Some(1),
            allow_empty: false,
        };
        let doomed: Vec<&str> = select_doomed(&all, &spec, 1000)
            .into_iter()
            .map(|c| c.tag.as_str())
            .collect();
        // 1.2.0 is the newest version (kept); 1.1.0 is too young.
        assert_eq!(doomed, ["1.0.0", "dev"]);
    }

    #[test]
    fn the_tag_of_a_full_reference_is_after_its_name() {
        assert_eq!(tag_part("1.0"), "1.0");
        assert_eq!(tag_part("127.0.0.1:5000/team/app:1.0"), "1.0");
        assert_eq!(tag_part("docker.io/library/alpine:3.19"), "3.19");
    }
}
