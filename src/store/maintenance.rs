//! Store maintenance with docker's semantics: `rmi` (untag; delete the
//! image with its last name; shared layers stay), `prune` (dangling images,
//! or all with `-a`, filtered by ferry's first-seen time), `gc` (blobs no
//! image references, and abandoned ingests), `verify`, and the numbers
//! behind `df`. Blob deletion always holds the exclusive gc lock, so a
//! running pull's untagged blobs are never taken from under it.

use super::index::{read_index, IndexEntry};
use super::meta::read_metadata;
use super::{Store, StoreError};
use crate::types::{Digest, Reference};
use std::collections::{BTreeMap, BTreeSet};

/// What `rmi` did for one argument, in docker's words.
#[derive(Debug, Clone, serde::Serialize)]
pub enum Removal {
    Untagged(String),
    Deleted(Digest),
}

/// A pruned image and the bytes it freed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrunedImage {
    pub name: Option<String>,
    pub digest: Digest,
    /// The image ID `images` shows (its config digest), when it has one.
    pub id: Option<Digest>,
    pub reclaimed: u64,
}

/// What `gc` removed (or would remove).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub blobs: Vec<(Digest, u64)>,
    pub ingest_files: usize,
    /// Unreferenced blobs kept because a writer committed them and its
    /// manifest may still come (their protection has not expired).
    pub protected: usize,
}

/// What `verify` found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub images: usize,
    /// Referrers (signatures, attestations, SBOMs) checked with their images.
    pub referrers: usize,
    pub blobs: usize,
    pub bytes_read: u64,
    pub unreferenced: usize,
    pub problems: Vec<String>,
}

/// Numbers for `df`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DiskUsage {
    pub images: usize,
    pub dangling: usize,
    pub total_bytes: u64,
    pub reclaimable_bytes: u64,
    pub unreferenced_bytes: u64,
    pub per_image: Vec<ImageUsage>,
}

/// One image's share of the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageUsage {
    pub name: Option<String>,
    pub digest: Digest,
    pub size: u64,
    pub shared: u64,
    pub unique: u64,
}

impl Store {
    /// The blob set every index entry references.
    fn referenced(&self, entries: &[IndexEntry]) -> Result<BTreeMap<Digest, u64>, StoreError> {
        let mut all = BTreeMap::new();
        for entry in entries {
            all.extend(self.reachable(&entry.digest, &entry.media_type)?);
        }
        Ok(all)
    }

    /// Drop referrer entries whose subject no image reaches any more
    /// (directly, or through another kept referrer), so `rmi`, `prune` and
    /// `gc` never leave a signature behind its image. Returns the dropped
    /// entries. A graph that cannot be read drops nothing.
    fn drop_orphan_referrers(
        &self,
        entries: &mut Vec<IndexEntry>,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let mut live: BTreeSet<Digest> = BTreeSet::new();
        for entry in entries.iter().filter(|e| !e.is_referrer()) {
            match self.reachable(&entry.digest, &entry.media_type) {
                Ok(blobs) => live.extend(blobs.into_keys()),
                Err(_) => return Ok(Vec::new()),
            }
        }
        let Ok(kept) = self.referrers_reached(entries, &mut live) else {
            return Ok(Vec::new());
        };
        let orphans: Vec<usize> = (0..entries.len())
            .filter(|i| entries[*i].is_referrer() && !kept.contains(i))
            .collect();
        let mut dropped = Vec::new();
        for i in orphans.into_iter().rev() {
            dropped.push(entries.remove(i));
        }
        Ok(dropped)
    }

    /// How many blob files the store holds, and their bytes (for metrics).
    pub fn blob_totals(&self) -> Result<(u64, u64), StoreError> {
        let blobs = self.stored_blobs()?;
        Ok((blobs.len() as u64, blobs.iter().map(|(_, s)| s).sum()))
    }

    /// Every blob file in the store with its size.
    fn stored_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut blobs = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            let dir = self.root().join("blobs").join(algorithm);
            let listing = match std::fs::read_dir(&dir) {
                Ok(listing) => listing,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            for item in listing {
                let item = item.map_err(|e| StoreError::io(&dir, e))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if let Ok(digest) = format!("{algorithm}:{name}").parse::<Digest>() {
                    let size = item.metadata().map(|m| m.len()).unwrap_or(0);
                    blobs.push((digest, size));
                }
            }
        }
        Ok(blobs)
    }

    /// Delete blobs no index entry references. Holds the exclusive gc lock.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let _gc = self.lock_gc()?;
        let entries = match dry_run {
            true => {
                let mut entries = read_index(self)?;
                self.drop_orphan_referrers(&mut entries)?;
                entries
            }
            false => self.update_index(|entries, _| {
                self.drop_orphan_referrers(entries)?;
                Ok(entries.clone())
            })?,
        };
        let referenced = self.referenced(&entries)?;
        let protected = self.protected(dry_run)?;
        let mut report = GcReport::default();
        for (digest, size) in self.stored_blobs()? {
            if referenced.contains_key(&digest) {
                continue;
            }
            if protected.contains(&digest) {
                report.protected += 1;
                continue;
            }
            if !dry_run {
                let path = self.blob_path(&digest);
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
            report.blobs.push((digest, size));
        }
        // Temp files of atomic rewrites (index.json, metadata) a killed
        // process left: `.<name>.<pid>.<n>.partial` of a dead pid.
        for dir in [self.root().to_path_buf(), self.root().join("ferry")] {
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            for item in listing.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                if rewrite_abandoned(&name) {
                    report.ingest_files += 1;
                    if !dry_run {
                        let _ = std::fs::remove_file(item.path());
                    }
                }
            }
        }
        // Writers run beside a gc: an ingest file is abandoned when nobody
        // holds its lock and no live process on this machine owns it (or it
        // is older than a day).
        let ingest = self.root().join("ingest");
        if let Ok(listing) = std::fs::read_dir(&ingest) {
            for item in listing.flatten() {
                if !ingest_abandoned(&item) {
                    continue;
                }
                report.ingest_files += 1;
                if !dry_run {
                    let _ = std::fs::remove_file(item.path());
                }
            }
        }
        Ok(report)
    }

    /// Remove images like `docker rmi`. A name untags; an image ID removes
    /// the image, and needs `force` when several names share it.
    pub fn rmi(&self, targets: &[String], force: bool) -> Result<Vec<Removal>, StoreError> {
        let _gc = self.lock_gc()?;
        let mut removals = Vec::new();
        let now = crate::types::time::now_unix();
        for target in targets {
            let image = self.resolve(target)?;
            let id = self.image_id(&image);
            let by_name = Reference::parse(target)
                .ok()
                .filter(|r| image.entry.name().as_ref() == Some(r));
            let removed: (Vec<IndexEntry>, Vec<IndexEntry>) = self.update_index(|entries, metadata| {
                let mut removed = Vec::new();
                let doomed: Vec<usize> = match &by_name {
                    Some(name) => entries.iter().position(|e| e.name().as_ref() == Some(name)).into_iter().collect(),
                    None => {
                        let same_id: Vec<usize> = entries
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| !e.is_referrer())
                            .filter(|(_, e)| e.digest == image.entry.digest || self.entry_id(e).as_ref() == Some(&id))
                            .map(|(i, _)| i)
                            .collect();
                        let names = same_id.iter().filter(|&&i| entries[i].name().is_some()).count();
                        if names > 1 && !force {
                            return Err(StoreError::Conflict(format!(
                                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories; use -f, or remove each name",
                                id.short()
                            )));
                        }
                        same_id
                    }
                };
                for index in doomed.into_iter().rev() {
                    let entry = entries.remove(index);
                    if let Some(name) = entry.name() {
                        metadata.record_untag(&name, &entry.digest, now);
                    }
                    removed.push(entry);
                }
                let orphans = self.drop_orphan_referrers(entries)?;
                let remaining: BTreeSet<Digest> = entries.iter().map(|e| e.digest.clone()).collect();
                metadata.retain_images(|d| remaining.contains(d));
                Ok((removed, orphans))
            })?;
            let (removed, orphans) = removed;
            let remaining: BTreeSet<Digest> =
                read_index(self)?.into_iter().map(|e| e.digest).collect();
            for entry in &removed {
                if let Some(name) = entry.name() {
                    removals.push(Removal::Untagged(name.to_string()));
                }
            }
            let gone: BTreeSet<Digest> = removed
                .iter()
                .map(|e| e.digest.clone())
                .filter(|d| !remaining.contains(d))
                .collect();
            if !gone.is_empty() {
                removals.push(Removal::Deleted(id.clone()));
                for entry in removed.iter().filter(|e| gone.contains(&e.digest)) {
                    self.delete_unreferenced(entry)?;
                }
            }
            // The image's signatures, attestations and SBOMs go with it.
            for entry in &orphans {
                self.delete_unreferenced(entry)?;
            }
        }
        Ok(removals)
    }

    fn entry_id(&self, entry: &IndexEntry) -> Option<Digest> {
        self.load_image(entry)
            .ok()
            .map(|image| self.image_id(&image))
    }

    /// Delete the blobs of a removed entry that nothing else references.
    /// Callers hold the gc lock.
    fn delete_unreferenced(&self, removed: &IndexEntry) -> Result<u64, StoreError> {
        let candidates = self
            .reachable(&removed.digest, &removed.media_type)
            .unwrap_or_default();
        let still_used = self.referenced(&read_index(self)?)?;
        // Blobs a running pull or push committed for its own manifest stay.
        let protected = self.protected(true)?;
        let mut freed = 0;
        for (digest, size) in candidates {
            if still_used.contains_key(&digest) || protected.contains(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            match std::fs::remove_file(&path) {
                Ok(()) => freed += size,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(freed)
    }

    /// Remove dangling images (or all with `all`), optionally only those
    /// ferry first saw more than `until` seconds ago.
    pub fn prune(
        &self,
        all: bool,
        until: Option<u64>,
        dry_run: bool,
    ) -> Result<Vec<PrunedImage>, StoreError> {
        let _gc = self.lock_gc()?;
        let now = crate::types::time::now_unix();
        let metadata = read_metadata(self)?;
        let selected = |entry: &IndexEntry| {
            let kind_ok = !entry.is_referrer() && (all || entry.is_dangling());
            let age_ok = until.is_none_or(|limit| {
                let first_seen = metadata
                    .images
                    .get(&entry.digest)
                    .map_or(0, |t| t.first_seen);
                now - first_seen >= limit as i64
            });
            kind_ok && age_ok
        };
        let entries = read_index(self)?;
        let doomed: Vec<IndexEntry> = entries.iter().filter(|e| selected(e)).cloned().collect();
        let mut pruned = Vec::new();
        if dry_run {
            let kept: Vec<IndexEntry> = entries.iter().filter(|e| !selected(e)).cloned().collect();
            let still_used = self.referenced(&kept)?;
            let mut counted = BTreeSet::new();
            for entry in doomed {
                let blobs = self.reachable(&entry.digest, &entry.media_type)?;
                let reclaimed = blobs
                    .iter()
                    .filter(|(d, _)| !still_used.contains_key(*d) && counted.insert((*d).clone()))
                    .map(|(_, s)| s)
                    .sum();
                pruned.push(PrunedImage {
                    name: entry.name().map(|n| n.to_string()),
                    id: self.entry_id(&entry),
                    digest: entry.digest,
                    reclaimed,
                });
            }
            return Ok(pruned);
        }
        let ids: Vec<Option<Digest>> = doomed.iter().map(|e| self.entry_id(e)).collect();
        let orphans = self.update_index(|entries, metadata| {
            entries.retain(|e| !selected(e));
            let orphans = self.drop_orphan_referrers(entries)?;
            for entry in &doomed {
                if let Some(name) = entry.name() {
                    metadata.record_untag(&name, &entry.digest, now);
                }
            }
            let remaining: BTreeSet<Digest> = entries.iter().map(|e| e.digest.clone()).collect();
            metadata.retain_images(|d| remaining.contains(d));
            Ok(orphans)
        })?;
        for entry in &orphans {
            self.delete_unreferenced(entry)?;
        }
        for (entry, id) in doomed.into_iter().zip(ids) {
            let reclaimed = self.delete_unreferenced(&entry)?;
            pruned.push(PrunedImage {
                name: entry.name().map(|n| n.to_string()),
                digest: entry.digest,
                id,
                reclaimed,
            });
        }
        Ok(pruned)
    }

    /// Check the store: every image's graph present and well-formed, every
    /// blob the size its image says and, with `read_data`, hashing to its name.
    pub fn verify(&self, read_data: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let entries = match read_index(self) {
            Ok(entries) => entries,
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
        let mut expected: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut users: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for entry in &entries {
            let label = match (entry.name(), entry.link()) {
                (Some(name), _) => name.to_string(),
                (None, Some(link)) => {
                    report.referrers += 1;
                    format!("referrer {} of {}", entry.digest, link.subject)
                }
                (None, None) => {
                    report.images += 1;
                    entry.digest.to_string()
                }
            };
            if entry.name().is_some() {
                report.images += 1;
            }
            match self.reachable(&entry.digest, &entry.media_type) {
                Ok(blobs) => {
                    for (digest, size) in blobs {
                        match self.blob_size(&digest) {
                            None => report.problems.push(format!("{label}: blob {digest} is missing")),
                            Some(actual) if actual != size => report
                                .problems
                                .push(format!("{label}: blob {digest} is {actual} bytes, its manifest says {size}")),
                            Some(_) => {}
                        }
                        users.entry(digest.clone()).or_default().push(label.clone());
                        expected.insert(digest, size);
                    }
                }
                Err(e) => report.problems.push(format!("{label}: {e}")),
            }
        }
        for (digest, _) in self.stored_blobs()? {
            report.blobs += 1;
            if !expected.contains_key(&digest) {
                report.unreferenced += 1;
            }
            if read_data {
                match hash_file(&self.blob_path(&digest), &digest) {
                    Ok((actual, bytes)) => {
                        report.bytes_read += bytes;
                        if actual != digest {
                            let repair = match users.get(&digest) {
                                Some(names) => format!(
                                    "used by {}; pull or load one of them again to replace it (ferry re-checks a blob it finds), or rmi them",
                                    names.join(", ")
                                ),
                                None => "no image uses it; ferry gc removes it".to_owned(),
                            };
                            report.problems.push(format!(
                                "blob {digest} ({}) is corrupt: its content hashes to {actual}; {repair}",
                                self.blob_path(&digest).display()
                            ));
                        }
                    }
                    Err(e) => report.problems.push(format!("blob {digest}: {e}")),
                }
            }
        }
        Ok(report)
    }

    /// Disk usage with docker's shared/unique split.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let entries = read_index(self)?;
        let mut usage = DiskUsage::default();
        let mut per_entry = Vec::new();
        let mut users: BTreeMap<Digest, BTreeSet<Digest>> = BTreeMap::new();
        for entry in &entries {
            let blobs = self.reachable(&entry.digest, &entry.media_type)?;
            for digest in blobs.keys() {
                users
                    .entry(digest.clone())
                    .or_default()
                    .insert(entry.digest.clone());
            }
            // A referrer's bytes count as used; it is not an image of its own.
            if !entry.is_referrer() {
                per_entry.push((entry, blobs));
            }
        }
        let mut dangling_unique = 0;
        for (entry, blobs) in &per_entry {
            let size: u64 = blobs.values().sum();
            let unique: u64 = blobs
                .iter()
                .filter(|(d, _)| users[*d].len() == 1)
                .map(|(_, s)| s)
                .sum();
            if entry.is_dangling() {
                usage.dangling += 1;
                dangling_unique += unique;
            }
            usage.per_image.push(ImageUsage {
                name: entry.name().map(|n| n.to_string()),
                digest: entry.digest.clone(),
                size,
                shared: size - unique,
                unique,
            });
        }
        let stored = self.stored_blobs()?;
        usage.images = per_entry.len();
        usage.total_bytes = stored.iter().map(|(_, s)| s).sum();
        usage.unreferenced_bytes = stored
            .iter()
            .filter(|(d, _)| !users.contains_key(d))
            .map(|(_, s)| s)
            .sum();
        usage.reclaimable_bytes = usage.unreferenced_bytes + dangling_unique;
        Ok(usage)
    }
}

/// Hash a file, streaming.
pub(super) fn hash_file(path: &std::path::Path, digest: &Digest) -> std::io::Result<(Digest, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = digest.hasher();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total = 0;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok((hasher.finish(), total));
        }
        total += read as u64;
        hasher.update(&buffer[..read]);
    }
}

/// Whether an ingest file is nobody's any more (see `gc`).
fn ingest_abandoned(item: &std::fs::DirEntry) -> bool {
    let Ok(file) = std::fs::File::open(item.path()) else {
        return false;
    };
    match file.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => return false,
        Err(std::fs::TryLockError::Error(_)) => return false,
        Ok(()) => {}
    }
    let old = item
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
    old || !super::protect::owner_alive(&item.file_name().to_string_lossy())
}

/// Whether `.<name>.<pid>.<n>.partial` (an atomic rewrite's temp file)
/// belongs to a process that is gone.
fn rewrite_abandoned(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".partial"))
    else {
        return false;
    };
    let mut parts = rest.rsplit('.');
    let (Some(_), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    pid.parse::<u32>().is_ok() && !super::protect::owner_alive(&format!("rewrite-{pid}-0.partial"))
}
