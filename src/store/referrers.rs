//! The one walk of the referrers the store keeps with their subjects,
//! used by `inspect` (what an image carries), `gc`, `rmi` and `prune`
//! (what no image carries any more), and the descriptor the registry API
//! lists for one (`ferry serve`).

use super::index::IndexEntry;
use super::{Store, StoreError};
use crate::types::Digest;
use std::collections::BTreeSet;

impl Store {
    /// The indices of the referrer entries of `entries` whose subject
    /// `live` holds — directly, or through a referrer found before it (a
    /// signature of an SBOM of the image) — in the order found. `live`
    /// (manifest and blob digests) grows by what each found referrer
    /// reaches.
    pub fn referrers_reached(
        &self,
        entries: &[IndexEntry],
        live: &mut BTreeSet<Digest>,
    ) -> Result<Vec<usize>, StoreError> {
        let mut pending: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].is_referrer())
            .collect();
        let mut found = Vec::new();
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for i in pending {
                let entry = &entries[i];
                if entry.link().is_some_and(|l| live.contains(&l.subject)) {
                    live.extend(
                        self.reachable(&entry.digest, &entry.media_type)?
                            .into_keys(),
                    );
                    found.push(i);
                } else {
                    still.push(i);
                }
            }
            pending = still;
            if pending.len() == before {
                return Ok(found);
            }
        }
    }

    /// The descriptor the referrers API lists for a kept referrer: media
    /// type, digest, size, artifact type and the manifest's annotations.
    pub fn referrer_descriptor(&self, entry: &IndexEntry) -> Result<serde_json::Value, StoreError> {
        let manifest = self.read_manifest(&entry.digest, &entry.media_type)?;
        Ok(crate::types::referrer::referrer_descriptor(&manifest))
    }
}
