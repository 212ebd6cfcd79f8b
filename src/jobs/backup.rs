//! `[[backup]]`: pull the selected images into the store (cheap when they
//! are there already), write one archive to `output` (templated with
//! `{date}`, `{time}`, `{job}`), and rotate old archives with `keep`. With
//! `incremental`, runs write deltas against the previous archive and a full
//! one every `full_every` runs; rotation removes whole chains (a full
//! archive with its deltas), so every kept delta can still be restored.
//! The new archive is complete (fsynced and renamed) before anything is
//! deleted, and it is never deleted itself.

use super::state::{BackupRecord, JobState};
use super::{JobContext, JobReport, Stop};
use crate::archive::save::{self, SaveRequest};
use crate::archive::Compression;
use crate::config::jobs::BackupSpec;
use crate::engine::{copy_image, CopyOptions, Destination, PlatformChoice, Source};
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

/// The images this run backs up.
async fn selection(context: &JobContext, spec: &BackupSpec) -> Result<Vec<Reference>, Stop> {
    let mut images = Vec::new();
    for image in &spec.images {
        if image.all_tags {
            let client = context.registries.client(image.reference.registry())?;
            let tags = client.list_tags(image.reference.repository()).await?;
            images.extend(
                spec.filter
                    .select(&tags)
                    .into_iter()
                    .map(|t| image.reference.with_tag(t)),
            );
        } else {
            images.push(image.reference.clone());
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
    let images = selection(context, spec).await?;
    if images.is_empty() {
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
    };
    for image in &images {
        if context.cancelled() {
            return Err(Stop::Cancelled);
        }
        if dry_run {
            continue;
        }
        // Straight from the registry into the store; an image the registry
        // cannot serve now but the store holds is backed up from the store.
        let client = context.registries.client(image.registry())?;
        let source = Source::Registry {
            client,
            reference: image.clone(),
        };
        let destination = Destination::Store {
            store: context.store.clone(),
            name: Some(image.clone()),
        };
        if let Err(error) = copy_image(&source, &destination, &options).await {
            if context.store.lookup_tag(image)?.is_none() {
                return Err(Stop::Failed(
                    anyhow::Error::new(error).context(format!("backup of {image}")),
                ));
            }
            report
                .notes
                .push(format!("{image}: using the store's copy ({error})"));
        }
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
    let request = SaveRequest {
        images: images.iter().map(ToString::to_string).collect(),
        platforms: spec.platforms.clone(),
        exclude,
    };
    let plan = save::plan(&context.store, &request)?;
    let compression = match spec.compress.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    };
    crate::archive::write_file_atomically(std::path::Path::new(&output), |file| {
        Ok(save::write(&context.store, &plan, file, compression)?)
    })?;
    report.changes.push(format!(
        "wrote {} {output}: {} images, {} blobs",
        if full { "full archive" } else { "delta" },
        plan.images.len(),
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
    Ok(())
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
