//! Where a copy writes to. Plan and transfer talk to a [`Destination`] and
//! never know which one: a registry repository (`registry.rs`) or the
//! local store (`store.rs`). An archive is written by `to_archive`, which
//! needs the whole plan before its first byte (the read side is `source/`).

mod registry;
mod store;

pub use registry::RegistryDestination;
pub use store::StoreDestination;

use super::source::Source;
use super::EngineError;
use crate::store::index::TagChange;
use crate::types::{Digest, ParsedManifest, ReferrerLink};
use std::sync::Arc;

/// Called with the bytes of a blob written so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Where images go.
///
/// Contract (every implementation keeps it; `tests/endpoints.rs` checks it
/// against each):
/// - `has_blob` may answer "no" wrongly (a re-upload), never "yes" wrongly.
///   "Already there" is success: nothing is written twice.
/// - `write_blob` streams the blob from `source` and makes it visible only
///   complete and verified (by ferry, or by the registry's digest check on
///   the final PUT); a failed write leaves nothing visible, and its error
///   says whether the source or the destination failed.
/// - `write_manifest` is called for children before the root; `finish`
///   then makes the root visible under its name (the tag comes last), so a
///   reader never sees a tag whose parts are missing and a copy that stops
///   half way leaves every tag as it was.
/// - `referrer_written` records a referrer where the destination lists
///   them (a registry without the referrers API: the fallback tag index).
/// - Writes may wait on the network or the disk; the store's commits run
///   off the async workers, and no lock is held while a client is waited on.
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// A name for messages.
    fn describe(&self) -> String;

    /// Where a referrer of the image this destination receives goes.
    fn for_referrer(&self, link: &ReferrerLink, digest: &Digest) -> Box<dyn Destination>;

    /// Whether the destination already has the blob (see the contract).
    async fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, EngineError>;

    /// Try a cross-repository mount from `source` (same registry only).
    async fn try_mount(&self, _source: &dyn Source, _digest: &Digest) -> Result<bool, EngineError> {
        Ok(false)
    }

    /// A key under which writes of one blob are serialised process-wide,
    /// where two at once can race (a registry repository).
    fn writer_key(&self, _digest: &Digest) -> Option<String> {
        None
    }

    /// Write a blob from `source`, reporting bytes as they pass.
    async fn write_blob(
        &self,
        source: &dyn Source,
        digest: &Digest,
        size: u64,
        on_progress: Progress,
    ) -> Result<(), EngineError>;

    /// Write a manifest: by digest for children, under the name for the
    /// root. Returns whether the destination indexed its subject itself.
    async fn write_manifest(
        &self,
        manifest: &ParsedManifest,
        root: bool,
    ) -> Result<bool, EngineError>;

    /// Make the written root visible under its name (the store's tag
    /// commit; a registry root is tagged by `write_manifest`).
    async fn finish(&self, manifest: &ParsedManifest) -> Result<Option<TagChange>, EngineError>;

    /// Record a copied referrer where the destination lists them.
    async fn referrer_written(
        &self,
        _link: &ReferrerLink,
        _root: &ParsedManifest,
        _subject_indexed: bool,
    ) -> Result<(), EngineError> {
        Ok(())
    }
}
