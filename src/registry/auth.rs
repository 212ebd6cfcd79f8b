//! Registry authentication: `WWW-Authenticate` challenges, basic auth,
//! bearer tokens (Docker Hub's realm/service/scope flow, anonymous or with
//! credentials, OAuth2 refresh tokens), and a token cache per scope with
//! expiry. Credentials are bound to exactly one registry host.

use super::error::RegistryError;
use super::transport::{
    connect_error, is_loopback_host, read_capped, status_error, MAX_SMALL_BODY,
};
use crate::types::Secret;
use base64::Engine as _;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What a user authenticates with.
#[derive(Debug, Clone)]
pub enum Credentials {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token, as `docker login` stores for some registries.
    IdentityToken(Secret),
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value (one challenge, RFC 7235 params).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Scheme {
    Basic,
    Bearer {
        realm: url::Url,
        service: Option<String>,
    },
}

struct CachedToken {
    token: Secret,
    expires: Instant,
}

/// Authentication state for one registry host.
pub struct Auth {
    registry: String,
    plain_http: bool,
    credentials: Option<Credentials>,
    scheme: Mutex<Option<Scheme>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Held while a rejected token is replaced, so requests that were
    /// refused together fetch one new token, not one each.
    refreshing: Mutex<()>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    /// Auth state for `registry`; `plain_http` says whether it is reached without TLS.
    pub fn new(registry: &str, plain_http: bool, credentials: Option<Credentials>) -> Auth {
        Auth {
            registry: registry.to_owned(),
            plain_http,
            credentials,
            scheme: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(()),
        }
    }

    /// The `Authorization` header value for a request needing `scopes`, if
    /// one is known without a round trip to the registry.
    pub async fn header_for(
        &self,
        http: &reqwest::Client,
        scopes: &[String],
    ) -> Result<Option<Secret>, RegistryError> {
        let scheme = self.scheme.lock().await.clone();
        match scheme {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(self.basic_header()),
            Some(Scheme::Bearer { realm, service }) => {
                let key = scopes.join(" ");
                if let Some(header) = self.fresh_token(&key).await {
                    return Ok(Some(header));
                }
                // One fetch at a time: requests that found no token together
                // share the one fetched by the first.
                let _refreshing = self.refreshing.lock().await;
                if let Some(header) = self.fresh_token(&key).await {
                    return Ok(Some(header));
                }
                let token = self
                    .fetch_token(http, &realm, service.as_deref(), scopes)
                    .await?;
                Ok(Some(Secret::new(format!("Bearer {}", token.expose()))))
            }
        }
    }

    /// The cached token for `key` as a header, unless it expires soon.
    async fn fresh_token(&self, key: &str) -> Option<Secret> {
        let tokens = self.tokens.lock().await;
        let cached = tokens.get(key)?;
        (cached.expires > Instant::now() + Duration::from_secs(10))
            .then(|| Secret::new(format!("Bearer {}", cached.token.expose())))
    }

    /// React to a 401: learn the scheme and, for bearer, fetch a fresh token
    /// (the caller then retries exactly once).
    /// `rejected` is the `Authorization` value the registry refused.
    pub async fn handle_challenge(
        &self,
        http: &reqwest::Client,
        header: Option<&str>,
        scopes: &[String],
        rejected: Option<&Secret>,
    ) -> Result<(), RegistryError> {
        let challenge =
            header
                .and_then(parse_challenge)
                .ok_or_else(|| RegistryError::Protocol {
                    registry: self.registry.clone(),
                    message: "401 without a usable WWW-Authenticate challenge".into(),
                })?;
        match challenge {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail:
                            " (the registry wants a username and password and none is configured)"
                                .into(),
                    });
                }
                *self.scheme.lock().await = Some(Scheme::Basic);
            }
            Challenge::Bearer { realm, service, .. } => {
                let realm = self.check_realm(&realm)?;
                *self.scheme.lock().await = Some(Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                });
                let _refreshing = self.refreshing.lock().await;
                let key = scopes.join(" ");
                // Another request already replaced the refused token. (The
                // refused one stays cached until its replacement arrives, so
                // no request fetches a token of its own meanwhile.)
                let replaced = self.tokens.lock().await.get(&key).is_some_and(|cached| {
                    rejected
                        .is_some_and(|r| r.expose() != format!("Bearer {}", cached.token.expose()))
                });
                if replaced {
                    return Ok(());
                }
                self.fetch_token(http, &realm, service.as_deref(), scopes)
                    .await?;
            }
        }
        Ok(())
    }

    /// A token realm must use TLS unless the registry itself is plain HTTP,
    /// and may point at a loopback address only from a loopback registry.
    fn check_realm(&self, realm: &str) -> Result<url::Url, RegistryError> {
        let refuse = |why: &str| RegistryError::Protocol {
            registry: self.registry.clone(),
            message: format!("refused token realm {realm:?}: {why}"),
        };
        let url = url::Url::parse(realm).map_err(|_| refuse("not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.plain_http => {}
            _ => return Err(refuse("it must be https")),
        }
        let realm_host = url.host_str().unwrap_or("");
        let registry_host = super::transport::split_host(&self.registry).0;
        if is_loopback_host(realm_host) && !is_loopback_host(registry_host) {
            return Err(refuse("a loopback realm for a non-loopback registry"));
        }
        // A public registry must not send credentials into the local network
        // (CVE-2026-65388-style realm abuse); the registry's own host is fine.
        let private = match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                ip.is_private() || ip.is_link_local() || ip.is_unspecified()
            }
            Some(url::Host::Ipv6(ip)) => {
                (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfe80
            }
            _ => false,
        };
        if private && realm_host != registry_host.trim_start_matches('[').trim_end_matches(']') {
            return Err(refuse(
                "a private-network realm on another host than the registry",
            ));
        }
        Ok(url)
    }

    fn basic_header(&self) -> Option<Secret> {
        match &self.credentials {
            Some(Credentials::Basic { username, password }) => {
                let raw = format!("{username}:{}", password.expose());
                Some(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )))
            }
            _ => None,
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &url::Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Secret, RegistryError> {
        let request = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.expose().to_owned()),
                    ("client_id", "ferry".to_owned()),
                ];
                if let Some(service) = service {
                    form.push(("service", service.to_owned()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                http.post(realm.clone()).form(&form)
            }
            credentials => {
                let mut url = realm.clone();
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let request = http.get(url);
                match credentials {
                    Some(Credentials::Basic { username, password }) => {
                        request.basic_auth(username, Some(password.expose()))
                    }
                    _ => request,
                }
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| connect_error(&self.registry, &e))?;
        if !response.status().is_success() {
            let error = status_error(&self.registry, "GET", "token", response).await;
            return Err(match error {
                RegistryError::Unauthorized { detail, .. }
                | RegistryError::Denied { detail, .. } => RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    detail,
                },
                other => other,
            });
        }
        let body = read_capped(response, MAX_SMALL_BODY, "token response").await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| RegistryError::Protocol {
                registry: self.registry.clone(),
                message: "token endpoint answered without a JSON token".into(),
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                message: "token endpoint answered without a token".into(),
            })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(10));
        let token = Secret::new(token);
        self.tokens.lock().await.insert(
            scopes.join(" "),
            CachedToken {
                token: token.clone(),
                expires: Instant::now() + lifetime,
            },
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn refuses_unsafe_realms() {
        let auth = Auth::new("registry.example.com", false, None);
        assert!(auth.check_realm("http://auth.example.com/token").is_err());
        assert!(auth.check_realm("https://127.0.0.1/token").is_err());
        assert!(auth.check_realm("https://auth.example.com/token").is_ok());
        assert!(auth.check_realm("https://10.0.0.5/token").is_err());
        assert!(auth.check_realm("https://169.254.169.254/token").is_err());
        let internal = Auth::new("10.0.0.5:5000", false, None);
        assert!(internal.check_realm("https://10.0.0.5/token").is_ok());
    }
}
