//! Where an archive lives: a file (written beside and renamed into place),
//! standard input or output, or an object in a bucket (`s3://BUCKET/KEY`,
//! written as a multipart upload that appears only when complete, read in
//! ranges pinned to its ETag). Every archive command and backup job goes
//! through here, so each place behaves the same for all of them.

use super::ArchiveError;
use crate::objects::read::ObjectReader;
use crate::objects::{upload, ObjectUrl, Objects};
use crate::types::interrupt::Interruptible;
use std::io::Write;
use std::path::PathBuf;

/// An archive's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Standard input or output (`-`).
    Stdio,
    File(PathBuf),
    Object(ObjectUrl),
}

impl Location {
    /// Read `-`, `s3://BUCKET/KEY` or a path.
    pub fn parse(text: &str) -> Result<Location, String> {
        if text == "-" || text.is_empty() {
            Ok(Location::Stdio)
        } else if ObjectUrl::is_object(text) {
            let url = ObjectUrl::parse(text)?;
            if url.key.is_empty() {
                return Err(format!(
                    "{text}: name the archive's key, e.g. s3://{}/backup.tar",
                    url.bucket
                ));
            }
            Ok(Location::Object(url))
        } else {
            Ok(Location::File(PathBuf::from(text)))
        }
    }

    /// The same, from a path argument.
    pub fn from_path(path: &std::path::Path) -> Result<Location, String> {
        match path.to_str() {
            Some(text) => Location::parse(text),
            None => Ok(Location::File(path.to_owned())),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Stdio => f.write_str("standard input/output"),
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Object(url) => write!(f, "{url}"),
        }
    }
}

/// Write an archive to a file or an object so that it appears only
/// complete (`Stdio` is the caller's: it has no atomic form).
pub async fn write_atomically(
    location: &Location,
    objects: &Objects,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match location {
        Location::Stdio => Err(anyhow::anyhow!("standard output has no atomic write")),
        // A stop asked for mid-write abandons the archive (it appears
        // complete or not at all): the writer fails at its next write.
        Location::File(path) => tokio::task::block_in_place(|| {
            super::write_file_atomically(path, |file| write(&mut Interruptible(file)))
        }),
        Location::Object(url) => {
            let bucket = objects.bucket(url)?;
            upload::write_atomically(&bucket, &url.key, |out| write(&mut Interruptible(out)))
                .await
                .map(|_| ())
                .map_err(|e| e.context(format!("cannot write {url}; nothing was left there")))
        }
    }
}

/// Abort the uploads an earlier process left unfinished beside `url`:
/// those to keys `owned` accepts, started before `older_than` when given
/// (see [`upload::sweep`]). Returns a line for each, to report.
pub async fn sweep_unfinished(
    objects: &Objects,
    url: &ObjectUrl,
    owned: impl Fn(&str) -> bool,
    older_than: Option<i64>,
) -> anyhow::Result<Vec<String>> {
    let bucket = objects.bucket(url)?;
    let swept = upload::sweep(&bucket, url.parent_prefix(), owned, older_than).await?;
    Ok(swept
        .into_iter()
        .map(|key| format!("aborted an unfinished upload of {}", url.with_key(key)))
        .collect())
}

/// Upload markers this old are stale for any writer of the same key (a
/// writer that owns the place, a backup job, sweeps sooner).
pub const STALE_UPLOAD: i64 = 3600;

/// Open an archive object for reading (call the reader from
/// `block_in_place`).
pub async fn open_object(objects: &Objects, url: &ObjectUrl) -> Result<ObjectReader, ArchiveError> {
    let bucket = objects.bucket(url)?;
    Ok(ObjectReader::open(&bucket, &url.key).await?)
}

/// The blobs an archive file or object holds (what a delta against it
/// leaves out). Standard input has none to offer.
pub async fn archive_blobs(
    objects: &Objects,
    location: &Location,
) -> Result<std::collections::BTreeSet<crate::types::Digest>, ArchiveError> {
    match location {
        Location::File(path) => super::listing::archive_blobs(path),
        Location::Object(url) => {
            let reader = open_object(objects, url).await?;
            tokio::task::block_in_place(|| {
                super::listing::archive_blobs_in(reader, &url.to_string())
            })
        }
        Location::Stdio => Err(ArchiveError::Usage(
            "a delta needs an archive file or object to compare with, not standard input".into(),
        )),
    }
}
