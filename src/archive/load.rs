//! `ferry load`: reads ferry's own archives, `docker save` output (Docker
//! ≤ 24 `<id>/layer.tar`, Docker 25+ OCI layout inside), podman/skopeo
//! `docker-archive` and `oci-archive`, and crane tarballs, optionally
//! gzip/zstd/xz compressed as a whole. One streaming pass stages every
//! regular file under its computed digest; nothing is extracted by name.
//! Layer counts and diffIDs are checked against each config, and only when
//! every image verified are blobs committed and tags applied.

use super::diff_ids::DiffChecks;
use super::read::{Contents, MAX_METADATA};
use super::{ArchiveError, KnownBlobs};
use crate::types::manifest::descriptor_digest;
use crate::types::staging::Staging;
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One image an archive holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedImage {
    pub names: Vec<String>,
    pub digest: Digest,
    pub id: Digest,
    pub media_type: String,
    pub platforms: Vec<String>,
    pub size: u64,
    /// Set for a referrer (a signature, an attestation, an SBOM): the
    /// manifest it is kept with. Referrers are not images of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<ReferrerLink>,
}

/// An image found in the archive, checked, waiting to be committed.
pub(super) struct Found {
    pub(super) names: Vec<Reference>,
    pub(super) root: ParsedManifest,
    /// Manifests ferry built (docker-archive path) to stage at commit.
    pub(super) built: Vec<ParsedManifest>,
    pub(super) blobs: BTreeSet<Digest>,
    pub(super) id: Digest,
    pub(super) platforms: Vec<String>,
    pub(super) link: Option<ReferrerLink>,
}

pub(super) struct Loader<'a> {
    /// The size of every manifest and blob the descriptors read so far
    /// name: an image's size is that of its distinct blobs, as `images`
    /// counts it.
    pub(super) sizes: BTreeMap<Digest, u64>,
    pub(super) store: &'a dyn Staging,
    pub(super) known: &'a dyn KnownBlobs,
    pub(super) contents: Contents,
    pub(super) checks: DiffChecks,
    pub(super) missing: BTreeSet<Digest>,
}

impl Loader<'_> {
    /// A small blob by digest: from the archive, else from where the
    /// archive's left-out blobs are (staged, so it commits with the rest).
    pub(super) fn lookup(
        &mut self,
        digest: &Digest,
        what: &str,
        manifest: bool,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        if let Some(&index) = self.contents.by_digest.get(digest) {
            return self.contents.read_staged(index, MAX_METADATA).map(Some);
        }
        let Some(bytes) = self.known.read(what, digest, manifest, MAX_METADATA)? else {
            return Ok(None);
        };
        if !self.known.is_destination() {
            let staged = self.store.stage_bytes(&bytes)?;
            if &staged.digest != digest {
                return Err(self
                    .contents
                    .invalid(format!("{digest} for {what} does not match its content")));
            }
            self.contents
                .by_digest
                .insert(digest.clone(), self.contents.staged.len());
            self.contents.staged.push(staged);
        }
        Ok(Some(bytes))
    }

    /// Whether a blob is in the archive or where its left-out blobs are.
    pub(super) fn present(&self, digest: &Digest, what: &str) -> bool {
        self.contents.by_digest.contains_key(digest) || self.known.has(what, digest)
    }

    /// The config's diffIDs; `None` when the config is missing (recorded as such).
    fn config_of(
        &mut self,
        config: &Digest,
        what: &str,
        layers: usize,
    ) -> Result<Option<Vec<Digest>>, ArchiveError> {
        let bytes = match self.lookup(config, what, false)? {
            Some(bytes) => bytes,
            None => {
                self.missing.insert(config.clone());
                return Ok(None);
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.contents
                .invalid(format!("config of {what} is not JSON: {e}"))
        })?;
        let Some(diff_ids) = value.pointer("/rootfs/diff_ids").and_then(|v| v.as_array()) else {
            // A layerless image (labels only) may say nothing of its rootfs.
            return match layers {
                0 => Ok(Some(Vec::new())),
                _ => Err(self
                    .contents
                    .invalid(format!("config of {what} has no rootfs.diff_ids"))),
            };
        };
        let diff_ids = diff_ids
            .iter()
            .map(|d| {
                d.as_str().and_then(|d| d.parse().ok()).ok_or_else(|| {
                    self.contents
                        .invalid(format!("config of {what} has an invalid diff_id"))
                })
            })
            .collect::<Result<Vec<Digest>, _>>()?;
        Ok(Some(diff_ids))
    }

    /// Check an image manifest: config present, layer count equal to the
    /// diffID count, each layer present, diffIDs queued for checking.
    pub(super) fn check_image(
        &mut self,
        manifest: &ParsedManifest,
        what: &str,
        blobs: &mut BTreeSet<Digest>,
    ) -> Result<String, ArchiveError> {
        let bad = |message: String| self.contents.invalid(format!("{what}: {message}"));
        let image = manifest
            .image()
            .ok_or_else(|| bad("not an image manifest".into()))?;
        let config = descriptor_digest(image.config()).map_err(|e| bad(e.to_string()))?;
        blobs.insert(manifest.digest.clone());
        blobs.insert(config.clone());
        self.sizes
            .insert(manifest.digest.clone(), manifest.bytes.len() as u64);
        self.sizes.insert(config.clone(), image.config().size());
        // diffIDs belong to container images; an artifact (a Helm chart, a
        // signature whose config is `{}`, an SBOM) has only its blobs'
        // digests: the one rule pull and copy follow too.
        let container = manifest.is_container_image();
        // A missing config is reported with the other missing blobs.
        let diff_ids = match container {
            true => self
                .config_of(&config, what, image.layers().len())?
                .unwrap_or_default(),
            false => {
                if !self.present(&config, what) {
                    self.missing.insert(config.clone());
                }
                Vec::new()
            }
        };
        let config_present = self.present(&config, what);
        if container && config_present && diff_ids.len() != image.layers().len() {
            return Err(self.contents.invalid(format!(
                "{what} has {} layers but its config lists {} diff_ids",
                image.layers().len(),
                diff_ids.len()
            )));
        }
        for (index, layer) in image.layers().iter().enumerate() {
            let digest =
                descriptor_digest(layer).map_err(|e| self.contents.invalid(e.to_string()))?;
            self.sizes.insert(digest.clone(), layer.size());
            blobs.insert(digest.clone());
            match self.contents.by_digest.get(&digest) {
                Some(&staged) => {
                    if let Some(expected) = diff_ids.get(index) {
                        self.checks.push((
                            staged,
                            expected.clone(),
                            format!("layer {} of {what}", index + 1),
                        ));
                    }
                }
                None if self.known.has(what, &digest) => {}
                None => {
                    self.missing.insert(digest);
                }
            }
        }
        let config_bytes = match container {
            true => self.lookup(&config, what, false)?,
            false => None,
        };
        let platform = config_bytes
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|c| {
                format!(
                    "{}/{}",
                    c["os"].as_str().unwrap_or("?"),
                    c["architecture"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_default();
        Ok(platform)
    }

    fn manifest_by_digest(
        &mut self,
        digest: &Digest,
        media_type: &str,
        what: &str,
    ) -> Result<Option<ParsedManifest>, ArchiveError> {
        match self.lookup(digest, what, true)? {
            Some(bytes) => ParsedManifest::parse(bytes.into(), Some(media_type), what)
                .map(Some)
                .map_err(|e| self.contents.invalid(e.to_string())),
            None => Ok(None),
        }
    }

    /// The image manifests an index reaches, following nested indexes
    /// (their digests go to `nested`). Returns whether every child was found.
    fn collect_images(
        &mut self,
        index: &ParsedManifest,
        what: &str,
        depth: usize,
        images: &mut Vec<ParsedManifest>,
        nested: &mut BTreeSet<Digest>,
    ) -> Result<bool, ArchiveError> {
        if depth >= crate::types::choice::MAX_INDEX_DEPTH {
            return Err(self
                .contents
                .invalid(format!("{what}: index nesting too deep")));
        }
        let mut all_found = true;
        for child in index.children() {
            let digest =
                descriptor_digest(child).map_err(|e| self.contents.invalid(e.to_string()))?;
            let manifest = self.manifest_by_digest(&digest, child.media_type().as_ref(), what)?;
            match manifest {
                Some(m) if m.is_index() => {
                    nested.insert(m.digest.clone());
                    self.sizes.insert(m.digest.clone(), m.bytes.len() as u64);
                    all_found &= self.collect_images(&m, what, depth + 1, images, nested)?;
                }
                Some(m) if m.image().is_some() => {
                    if !images.iter().any(|i| i.digest == m.digest) {
                        images.push(m);
                    }
                }
                _ => all_found = false,
            }
        }
        Ok(all_found)
    }

    /// The OCI layout path (ferry, Docker 25+, skopeo/podman oci-archive).
    pub(super) fn oci_images(
        &mut self,
        docker_names: &HashMap<Digest, Vec<Reference>>,
    ) -> Result<Vec<Found>, ArchiveError> {
        let layout = self.contents.bytes("oci-layout")?;
        let version: serde_json::Value = serde_json::from_slice(&layout)
            .map_err(|_| self.contents.invalid("oci-layout is not JSON"))?;
        if version["imageLayoutVersion"] != "1.0.0" {
            return Err(self.contents.invalid("oci-layout is not version 1.0.0"));
        }
        let index: crate::types::layout::IndexFileView =
            serde_json::from_slice(&self.contents.bytes("index.json")?)
                .map_err(|e| self.contents.invalid(format!("index.json: {e}")))?;
        let mut found = Vec::new();
        for entry in index.manifests {
            let what = entry
                .name()
                .map_or_else(|| entry.digest.to_string(), |n| n.to_string());
            let Some(mut root) =
                self.manifest_by_digest(&entry.digest, &entry.media_type, &what)?
            else {
                self.missing.insert(entry.digest.clone());
                continue;
            };
            let mut blobs = BTreeSet::new();
            let mut platforms = Vec::new();
            self.sizes
                .insert(root.digest.clone(), root.bytes.len() as u64);
            if root.is_index() {
                let mut complete = Vec::new();
                let mut nested = BTreeSet::new();
                let mut all_present =
                    self.collect_images(&root, &what, 0, &mut complete, &mut nested)?;
                let missing_before = self.missing.clone();
                let mut checked = Vec::new();
                for manifest in &complete {
                    let mut child_blobs = BTreeSet::new();
                    let platform = self.check_image(manifest, &what, &mut child_blobs)?;
                    let complete_child = child_blobs.iter().all(|d| self.present(d, &what));
                    all_present &= complete_child;
                    checked.push((manifest.clone(), child_blobs, platform, complete_child));
                }
                if all_present {
                    blobs.insert(root.digest.clone());
                    blobs.extend(nested);
                    for (_, child_blobs, platform, _) in checked {
                        blobs.extend(child_blobs);
                        platforms.push(platform);
                    }
                } else if let Some((manifest, child_blobs, platform, _)) =
                    checked.into_iter().find(|(_, _, _, complete)| *complete)
                {
                    // Some exporters save only one platform of an index
                    // (Docker's containerd store): keep the complete one.
                    self.missing = missing_before;
                    self.checks.retain(|(staged, _, _)| {
                        self.contents
                            .staged
                            .get(*staged)
                            .is_some_and(|s| child_blobs.contains(&s.digest))
                    });
                    root = manifest;
                    blobs = child_blobs;
                    platforms.push(platform);
                }
            } else if root.image().is_some() {
                let platform = self.check_image(&root, &what, &mut blobs)?;
                platforms.push(platform);
            }
            let id = match root.image() {
                Some(image) => descriptor_digest(image.config())
                    .map_err(|e| self.contents.invalid(e.to_string()))?,
                None => root.digest.clone(),
            };
            let link = entry.link();
            if let Some(ReferrerLink { subject, tag: None }) = &link {
                // An entry may lie: the referrer must name its subject.
                let names = serde_json::from_slice::<serde_json::Value>(&root.bytes)
                    .ok()
                    .and_then(|m| m["subject"]["digest"].as_str().map(str::to_owned));
                if names.as_deref() != Some(subject.to_string().as_str()) {
                    return Err(self.contents.invalid(format!(
                        "index.json lists {} as a referrer of {subject}, but its manifest does not name that subject",
                        root.digest
                    )));
                }
            }
            let mut names: Vec<Reference> = entry
                .name()
                .into_iter()
                .filter(|n| n.tag().is_some())
                .collect();
            if names.is_empty() && link.is_none() {
                names = docker_names.get(&id).cloned().unwrap_or_default();
            }
            found.push(Found {
                names,
                root,
                built: Vec::new(),
                blobs,
                id,
                platforms,
                link,
            });
        }
        Ok(found)
    }
}
