//! Archive → store: `load` and `import`. The archive module reads and
//! checks an archive (or builds an image from a root filesystem tar),
//! staging every blob through the store's staging interface; here the
//! checked content is committed — every blob first (each through the
//! store's one verified publish), then the built manifests, then names
//! last, each index commit checking the whole graph — so a load that
//! fails leaves every tag as it was. Also `export`'s reads of the store.

use super::EngineError;
use crate::archive::checked::{check, ArchiveInput, CheckedArchive};
use crate::archive::load::LoadedImage;
use crate::archive::rootfs;
use crate::archive::{ArchiveError, KnownBlobs};
use crate::store::{IndexEntry, Store, StoreError};
use crate::types::{media, Digest, ParsedManifest, Reference};
use std::io::{Read, Write};

/// The store holds a delta archive's left-out blobs when it is what the
/// load commits to.
impl KnownBlobs for Store {
    /// Re-hashed: a delta never builds on a corrupt copy (it is then
    /// missing, and the load says which blobs it needs). Protected from gc
    /// until the load's tags commit.
    fn has(&self, _image: &str, digest: &Digest) -> bool {
        self.claim_verified(digest, None).ok().flatten().is_some()
    }

    fn read(
        &self,
        _image: &str,
        digest: &Digest,
        _manifest: bool,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.read_blob(digest, limit) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(StoreError::MissingBlob(_)) => Ok(None),
            Err(e) => Err(ArchiveError::Known(Box::new(e))),
        }
    }

    fn is_destination(&self) -> bool {
        true
    }
}

/// Read an archive, check it, and (unless `dry_run`) add its images to the store.
pub fn load(
    store: &Store,
    input: &mut dyn Read,
    archive: &str,
    dry_run: bool,
) -> Result<Vec<LoadedImage>, EngineError> {
    load_with(store, store, input, archive, dry_run)
}

/// [`load`], finding a delta's left-out blobs in `known` instead of `store`.
pub fn load_with(
    store: &Store,
    known: &dyn KnownBlobs,
    input: &mut dyn Read,
    archive: &str,
    dry_run: bool,
) -> Result<Vec<LoadedImage>, EngineError> {
    // Staged blobs are private files; blobs the load finds present are
    // claimed (protected) as it checks; the commit checks every graph.
    let checked = check(store, known, ArchiveInput::Stream(input), archive)?;
    let images = checked.images.clone();
    if !dry_run {
        commit(store, checked)?;
    }
    Ok(images)
}

/// Add a checked archive to the store: data first, then names.
pub fn commit(store: &Store, checked: CheckedArchive) -> Result<(), StoreError> {
    let content = checked.into_content();
    for blob in content.blobs {
        store.commit_staged(blob)?;
    }
    for built in &content.built {
        store.commit_bytes(&built.bytes)?;
    }
    for image in &content.images {
        if let Some(link) = &image.link {
            store.add_referrer(IndexEntry::referrer(&image.root, link))?;
            continue;
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
    Ok(())
}

/// `ferry import`: a root filesystem tar (optionally compressed) as a
/// one-layer image named `name`; returns its image ID.
pub fn import(
    store: &Store,
    input: &mut dyn Read,
    source: &str,
    name: &Reference,
    changes: &[String],
) -> Result<Digest, EngineError> {
    let image = rootfs::import(store, input, source, changes)?;
    store.commit_staged(image.layer)?;
    store.commit_bytes(&image.config)?;
    store.commit_bytes(&image.manifest)?;
    store.set_tag(
        name,
        IndexEntry::new(
            media::OCI_MANIFEST,
            image.manifest_digest,
            image.manifest.len() as u64,
        ),
    )?;
    Ok(image.config_digest)
}

/// `ferry export`: the image's layers flattened into one tar on `out`,
/// each layer re-hashed before it is read (a corrupt blob is never
/// exported). `manifest` is the image's single-platform manifest.
pub fn export(
    store: &Store,
    image: &str,
    manifest: &ParsedManifest,
    out: &mut dyn Write,
) -> Result<(), EngineError> {
    // Export reads each layer twice (which entries survive, then the
    // tar): each is re-hashed the first time only.
    let verified = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let open = |digest: &Digest, size: u64| -> std::io::Result<Box<dyn Read>> {
        let mut checked = verified.lock().expect("verified layers");
        if checked.contains(digest) {
            return Ok(Box::new(std::fs::File::open(store.blob_path(digest))?));
        }
        let file = store.open_verified(digest, size)?;
        checked.insert(digest.clone());
        Ok(Box::new(file))
    };
    Ok(rootfs::export(&open, image, manifest, out)?)
}
