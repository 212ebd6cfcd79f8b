//! The local store as a [`Destination`]: blobs go through the store's one
//! ingest (hashed while written, committed only verified), and the root
//! becomes visible by the index commit, which checks the whole graph.

use super::{Destination, Progress};
use crate::engine::source::Source;
use crate::engine::EngineError;
use crate::store::index::TagChange;
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use futures_util::stream::StreamExt;

/// The store; the root is tagged with `name` when given, kept with its
/// subject when it is a referrer, else kept untagged (by digest).
pub struct StoreDestination {
    store: Store,
    name: Option<Reference>,
    referrer: Option<ReferrerLink>,
}

impl StoreDestination {
    /// Tagged `name` (or by digest only, with `None`).
    pub fn new(store: Store, name: Option<Reference>) -> StoreDestination {
        StoreDestination {
            store,
            name,
            referrer: None,
        }
    }

    /// A source that can continue a partial download (a registry): the
    /// partial a failed or killed run left is read back through the
    /// verifier, the rest asked for with `Range`, and the whole blob is
    /// verified before it becomes visible. A resume that fails drops the
    /// partial, so the next attempt starts over.
    async fn write_resuming(
        &self,
        source: &dyn Source,
        digest: &Digest,
        size: u64,
        on_progress: Progress,
    ) -> Result<(), EngineError> {
        let store = &self.store;
        let mut writer = store.resumable_writer(digest, size).await?;
        let offset = writer.written();
        let mut failure: Option<EngineError> = None;
        if offset < size {
            let mut stream = source.blob_from(digest, size, offset);
            while let Some(chunk) = stream.next().await {
                let written = match chunk {
                    Ok(chunk) => writer.write(&chunk).await.map_err(EngineError::from),
                    Err(error) => Err(EngineError::from(error)),
                };
                if let Err(error) = written {
                    failure = Some(error);
                    break;
                }
                on_progress(writer.written());
            }
        }
        let reached = writer.written();
        let result = match failure {
            Some(error) => {
                drop(writer);
                Err(error)
            }
            None => writer.commit().await.map_err(EngineError::from),
        };
        // Keep a partial only for what the network interrupted and that
        // made progress; the store's own failures (a full disk) and a
        // resume that got nowhere (a server ignoring Range) start over.
        if let Err(error) = &result {
            if matches!(error, EngineError::Store(_)) || (offset > 0 && reached == offset) {
                store.discard_partial(digest);
            }
        }
        result
    }
}

#[async_trait::async_trait]
impl Destination for StoreDestination {
    fn describe(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(|| "the store".to_owned(), |n| n.to_string())
    }

    /// Kept with its subject.
    fn for_referrer(&self, link: &ReferrerLink, _: &Digest) -> Box<dyn Destination> {
        Box::new(StoreDestination {
            store: self.store.clone(),
            name: None,
            referrer: Some(link.clone()),
        })
    }

    /// Re-hashed: a corrupt copy is fetched again and replaced.
    async fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, EngineError> {
        Ok(self
            .store
            .claim_verified_async(digest, size)
            .await?
            .is_some())
    }

    async fn write_blob(
        &self,
        source: &dyn Source,
        digest: &Digest,
        size: u64,
        on_progress: Progress,
    ) -> Result<(), EngineError> {
        if source.resumes() {
            return self.write_resuming(source, digest, size, on_progress).await;
        }
        let mut stream = source.blob(digest, size);
        let mut writer = self.store.blob_writer(digest, Some(size)).await?;
        while let Some(chunk) = stream.next().await {
            writer.write(&chunk?).await?;
            on_progress(writer.written());
        }
        writer.commit().await?;
        Ok(())
    }

    async fn write_manifest(
        &self,
        manifest: &ParsedManifest,
        _: bool,
    ) -> Result<bool, EngineError> {
        self.store
            .put_blob_bytes(&manifest.digest, &manifest.bytes)
            .await?;
        Ok(false)
    }

    /// Tag it (or keep it with its subject), under the store's index commit,
    /// which checks the whole graph under its lock, off the async threads.
    async fn finish(&self, manifest: &ParsedManifest) -> Result<Option<TagChange>, EngineError> {
        let (store, referrer, name) =
            (self.store.clone(), self.referrer.clone(), self.name.clone());
        let manifest = manifest.clone();
        let committed = tokio::task::spawn_blocking(move || match (referrer, name) {
            (Some(link), _) => store
                .add_referrer(IndexEntry::referrer(&manifest, &link))
                .map(|()| None),
            (None, Some(name)) => {
                let entry = IndexEntry::new(
                    &manifest.media_type,
                    manifest.digest.clone(),
                    manifest.bytes.len() as u64,
                );
                store.set_tag(&name, entry).map(Some)
            }
            (None, None) => store.touch(&manifest.digest).map(|()| None),
        })
        .await
        .map_err(|e| EngineError::Invalid {
            image: self.describe(),
            message: format!("the tag commit stopped: {e}"),
        })?;
        Ok(committed?)
    }
}
