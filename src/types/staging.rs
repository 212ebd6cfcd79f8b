//! Staged blobs for all-or-nothing imports (archives): bytes are hashed
//! into a private file while they stream past, and become visible only
//! when the store commits them after the caller has checked the whole
//! import. Dropping a staged blob deletes it. A staged blob may instead
//! name a byte range of a file it does not own (an uncompressed archive
//! read in place): that one is never deleted or committed, and its digest
//! is only claimed until a reader verifies it.

use crate::types::Digest;
use std::io::Read;
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
    /// Where staged bytes go could not take them (its own error, with its
    /// path and hint: a full disk, permissions).
    #[error(transparent)]
    Write(Box<dyn std::error::Error + Send + Sync>),
    #[error("reading the input failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("more than {0} bytes")]
    TooLarge(u64),
}

/// Where archives stage what they read: a private area of the store (or a
/// throw-away spool) whose blobs become visible only through the store's
/// commit, after the caller checked the whole import.
///
/// Contract: `stage` copies `reader` into a private file, hashing it
/// (sha256), and fails past `limit` bytes; the staged blob's digest and
/// size are what was read. Dropping a staged blob removes its file.
pub trait Staging: Sync {
    /// Copy `reader` into a staged blob (see the contract).
    fn stage(&self, reader: &mut dyn Read, limit: u64) -> Result<StagedBlob, StageError>;

    /// Stage bytes held in memory.
    fn stage_bytes(&self, bytes: &[u8]) -> Result<StagedBlob, StageError> {
        self.stage(&mut &bytes[..], u64::MAX)
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

    /// Whether the bytes are a range of a file this blob does not own (an
    /// archive read in place, which may change after it was checked).
    pub fn is_range(&self) -> bool {
        !self.owned
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

    /// A staged file this blob owns, handed over for publishing (the blob
    /// no longer removes it); `None` for a range of another file.
    pub fn into_owned_file(mut self) -> Option<PathBuf> {
        match self.owned {
            true => self.path.take(),
            false => None,
        }
    }

    /// A staged file this blob owns (for the stager to fill).
    pub fn owned(path: PathBuf) -> StagedBlob {
        StagedBlob {
            path: Some(path),
            digest: Digest::sha256_of(b""),
            size: 0,
            offset: 0,
            verified: true,
            owned: true,
        }
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
