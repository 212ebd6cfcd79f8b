//! Where a copy writes to: a registry repository or the local store.
//! (An archive as a destination is written by `to_archive`, which needs the
//! whole plan before the first byte; the read side is `source.rs`.)
//!
//! Contract:
//! - `has_blob` may answer "no" wrongly (a re-upload), never "yes" wrongly.
//! - `write_blob` makes a blob visible only complete and verified (by
//!   ferry, or by the registry's digest check on the final PUT); a failed
//!   write leaves nothing visible.
//! - `write_manifest` for children before the root; the root is written
//!   last and `finish` makes it visible under its name — so a reader never
//!   sees a tag whose parts are missing, and a copy that stops half way
//!   leaves every tag as it was.

use super::source::Source;
use super::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::RegistryClient;
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use futures_util::stream::StreamExt;
use std::sync::Arc;

/// Blobs up to this size are uploaded from memory in one request.
const SMALL_BLOB: u64 = 1024 * 1024;

/// Where images go (see the module contract).
pub enum Destination {
    /// A registry repository; the root is written under the reference's tag (or digest).
    Registry {
        client: Arc<RegistryClient>,
        reference: Reference,
    },
    /// The local store; the root is tagged with `name` when given, or
    /// kept with its subject when it is a referrer.
    Store {
        store: Store,
        name: Option<Reference>,
        referrer: Option<ReferrerLink>,
    },
}
/// Upload pieces this large: network reads arrive in small chunks, and each
/// one written separately costs a syscall and framing.
const UPLOAD_PIECE: usize = 512 * 1024;

/// Join small chunks into pieces of about [`UPLOAD_PIECE`] bytes.
fn coalesce(stream: BlobStream) -> BlobStream {
    futures_util::stream::try_unfold(Some(stream), |state| async move {
        let Some(mut stream) = state else {
            return Ok(None);
        };
        let mut piece = bytes::BytesMut::new();
        while piece.len() < UPLOAD_PIECE {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if piece.is_empty() && chunk.len() >= UPLOAD_PIECE {
                        return Ok(Some((chunk, Some(stream))));
                    }
                    piece.extend_from_slice(&chunk);
                }
                None if piece.is_empty() => return Ok(None),
                None => return Ok(Some((piece.freeze(), None))),
            }
        }
        Ok(Some((piece.freeze(), Some(stream))))
    })
    .boxed()
}

impl Destination {
    /// Where a referrer of the image this destination receives goes: the
    /// same repository, by digest (or under its cosign tag); in the store,
    /// kept with its subject.
    pub fn for_referrer(&self, link: &ReferrerLink, digest: &Digest) -> Destination {
        match self {
            Destination::Registry { client, reference } => Destination::Registry {
                client: client.clone(),
                reference: match &link.tag {
                    Some(tag) => reference.with_tag(tag),
                    None => reference.with_digest(digest.clone()),
                },
            },
            Destination::Store { store, .. } => Destination::Store {
                store: store.clone(),
                name: None,
                referrer: Some(link.clone()),
            },
        }
    }

    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            Destination::Registry { reference, .. } => reference.to_string(),
            Destination::Store { name, .. } => name
                .as_ref()
                .map_or_else(|| "the store".to_owned(), |n| n.to_string()),
        }
    }

    /// Whether the destination checks digests itself while writing.
    pub fn verifies_writes(&self) -> bool {
        matches!(self, Destination::Store { .. })
    }

    /// Whether the destination already has the blob.
    pub async fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, EngineError> {
        match self {
            Destination::Registry { client, reference } => Ok(client
                .blob_size(reference.repository(), digest)
                .await?
                .is_some()),
            // Re-hashed: a corrupt copy is fetched again and replaced.
            Destination::Store { store, .. } => {
                Ok(store.claim_verified_async(digest, size).await?.is_some())
            }
        }
    }

    /// Try a cross-repository mount when source and destination share a registry.
    pub async fn try_mount(&self, source: &Source, digest: &Digest) -> Result<bool, EngineError> {
        let (Destination::Registry { client, reference }, Some((registry, from))) =
            (self, source.registry_repository())
        else {
            return Ok(false);
        };
        if client.registry() != registry || reference.repository() == from {
            return Ok(false);
        }
        match client
            .mount_blob(reference.repository(), digest, from)
            .await
        {
            Ok(mounted) => Ok(mounted),
            // Some registries refuse mounts outright; an upload still works.
            Err(error) if !error.is_retryable() => {
                tracing::debug!(%digest, %error, "mount refused; uploading");
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Write a blob from a verified stream, reporting bytes as they pass.
    pub async fn write_blob(
        &self,
        digest: &Digest,
        size: u64,
        mut stream: BlobStream,
        on_progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        match self {
            Destination::Store { store, .. } => {
                let mut writer = store.blob_writer(digest, Some(size)).await?;
                while let Some(chunk) = stream.next().await {
                    writer.write(&chunk?).await?;
                    on_progress(writer.written());
                }
                writer.commit().await?;
                Ok(())
            }
            Destination::Registry { client, reference } => {
                if size <= SMALL_BLOB {
                    let mut bytes = Vec::with_capacity(size as usize);
                    while let Some(chunk) = stream.next().await {
                        bytes.extend_from_slice(&chunk?);
                    }
                    on_progress(bytes.len() as u64);
                    client
                        .upload_bytes(reference.repository(), digest, bytes.into())
                        .await?;
                    return Ok(());
                }
                let progress = Arc::new(on_progress);
                let mut done = 0u64;
                let counted = coalesce(stream)
                    .inspect(move |chunk| {
                        if let Ok(chunk) = chunk {
                            done += chunk.len() as u64;
                            progress(done);
                        }
                    })
                    .boxed();
                client
                    .upload_stream(reference.repository(), digest, size, counted)
                    .await?;
                Ok(())
            }
        }
    }

    /// Whether a blob from `source` can continue a partial download a
    /// failed or killed run left behind (registry → store).
    pub fn resumes_from(&self, source: &Source) -> bool {
        matches!(
            (self, source),
            (Destination::Store { .. }, Source::Registry { .. })
        )
    }

    /// Registry → store: continue the blob's partial download (if any) with
    /// `Range`, verifying the whole blob — old bytes re-read, new ones as
    /// they arrive — before it becomes visible. A resume that fails drops
    /// the partial, so the next attempt starts over.
    pub async fn write_blob_resuming(
        &self,
        source: &Source,
        digest: &Digest,
        size: u64,
        on_progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        let (Destination::Store { store, .. }, Source::Registry { client, reference }) =
            (self, source)
        else {
            return Err(EngineError::Invalid {
                image: self.describe(),
                message: "only a registry → store transfer resumes".into(),
            });
        };
        let mut writer = store.resumable_writer(digest, size).await?;
        let offset = writer.written();
        let mut failure: Option<EngineError> = None;
        if offset < size {
            let mut stream =
                client.blob_stream_from(reference.repository(), digest, size, offset, false);
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

    /// Write a manifest: by digest for children, under the tag for the root.
    /// Returns whether a registry indexed the manifest's subject itself.
    pub async fn write_manifest(
        &self,
        manifest: &ParsedManifest,
        root: bool,
    ) -> Result<bool, EngineError> {
        match self {
            Destination::Registry { client, reference } => {
                let target = if root {
                    reference.manifest_reference()
                } else {
                    manifest.digest.to_string()
                };
                if root {
                    if let Some(pinned) = reference.digest() {
                        if pinned != &manifest.digest {
                            return Err(EngineError::Invalid {
                                image: reference.to_string(),
                                message: format!(
                                    "the image is {}, not the requested digest",
                                    manifest.digest
                                ),
                            });
                        }
                    }
                }
                Ok(client
                    .put_manifest(reference.repository(), &target, manifest)
                    .await?)
            }
            Destination::Store { store, .. } => {
                store
                    .put_blob_bytes(&manifest.digest, &manifest.bytes)
                    .await?;
                Ok(false)
            }
        }
    }

    /// Make the copied root visible: tag it in the store (registry roots
    /// are already tagged by `write_manifest`). The store's index commit
    /// checks the whole graph under its lock, off the async threads.
    pub async fn finish(
        &self,
        manifest: &ParsedManifest,
    ) -> Result<Option<crate::store::index::TagChange>, EngineError> {
        let Destination::Store {
            store,
            referrer,
            name,
        } = self
        else {
            return Ok(None);
        };
        let (store, referrer, name) = (store.clone(), referrer.clone(), name.clone());
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
