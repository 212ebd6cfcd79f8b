//! What keeps two runs of one job apart: a file lock beside local state,
//! a lease object beside state in a bucket (renewed in the background; a
//! run whose lease is lost is told to stop), or the shard assignment alone.

use crate::objects::conditional::Lease;
use crate::objects::ObjectError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Holds a job against other runs until dropped (or released).
pub enum JobLock {
    /// An flock on `<store>/ferry/jobs/NAME.lock`.
    Local(std::fs::File),
    /// A lease object, renewed in the background; `lost` is set (and the
    /// run's `cancel` with it) when it can no longer be renewed.
    Lease {
        renewer: tokio::task::JoinHandle<Option<Lease>>,
        stop: Arc<tokio::sync::Notify>,
        lost: Arc<AtomicBool>,
    },
    /// `locking = "shards-only"`: the shard assignment is the lock.
    Shard,
}

impl JobLock {
    /// Whether the lease was lost while the job ran.
    pub fn lost(&self) -> bool {
        matches!(self, JobLock::Lease { lost, .. } if lost.load(Ordering::Relaxed))
    }

    /// Give the lock up (a lease is released with `If-Match`).
    pub async fn release(self) -> Result<(), ObjectError> {
        if let JobLock::Lease { renewer, stop, .. } = self {
            stop.notify_one();
            if let Ok(Some(lease)) = renewer.await {
                lease.release().await?;
            }
        }
        Ok(())
    }
}

/// Who this process is, in leases: `host:pid:random`.
pub(super) fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Renew `lease` every third of its life; when it cannot be renewed before
/// it expires (another worker took it, or the server is gone), set `lost`
/// and `cancel` so the run stops at its next safe point.
pub(super) fn renew_in_background(mut lease: Lease, cancel: Arc<AtomicBool>) -> JobLock {
    let stop = Arc::new(tokio::sync::Notify::new());
    let lost = Arc::new(AtomicBool::new(false));
    let (stop_wait, lost_flag) = (stop.clone(), lost.clone());
    let renewer = tokio::spawn(async move {
        let period = std::time::Duration::from_secs((lease.ttl() / 3).max(1) as u64);
        let mut valid_until = crate::types::time::now_unix() + lease.ttl();
        loop {
            tokio::select! {
                _ = stop_wait.notified() => return Some(lease),
                _ = tokio::time::sleep(period) => {}
            }
            let now = crate::types::time::now_unix();
            match lease.renew(now).await {
                Ok(()) => valid_until = now + lease.ttl(),
                Err(ObjectError::Conflict { .. }) => break,
                Err(error) if now + period.as_secs() as i64 >= valid_until => {
                    tracing::warn!("cannot renew the job's lease: {error}");
                    break;
                }
                Err(error) => tracing::warn!("lease renewal failed, retrying: {error}"),
            }
        }
        lost_flag.store(true, Ordering::Relaxed);
        cancel.store(true, Ordering::Relaxed);
        None
    });
    JobLock::Lease {
        renewer,
        stop,
        lost,
    }
}
