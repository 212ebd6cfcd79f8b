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
use crate::archive::location::{open_object, write_atomically, Location};
use crate::archive::save;
use crate::archive::Compression;
use crate::config::jobs::{BackupImage, BackupSpec, SyncSource};
use crate::engine::{
    copy_image, plan_archive, write_archive, CopyOptions, Destination, PlatformChoice, Source,
};
use crate::objects::upload;
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
    let location = Location::parse(&output)
        .map_err(|e| Stop::Failed(anyhow::anyhow!("backup output {output}: {e}")))?;
    let since_full = state.backups.iter().rev().take_while(|b| !b.full).count() as u32 + 1;
    let previous = match state.backups.last() {
        Some(last) if exists(context, &last.path).await? => Some(last.clone()),
        _ => None,
    };
    let full = !spec.incremental || previous.is_none() || since_full >= spec.full_every;
    if dry_run {
        report.changes.push(format!(
            "would write {} {output} with {} images",
            if full { "full archive" } else { "delta" },
            images.len()
        ));
        return Ok(());
    }
    let exclude = match (full, &previous) {
        (
            false,
            Some(BackupRecord {
                blobs: Some(blobs), ..
            }),
        ) => blobs.clone(),
        (false, Some(previous)) => previous_blobs(context, &previous.path).await?,
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
    if let Location::Object(url) = &location {
        // Uploads an earlier run of this job left unfinished (it died):
        // runs of one job never overlap (lease or shard), so all are stale.
        let bucket = context.objects.bucket(url).map_err(anyhow::Error::from)?;
        let pattern = template_pattern(&spec.output, job);
        let older_than = match context.state.on_object_storage() {
            true => None,
            false => Some(now - 3600),
        };
        for key in upload::sweep(
            &bucket,
            url.parent_prefix(),
            |k| pattern.is_match(k),
            older_than,
        )
        .await
        .map_err(anyhow::Error::from)?
        {
            report.changes.push(format!(
                "aborted an unfinished upload of {}",
                url.with_key(key)
            ));
        }
    }
    write_atomically(&location, &context.objects, |out| {
        Ok(write_archive(&plan, out, compression, &context.reporter)?)
    })
    .await?;
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
    for older in &mut state.backups {
        older.blobs = None;
    }
    state.backups.push(BackupRecord {
        path: output.clone(),
        full,
        time: now,
        blobs: matches!(location, Location::Object(_)).then(|| plan.blob_digests()),
    });
    if let Location::Object(url) = &location {
        // The bucket is the truth: archives are what the listing shows.
        state.backups = listed_backups(context, url, &spec.output, job, &state.backups).await?;
    }
    if let Some(keep) = spec.keep {
        for record in expired_chains(state, keep, &output) {
            match remove(context, &record.path).await {
                Ok(()) => report
                    .changes
                    .push(format!("removed old backup {}", record.path)),
                Err(e) => report.notes.push(format!(
                    "could not remove old backup {}: {e:#}",
                    record.path
                )),
            }
        }
    }
    if !failed.is_empty() {
        return Err(all_failed());
    }
    Ok(())
}

/// Whether an archive the state remembers is still there.
async fn exists(context: &JobContext, path: &str) -> Result<bool, Stop> {
    match Location::parse(path) {
        Ok(Location::Object(url)) => {
            let bucket = context.objects.bucket(&url).map_err(anyhow::Error::from)?;
            Ok(bucket
                .head(&url.key)
                .await
                .map_err(anyhow::Error::from)?
                .is_some())
        }
        _ => Ok(std::path::Path::new(path).exists()),
    }
}

/// The blobs of the archive a delta is made against.
async fn previous_blobs(
    context: &JobContext,
    path: &str,
) -> Result<std::collections::BTreeSet<crate::types::Digest>, Stop> {
    match Location::parse(path) {
        Ok(Location::Object(url)) => {
            let reader = open_object(&context.objects, &url).await?;
            Ok(tokio::task::block_in_place(|| {
                save::archive_blobs_in(reader, path)
            })?)
        }
        _ => Ok(save::archive_blobs(std::path::Path::new(path))?),
    }
}

async fn remove(context: &JobContext, path: &str) -> anyhow::Result<()> {
    match Location::parse(path) {
        Ok(Location::Object(url)) => Ok(context.objects.bucket(&url)?.delete(&url.key).await?),
        _ => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

/// The keys an output template can produce for `job`: `{date}`, `{time}`
/// and `{run}` stand for what they expand to.
fn template_pattern(template: &str, job: &str) -> regex::Regex {
    let key = template
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .map_or(template, |(_, key)| key);
    let mut pattern = String::from("^");
    let mut rest = key;
    while let Some(start) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..start]));
        let after = &rest[start..];
        let (piece, length) = [
            ("{date}", r"\d{4}-\d{2}-\d{2}".to_owned()),
            ("{time}", r"\d{6}".to_owned()),
            ("{run}", r"\d+".to_owned()),
            ("{job}", regex::escape(job)),
        ]
        .into_iter()
        .find(|(name, _)| after.starts_with(name))
        .map_or_else(|| (regex::escape("{"), 1), |(name, re)| (re, name.len()));
        pattern.push_str(&piece);
        rest = &after[length..];
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::Regex::new(&pattern).unwrap_or_else(|_| regex::Regex::new("^$").expect("valid"))
}

/// This job's archives as the bucket lists them, oldest first, each marked
/// full or delta from what the state remembers (an archive the state does
/// not know is taken as full: it is restorable alone or not at all).
async fn listed_backups(
    context: &JobContext,
    url: &crate::objects::ObjectUrl,
    template: &str,
    job: &str,
    remembered: &[BackupRecord],
) -> Result<Vec<BackupRecord>, Stop> {
    let bucket = context.objects.bucket(url).map_err(anyhow::Error::from)?;
    let pattern = template_pattern(template, job);
    let key = template
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, key)| key);
    let fixed = &key[..key.find('{').unwrap_or(key.len())];
    let mut listed = Vec::new();
    for object in bucket.list(fixed).await.map_err(anyhow::Error::from)? {
        // Some servers (Garage) may list a key for a moment after its
        // delete: a HEAD, which is consistent, confirms each one.
        if pattern.is_match(&object.key)
            && bucket
                .head(&object.key)
                .await
                .map_err(anyhow::Error::from)?
                .is_some()
        {
            listed.push(object);
        }
    }
    let time_of = |path: &str| remembered.iter().find(|b| b.path == path).map(|b| b.time);
    listed.sort_by_key(|o| {
        let path = url.with_key(o.key.clone()).to_string();
        (time_of(&path).unwrap_or(o.modified), o.key.clone())
    });
    Ok(listed
        .into_iter()
        .map(|o| {
            let path = url.with_key(o.key.clone()).to_string();
            let known = remembered.iter().find(|b| b.path == path);
            BackupRecord {
                full: known.is_none_or(|b| b.full),
                time: known.map_or(o.modified, |b| b.time),
                blobs: known.and_then(|b| b.blobs.clone()),
                path,
            }
        })
        .collect())
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

/// Take the oldest chains (a full archive and the deltas after it) out of
/// the state while more than `keep` archives remain without them; never
/// the current chain. Returns the archives to delete.
fn expired_chains(state: &mut JobState, keep: usize, newest: &str) -> Vec<BackupRecord> {
    let mut expired = Vec::new();
    loop {
        let chain_end = state
            .backups
            .iter()
            .skip(1)
            .position(|b| b.full)
            .map_or(state.backups.len(), |i| i + 1);
        let chain_has_newest = state.backups[..chain_end].iter().any(|b| b.path == newest);
        if chain_has_newest || state.backups.len() - chain_end < keep {
            return expired;
        }
        expired.extend(state.backups.drain(..chain_end));
    }
}
