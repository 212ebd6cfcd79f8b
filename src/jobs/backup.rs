//! `[[backup]]`: copy the selected images straight from their registries
//! into one archive at `output` (templated with `{date}`, `{time}`,
//! `{job}`, `{run}`) through the engine — no copy in the local store unless
//! `keep_in_store = true` — and rotate old archives with `keep`. With
//! `incremental`, runs write deltas against the previous archive and a full
//! one every `full_every` runs; rotation removes whole chains (a full
//! archive with its deltas), so every kept delta can still be restored.
//! The new archive is complete (fsynced and renamed) before anything is
//! deleted, and it is never deleted itself.

use super::backup_chain::{archive_kind, delta_base, next_archive, record, rotate};
use super::backup_place::{archive_size, template_pattern};
use super::state::JobState;
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

pub(super) fn expand(template: &str, job: &str, now: i64, run: u64) -> String {
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
