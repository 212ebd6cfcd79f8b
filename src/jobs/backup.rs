//! `[[backup]]`: copy the selected images straight from their registries
//! into one archive at `output` (templated with `{date}`, `{time}`,
//! `{job}`, `{run}`) through the engine — no copy in the local store unless
//! `keep_in_store = true` — and rotate old archives with `keep`. With
//! `incremental`, runs write deltas against the previous archive and a full
//! one every `full_every` runs; rotation removes whole chains (a full
//! archive with its deltas), so every kept delta can still be restored.
//! The new archive is complete (fsynced and renamed) before anything is
//! deleted, and it is never deleted itself.

use super::backup_place::{
    archive_size, expired_chains, highest_run, listed_backups, previous_blobs, remove,
    template_pattern, written_by,
};
use super::state::{BackupRecord, JobState};
use super::{ImageResult, JobContext, JobError, JobReport, Stop};
use crate::archive::location::{sweep_unfinished, write_atomically, Location, STALE_UPLOAD};
use crate::archive::Compression;
use crate::config::jobs::{BackupImage, BackupSpec};
use crate::engine::{
    copy_image, plan_archive, write_archive, ArchivePlan, CopyOptions, PlatformChoice,
    SharedSource, StoreDestination, StoreSource,
};
use crate::types::referrer::image_tags;
use crate::types::time::{expand_date_time, now_unix};
use crate::types::Reference;

fn expand(template: &str, job: &str, now: i64, run: u64) -> String {
    expand_date_time(template, now)
        .replace("{job}", job)
        .replace("{run}", &run.to_string())
}

/// The images this run backs up. A repository whose tags cannot be listed
/// is reported as failed; the others are still backed up.
async fn selection(
    context: &JobContext,
    spec: &BackupSpec,
    report: &mut JobReport,
    failed: &mut Vec<String>,
) -> Result<Vec<Reference>, Stop> {
    let mut repositories = Vec::new();
    let mut images = Vec::new();
    for image in &spec.images {
        match image {
            BackupImage::One(reference) => images.push(reference.clone()),
            BackupImage::AllTags(repository) => repositories.push(repository.clone()),
            BackupImage::Under(source) => repositories.extend(
                super::catalog::repositories_under(context, source, |_| true, report)
                    .await?
                    .into_iter()
                    .map(|(reference, _)| reference),
            ),
        }
    }
    for repository in repositories {
        let listed = async {
            let listed = context
                .endpoints
                .registry(&repository)?
                .listed_tags()
                .await?;
            Ok::<_, Stop>(image_tags(listed))
        };
        match listed.await {
            Ok(tags) => images.extend(
                spec.filter
                    .select(&tags)
                    .into_iter()
                    .map(|t| repository.with_tag(t)),
            ),
            Err(Stop::Failed(error)) => {
                let error = crate::types::error_text::error_chain(&error);
                failed.push(format!("{} ({error})", repository.name()));
                report
                    .images
                    .push(ImageResult::failed(repository.name(), None, error));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(images)
}

pub async fn run(
    context: &JobContext,
    job: &str,
    spec: &BackupSpec,
    dry_run: bool,
    state: &mut JobState,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let mut failed = Vec::new();
    let images = selection(context, spec, report, &mut failed).await?;
    if images.is_empty() && failed.is_empty() {
        report
            .notes
            .push("no image matched; nothing written".into());
        return Ok(());
    }
    let platforms = PlatformChoice::from_list(spec.platforms.clone(), false, PlatformChoice::All);
    let options = CopyOptions {
        platforms,
        concurrency: context.concurrency,
        reporter: context.reporter.clone(),
        referrers: spec.referrers.clone(),
    };
    let sources = match dry_run {
        true => Vec::new(),
        false => open_sources(context, spec, &images, &options, report, &mut failed).await?,
    };
    let all_failed = || {
        Stop::Failed(JobError::NoneReadable {
            images: crate::types::count(failed.len(), "image"),
            list: failed.join("; "),
        })
    };
    if !dry_run && sources.is_empty() {
        return Err(all_failed());
    }
    let now = now_unix();
    let (run, output, location, listed) = next_archive(context, spec, job, state, now).await?;
    let (mut full, why_full) = archive_kind(spec, state, &listed, &output, job);
    if let Some(why) = why_full {
        report.notes.push(format!("{why}: writing a full archive"));
    }
    let exclude = match full {
        true => Default::default(),
        false => match delta_base(context, state, report).await? {
            Some(blobs) => blobs,
            None => {
                full = true;
                Default::default()
            }
        },
    };
    if dry_run {
        report.changes.push(format!(
            "would write {} {output} with {}",
            if full { "full archive" } else { "delta" },
            crate::types::count(images.len(), "image")
        ));
        return Ok(());
    }
    let plan = plan_archive(
        sources,
        &options.platforms,
        spec.platforms.first(),
        exclude.clone(),
        &spec.referrers,
    )
    .await?;
    write(context, spec, job, &plan, &location, now, report).await?;
    let plan = &plan.layout;
    report.bytes += plan.blob_bytes();
    report.changes.push(format!(
        "wrote {} {output}: {}, {}",
        if full { "full archive" } else { "delta" },
        plan.describe_counts(),
        crate::types::count(plan.blob_count(), "blob")
    ));
    let mut chain = plan.blob_digests();
    if !full {
        chain.extend(exclude);
    }
    let size = archive_size(context, &output).await?;
    record(state, run, &output, full, now, chain, size);
    rotate(context, spec, job, state, &location, &output, report).await?;
    if !failed.is_empty() {
        return Err(all_failed());
    }
    Ok(())
}

/// Where this run writes: its `{run}` number (after every archive the
/// output's place holds, including those a reset state forgot: none is
/// ever overwritten), the expanded output and its place, and the archives
/// listed there.
async fn next_archive(
    context: &JobContext,
    spec: &BackupSpec,
    job: &str,
    state: &JobState,
    now: i64,
) -> Result<(u64, String, Location, Vec<BackupRecord>), Stop> {
    let parse = |output: &str| {
        Location::parse(output)
            .map_err(|e| Stop::Failed(JobError::Refused(format!("backup output {output}: {e}"))))
    };
    let there = parse(&expand(&spec.output, job, now, state.backup_runs + 1))?;
    let listed = listed_backups(context, &there, &spec.output, job, &state.backups).await?;
    let run = state
        .backup_runs
        .max(highest_run(&spec.output, job, &listed))
        + 1;
    let output = expand(&spec.output, job, now, run);
    let location = parse(&output)?;
    Ok((run, output, location, listed))
}

/// The blobs a delta leaves out: every blob of the chain it extends (the
/// full archive and the deltas after it), so restoring it needs that chain
/// whole. `None` (said in a note) when an archive of the chain is gone or
/// cannot be read whole: the run writes a full archive instead.
async fn delta_base(
    context: &JobContext,
    state: &JobState,
    report: &mut JobReport,
) -> Result<Option<std::collections::BTreeSet<crate::types::Digest>>, Stop> {
    match chain_blobs(context, state).await? {
        Ok(blobs) => Ok(Some(blobs)),
        Err(why) => {
            report.notes.push(format!("{why}: writing a full archive"));
            Ok(None)
        }
    }
}

/// A source for each image to back up; one that cannot be read is
/// reported (and named in `failed`), the others are kept.
async fn open_sources(
    context: &JobContext,
    spec: &BackupSpec,
    images: &[Reference],
    options: &CopyOptions,
    report: &mut JobReport,
    failed: &mut Vec<String>,
) -> Result<Vec<(SharedSource, Option<Reference>)>, Stop> {
    let mut sources = Vec::new();
    for image in images {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        // One image that cannot be read is reported; the others are kept.
        match source_for(context, spec, image, options, report).await {
            Ok(source) => {
                report
                    .images
                    .push(ImageResult::new(image.to_string(), None, "copied", None));
                sources.push((source, Some(image.clone())));
            }
            Err(Stop::Failed(error)) => {
                let error = crate::types::error_text::error_chain(&error);
                failed.push(format!("{image} ({error})"));
                report
                    .images
                    .push(ImageResult::failed(image.to_string(), None, error));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(sources)
}

/// Write the planned archive at `location` atomically (a stop mid-write
/// abandons it: nothing appears), first sweeping uploads an earlier run of
/// this job left unfinished in a bucket.
async fn write(
    context: &JobContext,
    spec: &BackupSpec,
    job: &str,
    plan: &ArchivePlan,
    location: &Location,
    now: i64,
    report: &mut JobReport,
) -> Result<(), Stop> {
    let compression = match spec.compress.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    if let Some(readers) = compression.unreadable_by() {
        report.notes.push(readers.to_owned());
    }
    if let Location::File(path) = location {
        // Temps a killed run of this job left beside its archives: with a
        // `{time}` output no later write has the same name to sweep them.
        let pattern = template_pattern(&spec.output, job);
        let (dir, prefix) = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => (dir, format!("{}/", dir.display())),
            _ => (std::path::Path::new("."), String::new()),
        };
        crate::types::atomic_file::sweep_stale_temps(dir, |name| {
            pattern.is_match(&format!("{prefix}{name}"))
        });
    }
    if let Location::Object(url) = location {
        // Uploads an earlier run of this job left unfinished (it died):
        // runs of one job never overlap (lease or shard), so all are stale.
        let pattern = template_pattern(&spec.output, job);
        let older_than = match context.state.on_object_storage() {
            true => None,
            false => Some(now - STALE_UPLOAD),
        };
        let swept = sweep_unfinished(&context.objects, url, |k| pattern.is_match(k), older_than)
            .await
            .map_err(JobError::Output)?;
        report.changes.extend(swept);
    }
    let written = write_atomically(location, &context.objects, |out| {
        Ok(write_archive(plan, out, compression, &context.reporter)?)
    })
    .await;
    written.map_err(|error| match context.cancelled() {
        // A stop mid-write abandons the archive: nothing was written.
        true => Stop::Cancelled,
        false => Stop::Failed(JobError::Output(error)),
    })
}

/// Whether this run writes a full archive, and why it must when a delta
/// was due (pure: the state, what the output's place lists, and the path
/// this run writes). `None` as the reason: the schedule decided.
fn archive_kind(
    spec: &BackupSpec,
    state: &JobState,
    listed: &[BackupRecord],
    output: &str,
    job: &str,
) -> (bool, Option<String>) {
    let since_full = state.backups.iter().rev().take_while(|b| !b.full).count() as u32 + 1;
    if !spec.incremental
        || state.backups.is_empty()
        || state.new_chain
        || since_full >= spec.full_every
    {
        return (true, None);
    }
    // A delta never replaces an archive of its own chain (a `{date}` output
    // written twice in a day), and never follows an archive the state does
    // not know (it may be a delta whose base rotation would take): both
    // get a full archive.
    let chain_start = state.backups.iter().rposition(|b| b.full).unwrap_or(0);
    let base = &state.backups[chain_start].path;
    if state.backups[chain_start..]
        .iter()
        .any(|b| b.path == output)
    {
        return (
            true,
            Some(format!(
                "{output} is an archive of the chain a delta would extend"
            )),
        );
    }
    // A changed `output` starts a new chain where the template now points:
    // a delta there would need archives rotation no longer lists.
    if !written_by(&spec.output, job, base) {
        return (
            true,
            Some(format!(
                "the output changed since the chain's full archive {base} was written \
                 (archives the old output holds stay and are no longer rotated)"
            )),
        );
    }
    let unknown_after_chain = listed
        .iter()
        .skip_while(|b| &b.path != base)
        .any(|b| !state.backups.iter().any(|known| known.path == b.path));
    if unknown_after_chain {
        return (
            true,
            Some("an archive the job's state does not know follows the chain".to_owned()),
        );
    }
    (false, None)
}

/// Remember the archive this run wrote: the newest record keeps its
/// chain's blobs (`chain`), so the next delta leaves them out without
/// reading the chain back; older records drop theirs.
fn record(
    state: &mut JobState,
    run: u64,
    output: &str,
    full: bool,
    now: i64,
    chain: std::collections::BTreeSet<crate::types::Digest>,
    size: Option<u64>,
) {
    state.backup_runs = run;
    state.new_chain = false;
    state.backups.retain(|b| b.path != output);
    for older in &mut state.backups {
        older.blobs = None;
    }
    state.backups.push(BackupRecord {
        path: output.to_owned(),
        full,
        time: now,
        blobs: Some(chain),
        size,
    });
}

/// Rotate by `keep`: the archives themselves are the truth (a reset state,
/// or archives an older ferry wrote, are still rotated) — what the output's
/// place lists, with what the state remembers about each — and whole
/// chains go, never the one just written.
async fn rotate(
    context: &JobContext,
    spec: &BackupSpec,
    job: &str,
    state: &mut JobState,
    location: &Location,
    output: &str,
    report: &mut JobReport,
) -> Result<(), Stop> {
    state.backups = listed_backups(context, location, &spec.output, job, &state.backups).await?;
    let Some(keep) = spec.keep else {
        return Ok(());
    };
    for record in expired_chains(state, keep, output) {
        match remove(context, &record.path).await {
            Ok(()) => report
                .changes
                .push(format!("removed old backup {}", record.path)),
            Err(e) => report.notes.push(format!(
                "could not remove old backup {}: {}",
                record.path,
                e.chain()
            )),
        }
    }
    Ok(())
}

/// Every blob the current chain (the newest full archive and the deltas
/// after it) holds: the newest record's list, else read from each archive.
/// `Err(why)` says which archive of the chain is gone or unreadable.
async fn chain_blobs(
    context: &JobContext,
    state: &JobState,
) -> Result<Result<std::collections::BTreeSet<crate::types::Digest>, String>, Stop> {
    let start = state.backups.iter().rposition(|b| b.full).unwrap_or(0);
    let chain = &state.backups[start..];
    for record in chain {
        match (archive_size(context, &record.path).await?, record.size) {
            (None, _) => {
                return Ok(Err(format!(
                    "{}, which the delta chain needs, is gone",
                    record.path
                )))
            }
            (Some(now), Some(written)) if now != written => {
                return Ok(Err(format!(
                    "{} is {now} bytes, not the {written} it was written with (changed or cut \
                     short since), so it is no delta's base",
                    record.path
                )))
            }
            _ => {}
        }
    }
    if let Some(blobs) = chain.last().and_then(|b| b.blobs.clone()) {
        return Ok(Ok(blobs));
    }
    let mut blobs = std::collections::BTreeSet::new();
    for record in chain {
        match previous_blobs(context, &record.path).await {
            Ok(found) => blobs.extend(found),
            // A chain archive that cannot be read whole (or lies about a
            // blob) cannot be a delta's base: a full archive instead.
            Err(Stop::Failed(error)) => {
                return Ok(Err(format!(
                    "{} cannot be a delta's base ({})",
                    record.path,
                    error.chain()
                )))
            }
            Err(other) => return Err(other),
        }
    }
    Ok(Ok(blobs))
}

/// Where one image is read from: its registry (the default), or the store
/// after a pull into it with `keep_in_store`. An image the registry cannot
/// serve now but the store holds is backed up from the store.
async fn source_for(
    context: &JobContext,
    spec: &BackupSpec,
    image: &Reference,
    options: &CopyOptions,
    report: &mut JobReport,
) -> Result<SharedSource, Stop> {
    let registry = context
        .endpoints
        .registry(image)?
        .source(&image.manifest_reference())?;
    let outcome = if spec.keep_in_store {
        let destination = StoreDestination::new(context.store.clone(), Some(image.clone()));
        copy_image(registry.as_ref(), &destination, options)
            .await
            .map(|_| ())
    } else {
        registry.root().await.map(|_| ())
    };
    let error = match outcome {
        Ok(()) if !spec.keep_in_store => return Ok(registry),
        Ok(()) => None,
        Err(error) => Some(error),
    };
    let Some(entry) = context.store.lookup_tag(image)? else {
        // The caller names the image.
        return Err(Stop::Failed(
            error.map_or(JobError::NotInStore, JobError::from),
        ));
    };
    if let Some(error) = error {
        report
            .notes
            .push(format!("{image}: using the store's copy ({error})"));
    }
    Ok(std::sync::Arc::new(StoreSource::new(
        context.store.clone(),
        entry,
        image.to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(output: &str) -> BackupSpec {
        BackupSpec {
            images: Vec::new(),
            filter: Default::default(),
            output: output.into(),
            keep: None,
            incremental: true,
            full_every: 7,
            compress: "none".into(),
            platforms: Vec::new(),
            keep_in_store: false,
            referrers: crate::types::ReferrerFilter::All,
        }
    }

    fn record(path: &str, full: bool) -> BackupRecord {
        BackupRecord {
            path: path.into(),
            full,
            time: 0,
            blobs: None,
            size: None,
        }
    }

    #[test]
    fn the_kind_of_archive_follows_the_chain_the_schedule_and_the_place() {
        let spec = spec("/b/{job}-{run}.tar");
        let chain = vec![record("/b/n-1.tar", true), record("/b/n-2.tar", false)];
        let state = JobState {
            backups: chain.clone(),
            ..Default::default()
        };
        // A delta is due and nothing stands in its way.
        assert_eq!(
            archive_kind(&spec, &state, &chain, "/b/n-3.tar", "n"),
            (false, None)
        );
        // A reset starts a new chain: full, by schedule.
        let reset = JobState {
            new_chain: true,
            ..state.clone()
        };
        assert_eq!(
            archive_kind(&spec, &reset, &chain, "/b/n-3.tar", "n"),
            (true, None)
        );
        // An archive of the chain would be overwritten.
        assert!(archive_kind(&spec, &state, &chain, "/b/n-2.tar", "n")
            .1
            .is_some());
        // The output moved elsewhere.
        let moved = self::spec("/elsewhere/{job}-{run}.tar");
        let (full, why) = archive_kind(&moved, &state, &chain, "/elsewhere/n-3.tar", "n");
        assert!(full && why.unwrap().contains("output changed"));
        // An archive nobody remembers follows the chain.
        let mut listed = chain.clone();
        listed.push(record("/b/n-9.tar", true));
        assert!(archive_kind(&spec, &state, &listed, "/b/n-10.tar", "n")
            .1
            .is_some());
        // Every full_every runs, a full one.
        let long = JobState {
            backups: (0..7)
                .map(|i| record(&format!("/b/n-{i}.tar"), i == 0))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            archive_kind(&spec, &long, &long.backups, "/b/n-8.tar", "n"),
            (true, None)
        );
    }
}
