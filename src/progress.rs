//! Progress events: library code reports what it is doing through a
//! [`Reporter`]; only `cli` turns events into bars, lines or JSON.

use crate::types::Digest;

/// Something worth telling the user while a transfer runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// A blob transfer started; `size` is the descriptor's size.
    BlobStarted { digest: Digest, size: u64 },
    /// More bytes of a blob arrived (cumulative count).
    BlobProgress { digest: Digest, done: u64 },
    /// A blob finished: copied, already present, or mounted from another repository.
    BlobFinished {
        digest: Digest,
        outcome: BlobOutcome,
    },
    /// A manifest was written at the destination.
    ManifestWritten { digest: Digest },
    /// A transient failure is being retried.
    Retrying {
        what: String,
        attempt: u32,
        reason: String,
    },
    /// A free-form note (for example a skipped platform).
    Note(String),
}

/// How a blob reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Copied,
    AlreadyPresent,
    Mounted,
}

/// Receives progress events; implementations must be cheap and thread-safe.
pub trait Reporter: Send + Sync {
    /// Handle one event.
    fn report(&self, event: Event);
}

/// A reporter that drops every event.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}
