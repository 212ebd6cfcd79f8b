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
pub mod limits;
mod names;
mod read;
mod routes;
mod write;

use crate::store::upload::Upload;
use crate::store::Store;
use crate::types::Digest;
use http::{builder, full, ApiError, Body};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
pub use limits::Limits;
use routes::{route, valid_name, Route};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How `ferry serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// The registry name pushes are stored under (default: `addr` as given).
    pub name: Option<String>,
    /// Refuse pushes and deletes.
    pub read_only: bool,
    /// Users allowed in (everything then needs a login).
    pub htpasswd: Option<PathBuf>,
    /// Certificate chain and key (PEM) for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Let anyone push (without `htpasswd`).
    pub allow_anonymous_push: bool,
    /// An upload idle this long is dropped (its bytes deleted), and a
    /// finished blob stays protected this long for its manifest.
    pub upload_timeout: Duration,
    /// Connection, session and size bounds.
    pub limits: Limits,
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
    /// The stored repository it uploads into.
    repository: names::Repo,
    client: IpAddr,
    upload: Upload,
    touched: Instant,
}

/// Most finished-but-unreferenced uploads remembered at once.
const MAX_PENDING: usize = 65_536;

/// The server's state.
pub struct Server {
    store: Store,
    read_only: bool,
    auth: Option<Arc<auth::Htpasswd>>,
    anonymous_push: bool,
    upload_timeout: Duration,
    limits: Limits,
    /// The registry name pushes are stored under.
    name: String,
    sessions: Mutex<HashMap<String, Session>>,
    /// Blobs uploaded (or mounted) into a repository and not yet
    /// referenced there, with when: they are in its scope until then.
    pending: Mutex<HashMap<names::Repo, HashMap<Digest, Instant>>>,
    /// The newest reading of `index.json`.
    view: Mutex<Option<Arc<names::IndexView>>>,
    manifests: read::ManifestCache,
}

/// A bound, ready server.
pub struct Listening {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The registry name pushes are stored under.
    pub name: String,
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    server: Arc<Server>,
}

/// Bind the address and read the auth and TLS files: every configuration
/// error shows before the first request.
pub async fn bind(store: Store, options: &ServeOptions) -> Result<Listening, ServeError> {
    let budget = options.limits.descriptor_budget();
    if budget.limit < budget.needed {
        tracing::warn!(
            "the descriptor limit is {}, below the {} the bounds can use at once (one per connection and per upload session holding bytes, plus {} for the store); past it the server pauses accepting: raise it (LimitNOFILE= in systemd, ulimit -n) or lower --max-connections / --max-uploads",
            budget.limit,
            budget.needed,
            budget.needed - (options.limits.max_connections + options.limits.max_uploads) as u64
        );
    }
    let auth = match &options.htpasswd {
        Some(path) => Some(Arc::new(
            auth::Htpasswd::read(path).map_err(ServeError::Config)?,
        )),
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
    // The name defaults to the address as given (a port of 0 becomes the
    // port bound).
    let name = match &options.name {
        Some(name) => name.clone(),
        None => match options.addr.strip_suffix(":0") {
            Some(host) => format!("{host}:{}", addr.port()),
            None => options.addr.clone(),
        },
    };
    names::valid_own_name(&name).map_err(|e| {
        ServeError::Config(match options.name {
            Some(_) => e,
            None => format!("{e}; choose the name pushes are stored under with --name"),
        })
    })?;
    let store = store
        .with_protection(options.upload_timeout)
        .with_lock_wait(options.limits.lock_wait);
    let server = Server {
        store,
        read_only: options.read_only,
        auth,
        anonymous_push: options.allow_anonymous_push,
        upload_timeout: options.upload_timeout,
        limits: options.limits.clone(),
        name: name.clone(),
        sessions: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        view: Mutex::new(None),
        manifests: read::ManifestCache::default(),
    };
    Ok(Listening {
        addr,
        tls: acceptor.is_some(),
        name,
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
    /// concurrently, at most `max_connections` at once (the rest wait in
    /// the kernel's backlog); one client's error never affects another.
    /// Expired uploads are dropped by a timer; SIGHUP re-reads the
    /// htpasswd file.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Listening {
            listener,
            acceptor,
            server,
            ..
        } = self;
        let connections = Arc::new(tokio::sync::Semaphore::new(
            server.limits.max_connections.max(1),
        ));
        let housekeeping = tokio::spawn(housekeeping(server.clone()));
        tokio::pin!(shutdown);
        let mut backoff = limits::AcceptBackoff::new();
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff.reset();
                    pair
                }
                Err(error) => {
                    let pause = backoff.failed(&error);
                    drop(permit);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(
                server.clone(),
                acceptor.clone(),
                stream,
                peer,
                permit,
            ));
        }
        housekeeping.abort();
    }
}

/// One client connection: TLS within the header timeout, then HTTP/1.1
/// with header and idle timeouts.
async fn connection(
    server: Arc<Server>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let limits = server.limits.clone();
    let stream = limits::IdleIo::new(stream, limits.idle_timeout);
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(server.handle(request, peer.ip()).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let result = match acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {error}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake took too long");
                    return;
                }
            }
        }
        None => {
            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, "connection ended: {error}");
    }
}

/// Drop expired uploads on a timer (not only when a request comes), delete
/// expired gc protections once a minute, and re-read the htpasswd file on
/// SIGHUP or when it changes.
async fn housekeeping(server: Arc<Server>) {
    let every =
        (server.upload_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_sweep = Instant::now();
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                let server = server.clone();
                let sweep = last_sweep.elapsed() >= Duration::from_secs(60);
                if sweep {
                    last_sweep = Instant::now();
                }
                let _ = tokio::task::spawn_blocking(move || {
                    server.expire();
                    if sweep {
                        server.store.sweep_expired_protections();
                    }
                    if let Some(auth) = &server.auth {
                        auth.reload_if_changed();
                    }
                })
                .await;
            }
            _ = hup => {
                if let Some(auth) = &server.auth {
                    match auth.reload() {
                        Ok(()) => tracing::info!("SIGHUP: re-read the htpasswd file"),
                        Err(error) => tracing::warn!("SIGHUP: {error}; the previous users stay"),
                    }
                }
            }
        }
    }
}

fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Server {
    /// Drop upload sessions idle past the timeout (their files go with
    /// them), and forget finished uploads whose protection has expired.
    fn expire(&self) {
        let timeout = self.upload_timeout;
        let expired: Vec<Session> = {
            let mut sessions = self.sessions.lock().expect("sessions");
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.touched.elapsed() >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        // Deleting their files happens outside the table's lock.
        drop(expired);
        let mut pending = self.pending.lock().expect("pending");
        for blobs in pending.values_mut() {
            blobs.retain(|_, since| since.elapsed() < timeout);
        }
        pending.retain(|_, blobs| !blobs.is_empty());
    }

    /// Remember that `digest` was uploaded into `repo`.
    fn add_pending(&self, repo: &names::Repo, digest: &Digest) -> Result<(), ApiError> {
        let mut pending = self.pending.lock().expect("pending");
        let total: usize = pending.values().map(HashMap::len).sum();
        if total >= MAX_PENDING {
            return Err(ApiError::too_many(
                "too many finished uploads wait for their manifests; push the manifests, or wait for --upload-timeout",
            ));
        }
        pending
            .entry(repo.clone())
            .or_default()
            .insert(digest.clone(), Instant::now());
        Ok(())
    }

    /// Whether `digest` was uploaded into `repo` and is still waiting.
    fn is_pending(&self, repo: &names::Repo, digest: &Digest) -> bool {
        self.pending
            .lock()
            .expect("pending")
            .get(repo)
            .and_then(|blobs| blobs.get(digest))
            .is_some_and(|since| since.elapsed() < self.upload_timeout)
    }

    /// The store's index as a view: the cached one while `index.json` is
    /// unchanged (one `stat` per request), else read again off the async
    /// threads.
    async fn index(&self) -> Result<Arc<names::IndexView>, ApiError> {
        let id = names::IndexId::of(&self.store);
        if let Some(view) = self.view.lock().expect("view").as_ref() {
            if id.is_some() && view.id == id {
                return Ok(view.clone());
            }
        }
        let store = self.store.clone();
        let view = tokio::task::spawn_blocking(move || {
            let id = names::IndexId::of(&store);
            match crate::store::index::read_index(&store) {
                Ok(entries) => Ok(names::IndexView::new(entries, id)),
                // A store whose index is gone (deleted under us) holds nothing.
                Err(crate::store::StoreError::Io { ref source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(names::IndexView::new(Vec::new(), None))
                }
                Err(error) => Err(error),
            }
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
        let view = Arc::new(view);
        *self.view.lock().expect("view") = Some(view.clone());
        Ok(view)
    }

    /// Drop the cached view after this server changed the index (its
    /// identity alone could repeat within a file system's time step).
    fn forget_view(&self) {
        *self.view.lock().expect("view") = None;
    }

    /// The stored repository a read of `path` means, the index, and the
    /// digests that repository may show.
    async fn readable(&self, path: &str) -> Result<Readable, ApiError> {
        let view = self.index().await?;
        let repo = view.resolve(&self.name, path)?;
        self.readable_repo(view, repo).await
    }

    /// `repo` with its scope in `view` (worked out off the async threads
    /// when not cached).
    async fn readable_repo(
        &self,
        view: Arc<names::IndexView>,
        repo: names::Repo,
    ) -> Result<Readable, ApiError> {
        let scope = match view.cached_scope(&repo) {
            Some(scope) => scope,
            None => {
                let (store, view, repo) = (self.store.clone(), view.clone(), repo.clone());
                tokio::task::spawn_blocking(move || view.scope(&store, &repo))
                    .await
                    .map_err(ApiError::internal)?
            }
        };
        Ok(Readable { repo, view, scope })
    }

    /// Whether `repo` may show `digest`.
    fn visible(&self, readable: &Readable, digest: &Digest) -> bool {
        readable.scope.contains_key(digest) || self.is_pending(&readable.repo, digest)
    }

    async fn handle(&self, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let head = request.method() == Method::HEAD;
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = match self.dispatch(request, peer).await {
            Ok(response) => response,
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::warn!("{method} {path}: {}", error.detail());
                }
                error.response(head)
            }
        };
        tracing::debug!("{method} {path} {}", response.status().as_u16());
        response
    }

    async fn dispatch(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method().clone();
        let writes = matches!(
            method,
            Method::PUT | Method::POST | Method::PATCH | Method::DELETE
        );
        if let Some(auth) = &self.auth {
            match auth.check(header(&request, "authorization"), peer).await {
                auth::Verdict::Allowed => {}
                auth::Verdict::Denied => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "authentication required",
                    ))
                }
                auth::Verdict::Throttled { retry_after } => {
                    return Err(ApiError::too_many(
                        "too many failed logins from this address; wait and try again",
                    )
                    .retry_after(retry_after))
                }
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
        let content_type = header(&request, "content-type").map(str::to_owned);
        let content_range = header(&request, "content-range").map(str::to_owned);
        let content_length = header(&request, "content-length").and_then(|v| v.parse::<u64>().ok());
        let range = header(&request, "range").map(str::to_owned);
        let head = method == Method::HEAD;
        let get = method == Method::GET || head;
        let body = request.into_body();
        match (route, method) {
            (Route::Base, _) if get => Ok(builder(StatusCode::OK)
                .header("Content-Type", "application/json")
                .body(full("{}"))
                .expect("valid response")),
            (Route::Catalog, _) if get => self.catalog(query).await,
            (Route::Tags(name), _) if get => self.tags(&name, query).await,
            (Route::Manifest(name, reference), _) if get => {
                self.manifest(&name, &reference, head).await
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                self.put_manifest(&name, &reference, content_type.as_deref(), body)
                    .await
            }
            (Route::Manifest(name, reference), Method::DELETE) => {
                self.delete_manifest(&name, &reference).await
            }
            (Route::Blob(name, digest), _) if get => {
                self.blob(&name, &digest, range.as_deref(), head).await
            }
            (Route::Uploads(name), Method::POST) => {
                self.start_upload(&name, query, content_length, body, peer)
                    .await
            }
            (Route::Upload(name, id), Method::PATCH) => {
                self.patch_upload(&name, &id, content_range.as_deref(), content_length, body)
                    .await
            }
            (Route::Upload(name, id), Method::PUT) => {
                self.finish_upload(&name, &id, query, content_length, body)
                    .await
            }
            (Route::Upload(name, id), Method::GET) => self.upload_status(&name, &id),
            (Route::Upload(name, id), Method::DELETE) => self.cancel_upload(&name, &id),
            (Route::Referrers(name, digest), Method::GET) => {
                self.referrers(&name, &digest, query).await
            }
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

/// A repository resolved for reading.
struct Readable {
    repo: names::Repo,
    view: Arc<names::IndexView>,
    scope: Arc<names::Scope>,
}
