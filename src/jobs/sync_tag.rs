//! One selected tag of a `[[sync]]` brought up to date: the HEADs that
//! say whether it changed (and whether what refers to it did), the pure
//! decision, then the copy — of the image, or of its new referrers only.

use super::state::SeenTag;
use super::Stop;
use crate::config::jobs::SyncSpec;
use crate::engine::{copy_image, copy_referrers, CopyOptions, Destination, Repository, TagHead};
use crate::types::time::now_unix;
use crate::types::{Digest, Reference};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One selected tag to bring up to date.
pub(super) struct Item {
    /// The source repository, and its name.
    pub(super) from: Arc<dyn Repository>,
    pub(super) source: Reference,
    pub(super) tag: String,
    pub(super) target: Arc<dyn Repository>,
    pub(super) tags: Arc<BTreeSet<String>>,
    pub(super) remembered: Option<SeenTag>,
}

/// What happened to one item.
pub(super) enum Done {
    Copied {
        seen: SeenTag,
        changes: Vec<String>,
        backup_tag: Option<String>,
        bytes: u64,
    },
    Unchanged {
        seen: Option<SeenTag>,
        changes: Vec<String>,
    },
    Gone,
    Deferred(String),
}

/// Expand `{tag}`, `{date}` and `{time}` in a backup tag template (the
/// one date expansion backup outputs use too).
fn backup_tag(template: &str, tag: &str) -> String {
    crate::types::time::expand_date_time(&template.replace("{tag}", tag), now_unix())
}

/// Whether a tag needs no copy (pure): the target already has the source's
/// digest — or, when `platforms` rebuild what is copied (another digest),
/// both sides are still at the digests the last copy saw.
fn is_unchanged(
    rebuilt: bool,
    source: Option<&Digest>,
    target: Option<&Digest>,
    remembered: Option<&SeenTag>,
) -> bool {
    let (Some(source), Some(target)) = (source, target) else {
        return false;
    };
    (!rebuilt && source == target)
        || remembered.is_some_and(|seen| {
            seen.source.as_ref() == Some(source) && seen.target.as_ref() == Some(target)
        })
}

/// What the HEADs found for one tag, before anything is copied.
struct Looked {
    /// The source tag (`repository/path:tag`).
    from: Reference,
    head: TagHead,
    /// What the target's tag points at now.
    current: Option<Digest>,
    /// What refers to the source image now, when it could be told cheaply.
    fingerprint: Option<String>,
    destination: Box<dyn Destination>,
}

/// Bring one tag up to date: HEADs to see whether it changed (and whether
/// its referrers did), then the copy.
pub(super) async fn sync_one(
    item: &Item,
    spec: &SyncSpec,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Some(head) = item.from.head(&item.tag).await? else {
        return Ok(Done::Gone);
    };
    if let Some(remaining) = head.rate_limit_remaining {
        if remaining < spec.rate_limit_floor {
            return Ok(Done::Deferred(format!(
                "{}: rate limit has {remaining} pulls left, below the floor of {}; deferred",
                item.source.registry(),
                spec.rate_limit_floor
            )));
        }
    }
    let from = item.source.with_tag(&item.tag);
    let current = item.target.digest(&item.tag).await?;
    let destination = item.target.destination(&item.tag)?;
    let unchanged = is_unchanged(
        spec.platforms.is_some(),
        head.digest.as_ref(),
        current.as_ref(),
        item.remembered.as_ref(),
    );
    let fingerprint = match (&head.digest, spec.referrers.enabled()) {
        // A broken referrers listing never stops the image itself.
        (Some(digest), true) => match item.from.referrers_fingerprint(digest, &item.tags).await {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                tracing::warn!("referrers of {from} not checked: {error}");
                None
            }
        },
        _ => None,
    };
    let looked = Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    };
    match unchanged {
        true => refresh_referrers(item, looked, options, dry_run).await,
        false => copy_tag(item, spec, looked, options, dry_run).await,
    }
}

/// An image already at the target: copy its referrers when what refers to
/// it changed since the last run.
async fn refresh_referrers(
    item: &Item,
    looked: Looked,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    } = looked;
    let seen_referrers = item
        .remembered
        .as_ref()
        .and_then(|seen| seen.referrers.clone());
    if fingerprint.is_none() || fingerprint == seen_referrers {
        return Ok(Done::Unchanged {
            seen: None,
            changes: Vec::new(),
        });
    }
    if dry_run {
        return Ok(Done::Unchanged {
            seen: None,
            changes: vec![format!("would copy new signatures or SBOMs of {from}")],
        });
    }
    let copied = copy_new_referrers(
        item.from.as_ref(),
        destination.as_ref(),
        head.digest.as_ref(),
        head.media_type.as_deref(),
        options,
    )
    .await?;
    let mut seen = item.remembered.clone().unwrap_or(SeenTag {
        source: head.digest.clone(),
        target: current,
        referrers: None,
    });
    seen.referrers = fingerprint;
    Ok(Done::Unchanged {
        seen: Some(seen),
        changes: vec![format!(
            "copied {copied} referrers (signatures, attestations, SBOMs) of {from}"
        )],
    })
}

/// Copy a changed tag (keeping the old image under the backup tag first,
/// when configured).
async fn copy_tag(
    item: &Item,
    spec: &SyncSpec,
    looked: Looked,
    options: &CopyOptions,
    dry_run: bool,
) -> Result<Done, Stop> {
    let Looked {
        from,
        head,
        current,
        fingerprint,
        destination,
    } = looked;
    let (tag, target) = (&item.tag, &item.target);
    let shown = destination.describe();
    if dry_run {
        return Ok(Done::Unchanged {
            seen: None,
            changes: vec![format!("would copy {from} → {shown}")],
        });
    }
    let mut changes = Vec::new();
    let mut backup_tag_kept = None;
    if let (Some(template), Some(old)) = (&spec.backup_overwritten, &current) {
        let backup = backup_tag(template, tag);
        target.put_tag(&backup, old).await?;
        changes.push(format!(
            "kept the old {}:{tag} as {backup}",
            target.describe()
        ));
        backup_tag_kept = Some(backup);
    }
    let outcome = copy_image(
        item.from.source(tag)?.as_ref(),
        destination.as_ref(),
        options,
    )
    .await?;
    changes.push(format!(
        "copied {from} → {shown} ({}, {} blobs copied)",
        outcome.digest, outcome.blobs_copied
    ));
    Ok(Done::Copied {
        seen: SeenTag {
            source: head.digest,
            target: Some(outcome.digest.clone()),
            referrers: fingerprint,
        },
        changes,
        backup_tag: backup_tag_kept,
        bytes: outcome.bytes_copied,
    })
}

/// Copy the referrers of an image that is already at the destination: its
/// own, and (for an index) its platform manifests'.
async fn copy_new_referrers(
    from: &dyn Repository,
    destination: &dyn Destination,
    digest: Option<&Digest>,
    media_type: Option<&str>,
    options: &CopyOptions,
) -> Result<usize, Stop> {
    let Some(digest) = digest else {
        return Ok(0);
    };
    let mut subjects = vec![digest.clone()];
    let source = from.source(&digest.to_string())?;
    if media_type.is_some_and(crate::types::media::is_index) {
        let index = source.root().await?;
        for child in index.children() {
            if let Ok(child) = crate::types::manifest::descriptor_digest(child) {
                subjects.push(child);
            }
        }
    }
    let copied = copy_referrers(source.as_ref(), destination, subjects, options).await?;
    for note in copied.notes {
        tracing::warn!("{note}");
    }
    Ok(copied.copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_unchanged_when_the_target_holds_what_the_source_has() {
        let digest = |c: char| -> Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        let (a, b) = (digest('a'), digest('b'));
        // Copied as is: equal digests are unchanged, different ones are not.
        assert!(is_unchanged(false, Some(&a), Some(&a), None));
        assert!(!is_unchanged(false, Some(&a), Some(&b), None));
        // Nothing at the target, or the tag gone at the source: a copy.
        assert!(!is_unchanged(false, Some(&a), None, None));
        assert!(!is_unchanged(false, None, Some(&a), None));
        // Rebuilt for platforms: only the digests the last copy saw count.
        let seen = SeenTag {
            source: Some(a.clone()),
            target: Some(b.clone()),
            referrers: None,
        };
        assert!(is_unchanged(true, Some(&a), Some(&b), Some(&seen)));
        assert!(!is_unchanged(true, Some(&a), Some(&a), None));
        assert!(!is_unchanged(true, Some(&b), Some(&b), Some(&seen)));
    }

    #[test]
    fn a_backup_tag_uses_the_one_date_expansion() {
        let tag = super::backup_tag("{tag}-{date}", "1.0");
        let pattern = format!(r"^1\.0-{}$", crate::types::time::DATE_PATTERN);
        assert!(regex::Regex::new(&pattern).unwrap().is_match(&tag), "{tag}");
    }
}
