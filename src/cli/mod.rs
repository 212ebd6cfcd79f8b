//! The command line: clap definitions, settings resolved once (flags, then
//! environment, then config), dispatch to one function per command, and
//! exit codes (0 ok, 1 failed, 2 usage or config error, 3 a job incomplete,
//! 128+N stopped at once by signal N; a broken pipe after a listing is 0).
//! This is the only module that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod archive;
mod archive_copy;
mod args;
mod inspect;
mod jobs;
mod local;
mod output;
mod reporter;
mod transfer;

use crate::config::{Config, ConfigError};
use crate::registry::Registries;
use crate::store::Store;
use anyhow::Context as _;
use args::{Cli, Command};
use clap::Parser;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Everything a command needs, resolved once.
pub struct Context {
    pub config: Config,
    pub store_path: PathBuf,
    pub quiet: bool,
    pub json: bool,
    pub progress: bool,
    pub verbose: bool,
    /// `--log-format json`: every stderr line is a JSON object.
    pub log_json: bool,
    pub reporter: Arc<reporter::TerminalReporter>,
}

impl Context {
    /// Open (creating if needed) the store.
    pub fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.store_path)?)
    }

    /// Whether the store exists.
    pub fn has_store(&self) -> bool {
        self.store_path.join("index.json").is_file()
    }

    /// The store for a command that only looks (or removes): where none
    /// exists, say so on stderr and read an empty scratch store instead of
    /// creating one at a mistyped `--store` path.
    pub fn store_to_read(&self) -> anyhow::Result<ReadStore> {
        if self.has_store() {
            return Ok(ReadStore {
                store: self.store()?,
                _scratch: None,
            });
        }
        tracing::warn!(
            "no store at {} (nothing was pulled, loaded or imported there; \
             --store or FERRY_STORE names another): reading it as empty",
            self.store_path.display()
        );
        let scratch = Scratch::new("empty")?;
        Ok(ReadStore {
            store: Store::open(&scratch.path)?,
            _scratch: Some(scratch),
        })
    }

    /// Object storage clients with the config's `[object_store]` settings.
    pub fn objects(&self) -> crate::objects::Objects {
        crate::objects::Objects::new(self.config.objects.clone())
    }

    /// The registry client pool with the config's per-host settings.
    pub fn registries(&self) -> Registries {
        Registries::new(self.config.registries.clone(), self.reporter.clone())
            .with_stall_timeout(self.config.stall_timeout)
    }

    /// Concurrency from `--concurrency`, else the config.
    pub fn concurrency(&self, flag: Option<usize>) -> usize {
        flag.unwrap_or(self.config.concurrency).clamp(1, 64)
    }
}

/// Run ferry with the process arguments and return its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_failure(error),
    };
    init_logging(cli.global.verbose, cli.global.quiet, cli.global.log_format);
    output::set_json_logs(cli.global.log_format == args::LogFormat::Json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let on_signal = match cli.command {
        Command::Run { .. } | Command::Daemon { .. } => OnSignal::SafePoint(
            "between images; an archive being written is abandoned",
        ),
        Command::Serve(_) => OnSignal::SafePoint(
            "no new connections; open requests are cut, and every push already acknowledged is stored",
        ),
        _ => OnSignal::AtOnce,
    };
    let outcome = runtime.block_on(async {
        tokio::spawn(handle_signals(on_signal));
        run(cli).await
    });
    // Work still on the blocking pool (a serve request waiting for a store
    // lock) never holds the exit up: the store is crash-safe by design.
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    match outcome {
        Ok(code) => code,
        Err(error) => report_error(&error),
    }
}

/// A command line clap refused: its message, as one JSON object when the
/// arguments ask for `--log-format json` (parsing failed, so they are read
/// as given); help and version go to stdout as usual.
fn usage_failure(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.iter().any(|a| a == "--log-format=json")
            || args
                .windows(2)
                .any(|w| w[0] == "--log-format" && w[1] == "json")
    };
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !wants_json {
        error.exit();
    }
    output::set_json_logs(true);
    let text = error.render().to_string();
    let text = text.trim().strip_prefix("error: ").unwrap_or(text.trim());
    output::eline("ERROR", text);
    ExitCode::from(2)
}

/// How a command answers SIGINT and SIGTERM.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnSignal {
    /// `run`, `daemon`, `serve`: the first asks for a stop at the next safe
    /// point (between images; an archive being written is abandoned); a
    /// second stops at once.
    /// What the safe point is, for the message.
    SafePoint(&'static str),
    /// Every other command stops at once: each of their writes is atomic
    /// (a blob, a tag, an archive appear whole or not at all).
    AtOnce,
}

/// Woken when a stop is asked for ([`wait_for_shutdown`]).
static STOP: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Turn SIGINT/SIGTERM into stop requests, as `on_signal` says.
async fn handle_signals(on_signal: OnSignal) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut first = true;
    loop {
        let (number, name) = tokio::select! {
            _ = interrupt.recv() => (2, "SIGINT"),
            _ = terminate.recv() => (15, "SIGTERM"),
        };
        if let (true, OnSignal::SafePoint(safe_point)) = (first, on_signal) {
            first = false;
            crate::types::interrupt::request(number);
            STOP.notify_waiters();
            tracing::warn!(
                "{name}: stopping at the next safe point ({}); a second Ctrl-C or SIGTERM stops at once",
                safe_point
            );
            continue;
        }
        crate::types::interrupt::remove_temps();
        tracing::error!(
            "{name}: stopped at once; temp files of archives being written were removed, and the store keeps only complete blobs and images (a partial download stays for the next pull to resume; `ferry gc` removes it)"
        );
        std::process::exit(128 + number);
    }
}

/// Wait until SIGINT or SIGTERM asks for a stop.
pub(crate) async fn wait_for_shutdown() {
    let notified = STOP.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if crate::types::interrupt::requested() {
        return;
    }
    notified.await;
}

/// Logs on stderr: colour only on a terminal and without `NO_COLOR`; JSON
/// lines with `--log-format json`.
fn init_logging(verbose: u8, quiet: bool, format: args::LogFormat) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "ferry=info",
        (false, _) => "ferry=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        args::LogFormat::Text => builder.with_ansi(colour).without_time().try_init(),
        args::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// Print an error chain and choose the exit code.
fn report_error(error: &anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    let mut text = format!("error: {error}");
    for cause in error.chain().skip(1) {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
    }
    error_line(text.trim_start_matches("error: "));
    let usage = error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<crate::archive::ArchiveError>(),
                Some(crate::archive::ArchiveError::Usage(_))
            )
            || matches!(
                cause.downcast_ref::<crate::engine::EngineError>(),
                Some(crate::engine::EngineError::Archive(
                    crate::archive::ArchiveError::Usage(_)
                ))
            )
    });
    ExitCode::from(if usage { 2 } else { 1 })
}

/// An error on stderr: `error: TEXT`, or a JSON object with `--log-format json`.
pub(crate) fn error_line(text: &str) {
    match output::json_logs() {
        true => output::eline("ERROR", text),
        false => eprintln!("error: {text}"),
    }
}

/// A mistake in how ferry was called (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn load_config(explicit: Option<&PathBuf>) -> anyhow::Result<Config> {
    let candidate = explicit
        .cloned()
        .or_else(|| std::env::var_os("FERRY_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("ferry.toml")).filter(|p| p.exists()))
        .or_else(|| {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
            Some(base.join("ferry").join("ferry.toml")).filter(|p| p.exists())
        });
    match candidate {
        Some(path) => Ok(Config::load(&path)?),
        None => Ok(Config::default()),
    }
}

/// The store directory: `--store`, `$FERRY_STORE`, `[store] path`, then `$XDG_DATA_HOME/ferry`.
fn store_path(flag: Option<&PathBuf>, config: &Config) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag
        .cloned()
        .or_else(|| std::env::var_os("FERRY_STORE").map(PathBuf::from))
    {
        return Ok(path);
    }
    if let Some(path) = &config.store_path {
        return Ok(path.clone());
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| {
            UsageError("cannot choose a store directory: set --store, FERRY_STORE or HOME".into())
        })?;
    Ok(data.join("ferry"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completions { shell } = &cli.command {
        args::print_completions(*shell);
        return Ok(ExitCode::SUCCESS);
    }
    let config = load_config(cli.global.config.as_ref())?;
    // One bandwidth budget for the whole process.
    let limit = match &cli.global.limit_rate {
        Some(text) => Some(
            crate::types::rate::parse_rate(text)
                .map_err(|e| UsageError(format!("--limit-rate: {e}")))?,
        ),
        None => config.bandwidth,
    };
    if let Some(rate) = limit {
        crate::registry::bandwidth::set_limit(rate);
    }
    let store_path = store_path(cli.global.store.as_ref(), &config)?;
    let verbose = cli.global.verbose > 0;
    let progress = !cli.global.quiet && !cli.global.no_progress && !cli.global.json;
    let context = Context {
        config,
        store_path,
        quiet: cli.global.quiet,
        json: cli.global.json,
        progress,
        verbose,
        log_json: output::json_logs(),
        reporter: Arc::new(reporter::TerminalReporter::new(
            progress,
            cli.global.verbose > 0,
        )),
    };
    match cli.command {
        Command::Pull(args) => transfer::pull(&context, args).await,
        Command::Push(args) => transfer::push(&context, args).await,
        Command::Copy(args) => transfer::copy(&context, args).await,
        Command::Tags { repository } => transfer::tags(&context, &repository).await,
        Command::Login(args) => transfer::login(&context, args).await,
        Command::Logout { registry } => transfer::logout(&context, &registry),
        Command::Images(args) => local::images(&context, args),
        Command::Inspect { images, platform } => {
            inspect::inspect(&context, &images, platform.as_ref())
        }
        Command::History {
            image,
            no_trunc,
            platform,
        } => inspect::history(&context, &image, no_trunc, platform.as_ref()),
        Command::Tag { source, target } => local::tag(&context, &source, &target),
        Command::Rmi { images, force } => local::rmi(&context, &images, force),
        Command::Prune(args) => local::prune(&context, args),
        Command::Df => local::df(&context, verbose),
        Command::Gc { dry_run } => local::gc(&context, dry_run),
        Command::Verify {
            archive: Some(path),
            ..
        } => archive::verify_archive(&context, &path).await,
        Command::Verify {
            archive: None,
            read_data,
        } => local::verify(&context, read_data),
        Command::Save(args) => archive::save(&context, args).await,
        Command::Load(args) => archive::load(&context, args).await,
        Command::Import {
            file,
            image,
            change,
        } => archive::import(&context, &file, &image, &change),
        Command::Export {
            image,
            output,
            platform,
        } => archive::export(&context, &image, output.as_deref(), platform.as_ref()).await,
        Command::Run {
            jobs,
            dry_run,
            parallel_images,
            shard,
            shards,
        } => {
            let shard = jobs::shard_of(shard.as_deref(), shards)?;
            jobs::run(&context, &jobs, dry_run, parallel_images, shard).await
        }
        Command::Daemon {
            parallel_images,
            metrics_addr,
        } => jobs::daemon(&context, parallel_images, metrics_addr).await,
        Command::Serve(args) => serve(&context, args).await,
        Command::Jobs {
            reset: None,
            shards,
        } => jobs::list(&context, shards).await,
        Command::Jobs {
            reset: Some(name), ..
        } => jobs::reset(&context, &name).await,
        Command::Config {
            action: args::ConfigAction::Check,
        } => jobs::check(&context),
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

/// `ferry serve`: bind, say where, serve until SIGTERM or Ctrl-C.
async fn serve(context: &Context, args: args::ServeArgs) -> anyhow::Result<ExitCode> {
    let store = context.store()?;
    let options = crate::serve::ServeOptions {
        addr: args.addr.clone(),
        read_only: args.read_only,
        htpasswd: args.htpasswd.clone(),
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        allow_anonymous_push: args.allow_anonymous_push,
        upload_timeout: std::time::Duration::from_secs(args.upload_timeout),
        name: args.name.clone(),
        limits: crate::serve::Limits {
            max_connections: args.max_connections.max(1),
            max_uploads: args.max_uploads,
            max_uploads_per_client: args.max_uploads_per_client,
            max_blob_size: args.max_blob_size,
            header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
            ..crate::serve::Limits::default()
        },
    };
    let listening = crate::serve::bind(store.clone(), &options).await?;
    let scheme = if listening.tls { "https" } else { "http" };
    let addr = listening.addr;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "serving on {addr}, reachable from other machines{}",
            if options.htpasswd.is_none() {
                " without a login"
            } else {
                ""
            }
        );
    }
    let mode = match (
        args.read_only,
        options.htpasswd.is_some(),
        args.allow_anonymous_push,
    ) {
        (true, _, _) => "read-only",
        (false, true, _) => "pushes with a login",
        (false, false, true) => "anonymous pushes allowed",
        (false, false, false) => "pull only until --htpasswd or --allow-anonymous-push",
    };
    output::println(&format!(
        "Serving {} on {scheme}://{addr} ({mode}); pushes are stored as {}/…",
        store.root().display(),
        listening.name
    ))?;
    listening.run(wait_for_shutdown()).await;
    Ok(ExitCode::SUCCESS)
}

/// A store a looking command reads: the real one, or an empty scratch one
/// (removed on drop) when none exists.
pub struct ReadStore {
    store: Store,
    _scratch: Option<Scratch>,
}

impl std::ops::Deref for ReadStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// A throwaway store directory, removed when dropped.
pub struct Scratch {
    pub path: std::path::PathBuf,
    _guard: crate::types::interrupt::TempGuard,
}

impl Scratch {
    pub fn new(purpose: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!(
            "ferry-{purpose}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot make a scratch directory {}", path.display()))?;
        let guard = crate::types::interrupt::track(&path);
        Ok(Scratch {
            path,
            _guard: guard,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
