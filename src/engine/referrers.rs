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
use super::source::Source;
use super::EngineError;
use crate::registry::referrers::{Referrer, MAX_REFERRERS};
use crate::registry::RegistryClient;
use crate::store::IndexEntry;
use crate::types::referrer::{cosign_artifact_type, fallback_tag, COSIGN_SUFFIXES};
use crate::types::{Digest, PlatformChoice, Reference, ReferrerFilter, ReferrerLink};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

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
    pub source: Source,
    pub plan: ImagePlan,
}

/// The referrers of an image at its source.
#[derive(Default)]
pub struct Discovered {
    pub referrers: Vec<PlannedReferrer>,
    /// Referrers left out, and why.
    pub notes: Vec<String>,
}

/// A cheap fingerprint of what refers to `subject` in `from`'s repository
/// (its OCI 1.1 referrers and cosign tags): compared with the last run's,
/// it tells a sync whether an unchanged image got new signatures, with no
/// manifest or blob GETs. `tags` is the repository's tag list.
pub async fn referrers_fingerprint(
    client: &Arc<RegistryClient>,
    from: &Reference,
    subject: &Digest,
    tags: &BTreeSet<String>,
) -> Result<String, EngineError> {
    let mut parts = vec![
        client
            .referrers_fingerprint(from.repository(), subject)
            .await?,
    ];
    for (suffix, _) in COSIGN_SUFFIXES {
        let tag = format!("{}{suffix}", fallback_tag(subject));
        if tags.contains(&tag) {
            let head = client.head_manifest(from.repository(), &tag).await?;
            let digest = head.and_then(|h| h.digest).map(|d| d.to_string());
            parts.push(format!("{tag}={}", digest.unwrap_or_default()));
        }
    }
    Ok(parts.join(";"))
}

/// The subjects of an image's referrers: its root and child manifests.
pub fn subjects_of(plan: &ImagePlan) -> Vec<Digest> {
    let mut subjects = vec![plan.root.digest.clone()];
    subjects.extend(plan.manifests.iter().map(|m| m.digest.clone()));
    subjects
}

/// One referrer a source lists for a subject, before planning.
struct Candidate {
    link: ReferrerLink,
    source: Source,
    artifact_type: Option<String>,
}

/// What a source lists, read once per discovery.
#[derive(Default)]
struct Listing {
    /// A registry repository's tags (for cosign tags).
    tags: Option<BTreeSet<String>>,
    /// The store's referrer entries.
    entries: Option<Vec<IndexEntry>>,
}

/// The referrers `source` lists for `subject`.
async fn candidates(
    source: &Source,
    subject: &Digest,
    listing: &mut Listing,
    notes: &mut Vec<String>,
) -> Vec<Candidate> {
    let mut found = Vec::new();
    match source {
        Source::Registry { client, reference } => {
            let from = reference;
            if listing.tags.is_none() {
                let tags = match client.list_tags(from.repository()).await {
                    Ok(tags) => tags.into_iter().collect(),
                    Err(error) => {
                        notes.push(format!(
                            "cannot list {} for cosign signature tags: {error}",
                            from.name()
                        ));
                        BTreeSet::new()
                    }
                };
                listing.tags = Some(tags);
            }
            match client.referrers(from.repository(), subject).await {
                Ok(listed) => {
                    for Referrer {
                        digest, descriptor, ..
                    } in listed
                    {
                        found.push(Candidate {
                            link: ReferrerLink {
                                subject: subject.clone(),
                                tag: None,
                            },
                            source: Source::Registry {
                                client: client.clone(),
                                reference: from.with_digest(digest),
                            },
                            artifact_type: descriptor["artifactType"].as_str().map(str::to_owned),
                        });
                    }
                }
                Err(error) => notes.push(format!(
                    "referrers of {}@{subject} not copied: {error}",
                    from.name()
                )),
            }
            let tags = listing.tags.as_ref().expect("listed above");
            for (suffix, kind) in COSIGN_SUFFIXES {
                let tag = format!("{}{suffix}", fallback_tag(subject));
                if tags.contains(&tag) {
                    found.push(Candidate {
                        link: ReferrerLink {
                            subject: subject.clone(),
                            tag: Some(tag.clone()),
                        },
                        source: Source::Registry {
                            client: client.clone(),
                            reference: from.with_tag(&tag),
                        },
                        artifact_type: Some(kind.to_owned()),
                    });
                }
            }
        }
        Source::Store { store, .. } => {
            if listing.entries.is_none() {
                let entries = match crate::store::index::read_index(store) {
                    Ok(entries) => entries.into_iter().filter(|e| e.is_referrer()).collect(),
                    Err(error) => {
                        notes.push(format!("referrers in the store not read: {error}"));
                        Vec::new()
                    }
                };
                listing.entries = Some(entries);
            }
            for entry in listing.entries.iter().flatten() {
                let Some(link) = entry.link().filter(|l| &l.subject == subject) else {
                    continue;
                };
                let artifact_type = link
                    .tag
                    .as_deref()
                    .and_then(cosign_artifact_type)
                    .map(str::to_owned)
                    .or_else(|| entry.artifact_type.clone());
                found.push(Candidate {
                    link,
                    source: Source::Store {
                        store: store.clone(),
                        entry: entry.clone(),
                        name: format!("referrer {}", entry.digest),
                    },
                    artifact_type,
                });
            }
        }
        Source::Archive { archive, .. } => {
            for (index, image) in archive.images().iter().enumerate() {
                let Some(link) = image.link.as_ref().filter(|l| &l.subject == subject) else {
                    continue;
                };
                let artifact_type = archive
                    .checked
                    .root(index)
                    .and_then(|root| link.artifact_type(root));
                found.push(Candidate {
                    link: link.clone(),
                    source: archive.source(index),
                    artifact_type,
                });
            }
        }
    }
    found
}

/// Find, plan and check the referrers of `subjects` at `source`, and
/// theirs, to [`MAX_DEPTH`]; each manifest once, at most
/// [`MAX_REFERRERS`] in all.
pub async fn discover_referrers(
    source: &Source,
    subjects: Vec<Digest>,
    filter: &ReferrerFilter,
) -> Discovered {
    let mut discovered = Discovered::default();
    if !filter.enabled() {
        return discovered;
    }
    let mut listing = Listing::default();
    let mut seen: BTreeSet<Digest> = subjects.iter().cloned().collect();
    let mut queue: VecDeque<(Digest, usize)> = subjects.into_iter().map(|d| (d, 0)).collect();
    while let Some((subject, depth)) = queue.pop_front() {
        if depth >= MAX_DEPTH {
            continue;
        }
        let found = candidates(source, &subject, &mut listing, &mut discovered.notes).await;
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
            let plan = match plan_image(&candidate.source, &PlatformChoice::All).await {
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
    source: &Source,
    destination: &Destination,
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
        let copied = transfer(&referrer.source, &referrer.plan, &target, &whole).await?;
        if let (Destination::Registry { client, reference }, None, false) =
            (destination, &referrer.link.tag, copied.subject_indexed)
        {
            client
                .add_to_fallback_index(
                    reference.repository(),
                    &referrer.link.subject,
                    &referrer.plan.root,
                )
                .await?;
        }
        outcome.copied += 1;
    }
    Ok(outcome)
}
