//! Per-job state (last run and result, digests seen per tag, first-seen
//! times, written backups) in `<store>/ferry/jobs/<name>.json` with a lock
//! file beside it, or in a bucket (`[state] url`) with a lease object per
//! job, so any worker can run any job and a new pod continues where the
//! last one stopped.

use super::lock::{holder, renew_in_background, JobLock};
use super::{JobError, Status};
use crate::config::objects::{Locking, StateSpec};
use crate::objects::conditional::{self, Lease, LeaseError, Write};
use crate::objects::{Bucket, ObjectError, ObjectUrl, Objects};
use crate::store::Store;
use crate::types::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Digests a sync saw for one tag at its last successful copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeenTag {
    pub source: Option<Digest>,
    pub target: Option<Digest>,
    /// What referred to the source image then (see `referrers_fingerprint`).
    #[serde(default)]
    pub referrers: Option<String>,
}

/// One archive a backup job wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupRecord {
    pub path: String,
    pub full: bool,
    pub time: i64,
    /// The blobs it holds, kept for the newest archive in a bucket only:
    /// the next delta is made against them without downloading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<std::collections::BTreeSet<Digest>>,
    /// Its size when written: a chain archive of another size was changed
    /// (cut short, replaced) and is no delta's base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Everything a job remembers between runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub last_run: Option<i64>,
    pub last_status: Option<Status>,
    #[serde(default)]
    pub last_changes: usize,
    /// sync: `repository:tag` → digests at the last copy.
    #[serde(default)]
    pub seen: BTreeMap<String, SeenTag>,
    /// prune: tag → (digest, when this job first saw the tag at that digest).
    #[serde(default)]
    pub first_seen: BTreeMap<String, (Digest, i64)>,
    /// sync: tags this job created as backups of overwritten tags.
    #[serde(default)]
    pub backup_tags: Vec<String>,
    /// retag: alias → (the version tag it was pointed at, that digest).
    #[serde(default)]
    pub aliases: BTreeMap<String, (String, Digest)>,
    /// backup: runs that wrote an archive (for `{run}` and `full_every`).
    #[serde(default)]
    pub backup_runs: u64,
    /// backup: archives written, oldest first.
    #[serde(default)]
    pub backups: Vec<BackupRecord>,
    /// backup: the next archive starts a new chain (set by a reset, which
    /// keeps the records of the archives so they rotate as whole chains).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_chain: bool,
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(deserializer)?.as_str() {
            "ok" => Status::Ok,
            "deferred" => Status::Deferred,
            "skipped" => Status::Skipped,
            "stopped" => Status::Stopped,
            _ => Status::Failed,
        })
    }
}

fn dir(store: &Store) -> std::path::PathBuf {
    store.root().join("ferry").join("jobs")
}

fn path(store: &Store, name: &str) -> std::path::PathBuf {
    dir(store).join(format!("{name}.json"))
}

fn fix(name: &str) -> String {
    format!(
        "reset it with `ferry jobs --reset {name}` (or delete it); the job then starts as if it never ran"
    )
}

/// Where job state lives: the store's `ferry/jobs/` folder, or a prefix
/// in a bucket (`[state] url`) shared by every worker.
#[derive(Clone)]
pub enum StateStore {
    Local(Store),
    Objects(Arc<ObjectState>),
}

/// Job state on object storage.
pub struct ObjectState {
    bucket: Bucket,
    prefix: ObjectUrl,
    /// Whether the server enforces conditional writes (probed once).
    pub conditional: bool,
    locking: Locking,
    lease_seconds: i64,
    /// The ETag each job's state had when this process read it.
    etags: Mutex<HashMap<String, Option<String>>>,
}

impl StateStore {
    /// Open `[state]`: probe the bucket once, and refuse leases on a server
    /// that would not enforce them (only warn when `runs` is false: the
    /// caller only reads). `notes` receives what to tell the user.
    pub async fn open(
        store: &Store,
        spec: Option<&StateSpec>,
        objects: &Objects,
        runs: bool,
        notes: &mut Vec<String>,
    ) -> Result<StateStore, JobError> {
        let Some(spec) = spec else {
            return Ok(StateStore::Local(store.clone()));
        };
        let bucket = objects.bucket(&spec.url)?;
        let prefix = match spec.url.key.is_empty() {
            true => String::new(),
            false => format!("{}/", spec.url.key),
        };
        let conditional = conditional::probe(&bucket, &prefix)
            .await
            .map_err(|e| JobError::State(format!("[state] url = {}: {e}", spec.url)))?;
        if !conditional {
            match spec.locking {
                Locking::Leases if !runs => notes.push(format!(
                    "{}: the server does not enforce conditional writes, so `ferry run` will refuse leases there; set locking = \"shards-only\"",
                    spec.url
                )),
                Locking::Leases => return Err(JobError::State(format!(
                    "[state] url = {}: the server at {} does not enforce conditional writes (If-None-Match/If-Match), so leases could not keep two runs of a job apart; set locking = \"shards-only\" in [state] and give each worker its own shard (ferry run --shard I/N, one pod per index)",
                    spec.url,
                    bucket.endpoint()
                ))),
                Locking::ShardsOnly => notes.push(format!(
                    "{}: the server does not enforce conditional writes; relying on shards alone (locking = \"shards-only\")",
                    spec.url
                )),
            }
        }
        Ok(StateStore::Objects(Arc::new(ObjectState {
            bucket,
            prefix: spec.url.clone(),
            conditional,
            locking: spec.locking,
            lease_seconds: spec.lease_seconds,
            etags: Mutex::default(),
        })))
    }

    /// Where a job's state is (for messages).
    pub fn describe(&self, name: &str) -> String {
        match self {
            StateStore::Local(store) => path(store, name).display().to_string(),
            StateStore::Objects(remote) => remote.prefix.join(&format!("{name}.json")).to_string(),
        }
    }

    /// Whether job runs are kept apart by shards alone.
    pub fn on_object_storage(&self) -> bool {
        matches!(self, StateStore::Objects(_))
    }

    /// A job's state (default when it never ran). State that exists but
    /// cannot be read or parsed is an error: an empty state in its place
    /// would make a backup job forget its archive chain, or a prune job its
    /// first-seen times.
    pub async fn load(&self, name: &str) -> Result<JobState, JobError> {
        let fix = fix(name);
        let shown = self.describe(name);
        let bytes = match self {
            StateStore::Local(store) => match std::fs::read(path(store, name)) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(JobError::State(format!(
                        "cannot read job state {shown}: {e}; {fix}"
                    )))
                }
            },
            StateStore::Objects(remote) => {
                let key = remote.prefix.join(&format!("{name}.json")).key;
                let found =
                    remote.bucket.get_small(&key, 64 << 20).await.map_err(|e| {
                        JobError::State(format!("cannot read job state {shown}: {e}"))
                    })?;
                let (bytes, etag) = match found {
                    Some((bytes, etag)) => (Some(bytes.to_vec()), etag),
                    None => (None, None),
                };
                remote
                    .etags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), etag);
                bytes
            }
        };
        match bytes {
            None => Ok(JobState::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| JobError::State(format!("job state {shown} is corrupt ({e}); {fix}"))),
        }
    }

    /// Save a job's state atomically; on object storage, only over the
    /// version this process read (compare-and-swap) where the server
    /// enforces it.
    pub async fn save(&self, name: &str, state: &JobState) -> Result<(), JobError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| JobError::State(format!("cannot encode job state: {e}")))?;
        match self {
            StateStore::Local(store) => {
                let directory = dir(store);
                std::fs::create_dir_all(&directory).map_err(|e| io(&directory, e))?;
                store.write_atomic(&directory.join(format!("{name}.json")), &bytes)?;
            }
            StateStore::Objects(remote) => {
                let key = remote.prefix.join(&format!("{name}.json")).key;
                let read = remote
                    .etags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned();
                let mode = match (remote.conditional, read) {
                    (false, _) => Write::Overwrite,
                    (true, Some(Some(etag))) => Write::Replace(etag),
                    (true, _) => Write::Create,
                };
                let etag = remote.bucket.put_small(&key, bytes, mode).await.map_err(|e| match e {
                    ObjectError::Conflict { .. } => JobError::State(format!(
                        "job state {} changed since this run read it (another worker ran the job); this run's state was not saved",
                        self.describe(name)
                    )),
                    other => JobError::State(format!("cannot save job state: {other}")),
                })?;
                remote
                    .etags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), etag);
            }
        }
        Ok(())
    }

    /// Forget a job's state. Returns whether there was any.
    pub async fn reset(&self, name: &str) -> Result<bool, JobError> {
        match self {
            StateStore::Local(store) => {
                let path = path(store, name);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(JobError::State(format!(
                        "cannot remove {}: {e}",
                        path.display()
                    ))),
                }
            }
            StateStore::Objects(remote) => {
                let key = remote.prefix.join(&format!("{name}.json")).key;
                let existed = remote.bucket.head(&key).await?.is_some();
                remote.bucket.delete(&key).await?;
                Ok(existed)
            }
        }
    }

    /// Take the job's lock without waiting: `None` when another run holds
    /// it (the message says who). `cancel` is set when a lease is lost.
    pub async fn try_lock(
        &self,
        name: &str,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Result<JobLock, String>, JobError> {
        let remote = match self {
            StateStore::Local(store) => {
                let directory = dir(store);
                std::fs::create_dir_all(&directory).map_err(|e| io(&directory, e))?;
                let path = directory.join(format!("{name}.lock"));
                let file = std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                return Ok(match file.try_lock() {
                    Ok(()) => Ok(JobLock::Local(file)),
                    Err(std::fs::TryLockError::WouldBlock) => {
                        Err("another run of this job is still going".into())
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, e)),
                });
            }
            StateStore::Objects(remote) => remote,
        };
        if remote.locking == Locking::ShardsOnly {
            return Ok(Ok(JobLock::Shard));
        }
        let key = remote.prefix.join(&format!("{name}.lease")).key;
        let now = crate::types::time::now_unix();
        let lease = match Lease::acquire(&remote.bucket, &key, &holder(), remote.lease_seconds, now)
            .await
        {
            Ok(lease) => lease,
            Err(LeaseError::Held { holder, until }) => {
                return Ok(Err(format!(
                    "another worker holds this job's lease ({holder}, until {until})"
                )))
            }
            Err(LeaseError::Object(e)) => return Err(e.into()),
        };
        Ok(Ok(renew_in_background(lease, cancel.clone())))
    }
}

/// A job state file or directory that could not be used.
fn io(path: &std::path::Path, source: std::io::Error) -> JobError {
    JobError::Io {
        what: path.display().to_string(),
        source,
    }
}
