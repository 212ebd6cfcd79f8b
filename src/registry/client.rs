//! One client per registry host, and the pool that hands them out. The
//! client owns the base URL (https, or http for `insecure` and loopback
//! registries that do not speak TLS), authentication, and the manifest and
//! tag endpoints; blob endpoints live in `blobs.rs`.

use super::auth::Auth;
use super::error::RegistryError;
use super::transport::{
    build_http_client, connect_error, is_loopback_host, read_capped, send_with_retry, split_host,
    status_error, RegistrySettings, RetryPolicy,
};
use crate::progress::Reporter;
use crate::types::manifest::MAX_MANIFEST_BYTES;
use crate::types::reference::DOCKER_HUB;
use crate::types::{media, Digest, ParsedManifest, Secret};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Hands out one shared client per registry host.
pub struct Registries {
    settings: HashMap<String, RegistrySettings>,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    reporter: Arc<dyn Reporter>,
    retry: RetryPolicy,
    stall_timeout: std::time::Duration,
}

impl Registries {
    /// A pool using per-host `settings` (keyed by `host[:port]`).
    pub fn new(
        settings: HashMap<String, RegistrySettings>,
        reporter: Arc<dyn Reporter>,
    ) -> Registries {
        Registries {
            settings,
            clients: Mutex::new(HashMap::new()),
            reporter,
            retry: RetryPolicy::default(),
            stall_timeout: std::time::Duration::from_secs(120),
        }
    }

    /// How long a read may make no progress before it is abandoned.
    pub fn with_stall_timeout(mut self, timeout: std::time::Duration) -> Registries {
        self.stall_timeout = timeout;
        self
    }

    /// Replace the retry policy (tests shorten it).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Registries {
        self.retry = retry;
        self
    }

    /// The client for `registry`, created on first use.
    pub fn client(&self, registry: &str) -> Result<Arc<RegistryClient>, RegistryError> {
        let mut clients = self.clients.lock().expect("registry pool lock");
        if let Some(client) = clients.get(registry) {
            return Ok(client.clone());
        }
        let settings = self.settings.get(registry).cloned().unwrap_or_default();
        if let Some(message) = &settings.password_error {
            return Err(RegistryError::Config {
                registry: registry.to_owned(),
                message: message.clone(),
            });
        }
        let client = Arc::new(RegistryClient {
            registry: registry.to_owned(),
            http: build_http_client(registry, &settings, self.stall_timeout)?,
            base: OnceCell::new(),
            auth: OnceCell::new(),
            settings,
            retry: self.retry.clone(),
            reporter: self.reporter.clone(),
            no_referrers_api: std::sync::atomic::AtomicBool::new(false),
            connections: Arc::new(tokio::sync::Semaphore::new(settings_max_connections(
                &self.settings,
                registry,
            ))),
        });
        clients.insert(registry.to_owned(), client.clone());
        Ok(client)
    }
}

/// What a manifest HEAD says.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    /// Docker Hub's `ratelimit-remaining`, when sent.
    pub rate_limit_remaining: Option<u64>,
}

/// A client for one registry host.
pub struct RegistryClient {
    registry: String,
    pub(crate) http: reqwest::Client,
    base: OnceCell<url::Url>,
    auth: OnceCell<Auth>,
    settings: RegistrySettings,
    pub(crate) retry: RetryPolicy,
    pub(crate) reporter: Arc<dyn Reporter>,
    /// Set once the registry answered the referrers API with 404: it has
    /// none, so later lookups go straight to the fallback tag.
    pub(crate) no_referrers_api: std::sync::atomic::AtomicBool,
    /// One process-wide limit on requests in flight to this host
    /// (`max_connections`): a blob download holds its permit while its
    /// body streams, every other request until its answer arrives.
    connections: Arc<tokio::sync::Semaphore>,
}

/// The scope that lets a token pull from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope that lets a token pull from and push to `repository`.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl RegistryClient {
    /// The registry host this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The API base URL, deciding https or http on first use.
    pub async fn base(&self) -> Result<&url::Url, RegistryError> {
        self.base
            .get_or_try_init(|| async {
                let host = if self.registry == DOCKER_HUB { "registry-1.docker.io" } else { self.registry.as_str() };
                let parse = |scheme: &str| {
                    url::Url::parse(&format!("{scheme}://{host}/")).map_err(|e| RegistryError::Config {
                        registry: self.registry.clone(),
                        message: format!("not a valid host: {e}"),
                    })
                };
                if self.settings.insecure {
                    tracing::debug!(registry = %self.registry, "using plain HTTP: the registry is marked insecure");
                    return parse("http");
                }
                let https = parse("https")?;
                let loopback = is_loopback_host(split_host(&self.registry).0);
                if !loopback || self.settings.ca_file.is_some() || self.settings.client_cert.is_some() {
                    return Ok(https);
                }
                // Loopback registries may be plain HTTP (docker treats them as
                // insecure too): try TLS first, fall back only when the
                // handshake itself fails.
                match self.http.get(https.join("v2/").expect("static path")).send().await {
                    Ok(_) => Ok(https),
                    // It speaks TLS with a certificate we refuse: plain HTTP
                    // would only fail later, less clearly.
                    Err(error) if super::tls::certificate_refused(&error) => {
                        Err(connect_error(&self.registry, &error))
                    }
                    Err(error) if error.is_connect() || error.is_request() => parse("http"),
                    Err(error) => Err(connect_error(&self.registry, &error)),
                }
            })
            .await
    }

    async fn auth(&self) -> Result<&Auth, RegistryError> {
        let plain_http = self.base().await?.scheme() == "http";
        Ok(self
            .auth
            .get_or_init(|| async {
                let credentials = super::credentials::resolve(&self.registry, &self.settings);
                Auth::new(&self.registry, plain_http, credentials)
            })
            .await)
    }

    /// A permit for one request to this host (waits while `max_connections`
    /// are in flight).
    pub(crate) async fn connection(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.connections
            .clone()
            .acquire_owned()
            .await
            .expect("the connection limit is never closed")
    }

    /// Send an authenticated request for `path` (relative to the base URL, or
    /// absolute), retrying transient failures and answering one auth challenge.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        scopes: &[String],
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
    ) -> Result<Response, RegistryError> {
        let _permit = self.connection().await;
        self.request_held(method, path, scopes, headers, body).await
    }

    /// [`RegistryClient::request`] for a caller that already holds a
    /// [`RegistryClient::connection`] permit (and keeps it past the answer).
    pub(crate) async fn request_held(
        &self,
        method: Method,
        path: &str,
        scopes: &[String],
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
    ) -> Result<Response, RegistryError> {
        let url = self.resolve_url(path).await?;
        let auth = self.auth().await?;
        let mut challenged = false;
        loop {
            let authorization: Option<Secret> = auth.header_for(&self.http, scopes).await?;
            let response =
                send_with_retry(&self.registry, path, &self.retry, &self.reporter, || {
                    let mut request = self
                        .http
                        .request(method.clone(), url.clone())
                        .headers(headers.clone());
                    if let Some(value) = &authorization {
                        request = request.header(AUTHORIZATION, value.expose());
                    }
                    if let Some(body) = &body {
                        request = request.body(body.clone());
                    }
                    request
                })
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(response);
            }
            challenged = true;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            auth.handle_challenge(
                &self.http,
                challenge.as_deref(),
                scopes,
                authorization.as_ref(),
            )
            .await?;
        }
    }

    /// Send a request whose body is a one-shot stream (no retries: the caller
    /// restarts the whole transfer). Auth must already be established for `scopes`.
    pub async fn request_streaming(
        &self,
        method: Method,
        url: &url::Url,
        scopes: &[String],
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<Response, RegistryError> {
        let _permit = self.connection().await;
        let auth = self.auth().await?;
        let mut request = self
            .http
            .request(method, url.clone())
            .headers(headers)
            .body(body);
        if let Some(value) = auth.header_for(&self.http, scopes).await? {
            request = request.header(AUTHORIZATION, value.expose());
        }
        let outcome = request.send().await;
        crate::metrics::request(
            &self.registry,
            outcome.as_ref().map_or(0, |r| r.status().as_u16()),
        );
        outcome.map_err(|e| connect_error(&self.registry, &e))
    }

    /// Resolve a path or a registry-given `Location` against the base URL.
    /// Locations on another host are refused unless that host is the registry's.
    pub async fn resolve_url(&self, path: &str) -> Result<url::Url, RegistryError> {
        let base = self.base().await?;
        let url = base.join(path).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            message: format!("bad URL {path:?}: {e}"),
        })?;
        if url.scheme() != base.scheme() && base.scheme() == "https" {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                message: "refused a Location that downgrades https to http".into(),
            });
        }
        Ok(url)
    }

    /// Check that the registry answers and the credentials work (`GET /v2/`).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let response = self
            .request(Method::GET, "v2/", &[], HeaderMap::new(), None)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&self.registry, "GET", "/v2/", response).await)
        }
    }

    fn manifest_path(repository: &str, reference: &str) -> String {
        format!("v2/{repository}/manifests/{reference}")
    }

    /// Fetch a manifest's exact bytes and verify them against the requested
    /// digest (when `reference` is one) and `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ParsedManifest, RegistryError> {
        let what = format!("{}/{repository}:{reference}", self.registry);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, media::ACCEPT.parse().expect("static header"));
        let path = Self::manifest_path(repository, reference);
        let response = self
            .request(Method::GET, &path, &[pull_scope(repository)], headers, None)
            .await?;
        if !response.status().is_success() {
            return Err(self.not_found_as(
                status_error(&self.registry, "GET", &path, response).await,
                &what,
            ));
        }
        let content_type = header_string(response.headers(), CONTENT_TYPE.as_str());
        let claimed = header_string(response.headers(), "docker-content-digest");
        let bytes = read_capped(response, MAX_MANIFEST_BYTES, &what).await?;
        let parsed = ParsedManifest::parse(bytes, content_type.as_deref(), &what)?;
        let mut expected: Vec<Digest> = Vec::new();
        if let Ok(requested) = reference.parse::<Digest>() {
            expected.push(requested);
        }
        if let Some(claimed) = claimed {
            let claimed = claimed
                .parse::<Digest>()
                .map_err(|_| RegistryError::Protocol {
                    registry: self.registry.clone(),
                    message: format!("invalid Docker-Content-Digest {claimed:?} for {what}"),
                })?;
            expected.push(claimed);
        }
        for expected in expected {
            let actual = if expected.algorithm() == parsed.digest.algorithm() {
                parsed.digest.clone()
            } else {
                let mut hasher = expected.hasher();
                hasher.update(&parsed.bytes);
                hasher.finish()
            };
            if actual != expected {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected,
                    actual,
                });
            }
        }
        Ok(parsed)
    }

    /// HEAD a manifest: `None` when it does not exist. Docker Hub does not
    /// count HEADs against the pull limit, so change checks use this.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, media::ACCEPT.parse().expect("static header"));
        let path = Self::manifest_path(repository, reference);
        let response = self
            .request(
                Method::HEAD,
                &path,
                &[pull_scope(repository)],
                headers,
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(status_error(&self.registry, "HEAD", &path, response).await);
        }
        let headers = response.headers();
        let rate_limit_remaining: Option<u64> = header_string(headers, "ratelimit-remaining")
            .and_then(|v| v.split(';').next().and_then(|n| n.trim().parse().ok()));
        if let Some(remaining) = rate_limit_remaining {
            crate::metrics::rate_limit_remaining(&self.registry, remaining);
        }
        Ok(Some(ManifestHead {
            digest: header_string(headers, "docker-content-digest").and_then(|d| d.parse().ok()),
            media_type: header_string(headers, CONTENT_TYPE.as_str()),
            size: response.content_length(),
            rate_limit_remaining,
        }))
    }

    /// Upload a manifest under `reference` (a tag or its digest). Returns
    /// whether the registry indexed the manifest's `subject` itself (it
    /// answered with `OCI-Subject`, OCI distribution 1.1).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &ParsedManifest,
    ) -> Result<bool, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            manifest
                .media_type
                .parse()
                .map_err(|_| RegistryError::Protocol {
                    registry: self.registry.clone(),
                    message: format!("media type {:?} is not a valid header", manifest.media_type),
                })?,
        );
        let path = Self::manifest_path(repository, reference);
        let response = self
            .request(
                Method::PUT,
                &path,
                &[push_scope(repository)],
                headers,
                Some(manifest.bytes.clone()),
            )
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&self.registry, "PUT", &path, response).await);
        }
        if let Some(stored) = header_string(response.headers(), "docker-content-digest") {
            if stored != manifest.digest.to_string() {
                return Err(RegistryError::Protocol {
                    registry: self.registry.clone(),
                    message: format!("stored manifest as {stored}, expected {}", manifest.digest),
                });
            }
        }
        Ok(response.headers().contains_key("oci-subject"))
    }

    /// Delete a manifest by digest (the registry drops every tag on it).
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let path = Self::manifest_path(repository, &digest.to_string());
        let scope = format!("repository:{repository}:delete,pull,push");
        let response = self
            .request(Method::DELETE, &path, &[scope], HeaderMap::new(), None)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&self.registry, "DELETE", &path, response).await)
        }
    }

    /// Name the image (not the URL path) in not-found errors.
    pub(super) fn not_found_as(&self, error: RegistryError, what: &str) -> RegistryError {
        match error {
            RegistryError::NotFound {
                registry,
                repository,
                detail,
                ..
            } => RegistryError::NotFound {
                registry,
                repository,
                what: what.to_owned(),
                detail,
            },
            other => other,
        }
    }
}

/// A header as an owned string, when present and valid.
pub fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The target of `rel="next"` in a `Link` header.
pub(super) fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        Some(target.trim_start_matches('/').to_owned())
    })
}

/// `max_connections` for `registry` (default 16, at least 1).
fn settings_max_connections(
    settings: &std::collections::HashMap<String, RegistrySettings>,
    registry: &str,
) -> usize {
    settings
        .get(registry)
        .and_then(|s| s.max_connections)
        .unwrap_or(crate::types::registry_settings::DEFAULT_MAX_CONNECTIONS)
        .max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_link_header() {
        let link = r#"</v2/app/tags/list?last=b&n=2>; rel="next""#;
        assert_eq!(
            super::parse_next_link(link).as_deref(),
            Some("v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(super::parse_next_link(r#"</x>; rel="prev""#), None);
    }
}
