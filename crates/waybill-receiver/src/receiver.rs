//! A webhook receiver that records what it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio_util::sync::CancellationToken;
use waybill_core::signing::SigningSecret;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether its Standard Webhooks signature was made with `secret`.
    pub fn signature_valid(&self, secret: &SigningSecret) -> bool {
        let (Some(id), Some(ts), Some(sig)) = (
            self.header("webhook-id"),
            self.header("webhook-timestamp")
                .and_then(|t| t.parse::<i64>().ok()),
            self.header("webhook-signature"),
        ) else {
            return false;
        };
        secret.verify(sig, id, ts, &self.body)
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Called for every request (e.g. to print it).
pub type OnRequest = Arc<dyn Fn(&Received) + Send + Sync>;

/// Picks the status of a request by what it is (`None`: the script's or
/// the default status).
pub type Answer = Arc<dyn Fn(&Received) -> Option<u16> + Send + Sync>;

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Statuses to answer, in order; when exhausted, `default_status`.
    script: Mutex<Vec<u16>>,
    default_status: std::sync::atomic::AtomicU16,
    body: Option<String>,
    answer_headers: Vec<(String, String)>,
    delay: Option<Duration>,
    on_request: Option<OnRequest>,
    answer: Option<Answer>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How a receiver answers.
#[derive(Clone, Default)]
pub struct Options {
    /// Address to bind; default `127.0.0.1:0`.
    pub bind: Option<SocketAddr>,
    /// Statuses for the first requests, in order (e.g. `[500, 500]`).
    pub script: Vec<u16>,
    /// Status after the script (default 200).
    pub default_status: Option<u16>,
    /// JSON body of every answer (default: empty), e.g. to act as an
    /// OAuth2 token endpoint.
    pub body: Option<String>,
    /// Headers of every answer (e.g. `Retry-After`).
    pub answer_headers: Vec<(String, String)>,
    /// How long to wait before answering (a slow or hanging endpoint).
    pub delay: Option<Duration>,
    /// Hook called for every request.
    pub on_request: Option<OnRequest>,
    /// Picks the status of a request by its content, before the script.
    pub answer: Option<Answer>,
}

impl Receiver {
    /// Starts a receiver answering 200 on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::with(Options::default()).await
    }

    /// Starts a receiver with options.
    pub async fn with(options: Options) -> std::io::Result<Self> {
        let bind = options.bind.unwrap_or_else(crate::serve::loopback);
        let mut script = options.script;
        script.reverse();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(script),
            default_status: options.default_status.unwrap_or(200).into(),
            body: options.body,
            answer_headers: options.answer_headers,
            delay: options.delay,
            on_request: options.on_request,
            answer: options.answer,
        });
        let app = Router::new().fallback(record).with_state(shared.clone());
        let (addr, stop) = crate::serve::spawn(bind, app).await?;
        Ok(Self { addr, shared, stop })
    }

    /// Answers every request after the script with `status` from now on
    /// (an endpoint that goes down or comes back).
    pub fn set_status(&self, status: u16) {
        self.shared
            .default_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// Answers the next requests with `statuses`, in order, then the
    /// default status again.
    pub fn script(&self, statuses: &[u16]) {
        let mut script = self.shared.script.lock().expect("receiver script");
        *script = statuses.iter().rev().copied().collect();
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` requests arrived, then returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Received>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "received {} of {n} expected requests within {timeout:?}",
                    got.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let received = Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
    };
    if let Some(hook) = &shared.on_request {
        hook(&received);
    }
    let chosen = shared.answer.as_ref().and_then(|answer| answer(&received));
    shared
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(received);
    let status = chosen.unwrap_or_else(|| {
        shared
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| {
                shared
                    .default_status
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
    });
    if let Some(delay) = shared.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = match &shared.body {
        Some(body) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.clone(),
        )
            .into_response(),
        None => status.into_response(),
    };
    for (name, value) in &shared.answer_headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.as_str()),
            axum::http::HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_answers_as_scripted_and_checks_signatures() {
        let receiver = Receiver::start().await.unwrap();
        receiver.script(&[503]);
        let secret = SigningSecret::generate();
        let body = br#"{"event":"freights.publication.created"}"#;
        let signature = secret.sign("msg_1", 1_700_000_000, body);
        let client = reqwest::Client::new();
        let send = |signature: String| {
            client
                .post(receiver.url("/hook?x=1"))
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", "1700000000")
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send()
        };
        // The script first, then the default 200.
        assert_eq!(send(signature.clone()).await.unwrap().status(), 503);
        assert_eq!(send("v1,AAAA".into()).await.unwrap().status(), 200);
        let got = receiver.wait_for(2, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/hook?x=1");
        assert_eq!(got[0].header("Webhook-Id"), Some("msg_1"));
        assert_eq!(got[0].json()["event"], "freights.publication.created");
        assert!(got[0].signature_valid(&secret));
        assert!(!got[1].signature_valid(&secret));
    }
}
