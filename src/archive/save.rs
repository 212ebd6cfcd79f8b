//! `ferry save`: one tar that is both an OCI image layout (`oci-layout`,
//! `index.json` naming each image in full) and a `docker load` archive
//! (`manifest.json` with fully-qualified `RepoTags`, `repositories`),
//! holding the original registry blobs once each. Metadata comes first so
//! streaming readers need no temp space; the tar itself is uncompressed
//! unless asked, with fixed modes, owners and times. The engine plans the
//! images (from the store or straight from a registry) and hands each blob
//! over as a verifying reader; this module only lays out the tar.

use super::{ArchiveError, Compression};
use crate::types::layout::{CONTAINERD_NAME, REF_NAME};
use crate::types::manifest::descriptor_digest;
use crate::types::{media, Digest, ParsedManifest, Reference, ReferrerLink};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

/// One image to write, as the engine planned it.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// The full name (with tag) to record; `None` for an untagged image.
    pub name: Option<Reference>,
    /// The top-level manifest (an index or an image).
    pub root: ParsedManifest,
    /// Child manifests of an index.
    pub manifests: Vec<ParsedManifest>,
    /// Config and layer blobs with their sizes.
    pub blobs: BTreeMap<Digest, u64>,
    /// The single-platform manifest for `manifest.json` (docker load), if any.
    pub docker: Option<ParsedManifest>,
    /// Set for a referrer: the manifest it is kept with.
    pub link: Option<ReferrerLink>,
}

/// One image in a written archive (for `--json` and `--list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SavedImage {
    pub name: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    /// The single-platform manifest listed in manifest.json.
    pub docker_manifest: Option<Digest>,
    /// Set for a referrer (a signature, an attestation, an SBOM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<ReferrerLink>,
}

/// Everything `write` needs, decided before the first byte is written.
pub struct SavePlan {
    pub images: Vec<SavedImage>,
    index_entries: Vec<serde_json::Value>,
    docker_items: Vec<serde_json::Value>,
    repositories: BTreeMap<String, BTreeMap<String, String>>,
    /// Config and layer blobs in write order, with their sizes.
    blobs: BTreeMap<Digest, u64>,
    /// Manifests, written from memory.
    manifests: BTreeMap<Digest, Bytes>,
    pub excluded: BTreeSet<Digest>,
}

impl SavePlan {
    fn kept(&self) -> impl Iterator<Item = (&Digest, u64)> {
        let manifests = self.manifests.iter().map(|(d, b)| (d, b.len() as u64));
        self.blobs
            .iter()
            .map(|(d, s)| (d, *s))
            .chain(manifests)
            .filter(|(d, _)| !self.excluded.contains(*d))
    }

    /// How many of the image's blobs are left out because the older
    /// archive (or image) a delta is made against has them.
    pub fn left_out(&self) -> usize {
        self.blobs
            .keys()
            .chain(self.manifests.keys())
            .filter(|d| self.excluded.contains(*d))
            .count()
    }

    /// Bytes of blob content the archive will hold.
    pub fn blob_bytes(&self) -> u64 {
        self.kept().map(|(_, s)| s).sum()
    }

    /// Images (not counting their referrers) and referrers the archive holds.
    pub fn counts(&self) -> (usize, usize) {
        let referrers = self.images.iter().filter(|i| i.link.is_some()).count();
        (self.images.len() - referrers, referrers)
    }

    /// "3 images" or "3 images with 2 referrers", for messages.
    pub fn describe_counts(&self) -> String {
        match self.counts() {
            (images, 0) => crate::types::count(images, "image"),
            (images, referrers) => format!(
                "{} with {}",
                crate::types::count(images, "image"),
                crate::types::count(referrers, "referrer")
            ),
        }
    }

    /// Number of blobs the archive will hold.
    pub fn blob_count(&self) -> usize {
        self.kept().count()
    }

    /// The blobs the archive will hold (what `archive_blobs` reads back).
    pub fn blob_digests(&self) -> BTreeSet<Digest> {
        self.kept().map(|(d, _)| d.clone()).collect()
    }
}

fn invalid(image: &str, message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid {
        archive: image.to_owned(),
        message: message.into(),
    }
}

/// Decide what goes into the archive; `exclude` lists blobs to leave out
/// (a delta against an older archive).
pub fn plan(
    images: Vec<ArchiveImage>,
    exclude: BTreeSet<Digest>,
) -> Result<SavePlan, ArchiveError> {
    let mut plan = SavePlan {
        images: Vec::new(),
        index_entries: Vec::new(),
        docker_items: Vec::new(),
        repositories: BTreeMap::new(),
        blobs: BTreeMap::new(),
        manifests: BTreeMap::new(),
        excluded: exclude,
    };
    let mut docker_by_config: BTreeMap<Digest, usize> = BTreeMap::new();
    for image in images {
        let what = image
            .name
            .as_ref()
            .map_or_else(|| image.root.digest.to_string(), ToString::to_string);
        let name = image.name.filter(|n| n.tag().is_some());
        for manifest in image.manifests.iter().chain(std::iter::once(&image.root)) {
            plan.manifests
                .insert(manifest.digest.clone(), manifest.bytes.clone());
        }
        plan.blobs.extend(image.blobs);
        let repo_tag = name.as_ref().map(|n| n.to_string());
        // manifest.json lists container images only, one platform each.
        let docker = image
            .docker
            .as_ref()
            .and_then(|d| d.image().map(|m| (d, m)));
        if let Some((docker, manifest)) = docker {
            let config =
                descriptor_digest(manifest.config()).map_err(|e| invalid(&what, e.to_string()))?;
            let layers = manifest
                .layers()
                .iter()
                .map(|l| {
                    descriptor_digest(l)
                        .map(|d| format!("blobs/sha256/{}", d.hex()))
                        .map_err(|e| invalid(&what, e.to_string()))
                })
                .collect::<Result<Vec<String>, _>>()?;
            match docker_by_config.get(&config) {
                Some(&index) => {
                    if let (Some(tag), Some(tags)) = (
                        &repo_tag,
                        plan.docker_items[index]["RepoTags"].as_array_mut(),
                    ) {
                        tags.push(tag.clone().into());
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
            if let Some(name) = &name {
                plan.repositories.entry(name.name()).or_default().insert(
                    name.tag().unwrap_or("latest").to_owned(),
                    config.hex().to_owned(),
                );
            }
            let _ = docker;
        }
        let mut annotations = BTreeMap::new();
        if let Some(name) = &name {
            annotations.insert(CONTAINERD_NAME.to_owned(), name.to_string());
            annotations.insert(
                REF_NAME.to_owned(),
                name.tag().unwrap_or("latest").to_owned(),
            );
        }
        let root = &image.root;
        let mut entry = serde_json::json!({"mediaType": root.media_type, "digest": root.digest, "size": root.bytes.len()});
        if let Some(link) = &image.link {
            // Referrers ride in the OCI part only, unnamed, tied to their subject.
            link.annotate(&mut annotations);
            if let Some(kind) = link.artifact_type(root) {
                entry["artifactType"] = kind.into();
            }
        }
        if !annotations.is_empty() {
            entry["annotations"] = serde_json::to_value(&annotations).expect("string map");
        }
        plan.index_entries.push(entry);
        plan.images.push(SavedImage {
            name: name.map(|n| n.to_string()),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            docker_manifest: image.docker.map(|d| d.digest),
            link: image.link,
        });
    }
    Ok(plan)
}

fn header(path: &str, size: u64, directory: bool) -> std::io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
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
    Ok(header)
}

/// Opens a blob by digest and size as a reader that fails at its end
/// when the bytes are not the blob (the one verifying reader).
pub type BlobOpener<'a> =
    dyn FnMut(&Digest, u64) -> Result<Box<dyn Read + Send>, ArchiveError> + 'a;

/// Write the planned archive to `out`, reading each blob through `open`:
/// a blob that does not verify fails the write instead of travelling on.
pub fn write(
    plan: &SavePlan,
    open: &mut BlobOpener<'_>,
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
        let json = |value: &serde_json::Value| value.to_string().into_bytes();
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
                serde_json::json!(plan.repositories)
                    .to_string()
                    .into_bytes(),
            ),
        ];
        for (name, bytes) in metadata {
            builder
                .append(
                    &header(name, bytes.len() as u64, false).map_err(io)?,
                    bytes.as_slice(),
                )
                .map_err(io)?;
        }
        builder
            .append(&header("blobs/", 0, true).map_err(io)?, std::io::empty())
            .map_err(io)?;
        builder
            .append(
                &header("blobs/sha256/", 0, true).map_err(io)?,
                std::io::empty(),
            )
            .map_err(io)?;
        let mut order: Vec<(&Digest, u64)> = plan.kept().collect();
        order.sort();
        for (digest, size) in order {
            let path = format!("blobs/sha256/{}", digest.hex());
            let header = header(&path, size, false).map_err(io)?;
            if let Some(bytes) = plan.manifests.get(digest) {
                builder.append(&header, &bytes[..]).map_err(io)?;
                continue;
            }
            let mut reader = open(digest, size)?;
            builder.append(&header, &mut reader).map_err(io)?;
        }
        builder.finish().map_err(io)?;
    }
    sink.flush().map_err(io)?;
    drop(sink);
    buffered.flush().map_err(io)?;
    drop(buffered);
    out.flush().map_err(io)
}
