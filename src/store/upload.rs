//! A blob upload whose digest is known only at its end (the distribution
//! API's upload sessions): bytes go to a private file under `ingest/`,
//! hashed as they arrive; `finish` checks the digest the client names and
//! publishes the blob exactly like every other verified write. Dropping an
//! unfinished upload deletes its file.

use super::blobs::IngestFile;
use super::{Store, StoreError};
use crate::types::digest::Algorithm;
use crate::types::{Digest, Hasher};

/// Write buffer of one upload, allocated when its first bytes arrive.
const UPLOAD_BUFFER: usize = 128 * 1024;

/// An upload in progress.
pub struct Upload {
    ingest: IngestFile,
    hasher: Hasher,
    written: u64,
}

impl Store {
    /// Start an upload of unknown digest (sha256). Nothing is opened or
    /// allocated until the first bytes arrive.
    pub fn start_upload(&self) -> Result<Upload, StoreError> {
        Ok(Upload {
            ingest: IngestFile::lazy(self, "upload", UPLOAD_BUFFER),
            hasher: Hasher::new(Algorithm::Sha256),
            written: 0,
        })
    }
}

impl Upload {
    /// Append bytes.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        self.ingest.write(chunk).await
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Check the bytes hash to `expected`, then publish the blob. On any
    /// error nothing becomes visible and the file is removed.
    pub async fn finish(mut self, expected: &Digest) -> Result<(), StoreError> {
        self.ingest.sync().await?;
        let actual = self.hasher.finish();
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
                size: self.written,
            });
        }
        self.ingest.publish(expected).await
    }
}
