//! Per-job state in `<store>/ferry/jobs/<name>.json` (last run and result,
//! digests seen per tag, first-seen times, written backups) and the
//! per-job lock file beside it.

use super::Status;
use crate::store::Store;
use crate::types::Digest;
use std::collections::BTreeMap;

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

/// A job's state (default when it never ran). A file that exists but cannot
/// be read or parsed is an error: an empty state in its place would make a
/// backup job forget its archive chain, or a prune job its first-seen times.
pub fn load(store: &Store, name: &str) -> anyhow::Result<JobState> {
    let path = path(store, name);
    let fix = format!(
        "reset it with `ferry jobs --reset {name}` (or delete the file); the job then starts as if it never ran"
    );
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("job state {} is corrupt ({e}); {fix}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState::default()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read job state {}: {e}; {fix}",
            path.display()
        )),
    }
}

/// Forget a job's state (`ferry jobs --reset NAME`). Returns whether there was any.
pub fn reset(store: &Store, name: &str) -> anyhow::Result<bool> {
    let path = path(store, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot remove {}: {e}", path.display())),
    }
}

/// Save a job's state atomically.
pub fn save(store: &Store, name: &str, state: &JobState) -> anyhow::Result<()> {
    let directory = dir(store);
    std::fs::create_dir_all(&directory)?;
    let bytes = serde_json::to_vec_pretty(state)?;
    store.write_atomic(&directory.join(format!("{name}.json")), &bytes)?;
    Ok(())
}

/// Take the job's lock without waiting: `None` when another run holds it.
pub fn try_lock(store: &Store, name: &str) -> anyhow::Result<Option<std::fs::File>> {
    let directory = dir(store);
    std::fs::create_dir_all(&directory)?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(directory.join(format!("{name}.lock")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}
