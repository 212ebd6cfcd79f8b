//! Blob ingest and commit: bytes go to a private temp file under `ingest/`,
//! are hashed while written, fsynced, checked against the expected size and
//! digest, made read-only and renamed into `blobs/` (over an existing blob:
//! verified bytes replace a corrupt copy); a failed or dropped writer
//! leaves nothing behind.

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

    /// Open a blob for reading after re-hashing it whole: a corrupt or
    /// missing blob is an error that names it, never bytes (blocking).
    pub fn open_verified(&self, digest: &Digest, size: u64) -> std::io::Result<std::fs::File> {
        let path = self.blob_path(digest);
        let (actual, length) = super::maintenance::hash_file(&path, digest)?;
        if actual != *digest || length != size {
            return Err(std::io::Error::other(format!(
                "the store's blob {digest} ({}) is corrupt: {length} bytes hashing to {actual}; `ferry verify --read-data` lists the images it affects",
                path.display()
            )));
        }
        std::fs::File::open(&path)
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
            return Err(StoreError::Invalid {
                image: format!("blob {digest}"),
                message: format!(
                    "{size} bytes, over the {limit}-byte limit ferry reads as a manifest or config"
                ),
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

    /// A writer that continues a partial download a failed or killed run
    /// left in `ingest/` (`<hex>.partial`, locked while in use): the bytes
    /// already there are read back through the verifier — never trusted
    /// blindly — and `written()` says where the download resumes. When
    /// another process holds the partial, a fresh private writer is used.
    pub async fn resumable_writer(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobWriter, StoreError> {
        let path = self.root.join("ingest").join(format!(
            "{}-{}.partial",
            digest.algorithm().name(),
            digest.hex()
        ));
        let (digest_owned, path_owned) = (digest.clone(), path.clone());
        let opened = tokio::task::spawn_blocking(
            move || -> std::io::Result<Option<(std::fs::File, Verifier)>> {
                use std::io::Read;
                let mut file = std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path_owned)?;
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => return Err(e),
                }
                // Another process may have finished this partial (renamed it
                // into blobs/) between our open and our lock: the file held
                // is then a published blob, never to be written. Go private.
                {
                    use std::os::unix::fs::MetadataExt;
                    let held = file.metadata()?;
                    let named = std::fs::metadata(&path_owned).ok();
                    if named.is_none_or(|m| m.ino() != held.ino() || m.dev() != held.dev()) {
                        return Ok(None);
                    }
                }
                let mut verifier = Verifier::new(&digest_owned, Some(size));
                if file.metadata()?.len() > size {
                    file.set_len(0)?;
                }
                let mut buffer = vec![0u8; 1024 * 1024];
                loop {
                    let read = file.read(&mut buffer)?;
                    if read == 0 {
                        break;
                    }
                    if verifier.update(&buffer[..read]).is_err() {
                        file.set_len(0)?;
                        verifier = Verifier::new(&digest_owned, Some(size));
                        break;
                    }
                }
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(verifier.seen()))?;
                Ok(Some((file, verifier)))
            },
        )
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| StoreError::io(&path, e))?;
        let Some((file, verifier)) = opened else {
            return self.blob_writer(digest, Some(size)).await;
        };
        if verifier.seen() > 0 {
            tracing::debug!(%digest, offset = verifier.seen(), "resuming a partial download");
        }
        Ok(BlobWriter {
            ingest: IngestFile {
                store: self.clone(),
                temp: Some(path),
                file: Some(tokio::io::BufWriter::with_capacity(
                    WRITE_BUFFER,
                    tokio::fs::File::from_std(file),
                )),
                lazy: None,
                keep_on_drop: true,
            },
            verifier: Some(verifier),
        })
    }

    /// Forget a partial download (its resume failed; the next try starts over).
    pub fn discard_partial(&self, digest: &Digest) {
        let path = self.root.join("ingest").join(format!(
            "{}-{}.partial",
            digest.algorithm().name(),
            digest.hex()
        ));
        let _ = std::fs::remove_file(path);
    }

    /// Store bytes held in memory (manifests, configs) under their digest.
    pub async fn put_blob_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self
            .claim_async(digest, Some(bytes.len() as u64))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut writer = self.blob_writer(digest, Some(bytes.len() as u64)).await?;
        writer.write(bytes).await?;
        writer.commit().await
    }
}

/// A private file under `ingest/` that becomes a blob only through
/// [`IngestFile::publish`]; dropped unpublished, it is deleted. It is
/// `flock`ed while open, so gc knows it is in use.
pub(super) struct IngestFile {
    store: Store,
    temp: Option<PathBuf>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// Created at the first write (an upload session holds no descriptor
    /// and no buffer until bytes arrive), with this buffer size.
    lazy: Option<usize>,
    /// A resumable partial is kept when dropped (a failed or killed
    /// transfer continues from it next time), unless its bytes proved bad.
    keep_on_drop: bool,
}

impl IngestFile {
    pub(super) async fn create(store: &Store, label: &str) -> Result<IngestFile, StoreError> {
        let mut ingest = IngestFile::lazy(store, label, WRITE_BUFFER);
        ingest.open().await?;
        Ok(ingest)
    }

    /// An ingest file created only when the first bytes arrive.
    pub(super) fn lazy(store: &Store, label: &str, buffer: usize) -> IngestFile {
        let temp = store.root.join("ingest").join(format!(
            "{label}-{}-{:x}.partial",
            std::process::id(),
            rand::random::<u64>()
        ));
        IngestFile {
            store: store.clone(),
            temp: Some(temp),
            file: None,
            lazy: Some(buffer),
            keep_on_drop: false,
        }
    }

    /// Create the file (locked: in use) when it is not there yet.
    async fn open(&mut self) -> Result<(), StoreError> {
        let Some(buffer) = self.lazy.take() else {
            return Ok(());
        };
        let temp = self.temp.clone().expect("open ingest file");
        let path = temp.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::File::create(&path)?;
            file.try_lock().map_err(std::io::Error::other)?;
            Ok(file)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| StoreError::io(&temp, e))?;
        self.file = Some(tokio::io::BufWriter::with_capacity(
            buffer,
            tokio::fs::File::from_std(file),
        ));
        Ok(())
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.open().await?;
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
        self.open().await?;
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
        let (store, digest) = (self.store.clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.publish_verified(&temp, &digest))
            .await
            .unwrap_or_else(|e| Err(StoreError::Conflict(format!("publishing stopped: {e}"))))?;
        self.temp = None;
        Ok(())
    }
}

impl Drop for IngestFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            if !self.keep_on_drop {
                let _ = std::fs::remove_file(temp);
            }
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
        if let Err(error) = verifier.update(chunk) {
            self.ingest.keep_on_drop = false;
            return Err(StoreError::unverified(&digest, error));
        }
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
        if let Err(error) = verifier.finish() {
            // Bad bytes are never resumed from.
            self.ingest.keep_on_drop = false;
            return Err(StoreError::unverified(&digest, error));
        }
        self.ingest.publish(&digest).await
    }
}

impl Store {
    /// The one publish of every ingest (downloads, pushes to `serve`,
    /// staged archive blobs): the verified, synced file at `temp` becomes
    /// blob `digest`, protected from gc as it appears (blocking: run it
    /// off the async workers).
    pub(super) fn publish_verified(
        &self,
        temp: &std::path::Path,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let target = self.blob_path(digest);
        self.commit_protected(digest, || {
            publish(temp, &target).map_err(|e| StoreError::io(&target, e))
        })
    }
}

/// Make the verified temp file read-only and move it into place.
fn publish(temp: &std::path::Path, target: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // A shared partial (`ingest/<digest>.partial`) another process finished
    // and renamed into place while this one read it back is gone from
    // `ingest/`: the blob it became is this same verified content.
    let gone_because_published =
        |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound && target.exists();
    match std::fs::set_permissions(temp, std::fs::Permissions::from_mode(0o444)) {
        Err(e) if gone_because_published(&e) => return Ok(()),
        other => other?,
    }
    // Verified bytes replace an existing blob: the same content (another
    // process committed it first), or a corrupt copy this repairs.
    match std::fs::rename(temp, target) {
        Err(e) if gone_because_published(&e) => return Ok(()),
        other => other?,
    }
    sync_dir(target.parent().expect("blob dir"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partial_another_process_published_first_counts_as_published() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, target) = (dir.path().join("x.partial"), dir.path().join("x"));
        std::fs::write(&target, b"verified").unwrap();
        super::publish(&temp, &target).unwrap();
        // With nothing published, a missing temp file is still an error.
        std::fs::remove_file(&target).unwrap();
        assert!(super::publish(&temp, &target).is_err());
    }
}
