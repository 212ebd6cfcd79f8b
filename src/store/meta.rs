//! ferry's own records beside the OCI layout: when each image was first
//! seen and last pulled (prune ages come from here, never from the image
//! config's `created`, which reproducible builds set to 1970), and an
//! append-only history of which digest each tag held.

use super::{Store, StoreError};
use crate::types::{Digest, Reference};
use std::collections::BTreeMap;
use std::io::Write;

/// Times ferry knows about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageTimes {
    pub first_seen: i64,
    pub last_pulled: i64,
}

/// The metadata file: image digest → times.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub images: BTreeMap<Digest, ImageTimes>,
    #[serde(skip)]
    history: Vec<String>,
}

impl Metadata {
    /// Note that `digest` was seen now.
    pub fn touch(&mut self, digest: &Digest, now: i64) {
        self.images
            .entry(digest.clone())
            .and_modify(|t| t.last_pulled = now)
            .or_insert(ImageTimes {
                first_seen: now,
                last_pulled: now,
            });
    }

    /// Queue a tag-history line, written with the metadata.
    pub fn record_tag(&mut self, name: &Reference, digest: &Digest, change: &TagChange, now: i64) {
        let previous = match change {
            TagChange::Moved { previous } => Some(previous.to_string()),
            _ => None,
        };
        let line = serde_json::json!({"time": now, "tag": name.to_string(), "digest": digest, "previous": previous});
        self.history.push(line.to_string());
    }

    /// Queue a history line for a removed tag.
    pub fn record_untag(&mut self, name: &Reference, digest: &Digest, now: i64) {
        let line = serde_json::json!({"time": now, "tag": name.to_string(), "digest": null, "previous": digest});
        self.history.push(line.to_string());
    }

    /// Forget images that are no longer in the store.
    pub fn retain_images(&mut self, keep: impl Fn(&Digest) -> bool) {
        self.images.retain(|digest, _| keep(digest));
    }
}

fn metadata_path(store: &Store) -> std::path::PathBuf {
    store.root().join("ferry").join("images.json")
}

/// Read the metadata (empty when absent).
pub fn read_metadata(store: &Store) -> Result<Metadata, StoreError> {
    let path = metadata_path(store);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::default()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Write the metadata atomically and append queued history lines.
pub fn write_metadata(store: &Store, metadata: &Metadata) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
    store.write_atomic(&metadata_path(store), &bytes)?;
    if !metadata.history.is_empty() {
        let path = store.root().join("ferry").join("tag-history.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let text: String = metadata
            .history
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        file.write_all(text.as_bytes())
            .map_err(|e| StoreError::io(&path, e))?;
    }
    Ok(())
}

/// What a tag change did (recorded in the tag history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    Created,
    Unchanged,
    Moved { previous: crate::types::Digest },
}
