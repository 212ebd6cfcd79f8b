//! Blob ingest and commit: bytes go to a private temp file under `ingest/`,
//! are hashed while written, fsynced, checked against the expected size and
//! digest, made read-only and renamed into `blobs/`. An existing blob is
//! success; a failed or dropped writer leaves nothing behind.

use super::{sync_dir, Store, StoreError};
use crate::types::{Digest, Verifier};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Buffer between the network and the disk: large enough to keep syscalls
/// few, small enough to keep memory flat with several transfers.
const WRITE_BUFFER: usize = 1024 * 1024;

impl Store {
    /// Where a blob lives (the digest is validated, so this is a safe path).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// The blob's size when the store has it.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Read a small blob (manifests, configs) whole, checking its digest:
    /// a corrupt blob is reported, never served.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<bytes::Bytes, StoreError> {
        let path = self.blob_path(digest);
        let size = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(digest.clone()))
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if size > limit {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                message: format!("{size} bytes is over the {limit}-byte limit for metadata"),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        if let Err(error) = Verifier::check(digest, &bytes) {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                message: error.to_string(),
            });
        }
        Ok(bytes.into())
    }

    /// Start writing a blob expected to hash to `digest` (and be `size` bytes, when known).
    pub async fn blob_writer(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<BlobWriter, StoreError> {
        Ok(BlobWriter {
            ingest: IngestFile::create(self, digest.hex()).await?,
            verifier: Some(Verifier::new(digest, size)),
        })
    }

    /// Store bytes held in memory (manifests, configs) under their digest.
    pub async fn put_blob_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.blob_size(digest) == Some(bytes.len() as u64) {
            return Ok(());
        }
        let mut writer = self.blob_writer(digest, Some(bytes.len() as u64)).await?;
        writer.write(bytes).await?;
        writer.commit().await
    }
}

/// A private file under `ingest/` that becomes a blob only through
/// [`IngestFile::publish`]; dropped unpublished, it is deleted.
pub(super) struct IngestFile {
    store: Store,
    temp: Option<PathBuf>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

impl IngestFile {
    pub(super) async fn create(store: &Store, label: &str) -> Result<IngestFile, StoreError> {
        let temp = store.root.join("ingest").join(format!(
            "{label}-{}-{:x}.partial",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| StoreError::io(&temp, e))?;
        Ok(IngestFile {
            store: store.clone(),
            temp: Some(temp),
            file: Some(tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file)),
        })
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let temp = self.temp.as_ref().expect("open ingest file");
        self.file
            .as_mut()
            .expect("open ingest file")
            .write_all(chunk)
            .await
            .map_err(|e| StoreError::io(temp, e))
    }

    /// Flush and fsync; the bytes are then on disk, not yet a blob.
    pub(super) async fn sync(&mut self) -> Result<(), StoreError> {
        let temp = self.temp.clone().expect("open ingest file");
        let mut file = self.file.take().expect("open ingest file");
        file.flush().await.map_err(|e| StoreError::io(&temp, e))?;
        file.into_inner()
            .sync_all()
            .await
            .map_err(|e| StoreError::io(&temp, e))
    }

    /// Publish the synced, verified file as blob `digest`.
    pub(super) async fn publish(mut self, digest: &Digest) -> Result<(), StoreError> {
        let temp = self.temp.clone().expect("open ingest file");
        let target = self.store.blob_path(digest);
        let to = target.clone();
        let published = tokio::task::spawn_blocking(move || publish(&temp, &to))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        published.map_err(|e| StoreError::io(&target, e))?;
        self.temp = None;
        Ok(())
    }
}

impl Drop for IngestFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A blob being written. `commit` verifies and publishes it; dropping the
/// writer without committing deletes the temp file.
pub struct BlobWriter {
    ingest: IngestFile,
    /// `None` once committed.
    verifier: Option<Verifier>,
}

impl BlobWriter {
    /// Append bytes. Writing past the expected size fails at once.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let verifier = self.verifier.as_mut().expect("open writer");
        let digest = verifier.expected().clone();
        verifier
            .update(chunk)
            .map_err(|e| StoreError::unverified(&digest, e))?;
        self.ingest.write(chunk).await
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.verifier.as_ref().map_or(0, Verifier::seen)
    }

    /// Verify and publish the blob. Always consumes the writer; on any
    /// error the temp file is removed and nothing becomes visible.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.ingest.sync().await?;
        let verifier = self.verifier.take().expect("open writer");
        let digest = verifier.expected().clone();
        verifier
            .finish()
            .map_err(|e| StoreError::unverified(&digest, e))?;
        self.ingest.publish(&digest).await
    }
}

/// Make the verified temp file read-only and move it into place.
fn publish(temp: &std::path::Path, target: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(temp, std::fs::Permissions::from_mode(0o444))?;
    if target.exists() {
        // Another process committed the same content first: success.
        return std::fs::remove_file(temp);
    }
    std::fs::rename(temp, target)?;
    sync_dir(target.parent().expect("blob dir"))
}
