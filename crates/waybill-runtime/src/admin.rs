//! `/healthz` (process up), `/readyz` (Kafka reachable and projection
//! caught up) and `/metrics` (Prometheus), served by every service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness of a service: raised once its projections are loaded, and
/// lowered while its subscription projection cannot confirm it is current
/// (Kafka unreachable, or far behind).
#[derive(Debug, Clone)]
pub struct Readiness {
    loaded: Arc<AtomicBool>,
    current: Arc<AtomicBool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            loaded: Arc::new(AtomicBool::new(false)),
            current: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Readiness {
    /// Marks the service's projections loaded (or not).
    pub fn set(&self, loaded: bool) {
        self.loaded.store(loaded, Ordering::SeqCst);
    }

    /// Records whether the subscription projection is known to be current;
    /// logs the changes.
    pub fn set_current(&self, current: bool) {
        let was = self.current.swap(current, Ordering::SeqCst);
        match (was, current) {
            (true, false) => tracing::warn!(
                "not ready: the subscription projection cannot confirm it is current (is Kafka reachable?)"
            ),
            (false, true) => tracing::info!("ready again: the subscription projection is current"),
            _ => {}
        }
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst) && self.current.load(Ordering::SeqCst)
    }
}

/// The admin routes.
pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(axum::http::header::CONTENT_TYPE, OPENMETRICS)], text) }
            }),
        )
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

/// Longest time a client may take to send a request's headers: a client
/// trickling them (slowloris) is disconnected instead of holding a
/// connection and its task forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for open connections to finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` (HTTP/1.1 and HTTP/2),
/// with [`HEADER_READ_TIMEOUT`]; at shutdown, stops accepting and lets open
/// connections finish their requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another header read timeout.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

/// Serves the admin routes on `listener` in the background until `shutdown`;
/// returns the flag to raise once the service is ready, and the server task.
pub fn spawn(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> (Readiness, tokio::task::JoinHandle<std::io::Result<()>>) {
    let readiness = Readiness::default();
    let server = tokio::spawn(serve(
        listener,
        router(readiness.clone(), metrics),
        shutdown,
    ));
    (readiness, server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that sends part of its headers and then nothing is
    /// disconnected after the header read timeout; a whole request is served.
    #[tokio::test]
    async fn slow_headers_are_cut_off() {
        const TIMEOUT: Duration = Duration::from_millis(500);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_with(
            listener,
            router(Readiness::default(), Metrics::default()),
            stop.clone(),
            TIMEOUT,
        ));
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 3, slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the connection");
        let waited = started.elapsed();
        assert!(waited >= TIMEOUT && waited < TIMEOUT * 4, "{waited:?}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn ready_when_loaded_and_current() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "not before the load");
        r.set(true);
        assert!(r.is_ready());
        r.set_current(false);
        assert!(!r.is_ready(), "not while the projection is stale");
        r.set_current(true);
        assert!(r.is_ready());
        assert_eq!(
            crate::metrics::stale_after(Duration::from_millis(200)),
            Duration::from_secs(10)
        );
        assert_eq!(
            crate::metrics::stale_after(Duration::from_secs(15)),
            Duration::from_secs(45)
        );
    }
}
