//! The docker-archive path of `load` (Docker ≤ 24 `docker save`, podman
//! and skopeo `docker-archive`, crane): `manifest.json` lists each image's
//! config and layer files; ferry builds the OCI manifest these archives
//! lack (so the image ID, the config digest, is kept) and checks it like
//! any other image.

use super::load::{Found, Loader};
use super::read::Item;
use super::{ArchiveError, Compression};
use crate::types::staging::StagedBlob;
use crate::types::{media, Digest, ParsedManifest, Reference};
use std::collections::BTreeSet;
use std::io::Read;

/// One entry of `manifest.json`.
#[derive(serde::Deserialize)]
pub(super) struct DockerItem {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(super) repo_tags: Vec<String>,
    #[serde(rename = "Layers", default)]
    pub(super) layers: Vec<String>,
}

fn layer_media_type(staged: &StagedBlob) -> &'static str {
    let mut head = [0u8; 8];
    let read = staged
        .open()
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match Compression::detect(&head[..read]) {
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

impl Loader<'_> {
    /// The docker-archive path (Docker ≤ 24, podman/skopeo, crane).
    pub(super) fn docker_images(
        &mut self,
        items: &[DockerItem],
    ) -> Result<Vec<Found>, ArchiveError> {
        let mut found = Vec::new();
        for item in items {
            let what = item
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| item.config.clone());
            let config_bytes = self.contents.bytes(&item.config)?;
            let config_digest = Digest::sha256_of(&config_bytes);
            if !self.contents.by_digest.contains_key(&config_digest) {
                let staged = self.store.stage_bytes(&config_bytes)?;
                let index = self.contents.staged.len();
                self.contents.by_digest.insert(config_digest.clone(), index);
                self.contents.staged.push(staged);
            }
            let mut layers = Vec::new();
            for path in &item.layers {
                match self.contents.resolve(path)? {
                    Item::Staged(index) => layers.push(*index),
                    _ => {
                        return Err(self
                            .contents
                            .invalid(format!("layer {path} of {what} is not a regular file")))
                    }
                }
            }
            let layer_descriptors: Vec<serde_json::Value> = layers
                .iter()
                .map(|&i| {
                    let staged = &self.contents.staged[i];
                    serde_json::json!({"mediaType": layer_media_type(staged), "digest": staged.digest, "size": staged.size})
                })
                .collect();
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
                "layers": layer_descriptors,
            });
            let bytes = serde_json::to_vec(&manifest).expect("JSON serialises");
            let parsed = ParsedManifest::parse(bytes.into(), Some(media::OCI_MANIFEST), &what)
                .map_err(|e| self.contents.invalid(e.to_string()))?;
            let mut blobs = BTreeSet::new();
            let platform = self.check_image(&parsed, &what, &mut blobs)?;
            blobs.remove(&parsed.digest);
            let names = item
                .repo_tags
                .iter()
                .map(|t| {
                    Reference::parse(t).map_err(|e| self.contents.invalid(format!("RepoTags: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            found.push(Found {
                names,
                id: config_digest,
                root: parsed.clone(),
                built: vec![parsed],
                blobs,
                platforms: vec![platform],
                link: None,
            });
        }
        Ok(found)
    }
}
