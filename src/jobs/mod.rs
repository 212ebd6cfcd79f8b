//! Config-driven jobs — sync, backup, retag, prune — run once (`ferry run`)
//! or on schedules (`ferry daemon`). Each job reads and writes its state in
//! the store's `ferry/jobs/` folder or a bucket (`[state] url`), holds a
//! per-job lock (a file lock, or a lease object shared by every worker) so
//! it never overlaps itself, stops at a safe point when asked or when its
//! lease is lost, and returns a report of what it changed. Jobs never print.

mod backup;
mod backup_chain;
mod backup_place;
mod catalog;
mod error;
mod lock;
pub mod notify;
mod prune;
mod retag;
pub mod scheduler;
mod state;
mod sync;
mod sync_tag;

pub use error::JobError;
pub use state::{JobState, StateStore};

/// Forget a job's saved state (`ferry jobs --reset NAME`), under its lock.
pub async fn reset_state(state: &StateStore, name: &str) -> Result<bool, JobError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let lock = match state.try_lock(name, &cancel).await? {
        Ok(lock) => lock,
        Err(why) => {
            return Err(JobError::State(format!(
                "job {name} is running ({why}); reset its state when it has finished"
            )))
        }
    };
    let removed = forget(state, name).await;
    lock.release().await?;
    removed
}

/// What a reset forgets: everything but a backup job's record of the
/// archives it wrote (which of them are deltas of which full archive), so
/// the old chains still rotate whole and `{run}` goes on; its next archive
/// is a full one. A state that cannot be read is removed.
async fn forget(state: &StateStore, name: &str) -> Result<bool, JobError> {
    let backups = match state.load(name).await {
        Ok(old) if !old.backups.is_empty() => JobState {
            backups: old.backups,
            backup_runs: old.backup_runs,
            new_chain: true,
            ..JobState::default()
        },
        _ => return state.reset(name).await,
    };
    let mut kept = backups;
    for record in &mut kept.backups {
        record.blobs = None;
    }
    state.save(name, &kept).await?;
    Ok(true)
}

use crate::config::{JobKind, JobSpec, RepositoryTarget};
use crate::engine::{Endpoints, Repository};
use crate::progress::Reporter;
use crate::store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a job needs from the outside world.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    /// The registries and the store, as repositories and sources.
    pub endpoints: Endpoints,
    pub concurrency: usize,
    /// Images a job copies at once.
    pub parallel_images: usize,
    /// This worker's shard, when jobs are split over several.
    pub shard: Option<crate::policy::shard::Shard>,
    pub reporter: Arc<dyn Reporter>,
    /// `ferry run --dry-run`: every job reports instead of changing.
    pub dry_run: bool,
    /// Set on SIGTERM: jobs stop at the next safe point.
    pub cancel: Arc<AtomicBool>,
    /// Set when this run's lease is lost: the run stops too.
    pub lease_lost: Option<Arc<AtomicBool>>,
    /// Where job state (and leases) live.
    pub state: StateStore,
    /// Object storage, for backups to `s3://`.
    pub objects: crate::objects::Objects,
}

impl JobContext {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
            || crate::types::interrupt::requested()
            || self
                .lease_lost
                .as_ref()
                .is_some_and(|lost| lost.load(Ordering::Relaxed))
    }

    /// The repository a job's `repository`/`target` key names: the one
    /// place that tells a registry from the store.
    fn repository(&self, target: &RepositoryTarget) -> Result<Arc<dyn Repository>, Stop> {
        Ok(match target {
            RepositoryTarget::Registry(name) => self.endpoints.registry(name)?,
            RepositoryTarget::Store(name) => self.endpoints.store(name.clone()),
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Failed,
    /// Put off (rate limit below the floor); not a failure.
    Deferred,
    /// Another run of the same job holds its lock.
    Skipped,
    /// Stopped at a safe point by a shutdown request.
    Stopped,
}

/// A status as metrics and logs name it.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Deferred => "deferred",
        Status::Skipped => "skipped",
        Status::Stopped => "stopped",
    }
}

/// What one job run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobReport {
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub dry_run: bool,
    /// One line per change made (or that would be made, in a dry run).
    pub changes: Vec<String>,
    /// Things worth knowing that are not changes (kept tags, skips).
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub started: i64,
    pub seconds: f64,
    /// One entry per image the job looked at (sync, backup).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageResult>,
    /// Blob bytes copied.
    pub bytes: u64,
}

impl JobReport {
    /// The report of a job that was never started (a stop came first).
    pub fn not_started(spec: &JobSpec, why: &str) -> JobReport {
        JobReport {
            name: spec.name.clone(),
            kind: spec.kind.label(),
            status: Status::Stopped,
            dry_run: spec.dry_run,
            changes: Vec::new(),
            notes: vec![why.to_owned()],
            error: None,
            started: crate::types::time::now_unix(),
            seconds: 0.0,
            images: Vec::new(),
            bytes: 0,
        }
    }

    /// "3 changes in 1.2s": how much the run did, for one-line summaries.
    pub fn changes_and_time(&self) -> String {
        format!(
            "{} change{} in {:.1}s",
            self.changes.len(),
            if self.changes.len() == 1 { "" } else { "s" },
            self.seconds
        )
    }
}

/// What a job did with one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageResult {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `copied`, `unchanged`, `failed` or `skipped`.
    pub result: &'static str,
    /// The error (failed) or the reason (skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageResult {
    pub fn new(
        image: String,
        target: Option<String>,
        result: &'static str,
        detail: Option<String>,
    ) -> ImageResult {
        ImageResult {
            image,
            target,
            result,
            detail,
        }
    }

    pub fn failed(image: String, target: Option<String>, error: String) -> ImageResult {
        ImageResult::new(image, target, "failed", Some(error))
    }

    pub fn skipped(image: String, reason: &str) -> ImageResult {
        ImageResult::new(image, None, "skipped", Some(reason.to_owned()))
    }
}

/// A job whose loop went on past failures fails at its end, listing them.
fn failed_images(what: &'static str, failed: &[String], total: usize) -> Result<(), Stop> {
    let others = match total.saturating_sub(failed.len()) {
        0 => "none was done".to_owned(),
        done => format!("the other {done} were done"),
    };
    match failed {
        [] => Ok(()),
        failed => Err(Stop::Failed(JobError::SomeFailed {
            what,
            failed: failed.len(),
            total,
            others,
            list: failed.join("; "),
        })),
    }
}

/// Why a job stopped early.
#[derive(Debug)]
pub enum Stop {
    Failed(JobError),
    Deferred(String),
    Cancelled,
}

impl<E: Into<JobError>> From<E> for Stop {
    fn from(error: E) -> Stop {
        Stop::Failed(error.into())
    }
}

/// Run one job to completion (or to its first failure) and record the result.
pub async fn run_job(context: &JobContext, spec: &JobSpec) -> JobReport {
    let started = crate::types::time::now_unix();
    let clock = std::time::Instant::now();
    let dry_run = context.dry_run || spec.dry_run;
    let mut report = JobReport {
        name: spec.name.clone(),
        kind: spec.kind.label(),
        status: Status::Ok,
        dry_run,
        changes: Vec::new(),
        notes: Vec::new(),
        error: None,
        started,
        seconds: 0.0,
        images: Vec::new(),
        bytes: 0,
    };
    let lost = Arc::new(AtomicBool::new(false));
    let lock = match context.state.try_lock(&spec.name, &lost).await {
        Ok(Ok(lock)) => lock,
        Ok(Err(why)) => {
            report.status = Status::Skipped;
            report.notes.push(format!("{why}; skipped"));
            return report;
        }
        Err(error) => {
            report.status = Status::Failed;
            report.error = Some(format!("{error:#}"));
            return report;
        }
    };
    let context = &JobContext {
        lease_lost: Some(lost),
        ..context.clone()
    };
    let mut job_state = match context.state.load(&spec.name).await {
        Ok(loaded) => loaded,
        Err(error) => {
            // Never run on an empty state in place of one that cannot be read.
            report.status = Status::Failed;
            report.error = Some(format!("{error:#}"));
            report.seconds = clock.elapsed().as_secs_f64();
            let _ = lock.release().await;
            return report;
        }
    };
    // Every log line of this run names the job and the run (`--log-format json`).
    let run_id = format!("{started:x}-{:04x}", rand::random::<u16>());
    let span = tracing::info_span!("job", job = %spec.name, run = %run_id);
    let outcome = tracing::Instrument::instrument(
        run_kind(context, spec, dry_run, &mut job_state, &mut report),
        span,
    )
    .await;
    finish(
        context, spec, report, job_state, outcome, started, clock, lock,
    )
    .await
}

/// Run the job's kind.
async fn run_kind(
    context: &JobContext,
    spec: &JobSpec,
    dry_run: bool,
    job_state: &mut state::JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    match &spec.kind {
        JobKind::Sync(sync) => sync::run(context, sync, dry_run, job_state, report).await,
        JobKind::Backup(backup) => {
            backup::run(context, &spec.name, backup, dry_run, job_state, report).await
        }
        JobKind::Retag(retag) => retag::run(context, retag, dry_run, job_state, report).await,
        JobKind::Prune(prune) => prune::run(context, prune, dry_run, job_state, report).await,
    }
}

/// Record how a run ended, in the report and the job's state.
#[allow(clippy::too_many_arguments)]
async fn finish(
    context: &JobContext,
    spec: &JobSpec,
    mut report: JobReport,
    mut job_state: state::JobState,
    outcome: Result<(), Stop>,
    started: i64,
    clock: std::time::Instant,
    lock: lock::JobLock,
) -> JobReport {
    match outcome {
        Ok(()) => {}
        Err(Stop::Failed(error)) => {
            report.status = Status::Failed;
            report.error = Some(error.chain());
        }
        Err(Stop::Deferred(why)) => {
            report.status = Status::Deferred;
            report.notes.push(why);
        }
        Err(Stop::Cancelled) => report.status = Status::Stopped,
    }
    report.seconds = clock.elapsed().as_secs_f64();
    crate::metrics::job_run(
        &report.name,
        status_label(report.status),
        started,
        report.seconds,
        report.changes.len() as u64,
        report.bytes,
    );
    if lock.lost() {
        // Another worker may own the job now: its state is not ours to write.
        report.status = Status::Failed;
        report.error = Some(format!(
            "lost the job's lease (it could not be renewed before it expired); stopped at a safe point without saving state — another worker may have taken the job over{}",
            report.error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
        ));
        return report;
    }
    if context.dry_run {
        // `run --dry-run` did nothing: it is not a run to remember (a job
        // whose config says `dry_run` keeps its history).
        if let Err(error) = lock.release().await {
            report
                .notes
                .push(format!("could not release the job's lease: {error}"));
        }
        return report;
    }
    job_state.last_run = Some(started);
    job_state.last_status = Some(report.status);
    job_state.last_changes = report.changes.len();
    if let Err(error) = context.state.save(&spec.name, &job_state).await {
        report
            .notes
            .push(format!("could not save job state: {error:#}"));
        if report.status == Status::Ok {
            report.status = Status::Failed;
            report.error = Some(format!("{error:#}"));
        }
    }
    if let Err(error) = lock.release().await {
        report
            .notes
            .push(format!("could not release the job's lease: {error}"));
    }
    report
}
