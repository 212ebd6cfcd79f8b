//! `index.json`: one descriptor per image. A tagged image carries its full
//! reference in `org.opencontainers.image.ref.name` and
//! `io.containerd.image.name` (so skopeo's `oci:` transport and containerd
//! find it); an entry without a name is a dangling image, kept like docker's
//! `<none>` until prune. Every change is a read-modify-write under the tags
//! lock with an atomic rewrite.

use super::meta::{self, Metadata};
use super::{Store, StoreError};
pub use crate::types::layout::{IndexEntry, IndexFileView, CONTAINERD_NAME, REF_NAME};
use crate::types::{media, Digest, Reference};

/// The repository a referrer was pushed to (`ferry serve`); without it a
/// referrer goes with its subject wherever that is.
pub const REFERRER_REPOSITORY: &str = "dev.ferry.referrer.repository";

/// Largest `index.json` ferry reads.
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<IndexEntry>,
}

/// Read the store's index.
pub fn read_index(store: &Store) -> Result<Vec<IndexEntry>, StoreError> {
    let path = store.root().join("index.json");
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let metadata = std::fs::metadata(&path).map_err(|e| StoreError::io(&path, e))?;
    if metadata.len() > MAX_INDEX_BYTES {
        return Err(corrupt(format!("larger than {MAX_INDEX_BYTES} bytes")));
    }
    let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
    let file: IndexFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(file.manifests)
}

/// Rewrite the store's index atomically. Callers hold the tags lock.
pub fn write_index(store: &Store, entries: &[IndexEntry]) -> Result<(), StoreError> {
    let file = IndexFile {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_owned()),
        manifests: entries.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("index serialises");
    bytes.push(b'\n');
    store.write_atomic(&store.root().join("index.json"), &bytes)
}

pub use super::meta::TagChange;

impl Store {
    /// Run `change` over the index and metadata under the tags lock, then
    /// write both atomically (metadata first: it only ever gains entries
    /// that the index may not reference yet, which is harmless).
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<IndexEntry>, &mut Metadata) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _guard = self.lock_tags()?;
        let mut entries = read_index(self)?;
        let mut metadata = meta::read_metadata(self)?;
        let before_entries = entries.clone();
        let before_metadata = metadata.clone();
        let result = change(&mut entries, &mut metadata)?;
        if metadata != before_metadata {
            meta::write_metadata(self, &metadata)?;
        }
        if entries != before_entries {
            write_index(self, &entries)?;
        }
        Ok(result)
    }

    /// Commit an index change that makes `entry` reachable: under the
    /// writers' lock (gc excluded), check everything it reaches is present
    /// and whole, apply the change, then drop those blobs' protections.
    fn commit_entry<T>(
        &self,
        entry: &IndexEntry,
        change: impl FnOnce(&mut Vec<IndexEntry>, &mut Metadata) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.committing(|| {
            let reached = self.complete_graph(&entry.digest, &entry.media_type)?;
            let result = self.update_index(change)?;
            self.unprotect(&reached);
            Ok(result)
        })
    }

    /// Point `name` at the manifest `target`. The image the tag held before
    /// stays as a dangling entry when nothing else references it. Refused
    /// when anything the manifest reaches is missing.
    pub fn set_tag(&self, name: &Reference, target: IndexEntry) -> Result<TagChange, StoreError> {
        let now = crate::types::time::now_unix();
        self.commit_entry(&target.clone(), |entries, metadata| {
            metadata.touch(&target.digest, now);
            let current = entries.iter().position(|e| e.name().as_ref() == Some(name));
            let change = match current {
                Some(i) if entries[i].digest == target.digest => return Ok(TagChange::Unchanged),
                Some(i) => {
                    let previous = entries.remove(i);
                    let still_used = entries.iter().any(|e| e.digest == previous.digest);
                    if !still_used {
                        entries.push(previous.clone().unnamed());
                    }
                    TagChange::Moved {
                        previous: previous.digest,
                    }
                }
                None => TagChange::Created,
            };
            // The new target is no longer dangling.
            entries.retain(|e| !(e.digest == target.digest && e.is_dangling()));
            entries.push(target.unnamed().named(name));
            metadata.record_tag(name, &target_digest(entries, name), &change, now);
            Ok(change)
        })
    }

    /// Add an image without a name (docker's `<none>`), unless the store has it already.
    pub fn add_untagged(&self, entry: IndexEntry) -> Result<(), StoreError> {
        let now = crate::types::time::now_unix();
        self.commit_entry(&entry.clone(), |entries, metadata| {
            metadata.touch(&entry.digest, now);
            if !entries
                .iter()
                .any(|e| e.digest == entry.digest && !e.is_referrer())
            {
                entries.push(entry.unnamed());
            }
            Ok(())
        })
    }

    /// Record that an already-stored image was pulled again (for `prune` ages and `images`).
    pub fn touch(&self, digest: &Digest) -> Result<(), StoreError> {
        let now = crate::types::time::now_unix();
        self.update_index(|_, metadata| {
            metadata.touch(digest, now);
            Ok(())
        })
    }

    /// Keep a referrer with its subject (once per subject and tag).
    pub fn add_referrer(&self, entry: IndexEntry) -> Result<(), StoreError> {
        let link = entry.link();
        self.commit_entry(&entry.clone(), |entries, _| {
            // Once per subject, tag and repository (pushed referrers are
            // kept with the repository they were pushed to).
            let repository = |e: &IndexEntry| e.annotations.get(REFERRER_REPOSITORY).cloned();
            if !entries.iter().any(|e| {
                e.digest == entry.digest && e.link() == link && repository(e) == repository(&entry)
            }) {
                entries.push(entry);
            }
            Ok(())
        })
    }

    /// Keep a referrer in place of the ones `replaced` picks (a cosign tag
    /// pushed again points at its new signature).
    pub fn replace_referrer(
        &self,
        entry: IndexEntry,
        replaced: impl Fn(&IndexEntry) -> bool,
    ) -> Result<(), StoreError> {
        self.commit_entry(&entry.clone(), |entries, _| {
            entries.retain(|e| !(e.is_referrer() && replaced(e)));
            entries.push(entry);
            Ok(())
        })
    }

    /// Remove the referrer entries `doomed` picks (a registry DELETE);
    /// returns whether there were any. Their blobs go at `gc`.
    pub fn remove_referrers(
        &self,
        doomed: impl Fn(&IndexEntry) -> bool,
    ) -> Result<bool, StoreError> {
        self.update_index(|entries, _| {
            let before = entries.len();
            entries.retain(|e| !(e.is_referrer() && doomed(e)));
            Ok(entries.len() != before)
        })
    }

    /// The entry tagged `name`, if any.
    pub fn lookup_tag(&self, name: &Reference) -> Result<Option<IndexEntry>, StoreError> {
        Ok(read_index(self)?
            .into_iter()
            .find(|e| e.name().as_ref() == Some(name)))
    }

    /// An index entry (tagged or not) for the image `digest`, if any.
    pub fn index_entry(&self, digest: &Digest) -> Result<Option<IndexEntry>, StoreError> {
        Ok(read_index(self)?
            .into_iter()
            .find(|e| &e.digest == digest && !e.is_referrer()))
    }
}

fn target_digest(entries: &[IndexEntry], name: &Reference) -> Digest {
    entries
        .iter()
        .rev()
        .find(|e| e.name().as_ref() == Some(name))
        .map(|e| e.digest.clone())
        .expect("just pushed")
}
