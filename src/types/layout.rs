//! The OCI image layout's `index.json` descriptors, as the store keeps
//! them and archives carry them: a tagged image names its full reference
//! in `org.opencontainers.image.ref.name` and `io.containerd.image.name`
//! (skopeo's `oci:` transport and containerd find it there); a referrer
//! carries the link to its subject.

use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use std::collections::BTreeMap;

/// OCI's annotation for an image's reference name.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for an image's full name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// One descriptor in `index.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// A referrer's artifact type (OCI 1.1 descriptors carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    /// An unnamed entry for a manifest.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> IndexEntry {
        IndexEntry {
            media_type: media_type.to_owned(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// An entry for a referrer of `link.subject` (see [`ReferrerLink`]).
    pub fn referrer(manifest: &ParsedManifest, link: &ReferrerLink) -> IndexEntry {
        let mut entry = IndexEntry::new(
            &manifest.media_type,
            manifest.digest.clone(),
            manifest.bytes.len() as u64,
        );
        entry.artifact_type = link.artifact_type(manifest);
        link.annotate(&mut entry.annotations);
        entry
    }

    /// What the entry refers to, when it is a referrer (a signature, an
    /// attestation, an SBOM) rather than an image.
    pub fn link(&self) -> Option<ReferrerLink> {
        ReferrerLink::from_annotations(&self.annotations)
    }

    /// Whether the entry is a referrer kept with its subject.
    pub fn is_referrer(&self) -> bool {
        self.link().is_some()
    }

    /// Whether the entry is an image without a name (docker's `<none>`).
    pub fn is_dangling(&self) -> bool {
        self.name().is_none() && !self.is_referrer()
    }

    /// The image's reference, when tagged (or pinned by digest).
    pub fn name(&self) -> Option<Reference> {
        if self
            .annotations
            .contains_key(crate::types::referrer::SUBJECT_ANNOTATION)
        {
            return None;
        }
        let text = self
            .annotations
            .get(CONTAINERD_NAME)
            .or_else(|| self.annotations.get(REF_NAME))?;
        Reference::parse_repository_or_ref(text)
            .ok()
            .filter(|r| r.tag().is_some() || r.digest().is_some())
    }

    pub(crate) fn named(mut self, name: &Reference) -> IndexEntry {
        self.annotations
            .insert(REF_NAME.to_owned(), name.to_string());
        self.annotations
            .insert(CONTAINERD_NAME.to_owned(), name.to_string());
        self
    }

    pub(crate) fn unnamed(mut self) -> IndexEntry {
        self.annotations.remove(REF_NAME);
        self.annotations.remove(CONTAINERD_NAME);
        self
    }
}

/// `index.json` as another tool wrote it (archives): only the descriptors.
#[derive(serde::Deserialize)]
pub struct IndexFileView {
    pub manifests: Vec<IndexEntry>,
}
