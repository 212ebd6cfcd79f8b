//! The archive as a destination: `save` (store → archive), `copy IMAGE
//! archive:FILE` and backup jobs (registry → archive, no store copy). Every
//! image is planned first (the tar's metadata comes before its blobs), then
//! the blobs stream from their sources into the tar in order, each through
//! the source's verifying stream; a delta leaves out what an older archive has.

use super::plan::{plan_image, ImagePlan};
use super::referrers::{discover_referrers, subjects_of};
use super::source::SharedSource;
use super::EngineError;
use crate::archive::save::{self, ArchiveImage, SavePlan};
use crate::archive::{ArchiveError, Compression};
use crate::progress::{Event, Reporter};
use crate::types::choice::{choose_image_now, PlatformChoice};
use crate::types::{Digest, ParsedManifest, Platform, Reference, ReferrerFilter, ReferrerLink};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

/// An archive ready to be written: its layout and where each blob comes from.
pub struct ArchivePlan {
    pub layout: SavePlan,
    sources: Vec<SharedSource>,
    owner: BTreeMap<Digest, usize>,
}

/// Plan an archive of `images` (each a source and the name to record),
/// with the referrers `referrers` admits (each once, in the OCI part).
/// `docker_platform` picks the image `manifest.json` lists for an index
/// (default: the host's); an index without it is left out of
/// `manifest.json` (the OCI part still carries it) rather than guessed.
pub async fn plan_archive(
    images: Vec<(SharedSource, Option<Reference>)>,
    choice: &PlatformChoice,
    docker_platform: Option<&Platform>,
    exclude: BTreeSet<Digest>,
    referrers: &ReferrerFilter,
) -> Result<ArchivePlan, EngineError> {
    let host = Platform::host();
    let wanted = docker_platform.unwrap_or(&host);
    let mut planned = Planned::default();
    let mut attached = BTreeSet::new();
    for (source, name) in images {
        let plan = plan_image(source.as_ref(), choice).await?;
        let docker = docker_manifest(&plan, wanted);
        let discovered = discover_referrers(source.as_ref(), subjects_of(&plan), referrers).await;
        for note in discovered.notes {
            tracing::warn!("{note}");
        }
        planned.add(source, plan, name, docker, None);
        for referrer in discovered.referrers {
            if attached.insert((referrer.plan.root.digest.clone(), referrer.link.clone())) {
                planned.add(
                    referrer.source,
                    referrer.plan,
                    None,
                    None,
                    Some(referrer.link),
                );
            }
        }
    }
    let layout = save::plan(planned.images, exclude)?;
    Ok(ArchivePlan {
        layout,
        sources: planned.sources,
        owner: planned.owner,
    })
}

/// The images of an archive being planned, and where their blobs come from.
#[derive(Default)]
struct Planned {
    images: Vec<ArchiveImage>,
    sources: Vec<SharedSource>,
    owner: BTreeMap<Digest, usize>,
}

impl Planned {
    fn add(
        &mut self,
        source: SharedSource,
        plan: ImagePlan,
        name: Option<Reference>,
        docker: Option<ParsedManifest>,
        link: Option<ReferrerLink>,
    ) {
        for digest in plan.blobs.keys() {
            self.owner
                .entry(digest.clone())
                .or_insert(self.sources.len());
        }
        let ImagePlan {
            root,
            manifests,
            blobs,
            ..
        } = plan;
        self.images.push(ArchiveImage {
            name,
            root,
            manifests,
            blobs,
            docker,
            link,
        });
        self.sources.push(source);
    }
}

/// The single-platform manifest of a plan for `manifest.json`.
fn docker_manifest(plan: &ImagePlan, wanted: &Platform) -> Option<ParsedManifest> {
    let by_digest = |digest: &Digest, _: &str| {
        plan.manifests
            .iter()
            .find(|m| &m.digest == digest)
            .cloned()
            .ok_or(())
    };
    // manifest.json lists container images only: docker and podman refuse
    // anything else (OCI artifacts travel in the OCI part alone).
    choose_image_now(plan.root.clone(), wanted, &plan.image, by_digest)
        .ok()
        .filter(ParsedManifest::is_container_image)
}

/// A blocking reader over a source's verified blob stream.
struct StreamReader {
    stream: crate::registry::blobs::BlobStream,
    handle: tokio::runtime::Handle,
    chunk: bytes::Bytes,
    reporter: Arc<dyn Reporter>,
    digest: Digest,
    done: u64,
}

impl Read for StreamReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(error)) => return Err(std::io::Error::other(error.to_string())),
            }
        }
        let count = buffer.len().min(self.chunk.len());
        buffer[..count].copy_from_slice(&self.chunk.split_to(count));
        self.done += count as u64;
        self.reporter.report(Event::BlobProgress {
            digest: self.digest.clone(),
            done: self.done,
        });
        Ok(count)
    }
}

/// Write a planned archive to `out`. Runs the tar writer on this thread
/// (it must be a runtime worker: blobs are awaited from it).
pub fn write_archive(
    plan: &ArchivePlan,
    out: &mut dyn std::io::Write,
    compression: Compression,
    reporter: &Arc<dyn Reporter>,
) -> Result<(), ArchiveError> {
    let handle = tokio::runtime::Handle::current();
    let mut open = |digest: &Digest, size: u64| -> Result<Box<dyn Read + Send>, ArchiveError> {
        let index = plan
            .owner
            .get(digest)
            .copied()
            .ok_or_else(|| ArchiveError::Invalid {
                archive: "archive".into(),
                message: format!("no source holds blob {digest}"),
            })?;
        reporter.report(Event::BlobStarted {
            digest: digest.clone(),
            size,
        });
        Ok(Box::new(StreamReader {
            stream: plan.sources[index].blob(digest, size),
            handle: handle.clone(),
            chunk: bytes::Bytes::new(),
            reporter: reporter.clone(),
            digest: digest.clone(),
            done: 0,
        }))
    };
    tokio::task::block_in_place(|| save::write(&plan.layout, &mut open, out, compression))
}
