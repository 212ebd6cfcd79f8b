//! Per-blob protection from gc: the store's one answer to "a writer has
//! committed this blob, and the manifest that will reference it is not
//! committed yet". Every commit of a blob into the store — a pull, a load,
//! an import, a push into `ferry serve` — and every "already there" a
//! writer relies on, records a protection for that one blob under the
//! writers' shared lock: a file `ferry/protect/<alg>-<hex>.<expiry>.<owner>-<n>`.
//! gc (under the exclusive lock) keeps every blob with an unexpired
//! protection and deletes expired ones. An index commit (a tag, a
//! referrer, an untagged image) checks, under the same shared lock, that
//! everything it reaches is present, and then drops the protections that
//! same writer (store handle) recorded for those blobs: they are referenced
//! now. Another writer's protection of a shared blob is never dropped, and
//! a server's protections (one handle for many clients) only expire.
//! Protection is never per repository and never tied to a request or a
//! process: a killed writer's blobs stay protected until the time runs
//! out, then are garbage.

use super::{Store, StoreError};
use crate::types::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

impl Store {
    fn protect_dir(&self) -> PathBuf {
        self.root.join("ferry").join("protect")
    }

    /// Record a protection for `digest`, for this handle's protection time.
    /// Callers hold the writers' lock (see [`Store::committing`]).
    fn protect_locked(&self, digest: &Digest) -> Result<(), StoreError> {
        let expiry = crate::types::time::now_unix() + self.protection.as_secs() as i64;
        let dir = self.protect_dir();
        let path = dir.join(format!(
            "{}-{}.{expiry}.{:x}-{:x}",
            digest.algorithm().name(),
            digest.hex(),
            self.owner,
            rand::random::<u32>()
        ));
        match std::fs::File::create(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A store made before protections existed.
                std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
                std::fs::File::create(&path)
                    .map(drop)
                    .map_err(|e| StoreError::io(&path, e))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Run one commit section under the writers' shared lock (gc excluded).
    pub(super) fn committing<T>(
        &self,
        section: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writers = self.lock_writer()?;
        section()
    }

    /// Publish through `publish` (a rename into `blobs/`) with the blob's
    /// protection recorded first, both under the writers' lock.
    pub(super) fn commit_protected(
        &self,
        digest: &Digest,
        publish: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.committing(|| {
            self.protect_locked(digest)?;
            publish()
        })
    }

    /// The blob's size when the store has it (with `size`, only when it is
    /// that size), protected from gc like a blob this handle committed: the
    /// "already there" a writer skips its transfer on.
    pub fn claim(&self, digest: &Digest, size: Option<u64>) -> Result<Option<u64>, StoreError> {
        self.committing(|| match self.blob_size(digest) {
            Some(found) if size.is_none_or(|s| s == found) => {
                self.protect_locked(digest)?;
                Ok(Some(found))
            }
            _ => Ok(None),
        })
    }

    /// [`Store::claim`] off the async threads (the lock may wait for a gc).
    pub async fn claim_async(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let (store, digest) = (self.clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.claim(&digest, size))
            .await
            .unwrap_or_else(|e| Err(StoreError::Conflict(format!("claim stopped: {e}"))))
    }

    /// [`Store::claim_async`] that also re-hashes the blob it finds: a copy
    /// that fails its digest counts as absent (a warning names it), so the
    /// transfer fetches it again and the verified bytes replace it. What a
    /// pull or copy into the store skips its download on.
    pub async fn claim_verified_async(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<u64>, StoreError> {
        let (store, digest) = (self.clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.claim_verified(&digest, Some(size)))
            .await
            .unwrap_or_else(|e| Err(StoreError::Conflict(format!("claim stopped: {e}"))))
    }

    /// [`Store::claim`] that re-hashes the blob it finds (blocking): a copy
    /// that fails its digest counts as absent, with a warning naming it.
    pub fn claim_verified(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(found) = self.claim(digest, size)? else {
            return Ok(None);
        };
        let path = self.blob_path(digest);
        match super::maintenance::hash_file(&path, digest) {
            Ok((actual, _)) if &actual == digest => Ok(Some(found)),
            Ok((actual, _)) => {
                tracing::warn!(
                    "the store's blob {digest} ({}) is corrupt: its content hashes to {actual}; fetching it again replaces it",
                    path.display()
                );
                Ok(None)
            }
            Err(error) => Err(StoreError::io(&path, error)),
        }
    }

    /// Everything `digest` reaches, each blob present with its declared
    /// size: what an index commit checks under the writers' lock, so a tag
    /// never points at missing data and every command can read what it
    /// points at.
    pub(super) fn complete_graph(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<BTreeMap<Digest, u64>, StoreError> {
        let reached = self.reachable(digest, media_type)?;
        // An index's children are the sizes it declares (reachable() keeps
        // each manifest's real length).
        self.check_declared_sizes(digest, media_type, &reached, &mut BTreeSet::new())?;
        for (blob, &size) in &reached {
            match self.blob_size(blob) {
                Some(found) if found == size => {}
                Some(found) => {
                    return Err(StoreError::Invalid {
                        image: digest.to_string(),
                        message: format!(
                            "it names {blob} as {size} bytes, but the stored blob has {found}"
                        ),
                    })
                }
                None => return Err(StoreError::MissingBlob(blob.clone())),
            }
        }
        Ok(reached)
    }

    /// Every index in the graph declares its children's real sizes.
    fn check_declared_sizes(
        &self,
        digest: &Digest,
        media_type: &str,
        reached: &BTreeMap<Digest, u64>,
        seen: &mut BTreeSet<Digest>,
    ) -> Result<(), StoreError> {
        if !seen.insert(digest.clone()) {
            return Ok(());
        }
        let manifest = self.read_manifest(digest, media_type)?;
        if !manifest.is_index() {
            return Ok(());
        }
        for child in manifest.children() {
            let child_digest = crate::types::manifest::descriptor_digest(child).map_err(|e| {
                StoreError::Invalid {
                    image: digest.to_string(),
                    message: e.to_string(),
                }
            })?;
            if reached.get(&child_digest) != Some(&child.size()) {
                return Err(StoreError::Invalid {
                    image: digest.to_string(),
                    message: format!(
                        "it names {child_digest} as {} bytes, but that manifest has {}",
                        child.size(),
                        reached.get(&child_digest).copied().unwrap_or(0)
                    ),
                });
            }
            self.check_declared_sizes(&child_digest, child.media_type().as_ref(), reached, seen)?;
        }
        Ok(())
    }

    /// Drop this writer's protections of blobs an index entry now references.
    pub(super) fn unprotect(&self, blobs: &BTreeMap<Digest, u64>) {
        if !self.release_on_commit {
            return;
        }
        let Ok(listing) = std::fs::read_dir(self.protect_dir()) else {
            return;
        };
        let mine = format!(".{:x}-", self.owner);
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some((digest, _)) = parse_name(&name) else {
                continue;
            };
            if blobs.contains_key(&digest) && name.contains(&mine) {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }

    /// The blobs with an unexpired protection; expired protections are
    /// deleted. Callers hold the exclusive gc lock.
    pub(super) fn protected(&self, dry_run: bool) -> Result<BTreeSet<Digest>, StoreError> {
        let dir = self.protect_dir();
        let now = crate::types::time::now_unix();
        let mut live = BTreeSet::new();
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(live),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for item in listing {
            let item = item.map_err(|e| StoreError::io(&dir, e))?;
            match parse_name(&item.file_name().to_string_lossy()) {
                Some((digest, expiry)) if expiry > now => {
                    live.insert(digest);
                }
                _ if !dry_run => {
                    let _ = std::fs::remove_file(item.path());
                }
                _ => {}
            }
        }
        Ok(live)
    }
}

impl Store {
    /// Delete expired protections (they protect nothing); a long-running
    /// server calls this now and then so the directory stays small
    /// without a gc. Safe beside every writer and gc.
    pub fn sweep_expired_protections(&self) {
        let now = crate::types::time::now_unix();
        let Ok(listing) = std::fs::read_dir(self.protect_dir()) else {
            return;
        };
        for item in listing.flatten() {
            if parse_name(&item.file_name().to_string_lossy()).is_some_and(|(_, e)| e <= now) {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
}

/// `<alg>-<hex>.<expiry>.<owner>-<n>` → (digest, expiry).
fn parse_name(name: &str) -> Option<(Digest, i64)> {
    let mut parts = name.split('.');
    let (algorithm, hex) = parts.next()?.split_once('-')?;
    let expiry = parts.next()?.parse().ok()?;
    let digest = format!("{algorithm}:{hex}").parse().ok()?;
    Some((digest, expiry))
}

/// Whether an ingest file (`<label>-<pid>-<n>.partial`) belongs to a live
/// process on this machine; files without a pid say nothing.
pub(super) fn owner_alive(name: &str) -> bool {
    let Some(pid) = name
        .split('-')
        .rev()
        .nth(1)
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Linux's /proc lists live processes; without it, assume alive (the
    // file then goes at the age limit).
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protections_last_until_their_time_or_a_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = Digest::sha256_of(b"x");
        store.commit_protected(&digest, || Ok(())).unwrap();
        assert!(store.protected(false).unwrap().contains(&digest));
        // Another writer's commit leaves this one's protection alone.
        let other = Store::open(dir.path()).unwrap();
        other.unprotect(&BTreeMap::from([(digest.clone(), 1)]));
        assert!(store.protected(false).unwrap().contains(&digest));
        // A server's handle never releases: its clients share it.
        let server = store
            .clone()
            .with_protection(std::time::Duration::from_secs(60));
        server.unprotect(&BTreeMap::from([(digest.clone(), 1)]));
        assert!(store.protected(false).unwrap().contains(&digest));
        store.unprotect(&BTreeMap::from([(digest.clone(), 1)]));
        assert!(store.protected(false).unwrap().is_empty());
        // An expired protection protects nothing and is deleted.
        let expired = store.clone().with_protection(std::time::Duration::ZERO);
        expired.commit_protected(&digest, || Ok(())).unwrap();
        assert!(store.protected(false).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(store.protect_dir()).unwrap().count(), 0);
        // A server's sweep removes expired ones and keeps live ones.
        expired.commit_protected(&digest, || Ok(())).unwrap();
        store.commit_protected(&digest, || Ok(())).unwrap();
        store.sweep_expired_protections();
        assert_eq!(std::fs::read_dir(store.protect_dir()).unwrap().count(), 1);
        assert!(store.protected(true).unwrap().contains(&digest));
    }

    #[test]
    fn ingest_owners_are_read_from_the_name() {
        assert!(!owner_alive("sha256-abc.partial"));
        assert!(owner_alive(&format!(
            "upload-{}-1f.partial",
            std::process::id()
        )));
        assert!(owner_alive("stage-1-1f.partial"), "pid 1 always runs");
        assert!(!owner_alive("stage-999999999-1f.partial"));
    }
}
