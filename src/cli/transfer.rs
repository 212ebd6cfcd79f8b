//! Commands that talk to registries: `pull`, `push`, `copy`, `tags`,
//! `login`, `logout`. Each resolves its endpoints and hands the work to the
//! copy engine; output follows docker's wording.

use super::archive_copy::{self, Endpoint};
use super::args::{CopyArgs, LoginArgs, PullArgs, PushArgs};
use super::output::{json, println};
use super::{Context, UsageError};
use crate::config::DefaultPlatforms;
use crate::engine::{
    copy_image, CopyOptions, CopyOutcome, PlatformChoice, RegistryDestination, RegistrySource,
    StoreDestination, StoreSource,
};
use crate::registry::credentials;
use crate::registry::{Registries, RegistrySettings};
use crate::store::index::TagChange;
use crate::types::referrer::image_tags;
use crate::types::{Platform, Reference, ReferrerFilter, Secret};
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    Reference::parse(text).map_err(|e| UsageError(e.to_string()).into())
}

fn parse_platforms(list: &[String]) -> anyhow::Result<Vec<Platform>> {
    list.iter()
        .map(|p| {
            p.parse::<Platform>()
                .map_err(|e| UsageError(e.to_string()).into())
        })
        .collect()
}

fn copy_options(
    context: &Context,
    platforms: PlatformChoice,
    concurrency: Option<usize>,
    no_referrers: bool,
) -> CopyOptions {
    CopyOptions {
        platforms,
        concurrency: context.concurrency(concurrency),
        reporter: context.reporter.clone(),
        referrers: referrer_filter(no_referrers),
    }
}

/// Referrers travel unless `--no-referrers`.
pub(super) fn referrer_filter(no_referrers: bool) -> ReferrerFilter {
    match no_referrers {
        true => ReferrerFilter::None,
        false => ReferrerFilter::All,
    }
}

/// Pull's platform choice: flags first, then `[defaults] platforms`, then the host.
fn pull_platforms(context: &Context, args: &PullArgs) -> anyhow::Result<PlatformChoice> {
    if args.all_platforms {
        return Ok(PlatformChoice::All);
    }
    // Asked for on the command line: each must be there. The config's
    // default list keeps those the image has.
    let mut list = parse_platforms(&args.platform)?;
    let asked = !list.is_empty();
    if list.is_empty() {
        match &context.config.platforms {
            DefaultPlatforms::Host => return Ok(PlatformChoice::Prefer(Platform::host())),
            DefaultPlatforms::All => return Ok(PlatformChoice::All),
            DefaultPlatforms::List(configured) => list = configured.clone(),
        }
    }
    Ok(PlatformChoice::from_list(
        list,
        asked,
        PlatformChoice::Prefer(Platform::host()),
    ))
}

/// Every tag of `repository` (a reference without tag or digest), sorted,
/// for `--all-tags`.
/// Every tag of a repository, for `--all-tags`. With `skip_referrer_tags`
/// (referrers travel with their images into the store or an archive),
/// cosign signature tags and referrers fallback tags are left to come with
/// the images they belong to instead of becoming images of their own.
pub(super) async fn every_tag(
    client: &crate::registry::RegistryClient,
    repository: &Reference,
) -> anyhow::Result<Vec<Reference>> {
    if repository.tag().is_some() || repository.digest().is_some() {
        return Err(
            UsageError("--all-tags takes a repository without tag or digest".into()).into(),
        );
    }
    let tags = image_tags(client.list_tags(repository.repository()).await?);
    Ok(tags.iter().map(|tag| repository.with_tag(tag)).collect())
}

/// `ferry pull`.
pub async fn pull(context: &Context, args: PullArgs) -> anyhow::Result<ExitCode> {
    let platforms = pull_platforms(context, &args)?;
    let store = context.store()?;
    let registries = context.registries();
    let requested =
        Reference::parse_repository_or_ref(&args.image).map_err(|e| UsageError(e.to_string()))?;
    let client = registries.client(requested.registry())?;
    let references = if args.all_tags {
        every_tag(&client, &requested).await?
    } else {
        if requested.tag().is_none()
            && requested.digest().is_none()
            && !context.quiet
            && !context.json
        {
            println("Using default tag: latest")?;
        }
        vec![parse_reference(&args.image)?]
    };
    context.reporter.set_verb("Pull");
    let options = copy_options(context, platforms, args.concurrency, args.no_referrers);
    let mut outcomes = Vec::new();
    for reference in references {
        if !context.quiet && !context.json {
            println(&format!(
                "{}: Pulling from {}",
                reference.manifest_reference(),
                reference.repository()
            ))?;
        }
        let source = RegistrySource::new(client.clone(), reference.clone());
        let destination = StoreDestination::new(store.clone(), Some(reference.clone()));
        let outcome = copy_image(&source, &destination, &options)
            .await
            .with_context(|| {
                format!("pull {reference} failed; the store and its tags are unchanged")
            })?;
        context.reporter.clear();
        if context.json {
            outcomes.push(outcome);
            continue;
        }
        if !context.quiet {
            println(&format!("Digest: {}", outcome.digest))?;
            let status = match outcome.tag_change {
                Some(TagChange::Unchanged) if outcome.blobs_copied == 0 => {
                    "Image is up to date for"
                }
                _ => "Downloaded newer image for",
            };
            println(&format!("Status: {status} {}", display_name(&reference)))?;
        }
        println(&reference.to_string())?;
    }
    if context.json {
        json(&outcomes)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn display_name(reference: &Reference) -> String {
    let mut text = reference.familiar_name();
    if let Some(tag) = reference.tag() {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = reference.digest() {
        text.push('@');
        text.push_str(&digest.to_string());
    }
    text
}

/// `ferry push`.
pub async fn push(context: &Context, args: PushArgs) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let image = store.resolve(&args.image)?;
    let source_name = image.entry.name();
    let destination = match &args.destination {
        Some(text) => {
            let target = Reference::parse_repository_or_ref(text).map_err(|e| UsageError(e.to_string()))?;
            if target.tag().is_some() || target.digest().is_some() {
                target
            } else {
                target.with_tag(source_name.as_ref().and_then(|n| n.tag()).unwrap_or("latest"))
            }
        }
        None => source_name
            .clone()
            .filter(|n| n.tag().is_some())
            .ok_or_else(|| UsageError(format!("{} has no tag to push to; give a destination, e.g. ferry push {} host:5000/team/app:1.0", args.image, args.image)))?,
    };
    let registries = context.registries();
    let client = registries.client(destination.registry())?;
    if !context.quiet && !context.json {
        println(&format!(
            "The push refers to repository [{}]",
            destination.name()
        ))?;
    }
    context.reporter.set_verb("Push");
    let name = source_name.map_or_else(|| args.image.clone(), |n| n.to_string());
    let source = StoreSource::new((*store).clone(), image.entry.clone(), name);
    let target = RegistryDestination::new(client, destination.clone());
    let options = copy_options(
        context,
        PlatformChoice::All,
        args.concurrency,
        args.no_referrers,
    );
    let outcome = copy_image(&source, &target, &options)
        .await
        .with_context(|| format!("push to {destination} failed; no tag was changed there"))?;
    context.reporter.clear();
    finish_transfer(context, &destination, &outcome)
}

fn finish_transfer(
    context: &Context,
    destination: &Reference,
    outcome: &CopyOutcome,
) -> anyhow::Result<ExitCode> {
    if context.json {
        json(outcome)?;
    } else if context.quiet {
        println(&destination.with_digest(outcome.digest.clone()).to_string())?;
    } else {
        println(&format!(
            "{}: digest: {} ({} copied, {} present, {} mounted)",
            destination.manifest_reference(),
            outcome.digest,
            outcome.blobs_copied,
            outcome.blobs_present,
            outcome.blobs_mounted
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry copy`.
pub async fn copy(context: &Context, args: CopyArgs) -> anyhow::Result<ExitCode> {
    let platforms = parse_platforms(&args.platform)?;
    let choice = PlatformChoice::from_list(platforms, true, PlatformChoice::All);
    let options = copy_options(context, choice.clone(), args.concurrency, args.no_referrers);
    match (
        Endpoint::parse(&args.source),
        Endpoint::parse(&args.destination),
    ) {
        (Endpoint::Archive(path), Endpoint::Registry(destination)) => {
            archive_copy::from_archive(context, &path, &destination, &options).await
        }
        (Endpoint::Registry(source), Endpoint::Archive(path)) => {
            archive_copy::to_archive(context, &args, &source, &path, choice).await
        }
        (Endpoint::Archive(_), Endpoint::Archive(_)) => Err(UsageError(
            "copy between two archives: load the first (ferry load) and save what you need".into(),
        )
        .into()),
        (Endpoint::Registry(source), Endpoint::Registry(destination)) => {
            registry_copy(context, &args, &source, &destination, &options).await
        }
    }
}

async fn registry_copy(
    context: &Context,
    args: &CopyArgs,
    source: &str,
    destination: &str,
    options: &CopyOptions,
) -> anyhow::Result<ExitCode> {
    let registries = context.registries();
    let source_ref =
        Reference::parse_repository_or_ref(source).map_err(|e| UsageError(e.to_string()))?;
    let destination_ref =
        Reference::parse_repository_or_ref(destination).map_err(|e| UsageError(e.to_string()))?;
    let source_client = registries.client(source_ref.registry())?;
    let destination_client = registries.client(destination_ref.registry())?;
    let pairs: Vec<(Reference, Reference)> = if args.all_tags {
        if source_ref.tag().is_some() || destination_ref.tag().is_some() {
            return Err(UsageError(
                "--all-tags copies whole repositories: give both without a tag".into(),
            )
            .into());
        }
        let tags = image_tags(source_client.list_tags(source_ref.repository()).await?);
        tags.iter()
            .map(|tag| (source_ref.with_tag(tag), destination_ref.with_tag(tag)))
            .collect()
    } else {
        let source = parse_reference(source)?;
        let destination = if destination_ref.tag().is_none() && destination_ref.digest().is_none() {
            destination_ref.with_tag(source.tag().unwrap_or("latest"))
        } else {
            destination_ref
        };
        vec![(source, destination)]
    };
    context.reporter.set_verb("Copy");
    let mut outcomes = Vec::new();
    for (from, to) in pairs {
        let source = RegistrySource::new(source_client.clone(), from.clone());
        let target = RegistryDestination::new(destination_client.clone(), to.clone());
        let outcome = copy_image(&source, &target, options)
            .await
            .with_context(|| {
                format!("copy {from} → {to} failed; no tag was changed at the destination")
            })?;
        context.reporter.clear();
        if context.json {
            outcomes.push(outcome);
        } else {
            finish_transfer(context, &to, &outcome)?;
        }
    }
    if context.json {
        json(&outcomes)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry tags`.
pub async fn tags(context: &Context, repository: &str) -> anyhow::Result<ExitCode> {
    let reference =
        Reference::parse_repository_or_ref(repository).map_err(|e| UsageError(e.to_string()))?;
    let registries = context.registries();
    let mut tags = registries
        .client(reference.registry())?
        .list_tags(reference.repository())
        .await?;
    tags.sort();
    if context.json {
        json(&tags)?;
    } else {
        for tag in tags {
            println(&tag)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry login`: check the credentials against the registry, then save them.
pub async fn login(context: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = normalise_registry(&args.registry)?;
    let username = args
        .username
        .ok_or_else(|| UsageError("give the username with -u USER".into()))?;
    if !args.password_stdin {
        return Err(UsageError(format!(
            "ferry reads passwords from standard input only: echo \"$TOKEN\" | ferry login -u {username} --password-stdin {registry}"
        ))
        .into());
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    let password = Secret::new(password.trim_end_matches(['\r', '\n']));
    if password.expose().is_empty() {
        return Err(UsageError("the password read from standard input is empty".into()).into());
    }
    let mut settings: HashMap<String, RegistrySettings> = context.config.registries.clone();
    let entry = settings.entry(registry.clone()).or_default();
    entry.username = Some(username.clone());
    entry.password = Some(password.clone());
    let registries = Registries::new(
        settings,
        context.reporter.clone() as Arc<dyn crate::progress::Reporter>,
    );
    registries
        .client(&registry)?
        .ping()
        .await
        .with_context(|| format!("login to {registry} failed"))?;
    let saved_in = credentials::login(&registry, &username, &password)?;
    if !context.quiet {
        println(&format!(
            "Login Succeeded (credentials saved in {saved_in})"
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry logout`.
pub fn logout(context: &Context, registry: &str) -> anyhow::Result<ExitCode> {
    let registry = normalise_registry(registry)?;
    let removed = credentials::logout(&registry)?;
    if !context.quiet {
        if removed {
            println(&format!("Removing login credentials for {registry}"))?;
        } else {
            println(&format!("Not logged in to {registry}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Accept `docker.io`, `index.docker.io`, `https://host:5000/` and plain hosts.
fn normalise_registry(text: &str) -> anyhow::Result<String> {
    let bare = text
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let bare = bare
        .strip_suffix("/v1")
        .or_else(|| bare.strip_suffix("/v2"))
        .unwrap_or(bare);
    let host_like = bare.contains(['.', ':']) || bare == "localhost";
    if !host_like {
        return Err(UsageError(format!(
            "{text:?} is not a registry host (e.g. docker.io, registry.example.com, host:5000)"
        ))
        .into());
    }
    let probe = format!("{bare}/x");
    let reference = Reference::parse(&probe)
        .map_err(|_| UsageError(format!("{text:?} is not a registry host")))?;
    if reference.repository() != "x" && reference.registry() != crate::types::reference::DOCKER_HUB
    {
        return Err(UsageError(format!("{text:?} is not a registry host")).into());
    }
    Ok(reference.registry().to_owned())
}
