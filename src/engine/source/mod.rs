//! Where a copy reads from. Plan and transfer talk to a [`Source`] and
//! never know which one: a registry repository (`registry.rs`), an image
//! of the local store (`store.rs`) or an image of a checked archive
//! (`archive.rs`). The write side is `destination/`.

mod archive;
mod file_stream;
mod registry;
mod store;

pub use archive::ArchiveImageSource;
pub use registry::RegistrySource;
pub use store::StoreSource;

use super::EngineError;
use crate::registry::blobs::BlobStream;
use crate::types::{Digest, ParsedManifest, ReferrerLink};
use std::sync::Arc;

/// A source shared by the plan, the transfer and the referrers found at it.
pub type SharedSource = Arc<dyn Source>;

/// Where images come from.
///
/// Contract (every implementation keeps it; `tests/endpoints.rs` checks it
/// against each):
/// - `root` returns the top-level manifest with its exact bytes, `manifest`
///   a child by digest, checked against that digest. Nothing a source
///   returns was trusted before it was verified.
/// - `blob` is the one verified stream: exactly `size` bytes whose digest
///   is checked as they pass (only bytes the source hashed into a private
///   copy of its own when it made it — an archive's spool — are not hashed
///   twice); a wrong size or digest ends the stream in an error that names
///   where the bytes came from (a registry, a store file, an archive
///   member) and whether trying again can help. A stream that ends cleanly
///   has delivered the blob.
/// - `blob_from` (only where `resumes` is true: a registry) continues a
///   blob from `offset` with the size checked; its digest is the caller's
///   to check, since only the caller has hashed the bytes before `offset`.
/// - `referrers` lists what refers to `subject` here (OCI referrers and
///   cosign tags), each with a source of its own; listing problems become
///   notes, never errors: the image itself can still be copied.
/// - Reads may wait on the network or the disk; none holds a lock.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// A name for messages.
    fn describe(&self) -> String;

    /// The top-level manifest.
    async fn root(&self) -> Result<ParsedManifest, EngineError>;

    /// A child manifest by digest.
    async fn manifest(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, EngineError>;

    /// A verified stream of a blob's bytes (see the contract).
    fn blob(&self, digest: &Digest, size: u64) -> BlobStream;

    /// Whether `blob_from` can continue a partial download.
    fn resumes(&self) -> bool {
        false
    }

    /// The bytes of a blob from `offset` on, size checked (see the contract).
    fn blob_from(&self, digest: &Digest, size: u64, offset: u64) -> BlobStream {
        debug_assert_eq!(offset, 0, "{} does not resume", self.describe());
        self.blob(digest, size)
    }

    /// The registry and repository, for cross-repository mounts.
    fn registry_repository(&self) -> Option<(&str, &str)> {
        None
    }

    /// What refers to `subject` here (see the contract).
    async fn referrers(&self, subject: &Digest, notes: &mut Vec<String>) -> Vec<ReferrerCandidate>;
}

/// One referrer a source lists for a subject, before it is planned.
pub struct ReferrerCandidate {
    pub link: ReferrerLink,
    pub source: SharedSource,
    /// What it is, when the listing says (for `--referrers` filters).
    pub artifact_type: Option<String>,
}
