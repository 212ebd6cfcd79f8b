//! Store locks, as advisory `flock`s that die with their holder (so a lock
//! is never stale): `ferry/lock` guards index.json and metadata for short
//! read-modify-write steps; `ferry/gc.lock` is held shared for the short
//! commit sections of writers (a blob published with its protection, a tag
//! set after its references were checked) and exclusively by gc, rmi and
//! prune while they decide and delete. No writer holds it across a wait for
//! the network or a client: what a running pull or push has committed but
//! not yet tagged is protected per blob (`store::protect`), not by a lock.
//! A handle made with [`Store::with_lock_wait`] gives up after that long
//! with [`StoreError::Busy`] instead of waiting without end.

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

    /// Take the writers' shared lock for one commit section: gc waits for it.
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
                // The file names the last exclusive holder only: when a
                // shared lock can be had, writers hold it (whose pids no file
                // names), and the name there is stale.
                let shared_only = exclusive
                    && File::open(&path).is_ok_and(|probe| probe.try_lock_shared().is_ok());
                let holder = match shared_only {
                    true => String::new(),
                    false => std::fs::read_to_string(&path).unwrap_or_default(),
                };
                // Tasks of one process (parallel images) take turns too:
                // that is no other ferry, and not worth a warning.
                let ours = holder
                    .split_whitespace()
                    .nth(1)
                    .and_then(|pid| pid.parse::<u32>().ok())
                    == Some(std::process::id());
                let holder = match holder.trim() {
                    _ if shared_only => {
                        " by another ferry writing to it (a pull, load or push)".to_owned()
                    }
                    _ if ours => " by another task of this ferry".to_owned(),
                    "" => String::new(),
                    holder => format!(" by another ferry ({holder})"),
                };
                match self.lock_wait {
                    None => {
                        if ours {
                            tracing::debug!(
                                "store {} is locked{holder}; waiting for it",
                                self.root.display()
                            );
                        } else {
                            tracing::warn!(
                                "store {} is locked{holder}; waiting for it",
                                self.root.display()
                            );
                        }
                        if exclusive {
                            file.lock()
                        } else {
                            file.lock_shared()
                        }
                        .map_err(|e| StoreError::io(&path, e))?;
                    }
                    Some(wait) => {
                        wait_for_lock(&file, exclusive, started + wait).map_err(|e| match e {
                            None => StoreError::Busy(format!(
                                "{} is held{holder} for longer than {} s (a gc or prune running?)",
                                name,
                                wait.as_secs()
                            )),
                            Some(e) => StoreError::io(&path, e),
                        })?;
                    }
                }
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

/// Poll for a lock until `deadline`: `Err(None)` when it passed.
fn wait_for_lock(
    file: &File,
    exclusive: bool,
    deadline: Instant,
) -> Result<(), Option<std::io::Error>> {
    let mut pause = Duration::from_millis(5);
    loop {
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::Error(e)) => return Err(Some(e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        // Short pauses: a waiter that blocks in flock must not always win.
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreError};

    #[test]
    fn a_gc_waiting_on_writers_never_names_a_stale_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        // This process held the gc lock once: the file still names it.
        drop(store.lock_gc().unwrap());
        let writer = store.lock_writer().unwrap();
        let waiting = store
            .clone()
            .with_lock_wait(std::time::Duration::from_millis(20));
        match waiting.lock_gc() {
            Err(StoreError::Busy(message)) => assert!(
                message.contains("writing to it") && !message.contains("this ferry"),
                "{message}"
            ),
            other => panic!("not busy: {:?}", other.err()),
        }
        drop(writer);
        waiting.lock_gc().unwrap();
    }
}
