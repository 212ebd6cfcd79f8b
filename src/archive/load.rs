//! `ferry load`: reads ferry's own archives, `docker save` output (Docker
//! ≤ 24 `<id>/layer.tar`, Docker 25+ OCI layout inside), podman/skopeo
//! `docker-archive` and `oci-archive`, and crane tarballs, optionally
//! gzip/zstd/xz compressed as a whole. One streaming pass stages every
//! regular file under its computed digest; nothing is extracted by name.
//! Layer counts and diffIDs are checked against each config, and only when
//! every image verified are blobs committed and tags applied.

use super::names::{clean, resolve_link};
use super::{ArchiveError, Compression, LimitedReader};
use crate::store::index::IndexEntry;
use crate::store::staging::{StageError, StagedBlob};
use crate::store::Store;
use crate::types::manifest::descriptor_digest;
use crate::types::{media, Digest, ParsedManifest, Reference};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// Largest metadata file (manifest.json, index.json, configs) read into memory.
const MAX_METADATA: u64 = 16 * 1024 * 1024;
/// Largest total of buffered metadata.
const MAX_METADATA_TOTAL: u64 = 64 * 1024 * 1024;
/// A compressed stream may expand at most this many times (plus slack).
const MAX_RATIO: u64 = 200;
const RATIO_SLACK: u64 = 64 * 1024 * 1024;

/// One image an archive holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedImage {
    pub names: Vec<String>,
    pub digest: Digest,
    pub id: Digest,
    pub media_type: String,
    pub platforms: Vec<String>,
    pub size: u64,
}

enum Item {
    Buffered(Vec<u8>),
    Staged(usize),
    Link(String),
}

struct Contents {
    archive: String,
    files: HashMap<String, Item>,
    staged: Vec<StagedBlob>,
    by_digest: HashMap<Digest, usize>,
}

impl Contents {
    fn invalid(&self, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Invalid {
            archive: self.archive.clone(),
            message: message.into(),
        }
    }

    /// Find an entry, following at most one link inside the archive.
    fn resolve(&self, name: &str) -> Result<&Item, ArchiveError> {
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

    fn read_staged(&self, index: usize, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let staged = &self.staged[index];
        if staged.size > limit {
            return Err(self.invalid(format!(
                "{} is {} bytes, over the {limit}-byte metadata limit",
                staged.digest, staged.size
            )));
        }
        std::fs::read(staged.path()).map_err(|source| ArchiveError::Io {
            archive: self.archive.clone(),
            source,
        })
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        match self.resolve(name)? {
            Item::Buffered(bytes) => Ok(bytes.clone()),
            Item::Staged(index) => self.read_staged(*index, MAX_METADATA),
            Item::Link(_) => unreachable!("resolve follows links"),
        }
    }

    /// A blob's bytes by digest: from the archive, else from the store.
    fn blob_bytes(&self, store: &Store, digest: &Digest) -> Result<Option<Vec<u8>>, ArchiveError> {
        if let Some(&index) = self.by_digest.get(digest) {
            return self.read_staged(index, MAX_METADATA).map(Some);
        }
        match store.read_blob(digest, MAX_METADATA) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(crate::store::StoreError::MissingBlob(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn has_blob(&self, store: &Store, digest: &Digest) -> bool {
        self.by_digest.contains_key(digest) || store.blob_size(digest).is_some()
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
fn read_entries(
    store: &Store,
    input: &mut dyn Read,
    archive: &str,
    diff_ids: &DiffIds,
) -> Result<Contents, ArchiveError> {
    let io = |source: std::io::Error| ArchiveError::Io {
        archive: archive.to_owned(),
        source,
    };
    let mut buffered = std::io::BufReader::with_capacity(1 << 20, input);
    let head = buffered.fill_buf().map_err(io)?.to_vec();
    let compression = Compression::detect(&head);
    let count = Arc::new(AtomicU64::new(0));
    let reader: Box<dyn Read> = if compression == Compression::None {
        Box::new(buffered)
    } else {
        let counted = Counting {
            inner: buffered,
            count: count.clone(),
        };
        let decoder = compression.decoder(counted).map_err(io)?;
        Box::new(RatioGuard {
            inner: decoder,
            compressed: count,
            expanded: 0,
        })
    };
    let mut tar = tar::Archive::new(reader);
    let mut contents = Contents {
        archive: archive.to_owned(),
        files: HashMap::new(),
        staged: Vec::new(),
        by_digest: HashMap::new(),
    };
    let mut metadata_total = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| contents.invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| contents.invalid(format!("broken tar entry (truncated?): {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = clean(&raw).map_err(|why| contents.invalid(format!("holds {why}")))?;
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
                    let staged = store.stage(&mut entry, declared).map_err(|e| match e {
                        StageError::Store(e) => ArchiveError::Store(e),
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
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = String::from_utf8_lossy(&target).into_owned();
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

/// The diffID of a staged layer: its own digest when uncompressed, else
/// the digest of its decompressed bytes (capped against bombs).
fn diff_id(path: &std::path::Path, digest: &Digest, size: u64) -> std::io::Result<Digest> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let compression = Compression::detect(reader.fill_buf()?);
    if compression == Compression::None {
        return Ok(digest.clone());
    }
    let limit = size.saturating_mul(MAX_RATIO * 5) + RATIO_SLACK;
    let mut decoder = LimitedReader::new(compression.decoder(reader)?, limit, "a layer");
    let mut hasher = digest.hasher();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = decoder.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// diffIDs computed so far, by compressed digest.
type DiffResults = Arc<std::sync::Mutex<HashMap<Digest, Result<Digest, String>>>>;
/// Staged compressed layers waiting for their diffID.
type DiffQueue = Arc<std::sync::Mutex<mpsc::Receiver<(Digest, std::path::PathBuf, u64)>>>;

/// Take jobs from the queue until it is closed and empty.
fn diff_worker(queue: DiffQueue, results: DiffResults) {
    loop {
        let job = queue.lock().expect("queue lock").recv();
        let Ok((digest, path, size)) = job else {
            return;
        };
        let outcome = diff_id(&path, &digest, size).map_err(|e| e.to_string());
        results
            .lock()
            .expect("results lock")
            .insert(digest, outcome);
    }
}

/// Computes diffIDs on another core while the archive is still being read.
struct DiffIds {
    sender: Option<mpsc::Sender<(Digest, std::path::PathBuf, u64)>>,
    queue: DiffQueue,
    results: DiffResults,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl DiffIds {
    fn start() -> DiffIds {
        let (sender, receiver) = mpsc::channel();
        let queue: DiffQueue = Arc::new(std::sync::Mutex::new(receiver));
        let results: DiffResults = Arc::default();
        let worker = {
            let (queue, results) = (queue.clone(), results.clone());
            std::thread::spawn(move || diff_worker(queue, results))
        };
        DiffIds {
            sender: Some(sender),
            queue,
            results,
            worker: Some(worker),
        }
    }

    /// Queue a staged blob whose first bytes show compression.
    fn offer(&self, staged: &StagedBlob) {
        let mut head = [0u8; 8];
        let read = std::fs::File::open(staged.path())
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        if Compression::detect(&head[..read]) != Compression::None {
            if let Some(sender) = &self.sender {
                let _ = sender.send((staged.digest.clone(), staged.path().to_owned(), staged.size));
            }
        }
    }

    /// Close the queue, drain it with every core, and return the results.
    fn finish(mut self) -> HashMap<Digest, Result<Digest, String>> {
        self.sender = None;
        let helpers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_sub(1);
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                let (queue, results) = (self.queue.clone(), self.results.clone());
                scope.spawn(move || diff_worker(queue, results));
            }
        });
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        std::mem::take(&mut *self.results.lock().expect("results lock"))
    }
}

fn layer_media_type(staged: &StagedBlob) -> &'static str {
    let mut head = [0u8; 8];
    let read = std::fs::File::open(staged.path())
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match Compression::detect(&head[..read]) {
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// An image found in the archive, checked, waiting to be committed.
struct Found {
    names: Vec<Reference>,
    root: ParsedManifest,
    /// Manifests ferry built (docker-archive path) to stage at commit.
    built: Vec<ParsedManifest>,
    blobs: BTreeSet<Digest>,
    id: Digest,
    platforms: Vec<String>,
    size: u64,
}

/// Layers whose diffIDs must be checked: (staged index, expected diffID).
type DiffChecks = Vec<(usize, Digest, String)>;

struct Loader<'a> {
    store: &'a Store,
    contents: Contents,
    checks: DiffChecks,
    missing: BTreeSet<Digest>,
}

impl Loader<'_> {
    /// The config's diffIDs; `None` when the config is missing (recorded as such).
    fn config_of(
        &mut self,
        config: &Digest,
        what: &str,
    ) -> Result<Option<Vec<Digest>>, ArchiveError> {
        let bytes = match self.contents.blob_bytes(self.store, config)? {
            Some(bytes) => bytes,
            None => {
                self.missing.insert(config.clone());
                return Ok(None);
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.contents
                .invalid(format!("config of {what} is not JSON: {e}"))
        })?;
        let diff_ids = value
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                self.contents
                    .invalid(format!("config of {what} has no rootfs.diff_ids"))
            })?;
        let diff_ids = diff_ids
            .iter()
            .map(|d| {
                d.as_str().and_then(|d| d.parse().ok()).ok_or_else(|| {
                    self.contents
                        .invalid(format!("config of {what} has an invalid diff_id"))
                })
            })
            .collect::<Result<Vec<Digest>, _>>()?;
        Ok(Some(diff_ids))
    }

    /// Check an image manifest: config present, layer count equal to the
    /// diffID count, each layer present, diffIDs queued for checking.
    fn check_image(
        &mut self,
        manifest: &ParsedManifest,
        what: &str,
        blobs: &mut BTreeSet<Digest>,
    ) -> Result<(String, u64), ArchiveError> {
        let image = manifest.image().expect("caller passes image manifests");
        let config = descriptor_digest(image.config()).expect("validated");
        blobs.insert(manifest.digest.clone());
        blobs.insert(config.clone());
        // A missing config is reported with the other missing blobs.
        let diff_ids = self.config_of(&config, what)?.unwrap_or_default();
        let config_present = self.contents.has_blob(self.store, &config);
        if config_present && diff_ids.len() != image.layers().len() {
            return Err(self.contents.invalid(format!(
                "{what} has {} layers but its config lists {} diff_ids",
                image.layers().len(),
                diff_ids.len()
            )));
        }
        let mut size = image.config().size();
        for (index, layer) in image.layers().iter().enumerate() {
            let digest = descriptor_digest(layer).expect("validated");
            size += layer.size();
            blobs.insert(digest.clone());
            match self.contents.by_digest.get(&digest) {
                Some(&staged) => {
                    if let Some(expected) = diff_ids.get(index) {
                        self.checks.push((
                            staged,
                            expected.clone(),
                            format!("layer {} of {what}", index + 1),
                        ));
                    }
                }
                None if self.store.blob_size(&digest).is_some() => {}
                None => {
                    self.missing.insert(digest);
                }
            }
        }
        let platform = self
            .contents
            .blob_bytes(self.store, &config)?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|c| {
                format!(
                    "{}/{}",
                    c["os"].as_str().unwrap_or("?"),
                    c["architecture"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_default();
        Ok((platform, size))
    }

    fn manifest_by_digest(
        &mut self,
        digest: &Digest,
        media_type: &str,
        what: &str,
    ) -> Result<Option<ParsedManifest>, ArchiveError> {
        match self.contents.blob_bytes(self.store, digest)? {
            Some(bytes) => ParsedManifest::parse(bytes.into(), Some(media_type), what)
                .map(Some)
                .map_err(|e| self.contents.invalid(e.to_string())),
            None => Ok(None),
        }
    }

    /// The OCI layout path (ferry, Docker 25+, skopeo/podman oci-archive).
    fn oci_images(
        &mut self,
        docker_names: &HashMap<Digest, Vec<Reference>>,
    ) -> Result<Vec<Found>, ArchiveError> {
        let layout = self.contents.bytes("oci-layout")?;
        let version: serde_json::Value = serde_json::from_slice(&layout)
            .map_err(|_| self.contents.invalid("oci-layout is not JSON"))?;
        if version["imageLayoutVersion"] != "1.0.0" {
            return Err(self.contents.invalid("oci-layout is not version 1.0.0"));
        }
        let index: crate::store::index::IndexFileView =
            serde_json::from_slice(&self.contents.bytes("index.json")?)
                .map_err(|e| self.contents.invalid(format!("index.json: {e}")))?;
        let mut found = Vec::new();
        for entry in index.manifests {
            let what = entry
                .name()
                .map_or_else(|| entry.digest.to_string(), |n| n.to_string());
            let Some(mut root) =
                self.manifest_by_digest(&entry.digest, &entry.media_type, &what)?
            else {
                self.missing.insert(entry.digest.clone());
                continue;
            };
            let mut blobs = BTreeSet::new();
            let mut platforms = Vec::new();
            let mut size = 0;
            if root.is_index() {
                let mut complete = Vec::new();
                for child in root.children() {
                    let digest = descriptor_digest(child).expect("validated");
                    if let Some(manifest) =
                        self.manifest_by_digest(&digest, child.media_type().as_ref(), &what)?
                    {
                        if manifest.image().is_some() {
                            complete.push(manifest);
                        }
                    }
                }
                let missing_before = self.missing.clone();
                let mut all_present = complete.len() == root.children().len();
                let mut checked = Vec::new();
                for manifest in &complete {
                    let mut child_blobs = BTreeSet::new();
                    let (platform, child_size) =
                        self.check_image(manifest, &what, &mut child_blobs)?;
                    let complete_child = child_blobs
                        .iter()
                        .all(|d| self.contents.has_blob(self.store, d));
                    all_present &= complete_child;
                    checked.push((
                        manifest.clone(),
                        child_blobs,
                        platform,
                        child_size,
                        complete_child,
                    ));
                }
                if all_present {
                    blobs.insert(root.digest.clone());
                    for (_, child_blobs, platform, child_size, _) in checked {
                        blobs.extend(child_blobs);
                        platforms.push(platform);
                        size += child_size;
                    }
                } else if let Some((manifest, child_blobs, platform, child_size, _)) =
                    checked.into_iter().find(|(_, _, _, _, complete)| *complete)
                {
                    // Some exporters save only one platform of an index
                    // (Docker's containerd store): keep the complete one.
                    self.missing = missing_before;
                    self.checks.retain(|(staged, _, _)| {
                        self.contents
                            .staged
                            .get(*staged)
                            .is_some_and(|s| child_blobs.contains(&s.digest))
                    });
                    root = manifest;
                    blobs = child_blobs;
                    platforms.push(platform);
                    size = child_size;
                }
            } else if root.image().is_some() {
                let (platform, image_size) = self.check_image(&root, &what, &mut blobs)?;
                platforms.push(platform);
                size = image_size;
            }
            let id = match root.image() {
                Some(image) => descriptor_digest(image.config()).expect("validated"),
                None => root.digest.clone(),
            };
            let mut names: Vec<Reference> = entry
                .name()
                .into_iter()
                .filter(|n| n.tag().is_some())
                .collect();
            if names.is_empty() {
                names = docker_names.get(&id).cloned().unwrap_or_default();
            }
            found.push(Found {
                names,
                root,
                built: Vec::new(),
                blobs,
                id,
                platforms,
                size,
            });
        }
        Ok(found)
    }

    /// The docker-archive path (Docker ≤ 24, podman/skopeo, crane).
    fn docker_images(&mut self, items: &[DockerItem]) -> Result<Vec<Found>, ArchiveError> {
        let mut found = Vec::new();
        for item in items {
            let what = item
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| item.config.clone());
            let config_bytes = self.contents.bytes(&item.config)?;
            let config_digest = Digest::sha256_of(&config_bytes);
            if !self.contents.by_digest.contains_key(&config_digest) {
                let staged = self.store.stage_bytes(&config_bytes)?;
                let index = self.contents.staged.len();
                self.contents.by_digest.insert(config_digest.clone(), index);
                self.contents.staged.push(staged);
            }
            let mut layers = Vec::new();
            for path in &item.layers {
                match self.contents.resolve(path)? {
                    Item::Staged(index) => layers.push(*index),
                    _ => {
                        return Err(self
                            .contents
                            .invalid(format!("layer {path} of {what} is not a regular file")))
                    }
                }
            }
            let layer_descriptors: Vec<serde_json::Value> = layers
                .iter()
                .map(|&i| {
                    let staged = &self.contents.staged[i];
                    serde_json::json!({"mediaType": layer_media_type(staged), "digest": staged.digest, "size": staged.size})
                })
                .collect();
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
                "layers": layer_descriptors,
            });
            let bytes = serde_json::to_vec(&manifest).expect("JSON serialises");
            let parsed = ParsedManifest::parse(bytes.into(), Some(media::OCI_MANIFEST), &what)
                .map_err(|e| self.contents.invalid(e.to_string()))?;
            let mut blobs = BTreeSet::new();
            let (platform, size) = self.check_image(&parsed, &what, &mut blobs)?;
            blobs.remove(&parsed.digest);
            let names = item
                .repo_tags
                .iter()
                .map(|t| {
                    Reference::parse(t).map_err(|e| self.contents.invalid(format!("RepoTags: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            found.push(Found {
                names,
                id: config_digest,
                root: parsed.clone(),
                built: vec![parsed],
                blobs,
                platforms: vec![platform],
                size,
            });
        }
        Ok(found)
    }
}

#[derive(serde::Deserialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Check every queued diffID, using the machine's cores.
fn check_diff_ids(
    contents: &Contents,
    checks: &DiffChecks,
    precomputed: &HashMap<Digest, Result<Digest, String>>,
) -> Result<(), ArchiveError> {
    let mut unique: Vec<&(usize, Digest, String)> = Vec::new();
    for check in checks {
        if !unique.iter().any(|c| c.0 == check.0 && c.1 == check.1) {
            unique.push(check);
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(unique.len().max(1));
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((staged, expected, what)) =
                    unique.get(i).map(|c| (&contents.staged[c.0], &c.1, &c.2))
                else {
                    break;
                };
                let actual = match precomputed.get(&staged.digest) {
                    Some(done) => done.clone(),
                    None => diff_id(staged.path(), &staged.digest, staged.size)
                        .map_err(|e| e.to_string()),
                };
                let outcome = match actual {
                    Ok(actual) if &actual == expected => continue,
                    Ok(actual) => format!(
                        "{what} does not match its config: diffID {actual}, expected {expected}"
                    ),
                    Err(e) => format!("{what} cannot be decompressed: {e}"),
                };
                failure.lock().expect("failure lock").get_or_insert(outcome);
                break;
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(message) => Err(contents.invalid(message)),
        None => Ok(()),
    }
}

/// Read an archive, check it, and (unless `dry_run`) add its images to the store.
pub fn load(
    store: &Store,
    input: &mut dyn Read,
    archive: &str,
    dry_run: bool,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    let _writer = store.lock_writer()?;
    let diff_ids = DiffIds::start();
    let contents = read_entries(store, input, archive, &diff_ids)?;
    let docker_items: Option<Vec<DockerItem>> = match contents.files.contains_key("manifest.json") {
        true => {
            let bytes = contents.bytes("manifest.json")?;
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| contents.invalid(format!("manifest.json: {e}")))?,
            )
        }
        false => None,
    };
    let oci =
        contents.files.contains_key("oci-layout") && contents.files.contains_key("index.json");
    if !oci && docker_items.is_none() {
        return Err(contents.invalid(
            "is not an image archive: it has neither index.json + oci-layout nor manifest.json",
        ));
    }
    let mut loader = Loader {
        store,
        contents,
        checks: Vec::new(),
        missing: BTreeSet::new(),
    };
    let found = if oci {
        // Names for OCI entries that carry only a tag come from manifest.json.
        let mut docker_names: HashMap<Digest, Vec<Reference>> = HashMap::new();
        for item in docker_items.iter().flatten() {
            if let Ok(bytes) = loader.contents.bytes(&item.config) {
                let names = item
                    .repo_tags
                    .iter()
                    .filter_map(|t| Reference::parse(t).ok());
                docker_names
                    .entry(Digest::sha256_of(&bytes))
                    .or_default()
                    .extend(names);
            }
        }
        loader.oci_images(&docker_names)?
    } else {
        loader.docker_images(docker_items.as_deref().unwrap_or_default())?
    };
    if !loader.missing.is_empty() {
        let missing: Vec<String> = loader.missing.iter().map(ToString::to_string).collect();
        return Err(ArchiveError::MissingBlobs {
            archive: archive.to_owned(),
            missing: missing.join(", "),
        });
    }
    let precomputed = diff_ids.finish();
    check_diff_ids(&loader.contents, &loader.checks, &precomputed)?;
    let images: Vec<LoadedImage> = found
        .iter()
        .map(|f| LoadedImage {
            names: f.names.iter().map(ToString::to_string).collect(),
            digest: f.root.digest.clone(),
            id: f.id.clone(),
            media_type: f.root.media_type.clone(),
            platforms: f.platforms.clone(),
            size: f.size,
        })
        .collect();
    if dry_run {
        return Ok(images);
    }
    // Everything verified: data first, then tags.
    let Loader { mut contents, .. } = loader;
    let needed: BTreeSet<Digest> = found.iter().flat_map(|f| f.blobs.iter().cloned()).collect();
    let mut staged: BTreeMap<Digest, StagedBlob> = BTreeMap::new();
    for blob in contents.staged.drain(..) {
        if needed.contains(&blob.digest) && !staged.contains_key(&blob.digest) {
            staged.insert(blob.digest.clone(), blob);
        }
    }
    for (_, blob) in staged {
        blob.commit(store)?;
    }
    for image in &found {
        for built in &image.built {
            store.stage_bytes(&built.bytes)?.commit(store)?;
        }
        let entry = IndexEntry::new(
            &image.root.media_type,
            image.root.digest.clone(),
            image.root.bytes.len() as u64,
        );
        if image.names.is_empty() {
            store.add_untagged(entry.clone())?;
        }
        for name in &image.names {
            store.set_tag(name, entry.clone())?;
        }
    }
    Ok(images)
}
