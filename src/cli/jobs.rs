//! Job commands: `run` (once, with a summary and exit code), `daemon`
//! (schedules, SIGTERM), `jobs` (table of schedules and results) and
//! `config check`.

use super::output::{eline, json, println, table};
use super::{wait_for_shutdown, Context, ReadStore, UsageError};
use crate::config::JobSpec;
use crate::jobs::scheduler::{next_due, run_daemon};
use crate::jobs::{run_job, JobContext, JobReport, StateStore, Status};
use crate::policy::shard::Shard;
use crate::store::Store;
use crate::types::time::{format_rfc3339, now_unix};
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Where job state lives, from `[state]` (probed once per process).
async fn state_store(
    context: &Context,
    store: Option<&Store>,
    runs: bool,
) -> anyhow::Result<StateStore> {
    let mut notes = Vec::new();
    // Listing reads state and creates no store where none is yet.
    let store = match (store, runs || context.has_store()) {
        (Some(store), _) => store.clone(),
        (None, true) => context.store()?,
        (None, false) => crate::store::Store::for_reading(&context.store_path),
    };
    let state = StateStore::open(
        &store,
        context.config.state.as_ref(),
        &context.objects(),
        runs,
        &mut notes,
    )
    .await?;
    for note in notes {
        tracing::warn!("{note}");
    }
    Ok(state)
}

/// The context jobs run in. A dry run where no store exists creates none:
/// it reads an empty scratch store (and so an empty state), which the
/// returned guard removes.
async fn job_context(
    context: &Context,
    dry_run: bool,
    parallel_images: Option<usize>,
) -> anyhow::Result<(JobContext, Option<ReadStore>)> {
    if !context.verbose {
        context.reporter.quiet_lines();
    }
    let scratch = match dry_run && !context.has_store() {
        true => Some(context.store_to_read()?),
        false => None,
    };
    let store = match &scratch {
        Some(read) => Store::clone(read),
        None => context.store()?,
    };
    let job_context = JobContext {
        state: state_store(context, Some(&store), true).await?,
        objects: context.objects(),
        lease_lost: None,
        shard: None,
        endpoints: crate::engine::Endpoints::new(Arc::new(context.registries()), store.clone()),
        store,
        concurrency: context.config.concurrency,
        parallel_images: parallel_images
            .unwrap_or(context.config.parallel_images)
            .clamp(1, 64),
        reporter: context.reporter.clone(),
        dry_run,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    Ok((job_context, scratch))
}

fn print_report(report: &JobReport) -> std::io::Result<()> {
    let status = match report.status {
        Status::Ok if report.dry_run => "dry run",
        Status::Failed => "FAILED",
        other => crate::jobs::status_label(other),
    };
    println(&format!(
        "{} ({}): {status}, {}",
        report.name,
        report.kind,
        report.changes_and_time()
    ))?;
    for change in &report.changes {
        println(&format!("  {change}"))?;
    }
    for note in &report.notes {
        println(&format!("  note: {note}"))?;
    }
    if let Some(error) = &report.error {
        println(&format!("  error: {error}"))?;
    }
    Ok(())
}

fn selected_jobs(context: &Context, names: &[String]) -> anyhow::Result<Vec<JobSpec>> {
    if context.config.path.is_none() {
        return Err(UsageError(
            "no config file: pass --config FILE, set FERRY_CONFIG, or create ./ferry.toml".into(),
        )
        .into());
    }
    for name in names {
        if !context.config.jobs.iter().any(|j| &j.name == name) {
            let known: Vec<&str> = context
                .config
                .jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect();
            return Err(UsageError(format!(
                "no job named {name:?} in the config (jobs: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    Ok(context
        .config
        .jobs
        .iter()
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .cloned()
        .collect())
}

/// `ferry run`.
/// This worker's shard: `--shard I/N` (or `FERRY_SHARD`), or `--shards N`
/// with the index from Kubernetes' `JOB_COMPLETION_INDEX`.
pub fn shard_of(shard: Option<&str>, shards: Option<u32>) -> anyhow::Result<Option<Shard>> {
    match (shard, shards) {
        (Some(text), _) => Ok(Some(
            Shard::parse(text).map_err(|e| UsageError(format!("--shard {e}")))?,
        )),
        (None, Some(count)) => {
            let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
                UsageError(
                    "--shards N takes this worker's index from JOB_COMPLETION_INDEX, which is not set; use --shard I/N".into(),
                )
            })?;
            Ok(Some(
                Shard::parse(&format!("{}/{count}", index.trim()))
                    .map_err(|e| UsageError(format!("--shards with JOB_COMPLETION_INDEX: {e}")))?,
            ))
        }
        (None, None) => Ok(None),
    }
}

/// Whether this worker runs `spec`: its shard owns the job's name, or the
/// job splits itself by repository (every shard runs its share).
fn runs_here(spec: &JobSpec, shard: Option<Shard>) -> bool {
    shard.is_none_or(|shard| splits_by_repository(spec) || shard.takes(&spec.name))
}

fn splits_by_repository(spec: &JobSpec) -> bool {
    matches!(&spec.kind, crate::config::JobKind::Sync(sync) if sync.split_repositories)
}

pub async fn run(
    context: &Context,
    names: &[String],
    dry_run: bool,
    parallel_images: Option<usize>,
    shard: Option<Shard>,
) -> anyhow::Result<ExitCode> {
    let mut jobs = selected_jobs(context, names)?;
    jobs.retain(|spec| runs_here(spec, shard));
    let (mut job_context, _scratch) = job_context(context, dry_run, parallel_images).await?;
    job_context.shard = shard;
    let cancel = job_context.cancel.clone();
    tokio::spawn(async move {
        wait_for_shutdown().await;
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut reports = Vec::new();
    for spec in &jobs {
        if job_context
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Stopped before this job began: it is reported, not run.
            reports.push(JobReport::not_started(
                spec,
                "stopped by a signal before it started",
            ));
            continue;
        }
        let report = run_job(&job_context, spec).await;
        context.reporter.clear();
        crate::jobs::notify::send(&context.config.notify, &report).await;
        if !context.json && !context.quiet {
            print_report(&report)?;
        }
        reports.push(report);
    }
    if context.log_json && !context.quiet {
        // A collector reading stderr sees every failure, at every verbosity.
        for report in reports.iter().filter(|r| r.status == Status::Failed) {
            let error = report.error.as_deref().unwrap_or("failed");
            eline("ERROR", &format!("{}: failed: {error}", report.name));
        }
    }
    let count = |status: Status| reports.iter().filter(|r| r.status == status).count();
    let failed = count(Status::Failed);
    let incomplete = reports.len() - failed - count(Status::Ok);
    if context.json {
        json(&reports)?;
    } else if context.quiet {
        for report in reports.iter().filter(|r| r.status != Status::Ok) {
            eline(
                if report.status == Status::Failed {
                    "ERROR"
                } else {
                    "WARN"
                },
                &format!(
                    "{}: {}",
                    report.name,
                    report
                        .error
                        .clone()
                        .or_else(|| report.notes.last().cloned())
                        .unwrap_or_else(|| crate::jobs::status_label(report.status).to_owned())
                ),
            );
        }
    } else {
        let mut summary = format!(
            "{}: {} ok, {failed} failed",
            crate::types::count(reports.len(), "job"),
            count(Status::Ok)
        );
        for status in [Status::Stopped, Status::Skipped, Status::Deferred] {
            if count(status) > 0 {
                summary.push_str(&format!(
                    ", {} {}",
                    count(status),
                    crate::jobs::status_label(status)
                ));
            }
        }
        println(&summary)?;
    }
    // 0 only when every job completed; 1 when one failed; 3 when none
    // failed but one was stopped, skipped (another run holds it) or deferred.
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else if incomplete > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// `ferry daemon`.
pub async fn daemon(
    context: &Context,
    parallel_images: Option<usize>,
    metrics_addr: Option<String>,
) -> anyhow::Result<ExitCode> {
    let jobs = selected_jobs(context, &[])?;
    let scheduled = jobs.iter().filter(|j| j.schedule.is_some()).count();
    if scheduled == 0 {
        return Err(UsageError(
            "no job in the config has a schedule; add schedule = \"@daily\" (or use ferry run)"
                .into(),
        )
        .into());
    }
    let (job_context, _scratch) = job_context(context, false, parallel_images).await?;
    let cancel = job_context.cancel.clone();
    tokio::spawn(async move {
        wait_for_shutdown().await;
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Metrics and health, bound before the scheduler starts: a taken port
    // is an error now, not a silent gap in monitoring.
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = metrics_addr.or_else(|| context.config.metrics_addr.clone()) {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        let bound = listener.local_addr()?;
        for job in &jobs {
            crate::metrics::job_known(&job.name);
        }
        tokio::spawn(crate::serve::health::run(
            listener,
            job_context.store.clone(),
            ready.clone(),
            wait_for_shutdown(),
        ));
        if !context.quiet {
            println(&format!(
                "ferry daemon: metrics on http://{bound}/metrics (health: /healthz, /readyz)"
            ))?;
        }
    }
    // Ready before it is announced: a probe that read the line sees it.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    if !context.quiet {
        println(&format!(
            "ferry daemon: {scheduled} scheduled jobs; SIGTERM or Ctrl-C stops"
        ))?;
    }
    let as_json = context.json;
    let quiet = context.quiet;
    let webhooks = Arc::new(context.config.notify.clone());
    run_daemon(
        job_context,
        jobs,
        context.config.timezone.clone(),
        context.config.catch_up,
        move |report| {
            if !webhooks.is_empty() {
                let webhooks = webhooks.clone();
                let report = report.clone();
                tokio::spawn(async move { crate::jobs::notify::send(&webhooks, &report).await });
            }
            if as_json {
                let _ = println(&serde_json::to_string(report).unwrap_or_default());
            } else if !quiet || report.status == Status::Failed {
                let _ = print_report(report);
            }
        },
    )
    .await;
    if !context.quiet {
        println("ferry daemon: stopped")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry jobs`.
pub async fn list(context: &Context, shards: Option<u32>) -> anyhow::Result<ExitCode> {
    let jobs = selected_jobs(context, &[])?;
    let states = state_store(context, None, false).await?;
    let now = now_unix();
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for spec in &jobs {
        let (state, unreadable) = match states.load(&spec.name).await {
            Ok(state) => (state, false),
            Err(error) => {
                tracing::warn!("{error:#}");
                (Default::default(), true)
            }
        };
        // Next runs are shown in the job's own time zone.
        let zone = spec
            .timezone
            .clone()
            .unwrap_or_else(|| context.config.timezone.clone());
        let next = spec
            .schedule
            .as_ref()
            .and_then(|s| next_due(s, state.last_run, now, &zone, context.config.catch_up));
        let status = state
            .last_status
            .map(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .or_else(|| unreadable.then(|| "state-unreadable".to_owned()));
        let shard = shards.map(|count| match splits_by_repository(spec) {
            true => "all (by repository)".to_owned(),
            false => crate::policy::shard::owner(&spec.name, count).to_string(),
        });
        let mut row = vec![
            spec.name.clone(),
            spec.kind.label().to_owned(),
            spec.schedule_text.clone().unwrap_or_else(|| "-".into()),
            // Both times in the job's zone, with its offset.
            state
                .last_run
                .map_or_else(|| "never".into(), |t| zone.format(t)),
            status.clone().unwrap_or_else(|| "-".into()),
            next.map_or_else(|| "-".into(), |n| zone.format(n)),
        ];
        row.extend(shard.clone());
        rows.push(row);
        out.push(serde_json::json!({
            "name": spec.name, "kind": spec.kind.label(), "schedule": spec.schedule_text,
            "last_run": state.last_run.map(format_rfc3339), "last_result": status, "next_run": next.map(format_rfc3339), "timezone": zone.name(), "shard": shard,
        }));
    }
    if context.json {
        json(&out)?;
    } else {
        let mut header = vec!["NAME", "KIND", "SCHEDULE", "LAST RUN", "RESULT", "NEXT RUN"];
        if shards.is_some() {
            header.push("SHARD");
        }
        table(&header, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry jobs --reset NAME`.
pub async fn reset(context: &Context, name: &str) -> anyhow::Result<ExitCode> {
    let spec = selected_jobs(context, &[name.to_owned()])?;
    // Local state lives in the store: with no store there is none to
    // forget, and none is made to say so.
    let removed = match context.config.state.is_none() && !context.has_store() {
        true => false,
        false => crate::jobs::reset_state(&state_store(context, None, true).await?, name).await?,
    };
    if !context.quiet {
        // What a reset leaves: a backup job's archives stay where they are.
        let left = match spec.first().map(|j| &j.kind) {
            Some(crate::config::jobs::JobKind::Backup(backup)) => match backup.keep {
                Some(keep) => format!(
                    "; its archives stay, the next one is a full archive, and rotation \
                     (keep = {keep}) removes the old chains whole as new archives are written"
                ),
                None => "; its archives stay (no keep: nothing rotates them) and the next \
                         one is a full archive"
                    .to_owned(),
            },
            _ => String::new(),
        };
        println(&if removed {
            format!("{name}: state reset; the next run starts afresh{left}")
        } else {
            format!("{name}: no saved state")
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry config check`: loading the config already validated it.
pub fn check(context: &Context) -> anyhow::Result<ExitCode> {
    let Some(path) = &context.config.path else {
        return Err(UsageError(
            "no config file: pass --config FILE, set FERRY_CONFIG, or create ./ferry.toml".into(),
        )
        .into());
    };
    for (host, settings) in &context.config.registries {
        if let Some(problem) = &settings.password_error {
            return Err(UsageError(format!("registries.\"{host}\": {problem}")).into());
        }
    }
    for webhook in &context.config.notify {
        if let Err(problem) = &webhook.url {
            return Err(UsageError(problem.clone()).into());
        }
    }
    // Said here, once, and not at every run: these are on purpose.
    let mut insecure: Vec<&String> = context
        .config
        .registries
        .iter()
        .filter(|(_, settings)| settings.insecure)
        .map(|(host, _)| host)
        .collect();
    insecure.sort();
    for host in insecure {
        tracing::warn!("registries.\"{host}\" is insecure: plain HTTP, no TLS");
    }
    if !context.quiet {
        let names: Vec<String> = context
            .config
            .jobs
            .iter()
            .map(|j| format!("{} ({})", j.name, j.kind.label()))
            .collect();
        println(&format!(
            "{}: OK, {}{}{}",
            path.display(),
            crate::types::count(names.len(), "job"),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
