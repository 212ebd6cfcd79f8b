//! An image of the local store, as a [`Source`].

use super::file_stream::{file_blob_stream, STORED};
use super::{ReferrerCandidate, SharedSource, Source};
use crate::engine::EngineError;
use crate::registry::blobs::BlobStream;
use crate::store::{IndexEntry, Store};
use crate::types::referrer::cosign_artifact_type;
use crate::types::{Digest, ParsedManifest};
use std::sync::{Arc, Mutex};

/// One image of the store (by its index entry).
pub struct StoreSource {
    store: Store,
    entry: IndexEntry,
    name: String,
    /// The store's referrer entries, read once per source.
    referrers: Mutex<Option<Arc<Vec<IndexEntry>>>>,
}

impl StoreSource {
    /// `name` names the image in messages.
    pub fn new(store: Store, entry: IndexEntry, name: String) -> StoreSource {
        StoreSource {
            store,
            entry,
            name,
            referrers: Mutex::new(None),
        }
    }

    fn referrer_entries(&self, notes: &mut Vec<String>) -> Arc<Vec<IndexEntry>> {
        let mut cached = self.referrers.lock().expect("referrer cache");
        if let Some(entries) = cached.as_ref() {
            return entries.clone();
        }
        let entries = match crate::store::index::read_index(&self.store) {
            Ok(entries) => entries.into_iter().filter(|e| e.is_referrer()).collect(),
            Err(error) => {
                notes.push(format!("referrers in the store not read: {error}"));
                Vec::new()
            }
        };
        cached.insert(Arc::new(entries)).clone()
    }
}

#[async_trait::async_trait]
impl Source for StoreSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn root(&self) -> Result<ParsedManifest, EngineError> {
        Ok(self
            .store
            .read_manifest(&self.entry.digest, &self.entry.media_type)?)
    }

    async fn manifest(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, EngineError> {
        Ok(self.store.read_manifest(digest, media_type)?)
    }

    fn blob(&self, digest: &Digest, size: u64) -> BlobStream {
        file_blob_stream(
            self.store.blob_path(digest),
            0,
            digest.clone(),
            size,
            true,
            STORED,
        )
    }

    async fn referrers(&self, subject: &Digest, notes: &mut Vec<String>) -> Vec<ReferrerCandidate> {
        let mut found = Vec::new();
        for entry in self.referrer_entries(notes).iter() {
            let Some(link) = entry.link().filter(|l| &l.subject == subject) else {
                continue;
            };
            let artifact_type = link
                .tag
                .as_deref()
                .and_then(cosign_artifact_type)
                .map(str::to_owned)
                .or_else(|| entry.artifact_type.clone());
            let source: SharedSource = Arc::new(StoreSource::new(
                self.store.clone(),
                entry.clone(),
                format!("referrer {}", entry.digest),
            ));
            found.push(ReferrerCandidate {
                link,
                source,
                artifact_type,
            });
        }
        found
    }
}
