//! The archive as a source: `copy archive:FILE DEST`. The archive is read
//! and checked exactly as `load` does (layer counts, diffIDs, every format
//! ferry loads), never into the user's store: an uncompressed archive file
//! is read in place, anything else is staged in a throw-away spool. Each
//! image then goes through the same plan and transfer as any other copy —
//! blobs verified as they stream — so the tag at the destination is written
//! only after everything it points at is there.

use super::source::{ArchiveImageSource, SharedSource};
use crate::archive::checked::{self, ArchiveInput, CheckedArchive};
use crate::archive::load::LoadedImage;
use crate::archive::{ArchiveError, KnownBlobs};
use crate::registry::{Registries, RegistryError};
use crate::store::Store;
use crate::types::{Digest, ParsedManifest, Reference};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;

/// A read and checked archive: an uncompressed archive file is read in
/// place (blobs streamed from their byte ranges, each verified on the way);
/// a stream or a compressed file is staged in a private spool first.
pub struct ArchiveSource {
    /// What the archive holds and where each blob's bytes are.
    pub checked: CheckedArchive,
    dir: PathBuf,
}

impl Drop for ArchiveSource {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ArchiveSource {
    /// Read and check an archive (`name` names it in errors). `known` finds
    /// blobs a delta archive leaves out (at the destination). The spool
    /// lives under `$FERRY_TMPDIR` (else `$TMPDIR`) and is removed when the
    /// source is dropped.
    pub fn read(
        input: ArchiveInput<'_>,
        name: &str,
        known: Option<&dyn KnownBlobs>,
    ) -> Result<Arc<ArchiveSource>, super::EngineError> {
        let base = std::env::var_os("FERRY_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        sweep_spools(&base);
        let dir = base.join(format!(
            "ferry-spool-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let spool = Store::open(&dir)?;
        let mut cleanup = Cleanup(Some(dir));
        let known = known.unwrap_or(&spool);
        let checked = checked::check(&spool, known, input, name)?;
        let dir = cleanup.0.take().expect("spool directory");
        Ok(Arc::new(ArchiveSource { checked, dir }))
    }

    /// The images in the archive, in archive order.
    pub fn images(&self) -> &[LoadedImage] {
        &self.checked.images
    }

    /// The engine source for image `index` of the archive.
    pub fn source(self: &Arc<Self>, index: usize) -> SharedSource {
        Arc::new(ArchiveImageSource {
            archive: self.clone(),
            image: index,
        })
    }

    /// A name for image `index`, for messages.
    pub fn describe(&self, index: usize) -> String {
        self.images()
            .get(index)
            .map(|i| {
                i.names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| i.digest.to_string())
            })
            .unwrap_or_default()
    }

    /// The top-level manifest of image `index`.
    pub fn root(&self, index: usize) -> Result<ParsedManifest, super::EngineError> {
        self.checked
            .root(index)
            .cloned()
            .ok_or_else(|| super::EngineError::Invalid {
                image: self.describe(index),
                message: "no such image in the archive".into(),
            })
    }
}

/// Remove spools left by ferry processes that are gone (killed mid-copy).
fn sweep_spools(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ferry-spool-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = std::path::Path::new("/proc").join(pid.to_string()).exists();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes a spool that was never handed over (an error while checking).
/// Removes a spool directory unless it was taken for the source to own.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Where `copy archive:FILE DEST` puts each image.
#[derive(Debug, Clone)]
pub enum ArchiveTarget {
    /// A registry host or `host/path` prefix: names are rebased under it
    /// (`docker.io/library/nginx:1.25` → `DEST/library/nginx:1.25`).
    Prefix(String),
    /// One full reference, for an archive that holds one image.
    Reference(Reference),
}

impl ArchiveTarget {
    /// Read `DEST`: without a `/` it is a host; with a tag or digest it is
    /// a full reference; otherwise a prefix.
    pub fn parse(text: &str) -> Result<ArchiveTarget, String> {
        let text = text.strip_prefix("docker://").unwrap_or(text);
        let text = text.trim_end_matches('/');
        if !text.contains('/') {
            if text.is_empty() || text.contains('@') {
                return Err(format!("{text:?} is not a registry host or reference"));
            }
            return Ok(ArchiveTarget::Prefix(text.to_owned()));
        }
        let reference = Reference::parse_repository_or_ref(text).map_err(|e| e.to_string())?;
        if reference.tag().is_some() || reference.digest().is_some() {
            Ok(ArchiveTarget::Reference(reference))
        } else {
            Ok(ArchiveTarget::Prefix(text.to_owned()))
        }
    }

    /// The destination repository of the archive image called `name`.
    fn destination_of(&self, name: &str) -> Option<Reference> {
        match self {
            ArchiveTarget::Reference(reference) => Some(reference.clone()),
            ArchiveTarget::Prefix(prefix) => {
                let source = Reference::parse(name).ok()?;
                Reference::parse(&format!("{prefix}/{}", source.repository())).ok()
            }
        }
    }

    /// The destination references for every image, decided before any
    /// copy. Referrers get none of their own: they go with their images.
    pub fn destinations(&self, images: &[LoadedImage]) -> Result<Vec<Vec<Reference>>, String> {
        match self {
            ArchiveTarget::Reference(reference) => {
                let count = images.iter().filter(|i| i.link.is_none()).count();
                if count != 1 {
                    return Err(format!(
                        "the archive holds {count} images; give a registry host or host/path prefix instead of one reference",
                    ));
                }
                Ok(images
                    .iter()
                    .map(|i| match i.link {
                        None => vec![reference.clone()],
                        Some(_) => Vec::new(),
                    })
                    .collect())
            }
            ArchiveTarget::Prefix(prefix) => {
                let all = self.rebased(prefix, images)?;
                // Two images rebased onto one name: the second would
                // silently replace the first. Refused before any copy.
                let mut seen = std::collections::BTreeMap::new();
                for (image, targets) in images.iter().zip(&all) {
                    for target in targets {
                        if let Some(other) = seen.insert(target.to_string(), &image.digest) {
                            if other != &image.digest {
                                return Err(format!(
                                    "two images of the archive ({other} and {}) would both be copied to {target}; copy them one at a time, each to a full reference",
                                    image.digest
                                ));
                            }
                        }
                    }
                }
                Ok(all)
            }
        }
    }

    /// Every image's names rebased under `prefix`.
    fn rebased(&self, prefix: &str, images: &[LoadedImage]) -> Result<Vec<Vec<Reference>>, String> {
        images
                .iter()
                .map(|image| {
                    if image.link.is_some() {
                        return Ok(Vec::new());
                    }
                    if image.names.is_empty() {
                        return Err(format!(
                            "image {} in the archive has no name; copy it to a full reference (DEST with a tag)",
                            image.digest
                        ));
                    }
                    image
                        .names
                        .iter()
                        .map(|name| {
                            let source = Reference::parse(name).map_err(|e| e.to_string())?;
                            let tag = source.tag().unwrap_or("latest");
                            let text = format!("{prefix}/{}:{tag}", source.repository());
                            Reference::parse(&text).map_err(|e| {
                                format!("{name} cannot be rebased under {prefix}: {e}")
                            })
                        })
                        .collect()
                })
                .collect()
    }
}

/// A delta's left-out blobs, looked up at the destination registry (in
/// the repository each image is copied to). Called from a blocking thread.
pub struct DestinationBlobs<'a> {
    pub registries: &'a Registries,
    pub target: &'a ArchiveTarget,
    pub handle: tokio::runtime::Handle,
}

impl DestinationBlobs<'_> {
    fn ask<T>(
        &self,
        image: &str,
        call: impl AsyncFnOnce(
            std::sync::Arc<crate::registry::RegistryClient>,
            String,
        ) -> Result<Option<T>, RegistryError>,
    ) -> Result<Option<T>, RegistryError> {
        let Some(destination) = self.target.destination_of(image) else {
            return Ok(None);
        };
        let client = self.registries.client(destination.registry())?;
        let repository = destination.repository().to_owned();
        self.handle.block_on(call(client, repository))
    }
}

impl KnownBlobs for DestinationBlobs<'_> {
    fn has(&self, image: &str, digest: &Digest) -> bool {
        self.ask(image, async |client, repository| {
            client.blob_size(&repository, digest).await
        })
        .ok()
        .flatten()
        .is_some()
    }

    fn read(
        &self,
        image: &str,
        digest: &Digest,
        manifest: bool,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        let found = self.ask(image, async |client, repository| {
            if manifest {
                return match client.get_manifest(&repository, &digest.to_string()).await {
                    Ok(found) => Ok(Some(found.bytes.to_vec())),
                    Err(error) if error.is_not_found() => Ok(None),
                    Err(error) => Err(error),
                };
            }
            let Some(size) = client.blob_size(&repository, digest).await? else {
                return Ok(None);
            };
            if size > limit {
                return Ok(None);
            }
            let mut stream = client.blob_stream(&repository, digest, size, true);
            let mut bytes = Vec::with_capacity(size as usize);
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok(Some(bytes))
        });
        let found = found.map_err(|error| ArchiveError::Invalid {
            archive: image.to_owned(),
            message: format!("looking up {digest} at the destination: {error}"),
        })?;
        // Checked where they were read; checked again here so that bytes
        // that differ are said to be wrong, never taken for "not there".
        match found {
            Some(bytes) => match crate::types::Verifier::check(digest, &bytes) {
                Ok(()) => Ok(Some(bytes)),
                Err(error) => Err(ArchiveError::Invalid {
                    archive: image.to_owned(),
                    message: format!("the destination's copy of {digest} is wrong: {error}"),
                }),
            },
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str]) -> LoadedImage {
        LoadedImage {
            names: names.iter().map(|n| n.to_string()).collect(),
            digest: crate::types::Digest::sha256_of(b"x"),
            id: crate::types::Digest::sha256_of(b"y"),
            media_type: crate::types::media::OCI_MANIFEST.into(),
            platforms: Vec::new(),
            size: 0,
            link: None,
        }
    }

    #[test]
    fn rebases_names_under_a_host_or_prefix() {
        let images = [
            image(&["docker.io/library/nginx:1.25"]),
            image(&["registry.internal:5000/team/app:2"]),
        ];
        let host = ArchiveTarget::parse("mirror:5000").unwrap();
        let names: Vec<String> = host
            .destinations(&images)
            .unwrap()
            .concat()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["mirror:5000/library/nginx:1.25", "mirror:5000/team/app:2"]
        );
        let prefix = ArchiveTarget::parse("docker://mirror:5000/site/").unwrap();
        let names = prefix.destinations(&images[..1]).unwrap().concat();
        assert_eq!(names[0].to_string(), "mirror:5000/site/library/nginx:1.25");
        let full = ArchiveTarget::parse("mirror:5000/one/app:7").unwrap();
        assert!(full.destinations(&images).is_err());
        assert_eq!(
            full.destinations(&images[..1]).unwrap()[0][0].to_string(),
            "mirror:5000/one/app:7"
        );
        assert!(host.destinations(&[image(&[])]).is_err());
        // Two images that rebase onto one name are refused, not overwritten.
        let mut other = image(&["b.example.com:8443/team/coll:1"]);
        other.digest = crate::types::Digest::sha256_of(b"other");
        let colliding = [image(&["a.example.com/team/coll:1"]), other];
        let refused = host.destinations(&colliding).unwrap_err();
        assert!(refused.contains("mirror:5000/team/coll:1"), "{refused}");
    }
}
