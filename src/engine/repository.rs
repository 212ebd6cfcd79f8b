//! One repository as jobs see it, wherever it lives: a registry repository
//! or (part of) the local store. Sync, retag and prune read and change tags
//! only through this interface, so none of them matches on "registry or
//! store".
//!
//! Contract:
//! - `tags` lists every image tag with the digest it points at, in one
//!   consistent view (a registry: the tag list, then a manifest HEAD per
//!   tag, which Docker Hub does not count; the store: its index). Referrer
//!   tags (cosign `sha256-….sig`, fallback `sha256-…`) are not listed: they
//!   go with their images, so no job prunes, deletes or copies them as
//!   images ([`crate::types::referrer::image_tags`]). For the whole store
//!   (no repository), a "tag" is an image's full name.
//! - `put_tag` points a tag at a digest the repository already holds, with
//!   the same manifest bytes (no blob moves); the old target is kept
//!   (dangling in the store).
//! - `delete` removes one tag. A registry deletes by digest (distribution
//!   refuses deletes by tag), which removes every tag sharing it:
//!   `deletes_by_digest` says so, and callers check for shared digests
//!   first. The store only untags; blobs go with the last name.

use super::destination::Destination;
use super::EngineError;
use crate::registry::RegistryClient;
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, Reference};
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

/// A repository in a registry or the store.
#[derive(Clone)]
pub enum Repository {
    Registry {
        client: Arc<RegistryClient>,
        name: Reference,
    },
    /// `name`: one repository of the store; `None`: the whole store.
    Store {
        store: Store,
        name: Option<Reference>,
    },
}

impl Repository {
    /// The repository's name for messages (`the store` for the whole store).
    pub fn describe(&self) -> String {
        match self {
            Repository::Registry { name, .. }
            | Repository::Store {
                name: Some(name), ..
            } => name.name(),
            Repository::Store { name: None, .. } => "the store".to_owned(),
        }
    }

    /// Whether deleting a tag deletes its digest (and every tag sharing it).
    pub fn deletes_by_digest(&self) -> bool {
        matches!(self, Repository::Registry { .. })
    }

    /// Every tag with its digest (see the module contract).
    pub async fn tags(&self) -> Result<Vec<TaggedDigest>, EngineError> {
        match self {
            Repository::Registry { client, name } => {
                let tags = match client.list_tags(name.repository()).await {
                    Ok(tags) => crate::types::referrer::image_tags(tags),
                    Err(error) if error.is_not_found() => Vec::new(),
                    Err(error) => return Err(error.into()),
                };
                let mut out = Vec::new();
                for tag in tags {
                    if let Some(digest) = self.digest(&tag).await? {
                        out.push(TaggedDigest {
                            tag,
                            digest,
                            first_seen: None,
                        });
                    }
                }
                Ok(out)
            }
            Repository::Store { store, name } => {
                let mut out = Vec::new();
                for summary in store.summaries()? {
                    let Some(full) = summary.name.filter(|n| n.tag().is_some()) else {
                        continue;
                    };
                    let tag = match name {
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
        }
    }

    /// The digest one tag points at, if it exists.
    pub async fn digest(&self, tag: &str) -> Result<Option<Digest>, EngineError> {
        match self {
            Repository::Registry { client, name } => Ok(client
                .head_manifest(name.repository(), tag)
                .await?
                .and_then(|h| h.digest)),
            Repository::Store { store, .. } => {
                Ok(store.lookup_tag(&self.reference(tag)?)?.map(|e| e.digest))
            }
        }
    }

    /// The full reference of `tag` here.
    pub fn reference(&self, tag: &str) -> Result<Reference, EngineError> {
        match self {
            Repository::Registry { name, .. }
            | Repository::Store {
                name: Some(name), ..
            } => Ok(name.with_tag(tag)),
            Repository::Store { name: None, .. } => {
                Reference::parse(tag).map_err(|e| EngineError::Invalid {
                    image: tag.to_owned(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// Where a copy of `tag` into this repository goes.
    pub fn destination(&self, tag: &str) -> Result<Destination, EngineError> {
        Ok(match self {
            Repository::Registry { client, name } => Destination::Registry {
                client: client.clone(),
                reference: name.with_tag(tag),
            },
            Repository::Store { store, .. } => Destination::Store {
                store: store.clone(),
                name: Some(self.reference(tag)?),
                referrer: None,
            },
        })
    }

    /// Point `tag` at `digest`, which this repository holds.
    pub async fn put_tag(&self, tag: &str, digest: &Digest) -> Result<(), EngineError> {
        match self {
            Repository::Registry { client, name } => {
                let manifest = client
                    .get_manifest(name.repository(), &digest.to_string())
                    .await?;
                client
                    .put_manifest(name.repository(), tag, &manifest)
                    .await?;
            }
            Repository::Store { store, .. } => {
                let entry = store
                    .index_entry(digest)?
                    .ok_or_else(|| EngineError::Invalid {
                        image: self.describe(),
                        message: format!("{digest} is not in the store"),
                    })?;
                let (store, name) = (store.clone(), self.reference(tag)?);
                // The commit takes store locks: off the async threads.
                blocking(self, move || {
                    store
                        .set_tag(
                            &name,
                            IndexEntry::new(&entry.media_type, entry.digest, entry.size),
                        )
                        .map(drop)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Remove `tag` (pointing at `digest`); see the module contract.
    pub async fn delete(&self, tag: &str, digest: &Digest) -> Result<(), EngineError> {
        match self {
            Repository::Registry { client, name } => {
                client.delete_manifest(name.repository(), digest).await?;
            }
            Repository::Store { store, .. } => {
                let (store, name) = (store.clone(), self.reference(tag)?.to_string());
                blocking(self, move || store.rmi(&[name], false).map(drop)).await?;
            }
        }
        Ok(())
    }
}

/// Run a store step that takes locks on the blocking pool.
async fn blocking(
    repository: &Repository,
    step: impl FnOnce() -> Result<(), crate::store::StoreError> + Send + 'static,
) -> Result<(), EngineError> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| EngineError::Invalid {
            image: repository.describe(),
            message: format!("the store step stopped: {e}"),
        })?
        .map_err(EngineError::from)
}
