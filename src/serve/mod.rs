//! `ferry serve`: the store as a registry. The distribution API over the
//! store's OCI layout — pulls (manifests, blobs with `Range`, tag lists,
//! the catalog, the referrers API) and, unless read-only, pushes into the
//! verified ingest and deletes. Basic auth from an htpasswd file; TLS from
//! PEM files. Every store guarantee holds while serving: blobs visible only
//! verified, tags changed atomically under the store's lock, and other
//! ferry commands (pull, load, gc, prune) run beside it.

mod auth;
pub mod health;
mod http;
mod read;
mod routes;
mod write;

use crate::store::lock::LockGuard;
use crate::store::upload::Upload;
use crate::store::Store;
use http::{builder, full, ApiError, Body};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use routes::{route, valid_name, Route};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How `ferry serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Refuse pushes and deletes.
    pub read_only: bool,
    /// Users allowed in (everything then needs a login).
    pub htpasswd: Option<PathBuf>,
    /// Certificate chain and key (PEM) for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Let anyone push (without `htpasswd`).
    pub allow_anonymous_push: bool,
    /// An upload idle this long is dropped (its bytes deleted).
    pub upload_timeout: Duration,
}

/// `ferry serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{0}")]
    Config(String),
}

/// An upload session.
struct Session {
    repository: String,
    upload: Upload,
    touched: Instant,
    /// The store's writer lock: gc waits while uploads are in flight.
    lock: LockGuard,
}

/// A finished blob waiting for the manifest that references it.
struct Pending {
    repository: String,
    since: Instant,
    _lock: LockGuard,
}

/// The server's state.
pub struct Server {
    store: Store,
    read_only: bool,
    auth: Option<auth::Htpasswd>,
    anonymous_push: bool,
    upload_timeout: Duration,
    /// The address clients are told about (names of pushed images when
    /// the request has no usable `Host`).
    host: String,
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<Vec<Pending>>,
}

/// A bound, ready server.
pub struct Listening {
    pub addr: SocketAddr,
    pub tls: bool,
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    server: Arc<Server>,
}

/// Bind the address and read the auth and TLS files: every configuration
/// error shows before the first request.
pub async fn bind(store: Store, options: &ServeOptions) -> Result<Listening, ServeError> {
    let auth = match &options.htpasswd {
        Some(path) => Some(auth::Htpasswd::read(path).map_err(ServeError::Config)?),
        None => None,
    };
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&options.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.addr.clone(),
            hint: match source.kind() {
                std::io::ErrorKind::AddrInUse => " (the port is taken: choose another with --addr)",
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need privileges: use e.g. --addr 127.0.0.1:5000)"
                }
                _ => "",
            },
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.addr.clone(),
        source,
        hint: "",
    })?;
    let server = Server {
        store,
        read_only: options.read_only,
        auth,
        anonymous_push: options.allow_anonymous_push,
        upload_timeout: options.upload_timeout,
        host: addr.to_string(),
        sessions: Mutex::new(HashMap::new()),
        pending: Mutex::new(Vec::new()),
    };
    Ok(Listening {
        addr,
        tls: acceptor.is_some(),
        listener,
        acceptor,
        server: Arc::new(server),
    })
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| ServeError::Config(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Config(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Config(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Config(format!("--tls-cert/--tls-key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Listening {
    /// Serve until `shutdown` completes. Connections are handled
    /// concurrently; one client's error never affects another.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Listening {
            listener,
            acceptor,
            server,
            ..
        } = self;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!("accepting a connection failed: {error}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let server = server.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let result = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        Err(error) => {
                            tracing::debug!(%peer, "TLS handshake failed: {error}");
                            return;
                        }
                    },
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%peer, "connection ended: {error}");
                }
            });
        }
    }
}

fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Server {
    /// Drop upload sessions and pending locks idle past the timeout.
    fn expire(&self) {
        let timeout = self.upload_timeout;
        self.sessions
            .lock()
            .expect("sessions")
            .retain(|_, s| s.touched.elapsed() < timeout);
        self.pending
            .lock()
            .expect("pending")
            .retain(|p| p.since.elapsed() < timeout);
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let head = request.method() == Method::HEAD;
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = match self.dispatch(request).await {
            Ok(response) => response,
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::warn!("{method} {path}: {}", error.message);
                }
                error.response(head)
            }
        };
        tracing::debug!("{method} {path} {}", response.status().as_u16());
        response
    }

    async fn dispatch(&self, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        self.expire();
        let method = request.method().clone();
        let writes = matches!(
            method,
            Method::PUT | Method::POST | Method::PATCH | Method::DELETE
        );
        if let Some(auth) = &self.auth {
            if !auth.check(header(&request, "authorization")) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                ));
            }
        }
        if writes && self.read_only {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this registry is read-only (ferry serve --read-only)",
            ));
        }
        if writes && self.auth.is_none() && !self.anonymous_push {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                "pushes need a login: start ferry serve with --htpasswd (or --allow-anonymous-push)",
            ));
        }
        let query = request.uri().query().map(str::to_owned);
        let query = query.as_deref();
        let route = route(request.uri().path());
        let name = match &route {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Uploads(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n.clone()),
            _ => None,
        };
        if let Some(name) = &name {
            if !valid_name(name) {
                return Err(ApiError::name_invalid(name));
            }
        }
        let host = header(&request, "host").unwrap_or(&self.host).to_owned();
        let content_type = header(&request, "content-type").map(str::to_owned);
        let content_range = header(&request, "content-range").map(str::to_owned);
        let range = header(&request, "range").map(str::to_owned);
        let head = method == Method::HEAD;
        let get = method == Method::GET || head;
        let body = request.into_body();
        match (route, method) {
            (Route::Base, _) if get => Ok(builder(StatusCode::OK)
                .header("Content-Type", "application/json")
                .body(full("{}"))
                .expect("valid response")),
            (Route::Catalog, _) if get => self.catalog(query),
            (Route::Tags(name), _) if get => self.tags(&name, query),
            (Route::Manifest(name, reference), _) if get => {
                self.manifest(&name, &reference, &host, head)
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                self.put_manifest(&name, &reference, &host, content_type.as_deref(), body)
                    .await
            }
            (Route::Manifest(name, reference), Method::DELETE) => {
                self.delete_manifest(&name, &reference)
            }
            (Route::Blob(_, digest), _) if get => self.blob(&digest, range.as_deref(), head).await,
            (Route::Uploads(name), Method::POST) => self.start_upload(&name, query, body).await,
            (Route::Upload(name, id), Method::PATCH) => {
                self.patch_upload(&name, &id, content_range.as_deref(), body)
                    .await
            }
            (Route::Upload(name, id), Method::PUT) => {
                self.finish_upload(&name, &id, query, body).await
            }
            (Route::Upload(name, id), Method::GET) => self.upload_status(&name, &id),
            (Route::Upload(name, id), Method::DELETE) => self.cancel_upload(&name, &id),
            (Route::Referrers(_, digest), Method::GET) => self.referrers(&digest, query),
            (Route::NotFound, _) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not part of the distribution API",
            )),
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "method not supported here",
            )),
        }
    }
}
