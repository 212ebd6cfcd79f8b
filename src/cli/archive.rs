//! Archive commands: `save` (atomic file or stdout), `load` (file or
//! stdin; `--dry-run` lists), and `verify FILE`.

use super::args::{CompressArg, LoadArgs, SaveArgs};
use super::output::{eline, human_size, json, println};
use super::{Context, Scratch, UsageError};
use crate::archive::checked::ArchiveInput;
use crate::archive::load::LoadedImage;
use crate::archive::location::{
    archive_blobs, open_object, sweep_unfinished, write_atomically, Location, STALE_UPLOAD,
};
use crate::archive::ArchiveError;
use crate::archive::Compression;
use crate::engine::load as loader;
use crate::engine::{plan_archive, write_archive, PlatformChoice, SharedSource, StoreSource};
use crate::progress::Reporter;
use crate::store::Store;
use crate::types::Platform;
use anyhow::Context as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// `ferry save`: store → archive through the engine.
pub async fn save(context: &Context, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let platforms = args
        .platform
        .iter()
        .map(|p| p.parse::<Platform>().map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let exclude = match &args.since {
        None => Default::default(),
        Some(since)
            if Path::new(since).is_file() || crate::objects::ObjectUrl::is_object(since) =>
        {
            let place = Location::parse(since).map_err(UsageError)?;
            archive_blobs(&context.objects(), &place).await?
        }
        Some(since) => {
            let image = store.resolve(since).with_context(|| {
                format!("--since {since}: neither an archive file nor an image in the store")
            })?;
            store
                .reachable(&image.entry.digest, &image.entry.media_type)?
                .into_keys()
                .collect()
        }
    };
    let mut sources = Vec::new();
    for text in &args.images {
        let image = store.resolve(text)?;
        let name = image.entry.name().filter(|n| n.tag().is_some());
        let source: SharedSource = Arc::new(StoreSource::new(
            store.clone(),
            image.entry.clone(),
            name.as_ref()
                .map_or_else(|| text.clone(), ToString::to_string),
        ));
        sources.push((source, name));
    }
    let choice = PlatformChoice::from_list(platforms.clone(), true, PlatformChoice::All);
    let referrers = super::transfer::referrer_filter(args.no_referrers);
    let plan = plan_archive(sources, &choice, platforms.first(), exclude, &referrers).await?;
    let layout = &plan.layout;
    if args.list {
        if context.json {
            json(&layout.images)?;
        } else {
            for image in &layout.images {
                let name = match &image.link {
                    Some(link) => format!("(referrer of {})", link.subject),
                    None => image.name.clone().unwrap_or_else(|| "<none>".into()),
                };
                println(&format!("{name} {}", image.digest))?;
            }
            println(&format!(
                "{}, {} ({} left out as already there)",
                crate::types::count(layout.blob_count(), "blob"),
                human_size(layout.blob_bytes()),
                layout.left_out()
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let compression = compression_of(args.compress);
    if let Some(readers) = compression.unreadable_by() {
        tracing::warn!("{readers}; --compress none (the default) loads everywhere");
    }
    context.reporter.set_verb("Save");
    let reporter: Arc<dyn Reporter> = context.reporter.clone();
    let written = write_output(context, args.output.as_deref(), |out| {
        Ok(write_archive(&plan, out, compression, &reporter)?)
    })
    .await?;
    context.reporter.clear();
    if let (Some(place), false) = (written, context.quiet || context.json) {
        eline(
            "INFO",
            &format!(
                "Saved {}, {} ({}) to {place}",
                layout.describe_counts(),
                crate::types::count(layout.blob_count(), "blob"),
                human_size(layout.blob_bytes()),
            ),
        );
    }
    if context.json {
        json(&layout.images)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The archive compression a flag names.
pub fn compression_of(arg: CompressArg) -> Compression {
    match arg {
        CompressArg::None => Compression::None,
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::Zstd => Compression::Zstd,
    }
}

/// Standard output closed before an archive written to it was complete.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed before the archive was complete (its reader stopped early); what it got is cut short")]
pub struct OutputCut;

/// Write to `-o FILE` or `-o s3://BUCKET/KEY` atomically, or to standard
/// output when it is not a terminal. Returns where it went, if not stdout.
pub async fn write_output(
    context: &Context,
    output: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<Option<Location>> {
    let location = match output {
        Some(path) => Location::from_path(path).map_err(UsageError)?,
        None => Location::Stdio,
    };
    if location == Location::Stdio {
        if std::io::stdout().is_terminal() {
            return Err(UsageError(
                "refusing to write a tar to a terminal: use -o FILE or redirect standard output"
                    .into(),
            )
            .into());
        }
        tokio::task::block_in_place(|| {
            let mut stdout = std::io::stdout().lock();
            write(&mut stdout)?;
            stdout.flush()?;
            Ok::<_, anyhow::Error>(())
        })
        .map_err(|error| {
            // A listing may stop quietly when its reader goes; data may not:
            // what the reader got is incomplete, and the exit says so.
            let cut = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            match cut {
                true => anyhow::Error::new(OutputCut),
                // Some of the archive may already be out: say so.
                false => error.context(
                    "the archive on standard output is incomplete: discard what was received",
                ),
            }
        })?;
        return Ok(None);
    }
    if let Location::File(path) = &location {
        // Like docker: the directory must be there; ferry never makes it.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent.filter(|p| !p.is_dir()) {
            anyhow::bail!(
                "cannot write {}: the directory {} does not exist (create it first)",
                path.display(),
                parent.display()
            );
        }
    }
    let objects = context.objects();
    if let Location::Object(url) = &location {
        let stale = crate::types::time::now_unix() - STALE_UPLOAD;
        for note in sweep_unfinished(&objects, url, |k| k == url.key, Some(stale)).await? {
            if !context.quiet {
                eline("INFO", &note);
            }
        }
    }
    write_atomically(&location, &objects, write).await?;
    Ok(Some(location))
}

/// `ferry import`.
pub fn import(
    context: &Context,
    file: &str,
    image: &str,
    changes: &[String],
) -> anyhow::Result<ExitCode> {
    let store = context.store()?;
    let name = crate::types::Reference::parse(image).map_err(|e| UsageError(e.to_string()))?;
    let id = if file == "-" {
        let mut stdin = std::io::stdin().lock();
        loader::import(&store, &mut stdin, "standard input", &name, changes)?
    } else {
        let mut input = std::fs::File::open(file).with_context(|| format!("cannot open {file}"))?;
        loader::import(&store, &mut input, file, &name, changes)?
    };
    if context.json {
        json(&serde_json::json!({"name": name, "id": id}))?;
    } else {
        println(&id.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry export`.
pub async fn export(
    context: &Context,
    image: &str,
    output: Option<&Path>,
    platform: Option<&Platform>,
) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    // Choose before the output file exists: a wrong platform writes nothing.
    let (_, manifest) = store.resolve_container(image, platform)?;
    write_output(context, output, |out| {
        Ok(loader::export(&store, image, &manifest, out)?)
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Read the archive at `location` with `read`, on a blocking thread: a
/// file by its path (once it is known to open), an object or standard
/// input as a stream. `stdin_hint` is the usage error for a terminal.
pub async fn read_from<T>(
    context: &Context,
    location: &Location,
    stdin_hint: &str,
    read: impl FnOnce(ArchiveInput<'_>, &str) -> Result<T, crate::engine::EngineError>,
) -> anyhow::Result<T> {
    match location {
        Location::File(path) => {
            std::fs::metadata(path)
                .with_context(|| format!("cannot open archive {}", path.display()))?;
            let name = path.display().to_string();
            Ok(tokio::task::block_in_place(|| {
                read(ArchiveInput::File(path), &name)
            })?)
        }
        Location::Object(url) => {
            let mut reader = open_object(&context.objects(), url).await?;
            Ok(tokio::task::block_in_place(|| {
                read(ArchiveInput::Stream(&mut reader), &url.to_string())
            })?)
        }
        Location::Stdio => {
            if std::io::stdin().is_terminal() {
                return Err(UsageError(stdin_hint.to_owned()).into());
            }
            Ok(tokio::task::block_in_place(|| {
                let mut stdin = std::io::stdin().lock();
                read(ArchiveInput::Stream(&mut stdin), "standard input")
            })?)
        }
    }
}

async fn read_archive(
    context: &Context,
    input: Option<&Path>,
    dry_run: bool,
) -> anyhow::Result<Vec<LoadedImage>> {
    // A check of an archive (`verify FILE`) beside no store stages into a
    // scratch store it removes, instead of creating one.
    let scratch = match dry_run && !context.has_store() {
        true => Some(Scratch::new("verify")?),
        false => None,
    };
    let location = match input {
        Some(path) => Location::from_path(path).map_err(UsageError)?,
        None => Location::Stdio,
    };
    // A file that is not there fails before any store is made for it.
    if let Location::File(path) = &location {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ArchiveError::Io {
                archive: path.display().to_string(),
                source,
            }
            .into());
        }
    }
    let store = match &scratch {
        Some(scratch) => Store::open(&scratch.path)?,
        None => context.store()?,
    };
    let hint = "no archive given: use -i FILE or pipe one to standard input";
    read_from(context, &location, hint, |input, name| match input {
        ArchiveInput::File(path) => {
            let mut file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
                archive: name.to_owned(),
                source,
            })?;
            loader::load(&store, &mut file, name, dry_run)
        }
        ArchiveInput::Stream(stream) => loader::load(&store, stream, name, dry_run),
    })
    .await
}

fn list_images(images: &[LoadedImage]) -> anyhow::Result<()> {
    for image in images {
        let names = match (&image.link, image.names.is_empty()) {
            (Some(link), _) => format!("(referrer of {})", link.subject),
            (None, true) => "<none>".to_owned(),
            (None, false) => image.names.join(", "),
        };
        println(&format!(
            "{names}  {}  {}  {}",
            image.digest,
            image.platforms.join(","),
            human_size(image.size)
        ))?;
    }
    Ok(())
}

/// `ferry load`.
pub async fn load(context: &Context, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let images = read_archive(context, args.input.as_deref(), args.dry_run).await?;
    if context.json {
        json(&images)?;
    } else if args.dry_run {
        list_images(&images)?;
    } else if !context.quiet {
        let referrers = images.iter().filter(|i| i.link.is_some()).count();
        for image in images.iter().filter(|i| i.link.is_none()) {
            if image.names.is_empty() {
                println(&format!("Loaded image ID: {}", image.id))?;
            }
            // docker's familiar form: `nginx:1.25`, `team/app:1.0`.
            for name in &image.names {
                let shown = crate::types::Reference::parse(name)
                    .map(|r| format!("{}:{}", r.familiar_name(), r.tag().unwrap_or("latest")))
                    .unwrap_or_else(|_| name.clone());
                println(&format!("Loaded image: {shown}"))?;
            }
        }
        if referrers > 0 {
            println(&format!(
                "Loaded {} (signatures, attestations, SBOMs)",
                crate::types::count(referrers, "referrer")
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry verify FILE`: read and check the whole archive, add nothing.
pub async fn verify_archive(context: &Context, path: &Path) -> anyhow::Result<ExitCode> {
    let images = read_archive(context, Some(path), true).await?;
    if context.json {
        json(&images)?;
    } else {
        list_images(&images)?;
        let referrers = images.iter().filter(|i| i.link.is_some()).count();
        let with = match referrers {
            0 => String::new(),
            n => format!(" with {}", crate::types::count(n, "referrer")),
        };
        println(&format!(
            "{}: {} verified{with}",
            path.display(),
            crate::types::count(images.len() - referrers, "image")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
