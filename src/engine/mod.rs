//! The copy engine: every transfer (pull, push, copy) is a copy of an image
//! graph from a source endpoint to a destination endpoint. It owns what all
//! of them need: platform selection, children before parents, skipping what
//! the destination has, mounts inside one registry, parallel verified blob
//! transfers under one limit, and progress events.

mod copy;
mod deletion;
mod destination;
mod from_archive;
pub mod load;
mod plan;
mod referrers;
mod repository;
mod source;
mod to_archive;

pub use crate::types::PlatformChoice;
pub use copy::{copy_image, transfer, CopyOptions, CopyOutcome};
pub use deletion::{plan_deletions, Deletion};
pub use destination::{Destination, Progress, RegistryDestination, StoreDestination};
pub use from_archive::{ArchiveSource, ArchiveTarget, DestinationBlobs};
pub use plan::{plan_image, ImagePlan};
pub use referrers::{
    copy_referrers, discover_referrers, subjects_of, Discovered, PlannedReferrer, ReferrersOutcome,
};
pub use repository::{
    Endpoints, RegistryRepository, Repository, StoreRepository, TagHead, TaggedDigest,
};
pub use source::{
    ArchiveImageSource, ReferrerCandidate, RegistrySource, SharedSource, Source, StoreSource,
};
pub use to_archive::{plan_archive, write_archive, ArchivePlan};

use crate::registry::RegistryError;
use crate::store::StoreError;

/// A copy failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    NoPlatform(#[from] crate::types::choice::NoPlatform),
    #[error("{image}: {message}")]
    Invalid { image: String, message: String },
}

impl EngineError {
    /// Whether trying the same transfer again could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            // Bad bytes from the network may be good on the next try.
            EngineError::Store(
                StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. },
            ) => true,
            EngineError::Registry(e) => e.is_restartable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::types::choice::NoPlatform;

    #[test]
    fn every_door_words_a_missing_platform_the_same() {
        let missing = NoPlatform::of("app:1", ("linux/s390x".into(), "linux/amd64".into()));
        let engine = super::EngineError::from(missing.clone()).to_string();
        let store = crate::store::StoreError::from(missing.clone()).to_string();
        assert_eq!(engine, missing.to_string());
        assert_eq!(store, missing.to_string());
        assert!(engine.contains("it has: linux/amd64"), "{engine}");
    }
}
