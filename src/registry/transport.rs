//! HTTP transport for one registry host: the reqwest client with its TLS
//! settings and redirect policy, the choice of https or plain http, and
//! classified retries with jittered backoff and `Retry-After`.

use super::error::{error_detail, RegistryError};
use crate::progress::{Event, Reporter};
use crate::types::time::{now_unix, parse_http_date};
use reqwest::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::types::RegistrySettings;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Largest error or token body ferry reads.
pub const MAX_SMALL_BODY: usize = 1024 * 1024;

/// Whether `host` (without port) is a loopback address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Split `host[:port]` into host and port parts.
pub fn split_host(registry: &str) -> (&str, Option<&str>) {
    match registry.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (registry, None),
    }
}

/// Build the reqwest client for one registry.
pub fn build_http_client(
    registry: &str,
    settings: &RegistrySettings,
    stall_timeout: Duration,
) -> Result<reqwest::Client, RegistryError> {
    let config_error = |message: String| RegistryError::Config {
        registry: registry.to_owned(),
        message,
    };
    let origin_loopback = is_loopback_host(split_host(registry).0);
    // Redirects: at most 10 hops, never https→http, never into link-local or
    // metadata addresses, and into loopback only from a loopback registry.
    // reqwest itself drops Authorization on a cross-host hop.
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url();
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|p| p.scheme() == "https")
            && url.scheme() != "https";
        if downgrade {
            return attempt.error("refused a redirect from https to plain http");
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = ip {
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.is_unspecified(),
            };
            if link_local || (ip.is_loopback() && !origin_loopback) {
                return attempt
                    .error("refused a redirect to a link-local, metadata or loopback address");
            }
        }
        attempt.follow()
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        .connect_timeout(Duration::from_secs(30))
        // A read that makes no progress this long is abandoned; blob
        // downloads then resume with Range.
        .read_timeout(stall_timeout)
        .pool_max_idle_per_host(16)
        .tls_built_in_root_certs(true);
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| config_error(format!("cannot read {what} {}: {e}", path.display())))
    };
    if let Some(ca_file) = &settings.ca_file {
        // Our own TLS config: ca_file's certificates are anchors, and one
        // the server presents as its own is pinned (see `tls`).
        let pem = read("ca_file", ca_file)?;
        let identity = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some((read("client_cert", cert)?, read("client_key", key)?)),
            (None, None) => None,
            _ => {
                return Err(config_error(
                    "client_cert and client_key must be set together".into(),
                ))
            }
        };
        let config = super::tls::client_config(
            &pem,
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(|e| config_error(format!("ca_file {} {e}", ca_file.display())))?;
        return builder
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| config_error(format!("cannot set up HTTP client: {e}")));
    }
    match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).map_err(|e| {
                config_error(format!("cannot read client_cert {}: {e}", cert.display()))
            })?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| {
                config_error(format!("cannot read client_key {}: {e}", key.display()))
            })?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                config_error(format!(
                    "client_cert/client_key are not a PEM certificate and key: {e}"
                ))
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(config_error(
                "client_cert and client_key must be set together".into(),
            ))
        }
    }
    builder
        .build()
        .map_err(|e| config_error(format!("cannot set up HTTP client: {e}")))
}

/// Read at most `limit` bytes of a response body (error bodies, tokens, manifests).
pub async fn read_capped(
    mut response: Response,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, RegistryError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| connect_error(what, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// A transport failure as a [`RegistryError`], with the URL's query removed
/// (signed URLs carry credentials there).
pub fn connect_error(registry: &str, error: &reqwest::Error) -> RegistryError {
    if let Some(problem) = super::tls::tls_problem(error, registry) {
        return RegistryError::Tls {
            registry: registry.to_owned(),
            problem,
        };
    }
    // reqwest's own Display includes the URL; describe the kind instead.
    let mut message = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else if error.is_body() || error.is_decode() {
        "response body broke off".to_owned()
    } else if error.is_redirect() {
        "redirect refused".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    RegistryError::Connect {
        registry: registry.to_owned(),
        message,
    }
}

/// Turn a non-success response into a classified error.
pub async fn status_error(
    registry: &str,
    method: &str,
    path: &str,
    response: Response,
) -> RegistryError {
    let status = response.status();
    let body = read_capped(response, 64 * 1024, registry)
        .await
        .unwrap_or_default();
    let detail = error_detail(&body);
    match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry: registry.to_owned(),
            detail,
        },
        StatusCode::FORBIDDEN => RegistryError::Denied {
            registry: registry.to_owned(),
            what: path.to_owned(),
            action: if method == "GET" || method == "HEAD" {
                "read".into()
            } else {
                "write".into()
            },
            detail,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry: registry.to_owned(),
            repository: repository_of(path).to_owned(),
            what: path.to_owned(),
            detail,
        },
        _ => RegistryError::Http {
            registry: registry.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: status.as_u16(),
            detail,
        },
    }
}

/// Whether a status deserves another attempt, and at most how many.
fn retry_budget(status: StatusCode, policy: &RetryPolicy) -> Option<u32> {
    match status.as_u16() {
        408 | 429 | 502 | 503 | 504 => Some(policy.attempts),
        // A 500 is usually a bug on the server: one more try, not five.
        500 => Some(2.min(policy.attempts)),
        _ => None,
    }
}

/// The delay before attempt `attempt` (1-based), honouring `Retry-After`.
fn retry_delay(policy: &RetryPolicy, attempt: u32, response: Option<&Response>) -> Duration {
    let retry_after = response
        .and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|text| match text.trim().parse::<u64>() {
            Ok(seconds) => Some(Duration::from_secs(seconds)),
            Err(_) => {
                parse_http_date(text).map(|at| Duration::from_secs((at - now_unix()).max(0) as u64))
            }
        });
    if let Some(wait) = retry_after {
        return wait.min(policy.max_retry_after);
    }
    let exponential = policy.base_delay.saturating_mul(1 << attempt.min(16));
    let capped = exponential.min(policy.max_delay);
    // Full jitter keeps many clients from retrying in lockstep.
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    capped.mul_f64(jitter)
}

/// Send a request built by `build`, retrying connection errors, 408, 429 and
/// 5xx with backoff; any other answer (including 401) is returned to the caller.
pub async fn send_with_retry(
    registry: &str,
    what: &str,
    policy: &RetryPolicy,
    reporter: &Arc<dyn Reporter>,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Response, RegistryError> {
    let mut attempt = 1;
    loop {
        let outcome = build().send().await;
        crate::metrics::request(
            registry,
            outcome.as_ref().map_or(0, |r| r.status().as_u16()),
        );
        let (retry, reason, response) = match outcome {
            Ok(response) => match retry_budget(response.status(), policy) {
                Some(budget) if attempt < budget => (
                    true,
                    format!("HTTP {}", response.status().as_u16()),
                    Some(response),
                ),
                Some(_) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(RegistryError::RateLimited {
                        registry: registry.to_owned(),
                        attempts: attempt,
                    })
                }
                _ => return Ok(response),
            },
            Err(error)
                if attempt < policy.attempts && !error.is_builder() && !error.is_redirect() =>
            {
                (true, connect_error(registry, &error).to_string(), None)
            }
            Err(error) => return Err(connect_error(registry, &error)),
        };
        debug_assert!(retry);
        let delay = retry_delay(policy, attempt, response.as_ref());
        tracing::debug!(registry, what, attempt, ?delay, reason, "retrying");
        crate::metrics::retry(registry);
        reporter.report(Event::Retrying {
            what: what.to_owned(),
            attempt,
            reason,
        });
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let policy = RetryPolicy::default();
        assert_eq!(
            retry_budget(StatusCode::SERVICE_UNAVAILABLE, &policy),
            Some(5)
        );
        assert_eq!(
            retry_budget(StatusCode::INTERNAL_SERVER_ERROR, &policy),
            Some(2)
        );
        assert_eq!(retry_budget(StatusCode::NOT_FOUND, &policy), None);
        assert_eq!(retry_budget(StatusCode::UNAUTHORIZED, &policy), None);
        assert!(
            is_loopback_host("127.0.0.1")
                && is_loopback_host("localhost")
                && is_loopback_host("[::1]")
        );
        assert!(!is_loopback_host("example.com"));
    }
}

/// The repository a distribution API path names (`v2/<name>/manifests/…`,
/// `/v2/<name>/blobs/…`, `v2/<name>/tags/list`), for messages.
fn repository_of(path: &str) -> &str {
    let rest = path.trim_start_matches('/').trim_start_matches("v2/");
    ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|part| rest.find(part))
        .min()
        .map_or(rest, |end| &rest[..end])
}

#[cfg(test)]
mod repository_tests {
    #[test]
    fn the_repository_is_read_from_api_paths() {
        assert_eq!(super::repository_of("v2/team/app/manifests/1"), "team/app");
        assert_eq!(super::repository_of("/v2/a/b/c/blobs/sha256:00"), "a/b/c");
        assert_eq!(
            super::repository_of("v2/library/nginx/tags/list"),
            "library/nginx"
        );
    }
}
