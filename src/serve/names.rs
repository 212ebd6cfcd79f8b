//! The namespace model: which stored name a request path means, and what
//! content a repository may show.
//!
//! - Pushes are stored under the server's own name (`--name`, by default
//!   the `--addr` as given): `PUT /v2/team/app/manifests/1` on
//!   `127.0.0.1:5000` is `127.0.0.1:5000/team/app:1`, whatever `Host` the
//!   client sent. A push never lands under another registry's name, and a
//!   path whose first component is a registry the store holds images from
//!   (`docker.io/…`) is refused for pushes, so it can never shadow them.
//! - Reads resolve a path in this order: the server's own repository of
//!   that path; the full name (`/v2/docker.io/library/nginx/…` for
//!   `docker.io/library/nginx`, for registries without a port); the one
//!   other registry that holds the path (`/v2/library/nginx/…`). When two
//!   or more other registries hold the same path, the short path is
//!   refused as ambiguous and the answer names the full paths.
//! - A repository shows only what it references: the manifests and blobs
//!   reachable from its tags and digest pins, the referrers kept for those
//!   (pushed ones only in the repository they were pushed to), and the
//!   blobs just uploaded into it. Scopes are cached per `index.json`.

use super::http::ApiError;
use crate::store::{IndexEntry, Store};
use crate::types::{Digest, Reference};
use hyper::StatusCode;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub use crate::store::index::REFERRER_REPOSITORY;

/// Most repositories whose scope is cached at once.
const MAX_CACHED_SCOPES: usize = 256;

/// A stored repository: registry and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub registry: String,
    pub repository: String,
}

impl Repo {
    /// `registry/repository`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The stored name of `tag` here.
    pub fn tagged(&self, tag: &str) -> Result<Reference, ApiError> {
        Reference::parse(&format!("{}:{tag}", self.full()))
            .map_err(|e| ApiError::name_invalid(&e.to_string()))
    }

    /// The stored name of a manifest pinned here by digest.
    pub fn pinned(&self, digest: &Digest) -> Result<Reference, ApiError> {
        Reference::parse(&format!("{}@{digest}", self.full()))
            .map_err(|e| ApiError::name_invalid(&e.to_string()))
    }

    /// Whether `name` is in this repository.
    pub fn holds(&self, name: &Reference) -> bool {
        name.registry() == self.registry && name.repository() == self.repository
    }
}

/// Check that `name` can be the server's registry name.
pub fn valid_own_name(name: &str) -> Result<(), String> {
    let parsed = Reference::parse(&format!("{name}/x:y")).map_err(|e| e.to_string())?;
    if parsed.registry() != name {
        return Err(format!(
            "--name {name:?} is not a registry host: give HOST[:PORT] with a dot or a port (e.g. registry.local or buildbox:5000)"
        ));
    }
    Ok(())
}

/// The registries whose images the store holds, by repository path.
fn holders(entries: &[IndexEntry]) -> HashMap<String, BTreeSet<String>> {
    let mut by_path: HashMap<String, BTreeSet<String>> = HashMap::new();
    for name in entries.iter().filter_map(IndexEntry::name) {
        by_path
            .entry(name.repository().to_owned())
            .or_default()
            .insert(name.registry().to_owned());
    }
    by_path
}

/// Which stored repository a read of `path` means (see the module rules).
pub fn resolve(own: &str, path: &str, entries: &[IndexEntry]) -> Result<Repo, ApiError> {
    let holders = holders(entries);
    let held = holders.get(path);
    let repo = |registry: &str, repository: &str| Repo {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
    };
    if held.is_some_and(|r| r.contains(own)) {
        return Ok(repo(own, path));
    }
    if let Some((first, rest)) = path.split_once('/') {
        if first.contains('.') && holders.get(rest).is_some_and(|r| r.contains(first)) {
            return Ok(repo(first, rest));
        }
    }
    match held.map(|r| r.iter().collect::<Vec<_>>()) {
        Some(others) if others.len() == 1 => Ok(repo(others[0], path)),
        Some(others) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "{path} is held from several registries ({}); ask for one by its full path, e.g. {}/{path}",
                others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                others[0]
            ),
        )),
        None => Ok(repo(own, path)),
    }
}

/// Where a push to `path` is stored: always under the server's own name,
/// refused when the path would shadow an image held from elsewhere.
pub fn push_target(own: &str, path: &str, entries: &[IndexEntry]) -> Result<Repo, ApiError> {
    if let Some((first, _)) = path.split_once('/') {
        let foreign = entries
            .iter()
            .filter_map(IndexEntry::name)
            .any(|n| n.registry() == first && first != own);
        if foreign {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{path} starts with {first}, a registry this store holds images from; pushes are stored under {own}: push to a path that does not start with {first}"
                ),
            ));
        }
    }
    Ok(Repo {
        registry: own.to_owned(),
        repository: path.to_owned(),
    })
}

/// The paths the catalog lists: each repository by the path that resolves
/// to it (the full path where the short one is ambiguous).
pub fn served_paths(own: &str, entries: &[IndexEntry]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (path, registries) in holders(entries) {
        let others: Vec<&String> = registries.iter().filter(|r| *r != own).collect();
        if registries.contains(own) || others.len() == 1 {
            paths.insert(path.clone());
        }
        if registries.len() > 1 {
            for registry in others {
                if !registry.contains(':') {
                    paths.insert(format!("{registry}/{path}"));
                }
            }
        }
    }
    paths
}

/// Which `index.json` a cached scope was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexId {
    inode: u64,
    modified: i128,
    len: u64,
}

impl IndexId {
    /// Read before the index itself, so a cached scope is never newer
    /// than the id it is kept under.
    pub fn of(store: &Store) -> Option<IndexId> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(store.root().join("index.json")).ok()?;
        Some(IndexId {
            inode: metadata.ino(),
            modified: metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128,
            len: metadata.len(),
        })
    }
}

/// The scopes computed from one `index.json`.
type ScopeCache = (Option<IndexId>, HashMap<Repo, Arc<HashSet<Digest>>>);

/// Every digest a repository references, cached per index.
#[derive(Default)]
pub struct Scopes {
    cache: Mutex<ScopeCache>,
}

impl Scopes {
    /// The digests `repo` references in `entries` (read at `id`).
    pub fn of(
        &self,
        store: &Store,
        repo: &Repo,
        entries: &[IndexEntry],
        id: Option<IndexId>,
    ) -> Arc<HashSet<Digest>> {
        {
            let cache = self.cache.lock().expect("scopes");
            if id.is_some() && cache.0 == id {
                if let Some(scope) = cache.1.get(repo) {
                    return scope.clone();
                }
            }
        }
        let scope = Arc::new(compute(store, repo, entries));
        let mut cache = self.cache.lock().expect("scopes");
        if cache.0 != id || cache.1.len() >= MAX_CACHED_SCOPES {
            *cache = (id, HashMap::new());
        }
        cache.1.insert(repo.clone(), scope.clone());
        scope
    }
}

fn compute(store: &Store, repo: &Repo, entries: &[IndexEntry]) -> HashSet<Digest> {
    let mut scope = HashSet::new();
    let add = |scope: &mut HashSet<Digest>, entry: &IndexEntry| match store
        .reachable(&entry.digest, &entry.media_type)
    {
        Ok(blobs) => scope.extend(blobs.into_keys()),
        Err(error) => tracing::debug!(digest = %entry.digest, "not in any scope: {error}"),
    };
    for entry in entries {
        if entry.name().is_some_and(|n| repo.holds(&n)) {
            add(&mut scope, entry);
        }
    }
    // Referrers of what is in scope (and referrers of those), kept here.
    let full = repo.full();
    let mut pending: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            e.is_referrer()
                && e.annotations
                    .get(REFERRER_REPOSITORY)
                    .is_none_or(|r| *r == full)
        })
        .collect();
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        for entry in pending {
            if entry.link().is_some_and(|l| scope.contains(&l.subject)) {
                add(&mut scope, entry);
            } else {
                still.push(entry);
            }
        }
        pending = still;
        if pending.len() == before {
            break;
        }
    }
    scope
}

/// Whether a referrer entry is listed in `repo` (given its subject is).
pub fn referrer_listed_in(entry: &IndexEntry, repo: &Repo) -> bool {
    entry
        .annotations
        .get(REFERRER_REPOSITORY)
        .is_none_or(|r| *r == repo.full())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> IndexEntry {
        let mut entry = IndexEntry::new(
            crate::types::media::OCI_MANIFEST,
            Digest::sha256_of(name.as_bytes()),
            1,
        );
        entry
            .annotations
            .insert(crate::store::CONTAINERD_NAME.into(), name.into());
        entry
    }

    #[test]
    fn paths_resolve_by_a_fixed_order() {
        let own = "127.0.0.1:5000";
        let entries = [
            entry("docker.io/library/nginx:1"),
            entry("quay.io/library/nginx:1"),
            entry("docker.io/library/alpine:3"),
            entry("127.0.0.1:5000/library/alpine:3"),
        ];
        let found = |path: &str| resolve(own, path, &entries).map(|r| r.full());
        assert_eq!(
            found("library/alpine").unwrap(),
            "127.0.0.1:5000/library/alpine"
        );
        assert_eq!(
            found("docker.io/library/alpine").unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            found("quay.io/library/nginx").unwrap(),
            "quay.io/library/nginx"
        );
        assert!(found("library/nginx")
            .unwrap_err()
            .message
            .contains("several"));
        assert_eq!(found("team/new").unwrap(), "127.0.0.1:5000/team/new");
        // Pushes go under the own name, never shadowing another registry.
        assert_eq!(
            push_target(own, "library/nginx", &entries).unwrap().full(),
            "127.0.0.1:5000/library/nginx"
        );
        assert_eq!(
            push_target(own, "docker.io/library/nginx", &entries)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let paths = served_paths(own, &entries);
        assert!(paths.contains("library/alpine") && paths.contains("docker.io/library/alpine"));
        assert!(paths.contains("docker.io/library/nginx") && !paths.contains("library/nginx"));
        assert!(valid_own_name(own).is_ok() && valid_own_name("buildbox").is_err());
    }
}
