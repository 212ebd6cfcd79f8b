//! The daemon's operations endpoint: `/metrics` (Prometheus text, see
//! `crate::metrics`, plus the store's blob count and bytes), `/healthz`
//! (the process answers) and `/readyz` (config loaded, store open, the
//! scheduler running). Plain HTTP/1.1; it serves nothing else.

use super::http::{builder, full, Body};
use crate::store::Store;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serve the endpoint on `listener` until `shutdown` completes. `ready` is
/// set while the scheduler runs.
pub async fn run(
    listener: tokio::net::TcpListener,
    store: Store,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let store = store.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let store = store.clone();
                let ready = ready.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &store, &ready).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: &Request<Incoming>, store: &Store, ready: &AtomicBool) -> Response<Body> {
    let text = |status: StatusCode, body: String| {
        builder(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(full(body))
            .expect("valid response")
    };
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the scheduler is not running\n".into(),
        ),
        "/metrics" => {
            let store = store.clone();
            let totals = tokio::task::spawn_blocking(move || store.blob_totals().ok())
                .await
                .ok()
                .flatten();
            builder(StatusCode::OK)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(full(crate::metrics::render(totals)))
                .expect("valid response")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "only /metrics, /healthz and /readyz are here\n".into(),
        ),
    }
}
