//! A blob read from a local file (a store blob, or a byte range of an
//! archive), streamed with its size and digest checked: the one verified
//! file stream of every local source.

use crate::registry::blobs::BlobStream;
use crate::registry::RegistryError;
use crate::types::{Digest, Verifier};
use bytes::Bytes;
use futures_util::stream::StreamExt;
use tokio::io::AsyncReadExt;

/// Read size for streaming local blobs.
const READ_CHUNK: usize = 256 * 1024;

pub(super) const STORED: &str = "stored blob";

/// Stream `size` bytes of a file from `offset`, checking the size and (with
/// `verify`) the digest: a corrupt blob is never served.
pub(super) fn file_blob_stream(
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
