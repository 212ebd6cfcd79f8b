//! `[[backup]]`: copy the selected images straight from their registries
//! into one archive at `output` (templated with `{date}`, `{time}`,
//! `{job}`, `{run}`) through the engine — no copy in the local store unless
//! `keep_in_store = true` — and rotate old archives with `keep`. With
//! `incremental`, runs write deltas against the previous archive and a full
//! one every `full_every` runs; rotation removes whole chains (a full
//! archive with its deltas), so every kept delta can still be restored.
//! The new archive is complete (fsynced and renamed) before anything is
//! deleted, and it is never deleted itself.

use super::state::{BackupRecord, JobState};
use super::{ImageResult, JobContext, JobReport, Stop};
use crate::archive::save;
use crate::archive::Compression;
use crate::config::jobs::{BackupImage, BackupSpec, SyncSource};
use crate::engine::{
    copy_image, plan_archive, write_archive, CopyOptions, Destination, PlatformChoice, Source,
};
use crate::types::time::{format_rfc3339, now_unix};
use crate::types::Reference;

fn expand(template: &str, job: &str, now: i64, run: u64) -> String {
    let stamp = format_rfc3339(now);
    template
        .replace("{date}", &stamp[..10])
        .replace("{time}", &stamp[11..19].replace(':', ""))
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
            BackupImage::Under(source) => {
                let SyncSource::Under { registry, .. } = source else {
                    continue;
                };
                let client = context.registries.client(registry)?;
                for path in client.catalog().await? {
                    if source.relative(&path).is_none() {
                        continue;
                    }
                    match Reference::parse_repository_or_ref(&format!("{registry}/{path}")) {
                        Ok(reference) if reference.tag().is_none() => repositories.push(reference),
                        _ => report.images.push(ImageResult::skipped(
                            format!("{registry}/{path}"),
                            "the catalog lists a name that is not a valid repository",
                        )),
                    }
                }
            }
        }
    }
    for repository in repositories {
        let listed = async {
            let client = context.registries.client(repository.registry())?;
            Ok::<_, Stop>(client.list_tags(repository.repository()).await?)
        };
        match listed.await {
            Ok(tags) => images.extend(
                spec.filter
                    .select(&tags)
                    .into_iter()
                    .map(|t| repository.with_tag(t)),
            ),
            Err(Stop::Failed(error)) => {
                let error = format!("{error:#}");
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
    let platforms = if spec.platforms.is_empty() {
        PlatformChoice::All
    } else {
        PlatformChoice::Subset(spec.platforms.clone())
    };
    let options = CopyOptions {
        platforms,
        concurrency: context.concurrency,
        reporter: context.reporter.clone(),
        referrers: spec.referrers.clone(),
    };
    let mut sources = Vec::new();
    for image in &images {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        if dry_run {
            continue;
        }
        // One image that cannot be read is reported; the others are kept.
        match source_for(context, spec, image, &options, report).await {
            Ok(source) => {
                report
                    .images
                    .push(ImageResult::new(image.to_string(), None, "copied", None));
                sources.push((source, Some(image.clone())));
            }
            Err(Stop::Failed(error)) => {
                let error = format!("{error:#}");
                failed.push(format!("{image} ({error})"));
                report
                    .images
                    .push(ImageResult::failed(image.to_string(), None, error));
            }
            Err(other) => return Err(other),
        }
    }
    let all_failed = || {
        Stop::Failed(anyhow::anyhow!(
            "{} images could not be backed up: {}",
            failed.len(),
            failed.join("; ")
        ))
    };
    if !dry_run && sources.is_empty() {
        return Err(all_failed());
    }
    let now = now_unix();
    let output = expand(&spec.output, job, now, state.backup_runs + 1);
    let since_full = state.backups.iter().rev().take_while(|b| !b.full).count() as u32 + 1;
    let previous = state
        .backups
        .last()
        .filter(|b| std::path::Path::new(&b.path).exists());
    let full = !spec.incremental || previous.is_none() || since_full >= spec.full_every;
    if dry_run {
        report.changes.push(format!(
            "would write {} {output} with {} images",
            if full { "full archive" } else { "delta" },
            images.len()
        ));
        return Ok(());
    }
    let exclude = match (full, previous) {
        (false, Some(previous)) => save::archive_blobs(std::path::Path::new(&previous.path))?,
        _ => Default::default(),
    };
    let plan = plan_archive(
        sources,
        &options.platforms,
        spec.platforms.first(),
        exclude,
        &spec.referrers,
    )
    .await?;
    let compression = match spec.compress.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    crate::archive::write_file_atomically(std::path::Path::new(&output), |file| {
        Ok(write_archive(&plan, file, compression, &context.reporter)?)
    })?;
    let plan = &plan.layout;
    report.bytes += plan.blob_bytes();
    report.changes.push(format!(
        "wrote {} {output}: {}, {} blobs",
        if full { "full archive" } else { "delta" },
        plan.describe_counts(),
        plan.blob_count()
    ));
    state.backup_runs += 1;
    state.backups.retain(|b| b.path != output);
    state.backups.push(BackupRecord {
        path: output.clone(),
        full,
        time: now,
    });
    if let Some(keep) = spec.keep {
        rotate(state, keep, &output, report);
    }
    if !failed.is_empty() {
        return Err(all_failed());
    }
    Ok(())
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
) -> Result<Source, Stop> {
    let client = context.registries.client(image.registry())?;
    let registry = Source::Registry {
        client,
        reference: image.clone(),
    };
    let outcome = if spec.keep_in_store {
        let destination = Destination::Store {
            store: context.store.clone(),
            name: Some(image.clone()),
            referrer: None,
        };
        copy_image(&registry, &destination, options)
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
        let error = error.map_or_else(|| anyhow::anyhow!("not in the store"), anyhow::Error::new);
        return Err(Stop::Failed(error.context(format!("backup of {image}"))));
    };
    if let Some(error) = error {
        report
            .notes
            .push(format!("{image}: using the store's copy ({error})"));
    }
    Ok(Source::Store {
        store: context.store.clone(),
        entry,
        name: image.to_string(),
    })
}

/// Delete the oldest chains (a full archive and the deltas after it) while
/// more than `keep` archives remain without them; never the current chain.
fn rotate(state: &mut JobState, keep: usize, newest: &str, report: &mut JobReport) {
    loop {
        let chain_end = state
            .backups
            .iter()
            .skip(1)
            .position(|b| b.full)
            .map_or(state.backups.len(), |i| i + 1);
        let chain_has_newest = state.backups[..chain_end].iter().any(|b| b.path == newest);
        if chain_has_newest || state.backups.len() - chain_end < keep {
            break;
        }
        for record in state.backups.drain(..chain_end).collect::<Vec<_>>() {
            match std::fs::remove_file(&record.path) {
                Ok(()) => report
                    .changes
                    .push(format!("removed old backup {}", record.path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report
                    .notes
                    .push(format!("could not remove old backup {}: {e}", record.path)),
            }
        }
    }
}
