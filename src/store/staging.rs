//! Staged blobs for all-or-nothing imports (archives): bytes are hashed
//! into a private file under `ingest/` while they stream past, and become
//! visible only through [`StagedBlob::commit`] after the caller has checked
//! the whole import. Dropping a staged blob deletes it. A staged blob may
//! instead name a byte range of a file it does not own (an uncompressed
//! archive read in place): that one is never deleted or committed, and its
//! digest is only claimed until a reader verifies it.

use super::{Store, StoreError};
use crate::types::digest::Algorithm;
use crate::types::{Digest, Hasher};
use std::io::{Read, Write};
use std::path::PathBuf;

/// A blob written and hashed, not yet visible in the store.
#[derive(Debug)]
pub struct StagedBlob {
    path: Option<PathBuf>,
    pub digest: Digest,
    pub size: u64,
    /// Where the bytes start in `path` (0 for a staged file).
    pub offset: u64,
    /// Whether the bytes were hashed (false: `digest` is only claimed by a name).
    pub verified: bool,
    /// Whether this blob owns its file (staged) or names a range of another.
    owned: bool,
}

/// Why staging stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the input failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("more than {0} bytes")]
    TooLarge(u64),
}

impl Store {
    /// Copy `reader` into a staged blob (sha256), failing past `limit` bytes.
    pub fn stage(&self, reader: &mut dyn Read, limit: u64) -> Result<StagedBlob, StageError> {
        let path = self.root().join("ingest").join(format!(
            "stage-{}-{:x}.partial",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut staged = StagedBlob {
            path: Some(path.clone()),
            digest: Digest::sha256_of(b""),
            size: 0,
            offset: 0,
            verified: true,
            owned: true,
        };
        let file = std::fs::File::create(&path).map_err(|e| StoreError::io(&path, e))?;
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
            file.write_all(&buffer[..read])
                .map_err(|e| StoreError::io(&path, e))?;
        }
        let file = file
            .into_inner()
            .map_err(|e| StoreError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        staged.digest = hasher.finish();
        Ok(staged)
    }

    /// Stage bytes held in memory.
    pub fn stage_bytes(&self, bytes: &[u8]) -> Result<StagedBlob, StoreError> {
        match self.stage(&mut &bytes[..], u64::MAX) {
            Ok(staged) => Ok(staged),
            Err(StageError::Store(e)) => Err(e),
            Err(other) => Err(StoreError::Io {
                path: self.root().join("ingest").display().to_string(),
                source: std::io::Error::other(other.to_string()),
                hint: "",
            }),
        }
    }
}

impl StagedBlob {
    /// `size` bytes at `offset` of a file this blob does not own.
    pub fn in_file(
        path: PathBuf,
        offset: u64,
        size: u64,
        digest: Digest,
        verified: bool,
    ) -> StagedBlob {
        StagedBlob {
            path: Some(path),
            digest,
            size,
            offset,
            verified,
            owned: false,
        }
    }

    /// A reader over exactly the blob's bytes (not verified: wrap it).
    pub fn open(&self) -> std::io::Result<std::io::Take<std::io::BufReader<std::fs::File>>> {
        use std::io::Seek;
        let mut file = std::fs::File::open(self.path())?;
        file.seek(std::io::SeekFrom::Start(self.offset))?;
        Ok(std::io::BufReader::with_capacity(256 * 1024, file).take(self.size))
    }

    /// Where the staged bytes are, for reading them back before commit.
    pub fn path(&self) -> &std::path::Path {
        self.path
            .as_deref()
            .expect("staged blob is live until commit")
    }

    /// Publish the blob under its digest, replacing an existing file (which
    /// is the same content, or a corrupt copy this repairs).
    pub fn commit(mut self, store: &Store) -> Result<(), StoreError> {
        let (true, Some(path)) = (self.owned, self.path.take()) else {
            return Err(StoreError::Conflict(format!(
                "blob {} is a range of an archive, not a staged file; it cannot be committed",
                self.digest
            )));
        };
        // Verified bytes replace whatever is there: a blob already in the
        // store may be corrupt (disk rot, a hand edit), and an identical one
        // is replaced by itself.
        let result = store.publish_verified(&path, &self.digest);
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
