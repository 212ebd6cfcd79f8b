//! Reading the store through the API: the catalog and tag lists (from
//! `index.json`'s names, by repository path), manifests by tag or digest
//! with their media type, blobs (with `Range`), and the referrers API over
//! the referrers the store keeps with their subjects.

use super::http::{builder, empty, file_body, full, next_link, ApiError, Body};
use super::routes::{manifest_ref, query_param, ManifestRef};
use super::{names, Readable, Server};
use crate::store::IndexEntry;
use crate::types::manifest::MAX_MANIFEST_BYTES;
use crate::types::{media, Digest, ParsedManifest};
use hyper::{Response, StatusCode};
use std::collections::BTreeSet;

/// Most entries one page of a list holds.
const MAX_PAGE: usize = 1000;

/// The page of `items` after `last`, at most `n`; and whether more follow.
fn page(items: Vec<String>, query: Option<&str>) -> (Vec<String>, Option<usize>) {
    let n = query_param(query, "n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(MAX_PAGE)
        .min(MAX_PAGE);
    let last = query_param(query, "last");
    let rest: Vec<String> = items
        .into_iter()
        .filter(|i| last.as_ref().is_none_or(|l| i > l))
        .collect();
    let more = rest.len() > n;
    (rest.into_iter().take(n).collect(), more.then_some(n))
}

fn json_list(
    path: &str,
    key: &str,
    name: Option<&str>,
    items: Vec<String>,
    query: Option<&str>,
) -> Response<Body> {
    let (items, more) = page(items, query);
    let mut document = serde_json::json!({ key: items });
    if let Some(name) = name {
        document["name"] = name.into();
    }
    let mut response = builder(StatusCode::OK).header("Content-Type", "application/json");
    if let Some(n) = more {
        if let Some(link) = next_link(path, n, items.last().map(String::as_str)) {
            response = response.header("Link", link);
        }
    }
    response
        .body(full(document.to_string()))
        .expect("valid response")
}

impl Server {
    /// `GET /v2/_catalog`: each repository by the path that resolves to it.
    pub(super) async fn catalog(&self, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let names = self.index().await?.served_paths(&self.name);
        Ok(json_list(
            "/v2/_catalog",
            "repositories",
            None,
            names.into_iter().collect(),
            query,
        ))
    }

    /// `GET /v2/<name>/tags/list`: the repository's tags, and the cosign
    /// tags of the signatures the store keeps for its images.
    pub(super) async fn tags(
        &self,
        name: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let readable = self.readable(name).await?;
        let mine: Vec<_> = readable.view.named_in(&readable.repo).collect();
        if mine.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                format!("repository {name} is not in this registry"),
            ));
        }
        let mut tags: BTreeSet<String> = mine
            .iter()
            .filter_map(|(reference, _)| reference.tag().map(str::to_owned))
            .collect();
        for (tag, _) in cosign_tags(&readable) {
            tags.insert(tag);
        }
        let path = format!("/v2/{name}/tags/list");
        Ok(json_list(
            &path,
            "tags",
            Some(name),
            tags.into_iter().collect(),
            query,
        ))
    }

    /// A manifest of `name` by tag or digest; only what the repository
    /// references (or was just pushed into it) is found.
    pub(super) async fn find_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<ParsedManifest, ApiError> {
        let unknown = || ApiError::manifest_unknown(&format!("{name}:{reference}"));
        let readable = self.readable(name).await?;
        let (digest, media_type) = match manifest_ref(reference) {
            Some(ManifestRef::Tag(tag)) => {
                let entry = tagged(&readable, &tag).ok_or_else(unknown)?;
                (entry.digest, Some(entry.media_type))
            }
            Some(ManifestRef::Digest(digest)) if self.visible(&readable, &digest) => (digest, None),
            // Not here, or not a reference at all: unknown either way.
            _ => return Err(unknown()),
        };
        let key = (digest.clone(), media_type.clone());
        if let Some(manifest) = self.manifests.get(&key) {
            return Ok(manifest);
        }
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            match store.blob_size(&digest) {
                Some(size) if size <= MAX_MANIFEST_BYTES as u64 => {}
                _ => return Ok(None),
            }
            let bytes = store.read_blob(&digest, MAX_MANIFEST_BYTES as u64)?;
            // A blob that is not a manifest is not served as one.
            Ok::<_, crate::store::StoreError>(
                ParsedManifest::parse(bytes, media_type.as_deref(), &digest.to_string()).ok(),
            )
        })
        .await
        .map_err(ApiError::internal)??;
        let manifest = read.ok_or_else(unknown)?;
        self.manifests.put(key, &manifest);
        Ok(manifest)
    }

    /// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
    pub(super) async fn manifest(
        &self,
        name: &str,
        reference: &str,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let manifest = self.find_manifest(name, reference).await?;
        let response = builder(StatusCode::OK)
            .header("Content-Type", &manifest.media_type)
            .header("Content-Length", manifest.bytes.len())
            .header("Docker-Content-Digest", manifest.digest.to_string())
            .header("ETag", format!("\"{}\"", manifest.digest));
        let body = match head {
            true => empty(),
            false => full(manifest.bytes.clone()),
        };
        Ok(response.body(body).expect("valid response"))
    }

    /// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with a single `Range`.
    pub(super) async fn blob(
        &self,
        name: &str,
        digest: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let digest: Digest = digest
            .parse()
            .map_err(|e| ApiError::digest_invalid(format!("{digest}: {e}")))?;
        let readable = self.readable(name).await?;
        if !self.visible(&readable, &digest) {
            return Err(ApiError::blob_unknown(&digest.to_string()));
        }
        let path = self.store.blob_path(&digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ApiError::blob_unknown(&digest.to_string()))
            }
            Err(e) => return Err(ApiError::internal(e)),
        };
        let size = file.metadata().await.map_err(ApiError::internal)?.len();
        // A store file that is not the size its manifests give it is not
        // served (it would fail every client's check): absent, and said.
        if let Some(&expected) = readable.scope.get(&digest) {
            if expected != size {
                tracing::warn!(
                    "store blob {digest} is {size} bytes where its manifests say {expected}: not served; run `ferry verify --read-data` and pull or load the image again"
                );
                return Err(ApiError::blob_unknown(&digest.to_string()));
            }
        }
        let (status, start, length) = match range.map(|r| parse_range(r, size)) {
            None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
            Some(Range::Bytes(start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            Some(Range::Unsatisfiable) => {
                return Ok(builder(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("Content-Range", format!("bytes */{size}"))
                    .body(empty())
                    .expect("valid response"))
            }
        };
        let mut response = builder(status)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", length)
            .header("Accept-Ranges", "bytes")
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", format!("\"{digest}\""));
        if status == StatusCode::PARTIAL_CONTENT {
            response = response.header(
                "Content-Range",
                format!("bytes {start}-{}/{size}", start + length - 1),
            );
        }
        if head {
            return Ok(response.body(empty()).expect("valid response"));
        }
        let mut file = file;
        if start > 0 {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(ApiError::internal)?;
        }
        Ok(response
            .body(file_body(file, length))
            .expect("valid response"))
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: an index of
    /// the referrers this repository keeps for the digest (empty when none).
    pub(super) async fn referrers(
        &self,
        name: &str,
        subject: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let subject: Digest = subject
            .parse()
            .map_err(|e| ApiError::digest_invalid(format!("{subject}: {e}")))?;
        let filter = query_param(query, "artifactType");
        let readable = self.readable(name).await?;
        // Pushed here: listed even before its subject comes (the spec
        // allows a referrer first); pulled with its subject: listed where
        // the subject is.
        let repository = readable.repo.full();
        let mut chosen = Vec::new();
        for entry in &readable.view.entries {
            let Some(link) = entry.link() else { continue };
            if link.subject != subject || link.tag.is_some() {
                continue;
            }
            let here = match entry.annotations.get(names::REFERRER_REPOSITORY) {
                Some(pushed_to) => *pushed_to == repository,
                None => readable.scope.contains_key(&subject),
            };
            if !here || (filter.is_some() && filter != entry.artifact_type) {
                continue;
            }
            chosen.push(entry.clone());
        }
        let store = self.store.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let mut listed = Vec::new();
            let mut seen = BTreeSet::new();
            for entry in chosen {
                if !seen.insert(entry.digest.clone()) {
                    continue;
                }
                // A referrer whose manifest cannot be read is not listed
                // (its blob is gone or corrupt: `verify` names it).
                if let Ok(descriptor) = store.referrer_descriptor(&entry) {
                    listed.push(descriptor);
                }
            }
            listed
        })
        .await
        .map_err(ApiError::internal)?;
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": listed,
        });
        let mut response = builder(StatusCode::OK).header("Content-Type", media::OCI_INDEX);
        if filter.is_some() {
            response = response.header("OCI-Filters-Applied", "artifactType");
        }
        Ok(response
            .body(full(body.to_string()))
            .expect("valid response"))
    }
}

/// The entry a tag names in the repository: an image, else a cosign tag
/// kept with one of its images.
pub(super) fn tagged(readable: &Readable, tag: &str) -> Option<IndexEntry> {
    let exact = readable
        .view
        .named_in(&readable.repo)
        .find(|(reference, _)| reference.tag() == Some(tag));
    if let Some((_, entry)) = exact {
        return Some(entry.clone());
    }
    cosign_tags(readable)
        .into_iter()
        .find(|(t, _)| t == tag)
        .map(|(_, entry)| entry)
}

/// The cosign tags (`sha256-<hex>.sig`, …) of the repository's images.
fn cosign_tags(readable: &Readable) -> Vec<(String, IndexEntry)> {
    let images: BTreeSet<&Digest> = readable
        .view
        .named_in(&readable.repo)
        .map(|(_, e)| &e.digest)
        .collect();
    readable
        .view
        .entries
        .iter()
        .filter(|e| names::referrer_listed_in(e, &readable.repo))
        .filter_map(|e| {
            let link = e.link()?;
            let tag = link.tag?;
            images.contains(&link.subject).then(|| (tag, e.clone()))
        })
        .collect()
}

/// A `Range` header, read as RFC 9110 says: one satisfiable byte range is
/// served; a header we do not understand (another unit, several ranges)
/// is ignored; a range wholly past the end is unsatisfiable.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Bytes(u64, u64),
    Ignored,
    Unsatisfiable,
}

/// `bytes=START-[END]` or `bytes=-SUFFIX` within `size`, as inclusive bounds.
fn parse_range(header: &str, size: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Range::Ignored;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        // The last `end` bytes.
        return match end.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(_) if size == 0 => Range::Unsatisfiable,
            Ok(suffix) => Range::Bytes(size - suffix.min(size), size - 1),
            Err(_) => Range::Ignored,
        };
    }
    let Ok(start) = start.parse::<u64>() else {
        return Range::Ignored;
    };
    let last = match end {
        "" => None,
        end => match end.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return Range::Ignored,
        },
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Bytes(start, last.unwrap_or(size - 1).min(size - 1))
}

#[cfg(test)]
mod tests {
    use super::{parse_range, Range};

    #[test]
    fn ranges_follow_rfc_9110() {
        use Range::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-9", 100), Ignored);
        assert_eq!(parse_range("bytes=x-", 100), Ignored);
    }
}

/// Manifests read and verified once, by digest (and the media type they
/// were read as): content-addressed, so never stale; bounded in bytes. A
/// request reaches it only after its repository's scope said yes.
#[derive(Default)]
pub(super) struct ManifestCache {
    held: std::sync::Mutex<(
        usize,
        std::collections::HashMap<ManifestKey, ParsedManifest>,
    )>,
}

type ManifestKey = (Digest, Option<String>);

/// Most manifest bytes kept in memory.
const MANIFEST_CACHE_BYTES: usize = 16 * 1024 * 1024;

impl ManifestCache {
    fn get(&self, key: &ManifestKey) -> Option<ParsedManifest> {
        self.held.lock().expect("manifests").1.get(key).cloned()
    }

    fn put(&self, key: ManifestKey, manifest: &ParsedManifest) {
        let mut held = self.held.lock().expect("manifests");
        if held.0 + manifest.bytes.len() > MANIFEST_CACHE_BYTES {
            *held = (0, std::collections::HashMap::new());
        }
        held.0 += manifest.bytes.len();
        held.1.insert(key, manifest.clone());
    }
}
