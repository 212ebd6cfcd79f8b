//! How a referrer (a signature, attestation or SBOM) is tied to its subject
//! in an OCI image layout — the store's `index.json` and an archive's. A
//! layout has no referrers API, so each referrer gets an `index.json` entry
//! carrying ferry's annotations: the subject's digest, and for a cosign
//! signature tag (`sha256-<hex>.sig`) the tag it travels under. Entries
//! without a name (`org.opencontainers.image.ref.name`) are ignored by
//! skopeo's `oci:` transport, docker and podman, so the layout stays one
//! they read.

use super::{media, Digest, ParsedManifest};
use std::collections::BTreeMap;

/// Annotation: the digest of the manifest this entry refers to.
pub const SUBJECT_ANNOTATION: &str = "dev.ferry.referrer.subject";
/// Annotation: the cosign-style tag the referrer is published under.
pub const TAG_ANNOTATION: &str = "dev.ferry.referrer.tag";

/// Ties a referrer manifest to its subject.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ReferrerLink {
    /// The manifest (an image, an index, a platform manifest or another
    /// referrer) this one is about.
    pub subject: Digest,
    /// Set for a cosign tag (`sha256-<hex>.sig/.att/.sbom`): it is written
    /// under this tag; otherwise it is an OCI 1.1 referrer (its manifest
    /// names the subject).
    pub tag: Option<String>,
}

impl ReferrerLink {
    /// The link an entry's annotations record, if it is a referrer.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<ReferrerLink> {
        let subject = annotations.get(SUBJECT_ANNOTATION)?.parse().ok()?;
        let tag = annotations
            .get(TAG_ANNOTATION)
            .filter(|t| is_cosign_tag(t))
            .cloned();
        Some(ReferrerLink { subject, tag })
    }

    /// The artifact type of the referrer `manifest` under this link: a
    /// cosign tag's by its suffix, else the manifest's own.
    pub fn artifact_type(&self, manifest: &ParsedManifest) -> Option<String> {
        match &self.tag {
            Some(tag) => cosign_artifact_type(tag).map(str::to_owned),
            None => artifact_type(manifest),
        }
    }

    /// Record the link in an entry's annotations.
    pub fn annotate(&self, annotations: &mut BTreeMap<String, String>) {
        annotations.insert(SUBJECT_ANNOTATION.to_owned(), self.subject.to_string());
        match &self.tag {
            Some(tag) => annotations.insert(TAG_ANNOTATION.to_owned(), tag.clone()),
            None => annotations.remove(TAG_ANNOTATION),
        };
    }
}

/// cosign's tag suffixes, with the artifact types regclient and cosign give
/// them (what `referrers = { artifact_types }` matches).
pub const COSIGN_SUFFIXES: [(&str, &str); 3] = [
    (".sig", "application/vnd.dev.cosign.artifact.sig.v1+json"),
    (".att", "application/vnd.dev.cosign.artifact.att.v1+json"),
    (".sbom", "application/vnd.dev.cosign.artifact.sbom.v1+json"),
];

/// The cosign tags of `subject` (`sha256-<hex>.sig`, `.att`, `.sbom`) that
/// `tags` (a repository's tag list) holds, each with its artifact type:
/// the one way every door finds cosign signatures without a GET.
pub fn cosign_tags_in<'a>(
    subject: &Digest,
    tags: &'a std::collections::BTreeSet<String>,
) -> impl Iterator<Item = (String, &'static str)> + 'a {
    let base = fallback_tag(subject);
    COSIGN_SUFFIXES
        .iter()
        .map(move |(suffix, kind)| (format!("{base}{suffix}"), *kind))
        .filter(move |(tag, _)| tags.contains(tag))
}

/// The referrers fallback tag of a digest (`sha256:abc…` → `sha256-abc…`),
/// per the distribution spec's referrers tag schema.
pub fn fallback_tag(digest: &Digest) -> String {
    let text = digest.to_string();
    let (algorithm, encoded) = text.split_once(':').unwrap_or(("sha256", &text));
    let clean = |s: &str, limit: usize| -> String {
        s.chars()
            .take(limit)
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
                _ => '-',
            })
            .collect()
    };
    format!("{}-{}", clean(algorithm, 32), clean(encoded, 64))
}

/// A manifest's artifact type: its `artifactType`, else its config's media
/// type unless that is the empty one (the OCI 1.1 rule).
pub fn artifact_type(manifest: &ParsedManifest) -> Option<String> {
    let document: serde_json::Value = serde_json::from_slice(&manifest.bytes).ok()?;
    document["artifactType"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            document["config"]["mediaType"]
                .as_str()
                .filter(|t| *t != media::OCI_EMPTY)
                .map(str::to_owned)
        })
}

/// The descriptor a referrers index lists for `manifest` (with its
/// artifact type and the manifest's annotations).
pub fn referrer_descriptor(manifest: &ParsedManifest) -> serde_json::Value {
    let document: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    let mut descriptor = serde_json::json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": manifest.bytes.len(),
    });
    if let Some(artifact_type) = artifact_type(manifest) {
        descriptor["artifactType"] = artifact_type.into();
    }
    if let Some(annotations) = document.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    descriptor
}

/// Whether `tag` is a cosign tag (`sha256-<64 hex>.sig/.att/.sbom`).
pub fn is_cosign_tag(tag: &str) -> bool {
    COSIGN_SUFFIXES
        .iter()
        .any(|(suffix, _)| tag.strip_suffix(suffix).is_some_and(is_fallback_tag))
}

/// Whether `tag` is spelled like a referrers fallback tag (`sha256-<64 hex>`).
pub fn is_fallback_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `tag` names a referrer rather than an image: a cosign tag or a
/// referrers fallback tag.
pub fn is_referrer_tag(tag: &str) -> bool {
    is_cosign_tag(tag) || is_fallback_tag(tag)
}

/// The one tag-listing rule (`-a`, sync, backup, prune, `delete_extra`):
/// a repository's tags that name images, sorted. Referrer tags travel with
/// their images as referrers, never as images of their own.
pub fn image_tags(mut tags: Vec<String>) -> Vec<String> {
    tags.retain(|t| !is_referrer_tag(t));
    tags.sort();
    tags
}

/// The artifact type a cosign tag stands for.
pub fn cosign_artifact_type(tag: &str) -> Option<&'static str> {
    COSIGN_SUFFIXES
        .iter()
        .find(|(suffix, _)| tag.ends_with(suffix))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_through_annotations() {
        let subject = Digest::sha256_of(b"image");
        let link = ReferrerLink {
            subject: subject.clone(),
            tag: Some(format!("{}.sig", fallback_tag(&subject))),
        };
        let mut annotations = BTreeMap::new();
        link.annotate(&mut annotations);
        assert_eq!(ReferrerLink::from_annotations(&annotations), Some(link));
        // A tag that is not a cosign tag is not trusted as one.
        annotations.insert(TAG_ANNOTATION.into(), "latest".into());
        assert_eq!(
            ReferrerLink::from_annotations(&annotations).unwrap().tag,
            None
        );
        assert!(ReferrerLink::from_annotations(&BTreeMap::new()).is_none());
    }

    #[test]
    fn cosign_tags_are_recognised() {
        let tag = fallback_tag(&Digest::sha256_of(b"x"));
        assert!(is_fallback_tag(&tag));
        assert!(is_cosign_tag(&format!("{tag}.att")));
        assert!(!is_cosign_tag(&tag));
        assert!(!is_cosign_tag("sha256-abc.sig"));
        assert_eq!(
            cosign_artifact_type(&format!("{tag}.sbom")),
            Some("application/vnd.dev.cosign.artifact.sbom.v1+json")
        );
    }
}
