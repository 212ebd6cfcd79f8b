//! Blob endpoints: HEAD, a streamed GET that verifies size and digest while
//! bytes flow and resumes broken connections with `Range`, uploads (one
//! request for small blobs, POST + streamed PATCH + PUT for the rest) and
//! cross-repository mounts.

use super::client::{header_string, pull_scope, push_scope, RegistryClient};
use super::error::RegistryError;
use super::transport::status_error;
use crate::types::{Digest, Verifier};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use std::sync::{Arc, Mutex};

/// Reconnects without progress allowed while streaming one blob.
const MAX_RESUMES: u32 = 5;

/// A stream of verified blob bytes: it ends with an error instead of a
/// clean end when size or digest do not match.
pub type BlobStream = BoxStream<'static, Result<Bytes, RegistryError>>;

struct DownloadState {
    client: Arc<RegistryClient>,
    repository: String,
    digest: Digest,
    offset: u64,
    verifier: Option<Verifier>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    /// The host connection this download holds while its body streams.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    resumes: u32,
    finished: bool,
}

impl DownloadState {
    fn what(&self) -> String {
        format!(
            "blob {} of {}/{}",
            self.digest,
            self.client.registry(),
            self.repository
        )
    }

    /// Open (or reopen at `offset`) the GET. A server that ignores the
    /// `Range` and answers 200 forces a restart by the caller: bytes are
    /// never spliced from two responses.
    async fn open(&mut self) -> Result<(), RegistryError> {
        let mut headers = HeaderMap::new();
        if self.offset > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={}-", self.offset)).expect("ascii"),
            );
        }
        let path = format!("v2/{}/blobs/{}", self.repository, self.digest);
        let scopes = [pull_scope(&self.repository)];
        if self.permit.is_none() {
            self.permit = Some(self.client.connection().await);
        }
        let response = self
            .client
            .request_held(Method::GET, &path, &scopes, headers, None)
            .await?;
        let status = response.status();
        if self.offset > 0 {
            let range_ok = status == StatusCode::PARTIAL_CONTENT
                && header_string(response.headers(), "content-range")
                    .is_some_and(|range| range.starts_with(&format!("bytes {}-", self.offset)));
            if !range_ok && !status.is_success() {
                // An error answer (after the transport's own retries) is
                // final, as it would be for the first request.
                return Err(status_error(self.client.registry(), "GET", &path, response).await);
            }
            if !range_ok {
                return Err(RegistryError::StreamBroken {
                    registry: self.client.registry().to_owned(),
                    what: format!("the download of {}", self.what()),
                    reason: format!(
                        "its resume at byte {} was answered {status} without that range",
                        self.offset
                    ),
                });
            }
        } else if !status.is_success() {
            let error = status_error(self.client.registry(), "GET", &path, response).await;
            return Err(match error {
                RegistryError::NotFound {
                    registry,
                    repository,
                    detail,
                    ..
                } => RegistryError::NotFound {
                    registry,
                    repository,
                    what: self.what(),
                    detail,
                },
                other => other,
            });
        }
        self.body = Some(response.bytes_stream().boxed());
        Ok(())
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if self.body.is_none() {
                self.open().await?;
            }
            let body = self.body.as_mut().expect("opened above");
            match body.next().await {
                Some(Ok(chunk)) => {
                    super::bandwidth::downloaded(chunk.len()).await;
                    self.offset += chunk.len() as u64;
                    if let Some(verifier) = self.verifier.as_mut() {
                        verifier
                            .update(&chunk)
                            .map_err(|e| RegistryError::unverified(self.what(), e))?;
                    }
                    self.resumes = 0;
                    return Ok(Some(chunk));
                }
                Some(Err(error)) => {
                    self.resumes += 1;
                    self.body = None;
                    if self.resumes > MAX_RESUMES {
                        return Err(super::transport::connect_error(
                            self.client.registry(),
                            &error,
                        ));
                    }
                    tracing::debug!(what = %self.what(), offset = self.offset, "connection broke; resuming with Range");
                    self.client
                        .reporter
                        .report(crate::progress::Event::Retrying {
                            what: self.what(),
                            attempt: self.resumes,
                            reason: format!("resuming at byte {}", self.offset),
                        });
                }
                None => {
                    self.finished = true;
                    self.permit = None;
                    if let Some(verifier) = self.verifier.take() {
                        verifier
                            .finish()
                            .map_err(|e| RegistryError::unverified(self.what(), e))?;
                    }
                    return Ok(None);
                }
            }
        }
    }
}

impl RegistryClient {
    /// The blob's size when `repository` has it, `None` when it does not.
    pub async fn blob_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let path = format!("v2/{repository}/blobs/{digest}");
        let response = self
            .request(
                Method::HEAD,
                &path,
                &[pull_scope(repository)],
                HeaderMap::new(),
                None,
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            // The header, not the (empty) body of a HEAD response.
            status if status.is_success() => Ok(Some(
                header_string(response.headers(), "content-length")
                    .and_then(|length| length.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(status_error(self.registry(), "HEAD", &path, response).await),
        }
    }

    /// Stream a blob, checking its size as it flows and, with `verify`, its
    /// digest (the stream then ends in an error instead of a clean end). A
    /// consumer that hashes the bytes itself (the store) passes `false`.
    pub fn blob_stream(
        self: &Arc<Self>,
        repository: &str,
        digest: &Digest,
        size: u64,
        verify: bool,
    ) -> BlobStream {
        self.blob_stream_from(repository, digest, size, 0, verify)
    }

    /// The bytes of a blob from `offset` on (a download another run left
    /// half done continues with `Range`): `size - offset` bytes, size
    /// checked; the digest is the consumer's to check, since it holds the
    /// bytes before `offset` (`verify` only when `offset` is 0).
    pub fn blob_stream_from(
        self: &Arc<Self>,
        repository: &str,
        digest: &Digest,
        size: u64,
        offset: u64,
        verify: bool,
    ) -> BlobStream {
        let verify = verify && offset == 0;
        let size = size.saturating_sub(offset);
        let state = DownloadState {
            client: self.clone(),
            repository: repository.to_owned(),
            digest: digest.clone(),
            offset,
            // The size is always checked; the digest unless the consumer hashes.
            verifier: Some(if verify {
                Verifier::new(digest, Some(size))
            } else {
                Verifier::size_only(digest, size)
            }),
            body: None,
            permit: None,
            resumes: 0,
            finished: false,
        };
        futures_util::stream::try_unfold(state, |mut state| async move {
            Ok(state.next_chunk().await?.map(|chunk| (chunk, state)))
        })
        .boxed()
    }

    /// Upload a small blob held in memory: one POST where the registry
    /// supports monolithic upload, else POST then PUT.
    pub async fn upload_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        super::bandwidth::uploading(bytes.len()).await;
        let scopes = [push_scope(repository)];
        let path = format!("v2/{repository}/blobs/uploads/?digest={digest}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let response = self
            .request(
                Method::POST,
                &path,
                &scopes,
                headers.clone(),
                Some(bytes.clone()),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::ACCEPTED => {
                let location = self.location(&response, &path)?;
                let url = with_digest(self.resolve_url(&location).await?, digest);
                let response = self
                    .request(Method::PUT, url.as_str(), &scopes, headers, Some(bytes))
                    .await?;
                if response.status() == StatusCode::CREATED {
                    Ok(())
                } else {
                    Err(self.upload_failure(digest, "PUT", &path, response).await)
                }
            }
            _ => Err(status_error(self.registry(), "POST", &path, response).await),
        }
    }

    /// Upload a blob from a stream: POST, one streamed PATCH, then PUT with
    /// the digest. The stream must end with an error if its bytes are bad:
    /// then the PATCH fails and the upload is never completed.
    pub async fn upload_stream(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        body: BoxStream<'static, Result<Bytes, RegistryError>>,
    ) -> Result<(), RegistryError> {
        let scopes = [push_scope(repository)];
        let start = format!("v2/{repository}/blobs/uploads/");
        let response = self
            .request(Method::POST, &start, &scopes, HeaderMap::new(), None)
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(self.registry(), "POST", &start, response).await);
        }
        let location = self.resolve_url(&self.location(&response, &start)?).await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        let broken = |reason: String| RegistryError::StreamBroken {
            registry: self.registry().to_owned(),
            what: format!("the upload of blob {digest}"),
            reason,
        };
        // A failure of the bytes' own source (its verifier, its registry)
        // is reported as that, not as a broken upload.
        let source_failure: Arc<Mutex<Option<RegistryError>>> = Arc::default();
        let slot = source_failure.clone();
        let body = body.then(move |chunk| {
            let slot = slot.clone();
            async move {
                match chunk {
                    Ok(bytes) => {
                        super::bandwidth::uploading(bytes.len()).await;
                        Ok(bytes)
                    }
                    Err(error) => {
                        let text = error.to_string();
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        Err(std::io::Error::other(text))
                    }
                }
            }
        });
        let source_failed = || {
            source_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        };
        let response = match self
            .request_streaming(
                Method::PATCH,
                &location,
                &scopes,
                headers,
                reqwest::Body::wrap_stream(body),
            )
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return Err(match (source_failed(), error) {
                    (Some(cause), _) => cause,
                    (None, RegistryError::Connect { message, .. }) => broken(message),
                    (None, other) => other,
                })
            }
        };
        if let Some(cause) = source_failed() {
            return Err(cause);
        }
        if response.status() != StatusCode::ACCEPTED && response.status() != StatusCode::NO_CONTENT
        {
            let status = response.status().as_u16();
            let failure = self
                .upload_failure(digest, "PATCH", location.path(), response)
                .await;
            // The transport sends a stream once: a transient answer to it
            // is the caller's to retry, by starting the blob over.
            return Err(match (status, failure) {
                (408 | 429 | 500..=599, error @ RegistryError::Http { .. }) => {
                    broken(error.to_string())
                }
                (_, error) => error,
            });
        }
        let location = match header_string(response.headers(), LOCATION.as_str()) {
            Some(next) => self.resolve_url(&next).await?,
            None => location,
        };
        let url = with_digest(location, digest);
        let response = self
            .request(Method::PUT, url.as_str(), &scopes, HeaderMap::new(), None)
            .await?;
        if response.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(self
                .upload_failure(digest, "PUT", url.path(), response)
                .await)
        }
    }

    /// Ask the registry to mount `digest` from `from` into `repository`.
    /// Returns false (and cancels the upload session) when it declines.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let scopes = [push_scope(repository), pull_scope(from)];
        let path = format!("v2/{repository}/blobs/uploads/?mount={digest}&from={from}");
        let response = self
            .request(Method::POST, &path, &scopes, HeaderMap::new(), None)
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.location(&response, &path) {
                    if let Ok(url) = self.resolve_url(&location).await {
                        // Best effort: an abandoned session expires on its own.
                        let _ = self
                            .request(
                                Method::DELETE,
                                url.as_str(),
                                &scopes,
                                HeaderMap::new(),
                                None,
                            )
                            .await;
                    }
                }
                Ok(false)
            }
            _ => Err(status_error(self.registry(), "POST", &path, response).await),
        }
    }

    /// Classify a failed PATCH or PUT of an upload: a purged session (404)
    /// or a range the registry will not accept (416) means the upload is
    /// started again from the beginning, which the spec allows; anything
    /// else is an ordinary error.
    async fn upload_failure(
        &self,
        digest: &Digest,
        method: &str,
        path: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::RANGE_NOT_SATISFIABLE {
            let error = status_error(self.registry(), method, path, response).await;
            return RegistryError::UploadLost {
                registry: self.registry().to_owned(),
                digest: digest.clone(),
                reason: format!("{method} answered {}: {error}", status.as_u16()),
            };
        }
        status_error(self.registry(), method, path, response).await
    }

    fn location(&self, response: &reqwest::Response, path: &str) -> Result<String, RegistryError> {
        header_string(response.headers(), LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Protocol {
                registry: self.registry().to_owned(),
                message: format!("{path} answered without a Location header"),
            }
        })
    }
}

/// Add `digest=` to an upload URL, keeping the registry's own query state.
fn with_digest(mut url: url::Url, digest: &Digest) -> url::Url {
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}
