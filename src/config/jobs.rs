//! The job tables of the config (`[[sync]]`, `[[backup]]`, `[[retag]]`,
//! `[[prune]]`) as written, and their resolution into validated specs. Every
//! value that can be wrong carries its span, so errors name `file:line:column`.

use crate::policy::{AliasKind, Schedule, TagFilter};
use crate::types::{Platform, Reference};
use serde::Deserialize;
use toml::Spanned;

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `tags = { include, exclude, semver, keep_latest }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsSection {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub semver: Option<Spanned<String>>,
    pub keep_latest: Option<Spanned<usize>>,
}

/// `[[sync]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    pub name: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub jitter: Option<Spanned<String>>,
    /// This job's schedule time zone (default: `[defaults] timezone`).
    pub timezone: Option<Spanned<String>>,
    pub source: Spanned<OneOrMany>,
    pub target: Spanned<String>,
    #[serde(default)]
    pub tags: TagsSection,
    pub platforms: Option<Vec<Spanned<String>>>,
    pub backup_overwritten: Option<Spanned<String>>,
    #[serde(default)]
    pub delete_extra: bool,
    pub rate_limit_floor: Option<u64>,
    /// Copy signatures, attestations and SBOMs with each image (default
    /// true); a table narrows them to some artifact types.
    pub referrers: Option<ReferrersSection>,
    /// Narrow a wildcard source's repositories by regex.
    pub repositories: Option<RepositoriesSection>,
    /// `split = "repositories"`: with `ferry run --shard`, every shard runs
    /// this job over the repositories it owns.
    pub split: Option<Spanned<String>>,
}

/// `repositories = { include = [...], exclude = [...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoriesSection {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
}

/// `referrers = true | false | { artifact_types = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ReferrersSection {
    Enabled(bool),
    Narrowed(ArtifactTypes),
}

/// `referrers = { artifact_types = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactTypes {
    pub artifact_types: Vec<String>,
}

/// `[[backup]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    pub name: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub jitter: Option<Spanned<String>>,
    /// This job's schedule time zone (default: `[defaults] timezone`).
    pub timezone: Option<Spanned<String>>,
    pub images: Vec<Spanned<String>>,
    #[serde(default)]
    pub tags: TagsSection,
    pub output: Spanned<String>,
    pub keep: Option<Spanned<usize>>,
    #[serde(default)]
    pub incremental: bool,
    pub full_every: Option<Spanned<u32>>,
    pub compress: Option<Spanned<String>>,
    pub platforms: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub keep_in_store: bool,
    /// Carry signatures, attestations and SBOMs in the archive (default
    /// true); a table narrows them to some artifact types.
    pub referrers: Option<ReferrersSection>,
}

/// `[[retag]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetagSection {
    pub name: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub jitter: Option<Spanned<String>>,
    /// This job's schedule time zone (default: `[defaults] timezone`).
    pub timezone: Option<Spanned<String>>,
    pub repository: Spanned<String>,
    pub aliases: Vec<Spanned<String>>,
    #[serde(default)]
    pub prerelease: bool,
}

/// `[[prune]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSection {
    pub name: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub jitter: Option<Spanned<String>>,
    /// This job's schedule time zone (default: `[defaults] timezone`).
    pub timezone: Option<Spanned<String>>,
    pub repository: Spanned<String>,
    #[serde(default)]
    pub tags: TagsSection,
    pub older_than: Option<Spanned<String>>,
    pub keep_latest: Option<Spanned<usize>>,
    #[serde(default)]
    pub allow_empty: bool,
}

/// A repository a job works on: in a registry, or in the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryTarget {
    Registry(Reference),
    Store(Option<Reference>),
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule: Option<Schedule>,
    pub schedule_text: Option<String>,
    pub dry_run: bool,
    pub jitter: u64,
    /// The job's own time zone, when it has one.
    pub timezone: Option<crate::policy::cron::Zone>,
    pub kind: JobKind,
}

/// What a job does.
#[derive(Debug, Clone)]
pub enum JobKind {
    Sync(SyncSpec),
    Backup(BackupSpec),
    Retag(RetagSpec),
    Prune(PruneSpec),
}

impl JobKind {
    /// The table name (`sync`, `backup`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            JobKind::Sync(_) => "sync",
            JobKind::Backup(_) => "backup",
            JobKind::Retag(_) => "retag",
            JobKind::Prune(_) => "prune",
        }
    }
}

/// A validated `[[sync]]`.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub sources: Vec<SyncSource>,
    /// Which repositories a wildcard source takes (by their path).
    pub repositories: TagFilter,
    pub target: RepositoryTarget,
    pub filter: TagFilter,
    pub platforms: Option<Vec<Platform>>,
    pub backup_overwritten: Option<String>,
    pub delete_extra: bool,
    pub rate_limit_floor: u64,
    /// Which referrers travel with each image to a registry target.
    pub referrers: crate::types::ReferrerFilter,
    /// Sharded by repository (`split = "repositories"`).
    pub split_repositories: bool,
}

/// One `source` of a sync job.
#[derive(Debug, Clone)]
pub enum SyncSource {
    /// One repository.
    Repository(Reference),
    /// Every repository under `prefix` of `registry` (`HOST/team/*`: one
    /// level below; `HOST/team/**`: every depth), from the `_catalog`.
    Under {
        registry: String,
        prefix: String,
        deep: bool,
    },
}

impl SyncSource {
    /// Whether `path` (a repository path in the source registry) is one
    /// this source takes, and its path below the prefix.
    pub fn relative<'a>(&self, path: &'a str) -> Option<&'a str> {
        let SyncSource::Under { prefix, deep, .. } = self else {
            return None;
        };
        let rest = match prefix.is_empty() {
            true => path,
            false => path.strip_prefix(prefix.as_str())?.strip_prefix('/')?,
        };
        (!rest.is_empty() && (*deep || !rest.contains('/'))).then_some(rest)
    }
}

/// One `images` entry of a backup.
#[derive(Debug, Clone)]
pub enum BackupImage {
    /// One image (`HOST/app:1.0`).
    One(Reference),
    /// Every tag `tags` selects (`HOST/app:*`).
    AllTags(Reference),
    /// Every selected tag of every repository under a prefix
    /// (`HOST/team/**:*`, `HOST/team/*:*`).
    Under(SyncSource),
}

/// A validated `[[backup]]`.
#[derive(Debug, Clone)]
pub struct BackupSpec {
    pub images: Vec<BackupImage>,
    pub filter: TagFilter,
    pub output: String,
    pub keep: Option<usize>,
    pub incremental: bool,
    pub full_every: u32,
    pub compress: String,
    pub platforms: Vec<Platform>,
    /// Also keep the images in the local store (else registry → archive directly).
    pub keep_in_store: bool,
    /// Which referrers go into the archive with each image.
    pub referrers: crate::types::ReferrerFilter,
}

/// A validated `[[retag]]`.
#[derive(Debug, Clone)]
pub struct RetagSpec {
    pub repository: RepositoryTarget,
    pub aliases: Vec<AliasKind>,
    pub prerelease: bool,
}

/// A validated `[[prune]]`.
#[derive(Debug, Clone)]
pub struct PruneSpec {
    pub repository: RepositoryTarget,
    pub filter: TagFilter,
    pub older_than: Option<u64>,
    pub keep_latest: Option<usize>,
    pub allow_empty: bool,
}
