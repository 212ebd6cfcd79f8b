//! `ferry save`: one tar that is both an OCI image layout (`oci-layout`,
//! `index.json` naming each image in full) and a `docker load` archive
//! (`manifest.json` with fully-qualified `RepoTags`, `repositories`),
//! holding the original registry blobs once each. Metadata comes first so
//! streaming readers need no temp space; the tar itself is uncompressed
//! unless asked, with fixed modes, owners and times.

use super::{ArchiveError, Compression};
use crate::engine::{platform_child, subset_index};
use crate::store::{Store, CONTAINERD_NAME, REF_NAME};
use crate::types::manifest::descriptor_digest;
use crate::types::{media, Digest, ParsedManifest, Platform};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// What to save.
#[derive(Debug, Clone, Default)]
pub struct SaveRequest {
    /// Images as the user named them (names, digests or IDs).
    pub images: Vec<String>,
    /// Platforms to keep from multi-platform images (empty: as stored).
    pub platforms: Vec<Platform>,
    /// Blobs to leave out (a delta against an older archive or image).
    pub exclude: BTreeSet<Digest>,
}

/// One image in a save plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SavedImage {
    pub name: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    /// The single-platform manifest listed in manifest.json.
    pub docker_manifest: Digest,
}

/// Everything `write` needs, decided before the first byte is written.
pub struct SavePlan {
    pub images: Vec<SavedImage>,
    index_entries: Vec<serde_json::Value>,
    docker_items: Vec<serde_json::Value>,
    repositories: BTreeMap<String, BTreeMap<String, String>>,
    /// Every blob in write order, with its size; `extra` holds rebuilt indexes.
    blobs: BTreeMap<Digest, u64>,
    extra: BTreeMap<Digest, Bytes>,
    pub excluded: BTreeSet<Digest>,
}

impl SavePlan {
    /// Bytes of blob content the archive will hold.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|(d, _)| !self.excluded.contains(*d))
            .map(|(_, s)| s)
            .sum()
    }

    /// Number of blobs the archive will hold.
    pub fn blob_count(&self) -> usize {
        self.blobs
            .keys()
            .filter(|d| !self.excluded.contains(*d))
            .count()
    }
}

fn invalid(image: &str, message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid {
        archive: image.to_owned(),
        message: message.into(),
    }
}

/// Decide what goes into the archive.
pub fn plan(store: &Store, request: &SaveRequest) -> Result<SavePlan, ArchiveError> {
    let host = Platform::host();
    let mut plan = SavePlan {
        images: Vec::new(),
        index_entries: Vec::new(),
        docker_items: Vec::new(),
        repositories: BTreeMap::new(),
        blobs: BTreeMap::new(),
        extra: BTreeMap::new(),
        excluded: request.exclude.clone(),
    };
    let mut docker_by_config: BTreeMap<Digest, usize> = BTreeMap::new();
    for text in &request.images {
        let image = store.resolve(text)?;
        let name = image.entry.name().filter(|n| n.tag().is_some());
        let mut root = image.manifest.clone();
        if root.is_index() && !request.platforms.is_empty() {
            root = match request.platforms.as_slice() {
                [one] => {
                    let child = platform_child(&root, one)
                        .ok_or_else(|| invalid(text, format!("has no image for platform {one}")))?;
                    store.read_manifest(
                        &descriptor_digest(child).expect("validated"),
                        child.media_type().as_ref(),
                    )?
                }
                several => {
                    let bytes = subset_index(&root, several)
                        .ok_or_else(|| invalid(text, "has none of the requested platforms"))?;
                    let rebuilt = ParsedManifest::parse(bytes, Some(&root.media_type), text)
                        .map_err(|e| invalid(text, e.to_string()))?;
                    plan.extra
                        .insert(rebuilt.digest.clone(), rebuilt.bytes.clone());
                    rebuilt
                }
            };
        }
        // Blobs: everything the stored root reaches, restricted to the chosen root.
        if plan.extra.contains_key(&root.digest) {
            plan.blobs
                .insert(root.digest.clone(), root.bytes.len() as u64);
            for child in root.children() {
                let digest = descriptor_digest(child).expect("validated");
                plan.blobs
                    .extend(store.reachable(&digest, child.media_type().as_ref())?);
            }
        } else {
            plan.blobs
                .extend(store.reachable(&root.digest, &root.media_type)?);
        }
        // manifest.json lists one platform: the requested or host one.
        let docker = if root.is_index() {
            let wanted = request.platforms.first().unwrap_or(&host);
            let child = platform_child(&root, wanted)
                .or_else(|| platform_child(&root, &host))
                .or_else(|| {
                    root.children().into_iter().find(|c| {
                        c.platform()
                            .as_ref()
                            .is_some_and(|p| p.os().to_string() != "unknown")
                    })
                })
                .ok_or_else(|| invalid(text, "the index has no platform image"))?;
            store.read_manifest(
                &descriptor_digest(child).expect("validated"),
                child.media_type().as_ref(),
            )?
        } else {
            root.clone()
        };
        let manifest = docker
            .image()
            .ok_or_else(|| invalid(text, "nested indexes cannot be saved for docker load"))?;
        let config = descriptor_digest(manifest.config()).expect("validated");
        let layers: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| {
                format!(
                    "blobs/sha256/{}",
                    descriptor_digest(l).expect("validated").hex()
                )
            })
            .collect();
        let repo_tag = name.as_ref().map(|n| n.to_string());
        match docker_by_config.get(&config) {
            Some(&index) => {
                if let Some(tag) = &repo_tag {
                    plan.docker_items[index]["RepoTags"]
                        .as_array_mut()
                        .expect("array")
                        .push(tag.clone().into());
                }
            }
            None => {
                docker_by_config.insert(config.clone(), plan.docker_items.len());
                plan.docker_items.push(serde_json::json!({
                    "Config": format!("blobs/sha256/{}", config.hex()),
                    "RepoTags": repo_tag.iter().collect::<Vec<_>>(),
                    "Layers": layers,
                }));
            }
        }
        let mut annotations = serde_json::Map::new();
        if let Some(name) = &name {
            annotations.insert(CONTAINERD_NAME.into(), name.to_string().into());
            annotations.insert(REF_NAME.into(), name.tag().unwrap_or("latest").into());
            plan.repositories.entry(name.name()).or_default().insert(
                name.tag().unwrap_or("latest").to_owned(),
                config.hex().to_owned(),
            );
        }
        let mut entry = serde_json::json!({"mediaType": root.media_type, "digest": root.digest, "size": root.bytes.len()});
        if !annotations.is_empty() {
            entry["annotations"] = annotations.into();
        }
        plan.index_entries.push(entry);
        plan.images.push(SavedImage {
            name: name.map(|n| n.to_string()),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            docker_manifest: docker.digest.clone(),
        });
    }
    Ok(plan)
}

fn header(path: &str, size: u64, directory: bool) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .expect("archive paths are short ASCII");
    header.set_size(size);
    header.set_mode(if directory { 0o755 } else { 0o644 });
    header.set_entry_type(if directory {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// Write the planned archive to `out`. Blobs are re-verified as they are
/// read: a corrupt store blob fails the save instead of travelling on.
pub fn write(
    store: &Store,
    plan: &SavePlan,
    out: &mut dyn Write,
    compression: Compression,
) -> Result<(), ArchiveError> {
    let io = |source| ArchiveError::Io {
        archive: "archive".into(),
        source,
    };
    // tar writes in small pieces; batch them into large writes.
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    let mut sink: Box<dyn Write + '_> = match compression {
        Compression::None => Box::new(&mut buffered),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            &mut buffered,
            flate2::Compression::fast(),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(&mut buffered, 3)
                .map_err(io)?
                .auto_finish(),
        ),
        other => {
            return Err(ArchiveError::Usage(format!(
                "cannot write {other:?} archives; use none, gzip or zstd"
            )))
        }
    };
    {
        let mut builder = tar::Builder::new(&mut sink);
        let json = |value: &serde_json::Value| serde_json::to_vec(value).expect("JSON serialises");
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": plan.index_entries});
        let metadata: [(&str, Vec<u8>); 4] = [
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json", json(&index)),
            (
                "manifest.json",
                json(&serde_json::Value::Array(plan.docker_items.clone())),
            ),
            (
                "repositories",
                serde_json::to_vec(&plan.repositories).expect("JSON serialises"),
            ),
        ];
        for (name, bytes) in metadata {
            builder
                .append(&header(name, bytes.len() as u64, false), bytes.as_slice())
                .map_err(io)?;
        }
        builder
            .append(&header("blobs/", 0, true), std::io::empty())
            .map_err(io)?;
        builder
            .append(&header("blobs/sha256/", 0, true), std::io::empty())
            .map_err(io)?;
        for (digest, size) in &plan.blobs {
            if plan.excluded.contains(digest) {
                continue;
            }
            let path = format!("blobs/sha256/{}", digest.hex());
            if let Some(bytes) = plan.extra.get(digest) {
                builder
                    .append(&header(&path, bytes.len() as u64, false), &bytes[..])
                    .map_err(io)?;
                continue;
            }
            let file_path = store.blob_path(digest);
            let file = std::fs::File::open(&file_path)
                .map_err(|e| crate::store::StoreError::io(&file_path, e))?;
            let mut reader = VerifyingReader {
                inner: std::io::BufReader::with_capacity(1 << 20, file),
                hasher: Some(digest.hasher()),
                digest,
                read: 0,
                size: *size,
            };
            builder
                .append(&header(&path, *size, false), &mut reader)
                .map_err(io)?;
        }
        builder.finish().map_err(io)?;
    }
    sink.flush().map_err(io)?;
    drop(sink);
    buffered.flush().map_err(io)?;
    drop(buffered);
    out.flush().map_err(io)
}

/// Hashes what passes through and fails at the end when it does not match.
struct VerifyingReader<'a, R> {
    inner: R,
    hasher: Option<crate::types::Hasher>,
    digest: &'a Digest,
    read: u64,
    size: u64,
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read += read as u64;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buffer[..read]);
        }
        if read == 0 || self.read == self.size {
            if let Some(hasher) = self.hasher.take() {
                let actual = hasher.finish();
                if &actual != self.digest || self.read != self.size {
                    return Err(std::io::Error::other(format!(
                        "store blob {} is corrupt (content hashes to {actual}); run ferry verify --read-data",
                        self.digest
                    )));
                }
            }
        }
        Ok(read)
    }
}

/// Blobs an existing archive holds (for `--since OLD.tar`).
pub fn archive_blobs(path: &std::path::Path) -> Result<BTreeSet<Digest>, ArchiveError> {
    let io = |source| ArchiveError::Io {
        archive: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let head = std::io::BufRead::fill_buf(&mut reader)
        .map_err(io)?
        .to_vec();
    let decoder = Compression::detect(&head).decoder(reader).map_err(io)?;
    let mut archive = tar::Archive::new(decoder);
    let mut found = BTreeSet::new();
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let raw = entry.path_bytes().into_owned();
        if let Ok(name) = super::names::clean(&raw) {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                if let Ok(digest) = format!("sha256:{hex}").parse() {
                    found.insert(digest);
                }
            }
        }
    }
    Ok(found)
}

/// Every blob `image` reaches in the store (for `--since IMAGE`).
pub fn image_blobs(store: &Store, image: &str) -> Result<BTreeSet<Digest>, ArchiveError> {
    let image = store.resolve(image)?;
    Ok(store
        .reachable(&image.entry.digest, &image.entry.media_type)?
        .into_keys()
        .collect())
}
