//! `[[retag]]`: keep semver aliases (`2.1`, `2`, `latest`) on the highest
//! matching release, in a registry repository or a store repository. An
//! alias never moves backwards; moving one pushes the same manifest bytes
//! under the alias, so no blob is transferred.

use super::state::JobState;
use super::{ImageResult, JobContext, JobError, JobReport, Stop};
use crate::config::jobs::RetagSpec;
use crate::config::RepositoryTarget;
use crate::policy::{compute_aliases, TagVersion};
use crate::types::Digest;
use std::collections::BTreeMap;

/// The highest version tag (full `X.Y.Z`) among `tags` pointing at `digest`.
fn highest_version_at<'a>(
    digests: &'a BTreeMap<String, Digest>,
    digest: &Digest,
) -> Option<(TagVersion, &'a str)> {
    digests
        .iter()
        .filter(|(_, d)| *d == digest)
        .filter_map(|(tag, _)| {
            TagVersion::parse(tag)
                .filter(|v| v.precision == 3)
                .map(|v| (v, tag.as_str()))
        })
        .max_by(|a, b| a.0.compare(&b.0))
}

pub async fn run(
    context: &JobContext,
    spec: &RetagSpec,
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    if matches!(spec.repository, RepositoryTarget::Store(None)) {
        return Err(Stop::Failed(JobError::Refused(
            "retag needs a repository, e.g. store/team/app".into(),
        )));
    }
    // Every tag's digest: HEADs on a registry, the index in the store.
    let repository = context.repository(&spec.repository)?;
    let digests: BTreeMap<String, Digest> = repository
        .tags()
        .await?
        .into_iter()
        .map(|t| (t.tag, t.digest))
        .collect();
    let tags: Vec<String> = digests.keys().cloned().collect();
    let aliases = compute_aliases(&tags, &spec.aliases, spec.prerelease);
    let mut failed = Vec::new();
    let total = aliases.len();
    for (alias, target_tag) in aliases {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        let Some(target_digest) = digests.get(&target_tag).cloned() else {
            continue;
        };
        let current = digests.get(&alias).cloned();
        if current.as_ref() == Some(&target_digest) {
            continue;
        }
        if let Some(current) = &current {
            let Some(target_version) = TagVersion::parse(&target_tag) else {
                continue; // aliases always point at versions
            };
            // What the alias points at now: the highest version tag with its
            // digest, or (when that tag is gone) the version this job set.
            let remembered = state
                .aliases
                .get(&alias)
                .filter(|(_, digest)| digest == current)
                .and_then(|(tag, _)| TagVersion::parse(tag).map(|v| (v, tag.as_str())));
            if let Some((version, tag)) = highest_version_at(&digests, current).or(remembered) {
                if version.compare(&target_version).is_gt() {
                    report.notes.push(format!(
                        "{alias} stays on {tag}: moving it to {target_tag} would go backwards"
                    ));
                    continue;
                }
            }
        }
        let line = format!(
            "{}:{alias} → {target_tag} ({target_digest})",
            repository.describe()
        );
        if dry_run {
            report.changes.push(format!("would point {line}"));
            continue;
        }
        // One alias that cannot be written is reported; the others still move.
        if let Err(error) = repository.put_tag(&alias, &target_digest).await {
            let error = crate::types::error_text::error_chain(&error);
            failed.push(format!("{alias} ({error})"));
            report.images.push(ImageResult::failed(
                repository.describe(),
                Some(alias.clone()),
                error,
            ));
            continue;
        }
        state
            .aliases
            .insert(alias.clone(), (target_tag.clone(), target_digest.clone()));
        report.changes.push(format!("pointed {line}"));
    }
    super::failed_images("aliases", &failed, total)
}
