//! `ferry copy` with an archive at one end: `archive:FILE` or `archive:-`
//! (standard input or output). `archive:` always means a file, even when a
//! registry host is named `archive`; `docker://` in front of a reference
//! always means a registry. Both directions run through the engine and
//! never touch the local store.

use super::archive::{read_from, write_output};
use super::args::CopyArgs;
use super::output::{human_size, json, println};
use super::{Context, UsageError};
use crate::archive::location::Location;
use crate::engine::{
    copy_image, plan_archive, write_archive, ArchiveSource, ArchiveTarget, CopyOptions,
    DestinationBlobs, PlatformChoice, RegistryDestination, RegistrySource, SharedSource,
};
use crate::progress::Reporter;
use crate::types::Reference;
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// One end of a copy.
pub enum Endpoint {
    Registry(String),
    Archive(String),
}

impl Endpoint {
    /// Read a SRC or DEST argument.
    pub fn parse(text: &str) -> Endpoint {
        if let Some(path) = text.strip_prefix("archive:") {
            Endpoint::Archive(path.to_owned())
        } else {
            Endpoint::Registry(text.strip_prefix("docker://").unwrap_or(text).to_owned())
        }
    }
}

/// `ferry copy archive:FILE DEST`: push every image of the archive.
pub async fn from_archive(
    context: &Context,
    path: &str,
    destination: &str,
    options: &CopyOptions,
) -> anyhow::Result<ExitCode> {
    let target = ArchiveTarget::parse(destination).map_err(UsageError)?;
    let registries = context.registries();
    // A delta's left-out blobs must already be at the destination.
    let known = DestinationBlobs {
        registries: &registries,
        target: &target,
        handle: tokio::runtime::Handle::current(),
    };
    let location = Location::parse(path).map_err(UsageError)?;
    let hint = "archive:- reads standard input: pipe an archive in";
    let source = read_from(context, &location, hint, |input, name| {
        ArchiveSource::read(input, name, Some(&known))
    })
    .await?;
    // Every destination is decided before the first byte moves.
    let destinations = target
        .destinations(source.images())
        .map_err(|e| UsageError(format!("archive:{path}: {e}")))?;
    context.reporter.set_verb("Copy");
    let mut outcomes = Vec::new();
    for (index, targets) in destinations.into_iter().enumerate() {
        for to in targets {
            let client = registries.client(to.registry())?;
            let outcome = copy_image(
                source.source(index).as_ref(),
                &RegistryDestination::new(client, to.clone()),
                options,
            )
            .await
            .with_context(|| {
                format!("copy archive:{path} → {to} failed; no tag was changed there")
            })?;
            context.reporter.clear();
            if context.json {
                outcomes.push(outcome);
            } else if context.quiet {
                println(&to.with_digest(outcome.digest.clone()).to_string())?;
            } else {
                println(&format!(
                    "{to}: digest: {} ({} copied, {} present)",
                    outcome.digest, outcome.blobs_copied, outcome.blobs_present
                ))?;
            }
        }
    }
    if context.json {
        json(&outcomes)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry copy IMAGE archive:FILE`: registry → archive, no store copy.
pub async fn to_archive(
    context: &Context,
    args: &CopyArgs,
    source: &str,
    path: &str,
    choice: PlatformChoice,
) -> anyhow::Result<ExitCode> {
    let requested =
        Reference::parse_repository_or_ref(source).map_err(|e| UsageError(e.to_string()))?;
    let registries = context.registries();
    let client = registries.client(requested.registry())?;
    let references = if args.all_tags {
        super::transfer::every_tag(&client, &requested).await?
    } else {
        vec![Reference::parse(source).map_err(|e| UsageError(e.to_string()))?]
    };
    let sources: Vec<(SharedSource, Option<Reference>)> = references
        .into_iter()
        .map(|reference| {
            let name = reference.tag().is_some().then(|| reference.clone());
            let source: SharedSource = Arc::new(RegistrySource::new(client.clone(), reference));
            (source, name)
        })
        .collect();
    let docker_platform = match &choice {
        PlatformChoice::Subset(list) | PlatformChoice::Exactly(list) => list.first().cloned(),
        PlatformChoice::Single(one) => Some(one.clone()),
        PlatformChoice::Prefer(one) => Some(one.clone()),
        PlatformChoice::All => None,
    };
    let plan = plan_archive(
        sources,
        &choice,
        docker_platform.as_ref(),
        Default::default(),
        &super::transfer::referrer_filter(args.no_referrers),
    )
    .await
    .with_context(|| format!("copy {source} → archive:{path} failed; nothing was written"))?;
    context.reporter.set_verb("Copy");
    let reporter: Arc<dyn Reporter> = context.reporter.clone();
    let output = (!path.is_empty() && path != "-").then(|| Path::new(path));
    let written = write_output(context, output, |out| {
        Ok(write_archive(
            &plan,
            out,
            crate::archive::Compression::None,
            &reporter,
        )?)
    })
    .await
    .with_context(|| format!("copy {source} → archive:{path} failed; nothing was written"))?;
    context.reporter.clear();
    let layout = &plan.layout;
    if context.json {
        json(&layout.images)?;
    } else if let (Some(place), false) = (written, context.quiet) {
        println(&format!(
            "Wrote {}, {} ({}) to {place}",
            layout.describe_counts(),
            crate::types::count(layout.blob_count(), "blob"),
            human_size(layout.blob_bytes()),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
