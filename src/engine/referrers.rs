//! Referrers travel with their images: after an image is copied between
//! registries, every manifest that refers to it — OCI 1.1 referrers (found
//! through the referrers API or its fallback tag) and cosign's
//! `sha256-<hex>.sig/.att/.sbom` tags — is planned and transferred the same
//! way, its digest kept. Referrers of referrers follow to a bounded depth,
//! each fetched once. Discovery problems (a broken referrers index, one
//! that lies) become notes: the image itself is still copied, and nothing
//! is written unverified.

use super::copy::{transfer, CopyOptions};
use super::endpoint::{Destination, Source};
use super::plan::plan_image;
use super::EngineError;
use crate::registry::referrers::{fallback_tag, Referrer, MAX_REFERRERS};
use crate::registry::RegistryClient;
use crate::types::{Digest, PlatformChoice, Reference};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// How deep referrers of referrers are followed (a signature on an SBOM on an image).
const MAX_DEPTH: usize = 3;
/// cosign's tag suffixes, with the artifact types regclient and cosign
/// give them (what `referrers = { artifact_types }` matches).
const COSIGN_SUFFIXES: [(&str, &str); 3] = [
    (".sig", "application/vnd.dev.cosign.artifact.sig.v1+json"),
    (".att", "application/vnd.dev.cosign.artifact.att.v1+json"),
    (".sbom", "application/vnd.dev.cosign.artifact.sbom.v1+json"),
];

/// What copying an image's referrers did.
#[derive(Debug, Default)]
pub struct ReferrersOutcome {
    pub copied: usize,
    /// Referrers left behind, and why.
    pub notes: Vec<String>,
}

/// How a referrer is attached to its subject.
enum Attachment {
    /// An OCI 1.1 referrer (its manifest names the subject).
    Subject(Digest),
    /// A cosign-style tag.
    Tag(String),
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

/// Copy the referrers of `subjects` (the image's root and child manifests)
/// from `from` to `to`, two repositories in registries.
pub async fn copy_referrers(
    source: (&Arc<RegistryClient>, &Reference),
    destination: (&Arc<RegistryClient>, &Reference),
    subjects: Vec<Digest>,
    options: &CopyOptions,
) -> Result<ReferrersOutcome, EngineError> {
    let (source_client, from) = source;
    let (destination_client, to) = destination;
    let mut outcome = ReferrersOutcome::default();
    // cosign tags: one tag list, then a set lookup per subject.
    let tags: BTreeSet<String> = match source_client.list_tags(from.repository()).await {
        Ok(tags) => tags.into_iter().collect(),
        Err(error) => {
            outcome.notes.push(format!(
                "cannot list {} for cosign signature tags: {error}",
                from.name()
            ));
            BTreeSet::new()
        }
    };
    let mut seen: BTreeSet<Digest> = subjects.iter().cloned().collect();
    let mut queue: VecDeque<(Digest, usize)> = subjects.into_iter().map(|d| (d, 0)).collect();
    let whole = CopyOptions {
        platforms: PlatformChoice::All,
        ..options.clone()
    };
    while let Some((subject, depth)) = queue.pop_front() {
        if depth >= MAX_DEPTH {
            continue;
        }
        let mut found: Vec<(Attachment, Reference)> = Vec::new();
        match source_client.referrers(from.repository(), &subject).await {
            Ok(listed) => {
                for Referrer {
                    digest, descriptor, ..
                } in listed
                {
                    if options
                        .referrers
                        .admits(descriptor["artifactType"].as_str())
                    {
                        found.push((
                            Attachment::Subject(subject.clone()),
                            from.with_digest(digest),
                        ));
                    }
                }
            }
            Err(error) => outcome.notes.push(format!(
                "referrers of {}@{subject} not copied: {error}",
                from.name()
            )),
        }
        for (suffix, artifact_type) in COSIGN_SUFFIXES {
            let tag = format!("{}{suffix}", fallback_tag(&subject));
            if tags.contains(&tag) && options.referrers.admits(Some(artifact_type)) {
                found.push((Attachment::Tag(tag.clone()), from.with_tag(&tag)));
            }
        }
        for (attachment, reference) in found {
            if outcome.copied >= MAX_REFERRERS {
                outcome.notes.push(format!(
                    "{}: more than {MAX_REFERRERS} referrers; the rest were not copied",
                    from.name()
                ));
                return Ok(outcome);
            }
            let source = Source::Registry {
                client: source_client.clone(),
                reference: reference.clone(),
            };
            let plan = match plan_image(&source, &PlatformChoice::All).await {
                Ok(plan) => plan,
                Err(error) => {
                    outcome
                        .notes
                        .push(format!("referrer {reference} not copied: {error}"));
                    continue;
                }
            };
            // Each manifest is walked once (an entry listed twice, or a loop
            // A → B → A, ends here); a cosign tag is still written, since two
            // tags may name one manifest.
            let first_time = seen.insert(plan.root.digest.clone());
            if !first_time && matches!(attachment, Attachment::Subject(_)) {
                continue;
            }
            if let Attachment::Subject(expected) = &attachment {
                // A referrers index may lie: the manifest must name the subject.
                let names = serde_json::from_slice::<serde_json::Value>(&plan.root.bytes)
                    .ok()
                    .and_then(|m| m["subject"]["digest"].as_str().map(str::to_owned));
                if names.as_deref() != Some(expected.to_string().as_str()) {
                    outcome.notes.push(format!(
                        "{reference} is listed as a referrer of {expected} but does not name it as its subject; not copied"
                    ));
                    continue;
                }
            }
            let target = match &attachment {
                Attachment::Subject(_) => to.with_digest(plan.root.digest.clone()),
                Attachment::Tag(tag) => to.with_tag(tag),
            };
            let destination = Destination::Registry {
                client: destination_client.clone(),
                reference: target,
            };
            let copied = transfer(&source, &plan, &destination, &whole).await?;
            if let (Attachment::Subject(subject), false) = (&attachment, copied.subject_indexed) {
                destination_client
                    .add_to_fallback_index(to.repository(), subject, &plan.root)
                    .await?;
            }
            outcome.copied += 1;
            if first_time {
                queue.push_back((plan.root.digest.clone(), depth + 1));
            }
        }
    }
    Ok(outcome)
}
