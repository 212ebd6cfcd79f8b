//! Step two for registry and store destinations: transfer every distinct
//! blob of a plan in parallel (skipping what the destination has, mounting
//! where it can), then write child manifests and finally the root, so a
//! reader never sees a manifest whose parts are missing.

use super::destination::Destination;
use super::plan::{plan_image, ImagePlan};
use super::referrers::{copy_referrers, subjects_of};
use super::source::Source;
use super::EngineError;
use crate::progress::{BlobOutcome, Event, Reporter};
use crate::store::index::TagChange;
use crate::types::choice::{PlatformChoice, ReferrerFilter};
use crate::types::Digest;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;

/// How many times one blob transfer is attempted from scratch.
const BLOB_ATTEMPTS: u32 = 3;

/// Options for one copy.
#[derive(Clone)]
pub struct CopyOptions {
    pub platforms: PlatformChoice,
    pub concurrency: usize,
    pub reporter: Arc<dyn Reporter>,
    /// Which of the image's referrers travel with it.
    pub referrers: ReferrerFilter,
}

/// What a copy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyOutcome {
    pub source: String,
    pub destination: String,
    /// Digest of the root written at the destination.
    pub digest: Digest,
    pub media_type: String,
    pub blobs_copied: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    pub bytes_copied: u64,
    #[serde(skip)]
    pub tag_change: Option<TagChange>,
    /// The destination registry indexed the root's `subject` itself.
    #[serde(skip)]
    pub subject_indexed: bool,
    /// Referrers (signatures, attestations, SBOMs) copied with the image.
    pub referrers_copied: usize,
    /// Referrers left behind, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Copy one image from `source` to `destination`: plan, then transfer.
pub async fn copy_image(
    source: &dyn Source,
    destination: &dyn Destination,
    options: &CopyOptions,
) -> Result<CopyOutcome, EngineError> {
    let plan = plan_image(source, &options.platforms).await?;
    let mut outcome = transfer(source, &plan, destination, options).await?;
    // Signatures, attestations and SBOMs follow the image.
    if options.referrers.enabled() {
        let copied = copy_referrers(source, destination, subjects_of(&plan), options).await?;
        for note in &copied.notes {
            tracing::warn!("{note}");
        }
        outcome.referrers_copied = copied.copied;
        outcome.notes = copied.notes;
    }
    Ok(outcome)
}

/// Step two: execute a plan against a destination.
pub async fn transfer(
    source: &dyn Source,
    plan: &ImagePlan,
    destination: &dyn Destination,
    options: &CopyOptions,
) -> Result<CopyOutcome, EngineError> {
    // Into the store, every blob committed or found present is protected
    // from gc until the tag commits (store::protect); no lock is held
    // across the transfer.
    let root = &plan.root;
    let mut outcome = CopyOutcome {
        source: plan.image.clone(),
        destination: destination.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        blobs_copied: 0,
        blobs_present: 0,
        blobs_mounted: 0,
        bytes_copied: 0,
        tag_change: None,
        subject_indexed: false,
        referrers_copied: 0,
        notes: Vec::new(),
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut transfers = FuturesUnordered::new();
    for (digest, &size) in &plan.blobs {
        let limit = limit.clone();
        transfers.push(async move {
            let _permit = limit
                .acquire()
                .await
                .map_err(|_| invalid(&plan.image, "the transfer was shut down"))?;
            transfer_blob(source, destination, digest, size, &options.reporter)
                .await
                .map(|o| (o, size))
        });
    }
    let mut first_error = None;
    while let Some(result) = transfers.next().await {
        match result {
            Ok((BlobOutcome::Copied, size)) => {
                outcome.blobs_copied += 1;
                outcome.bytes_copied += size;
            }
            Ok((BlobOutcome::AlreadyPresent, _)) => outcome.blobs_present += 1,
            Ok((BlobOutcome::Mounted, _)) => outcome.blobs_mounted += 1,
            // Let the other transfers finish so their work is kept for the next try.
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    drop(transfers);
    if let Some(error) = first_error {
        return Err(error);
    }

    for manifest in &plan.manifests {
        destination.write_manifest(manifest, false).await?;
        options.reporter.report(Event::ManifestWritten {
            digest: manifest.digest.clone(),
        });
    }
    outcome.subject_indexed = destination.write_manifest(root, true).await?;
    options.reporter.report(Event::ManifestWritten {
        digest: root.digest.clone(),
    });
    outcome.tag_change = destination.finish(root).await?;
    Ok(outcome)
}

fn invalid(image: &str, message: &str) -> EngineError {
    EngineError::Invalid {
        image: image.to_owned(),
        message: message.to_owned(),
    }
}

/// One lock per blob being written to a registry repository, process-wide:
/// images copied in parallel often share layers, and two uploads of one
/// blob into one repository at once can race in the registry (distribution
/// 2.8 then refuses the manifest). The second copy waits, then finds the
/// blob there.
fn upload_lock(key: String) -> Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, Weak};
    static LOCKS: LazyLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut locks = LOCKS.lock().expect("upload locks");
    if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    locks.retain(|_, lock| lock.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(key, Arc::downgrade(&lock));
    lock
}

/// Move one blob, retrying the whole transfer on transient or integrity failures.
async fn transfer_blob(
    source: &dyn Source,
    destination: &dyn Destination,
    digest: &Digest,
    size: u64,
    reporter: &Arc<dyn Reporter>,
) -> Result<BlobOutcome, EngineError> {
    let lock = destination.writer_key(digest).map(upload_lock);
    let _one_writer = match &lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    if destination.has_blob(digest, size).await? {
        reporter.report(Event::BlobFinished {
            digest: digest.clone(),
            outcome: BlobOutcome::AlreadyPresent,
        });
        return Ok(BlobOutcome::AlreadyPresent);
    }
    if destination.try_mount(source, digest).await? {
        reporter.report(Event::BlobFinished {
            digest: digest.clone(),
            outcome: BlobOutcome::Mounted,
        });
        return Ok(BlobOutcome::Mounted);
    }
    reporter.report(Event::BlobStarted {
        digest: digest.clone(),
        size,
    });
    let mut attempt = 1;
    loop {
        let progress_reporter = reporter.clone();
        let progress_digest = digest.clone();
        let on_progress = Arc::new(move |done| {
            progress_reporter.report(Event::BlobProgress {
                digest: progress_digest.clone(),
                done,
            })
        });
        let written = destination
            .write_blob(source, digest, size, on_progress)
            .await;
        match written {
            Ok(()) => {
                reporter.report(Event::BlobFinished {
                    digest: digest.clone(),
                    outcome: BlobOutcome::Copied,
                });
                return Ok(BlobOutcome::Copied);
            }
            Err(error) if attempt < BLOB_ATTEMPTS && error.is_retryable() => {
                reporter.report(Event::Retrying {
                    what: format!("blob {digest}"),
                    attempt,
                    reason: error.to_string(),
                });
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}
