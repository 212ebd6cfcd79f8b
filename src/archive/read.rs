//! Reading an archive in one streaming pass: outer compression recognised
//! by magic bytes (with a guard against decompression bombs), every entry
//! name cleaned, metadata files buffered under size caps, and every other
//! regular file staged under its computed digest. Nothing is extracted by
//! name; links are followed only inside the archive.

use super::diff_ids::DiffIds;
use super::names::{clean, resolve_link};
use super::{ArchiveError, Compression};
use crate::types::staging::{StageError, StagedBlob, Staging};
use crate::types::Digest;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest metadata file (manifest.json, index.json, configs) read into memory.
pub(super) const MAX_METADATA: u64 = crate::types::manifest::MAX_CONFIG_BYTES;
/// Largest total of buffered metadata.
pub(super) const MAX_METADATA_TOTAL: u64 = 64 * 1024 * 1024;
/// A compressed stream may expand at most this many times (plus slack).
pub(super) const MAX_RATIO: u64 = 200;
pub(super) const RATIO_SLACK: u64 = 64 * 1024 * 1024;

pub(super) enum Item {
    Buffered(Vec<u8>),
    Staged(usize),
    Link(String),
}

pub(super) struct Contents {
    pub(super) archive: String,
    pub(super) files: HashMap<String, Item>,
    pub(super) staged: Vec<StagedBlob>,
    pub(super) by_digest: HashMap<Digest, usize>,
}

impl Contents {
    pub(super) fn invalid(&self, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Invalid {
            archive: self.archive.clone(),
            message: message.into(),
        }
    }

    /// Find an entry, following at most one link inside the archive.
    pub(super) fn resolve(&self, name: &str) -> Result<&Item, ArchiveError> {
        let name =
            clean(name.as_bytes()).map_err(|why| self.invalid(format!("refers to {why}")))?;
        match self.files.get(&name) {
            Some(Item::Link(target)) => match self.files.get(target) {
                Some(Item::Link(_)) => Err(self.invalid(format!("{name} is a link to a link"))),
                Some(item) => Ok(item),
                None => Err(self.invalid(format!(
                    "{name} links to {target}, which is not in the archive"
                ))),
            },
            Some(item) => Ok(item),
            None => Err(self.invalid(format!("{name} is referenced but not in the archive"))),
        }
    }

    pub(super) fn read_staged(&self, index: usize, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let staged = &self.staged[index];
        if staged.size > limit {
            return Err(self.invalid(format!(
                "{} is {} bytes, over the {limit}-byte metadata limit",
                staged.digest, staged.size
            )));
        }
        let mut bytes = Vec::with_capacity(staged.size as usize);
        staged
            .open()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|source| ArchiveError::Io {
                archive: self.archive.clone(),
                source,
            })?;
        // A blob read in place only claimed its digest by name: check it now.
        if !staged.verified {
            if let Err(error) = crate::types::Verifier::check(&staged.digest, &bytes) {
                return Err(self.invalid(format!(
                    "blobs/sha256/{} does not match its name: {error}",
                    staged.digest.hex()
                )));
            }
        }
        Ok(bytes)
    }

    pub(super) fn bytes(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        match self.resolve(name)? {
            Item::Buffered(bytes) => Ok(bytes.clone()),
            Item::Staged(index) => self.read_staged(*index, MAX_METADATA),
            Item::Link(_) => unreachable!("resolve follows links"),
        }
    }
}

fn is_metadata(name: &str) -> bool {
    if name.starts_with("blobs/") {
        return false;
    }
    let file = name.rsplit('/').next().unwrap_or(name);
    matches!(
        file,
        "manifest.json" | "index.json" | "oci-layout" | "repositories" | "json" | "VERSION"
    ) || (file.ends_with(".json") && !name.contains('/'))
}

/// Counts compressed bytes so the decompressed side can enforce a ratio.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.count.fetch_add(amount as u64, Ordering::Relaxed);
        self.inner.consume(amount);
    }
}

struct RatioGuard<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    expanded: u64,
}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.expanded += read as u64;
        let allowed = self
            .compressed
            .load(Ordering::Relaxed)
            .saturating_mul(MAX_RATIO)
            + RATIO_SLACK;
        if self.expanded > allowed {
            return Err(std::io::Error::other(
                "the archive expands more than 200× (a decompression bomb?)",
            ));
        }
        Ok(read)
    }
}

/// Read the archive in one pass, staging regular files.
/// A file of an archive read in place: a blob named by digest is taken at
/// its word (checked when read); anything else is hashed where it lies.
fn in_place<R: Read>(
    path: &std::path::Path,
    name: &str,
    entry: &mut tar::Entry<'_, R>,
    declared: u64,
) -> Result<StagedBlob, StageError> {
    let offset = entry.raw_file_position();
    let claimed = name
        .strip_prefix("blobs/sha256/")
        .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
    if let Some(digest) = claimed {
        return Ok(StagedBlob::in_file(
            path.to_owned(),
            offset,
            declared,
            digest,
            false,
        ));
    }
    let mut hasher = crate::types::Hasher::new(crate::types::digest::Algorithm::Sha256);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = match entry.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StageError::Read(e)),
        };
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok(StagedBlob::in_file(
        path.to_owned(),
        offset,
        size,
        hasher.finish(),
        true,
    ))
}

/// Read an archive file in place when it is an uncompressed tar: metadata
/// is buffered, a `blobs/sha256/<hex>` entry is recorded by its byte range
/// and the digest its name claims (checked by whoever reads it), and other
/// files are hashed where they lie. Nothing is copied. `None`: the file is
/// compressed, so it must be read as a stream ([`read_entries`]).
pub(super) fn index_entries(
    store: &dyn Staging,
    path: &std::path::Path,
    archive: &str,
    diff_ids: &DiffIds,
) -> Result<Option<Contents>, ArchiveError> {
    let io = |source: std::io::Error| ArchiveError::Io {
        archive: archive.to_owned(),
        source,
    };
    let mut reader =
        std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path).map_err(io)?);
    if Compression::detect(reader.fill_buf().map_err(io)?) != Compression::None {
        return Ok(None);
    }
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| invalid(archive, format!("not a tar archive: {e}")))?;
    let place = Placement::InPlace(path.to_owned());
    collect(store, entries, archive, diff_ids, &place).map(Some)
}

fn invalid(archive: &str, message: String) -> ArchiveError {
    ArchiveError::Invalid {
        archive: archive.to_owned(),
        message,
    }
}

/// Where the bytes of non-metadata files go while the archive is read.
enum Placement {
    /// Copied and hashed into the store's staging area.
    Staged,
    /// Left in this archive file, recorded by range.
    InPlace(std::path::PathBuf),
}

/// An archive's bytes as a tar stream: decompressed when they are gzip or
/// zstd, with the expansion bounded (the one way every reader opens an
/// archive stream).
pub(super) fn tar_stream<'a>(
    input: &'a mut dyn Read,
    archive: &str,
) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let io = |source: std::io::Error| ArchiveError::Io {
        archive: archive.to_owned(),
        source,
    };
    let mut buffered = std::io::BufReader::with_capacity(1 << 20, input);
    let head = buffered.fill_buf().map_err(io)?.to_vec();
    let compression = Compression::detect(&head);
    if compression == Compression::None {
        return Ok(Box::new(buffered));
    }
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counting {
        inner: buffered,
        count: count.clone(),
    };
    let decoder = compression.decoder(counted).map_err(io)?;
    Ok(Box::new(RatioGuard {
        inner: decoder,
        compressed: count,
        expanded: 0,
    }))
}

/// Read an archive from a stream (any compression), staging every
/// non-metadata file under its computed digest.
pub(super) fn read_entries(
    store: &dyn Staging,
    input: &mut dyn Read,
    archive: &str,
    diff_ids: &DiffIds,
) -> Result<Contents, ArchiveError> {
    let reader = tar_stream(input, archive)?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| invalid(archive, format!("not a tar archive: {e}")))?;
    collect(store, entries, archive, diff_ids, &Placement::Staged)
}

/// Take the archive's entries one by one: names cleaned, metadata
/// buffered under caps, other files placed as `place` says.
fn collect<R: Read>(
    store: &dyn Staging,
    entries: tar::Entries<'_, R>,
    archive: &str,
    diff_ids: &DiffIds,
    place: &Placement,
) -> Result<Contents, ArchiveError> {
    let mut contents = Contents {
        archive: archive.to_owned(),
        files: HashMap::new(),
        staged: Vec::new(),
        by_digest: HashMap::new(),
    };
    let mut metadata_total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            let e = e.to_string().escape_debug().to_string();
            contents.invalid(format!("broken tar entry (truncated?): {e}"))
        })?;
        let raw = entry.path_bytes().into_owned();
        let name = clean(&raw).map_err(|why| contents.invalid(format!("holds {why}")))?;
        // No format ferry reads names a member with control characters;
        // and every message names the entry, so none reaches a terminal.
        if name.chars().any(char::is_control) {
            return Err(contents.invalid(format!("holds the name {name:?} (control characters)")));
        }
        if name.is_empty() {
            continue;
        }
        if contents.files.contains_key(&name) {
            return Err(contents.invalid(format!("holds {name} twice")));
        }
        let kind = entry.header().entry_type();
        let item = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let header_size = entry
                    .header()
                    .size()
                    .map_err(|e| contents.invalid(format!("{name}: bad size: {e}")))?;
                // The size tar reads by (a PAX `size` overrides the header).
                // Two sizes that disagree are how parser-differential attacks
                // smuggle entries (CVE-2025-62518): refuse them. A header size
                // of 0 beside a PAX size is the normal form for huge files.
                let declared = entry.size();
                if header_size != declared && header_size != 0 {
                    return Err(contents.invalid(format!(
                        "{name}: its PAX size ({declared}) and header size ({header_size}) disagree"
                    )));
                }
                if is_metadata(&name) {
                    if declared > MAX_METADATA {
                        return Err(contents.invalid(format!(
                            "{name} is {declared} bytes, over the {MAX_METADATA}-byte limit"
                        )));
                    }
                    metadata_total += declared;
                    if metadata_total > MAX_METADATA_TOTAL {
                        return Err(contents.invalid("holds too much metadata"));
                    }
                    let mut bytes = Vec::with_capacity(declared as usize);
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(|e| contents.invalid(format!("{name}: {e} (truncated?)")))?;
                    Item::Buffered(bytes)
                } else {
                    let staged = match place {
                        Placement::Staged => store.stage(&mut entry, declared),
                        Placement::InPlace(path) => in_place(path, &name, &mut entry, declared),
                    };
                    let staged = staged.map_err(|e| match e {
                        StageError::Write(e) => ArchiveError::Staging(StageError::Write(e)),
                        other => contents.invalid(format!("{name}: {other} (truncated?)")),
                    })?;
                    if staged.size != declared {
                        return Err(contents.invalid(format!(
                            "{name}: {} of {declared} bytes (truncated)",
                            staged.size
                        )));
                    }
                    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                        if hex != staged.digest.hex() {
                            return Err(contents.invalid(format!(
                                "{name} does not match its name: its content hashes to {}",
                                staged.digest
                            )));
                        }
                    }
                    let index = contents.staged.len();
                    contents
                        .by_digest
                        .entry(staged.digest.clone())
                        .or_insert(index);
                    diff_ids.offer(&staged);
                    contents.staged.push(staged);
                    Item::Staged(index)
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = super::names::link_target(&entry);
                // Hard link names are relative to the archive root, symlinks to their directory.
                let resolved = if kind == tar::EntryType::Link {
                    clean(target.as_bytes()).ok()
                } else {
                    resolve_link(&name, &target)
                };
                let resolved = resolved.ok_or_else(|| {
                    contents.invalid(format!("{name} links outside the archive ({target})"))
                })?;
                Item::Link(resolved)
            }
            _ => continue, // directories, devices and FIFOs carry no image data
        };
        contents.files.insert(name, item);
    }
    Ok(contents)
}
