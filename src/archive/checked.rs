//! A read and fully checked archive, before anything is written anywhere:
//! every image's root, child and built manifests, and where each needed
//! blob's bytes are (staged, or a range of the archive file itself). `load`
//! commits it to the store; `copy archive:` hands it to the engine as a
//! source, so both share every check.

use super::diff_ids::{check_diff_ids, DiffIds};
use super::docker_archive::DockerItem;
use super::load::{Found, LoadedImage, Loader};
use super::read::{index_entries, read_entries, MAX_METADATA};
use super::{ArchiveError, KnownBlobs};
use crate::types::staging::{StagedBlob, Staging};
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

/// Where an archive is read from.
pub enum ArchiveInput<'a> {
    /// A stream (stdin, a pipe, any compression): every file is staged.
    Stream(&'a mut dyn Read),
    /// A file: read in place when it is an uncompressed tar.
    File(&'a std::path::Path),
}

/// An archive whose images all checked out.
pub struct CheckedArchive {
    /// The images, in archive order.
    pub images: Vec<LoadedImage>,
    found: Vec<Found>,
    blobs: BTreeMap<Digest, StagedBlob>,
    /// For reading small blobs back (manifests of an index).
    contents: super::read::Contents,
}

/// Read `input` and check every image: digests, layer counts, diffIDs,
/// blobs a delta leaves out (looked up in `known`). Files are staged in
/// `spool` (or left in place for an uncompressed archive file).
pub fn check(
    spool: &dyn Staging,
    known: &dyn KnownBlobs,
    input: ArchiveInput<'_>,
    archive: &str,
) -> Result<CheckedArchive, ArchiveError> {
    let diff_ids = DiffIds::start();
    let contents = match input {
        ArchiveInput::Stream(input) => read_entries(spool, input, archive, &diff_ids)?,
        ArchiveInput::File(path) => match index_entries(spool, path, archive, &diff_ids)? {
            Some(contents) => contents,
            None => {
                let mut file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
                    archive: archive.to_owned(),
                    source,
                })?;
                read_entries(spool, &mut file, archive, &diff_ids)?
            }
        },
    };
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
        store: spool,
        known,
        contents,
        checks: Vec::new(),
        missing: BTreeSet::new(),
        sizes: BTreeMap::new(),
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
    // A compressed layer read in place had its digest checked with its
    // diffID, in the same read: its reader need not hash it again.
    for staged in loader.contents.staged.iter_mut() {
        if !staged.verified && matches!(precomputed.get(&staged.digest), Some(Ok(_))) {
            staged.verified = true;
        }
    }

    let images: Vec<LoadedImage> = found
        .iter()
        .map(|f| LoadedImage {
            names: f.names.iter().map(ToString::to_string).collect(),
            digest: f.root.digest.clone(),
            id: f.id.clone(),
            media_type: f.root.media_type.clone(),
            platforms: f.platforms.clone(),
            // Its distinct manifests and blobs, as `images` counts them.
            size: f
                .blobs
                .iter()
                .chain(std::iter::once(&f.root.digest))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|digest| loader.sizes.get(digest))
                .sum(),
            link: f.link.clone(),
        })
        .collect();
    // Keep only what the images need, each blob once.
    let Loader { mut contents, .. } = loader;
    let needed: BTreeSet<Digest> = found.iter().flat_map(|f| f.blobs.iter().cloned()).collect();
    let mut blobs: BTreeMap<Digest, StagedBlob> = BTreeMap::new();
    let mut kept = Vec::new();
    for blob in contents.staged.drain(..) {
        if needed.contains(&blob.digest) && !blobs.contains_key(&blob.digest) {
            blobs.insert(blob.digest.clone(), blob);
        } else {
            kept.push(blob);
        }
    }
    contents.staged = kept;
    contents.by_digest.clear();
    Ok(CheckedArchive {
        images,
        found,
        blobs,
        contents,
    })
}

impl CheckedArchive {
    /// The top-level manifest of image `index`.
    pub fn root(&self, index: usize) -> Option<&ParsedManifest> {
        self.found.get(index).map(|f| &f.root)
    }

    /// A manifest of image `index` by digest: one ferry built, or the
    /// archive's bytes (checked against the digest).
    pub fn manifest(
        &self,
        index: usize,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, ArchiveError> {
        let found = self.found.get(index);
        if let Some(built) = found.and_then(|f| f.built.iter().find(|m| &m.digest == digest)) {
            return Ok(built.clone());
        }
        let what = self
            .images
            .get(index)
            .and_then(|i| i.names.first().cloned());
        let what = what.unwrap_or_else(|| digest.to_string());
        let blob = self.blobs.get(digest).ok_or_else(|| {
            self.contents
                .invalid(format!("{what}: manifest {digest} is not in the archive"))
        })?;
        if blob.size > MAX_METADATA {
            return Err(self
                .contents
                .invalid(format!("{what}: manifest {digest} is too large")));
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        blob.open()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|source| ArchiveError::Io {
                archive: self.contents.archive.clone(),
                source,
            })?;
        let parsed = ParsedManifest::parse(bytes.into(), Some(media_type), &what)
            .map_err(|e| self.contents.invalid(e.to_string()))?;
        if &parsed.digest != digest {
            return Err(self.contents.invalid(format!(
                "{what}: blobs/sha256/{} does not match its name: its content hashes to {}",
                digest.hex(),
                parsed.digest
            )));
        }
        Ok(parsed)
    }

    /// Where a blob's bytes are.
    pub fn blob(&self, digest: &Digest) -> Option<&StagedBlob> {
        self.blobs.get(digest)
    }

    /// What the archive adds to a store, for the engine's load to commit
    /// (data first, then names).
    pub fn into_content(self) -> ArchiveContent {
        let mut built = Vec::new();
        let mut images = Vec::new();
        for found in self.found {
            built.extend(found.built);
            images.push(ArchiveEntry {
                root: found.root,
                names: found.names,
                link: found.link,
            });
        }
        ArchiveContent {
            blobs: self.blobs.into_values().collect(),
            built,
            images,
        }
    }
}

/// A checked archive's content, in commit order.
pub struct ArchiveContent {
    /// Every blob the images need that the archive carries (staged, verified).
    pub blobs: Vec<StagedBlob>,
    /// Manifests ferry built (for `docker save`'s legacy layout).
    pub built: Vec<ParsedManifest>,
    pub images: Vec<ArchiveEntry>,
}

/// One image (or referrer) of a checked archive.
pub struct ArchiveEntry {
    pub root: ParsedManifest,
    /// The names it is tagged with (none: kept untagged).
    pub names: Vec<Reference>,
    /// Set for a referrer: kept with its subject, never named.
    pub link: Option<ReferrerLink>,
}
