//! Where a backup job's archives are and how they rotate: existence,
//! the previous archive's blobs, removal — on disk or in a bucket — the
//! keys an output template produces, the chain as a bucket lists it, and
//! which chains `keep` expires.

use super::state::{BackupRecord, JobState};
use super::{JobContext, Stop};
use crate::archive::location::{archive_blobs, Location};

/// Whether an archive the state remembers is still there.
pub(super) async fn exists(context: &JobContext, path: &str) -> Result<bool, Stop> {
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
pub(super) async fn previous_blobs(
    context: &JobContext,
    path: &str,
) -> Result<std::collections::BTreeSet<crate::types::Digest>, Stop> {
    let place = Location::parse(path).map_err(|e| Stop::Failed(anyhow::anyhow!(e)))?;
    Ok(archive_blobs(&context.objects, &place).await?)
}

pub(super) async fn remove(context: &JobContext, path: &str) -> anyhow::Result<()> {
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
pub(super) async fn listed_backups(
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
