//! Serving a router in the background, as every test server here does.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// A server running `app` on `bind` (port 0 picks a free one); it stops
/// when the token is cancelled.
pub async fn spawn(
    bind: SocketAddr,
    app: Router,
) -> std::io::Result<(SocketAddr, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    Ok((addr, stop))
}

/// A free port on the loopback interface.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
