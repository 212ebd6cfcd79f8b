//! Store locks, as advisory `flock`s that die with their holder (so a lock
//! is never stale): `ferry/lock` guards index.json and metadata for short
//! read-modify-write steps; `ferry/gc.lock` is held shared by every writer
//! for its whole run and exclusively by gc and prune, so a gc never deletes
//! blobs a running pull has committed but not yet tagged.

use super::{Store, StoreError};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

impl Store {
    /// Take the short exclusive lock over tags and metadata.
    pub fn lock_tags(&self) -> Result<LockGuard, StoreError> {
        self.lock_file("lock", true)
    }

    /// Take the writers' shared lock (pull, load): gc waits for it.
    pub fn lock_writer(&self) -> Result<LockGuard, StoreError> {
        self.lock_file("gc.lock", false)
    }

    /// Take the exclusive gc lock: waits for running writers to finish.
    pub fn lock_gc(&self) -> Result<LockGuard, StoreError> {
        self.lock_file("gc.lock", true)
    }

    fn lock_file(&self, name: &str, exclusive: bool) -> Result<LockGuard, StoreError> {
        let path = self.root.join("ferry").join(name);
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let started = Instant::now();
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // Say who holds it before waiting: a lock never outlives its
                // process (flock), so this is a live ferry doing real work.
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                tracing::warn!(
                    "store {} is locked{}; waiting for it",
                    self.root.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" by another ferry ({holder})")
                    }
                );
                if exclusive {
                    file.lock()
                } else {
                    file.lock_shared()
                }
                .map_err(|e| StoreError::io(&path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
        }
        let waited = started.elapsed();
        if waited > Duration::from_secs(1) {
            tracing::info!(lock = %path.display(), ?waited, "waited for another ferry process");
        }
        if exclusive {
            // Who holds it, for humans looking at a stuck store.
            let _ = file.set_len(0);
            let _ = writeln!(
                file,
                "pid {} since {}",
                std::process::id(),
                crate::types::time::now_unix()
            );
        }
        Ok(LockGuard { _file: file })
    }
}
