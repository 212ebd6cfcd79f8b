//! One repository as jobs see it, wherever it lives: a registry repository
//! (`registry.rs`) or (part of) the local store (`store.rs`). Sync, retag,
//! prune and backup read and change tags only through [`Repository`], and
//! reach registries and the store only through [`Endpoints`], so no job
//! matches on "registry or store" and none holds a registry client.

mod registry;
mod store;

pub use registry::RegistryRepository;
pub use store::StoreRepository;

use super::destination::Destination;
use super::source::SharedSource;
use super::EngineError;
use crate::registry::Registries;
use crate::store::Store;
use crate::types::{Digest, Reference};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A tag and what it points at.
#[derive(Debug, Clone)]
pub struct TaggedDigest {
    pub tag: String,
    pub digest: Digest,
    /// When ferry first saw this tag at this digest, where it keeps that
    /// (the store); a registry keeps no such time.
    pub first_seen: Option<i64>,
}

/// What a look at one tag says, without reading its manifest.
#[derive(Debug, Clone, Default)]
pub struct TagHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    /// Pulls the registry still allows (Docker Hub's `ratelimit-remaining`).
    pub rate_limit_remaining: Option<u64>,
}

/// A repository in a registry or the store.
///
/// Contract (every implementation keeps it; `tests/endpoints.rs` checks it
/// against each):
/// - `listed_tags` is every tag the repository lists, referrer tags too
///   where it lists them (a registry; the store keeps referrers with their
///   subjects, not as tags); a missing repository is an error (a source
///   that is not there fails);
///   `tags` (a missing repository has none: a target not yet made) lists
///   every *image* tag with
///   the digest it points at, in one consistent view (a registry: the tag
///   list, then a manifest HEAD per tag, which Docker Hub does not count;
///   the store: its index). Referrer tags (cosign `sha256-….sig`, fallback
///   `sha256-…`) are never image tags: they go with their images, so no job
///   prunes, deletes or copies them as images
///   ([`crate::types::referrer::image_tags`]). For the whole store (no
///   repository), a "tag" is an image's full name.
/// - `head` answers from a HEAD (no manifest GET, no pull counted).
/// - `put_tag` points a tag at a digest the repository already holds, with
///   the same manifest bytes (no blob moves); the old target is kept
///   (dangling in the store).
/// - `delete` removes one tag. A registry deletes by digest (distribution
///   refuses deletes by tag), which removes every tag sharing it:
///   `deletes_by_digest` says so, and callers check for shared digests
///   first. The store only untags; blobs go with the last name.
/// - `source` and `destination` give the copy endpoints of one tag here.
/// - The store's commits run off the async workers; nothing holds a lock
///   across a network wait.
#[async_trait::async_trait]
pub trait Repository: Send + Sync {
    /// The repository's name for messages (`the store` for the whole store).
    fn describe(&self) -> String;

    /// Whether deleting a tag deletes its digest (and every tag sharing it).
    fn deletes_by_digest(&self) -> bool {
        false
    }

    /// Every tag listed, referrer tags too (see the contract).
    async fn listed_tags(&self) -> Result<Vec<String>, EngineError>;

    /// Every image tag with its digest (see the contract).
    async fn tags(&self) -> Result<Vec<TaggedDigest>, EngineError>;

    /// What `tag` points at, if it exists (see the contract).
    async fn head(&self, tag: &str) -> Result<Option<TagHead>, EngineError>;

    /// The digest one tag points at, if it exists.
    async fn digest(&self, tag: &str) -> Result<Option<Digest>, EngineError> {
        Ok(self.head(tag).await?.and_then(|h| h.digest))
    }

    /// A cheap fingerprint of what refers to `subject` here (its OCI 1.1
    /// referrers and cosign tags; `tags` is the listed tags): compared with
    /// the last run's, it tells a sync whether an unchanged image got new
    /// signatures, with no manifest or blob GETs. `None` where the
    /// repository cannot tell cheaply.
    async fn referrers_fingerprint(
        &self,
        _subject: &Digest,
        _tags: &BTreeSet<String>,
    ) -> Result<Option<String>, EngineError> {
        Ok(None)
    }

    /// The full reference of `tag` here.
    fn reference(&self, tag: &str) -> Result<Reference, EngineError>;

    /// Where a copy from `tag` (or a digest) here reads.
    fn source(&self, tag: &str) -> Result<SharedSource, EngineError>;

    /// Where a copy of `tag` into this repository goes.
    fn destination(&self, tag: &str) -> Result<Box<dyn Destination>, EngineError>;

    /// Point `tag` at `digest`, which this repository holds.
    async fn put_tag(&self, tag: &str, digest: &Digest) -> Result<(), EngineError>;

    /// Remove `tag` (pointing at `digest`); see the contract.
    async fn delete(&self, tag: &str, digest: &Digest) -> Result<(), EngineError>;
}

/// The registries and the store jobs reach, as repositories and sources:
/// the one door from `jobs` to the endpoints.
#[derive(Clone)]
pub struct Endpoints {
    registries: Arc<Registries>,
    store: Store,
}

impl Endpoints {
    pub fn new(registries: Arc<Registries>, store: Store) -> Endpoints {
        Endpoints { registries, store }
    }

    /// A registry repository (`name`'s tag, if any, is ignored).
    pub fn registry(&self, name: &Reference) -> Result<Arc<dyn Repository>, EngineError> {
        Ok(Arc::new(RegistryRepository::new(
            self.registries.client(name.registry())?,
            name.clone(),
        )))
    }

    /// One repository of the store, or (`None`) the whole store.
    pub fn store(&self, name: Option<Reference>) -> Arc<dyn Repository> {
        Arc::new(StoreRepository::new(self.store.clone(), name))
    }

    /// The repositories a registry's `_catalog` lists.
    pub async fn catalog(&self, registry: &str) -> Result<Vec<String>, EngineError> {
        Ok(self.registries.client(registry)?.catalog().await?)
    }
}
