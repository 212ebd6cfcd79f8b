//! A backup job's chain of archives: where the next archive goes and
//! whether it is full or a delta (and of which base), the record the job
//! keeps of it, and rotation by whole chains — so every kept delta can
//! still be restored.

use super::backup::expand;
use super::backup_place::{
    archive_size, expired_chains, highest_run, listed_backups, previous_blobs, remove, written_by,
};
use super::state::{BackupRecord, JobState};
use super::{JobContext, JobError, JobReport, Stop};
use crate::archive::location::Location;
use crate::config::jobs::BackupSpec;

/// Where this run writes: its `{run}` number (after every archive the
/// output's place holds, including those a reset state forgot: none is
/// ever overwritten), the expanded output and its place, and the archives
/// listed there.
pub(super) async fn next_archive(
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
pub(super) async fn delta_base(
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

/// Whether this run writes a full archive, and why it must when a delta
/// was due (pure: the state, what the output's place lists, and the path
/// this run writes). `None` as the reason: the schedule decided.
pub(super) fn archive_kind(
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
pub(super) fn record(
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
pub(super) async fn rotate(
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
pub(super) async fn chain_blobs(
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
