//! The load tool's webhook receiver: records, per request, the event id,
//! the `webhook-id` and when it arrived, and answers 200 (or, for a
//! configured share of first attempts, 500).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

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
    /// Percentage of deliveries whose first attempt is answered 500.
    fail_percent: AtomicU64,
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
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::with_capacity(100_000)),
            fail_percent: AtomicU64::new(fail_percent),
            failed_once: Mutex::new(HashSet::new()),
        });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let (addr, stop) =
            waybill_testkit::serve::spawn(waybill_testkit::serve::loopback(), app).await?;
        Ok(Self { addr, shared, stop })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().unwrap().clone()
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
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A small stable hash (which deliveries fail does not depend on the run).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
