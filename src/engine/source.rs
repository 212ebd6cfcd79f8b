//! Where a copy reads from: a registry repository, an image of the local
//! store, or an image of a checked archive. Plan and transfer never know
//! which one they talk to. (The write side is `destination.rs`.)
//!
//! Contract:
//! - `root` returns the top-level manifest with its exact bytes; `manifest`
//!   returns a child by digest, checked against that digest.
//! - `blob(digest, size, verify)` streams exactly `size` bytes or ends in an
//!   error: the size is always checked; the digest is checked when `verify`
//!   is asked, and always for bytes whose digest nothing has checked yet (an
//!   archive blob that only its name vouches for). A stream that ends
//!   cleanly has delivered the blob.
//! - Nothing a source returns was trusted before it was verified.

use super::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::{RegistryClient, RegistryError};
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, ParsedManifest, Reference, Verifier};
use bytes::Bytes;
use futures_util::stream::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

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
