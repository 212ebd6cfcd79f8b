//! Where a backup job's archives are and how they rotate: existence,
//! the previous archive's blobs, removal — on disk or in a bucket — the
//! keys an output template produces, the chain as a bucket lists it, and
//! which chains `keep` expires.

use super::state::{BackupRecord, JobState};
use super::{JobContext, JobError, Stop};
use crate::archive::location::{archive_blobs, Location};

/// The size of an archive, `None` when it is not there.
pub(super) async fn archive_size(context: &JobContext, path: &str) -> Result<Option<u64>, Stop> {
    match Location::parse(path) {
        Ok(Location::Object(url)) => {
            let bucket = context.objects.bucket(&url)?;
            Ok(bucket.head(&url.key).await?.map(|info| info.size))
        }
        _ => Ok(std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())),
    }
}

/// The blobs of the archive a delta is made against.
pub(super) async fn previous_blobs(
    context: &JobContext,
    path: &str,
) -> Result<std::collections::BTreeSet<crate::types::Digest>, Stop> {
    let place = Location::parse(path).map_err(|e| Stop::Failed(JobError::Refused(e)))?;
    Ok(archive_blobs(&context.objects, &place).await?)
}

pub(super) async fn remove(context: &JobContext, path: &str) -> Result<(), JobError> {
    match Location::parse(path) {
        Ok(Location::Object(url)) => Ok(context.objects.bucket(&url)?.delete(&url.key).await?),
        _ => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(JobError::Io {
                what: format!("cannot remove {path}"),
                source: e,
            }),
            _ => Ok(()),
        },
    }
}

/// The keys an output template can produce for `job`: `{date}`, `{time}`
/// and `{run}` stand for what they expand to.
pub(super) fn template_pattern(template: &str, job: &str) -> regex::Regex {
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
            ("{date}", crate::types::time::DATE_PATTERN.to_owned()),
            ("{time}", crate::types::time::TIME_PATTERN.to_owned()),
            ("{run}", r"(\d+)".to_owned()),
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

/// This job's archives as their place lists them (the bucket's keys, or
/// the files of the output's directory), oldest first, each marked full or
/// delta from what the state remembers; archives the state does not know
/// (a deleted state's, an older ferry's) are grouped: each run of them is
/// one chain, so none of them loses a base it may need. A template whose
/// directory itself varies is not listed: the state's records are used as
/// they are.
pub(super) async fn listed_backups(
    context: &JobContext,
    location: &Location,
    template: &str,
    job: &str,
    remembered: &[BackupRecord],
) -> Result<Vec<BackupRecord>, Stop> {
    let pattern = template_pattern(template, job);
    // (path, modified) of every archive the template matches.
    let mut listed: Vec<(String, i64)> = Vec::new();
    match location {
        Location::Object(url) => {
            let bucket = context.objects.bucket(url)?;
            let key = template
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
                .map_or("", |(_, key)| key);
            let fixed = &key[..key.find('{').unwrap_or(key.len())];
            for object in bucket.list(fixed).await? {
                // Some servers (Garage) may list a key for a moment after its
                // delete: a HEAD, which is consistent, confirms each one.
                if pattern.is_match(&object.key) && bucket.head(&object.key).await?.is_some() {
                    listed.push((
                        url.with_key(object.key.clone()).to_string(),
                        object.modified,
                    ));
                }
            }
        }
        _ => {
            let (dir, prefix) = match template.rfind('/') {
                Some(at) => (&template[..at], &template[..=at]),
                None => (".", ""),
            };
            if dir.contains('{') {
                return Ok(remembered.to_vec());
            }
            let entries = match std::fs::read_dir(if dir.is_empty() { "/" } else { dir }) {
                Ok(entries) => entries,
                // Not made yet: the first backup there creates it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(Stop::Failed(JobError::Io {
                        what: format!("cannot list the backups in {dir}"),
                        source: e,
                    }))
                }
            };
            for entry in entries.flatten() {
                let path = format!("{prefix}{}", entry.file_name().to_string_lossy());
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && pattern.is_match(&path) {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs() as i64);
                    listed.push((path, modified));
                }
            }
        }
    }
    let known = |path: &str| remembered.iter().find(|b| b.path == path);
    // By time; remembered archives of one second in the order written,
    // after unknown ones of that second.
    let order = |path: &str, modified: i64| {
        let at = remembered.iter().position(|b| b.path == path);
        let time = at.map_or(modified, |i| remembered[i].time);
        (time, at.map_or(-1, |i| i as i64), path.to_owned())
    };
    listed.sort_by_cached_key(|(path, modified)| order(path, *modified));
    // Archives the state does not know may be deltas of one another: a run
    // of them is taken as one chain (its first as the full archive), so
    // rotation removes them together or not at all.
    let mut after_unknown = false;
    Ok(listed
        .into_iter()
        .map(|(path, modified)| {
            let known = known(&path);
            let full = match known {
                Some(b) => b.full,
                None => !after_unknown,
            };
            after_unknown = known.is_none();
            BackupRecord {
                full,
                time: known.map_or(modified, |b| b.time),
                blobs: known.and_then(|b| b.blobs.clone()),
                size: known.and_then(|b| b.size),
                path,
            }
        })
        .collect())
}

/// The part of an archive path a template pattern matches: the key of an
/// `s3://BUCKET/KEY` URL, a file path as it is.
pub(super) fn object_key(path: &str) -> &str {
    path.strip_prefix("s3://").map_or(path, |rest| {
        rest.split_once('/').map_or(rest, |(_, key)| key)
    })
}

/// Whether `path` (an archive written) lies where `template` now writes:
/// the same bucket (or the filesystem) and a key the template produces.
pub(super) fn written_by(template: &str, job: &str, path: &str) -> bool {
    let place = |p: &str| p.len() - object_key(p).len();
    template[..place(template)] == path[..place(path)]
        && template_pattern(template, job).is_match(object_key(path))
}

/// The highest `{run}` number among `listed` archives of `template`: a
/// reset state numbers its runs after them instead of overwriting them.
pub(super) fn highest_run(template: &str, job: &str, listed: &[BackupRecord]) -> u64 {
    let pattern = template_pattern(template, job);
    listed
        .iter()
        .filter_map(|record| {
            let path = object_key(&record.path);
            pattern.captures(path)?.get(1)?.as_str().parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Take the oldest chains (a full archive and the deltas after it) out of
/// the state while more than `keep` archives remain without them; never
/// the current chain. Returns the archives to delete.
pub(super) fn expired_chains(state: &mut JobState, keep: usize, newest: &str) -> Vec<BackupRecord> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_the_keys_it_expands_to_and_no_others() {
        assert!(written_by("s3://b/x-{run}.tar", "j", "s3://b/x-3.tar"));
        assert!(!written_by("s3://new/x-{run}.tar", "j", "s3://old/x-3.tar"));
        assert!(!written_by("/new/x-{run}.tar", "j", "/old/x-3.tar"));
        assert!(!written_by("s3://b/x-{run}.tar", "j", "b/x-3.tar"));
        let pattern = template_pattern("s3://b/ferry/{job}-{date}-{time}-{run}.tar", "nightly");
        assert!(pattern.is_match("ferry/nightly-2026-11-26-061500-12.tar"));
        assert!(!pattern.is_match("ferry/other-2026-11-26-061500-12.tar"));
        assert!(!pattern.is_match("ferry/.ferry-uploads/nightly-2026-11-26-061500-12.tar.ab.json"));
        assert!(!pattern.is_match("ferry/nightly-2026-11-26-061500-12.tar.bak"));
    }

    #[test]
    fn keep_expires_whole_chains_and_never_the_newest() {
        let record = |path: &str, full| BackupRecord {
            path: path.into(),
            full,
            time: 0,
            blobs: None,
            size: None,
        };
        let mut state = JobState {
            backups: vec![
                record("1", true),
                record("2", false),
                record("3", true),
                record("4", false),
                record("5", true),
            ],
            ..Default::default()
        };
        let expired: Vec<String> = expired_chains(&mut state, 3, "5")
            .into_iter()
            .map(|b| b.path)
            .collect();
        assert_eq!(expired, ["1", "2"]);
        assert_eq!(state.backups.len(), 3);
        assert!(
            expired_chains(&mut state, 1, "3").is_empty(),
            "the chain holding the newest stays"
        );
    }
}
