//! Manifests and indexes (Docker v2 schema 2, manifest lists, OCI) parsed
//! from their exact bytes. The bytes are kept as received so digests survive
//! every copy; parsing only reads them. Ambiguous documents (an index with
//! layers, a manifest with `manifests`, a `mediaType` that contradicts the
//! Content-Type) are refused as in the fix for CVE-2021-41190.

use super::digest::Digest;
use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Media type names ferry recognises.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// The empty descriptor's media type (`{}`), used as an artifact's config.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// The `Accept` header for manifest requests: every type we can parse.
    pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    /// Whether `media_type` names an index or manifest list.
    pub fn is_index(media_type: &str) -> bool {
        media_type == DOCKER_LIST || media_type == OCI_INDEX
    }

    /// Whether a config media type is a container image's (with rootfs
    /// diffIDs, history, a platform), as opposed to an OCI artifact's.
    pub fn is_image_config(media_type: &str) -> bool {
        media_type == DOCKER_CONFIG || media_type == OCI_CONFIG
    }

    /// Whether a layer media type is a filesystem tar (plain, gzip, zstd,
    /// non-distributable): what a container runtime unpacks.
    pub fn is_tar_layer(media_type: &str) -> bool {
        media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.")
    }

    /// Whether a manifest with this config and these layers is a container
    /// image a runtime can run — an image config over filesystem tars —
    /// and so has diffIDs to check. Everything else is an artifact (a
    /// signature whose config is `{}` under an image-config type, an SBOM,
    /// a Helm chart, a tar-typed config): only its blobs' digests count.
    /// The one rule every door (`load`, `save`'s `manifest.json`, `export`,
    /// `images`) applies.
    pub fn is_container_image<'a>(
        config_type: &str,
        mut layer_types: impl Iterator<Item = &'a str>,
    ) -> bool {
        is_image_config(config_type) && layer_types.all(is_tar_layer)
    }

    /// Whether `media_type` names a single-image manifest.
    pub fn is_image_manifest(media_type: &str) -> bool {
        media_type == DOCKER_MANIFEST || media_type == OCI_MANIFEST
    }
}

/// Largest image config ferry reads as one, at every door (an archive's
/// metadata files have the same limit); a bigger "config" is an
/// artifact's payload, not read for its platform or history.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// Largest manifest ferry reads (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Most descriptors an index may list.
pub const MAX_INDEX_ENTRIES: usize = 10_000;
/// Most layers a manifest may list.
pub const MAX_LAYERS: usize = 1_000;

/// Why manifest bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} uses Docker image manifest schema 1, which ferry does not support; re-push it with a current Docker or skopeo (schema 2)")]
    Schema1 { what: String },
    #[error("{what} is not a manifest ferry understands (media type {media_type:?})")]
    UnknownType { what: String, media_type: String },
    #[error("{what} is ambiguous: {reason} (refused, see CVE-2021-41190)")]
    Ambiguous { what: String, reason: String },
    #[error("{what} is not valid manifest JSON: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{what} is larger than the {limit}-byte manifest limit")]
    TooLarge { what: String, limit: usize },
    #[error("{what} lists {count} entries; the limit is {limit}")]
    TooManyEntries {
        what: String,
        count: usize,
        limit: usize,
    },
    #[error("{what} holds an invalid descriptor digest: {source}")]
    Digest {
        what: String,
        source: super::digest::DigestError,
    },
}

/// A parsed image manifest or index.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// A manifest with its exact bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
    pub manifest: Manifest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    fs_layers: Option<IgnoredAny>,
}

impl ParsedManifest {
    /// Parse `bytes`; `content_type` is the transport's claim (HTTP
    /// Content-Type or a descriptor's media type), `what` names the document
    /// in errors (`docker.io/library/nginx:1.25`).
    pub fn parse(
        bytes: Bytes,
        content_type: Option<&str>,
        what: &str,
    ) -> Result<ParsedManifest, ManifestError> {
        let what = what.to_owned();
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                what,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|source| ManifestError::Json {
                what: what.clone(),
                source,
            })?;
        let content_type = content_type
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .filter(|t| {
                !t.is_empty() && *t != "application/json" && *t != "application/octet-stream"
            });
        for schema1 in [media::DOCKER_SCHEMA1, media::DOCKER_SCHEMA1_SIGNED] {
            if content_type == Some(schema1) || probe.media_type.as_deref() == Some(schema1) {
                return Err(ManifestError::Schema1 { what });
            }
        }
        if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
            return Err(ManifestError::Schema1 { what });
        }
        if let (Some(claimed), Some(field)) = (content_type, probe.media_type.as_deref()) {
            if claimed != field {
                return Err(ManifestError::Ambiguous {
                    what,
                    reason: format!("served as {claimed} but its mediaType says {field}"),
                });
            }
        }
        let media_type = match probe.media_type.as_deref().or(content_type) {
            Some(t) => t.to_owned(),
            None if probe.manifests.is_some() => media::OCI_INDEX.to_owned(),
            None => media::OCI_MANIFEST.to_owned(),
        };
        let is_index = media::is_index(&media_type);
        if !is_index && !media::is_image_manifest(&media_type) {
            return Err(ManifestError::UnknownType { what, media_type });
        }
        if is_index && (probe.layers.is_some() || probe.config.is_some()) {
            return Err(ManifestError::Ambiguous {
                what,
                reason: "an index that also has layers or config".into(),
            });
        }
        if !is_index && probe.manifests.is_some() {
            return Err(ManifestError::Ambiguous {
                what,
                reason: "a manifest that also lists manifests".into(),
            });
        }
        let json = |source| ManifestError::Json {
            what: what.clone(),
            source,
        };
        let manifest = if is_index {
            let index: ImageIndex = serde_json::from_slice(&bytes).map_err(json)?;
            if index.manifests().len() > MAX_INDEX_ENTRIES {
                return Err(ManifestError::TooManyEntries {
                    what,
                    count: index.manifests().len(),
                    limit: MAX_INDEX_ENTRIES,
                });
            }
            Manifest::Index(Box::new(index))
        } else {
            let image: ImageManifest = serde_json::from_slice(&bytes).map_err(json)?;
            if image.layers().len() > MAX_LAYERS {
                return Err(ManifestError::TooManyEntries {
                    what,
                    count: image.layers().len(),
                    limit: MAX_LAYERS,
                });
            }
            Manifest::Image(Box::new(image))
        };
        let parsed = ParsedManifest {
            digest: Digest::sha256_of(&bytes),
            bytes,
            media_type,
            manifest,
        };
        // Validate every child digest now, so later code can trust them.
        for child in parsed.children() {
            descriptor_digest(child).map_err(|source| ManifestError::Digest {
                what: what.clone(),
                source,
            })?;
        }
        Ok(parsed)
    }

    /// Whether this is an index or manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self.manifest, Manifest::Index(_))
    }

    /// Direct children: an index's manifests, or a manifest's config then layers.
    pub fn children(&self) -> Vec<&Descriptor> {
        match &self.manifest {
            Manifest::Index(index) => index.manifests().iter().collect(),
            Manifest::Image(image) => std::iter::once(image.config())
                .chain(image.layers().iter())
                .collect(),
        }
    }

    /// The image manifest, when this is one.
    pub fn image(&self) -> Option<&ImageManifest> {
        match &self.manifest {
            Manifest::Image(image) => Some(image),
            Manifest::Index(_) => None,
        }
    }

    /// Whether this is a container image (see [`media::is_container_image`]).
    pub fn is_container_image(&self) -> bool {
        self.image().is_some_and(|image| {
            let layers: Vec<String> = image
                .layers()
                .iter()
                .map(|l| l.media_type().to_string())
                .collect();
            media::is_container_image(
                image.config().media_type().as_ref(),
                layers.iter().map(String::as_str),
            )
        })
    }

    /// The index, when this is one.
    pub fn index(&self) -> Option<&ImageIndex> {
        match &self.manifest {
            Manifest::Index(index) => Some(index),
            Manifest::Image(_) => None,
        }
    }
}

/// A descriptor's digest, validated with ferry's strict grammar.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest, super::digest::DigestError> {
    descriptor.digest().to_string().parse()
}

/// Whether a descriptor is a foreign (non-distributable) layer that
/// registries do not serve; ferry never fetches its `urls` (CVE-2020-15157).
pub fn is_foreign_layer(descriptor: &Descriptor) -> bool {
    let media_type = descriptor.media_type().to_string();
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_schema1_and_ambiguous_documents() {
        let schema1 = Bytes::from_static(br#"{"schemaVersion":1,"fsLayers":[]}"#);
        assert!(matches!(
            ParsedManifest::parse(schema1, None, "x"),
            Err(ManifestError::Schema1 { .. })
        ));
        let both = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"layers":[]}"#,
        );
        assert!(matches!(
            ParsedManifest::parse(both, None, "x"),
            Err(ManifestError::Ambiguous { .. })
        ));
        let index = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
        let lie = ParsedManifest::parse(index.clone(), Some(media::OCI_MANIFEST), "x");
        assert!(matches!(lie, Err(ManifestError::Ambiguous { .. })));
        let parsed = ParsedManifest::parse(index, Some(media::OCI_INDEX), "x").unwrap();
        assert!(parsed.is_index());
    }

    #[test]
    fn refuses_hostile_child_digests() {
        let bad = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc/passwd","size":1}]}"#,
        );
        assert!(ParsedManifest::parse(bad, None, "x").is_err());
    }
}
