//! An object read as a stream of ranged GETs pinned to the ETag seen when
//! it was opened (`If-Match`, and the answer's ETag checked too, for
//! servers that ignore the header): an archive replaced while ferry reads
//! it fails with [`ObjectError::Changed`] instead of mixing two archives.
//! One range is read ahead while the last is consumed; a lost connection
//! costs one range, not the whole object.

use super::{Bucket, ObjectError};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore as _};
use tokio::task::JoinHandle;

/// Bytes per ranged GET.
const RANGE: u64 = 8 * 1024 * 1024;

/// A blocking reader over an object (use it from `block_in_place`).
pub struct ObjectReader {
    handle: tokio::runtime::Handle,
    bucket: Bucket,
    key: String,
    etag: String,
    size: u64,
    /// Where the next range starts.
    next_start: u64,
    chunk: bytes::Bytes,
    ahead: Option<JoinHandle<Result<bytes::Bytes, ObjectError>>>,
    range: u64,
}

impl ObjectReader {
    /// Open `key`: its size and ETag are fixed from here on.
    pub async fn open(bucket: &Bucket, key: &str) -> Result<ObjectReader, ObjectError> {
        let info = bucket
            .head(key)
            .await?
            .ok_or_else(|| ObjectError::NotFound {
                url: bucket.url(key).to_string(),
            })?;
        let etag = info.etag.ok_or_else(|| ObjectError::Other {
            url: bucket.url(key).to_string(),
            message: "the server sends no ETag, so a change during the read could not be noticed"
                .into(),
        })?;
        let range = std::env::var("FERRY_OBJECT_READ_RANGE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &u64| v >= 4096)
            .unwrap_or(RANGE);
        Ok(ObjectReader {
            handle: tokio::runtime::Handle::current(),
            bucket: bucket.clone(),
            key: key.to_owned(),
            etag,
            size: info.size,
            next_start: 0,
            chunk: bytes::Bytes::new(),
            ahead: None,
            range,
        })
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn fetch(&mut self) -> Option<JoinHandle<Result<bytes::Bytes, ObjectError>>> {
        if self.next_start >= self.size {
            return None;
        }
        let start = self.next_start;
        let end = (start + self.range).min(self.size);
        self.next_start = end;
        let (bucket, key, etag) = (self.bucket.clone(), self.key.clone(), self.etag.clone());
        Some(self.handle.spawn(async move {
            let options = GetOptions {
                if_match: Some(etag.clone()),
                range: Some(GetRange::Bounded(start..end)),
                ..Default::default()
            };
            let changed = || ObjectError::Changed {
                url: bucket.url(&key).to_string(),
                etag: etag.clone(),
            };
            let result = match bucket
                .s3
                .get_opts(&ObjectPath::from(key.as_str()), options)
                .await
            {
                Ok(result) => result,
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ) => return Err(changed()),
                Err(e) => return Err(bucket.error(&key, e)),
            };
            if result.meta.e_tag.as_deref() != Some(etag.as_str()) {
                return Err(changed());
            }
            let bytes = result.bytes().await.map_err(|e| bucket.error(&key, e))?;
            if bytes.len() as u64 != end - start {
                return Err(ObjectError::Other {
                    url: bucket.url(&key).to_string(),
                    message: format!(
                        "asked for bytes {start}..{end}, got {}; the server does not honour ranges",
                        bytes.len()
                    ),
                });
            }
            Ok(bytes)
        }))
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            let task = match self.ahead.take() {
                Some(task) => Some(task),
                None => self.fetch(),
            };
            let Some(task) = task else {
                return Ok(0);
            };
            self.chunk = self
                .handle
                .block_on(task)
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            self.ahead = self.fetch();
        }
        let count = buffer.len().min(self.chunk.len());
        buffer[..count].copy_from_slice(&self.chunk.split_to(count));
        Ok(count)
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let Some(task) = self.ahead.take() {
            task.abort();
        }
    }
}
