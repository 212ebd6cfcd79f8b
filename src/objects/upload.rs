//! Archives written to a bucket as one multipart upload: nothing is
//! visible under the key until the upload is completed, so a reader or a
//! rotation never sees half an archive. Parts stream out as they fill (at
//! most three in memory), and the part size doubles every 1 000 parts so
//! any archive fits in S3's 10 000 parts. A marker object under
//! `<dir>/.ferry-uploads/` names each upload while it runs: a failed write
//! aborts its upload at once, and one that could not (the process died)
//! is aborted by the next write to that place ([`sweep`]).

use super::{Bucket, ObjectError};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as ObjectPath;
use std::collections::VecDeque;
use std::io::Write;
use tokio::task::JoinHandle;

/// S3's largest part.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Parts uploading at once (each holds one part in memory).
const IN_FLIGHT: usize = 2;

/// Part `index`'s size: `first`, doubled every 1 000 parts.
pub fn part_size(first: u64, index: usize) -> u64 {
    let doublings = (index / 1000).min(20) as u32;
    first.saturating_mul(1u64 << doublings).min(MAX_PART)
}

/// Where the marker for an upload of `key` lives.
fn marker_key(key: &str, upload: &str) -> String {
    let (dir, name) = match key.rfind('/') {
        Some(at) => (&key[..=at], &key[at + 1..]),
        None => ("", key),
    };
    let short = crate::types::Digest::sha256_of(upload.as_bytes()).hex()[..16].to_owned();
    format!("{dir}.ferry-uploads/{name}.{short}.json")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    key: String,
    upload_id: String,
    started: i64,
}

struct PartWriter {
    handle: tokio::runtime::Handle,
    bucket: Bucket,
    path: ObjectPath,
    upload: String,
    buffer: Vec<u8>,
    index: usize,
    in_flight: VecDeque<JoinHandle<Result<PartId, object_store::Error>>>,
    done: Vec<PartId>,
    written: u64,
}

impl PartWriter {
    fn target(&self) -> usize {
        part_size(self.bucket.part_size, self.index) as usize
    }

    fn send_part(&mut self) -> std::io::Result<()> {
        let target = self.target();
        let next = Vec::with_capacity(target.min(64 << 20));
        let data = std::mem::replace(&mut self.buffer, next);
        let s3 = self.bucket.s3.clone();
        let (path, upload, index) = (self.path.clone(), self.upload.clone(), self.index);
        self.index += 1;
        let task = self
            .handle
            .spawn(async move { s3.put_part(&path, &upload, index, data.into()).await });
        self.in_flight.push_back(task);
        while self.in_flight.len() > IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> std::io::Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = self
                .handle
                .block_on(task)
                .map_err(std::io::Error::other)?
                .map_err(|e| std::io::Error::other(self.bucket.error(self.path.as_ref(), e)))?;
            self.done.push(part);
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<(Vec<PartId>, u64)> {
        if !self.buffer.is_empty() || self.index == 0 {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok((std::mem::take(&mut self.done), self.written))
    }
}

impl Drop for PartWriter {
    /// A writer given up on (an error) stops its part uploads, so the
    /// abort that follows is not raced by parts still arriving.
    fn drop(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.target() - self.buffer.len();
        let take = room.min(data.len());
        self.buffer.extend_from_slice(&data[..take]);
        self.written += take as u64;
        if self.buffer.len() >= self.target() {
            self.send_part()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write `key` in `bucket` through `write`, visible only when complete.
/// On any error the upload is aborted and the key is left as it was.
/// Returns the bytes written. Must run on a multi-threaded runtime.
pub async fn write_atomically(
    bucket: &Bucket,
    key: &str,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let path = ObjectPath::from(key);
    let url = bucket.url(key);
    let upload = bucket
        .s3
        .create_multipart(&path)
        .await
        .map_err(|e| bucket.error(key, e))?;
    let marker = marker_key(key, &upload);
    let body = serde_json::to_vec(&Marker {
        key: key.to_owned(),
        upload_id: upload.clone(),
        started: crate::types::time::now_unix(),
    })?;
    let result = async {
        bucket
            .put_small(&marker, body, super::conditional::Write::Overwrite)
            .await?;
        let handle = tokio::runtime::Handle::current();
        let (parts, written) = tokio::task::block_in_place(|| {
            let mut writer = PartWriter {
                handle,
                bucket: bucket.clone(),
                path: path.clone(),
                upload: upload.clone(),
                buffer: Vec::new(),
                index: 0,
                in_flight: VecDeque::new(),
                done: Vec::new(),
                written: 0,
            };
            write(&mut writer)?;
            Ok::<_, anyhow::Error>(writer.finish()?)
        })?;
        bucket
            .s3
            .complete_multipart(&path, &upload, parts)
            .await
            .map_err(|e| bucket.error(key, e))?;
        // The object must now be whole: its size is what went out.
        match bucket.head(key).await? {
            Some(info) if info.size == written => Ok(written),
            Some(info) => Err(anyhow::anyhow!(
                "{url}: the completed upload holds {} bytes, {written} were written; delete it and run again",
                info.size
            )),
            None => Err(anyhow::anyhow!("{url}: the completed upload is not there")),
        }
    }
    .await;
    if result.is_err() {
        let _ = bucket.s3.abort_multipart(&path, &upload).await;
    }
    let _ = bucket.delete(&marker).await;
    result
}

/// Abort uploads that an earlier process started under `dir` (a key
/// prefix ending in `/`, or empty) and never finished: those whose key
/// `owned` accepts and, when `older_than` is given, that started before it.
/// Returns the keys whose uploads were aborted.
pub async fn sweep(
    bucket: &Bucket,
    dir: &str,
    owned: impl Fn(&str) -> bool,
    older_than: Option<i64>,
) -> Result<Vec<String>, ObjectError> {
    let mut swept = Vec::new();
    for listed in bucket.list(&format!("{dir}.ferry-uploads/")).await? {
        let Some((bytes, _)) = bucket.get_small(&listed.key, 64 * 1024).await? else {
            continue;
        };
        let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else {
            continue;
        };
        if !owned(&marker.key) || older_than.is_some_and(|limit| marker.started >= limit) {
            continue;
        }
        // Already completed or aborted is fine: the marker just goes.
        let _ = bucket
            .s3
            .abort_multipart(&ObjectPath::from(marker.key.as_str()), &marker.upload_id)
            .await;
        bucket.delete(&listed.key).await?;
        swept.push(marker.key);
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_ten_thousand_hold_terabytes() {
        let first = 16 << 20;
        assert_eq!(part_size(first, 0), first);
        assert_eq!(part_size(first, 999), first);
        assert_eq!(part_size(first, 1000), 2 * first);
        let total: u64 = (0..10_000).map(|i| part_size(first, i)).sum();
        assert!(total > 10 << 40, "10 000 parts hold only {total} bytes");
        assert!((0..10_000).all(|i| part_size(first, i) <= MAX_PART));
    }

    #[test]
    fn markers_sit_beside_the_key() {
        let marker = marker_key("backups/app-2026.tar", "upload-1");
        assert!(marker.starts_with("backups/.ferry-uploads/app-2026.tar."));
        assert!(marker_key("top.tar", "u").starts_with(".ferry-uploads/top.tar."));
    }
}
