//! Images built by the tests, written as OCI layouts that skopeo pushes:
//! gzip layers with symlinks, hardlinks and whiteouts, configs with
//! `rootfs.diff_ids` and history, manifests, and multi-platform indexes.

use super::sha256;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;

/// One entry of a layer tar.
pub enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A gzip layer with its digests.
#[derive(Clone)]
pub struct Layer {
    pub gzip: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// Build a layer from entries (mtime fixed, so layers are reproducible).
pub fn layer(entries: &[Entry]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_slice())
                    .unwrap();
            }
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Entry::Hardlink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gzip = gz.finish().unwrap();
    Layer {
        digest: sha256(&gzip),
        diff_id: sha256(&tar),
        gzip,
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A layer holding one random file of `size` bytes.
pub fn random_layer(name: &str, size: usize, seed: u64) -> Layer {
    layer(&[Entry::File(name, random_bytes(size, seed))])
}

/// A single-platform image.
#[derive(Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// The manifest digest.
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// The config digest (docker's image ID).
    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }
}

/// Build an image from layers for `os/arch`.
pub fn image(layers: Vec<Layer>, arch: &str, label: &str) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("layer {i} of {label}")}))
        .chain(std::iter::once(serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": "CMD [\"sh\"]", "empty_layer": true})))
        .collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.digest, "size": l.gzip.len()
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    Image {
        layers,
        config,
        manifest,
    }
}

impl Image {
    /// The same image with its config's `created` time set to `created`
    /// (RFC 3339): a different config, so a different image ID.
    pub fn with_created(mut self, created: &str) -> Image {
        let mut config: serde_json::Value = serde_json::from_slice(&self.config).unwrap();
        config["created"] = serde_json::json!(created);
        self.config = serde_json::to_vec(&config).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_slice(&self.manifest).unwrap();
        manifest["config"]["digest"] = serde_json::json!(sha256(&self.config));
        manifest["config"]["size"] = serde_json::json!(self.config.len());
        self.manifest = serde_json::to_vec(&manifest).unwrap();
        self
    }
}

/// A multi-platform index over images (`arch` per image).
pub struct Index {
    pub images: Vec<(String, Image)>,
    pub bytes: Vec<u8>,
}

impl Index {
    /// The index digest.
    pub fn digest(&self) -> String {
        sha256(&self.bytes)
    }
}

/// Build an OCI index over `(arch, image)` pairs.
pub fn index(images: Vec<(String, Image)>) -> Index {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(arch, image)| {
            let (architecture, variant) = match arch.split_once('/') {
                Some((a, v)) => (a.to_owned(), Some(v.to_owned())),
                None => (arch.clone(), None),
            };
            let mut platform = serde_json::json!({"os": "linux", "architecture": architecture});
            if let Some(variant) = variant {
                platform["variant"] = serde_json::json!(variant);
            }
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.digest(),
                "size": image.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    Index { images, bytes }
}

fn write_blob(dir: &Path, bytes: &[u8]) {
    let digest = sha256(bytes);
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::write(path, bytes).unwrap();
}

fn write_image_blobs(dir: &Path, image: &Image) {
    for layer in &image.layers {
        write_blob(dir, &layer.gzip);
    }
    write_blob(dir, &image.config);
    write_blob(dir, &image.manifest);
}

/// What an OCI layout entry holds.
pub enum Content<'a> {
    Image(&'a Image),
    Index(&'a Index),
}

/// Write an OCI layout at `dir` with one `ref.name` per `(tag, content)`.
pub fn write_layout(dir: &Path, entries: &[(&str, Content)]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for (tag, content) in entries {
        let (media_type, bytes) = match content {
            Content::Image(image) => {
                write_image_blobs(dir, image);
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    &image.manifest,
                )
            }
            Content::Index(index) => {
                for (_, image) in &index.images {
                    write_image_blobs(dir, image);
                }
                write_blob(dir, &index.bytes);
                ("application/vnd.oci.image.index.v1+json", &index.bytes)
            }
        };
        manifests.push(serde_json::json!({
            "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An uncompressed OCI-layout archive at `dir/<file>` holding `image` under
/// its full name `name` (`io.containerd.image.name`, as Docker 25+ writes):
/// what `ferry load` and `copy archive:` read. Its path.
pub fn named_archive(dir: &Path, file: &str, image: &Image, name: &str) -> std::path::PathBuf {
    let layout = dir.join(format!("{file}.layout"));
    write_layout(&layout, &[("unused", Content::Image(image))]);
    let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.digest(), "size": image.manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let archive = dir.join(file);
    super::tar_dir(&layout, &archive);
    archive
}
