//! An OTLP trace collector for tests: accepts OTLP/HTTP (`POST /v1/traces`,
//! protobuf) and OTLP/gRPC (the `TraceService/Export` call over HTTP/2) on
//! the same port, plain or gzip-compressed, in clear text or over TLS
//! (optionally asking for a client certificate), decodes the spans and
//! keeps them for assertions.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// Span name.
    pub name: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, 16 hex digits, or `""` for a root.
    pub parent_span_id: String,
    /// `server`, `client`, `producer`, `consumer`, `internal`.
    pub kind: &'static str,
    /// Span attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// Attributes of the resource (the service) that exported it.
    pub resource: BTreeMap<String, String>,
    /// How it arrived: `http` or `grpc`.
    pub protocol: &'static str,
    /// How its request was compressed: `gzip` or `identity`.
    pub encoding: &'static str,
}

impl CollectedSpan {
    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running collector; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    tls: bool,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    stop: CancellationToken,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Collector {
    /// Starts a collector on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = routes(spans.clone());
        let (addr, stop) = crate::serve::spawn(crate::serve::loopback(), app).await?;
        Ok(Self {
            addr,
            tls: false,
            spans,
            stop,
        })
    }

    /// Starts a collector on a free loopback port that speaks only TLS,
    /// with `ca`'s server certificate; with `client_auth` it also asks for
    /// a client certificate of `ca`.
    pub async fn start_tls(ca: &crate::tls::TestCa, client_auth: bool) -> std::io::Result<Self> {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = routes(spans.clone());
        let (addr, stop) =
            crate::tls::spawn(crate::serve::loopback(), app, ca.server_config(client_auth)).await?;
        Ok(Self {
            addr,
            tls: true,
            spans,
            stop,
        })
    }

    /// The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT` (either protocol).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans of `trace_id` satisfy `done`; returns them.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Result<Vec<CollectedSpan>, Vec<CollectedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<CollectedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                return Err(spans);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn routes(spans: Arc<Mutex<Vec<CollectedSpan>>>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            post(export_grpc),
        )
        .with_state(spans)
}

/// The body as sent, decompressed if `encoding` says so.
fn decompress(encoding: Option<&str>, body: &[u8]) -> Result<(Vec<u8>, &'static str), String> {
    match encoding.map(str::trim) {
        None | Some("identity") => Ok((body.to_vec(), "identity")),
        Some("gzip") => {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut plain)
                .map_err(|e| format!("not gzip: {e}"))?;
            Ok((plain, "gzip"))
        }
        Some(other) => Err(format!("unknown encoding {other}")),
    }
}

async fn export(
    State(spans): State<Arc<Mutex<Vec<CollectedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let (body, encoding) = match decompress(encoding, &body) {
        Ok(plain) => plain,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    keep(&spans, request, "http", encoding);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// A unary gRPC call: one length-prefixed message in (compressed when its
/// flag says so, by the call's `grpc-encoding`), one out, and the status
/// in the trailers.
async fn export_grpc(
    State(spans): State<Arc<Mutex<Vec<CollectedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let (compressed, message) = match body.as_ref() {
        [flag @ (0 | 1), a, b, c, d, rest @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            (*flag == 1, rest)
        }
        _ => return grpc_answer(Vec::new(), 3, "expected one length-prefixed message"),
    };
    let encoding = compressed
        .then(|| headers.get("grpc-encoding").and_then(|v| v.to_str().ok()))
        .flatten();
    if compressed && encoding.is_none() {
        return grpc_answer(Vec::new(), 13, "a compressed message without grpc-encoding");
    }
    let (message, encoding) = match decompress(encoding, message) {
        Ok(plain) => plain,
        Err(e) => return grpc_answer(Vec::new(), 12, &e),
    };
    let Ok(request) = ExportTraceServiceRequest::decode(message.as_slice()) else {
        return grpc_answer(Vec::new(), 3, "not an ExportTraceServiceRequest");
    };
    keep(&spans, request, "grpc", encoding);
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
    framed.extend_from_slice(&reply);
    grpc_answer(framed, 0, "")
}

fn grpc_answer(body: Vec<u8>, status: u8, message: &str) -> axum::response::Response {
    let mut trailers = axum::http::HeaderMap::new();
    trailers.insert("grpc-status", u16::from(status).into());
    if let Ok(message) = message.parse() {
        trailers.insert("grpc-message", message);
    }
    let body = http_body_util::StreamBody::new(futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(body))),
        Ok(http_body::Frame::trailers(trailers)),
    ]));
    (
        [(header::CONTENT_TYPE, "application/grpc")],
        axum::body::Body::new(body),
    )
        .into_response()
}

fn keep(
    spans: &Mutex<Vec<CollectedSpan>>,
    request: ExportTraceServiceRequest,
    protocol: &'static str,
    encoding: &'static str,
) {
    let mut collected = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                collected.push(CollectedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: match span.kind {
                        1 => "internal",
                        2 => "server",
                        3 => "client",
                        4 => "producer",
                        5 => "consumer",
                        _ => "unspecified",
                    },
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    protocol,
                    encoding,
                });
            }
        }
    }
    spans.lock().unwrap().extend(collected);
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
