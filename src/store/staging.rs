//! The store as the [`Staging`] area of archive imports: staged blobs are
//! private files under `ingest/`, hashed as they are written, and become
//! blobs only through [`Store::commit_staged`] — the same verified publish
//! as every other ingest.

use super::{Store, StoreError};
use crate::types::digest::Algorithm;
use crate::types::staging::{StageError, StagedBlob, Staging};
use crate::types::Hasher;
use std::io::{Read, Write};

impl Staging for Store {
    /// Copy `reader` into a staged blob (sha256), failing past `limit` bytes.
    fn stage(&self, reader: &mut dyn Read, limit: u64) -> Result<StagedBlob, StageError> {
        let path = self.root().join("ingest").join(format!(
            "stage-{}-{:x}.partial",
            std::process::id(),
            rand::random::<u64>()
        ));
        let write = |e| StageError::Write(Box::new(StoreError::io(&path, e)));
        let mut staged = StagedBlob::owned(path.clone());
        let file = std::fs::File::create(&path).map_err(write)?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StageError::Read(e)),
            };
            staged.size += read as u64;
            if staged.size > limit {
                return Err(StageError::TooLarge(limit));
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read]).map_err(write)?;
        }
        let file = file.into_inner().map_err(|e| write(e.into_error()))?;
        file.sync_all().map_err(write)?;
        staged.digest = hasher.finish();
        Ok(staged)
    }
}

impl Store {
    /// Publish a staged blob under its digest, replacing an existing file
    /// (the same content, or a corrupt copy this repairs).
    pub fn commit_staged(&self, staged: StagedBlob) -> Result<(), StoreError> {
        let digest = staged.digest.clone();
        let Some(path) = staged.into_owned_file() else {
            return Err(StoreError::Conflict(format!(
                "blob {digest} is a range of an archive, not a staged file; it cannot be committed"
            )));
        };
        // Verified bytes replace whatever is there: a blob already in the
        // store may be corrupt (disk rot, a hand edit), and an identical one
        // is replaced by itself.
        let result = self.publish_verified(&path, &digest);
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }
}

impl Store {
    /// Store bytes held in memory (a manifest ferry built) under their
    /// digest, through the same staging and publish; blocking.
    pub fn commit_bytes(&self, bytes: &[u8]) -> Result<crate::types::Digest, StoreError> {
        let staged = self.stage_bytes(bytes).map_err(|e| match e {
            StageError::Write(e) => match e.downcast::<StoreError>() {
                Ok(e) => *e,
                Err(e) => StoreError::Conflict(e.to_string()),
            },
            other => StoreError::Conflict(other.to_string()),
        })?;
        let digest = staged.digest.clone();
        self.commit_staged(staged)?;
        Ok(digest)
    }
}
