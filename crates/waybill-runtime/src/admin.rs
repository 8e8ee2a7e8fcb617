//! `/healthz` (process up), `/readyz` (Kafka reachable and projection
//! caught up) and `/metrics` (Prometheus), served by every service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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
    use std::time::Duration;

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
