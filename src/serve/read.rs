//! Reading the store through the API: the catalog and tag lists (from
//! `index.json`'s names, by repository path), manifests by tag or digest
//! with their media type, blobs (with `Range`), and the referrers API over
//! the referrers the store keeps with their subjects.

use super::http::{builder, empty, file_body, full, next_link, ApiError, Body};
use super::routes::{manifest_ref, query_param, ManifestRef};
use super::Server;
use crate::store::index::read_index;
use crate::store::IndexEntry;
use crate::types::manifest::MAX_MANIFEST_BYTES;
use crate::types::{media, Digest, ParsedManifest, Reference};
use hyper::{Response, StatusCode};
use std::collections::BTreeSet;

/// Most entries one page of a list holds.
const MAX_PAGE: usize = 1000;

/// The named images of the store, as (served name, tag, entry).
fn named(entries: &[IndexEntry]) -> Vec<(String, String, Reference, &IndexEntry)> {
    entries
        .iter()
        .filter_map(|e| {
            let name = e.name()?;
            let tag = name.tag()?.to_owned();
            Some((name.repository().to_owned(), tag, name, e))
        })
        .collect()
}

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
    /// `GET /v2/_catalog`.
    pub(super) fn catalog(&self, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let entries = read_index(&self.store)?;
        let names: BTreeSet<String> = named(&entries).into_iter().map(|(n, ..)| n).collect();
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
    pub(super) fn tags(&self, name: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let entries = read_index(&self.store)?;
        let mine: Vec<_> = named(&entries)
            .into_iter()
            .filter(|(n, ..)| n == name)
            .collect();
        if mine.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                format!("repository {name} is not in this registry"),
            ));
        }
        let digests: BTreeSet<&Digest> = mine.iter().map(|(.., e)| &e.digest).collect();
        let mut tags: BTreeSet<String> = mine.iter().map(|(_, t, ..)| t.clone()).collect();
        for entry in &entries {
            if let Some(link) = entry.link() {
                if let (Some(tag), true) = (link.tag, digests.contains(&link.subject)) {
                    tags.insert(tag);
                }
            }
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

    /// The entry a tag names in repository `name`: an image (preferring one
    /// named under the host the client used), else a cosign tag kept with
    /// one of the repository's images.
    fn tagged(
        &self,
        entries: &[IndexEntry],
        name: &str,
        tag: &str,
        host: &str,
    ) -> Option<IndexEntry> {
        let all = named(entries);
        let mine: Vec<_> = all.iter().filter(|(n, ..)| n == name).collect();
        let exact = mine
            .iter()
            .filter(|(_, t, ..)| t == tag)
            .max_by_key(|(_, _, reference, _)| reference.registry() == host);
        if let Some((.., entry)) = exact {
            return Some((*entry).clone());
        }
        let digests: BTreeSet<&Digest> = mine.iter().map(|(.., e)| &e.digest).collect();
        entries
            .iter()
            .find(|e| {
                e.link()
                    .is_some_and(|l| l.tag.as_deref() == Some(tag) && digests.contains(&l.subject))
            })
            .cloned()
    }

    /// A manifest by tag or digest.
    pub(super) fn find_manifest(
        &self,
        name: &str,
        reference: &str,
        host: &str,
    ) -> Result<ParsedManifest, ApiError> {
        let unknown = || ApiError::manifest_unknown(&format!("{name}:{reference}"));
        let (digest, media_type) = match manifest_ref(reference) {
            Some(ManifestRef::Tag(tag)) => {
                let entries = read_index(&self.store)?;
                let entry = self
                    .tagged(&entries, name, &tag, host)
                    .ok_or_else(unknown)?;
                (entry.digest, Some(entry.media_type))
            }
            Some(ManifestRef::Digest(digest)) => (digest, None),
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    format!("{reference:?} is neither a tag nor a digest"),
                ))
            }
        };
        match self.store.blob_size(&digest) {
            Some(size) if size <= MAX_MANIFEST_BYTES as u64 => {}
            _ => return Err(unknown()),
        }
        let bytes = self.store.read_blob(&digest, MAX_MANIFEST_BYTES as u64)?;
        // A blob that is not a manifest is not served as one.
        ParsedManifest::parse(bytes, media_type.as_deref(), &digest.to_string())
            .map_err(|_| unknown())
    }

    /// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
    pub(super) fn manifest(
        &self,
        name: &str,
        reference: &str,
        host: &str,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let manifest = self.find_manifest(name, reference, host)?;
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
        digest: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let digest: Digest = digest
            .parse()
            .map_err(|e| ApiError::digest_invalid(format!("{digest}: {e}")))?;
        let path = self.store.blob_path(&digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ApiError::blob_unknown(&digest.to_string()))
            }
            Err(e) => return Err(ApiError::internal(e)),
        };
        let size = file.metadata().await.map_err(ApiError::internal)?.len();
        let (status, start, length) = match range.map(|r| parse_range(r, size)) {
            None => (StatusCode::OK, 0, size),
            Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            Some(None) => {
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
    /// the referrers the store keeps for the digest (empty when none).
    pub(super) fn referrers(
        &self,
        subject: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let subject: Digest = subject
            .parse()
            .map_err(|e| ApiError::digest_invalid(format!("{subject}: {e}")))?;
        let filter = query_param(query, "artifactType");
        let mut listed = Vec::new();
        for entry in read_index(&self.store)? {
            let Some(link) = entry.link() else { continue };
            if link.subject != subject || link.tag.is_some() {
                continue;
            }
            if filter.is_some() && filter != entry.artifact_type {
                continue;
            }
            let mut descriptor = serde_json::json!({
                "mediaType": entry.media_type,
                "digest": entry.digest,
                "size": entry.size,
            });
            if let Some(kind) = &entry.artifact_type {
                descriptor["artifactType"] = kind.clone().into();
            }
            let annotations = self
                .store
                .read_blob(&entry.digest, MAX_MANIFEST_BYTES as u64)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|m| m.get("annotations").cloned());
            if let Some(annotations) = annotations.filter(|a| a.is_object()) {
                descriptor["annotations"] = annotations;
            }
            listed.push(descriptor);
        }
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

/// `bytes=START-[END]` within `size`, as inclusive bounds.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = match end.trim() {
        "" => size.checked_sub(1)?,
        end => end.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_inclusive_and_bounded() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-500", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
