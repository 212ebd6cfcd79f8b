//! The copy loop: resolve the root, choose platforms, fetch child
//! manifests, transfer every distinct blob in parallel (skipping what the
//! destination has, mounting where it can), then write child manifests and
//! finally the root, so a reader never sees a manifest whose parts are missing.

use super::endpoint::{Destination, Source};
use super::platforms::{self, PlatformChoice};
use super::EngineError;
use crate::progress::{BlobOutcome, Event, Reporter};
use crate::store::index::TagChange;
use crate::types::manifest::{descriptor_digest, is_foreign_layer};
use crate::types::{Digest, ParsedManifest};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How many times one blob transfer is attempted from scratch.
const BLOB_ATTEMPTS: u32 = 3;
/// Deepest index nesting followed.
const MAX_DEPTH: usize = 8;

/// Options for one copy.
#[derive(Clone)]
pub struct CopyOptions {
    pub platforms: PlatformChoice,
    pub concurrency: usize,
    pub reporter: Arc<dyn Reporter>,
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
}

/// Copy one image from `source` to `destination`.
pub async fn copy_image(
    source: &Source,
    destination: &Destination,
    options: &CopyOptions,
) -> Result<CopyOutcome, EngineError> {
    let image = source.describe();
    let fetched = source.root().await?;
    let root = choose_root(source, fetched, &options.platforms, &image).await?;
    // Writers hold the store's shared gc lock until the tag is set, so a
    // concurrent gc or prune never deletes blobs this copy committed.
    let _writer = match destination {
        Destination::Store { store, .. } => Some(store.lock_writer()?),
        Destination::Registry { .. } => None,
    };

    // Child manifests first (an index's children), each fetched once.
    let mut manifests: Vec<ParsedManifest> = Vec::new();
    collect_children(source, &root, 0, &mut manifests, &image).await?;

    // Every distinct blob of every image manifest.
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for manifest in manifests.iter().chain(std::iter::once(&root)) {
        if manifest.is_index() {
            continue;
        }
        for descriptor in manifest.children() {
            if is_foreign_layer(descriptor) {
                continue; // never fetched: registries do not serve them (CVE-2020-15157)
            }
            blobs.insert(
                descriptor_digest(descriptor).expect("validated on parse"),
                descriptor.size(),
            );
        }
    }

    let mut outcome = CopyOutcome {
        source: image.clone(),
        destination: destination.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        blobs_copied: 0,
        blobs_present: 0,
        blobs_mounted: 0,
        bytes_copied: 0,
        tag_change: None,
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut transfers = FuturesUnordered::new();
    for (digest, size) in blobs {
        let limit = limit.clone();
        transfers.push(async move {
            let _permit = limit.acquire().await.expect("semaphore open");
            transfer_blob(source, destination, &digest, size, &options.reporter)
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

    for manifest in &manifests {
        destination.write_manifest(manifest, false).await?;
        options.reporter.report(Event::ManifestWritten {
            digest: manifest.digest.clone(),
        });
    }
    destination.write_manifest(&root, true).await?;
    options.reporter.report(Event::ManifestWritten {
        digest: root.digest.clone(),
    });
    outcome.tag_change = destination.finish(&root)?;
    Ok(outcome)
}

/// Apply the platform choice to the fetched root.
async fn choose_root(
    source: &Source,
    root: ParsedManifest,
    choice: &PlatformChoice,
    image: &str,
) -> Result<ParsedManifest, EngineError> {
    if !root.is_index() {
        return Ok(root);
    }
    match choice {
        PlatformChoice::All => Ok(root),
        PlatformChoice::Single(wanted) => {
            let child = platforms::pick(&root, wanted).ok_or_else(|| EngineError::NoPlatform {
                image: image.to_owned(),
                wanted: wanted.to_string(),
                available: platforms::available(&root),
            })?;
            let digest = descriptor_digest(child).expect("validated on parse");
            let manifest = source
                .manifest(&digest, child.media_type().as_ref())
                .await?;
            if manifest.is_index() {
                return Err(EngineError::Invalid {
                    image: image.to_owned(),
                    message: "the platform entry is itself an index; use --all-platforms".into(),
                });
            }
            Ok(manifest)
        }
        PlatformChoice::Subset(wanted) => {
            let wanted_text = wanted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let bytes =
                platforms::subset(&root, wanted).ok_or_else(|| EngineError::NoPlatform {
                    image: image.to_owned(),
                    wanted: wanted_text,
                    available: platforms::available(&root),
                })?;
            Ok(ParsedManifest::parse(bytes, Some(&root.media_type), image)
                .map_err(crate::registry::RegistryError::from)?)
        }
    }
}

/// Fetch the manifests an index refers to, depth first, children before parents.
async fn collect_children(
    source: &Source,
    manifest: &ParsedManifest,
    depth: usize,
    out: &mut Vec<ParsedManifest>,
    image: &str,
) -> Result<(), EngineError> {
    if !manifest.is_index() {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(EngineError::Invalid {
            image: image.to_owned(),
            message: format!("index nesting deeper than {MAX_DEPTH}"),
        });
    }
    for child in manifest.children() {
        let digest = descriptor_digest(child).expect("validated on parse");
        if out.iter().any(|m| m.digest == digest) {
            continue; // an index listing one child many times costs one fetch
        }
        let fetched = source
            .manifest(&digest, child.media_type().as_ref())
            .await?;
        Box::pin(collect_children(source, &fetched, depth + 1, out, image)).await?;
        out.push(fetched);
    }
    Ok(())
}

/// Move one blob, retrying the whole transfer on transient or integrity failures.
async fn transfer_blob(
    source: &Source,
    destination: &Destination,
    digest: &Digest,
    size: u64,
    reporter: &Arc<dyn Reporter>,
) -> Result<BlobOutcome, EngineError> {
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
        let on_progress = move |done| {
            progress_reporter.report(Event::BlobProgress {
                digest: progress_digest.clone(),
                done,
            })
        };
        match destination
            .write_blob(
                digest,
                size,
                source.blob(digest, size, !destination.verifies_writes()),
                on_progress,
            )
            .await
        {
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
