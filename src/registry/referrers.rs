//! Referrers (OCI distribution 1.1): the manifests whose `subject` is a
//! given manifest — signatures, attestations, SBOMs. Found through the
//! referrers API, or, where a registry answers it with 404 (distribution
//! 2.8, Docker Hub, GHCR), through the fallback tag `<alg>-<hex>` holding an
//! index of them. Written back the same way: a registry that indexes the
//! subject itself says so with `OCI-Subject` on the push; for any other the
//! fallback index is updated by read-modify-write, never dropping an entry
//! someone else added, with `If-Match` on the ETag where one is offered.

use super::client::{header_string, parse_next_link, pull_scope, push_scope, RegistryClient};
use super::error::RegistryError;
use super::transport::{read_capped, status_error};
use crate::types::manifest::MAX_MANIFEST_BYTES;
use crate::types::{media, Digest, ParsedManifest};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

/// Most referrers ferry takes for one subject.
pub const MAX_REFERRERS: usize = 1_000;
/// Most pages of a paginated referrers answer followed.
const MAX_PAGES: usize = 20;
/// Read-modify-write attempts on a fallback index that keeps changing.
const UPDATE_ATTEMPTS: usize = 3;

/// One manifest that refers to a subject, as a referrers index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The whole descriptor as listed (artifactType, annotations), kept to
    /// write it back unchanged.
    pub descriptor: serde_json::Value,
}

pub use crate::types::referrer::{fallback_tag, referrer_descriptor};

fn protocol(client: &RegistryClient, message: String) -> RegistryError {
    RegistryError::Protocol {
        registry: client.registry().to_owned(),
        message,
    }
}

/// The entries of a referrers index body, each checked.
fn entries(
    client: &RegistryClient,
    bytes: &[u8],
    what: &str,
) -> Result<Vec<Referrer>, RegistryError> {
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| protocol(client, format!("{what} is not JSON: {e}")))?;
    let manifests = document["manifests"]
        .as_array()
        .ok_or_else(|| protocol(client, format!("{what} is not an image index")))?;
    manifests
        .iter()
        .map(|entry| {
            let digest = entry["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| protocol(client, format!("{what} lists an invalid digest")))?;
            let media_type = entry["mediaType"].as_str().unwrap_or_default().to_owned();
            if !media::is_image_manifest(&media_type) && !media::is_index(&media_type) {
                return Err(protocol(
                    client,
                    format!("{what} lists {digest} of type {media_type:?}, not a manifest"),
                ));
            }
            Ok(Referrer {
                digest,
                media_type,
                size: entry["size"].as_u64().unwrap_or_default(),
                descriptor: entry.clone(),
            })
        })
        .collect()
}

impl RegistryClient {
    /// The manifests in `repository` whose subject is `subject`: the
    /// referrers API, else the fallback tag. Entries are descriptors only;
    /// every manifest is fetched (and verified) by whoever copies it.
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, RegistryError> {
        match self.referrers_api(repository, subject).await? {
            Some(found) => Ok(found),
            None => self.fallback_referrers(repository, subject).await,
        }
    }

    /// A cheap fingerprint of `subject`'s referrers for change detection:
    /// the API's listing where there is one (not a manifest GET), else a
    /// HEAD of the fallback tag (Docker Hub does not count HEADs).
    pub async fn referrers_fingerprint(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<String, RegistryError> {
        if let Some(found) = self.referrers_api(repository, subject).await? {
            let mut digests: Vec<String> = found.iter().map(|r| r.digest.to_string()).collect();
            digests.sort();
            return Ok(format!("api:{}", digests.join(",")));
        }
        let head = self
            .head_manifest(repository, &fallback_tag(subject))
            .await?;
        Ok(format!(
            "tag:{}",
            head.and_then(|h| h.digest)
                .map(|d| d.to_string())
                .unwrap_or_default()
        ))
    }

    /// The referrers API's answer, `None` when the registry has no such API.
    async fn referrers_api(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<Referrer>>, RegistryError> {
        use std::sync::atomic::Ordering;
        if self.no_referrers_api.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let what = format!("referrers of {}/{repository}@{subject}", self.registry());
        let mut found = Vec::new();
        let mut next = Some(format!("v2/{repository}/referrers/{subject}"));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(protocol(
                    self,
                    format!("{what}: more than {MAX_PAGES} pages"),
                ));
            }
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, media::OCI_INDEX.parse().expect("static header"));
            let response = self
                .request(Method::GET, &path, &[pull_scope(repository)], headers, None)
                .await?;
            match response.status() {
                // No referrers API here: the fallback tag holds the same index.
                StatusCode::NOT_FOUND if pages == 1 => {
                    self.no_referrers_api.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                status if status.is_success() => {}
                _ => return Err(status_error(self.registry(), "GET", &path, response).await),
            }
            next = header_string(response.headers(), "link").and_then(|l| parse_next_link(&l));
            let body = read_capped(response, MAX_MANIFEST_BYTES, &what).await?;
            found.extend(entries(self, &body, &what)?);
            if found.len() > MAX_REFERRERS {
                return Err(protocol(self, format!("{what}: more than {MAX_REFERRERS}")));
            }
        }
        Ok(Some(found))
    }

    /// The fallback tag's index, or nothing when the tag does not exist.
    async fn fallback_referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, RegistryError> {
        Ok(self
            .fallback_index(repository, subject)
            .await?
            .map(|(entries, _)| entries)
            .unwrap_or_default())
    }

    /// The fallback index with its ETag, `None` when the tag does not exist.
    async fn fallback_index(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<(Vec<Referrer>, Option<String>)>, RegistryError> {
        let tag = fallback_tag(subject);
        let what = format!("{}/{repository}:{tag}", self.registry());
        let path = format!("v2/{repository}/manifests/{tag}");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, media::OCI_INDEX.parse().expect("static header"));
        let response = self
            .request(Method::GET, &path, &[pull_scope(repository)], headers, None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(status_error(self.registry(), "GET", &path, response).await);
        }
        let etag = header_string(response.headers(), "etag");
        let body = read_capped(response, MAX_MANIFEST_BYTES, &what).await?;
        let mut found = entries(self, &body, &what)?;
        // Some registries answer a digest-shaped tag with the subject itself:
        // its own children are not its referrers.
        found.retain(|r| &r.digest != subject);
        if found.len() > MAX_REFERRERS {
            return Err(protocol(
                self,
                format!("{what}: more than {MAX_REFERRERS} referrers"),
            ));
        }
        Ok(Some((found, etag)))
    }

    /// Record `referrer` in the fallback index of `subject`: read, add if
    /// missing, write with `If-Match` when the registry gave an ETag.
    pub async fn add_to_fallback_index(
        &self,
        repository: &str,
        subject: &Digest,
        referrer: &ParsedManifest,
    ) -> Result<(), RegistryError> {
        let tag = fallback_tag(subject);
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut listed, etag) = self
                .fallback_index(repository, subject)
                .await?
                .unwrap_or_default();
            if listed.iter().any(|r| r.digest == referrer.digest) {
                return Ok(());
            }
            listed.push(Referrer {
                digest: referrer.digest.clone(),
                media_type: referrer.media_type.clone(),
                size: referrer.bytes.len() as u64,
                descriptor: referrer_descriptor(referrer),
            });
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": listed.iter().map(|r| r.descriptor.clone()).collect::<Vec<_>>(),
            })
            .to_string();
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                media::OCI_INDEX.parse().expect("static header"),
            );
            if let Some(etag) = etag.as_deref().and_then(|e| e.parse().ok()) {
                headers.insert(reqwest::header::IF_MATCH, etag);
            }
            let path = format!("v2/{repository}/manifests/{tag}");
            let response = self
                .request(
                    Method::PUT,
                    &path,
                    &[push_scope(repository)],
                    headers,
                    Some(body.into()),
                )
                .await?;
            match response.status() {
                // Someone changed it since we read it: read again and merge.
                StatusCode::PRECONDITION_FAILED => continue,
                status if status.is_success() => return Ok(()),
                _ => return Err(status_error(self.registry(), "PUT", &path, response).await),
            }
        }
        Err(protocol(
            self,
            format!(
                "{repository}:{tag} kept changing while ferry added {}",
                referrer.digest
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_follow_the_spec() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(fallback_tag(&digest), format!("sha256-{}", "a".repeat(64)));
    }
}
