//! The local store (one repository of it, or all of it) as a
//! [`Repository`].

use super::{Repository, TagHead, TaggedDigest};
use crate::engine::destination::{Destination, StoreDestination};
use crate::engine::source::{SharedSource, StoreSource};
use crate::engine::EngineError;
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, Reference};
use std::sync::Arc;

/// `name`: one repository of the store; `None`: the whole store.
pub struct StoreRepository {
    store: Store,
    name: Option<Reference>,
}

impl StoreRepository {
    pub fn new(store: Store, name: Option<Reference>) -> StoreRepository {
        StoreRepository { store, name }
    }
}

#[async_trait::async_trait]
impl Repository for StoreRepository {
    fn describe(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(|| "the store".to_owned(), Reference::name)
    }

    async fn listed_tags(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.tags().await?.into_iter().map(|t| t.tag).collect())
    }

    async fn tags(&self) -> Result<Vec<TaggedDigest>, EngineError> {
        let mut out = Vec::new();
        for summary in self.store.summaries()? {
            let Some(full) = summary.name.filter(|n| n.tag().is_some()) else {
                continue;
            };
            let tag = match &self.name {
                Some(name) if full.name() != name.name() => continue,
                Some(_) => full.tag().unwrap_or_default().to_owned(),
                None => full.to_string(),
            };
            out.push(TaggedDigest {
                tag,
                digest: summary.digest,
                first_seen: summary.times.map(|t| t.first_seen),
            });
        }
        Ok(out)
    }

    async fn head(&self, tag: &str) -> Result<Option<TagHead>, EngineError> {
        Ok(self
            .store
            .lookup_tag(&self.reference(tag)?)?
            .map(|entry| TagHead {
                digest: Some(entry.digest),
                media_type: Some(entry.media_type),
                rate_limit_remaining: None,
            }))
    }

    fn reference(&self, tag: &str) -> Result<Reference, EngineError> {
        match &self.name {
            Some(name) => Ok(name.with_tag(tag)),
            None => Reference::parse(tag).map_err(|e| EngineError::Invalid {
                image: tag.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// `tag` may be a digest (`sha256:…`).
    fn source(&self, tag: &str) -> Result<SharedSource, EngineError> {
        let (entry, shown) = match tag.parse::<Digest>() {
            Ok(digest) => (self.store.index_entry(&digest)?, digest.to_string()),
            Err(_) => {
                let reference = self.reference(tag)?;
                (self.store.lookup_tag(&reference)?, reference.to_string())
            }
        };
        let entry = entry.ok_or_else(|| EngineError::Invalid {
            image: shown.clone(),
            message: "not in the store".into(),
        })?;
        Ok(Arc::new(StoreSource::new(self.store.clone(), entry, shown)))
    }

    fn destination(&self, tag: &str) -> Result<Box<dyn Destination>, EngineError> {
        Ok(Box::new(StoreDestination::new(
            self.store.clone(),
            Some(self.reference(tag)?),
        )))
    }

    async fn put_tag(&self, tag: &str, digest: &Digest) -> Result<(), EngineError> {
        let entry = self
            .store
            .index_entry(digest)?
            .ok_or_else(|| EngineError::Invalid {
                image: self.describe(),
                message: format!("{digest} is not in the store"),
            })?;
        let (store, name) = (self.store.clone(), self.reference(tag)?);
        // The commit takes store locks: off the async threads.
        self.blocking(move || {
            store
                .set_tag(
                    &name,
                    IndexEntry::new(&entry.media_type, entry.digest, entry.size),
                )
                .map(drop)
        })
        .await
    }

    /// Untags only: blobs go with the last name.
    async fn delete(&self, tag: &str, _digest: &Digest) -> Result<(), EngineError> {
        let (store, name) = (self.store.clone(), self.reference(tag)?.to_string());
        self.blocking(move || store.rmi(&[name], false).map(drop))
            .await
    }
}

impl StoreRepository {
    /// Run a store step that takes locks on the blocking pool.
    async fn blocking(
        &self,
        step: impl FnOnce() -> Result<(), crate::store::StoreError> + Send + 'static,
    ) -> Result<(), EngineError> {
        tokio::task::spawn_blocking(step)
            .await
            .map_err(|e| EngineError::Invalid {
                image: self.describe(),
                message: format!("the store step stopped: {e}"),
            })?
            .map_err(EngineError::from)
    }
}
