//! The load tool's webhook receiver: records, per request, the event id,
//! the `webhook-id` and when it arrived, and answers 200 (or, for a
//! configured share of first attempts, 500 or a TCP reset).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, StatusCode};
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How a failed first attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailWith {
    /// The receiver answers `500`.
    Status500,
    /// The receiver reads the request and resets the connection (RST)
    /// instead of answering, as a crashing proxy or receiver does.
    Reset,
}

/// One request that reached the receiver.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The event's id (from the body).
    pub event_id: String,
    /// The path (one per subscription).
    pub path: String,
    /// `webhook-id`.
    pub webhook_id: String,
    /// When it arrived.
    pub at: Instant,
    /// Whether it was answered 2xx.
    pub accepted: bool,
}

struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    /// Percentage of deliveries whose first attempt fails.
    fail_percent: AtomicU64,
    /// How long it takes to answer, ms (an I/O-bound receiver).
    answer_after_ms: AtomicU64,
    fail_with: FailWith,
    failed_once: Mutex<HashSet<String>>,
}

/// A running receiver; stops when dropped.
pub struct BenchReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for BenchReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl BenchReceiver {
    /// Starts on a free loopback port; `fail_percent` of deliveries get a
    /// 500 on their first attempt.
    pub async fn start(fail_percent: u64) -> std::io::Result<Self> {
        Self::start_with(fail_percent, FailWith::Status500).await
    }

    /// Starts on a free loopback port; `fail_percent` of deliveries fail
    /// their first attempt in the way `fail_with` says.
    pub async fn start_with(fail_percent: u64, fail_with: FailWith) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::with_capacity(100_000)),
            fail_percent: AtomicU64::new(fail_percent),
            answer_after_ms: AtomicU64::new(0),
            fail_with,
            failed_once: Mutex::new(HashSet::new()),
        });
        let app = Router::new()
            .fallback(receive)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<Connection>();
        let listener = Resetting(TcpListener::bind(waybill_receiver::serve::loopback()).await?);
        let addr = listener.0.local_addr()?;
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
        });
        Ok(Self { addr, shared, stop })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers each request `ms` after it arrived (0: at once).
    pub fn set_answer_after_ms(&self, ms: u64) {
        self.shared.answer_after_ms.store(ms, Ordering::Relaxed);
    }

    /// Everything received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// How many requests were failed on purpose (500 or reset).
    pub fn failed(&self) -> usize {
        self.shared
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| !a.accepted)
            .count()
    }

    /// How many requests were answered 2xx.
    pub fn accepted(&self) -> usize {
        self.shared
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.accepted)
            .count()
    }

    /// Changes the share of first attempts answered 500.
    pub fn set_fail_percent(&self, percent: u64) {
        self.shared.fail_percent.store(percent, Ordering::Relaxed);
    }

    /// Forgets what arrived (between workloads).
    pub fn clear(&self) {
        self.shared.arrivals.lock().unwrap().clear();
        self.shared.failed_once.lock().unwrap().clear();
    }
}

#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: String,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let event_id = serde_json::from_slice::<IdOnly>(&body)
        .map(|b| b.id)
        .unwrap_or_default();
    let percent = shared.fail_percent.load(Ordering::Relaxed);
    let fail = percent > 0
        && !webhook_id.is_empty()
        && fnv(&webhook_id) % 100 < percent
        && shared
            .failed_once
            .lock()
            .unwrap()
            .insert(webhook_id.clone());
    shared.arrivals.lock().unwrap().push(Arrival {
        event_id,
        path: uri.path().to_owned(),
        webhook_id,
        at,
        accepted: !fail,
    });
    let delay = shared.answer_after_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if fail && shared.fail_with == FailWith::Reset {
        // The answer is never written: the connection is reset instead.
        connection.0.store(true, Ordering::SeqCst);
    }
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A listener whose connections can be reset by the handler (through
/// [`Connection`]): their sockets linger 0, so closing one sends an RST.
struct Resetting(TcpListener);

/// Handed to the handler: set it to reset this connection instead of
/// writing the answer.
#[derive(Clone, Debug)]
struct Connection(Arc<AtomicBool>);

/// A connection that fails its next write once told to reset.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl axum::serve::Listener for Resetting {
    type Io = ResettableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let reset = Arc::new(AtomicBool::new(false));
                    return (
                        ResettableStream {
                            stream,
                            reset: reset.clone(),
                        },
                        Connection(reset),
                    );
                }
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Connection(Arc::default()))
    }
}

impl Connected<IncomingStream<'_, Resetting>> for Connection {
    fn connect_info(stream: IncomingStream<'_, Resetting>) -> Self {
        stream.remote_addr().clone()
    }
}

impl ResettableStream {
    fn reset_now(&self) -> std::io::Error {
        // Linger 0: the close that follows the error sends an RST.
        let _ = self.stream.set_zero_linger();
        std::io::Error::from(std::io::ErrorKind::ConnectionReset)
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.reset_now()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.reset_now()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A small stable hash (which deliveries fail does not depend on the run).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
