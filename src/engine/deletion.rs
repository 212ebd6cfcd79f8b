//! The one delete-unshared rule, for every job that removes tags (prune,
//! sync's `delete_extra`): a registry deletes by digest, which removes
//! every tag sharing it, so a tag whose digest a kept tag shares stays,
//! and a second doomed tag of one digest goes with the first (one DELETE).
//! The store untags one name at a time, so there each tag is its own.
//! Pure: the callers do the deleting and the reporting.

use super::TaggedDigest;

/// What removing one doomed tag means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Delete it (for a registry: delete its digest).
    Delete,
    /// Already gone with the earlier doomed tag named here (same digest).
    GoesWith(String),
    /// Kept: the kept tag named here shares its digest.
    SharedWith(String),
}

/// Decide, in order, what happens to each of `doomed` when `kept` stay.
/// `by_digest` is [`super::Repository::deletes_by_digest`].
pub fn plan_deletions<'a>(
    doomed: &'a [TaggedDigest],
    kept: &[TaggedDigest],
    by_digest: bool,
) -> Vec<(&'a TaggedDigest, Deletion)> {
    let mut deleted: Vec<&TaggedDigest> = Vec::new();
    doomed
        .iter()
        .map(|tag| {
            if !by_digest {
                return (tag, Deletion::Delete);
            }
            if let Some(keeper) = kept.iter().find(|k| k.digest == tag.digest) {
                return (tag, Deletion::SharedWith(keeper.tag.clone()));
            }
            if let Some(first) = deleted.iter().find(|d| d.digest == tag.digest) {
                return (tag, Deletion::GoesWith(first.tag.clone()));
            }
            deleted.push(tag);
            (tag, Deletion::Delete)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Digest;

    fn tagged(tag: &str, digest: char) -> TaggedDigest {
        TaggedDigest {
            tag: tag.into(),
            digest: format!("sha256:{}", digest.to_string().repeat(64))
                .parse::<Digest>()
                .unwrap(),
            first_seen: None,
        }
    }

    #[test]
    fn a_registry_keeps_shared_digests_and_deletes_each_digest_once() {
        let doomed = [
            tagged("old", 'a'),
            tagged("older", 'a'),
            tagged("alias", 'b'),
        ];
        let kept = [tagged("latest", 'b')];
        let plan: Vec<(&str, Deletion)> = plan_deletions(&doomed, &kept, true)
            .into_iter()
            .map(|(t, d)| (t.tag.as_str(), d))
            .collect();
        assert_eq!(
            plan,
            [
                ("old", Deletion::Delete),
                ("older", Deletion::GoesWith("old".into())),
                ("alias", Deletion::SharedWith("latest".into())),
            ]
        );
    }

    #[test]
    fn the_store_untags_each_name_on_its_own() {
        let doomed = [tagged("old", 'a'), tagged("alias", 'b')];
        let kept = [tagged("latest", 'b')];
        assert!(plan_deletions(&doomed, &kept, false)
            .iter()
            .all(|(_, d)| *d == Deletion::Delete));
    }
}
