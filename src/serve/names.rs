//! The namespace model: which stored name a request path means, and what
//! content a repository may show.
//!
//! - Pushes are stored under the server's own name (`--name`, by default
//!   the `--addr` as given): `PUT /v2/team/app/manifests/1` on
//!   `127.0.0.1:5000` is `127.0.0.1:5000/team/app:1`, whatever `Host` the
//!   client sent. A push never lands under another registry's name, and a
//!   path whose first component names a registry by docker's rule (it has
//!   a dot, or is `localhost`) is refused for pushes, so a push can never
//!   shadow an image mirrored now or later under its full path.
//! - Reads resolve a path in this order: the server's own repository of
//!   that path; the full name (`/v2/docker.io/library/nginx/…` for
//!   `docker.io/library/nginx`; a port's `:`, which no repository path may
//!   hold, is written `_`: `/v2/harbor.corp_8443/team/app/…` for
//!   `harbor.corp:8443/team/app`, `/v2/registry_5000/…` for
//!   `registry:5000/…`); the one other registry that holds the path
//!   (`/v2/library/nginx/…`). When two
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
use std::collections::{BTreeSet, HashMap};
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

/// The registry a path's first component names by docker's rule (it has a
/// dot or a port, or is `localhost`), with the port written `_PORT` (a host
/// name has no `_`, so the form is unambiguous): `harbor.corp_8443` is
/// `harbor.corp:8443`, `registry_5000` is `registry:5000`.
fn registry_component(first: &str) -> Option<String> {
    if let Some((host, port)) = first.rsplit_once('_') {
        let is_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        let is_port =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if is_host && is_port {
            return Some(format!("{host}:{port}"));
        }
    }
    (first.contains('.') || first == "localhost").then(|| first.to_owned())
}

/// The full path that names `path` held from `registry`, when one can
/// (a host with upper-case letters or an IPv6 address has none: paths are
/// lower case and have no brackets).
fn full_path(registry: &str, path: &str) -> Option<String> {
    let full = format!("{}/{path}", registry.replacen(':', "_", 1));
    let first = full.split('/').next().unwrap_or_default();
    (super::routes::valid_name(&full) && registry_component(first).as_deref() == Some(registry))
        .then_some(full)
}

/// Which stored repository a read of `path` means (see the module rules).
fn resolve(
    own: &str,
    path: &str,
    holders: &HashMap<String, BTreeSet<String>>,
) -> Result<Repo, ApiError> {
    let held = holders.get(path);
    let repo = |registry: &str, repository: &str| Repo {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
    };
    if held.is_some_and(|r| r.contains(own)) {
        return Ok(repo(own, path));
    }
    if let Some((first, rest)) = path.split_once('/') {
        if let Some(registry) = registry_component(first) {
            if holders.get(rest).is_some_and(|r| r.contains(&registry)) {
                return Ok(repo(&registry, rest));
            }
        }
    }
    match held.map(|r| r.iter().collect::<Vec<_>>()) {
        Some(others) if others.len() == 1 => Ok(repo(others[0], path)),
        Some(others) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "{path} is held from several registries ({}); ask for one by its full path{}",
                others
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                others
                    .iter()
                    .find_map(|r| full_path(r, path))
                    .map_or_else(String::new, |p| format!(", e.g. {p}"))
            ),
        )),
        None => Ok(repo(own, path)),
    }
}

/// Where a push to `path` is stored: always under the server's own name,
/// refused when the path would shadow an image held from elsewhere.
fn push_target(own: &str, path: &str, view: &IndexView) -> Result<Repo, ApiError> {
    let first = path.split_once('/').map(|(first, _)| first);
    // By docker's rule a first component with a dot names a registry: such
    // a path is the full-name form of a mirrored image (now, or once the
    // store holds that registry), never a repository of this server.
    if let Some((first, registry)) = first.and_then(|f| Some((f, registry_component(f)?))) {
        let held = view.named.iter().any(|(n, _)| n.registry() == registry);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "{path} starts with {first}, which names a registry{}; pushes are stored under {own}: push to a path whose first part has no dot",
                if held { " this store holds images from" } else { "" }
            ),
        ));
    }
    Ok(Repo {
        registry: own.to_owned(),
        repository: path.to_owned(),
    })
}

/// The paths the catalog lists: each repository by the path that resolves
/// to it (the full path where the short one is ambiguous).
fn served_paths(own: &str, holders: &HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (path, registries) in holders {
        let others: Vec<&String> = registries.iter().filter(|r| *r != own).collect();
        if registries.contains(own) || others.len() == 1 {
            paths.insert(path.clone());
        }
        let registries: &BTreeSet<String> = registries;
        if registries.len() > 1 {
            for registry in others {
                paths.extend(full_path(registry, path));
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

/// One reading of `index.json`, with what every request needs from it
/// worked out once: the parsed names, which registries hold each path, and
/// (filled as asked) each repository's scope.
pub struct IndexView {
    pub id: Option<IndexId>,
    pub entries: Vec<IndexEntry>,
    /// Each named entry (tag or digest pin) with its parsed name.
    pub named: Vec<(Reference, usize)>,
    holders: HashMap<String, BTreeSet<String>>,
    scopes: Mutex<HashMap<Repo, Arc<Scope>>>,
}

impl IndexView {
    /// A view of `entries`, read at `id`.
    pub fn new(entries: Vec<IndexEntry>, id: Option<IndexId>) -> IndexView {
        let named: Vec<(Reference, usize)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.name()?, i)))
            .collect();
        let mut holders: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (name, _) in &named {
            holders
                .entry(name.repository().to_owned())
                .or_default()
                .insert(name.registry().to_owned());
        }
        IndexView {
            id,
            entries,
            named,
            holders,
            scopes: Mutex::new(HashMap::new()),
        }
    }

    /// The named entries of `repo`.
    pub fn named_in<'a>(
        &'a self,
        repo: &'a Repo,
    ) -> impl Iterator<Item = (&'a Reference, &'a IndexEntry)> + 'a {
        self.named
            .iter()
            .filter(|(name, _)| repo.holds(name))
            .map(|(name, i)| (name, &self.entries[*i]))
    }

    /// Which stored repository a read of `path` means.
    pub fn resolve(&self, own: &str, path: &str) -> Result<Repo, ApiError> {
        resolve(own, path, &self.holders)
    }

    /// Where a push to `path` is stored.
    pub fn push_target(&self, own: &str, path: &str) -> Result<Repo, ApiError> {
        push_target(own, path, self)
    }

    /// The paths the catalog lists.
    pub fn served_paths(&self, own: &str) -> BTreeSet<String> {
        served_paths(own, &self.holders)
    }

    /// `repo`'s scope when already worked out.
    pub fn cached_scope(&self, repo: &Repo) -> Option<Arc<Scope>> {
        self.scopes.lock().expect("scopes").get(repo).cloned()
    }

    /// Work out `repo`'s scope (reads manifests: call off the async threads).
    pub fn scope(&self, store: &Store, repo: &Repo) -> Arc<Scope> {
        if let Some(scope) = self.cached_scope(repo) {
            return scope;
        }
        let scope = Arc::new(compute(store, repo, &self.entries));
        let mut scopes = self.scopes.lock().expect("scopes");
        if scopes.len() >= MAX_CACHED_SCOPES {
            scopes.clear();
        }
        scopes.insert(repo.clone(), scope.clone());
        scope
    }
}

/// What a repository references: each digest with the size its manifests
/// give it.
pub type Scope = HashMap<Digest, u64>;

fn compute(store: &Store, repo: &Repo, entries: &[IndexEntry]) -> Scope {
    let mut scope = Scope::new();
    let add = |scope: &mut Scope, entry: &IndexEntry| match store
        .reachable(&entry.digest, &entry.media_type)
    {
        Ok(blobs) => scope.extend(blobs),
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
            if entry.link().is_some_and(|l| scope.contains_key(&l.subject)) {
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
        let view = IndexView::new(entries.to_vec(), None);
        let found = |path: &str| view.resolve(own, path).map(|r| r.full());
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
            view.push_target(own, "library/nginx").unwrap().full(),
            "127.0.0.1:5000/library/nginx"
        );
        for shadowing in [
            "docker.io/library/nginx",
            "registry.k8s.io/pause",
            "localhost/x",
        ] {
            assert_eq!(
                view.push_target(own, shadowing).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{shadowing}"
            );
        }
        let paths = view.served_paths(own);
        assert!(paths.contains("library/alpine") && paths.contains("docker.io/library/alpine"));
        assert!(paths.contains("docker.io/library/nginx") && !paths.contains("library/nginx"));
        assert!(valid_own_name(own).is_ok() && valid_own_name("buildbox").is_err());
    }

    #[test]
    fn a_registry_with_a_port_has_a_full_path_too() {
        let own = "127.0.0.1:5000";
        let entries = [
            entry("harbor.corp:8443/team/app:1"),
            entry("localhost:5001/team/app:1"),
            entry("registry:5000/team/app:1"),
            entry("Harbor.Corp:8443/team/app:1"),
        ];
        let view = IndexView::new(entries.to_vec(), None);
        let found = |path: &str| view.resolve(own, path).map(|r| r.full());
        // The short path is ambiguous and the answer names a path that works.
        let refused = found("team/app").unwrap_err().message;
        assert!(refused.contains("harbor.corp_8443/team/app"), "{refused}");
        assert_eq!(
            found("harbor.corp_8443/team/app").unwrap(),
            "harbor.corp:8443/team/app"
        );
        assert_eq!(
            found("localhost_5001/team/app").unwrap(),
            "localhost:5001/team/app"
        );
        // `_x` is no port: the component is the host itself.
        assert_eq!(
            registry_component("registry.corp_x").unwrap(),
            "registry.corp_x"
        );
        // A port makes any host a registry, as docker's rule has it.
        assert_eq!(registry_component("team_8443").unwrap(), "team:8443");
        assert_eq!(registry_component("team"), None);
        // A host a path cannot name has no full path (and is not listed).
        assert_eq!(full_path("Harbor.Corp:8443", "team/app"), None);
        assert_eq!(full_path("[::1]:5000", "team/app"), None);
        assert_eq!(
            found("registry_5000/team/app").unwrap(),
            "registry:5000/team/app"
        );
        // The catalog lists each by a path that resolves to it.
        let paths = view.served_paths(own);
        for path in &paths {
            assert!(found(path).is_ok(), "{path} in {paths:?}");
        }
        assert!(paths.contains("harbor.corp_8443/team/app"), "{paths:?}");
        assert!(paths.contains("localhost_5001/team/app"), "{paths:?}");
        // And no push can take such a path.
        for shadowing in [
            "harbor.corp_8443/team/app",
            "localhost_5001/x",
            "registry_5000/x",
        ] {
            assert_eq!(
                view.push_target(own, shadowing).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{shadowing}"
            );
        }
    }
}
