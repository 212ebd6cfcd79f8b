//! Command-line definitions. Names of commands and flags are a contract
//! with scripts and cron jobs: change them only with the README.

use crate::types::Platform;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Keep container images safe and where they are needed: pull, push and copy
/// through registries, a verified local store, archives and scheduled jobs.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read the config from this file (default: $FERRY_CONFIG, ./ferry.toml, then ~/.config/ferry/ferry.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this store directory (default: $FERRY_STORE, [store] path, then ~/.local/share/ferry).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print only what scripts need (IDs, digests), no progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say more about what happens (repeat for debug output; secrets are never shown).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Do not draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Log lines as `text` (default) or `json` (one object per line: time,
    /// level, message, and the job, run and image they concern).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Cap downloads and uploads at this rate each, for the whole process
    /// (e.g. 50MiB/s; default: [defaults] bandwidth, else none).
    #[arg(long, global = true, value_name = "RATE")]
    pub limit_rate: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image from a registry into the store.
    Pull(PullArgs),
    /// Push an image from the store to a registry.
    Push(PushArgs),
    /// Copy an image from one registry to another, keeping its digest.
    Copy(CopyArgs),
    /// List the tags of a registry repository.
    Tags {
        /// The repository, e.g. docker.io/library/nginx or host:5000/team/app.
        repository: String,
    },
    /// Log in to a registry and save the credentials in docker's config.json.
    Login(LoginArgs),
    /// Remove saved credentials for a registry.
    Logout {
        /// The registry host, e.g. docker.io or host:5000.
        registry: String,
    },
    /// List images in the store.
    Images(ImagesArgs),
    /// Show the manifest and config of images in the store as JSON.
    Inspect {
        /// Images by name, digest or ID.
        #[arg(required = true)]
        images: Vec<String>,
        /// For multi-platform images, the platform whose config to show (default: the host's).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
    },
    /// Show the history of an image in the store.
    History {
        /// The image by name, digest or ID.
        image: String,
        /// Do not shorten the output.
        #[arg(long)]
        no_trunc: bool,
        /// For multi-platform images, the platform to show (default: the host's).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
    },
    /// Give an image in the store another name.
    Tag {
        /// The existing image.
        source: String,
        /// The new name, e.g. host:5000/team/app:1.0.
        target: String,
    },
    /// Remove images from the store (untag; the image goes with its last name).
    Rmi {
        /// Images by name, digest or ID.
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove an image ID even when several names refer to it.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove dangling images (or all images with -a) from the store.
    Prune(PruneArgs),
    /// Show how much space the store uses (with -v, each image's shared and unique size).
    Df,
    /// Delete blobs that no image references, and abandoned partial downloads.
    Gc {
        /// Show what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the store (every image complete, every blob the right size), or an archive without loading it.
    Verify {
        /// An archive to check instead of the store.
        archive: Option<PathBuf>,
        /// Re-hash every blob's content too (archives are always fully read).
        #[arg(long)]
        read_data: bool,
    },
    /// Write images to one tar that docker load, podman load and skopeo accept.
    Save(SaveArgs),
    /// Load images from an archive (ferry, docker save, podman, skopeo, crane) into the store.
    Load(LoadArgs),
    /// Make a one-layer image from a root filesystem tarball, like docker import.
    Import {
        /// The tarball (plain, gzip, zstd or xz), or - for standard input.
        file: String,
        /// The new image's name.
        image: String,
        /// A Dockerfile instruction for the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL); repeatable.
        #[arg(short, long)]
        change: Vec<String>,
    },
    /// Write an image's flattened filesystem as one tar, like docker export.
    Export {
        /// The image in the store.
        image: String,
        /// For multi-platform images, the platform to export (default: the host's).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
        /// Write to this file (default: standard output when it is not a terminal).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Run jobs from the config once and exit (0 ok, 1 a job failed, 2 config error).
    Run {
        /// Only these jobs (default: all).
        jobs: Vec<String>,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Images a job copies at once (default: the config's, else 4).
        #[arg(long, value_name = "N")]
        parallel_images: Option<usize>,
        /// Run only this worker's share of the jobs: shard I of N (from 0),
        /// chosen by rendezvous hashing of job names.
        #[arg(
            long,
            value_name = "I/N",
            env = "FERRY_SHARD",
            conflicts_with = "shards"
        )]
        shard: Option<String>,
        /// With Kubernetes Indexed Jobs: N shards, this one from $JOB_COMPLETION_INDEX.
        #[arg(long, value_name = "N")]
        shards: Option<u32>,
    },
    /// Run jobs on their schedules until SIGTERM or Ctrl-C.
    Daemon {
        /// Images a job copies at once (default: the config's, else 4).
        #[arg(long, value_name = "N")]
        parallel_images: Option<usize>,
        /// Serve /metrics (Prometheus), /healthz and /readyz here (default: [daemon] metrics_addr).
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<String>,
    },
    /// Serve the store as a registry (the distribution API) until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// List jobs with their schedule, last result and next run.
    Jobs {
        /// Forget this job's saved state (remembered digests, first-seen
        /// times, backup chain) so its next run starts afresh.
        #[arg(long, value_name = "NAME")]
        reset: Option<String>,
        /// Show which of N shards runs each job.
        #[arg(long, value_name = "N")]
        shards: Option<u32>,
    },
    /// Check the config file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `ferry config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Parse and validate the config (keys, regexes, semver ranges, cron, names); exit 2 on errors.
    Check,
}

/// `ferry pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, e.g. nginx:1.25 or host:5000/team/app@sha256:….
    pub image: String,
    /// Pull this platform (repeat for several; they are kept as one index).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
    /// Pull every platform of a multi-platform image.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Pull every tag of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Parallel blob transfers (default: the config's, else 6).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Leave the image's signatures, attestations and SBOMs (its referrers) behind.
    #[arg(long)]
    pub no_referrers: bool,
}

/// `ferry push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the store.
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub destination: Option<String>,
    /// Parallel blob transfers (default: the config's, else 6).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Leave the image's signatures, attestations and SBOMs (its referrers) behind.
    #[arg(long)]
    pub no_referrers: bool,
}

/// `ferry copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The source: an image in a registry (`docker://` optional), or
    /// `archive:FILE` / `archive:-` (standard input) for every image of an archive.
    pub source: String,
    /// The destination: a full image name (a repository with --all-tags);
    /// for an archive source, a registry host or host/path prefix that the
    /// archive's names are rebased under; or `archive:FILE` / `archive:-`.
    pub destination: String,
    /// Copy every tag of the source repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Copy only these platforms (repeat); the index is rebuilt with a new digest.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
    /// Leave the image's signatures, attestations and SBOMs (its referrers) behind.
    #[arg(long)]
    pub no_referrers: bool,
    /// Parallel blob transfers (default: the config's, else 6).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// `ferry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host, e.g. docker.io or host:5000.
    pub registry: String,
    /// The username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input (passwords never go in arguments).
    #[arg(long)]
    pub password_stdin: bool,
}

/// `ferry images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only this repository (and tag).
    pub repository: Option<String>,
    /// Show dangling images too (they are shown by default, as docker does).
    #[arg(short, long)]
    pub all: bool,
    /// Show manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Filter: dangling=true|false, before=IMAGE, since=IMAGE, reference=PATTERN.
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Show full image IDs (`sha256:…`), as `docker images --no-trunc`.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `ferry save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images in the store, by name, digest or ID.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file (default: standard output when it is not a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep only these platforms of multi-platform images (repeat); the first is listed in manifest.json.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
    /// Compress the whole archive: none loads everywhere; gzip not in skopeo docker-archive: nor ctr; zstd not in docker load (20.10) nor ctr.
    #[arg(long, value_enum, default_value = "none")]
    pub compress: CompressArg,
    /// Write a delta: leave out blobs that this older archive (or store image) already has.
    #[arg(long, value_name = "ARCHIVE|IMAGE")]
    pub since: Option<String>,
    /// List what the archive would hold instead of writing it.
    #[arg(long)]
    pub list: bool,
    /// Leave the image's signatures, attestations and SBOMs (its referrers) behind.
    #[arg(long)]
    pub no_referrers: bool,
}

/// Archive compression choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
}

/// `ferry load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read this file (default: standard input).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Check the archive and list its images without adding anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `ferry prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images, not only dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Filter: until=DURATION (e.g. 24h, 7d): only images ferry first saw longer ago.
    #[arg(long)]
    pub filter: Vec<String>,
    /// Show what would be removed without removing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// Print a completion script for `shell`.
pub fn print_completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
}

/// clap's parser for `--platform` values.
fn parse_platform(text: &str) -> Result<Platform, String> {
    text.parse()
        .map_err(|e: crate::types::platform::PlatformError| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

/// `ferry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen on this address (default: loopback only).
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "HOST:PORT")]
    pub addr: String,
    /// Serve pulls only: refuse pushes and deletes.
    #[arg(long)]
    pub read_only: bool,
    /// Require a login from these users (bcrypt lines, as `htpasswd -B` writes).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept pushes without a login (only on a network you trust).
    #[arg(long, conflicts_with = "read_only")]
    pub allow_anonymous_push: bool,
    /// Drop an upload idle this long, in seconds (its bytes are deleted);
    /// a finished blob waits this long for the manifest that references it.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub upload_timeout: u64,
    /// The registry name pushes are stored under (default: --addr as given).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub name: Option<String>,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Upload sessions open at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_uploads: usize,
    /// Upload sessions open at once from one client address.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_uploads_per_client: usize,
    /// Largest blob accepted (e.g. 100GiB, 512MiB).
    #[arg(long, default_value = "100GiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_blob_size: u64,
    /// Seconds allowed for a TLS handshake and for a request's headers.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub header_timeout: u64,
    /// Seconds a connection may go without a byte moving (idle keep-alive,
    /// a stalled upload or download).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub idle_timeout: u64,
}

/// A size as people write it (`100GiB`, `512MiB`, `1000000`).
fn parse_size(text: &str) -> Result<u64, String> {
    crate::types::rate::parse_rate(text)
        .map_err(|_| format!("{text:?} is not a size; write e.g. 100GiB or 512MiB"))
}
