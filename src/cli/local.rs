//! Commands on the local store with docker's behaviour: `images`,
//! `inspect`, `history`, `tag`, `rmi`, `prune`, `df`, `gc`, `verify`.

use super::args::{ImagesArgs, PruneArgs};
use super::output::{human_size, json, println, table};
use super::{error_line, Context, UsageError};
use crate::store::maintenance::Removal;
use crate::store::{ImageSummary, IndexEntry};
use crate::types::time::{human_age, now_unix, parse_duration};
use crate::types::Reference;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// `(repository, tag)` columns for an image, docker style.
fn name_columns(summary: &ImageSummary) -> (String, String) {
    match &summary.name {
        Some(name) => (
            name.familiar_name(),
            name.tag().unwrap_or("<none>").to_owned(),
        ),
        None => ("<none>".to_owned(), "<none>".to_owned()),
    }
}

/// docker's `reference=` pattern: `*` and `?` globs on `name[:tag]`.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Whether an image's name matches a `reference=` pattern: its familiar
/// name, `name:tag`, or its full reference.
fn matches_reference(summary: &ImageSummary, pattern: &str) -> bool {
    summary.name.as_ref().is_some_and(|n| {
        let short = format!("{}:{}", n.familiar_name(), n.tag().unwrap_or(""));
        glob_match(pattern, &n.familiar_name())
            || glob_match(pattern, &short)
            || glob_match(pattern, &n.to_string())
    })
}

/// `ferry images`.
pub fn images(context: &Context, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let mut summaries = store.summaries()?;
    let first_seen = |s: &ImageSummary| s.times.map_or(0, |t| t.first_seen);
    for filter in &args.filter {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| UsageError(format!("bad filter {filter:?}: expected KEY=VALUE")))?;
        match key {
            "dangling" => {
                let want = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(UsageError(format!(
                            "bad filter {filter:?}: dangling is true or false"
                        ))
                        .into())
                    }
                };
                summaries.retain(|s| s.name.is_none() == want);
            }
            "before" | "since" => {
                // As docker: by the image's created time; an image without
                // one (an artifact) is neither before nor after anything.
                let pivot = store.resolve(value)?;
                let pivot_time = store
                    .summaries()?
                    .into_iter()
                    .find(|s| s.digest == pivot.entry.digest)
                    .and_then(|s| s.created_ns)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "filter {filter:?}: {value} has no created time to compare with"
                        ))
                    })?;
                summaries.retain(|s| match s.created_ns {
                    None => false,
                    Some(created) if key == "before" => created < pivot_time,
                    Some(created) => created > pivot_time,
                });
            }
            "reference" => summaries.retain(|s| matches_reference(s, value)),
            _ => {
                return Err(UsageError(format!(
                    "unknown filter {key:?}: use dangling, before, since or reference"
                ))
                .into())
            }
        }
    }
    // As docker: a positional pattern (`team/*`, `app:1.*`) filters as
    // `reference=` does.
    if let Some(pattern) = args.repository.as_ref().filter(|w| w.contains('*')) {
        summaries.retain(|s| matches_reference(s, pattern));
    } else if let Some(wanted) = &args.repository {
        let reference =
            Reference::parse_repository_or_ref(wanted).map_err(|e| UsageError(e.to_string()))?;
        summaries.retain(|s| {
            s.name.as_ref().is_some_and(|n| {
                n.name() == reference.name() && reference.tag().is_none_or(|t| n.tag() == Some(t))
            })
        });
    }
    // Newest first by created time, as docker; ties (one build, several
    // tags) by first-seen, then name, so the order is stable.
    summaries.sort_by(|a, b| {
        b.created_ns
            .cmp(&a.created_ns)
            .then_with(|| first_seen(b).cmp(&first_seen(a)))
            .then_with(|| {
                a.name
                    .as_ref()
                    .map(|n| n.to_string())
                    .cmp(&b.name.as_ref().map(|n| n.to_string()))
            })
    });
    if context.json {
        json(&summaries)?;
        return Ok(ExitCode::SUCCESS);
    }
    if context.quiet {
        let mut seen = std::collections::BTreeSet::new();
        // docker prints the 12-character short ID; --no-trunc the full one.
        for summary in &summaries {
            if seen.insert(summary.id.clone()) {
                match args.no_trunc {
                    true => println(&summary.id.to_string())?,
                    false => println(summary.id.short())?,
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_unix();
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let (repository, tag) = name_columns(s);
            let created = s
                .created
                .map_or_else(|| "N/A".to_owned(), |c| human_age(c, now));
            let mut row = vec![repository, tag];
            if args.digests {
                row.push(s.digest.to_string());
            }
            row.extend([
                match args.no_trunc {
                    true => s.id.to_string(),
                    false => s.id.short().to_owned(),
                },
                created,
                human_size(s.size),
                s.kind.to_owned(),
            ]);
            row
        })
        .collect();
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE", "KIND"]);
    table(&header, &rows)?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry tag`.
pub fn tag(context: &Context, source: &str, target: &str) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let image = store.resolve(source)?;
    let target = Reference::parse(target).map_err(|e| UsageError(e.to_string()))?;
    if target.digest().is_some() {
        return Err(UsageError(format!("{target}: a tag target cannot contain a digest")).into());
    }
    let entry = IndexEntry::new(
        &image.entry.media_type,
        image.entry.digest.clone(),
        image.entry.size,
    );
    store.set_tag(&target, entry)?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry rmi`: like docker, every argument is handled on its own — what
/// can be removed is (and said), each one that cannot gets its own error
/// line, and the exit status is 1 when any failed.
pub fn rmi(context: &Context, images: &[String], force: bool) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let mut removals = Vec::new();
    let mut failed = 0;
    for image in images {
        match store.rmi(std::slice::from_ref(image), force) {
            Ok(removed) => {
                if !context.json && !context.quiet {
                    // A reader that went away (`rmi … | head -1`) does not
                    // stop the removals asked for: every argument is done.
                    for removal in &removed {
                        let _ = match removal {
                            Removal::Untagged(name) => println(&format!("Untagged: {name}")),
                            Removal::Deleted(id) => println(&format!("Deleted: {id}")),
                        };
                    }
                }
                removals.extend(removed);
            }
            Err(error) => {
                failed += 1;
                error_line(&error.to_string());
            }
        }
    }
    if context.json {
        json(&removals)?;
    }
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "prune asks for confirmation: run it from a terminal, or pass -f".into(),
        )
        .into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `ferry prune`.
pub fn prune(context: &Context, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let mut until = None;
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("until", value)) => {
                let duration = parse_duration(value).ok_or_else(|| {
                    UsageError(format!("bad duration {value:?}: use e.g. 90m, 24h, 7d"))
                })?;
                until = Some(duration.as_secs());
            }
            _ => {
                return Err(UsageError(format!(
                    "unknown prune filter {filter:?}: use until=DURATION"
                ))
                .into())
            }
        }
    }
    if !args.force && !args.dry_run {
        let what = if args.all {
            "all images without at least one other name"
        } else {
            "all dangling images"
        };
        let question =
            format!("WARNING! This will remove {what}.\nAre you sure you want to continue?");
        let question = if args.all {
            question.replace(" without at least one other name", "")
        } else {
            question
        };
        if !confirm(&question)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let store = context.store_to_read()?;
    let pruned = store.prune(args.all, until, args.dry_run)?;
    if context.json {
        json(&pruned)?;
        return Ok(ExitCode::SUCCESS);
    }
    let reclaimed: u64 = pruned.iter().map(|p| p.reclaimed).sum();
    if !pruned.is_empty() && !context.quiet {
        println(if args.dry_run {
            "Would delete images:"
        } else {
            "Deleted Images:"
        })?;
        // The image IDs `images` shows (docker prints the same).
        let (untag, delete) = match args.dry_run {
            true => ("would untag", "would delete"),
            false => ("untagged", "deleted"),
        };
        // As docker: each name untagged, then the image deleted once,
        // after its last name.
        for (at, image) in pruned.iter().enumerate() {
            if let Some(name) = &image.name {
                println(&format!("{untag}: {name}"))?;
            }
            let shown = image.id.as_ref().unwrap_or(&image.digest);
            let later = pruned[at + 1..]
                .iter()
                .any(|other| other.id.as_ref().unwrap_or(&other.digest) == shown);
            if !later {
                println(&format!("{delete}: {shown}"))?;
            }
        }
        println("")?;
    }
    let verb = if args.dry_run {
        "Total reclaimable space"
    } else {
        "Total reclaimed space"
    };
    println(&format!("{verb}: {}", human_size(reclaimed)))?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry df`.
pub fn df(context: &Context, verbose: bool) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let usage = store.disk_usage()?;
    if context.json {
        json(&usage)?;
        return Ok(ExitCode::SUCCESS);
    }
    let percent = (usage.reclaimable_bytes * 100)
        .checked_div(usage.total_bytes)
        .unwrap_or(0);
    table(
        &["TYPE", "TOTAL", "DANGLING", "SIZE", "RECLAIMABLE"],
        &[vec![
            "Images".into(),
            usage.images.to_string(),
            usage.dangling.to_string(),
            human_size(usage.total_bytes),
            format!("{} ({percent}%)", human_size(usage.reclaimable_bytes)),
        ]],
    )?;
    if verbose {
        println("")?;
        let rows: Vec<Vec<String>> = usage
            .per_image
            .iter()
            .map(|image| {
                let (repository, tag) =
                    match image.name.as_deref().and_then(|n| Reference::parse(n).ok()) {
                        Some(name) => (
                            name.familiar_name(),
                            name.tag().unwrap_or("<none>").to_owned(),
                        ),
                        None => ("<none>".into(), "<none>".into()),
                    };
                vec![
                    repository,
                    tag,
                    image.digest.short().to_owned(),
                    human_size(image.size),
                    human_size(image.shared),
                    human_size(image.unique),
                ]
            })
            .collect();
        table(
            &[
                "REPOSITORY",
                "TAG",
                "DIGEST",
                "SIZE",
                "SHARED SIZE",
                "UNIQUE SIZE",
            ],
            &rows,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry gc`.
pub fn gc(context: &Context, dry_run: bool) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let report = store.gc(dry_run)?;
    if context.json {
        json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bytes: u64 = report.blobs.iter().map(|(_, size)| size).sum();
    if !context.quiet {
        for (digest, size) in &report.blobs {
            println(&format!(
                "{} {digest} ({})",
                if dry_run { "would delete" } else { "deleted" },
                human_size(*size)
            ))?;
        }
    }
    println(&format!(
        "{} {} ({}) and {}",
        if dry_run { "Would remove" } else { "Removed" },
        crate::types::count(report.blobs.len(), "unreferenced blob"),
        human_size(bytes),
        crate::types::count(report.ingest_files, "partial download")
    ))?;
    if report.protected > 0 && !context.quiet {
        println(&format!(
            "Kept {} unreferenced blobs a running or recent pull, load or push committed (their manifest may still come)",
            report.protected
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry verify`: exit 1 when anything is wrong.
pub fn verify(context: &Context, read_data: bool) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let report = store.verify(read_data)?;
    if context.json {
        json(&report)?;
    } else {
        for problem in &report.problems {
            println(&format!("problem: {problem}"))?;
        }
        if !context.quiet {
            println(&format!(
                "checked {} and {}{}: {}, {} (ferry gc removes them)",
                crate::types::count(report.images, "image"),
                crate::types::count(report.blobs, "blob"),
                if read_data {
                    format!(" ({} read and re-hashed)", human_size(report.bytes_read))
                } else {
                    " (sizes only, data not read: --read-data re-hashes every blob)".to_owned()
                },
                crate::types::count(report.problems.len(), "problem"),
                crate::types::count(report.unreferenced, "unreferenced blob"),
            ))?;
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
