//! The endpoints a copy reads from and writes to. Each side offers the same
//! few operations, so plan and transfer never know which one they talk to.
//! (An archive as a destination is written by `to_archive`, which needs the
//! whole plan before the first byte; everything else goes through here.)
//!
//! Source contract:
//! - `root` returns the top-level manifest with its exact bytes; `manifest`
//!   returns a child by digest, checked against that digest.
//! - `blob(digest, size, verify)` streams exactly `size` bytes or ends in an
//!   error: the size is always checked; the digest is checked when `verify`
//!   is asked, and always for bytes whose digest nothing has checked yet (an
//!   archive blob that only its name vouches for). A stream that ends
//!   cleanly has delivered the blob.
//! - Nothing a source returns was trusted before it was verified.
//!
//! Destination contract:
//! - `has_blob` may answer "no" wrongly (a re-upload), never "yes" wrongly.
//! - `write_blob` makes a blob visible only complete and verified (by
//!   ferry, or by the registry's digest check on the final PUT); a failed
//!   write leaves nothing visible.
//! - `write_manifest` for children before the root; the root is written
//!   last and `finish` makes it visible under its name — so a reader never
//!   sees a tag whose parts are missing, and a copy that stops half way
//!   leaves every tag as it was.

use super::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::{RegistryClient, RegistryError};
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink, Verifier};
use bytes::Bytes;
use futures_util::stream::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Blobs up to this size are uploaded from memory in one request.
const SMALL_BLOB: u64 = 1024 * 1024;
/// Read size for streaming store blobs.
const READ_CHUNK: usize = 256 * 1024;

/// Where images come from (see the module contract).
#[derive(Clone)]
pub enum Source {
    /// A registry repository at a tag or digest.
    Registry {
        client: Arc<RegistryClient>,
        reference: Reference,
    },
    /// An image in the local store.
    Store {
        store: Store,
        entry: IndexEntry,
        name: String,
    },
    /// Image `image` of a checked archive (`copy archive:`).
    Archive {
        archive: Arc<super::from_archive::ArchiveSource>,
        image: usize,
    },
}

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

impl Source {
    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Registry { reference, .. } => reference.to_string(),
            Source::Store { name, .. } => name.clone(),
            Source::Archive { archive, image } => archive.describe(*image),
        }
    }

    /// The top-level manifest.
    pub async fn root(&self) -> Result<ParsedManifest, EngineError> {
        match self {
            Source::Registry { client, reference } => Ok(client
                .get_manifest(reference.repository(), &reference.manifest_reference())
                .await?),
            Source::Store { store, entry, .. } => {
                Ok(store.read_manifest(&entry.digest, &entry.media_type)?)
            }
            Source::Archive { archive, image } => archive.root(*image),
        }
    }

    /// A child manifest by digest.
    pub async fn manifest(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, EngineError> {
        let manifest = match self {
            Source::Registry { client, reference } => {
                client
                    .get_manifest(reference.repository(), &digest.to_string())
                    .await?
            }
            Source::Store { store, .. } => store.read_manifest(digest, media_type)?,
            Source::Archive { archive, image } => {
                archive.checked.manifest(*image, digest, media_type)?
            }
        };
        Ok(manifest)
    }

    /// The registry and repository, for cross-repository mounts.
    pub fn registry_repository(&self) -> Option<(&str, &str)> {
        match self {
            Source::Registry { client, reference } => {
                Some((client.registry(), reference.repository()))
            }
            Source::Store { .. } | Source::Archive { .. } => None,
        }
    }

    /// A verified stream of a blob's bytes.
    /// `verify`: whether the stream must check the digest itself (false
    /// when the destination verifies while writing, as the store does).
    pub fn blob(&self, digest: &Digest, size: u64, verify: bool) -> BlobStream {
        match self {
            Source::Registry { client, reference } => {
                client.blob_stream(reference.repository(), digest, size, verify)
            }
            Source::Store { store, .. } => file_blob_stream(
                store.blob_path(digest),
                0,
                digest.clone(),
                size,
                true,
                STORED,
            ),
            Source::Archive { archive, .. } => match archive.checked.blob(digest) {
                // A blob whose digest the archive check already verified
                // (staged, or read with its diffID) is not hashed twice; one
                // whose name only claims it is verified here, whatever the
                // destination does. The size is always checked.
                Some(staged) => file_blob_stream(
                    staged.path().to_owned(),
                    staged.offset,
                    digest.clone(),
                    size,
                    !staged.verified,
                    "archive blob",
                ),
                None => {
                    let error = RegistryError::Io {
                        what: format!("blob {digest}"),
                        source: std::io::Error::other(
                            "the archive leaves it out (a delta) and the destination does not have it; copy the archive this one was made against first",
                        ),
                    };
                    futures_util::stream::once(async move { Err(error) }).boxed()
                }
            },
        }
    }
}

const STORED: &str = "stored blob";

/// Stream `size` bytes of a file from `offset`, checking the size and (with
/// `verify`) the digest: a corrupt blob is never served.
fn file_blob_stream(
    path: std::path::PathBuf,
    offset: u64,
    digest: Digest,
    size: u64,
    verify: bool,
    kind: &'static str,
) -> BlobStream {
    struct State {
        file: Option<tokio::io::Take<tokio::fs::File>>,
        path: std::path::PathBuf,
        offset: u64,
        size: u64,
        /// `None` once the end was checked.
        verifier: Option<Verifier>,
        what: String,
    }
    let state = State {
        file: None,
        path,
        offset,
        size,
        verifier: Some(if verify {
            Verifier::new(&digest, Some(size))
        } else {
            Verifier::size_only(&digest, size)
        }),
        what: format!("{kind} {digest}"),
    };
    futures_util::stream::try_unfold(state, move |mut state| async move {
        if state.verifier.is_none() {
            return Ok(None);
        }
        let what = state.what.clone();
        let io = |source| RegistryError::Io {
            what: what.clone(),
            source,
        };
        let file = match state.file.as_mut() {
            Some(file) => file,
            None => {
                use tokio::io::AsyncSeekExt;
                let mut file = tokio::fs::File::open(&state.path).await.map_err(io)?;
                file.seek(std::io::SeekFrom::Start(state.offset))
                    .await
                    .map_err(io)?;
                // A whole file may be longer than it should (one byte more
                // tells); a range inside an archive is followed by padding.
                let limit = state.size + u64::from(state.offset == 0 && kind == STORED);
                state.file.insert(file.take(limit))
            }
        };
        let mut buffer = vec![0u8; READ_CHUNK];
        let read = file.read(&mut buffer).await.map_err(io)?;
        let unverified = |error: crate::types::VerifyError| RegistryError::LocalCorrupt {
            what: what.clone(),
            path: state.path.display().to_string(),
            problem: match error {
                crate::types::VerifyError::Size { expected, actual } => {
                    format!("{actual} bytes where {expected} were expected")
                }
                crate::types::VerifyError::Digest { actual, .. } => {
                    format!("its content hashes to {actual}")
                }
            },
            hint: match kind {
                STORED => "`ferry verify --read-data` lists the images it affects; pulling or loading one of them again replaces the blob",
                _ => "The archive is damaged: make it again from its source",
            },
        };
        if read == 0 {
            if let Some(verifier) = state.verifier.take() {
                verifier.finish().map_err(unverified)?;
            }
            return Ok(None);
        }
        buffer.truncate(read);
        if let Some(verifier) = state.verifier.as_mut() {
            verifier.update(&buffer).map_err(unverified)?;
        }
        Ok(Some((Bytes::from(buffer), state)))
    })
    .boxed()
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
