//! Referrers travel with their images, between every pair of endpoints:
//! after an image is planned, every manifest that refers to it — OCI 1.1
//! referrers (a registry's referrers API or its fallback tag; the `index.json`
//! entries ferry keeps in the store and in archives) and cosign's
//! `sha256-<hex>.sig/.att/.sbom` tags — is discovered, planned and written
//! the same way, its digest kept. Referrers of referrers follow to a bounded
//! depth, each fetched once. Discovery problems (a broken referrers index,
//! one that lies) become notes: the image itself is still copied, and
//! nothing is written unverified.

use super::copy::{transfer, CopyOptions};
use super::destination::Destination;
use super::plan::{plan_image, ImagePlan};
use super::source::{SharedSource, Source};
use super::EngineError;
use crate::registry::referrers::MAX_REFERRERS;
use crate::types::{Digest, PlatformChoice, ReferrerFilter, ReferrerLink};
use std::collections::{BTreeSet, VecDeque};

/// How deep referrers of referrers are followed (a signature on an SBOM on an image).
const MAX_DEPTH: usize = 3;

/// What copying an image's referrers did.
#[derive(Debug, Default)]
pub struct ReferrersOutcome {
    pub copied: usize,
    /// Referrers left behind, and why.
    pub notes: Vec<String>,
}

/// A referrer found at a source, planned and checked.
pub struct PlannedReferrer {
    pub link: ReferrerLink,
    pub source: SharedSource,
    pub plan: ImagePlan,
}

/// The referrers of an image at its source.
#[derive(Default)]
pub struct Discovered {
    pub referrers: Vec<PlannedReferrer>,
    /// Referrers left out, and why.
    pub notes: Vec<String>,
}

/// The subjects of an image's referrers: its root and child manifests.
pub fn subjects_of(plan: &ImagePlan) -> Vec<Digest> {
    let mut subjects = vec![plan.root.digest.clone()];
    subjects.extend(plan.manifests.iter().map(|m| m.digest.clone()));
    subjects
}

/// Find, plan and check the referrers of `subjects` at `source`, and
/// theirs, to [`MAX_DEPTH`]; each manifest once, at most
/// [`MAX_REFERRERS`] in all.
pub async fn discover_referrers(
    source: &dyn Source,
    subjects: Vec<Digest>,
    filter: &ReferrerFilter,
) -> Discovered {
    let mut discovered = Discovered::default();
    if !filter.enabled() {
        return discovered;
    }
    let mut seen: BTreeSet<Digest> = subjects.iter().cloned().collect();
    let mut queue: VecDeque<(Digest, usize)> = subjects.into_iter().map(|d| (d, 0)).collect();
    while let Some((subject, depth)) = queue.pop_front() {
        if depth >= MAX_DEPTH {
            continue;
        }
        let found = source.referrers(&subject, &mut discovered.notes).await;
        for candidate in found {
            if !filter.admits(candidate.artifact_type.as_deref()) {
                continue;
            }
            if discovered.referrers.len() >= MAX_REFERRERS {
                discovered.notes.push(format!(
                    "{}: more than {MAX_REFERRERS} referrers; the rest were not copied",
                    source.describe()
                ));
                return discovered;
            }
            let what = candidate.source.describe();
            let plan = match plan_image(candidate.source.as_ref(), &PlatformChoice::All).await {
                Ok(plan) => plan,
                Err(error) => {
                    discovered
                        .notes
                        .push(format!("referrer {what} not copied: {error}"));
                    continue;
                }
            };
            // Each manifest is walked once (an entry listed twice, or a loop
            // A → B → A, ends here); a cosign tag is still written, since two
            // tags may name one manifest.
            let first_time = seen.insert(plan.root.digest.clone());
            if !first_time && candidate.link.tag.is_none() {
                continue;
            }
            if candidate.link.tag.is_none() {
                // A referrers index may lie: the manifest must name the subject.
                let names = serde_json::from_slice::<serde_json::Value>(&plan.root.bytes)
                    .ok()
                    .and_then(|m| m["subject"]["digest"].as_str().map(str::to_owned));
                if names.as_deref() != Some(subject.to_string().as_str()) {
                    discovered.notes.push(format!(
                        "{what} is listed as a referrer of {subject} but does not name it as its subject; not copied"
                    ));
                    continue;
                }
            }
            if first_time {
                queue.push_back((plan.root.digest.clone(), depth + 1));
            }
            discovered.referrers.push(PlannedReferrer {
                link: candidate.link,
                source: candidate.source,
                plan,
            });
        }
    }
    discovered
}

/// Copy the referrers of `subjects` (an image's root and child manifests)
/// from `source` to `destination`, any pair of registry and store.
pub async fn copy_referrers(
    source: &dyn Source,
    destination: &dyn Destination,
    subjects: Vec<Digest>,
    options: &CopyOptions,
) -> Result<ReferrersOutcome, EngineError> {
    let discovered = discover_referrers(source, subjects, &options.referrers).await;
    let mut outcome = ReferrersOutcome {
        copied: 0,
        notes: discovered.notes,
    };
    let whole = CopyOptions {
        platforms: PlatformChoice::All,
        ..options.clone()
    };
    for referrer in discovered.referrers {
        let target = destination.for_referrer(&referrer.link, &referrer.plan.root.digest);
        let copied = transfer(
            referrer.source.as_ref(),
            &referrer.plan,
            target.as_ref(),
            &whole,
        )
        .await?;
        target
            .referrer_written(&referrer.link, &referrer.plan.root, copied.subject_indexed)
            .await?;
        outcome.copied += 1;
    }
    Ok(outcome)
}
