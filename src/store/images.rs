//! Images as the store holds them: resolving a user's `IMAGE` (name, tag,
//! digest, or image ID prefix) to an index entry, walking an image's graph
//! of blobs, and summarising images for `images`, `inspect` and `df`.

use super::index::{read_index, IndexEntry};
use super::meta::{read_metadata, ImageTimes};
use super::{Store, StoreError};
use crate::types::choice::{choose_image_now, ChoiceError};
use crate::types::manifest::{descriptor_digest, is_foreign_layer, MAX_MANIFEST_BYTES};
use crate::types::{Digest, ParsedManifest, Platform, Reference};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::types::manifest::MAX_CONFIG_BYTES;
/// Deepest index nesting ferry follows.
const MAX_DEPTH: usize = 8;

/// A manifest whose descriptors do not parse (they were checked when it was
/// stored, so the file changed since).
fn corrupt(digest: &Digest, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: digest.to_string(),
        message: error.to_string(),
    }
}

/// An image in the store: its index entry and parsed top-level manifest.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub entry: IndexEntry,
    pub manifest: ParsedManifest,
}

/// One row of `ferry images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    /// The full reference, absent for a dangling image.
    pub name: Option<Reference>,
    /// The top-level manifest's digest (what a registry calls the image digest).
    pub digest: Digest,
    /// docker's image ID: the config digest, or the index digest for a multi-platform image.
    pub id: Digest,
    pub media_type: String,
    /// The config's `created`, when it has one (Unix seconds).
    pub created: Option<i64>,
    /// The same in nanoseconds: what `images` orders and filters by.
    #[serde(skip)]
    pub created_ns: Option<i128>,
    /// Bytes of every distinct blob the image references.
    pub size: u64,
    pub platforms: Vec<String>,
    pub times: Option<ImageTimes>,
    /// What it is: `image`, `index` (several platforms), `helm chart`,
    /// `wasm` or `artifact` (another OCI artifact).
    pub kind: &'static str,
    /// Referrers (signatures, attestations, SBOMs) kept with it.
    pub referrers: usize,
}

/// What a top-level manifest is, for `ferry images`.
pub fn kind_of(manifest: &ParsedManifest) -> &'static str {
    match manifest.image() {
        None => "index",
        Some(image) => {
            let config = image.config().media_type().to_string();
            if manifest.is_container_image() {
                "image"
            } else if config.starts_with("application/vnd.cncf.helm.") {
                "helm chart"
            } else if config.contains("wasm") {
                "wasm"
            } else {
                "artifact"
            }
        }
    }
}

impl Store {
    /// Read and parse a manifest blob.
    pub fn read_manifest(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, StoreError> {
        let bytes = self.read_blob(digest, MAX_MANIFEST_BYTES as u64)?;
        ParsedManifest::parse(bytes, Some(media_type), &digest.to_string()).map_err(|e| {
            StoreError::Corrupt {
                path: self.blob_path(digest).display().to_string(),
                message: e.to_string(),
            }
        })
    }

    /// Read an image config as JSON.
    pub fn read_config(&self, digest: &Digest) -> Result<serde_json::Value, StoreError> {
        let bytes = self.read_blob(digest, MAX_CONFIG_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.blob_path(digest).display().to_string(),
            message: format!("config is not JSON: {e}"),
        })
    }

    /// Load the image an index entry names.
    pub fn load_image(&self, entry: &IndexEntry) -> Result<LocalImage, StoreError> {
        Ok(LocalImage {
            manifest: self.read_manifest(&entry.digest, &entry.media_type)?,
            entry: entry.clone(),
        })
    }

    /// The image ID docker would show: config digest for one platform, index digest otherwise.
    pub fn image_id(&self, image: &LocalImage) -> Digest {
        match image.manifest.image() {
            Some(manifest) => {
                descriptor_digest(manifest.config()).unwrap_or_else(|_| image.entry.digest.clone())
            }
            None => image.entry.digest.clone(),
        }
    }

    /// [`Store::resolve_platform`] for commands that need a container image
    /// (`history`, `export`): an OCI artifact (a Helm chart, a signature)
    /// is refused by name.
    pub fn resolve_container(
        &self,
        text: &str,
        platform: Option<&Platform>,
    ) -> Result<(LocalImage, ParsedManifest), StoreError> {
        let (image, manifest) = self.resolve_platform(text, platform)?;
        let config_type = manifest
            .image()
            .map(|m| m.config().media_type().to_string())
            .unwrap_or_default();
        if !manifest.is_container_image() {
            return Err(StoreError::Invalid {
                image: text.to_owned(),
                message: format!(
                    "is an OCI artifact (config type {config_type}, layers that are not filesystem tars), not a container image: it has no filesystem to show or export"
                ),
            });
        }
        Ok((image, manifest))
    }

    /// The single-image manifest of `text` for `platform` (the host's when
    /// `None`), through the one platform chooser: nested indexes followed,
    /// and an error naming the platforms the image has when none matches.
    pub fn resolve_platform(
        &self,
        text: &str,
        platform: Option<&Platform>,
    ) -> Result<(LocalImage, ParsedManifest), StoreError> {
        let image = self.resolve(text)?;
        let wanted = platform.cloned().unwrap_or_else(Platform::host);
        let chosen = choose_image_now(image.manifest.clone(), &wanted, text, |digest, media| {
            self.read_manifest(digest, media)
        })
        .map_err(|error| match error {
            ChoiceError::Fetch(error) => error,
            ChoiceError::NoPlatform(missing) => StoreError::NoPlatform(missing),
            other => StoreError::Invalid {
                image: text.to_owned(),
                message: other.to_string(),
            },
        })?;
        let Some(manifest) = chosen.image() else {
            return Err(StoreError::Invalid {
                image: text.to_owned(),
                message: "the chosen entry is not an image manifest".into(),
            });
        };
        // A platform asked for of a single-platform image: it must be that
        // one (as docker refuses), never another architecture silently.
        // A config too large to be an image config is not read (as pull).
        let small = manifest.config().size() <= MAX_CONFIG_BYTES;
        if let (Some(asked), false, true) = (platform, image.manifest.is_index(), small) {
            let config = self.read_blob(
                &crate::types::manifest::descriptor_digest(manifest.config())
                    .map_err(|e| corrupt(&image.entry.digest, e))?,
                MAX_CONFIG_BYTES,
            )?;
            let own = crate::types::choice::config_platform(&config);
            if let Some(mismatch) =
                crate::types::choice::single_mismatch(own, std::slice::from_ref(asked))
            {
                return Err(crate::types::choice::NoPlatform::of(text, mismatch).into());
            }
        }
        Ok((image, chosen))
    }

    /// Resolve a user's `IMAGE`: a reference (`nginx`, `host/app:tag`,
    /// `app@sha256:…`), a manifest digest, or an image ID (prefix).
    pub fn resolve(&self, text: &str) -> Result<LocalImage, StoreError> {
        let mut entries = read_index(self)?;
        // Referrers are reached through their images, never as images.
        entries.retain(|e| !e.is_referrer());
        if let Ok(reference) = Reference::parse(text) {
            if let Some(entry) = entries
                .iter()
                .find(|e| e.name().as_ref() == Some(&reference))
            {
                return self.load_image(entry);
            }
            if let Some(digest) = reference.digest() {
                let same_repository =
                    |e: &&IndexEntry| e.name().is_some_and(|n| n.name() == reference.name());
                if let Some(entry) = entries
                    .iter()
                    .filter(same_repository)
                    .find(|e| &e.digest == digest)
                {
                    return self.load_image(entry);
                }
            }
        }
        let prefix = text.strip_prefix("sha256:").unwrap_or(text);
        let id_like = prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        if id_like {
            let mut matches: Vec<LocalImage> = Vec::new();
            for entry in &entries {
                let image = self.load_image(entry)?;
                let id = self.image_id(&image);
                if id.hex().starts_with(prefix) || entry.digest.hex().starts_with(prefix) {
                    matches.push(image);
                }
            }
            let ids: BTreeSet<Digest> = matches.iter().map(|m| self.image_id(m)).collect();
            match ids.len() {
                0 => {}
                1 => return Ok(matches.remove(0)),
                _ => {
                    return Err(StoreError::Conflict(format!(
                        "{text} is ambiguous: it prefixes {} image IDs; give more digits",
                        ids.len()
                    )))
                }
            }
        }
        Err(StoreError::NoSuchImage(text.to_owned()))
    }

    /// Every blob (manifests included) reachable from a manifest, with sizes.
    /// Foreign layers are skipped: registries do not serve them.
    pub fn reachable(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<BTreeMap<Digest, u64>, StoreError> {
        let mut seen = BTreeMap::new();
        self.walk(digest, media_type, 0, &mut seen)?;
        Ok(seen)
    }

    fn walk(
        &self,
        digest: &Digest,
        media_type: &str,
        depth: usize,
        seen: &mut BTreeMap<Digest, u64>,
    ) -> Result<(), StoreError> {
        if seen.contains_key(digest) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(StoreError::Corrupt {
                path: digest.to_string(),
                message: format!("index nesting deeper than {MAX_DEPTH}"),
            });
        }
        let manifest = self.read_manifest(digest, media_type)?;
        seen.insert(digest.clone(), manifest.bytes.len() as u64);
        if manifest.is_index() {
            for child in manifest.children() {
                let child_digest = descriptor_digest(child).map_err(|e| corrupt(digest, e))?;
                self.walk(&child_digest, child.media_type().as_ref(), depth + 1, seen)?;
            }
        } else {
            for child in manifest.children() {
                if is_foreign_layer(child) {
                    continue;
                }
                seen.insert(
                    descriptor_digest(child).map_err(|e| corrupt(digest, e))?,
                    child.size(),
                );
            }
        }
        Ok(())
    }

    /// Summaries of every image in the index, in index order.
    pub fn summaries(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let metadata = read_metadata(self)?;
        let entries = read_index(self)?;
        let subjects: Vec<Digest> = entries
            .iter()
            .filter_map(|e| e.link().map(|l| l.subject))
            .collect();
        entries
            .iter()
            .filter(|entry| !entry.is_referrer())
            .map(|entry| {
                let image = self.load_image(entry)?;
                let blobs = self.reachable(&entry.digest, &entry.media_type)?;
                let (created, platforms) = self.describe(&image)?;
                let referrers = subjects.iter().filter(|s| blobs.contains_key(s)).count();
                Ok(ImageSummary {
                    name: entry.name(),
                    digest: entry.digest.clone(),
                    id: self.image_id(&image),
                    media_type: entry.media_type.clone(),
                    created: created.map(|ns| ns.div_euclid(1_000_000_000) as i64),
                    created_ns: created,
                    size: blobs.values().sum(),
                    platforms,
                    times: metadata.images.get(&entry.digest).copied(),
                    kind: kind_of(&image.manifest),
                    referrers,
                })
            })
            .collect()
    }

    /// The creation time and platforms of an image.
    fn describe(&self, image: &LocalImage) -> Result<(Option<i128>, Vec<String>), StoreError> {
        let platform_of = |config: &serde_json::Value| {
            let field = |k: &str| {
                config
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            let variant = field("variant");
            let mut text = format!("{}/{}", field("os"), field("architecture"));
            if !variant.is_empty() {
                text.push('/');
                text.push_str(&variant);
            }
            text
        };
        let created_of = |config: &serde_json::Value| {
            config
                .get("created")
                .and_then(|v| v.as_str())
                .and_then(crate::types::time::parse_rfc3339_nanos)
        };
        match image.manifest.image() {
            Some(manifest) => {
                let config_digest = descriptor_digest(manifest.config())
                    .map_err(|e| corrupt(&image.entry.digest, e))?;
                let config = self.read_config(&config_digest)?;
                Ok((created_of(&config), vec![platform_of(&config)]))
            }
            None => {
                let mut created = None;
                let mut platforms = Vec::new();
                for child in image.manifest.children() {
                    if let Some(platform) = child.platform() {
                        let mut text = format!("{}/{}", platform.os(), platform.architecture());
                        if let Some(variant) = platform.variant() {
                            text.push('/');
                            text.push_str(variant);
                        }
                        if text != "unknown/unknown" {
                            platforms.push(text);
                        }
                    }
                    let Ok(child_digest) = descriptor_digest(child) else {
                        continue;
                    };
                    if let Ok(manifest) =
                        self.read_manifest(&child_digest, child.media_type().as_ref())
                    {
                        if let Some(image) = manifest.image() {
                            let config = descriptor_digest(image.config())
                                .ok()
                                .and_then(|d| self.read_config(&d).ok());
                            if let Some(config) = config {
                                created = created.max(created_of(&config));
                            }
                        }
                    }
                }
                Ok((created, platforms))
            }
        }
    }
}
