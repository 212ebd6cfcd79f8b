//! Archives: one tar that is at once an OCI image layout and a
//! `docker load` archive (`save`), and a reader for what ferry, `docker
//! save` (legacy and 25+), podman, skopeo and crane write (`load`). Archive
//! entries are never extracted by name: bytes are staged under their
//! verified digest through the [`Staging`](crate::types::staging::Staging)
//! interface (the engine commits them to the store, tags last, only when
//! everything verified). `archive` never touches the store itself.

pub mod checked;
mod diff_ids;
mod docker_archive;
pub mod listing;
pub mod load;
pub mod location;
pub mod names;
mod read;
pub mod rootfs;
pub mod save;
mod tar_check;

use crate::types::staging::StageError;
use crate::types::Digest;

/// An archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Where the archive stages its blobs could not take them.
    #[error(transparent)]
    Staging(#[from] StageError),
    /// Where a delta's left-out blobs are looked up (the store, a
    /// registry) failed: its own error, not the archive's.
    #[error(transparent)]
    Known(Box<dyn std::error::Error + Send + Sync>),
    #[error("{archive}: {message}")]
    Invalid { archive: String, message: String },
    #[error("{archive}: {source}")]
    Io {
        archive: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{archive} leaves out blobs this store does not have: {missing}; load the archive it was made against first (ferry save --since)")]
    MissingBlobs { archive: String, missing: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Object(#[from] crate::objects::ObjectError),
}

/// Where a delta archive's left-out blobs are found: the store it loads
/// into, or the registry `copy archive:` writes to. `image` is the archive's
/// name for the image the blob belongs to (a full reference when it has one).
pub trait KnownBlobs {
    /// Whether the blob is there.
    fn has(&self, image: &str, digest: &Digest) -> bool;
    /// A small blob's bytes (a manifest when `manifest`, else a config),
    /// verified against `digest`; `None` when it is not there.
    fn read(
        &self,
        image: &str,
        digest: &Digest,
        manifest: bool,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ArchiveError>;
    /// Whether blobs found here are already where the load commits to
    /// (so they need no staging).
    fn is_destination(&self) -> bool {
        false
    }
}

/// Outer compression of an archive or layer, recognised by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    /// Which of the peers the README names cannot read an archive compressed
    /// so (measured: Docker 20.10, podman 4.3, skopeo 1.9, containerd 1.6).
    pub fn unreadable_by(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(
                "a gzip archive does not load with skopeo's docker-archive: or containerd's ctr import (docker load, podman load and skopeo oci-archive: read it)",
            ),
            Compression::Zstd => Some(
                "a zstd archive does not load with docker load (Docker 20.10) or containerd's ctr import (podman load and skopeo read it)",
            ),
            // ferry writes none of these (it only reads them).
            Compression::Xz | Compression::Bzip2 => {
                Some("an xz or bzip2 archive loads with ferry only")
            }
        }
    }

    /// Recognise compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
        {
            // A zstd frame, or a skippable frame that precedes one.
            Compression::Zstd
        } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
            Compression::Xz
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    /// A reader that decompresses `reader`.
    pub fn decoder<'a>(
        self,
        reader: impl std::io::BufRead + 'a,
    ) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
            Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(reader)),
            Compression::Bzip2 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "bzip2 is not supported; decompress with bunzip2 first",
                ))
            }
        })
    }
}

/// A reader that fails once more than `limit` bytes came through: the
/// guard against decompression bombs.
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    what: &'static str,
}

impl<R> LimitedReader<R> {
    /// Allow at most `limit` bytes.
    pub fn new(inner: R, limit: u64, what: &'static str) -> LimitedReader<R> {
        LimitedReader {
            inner,
            remaining: limit,
            what,
        }
    }
}

impl<R: std::io::Read> std::io::Read for LimitedReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read as u64 > self.remaining {
            return Err(std::io::Error::other(format!(
                "{} expands beyond its size limit (a decompression bomb?)",
                self.what
            )));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// Write a file so it appears only complete: a temp file beside it, written
/// by `write`, fsynced, renamed into place, directory fsynced. On any error
/// the temp file is removed and `path` is untouched (an interrupted save or
/// backup never leaves a half archive under the final name).
pub fn write_file_atomically(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    crate::types::atomic_file::write_atomically(path, None, write)
        .with_context(|| format!("cannot write {}", path.display()))
}
