//! The local store: a valid OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) plus ferry's own state under `ferry/`. Blobs are
//! committed atomically after verification; tags change last, under a lock,
//! by rewriting `index.json` atomically. A crash leaves only garbage.

pub mod blobs;
pub mod images;
pub mod index;
pub mod lock;
pub mod maintenance;
pub mod meta;
pub mod protect;
pub mod referrers;
pub mod staging;
pub mod upload;

use std::path::{Path, PathBuf};

pub use blobs::BlobWriter;
pub use images::{ImageSummary, LocalImage};
pub use index::{IndexEntry, CONTAINERD_NAME, REF_NAME};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}{hint}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("blob {expected}: digest mismatch: expected {expected}, calculated {actual} ({size} bytes); the source sent corrupt or altered data, nothing was stored")]
    DigestMismatch {
        expected: crate::types::Digest,
        actual: crate::types::Digest,
        size: u64,
    },
    #[error("blob {digest}: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        digest: crate::types::Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is corrupt: {message}; {}", corrupt_fix(path))]
    Corrupt { path: String, message: String },
    #[error("no such image: {0}; `ferry images` lists what the store holds")]
    NoSuchImage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("blob {0} is missing from the store; pull the image again")]
    MissingBlob(crate::types::Digest),
    #[error(transparent)]
    NoPlatform(#[from] crate::types::choice::NoPlatform),
    #[error("{image}: {message}")]
    Invalid { image: String, message: String },
    /// A lock could not be taken within the store's wait limit.
    #[error("the store is busy: {0}; try again")]
    Busy(String),
}

impl StoreError {
    /// Content for blob `digest` that failed the verifier.
    pub fn unverified(
        digest: &crate::types::Digest,
        error: crate::types::VerifyError,
    ) -> StoreError {
        match error {
            crate::types::VerifyError::Size { expected, actual } => StoreError::SizeMismatch {
                digest: digest.clone(),
                expected,
                actual,
            },
            crate::types::VerifyError::Digest {
                expected,
                actual,
                size,
            } => StoreError::DigestMismatch {
                expected,
                actual,
                size,
            },
        }
    }

    /// Wrap an I/O error with the path it concerns and a hint for common causes.
    pub fn io(path: &Path, source: std::io::Error) -> StoreError {
        let hint = match source.raw_os_error() {
            Some(libc::ENOSPC) => " (the disk is full: free space or move the store with --store)",
            Some(libc::EROFS) => " (the store is on a read-only file system)",
            Some(libc::EACCES) | Some(libc::EPERM) => {
                " (permission denied: check the store's owner, or use --store)"
            }
            _ => "",
        };
        StoreError::Io {
            path: path.display().to_string(),
            source,
            hint,
        }
    }
}

/// An open store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// How long a blob this handle commits (or finds present) stays
    /// protected from gc when no image comes to reference it.
    protection: std::time::Duration,
    /// Longest wait for a store lock (`None`: as long as it takes).
    lock_wait: Option<std::time::Duration>,
    /// Whose protections this handle records (a run's own, released when
    /// its tags commit), and whether an index commit releases them (a
    /// server's protections only expire: many clients share its handle).
    owner: u64,
    release_on_commit: bool,
}

/// How long committed, unreferenced blobs stay protected by default: as
/// long as a partial download is kept (a run that takes longer than this
/// between a blob and its tag fails its tag commit cleanly instead).
pub const DEFAULT_PROTECTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Store {
    /// Open the store at `root`, creating the layout when absent.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store {
            root: root.into(),
            protection: DEFAULT_PROTECTION,
            lock_wait: None,
            owner: rand::random(),
            release_on_commit: true,
        };
        for dir in [
            store.root.join("blobs/sha256"),
            store.root.join("ingest"),
            store.root.join("ferry/protect"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.root.join("index.json");
        if !index.exists() {
            let _guard = store.lock_tags()?;
            if !index.exists() {
                index::write_index(&store, &[])?;
            }
        }
        Ok(store)
    }

    /// A handle on the store at `root` that creates nothing, for reads
    /// where a store that does not exist is read as empty (`ferry jobs`
    /// before any run). Never write through it.
    pub fn for_reading(root: impl Into<PathBuf>) -> Store {
        Store {
            root: root.into(),
            protection: DEFAULT_PROTECTION,
            lock_wait: None,
            owner: rand::random(),
            release_on_commit: true,
        }
    }

    /// This handle with blobs it commits protected for `ttl` whatever is
    /// committed meanwhile (a server: the time each client has between its
    /// upload and its manifest; one client's tag never releases another's).
    pub fn with_protection(mut self, ttl: std::time::Duration) -> Store {
        self.protection = ttl;
        self.release_on_commit = false;
        self
    }

    /// This handle waiting at most `wait` for a store lock, then failing
    /// with [`StoreError::Busy`] (a server never waits on a gc for long).
    pub fn with_lock_wait(mut self, wait: std::time::Duration) -> Store {
        self.lock_wait = Some(wait);
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write as _;
        crate::types::atomic_file::write_atomically(path, None, |file| file.write_all(bytes))
            .map_err(|e| StoreError::io(path, e))
    }
}

/// What to do about a corrupt store file: the index holds every tag, so
/// `verify` cannot read past it; any other file is one `verify` can place.
fn corrupt_fix(path: &str) -> &'static str {
    if path.ends_with("index.json") {
        "ferry writes it atomically, so something else changed it: restore it \
         from a backup of the store, or move it aside (the blobs stay) and pull \
         or load the images again"
    } else {
        "`ferry verify --read-data` lists what is affected; pulling or loading \
         those images again repairs them"
    }
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
