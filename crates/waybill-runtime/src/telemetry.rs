//! Logs and traces.
//!
//! Logs are human-readable by default, JSON with `WAYBILL_LOG_FORMAT=json`
//! (with the `trace_id` and `span_id` of the span they happened in), level
//! from `RUST_LOG` (default `info`).
//!
//! Every stage (ingest request, publish, match, delivery task, attempt) is a
//! `tracing` span and an OpenTelemetry span. The W3C trace context travels in
//! the `traceparent` header of each Kafka record and of the webhook request,
//! so one trace goes from the producer to the receiver. Spans are exported
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//! set; the standard `OTEL_*` variables apply (protocol `grpc` or
//! `http/protobuf`, headers, timeout, service name, resource attributes,
//! sampler and its ratio, batch settings, `OTEL_SDK_DISABLED`).

use std::fmt;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};
use waybill_core::trace::TraceParent;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// From the value of `WAYBILL_LOG_FORMAT` (unset = human).
    pub fn from_env_value(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("human") | Some("text") => Ok(Self::Human),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "WAYBILL_LOG_FORMAT must be `human` or `json`, not `{other}`"
            )),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (usually port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (usually port 4318).
    HttpProtobuf,
}

/// Whether and how spans are exported, from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The transport.
    pub protocol: Protocol,
}

impl Export {
    /// Reads the standard variables through `var`: `None` when no OTLP
    /// endpoint is set, or export is turned off (`OTEL_SDK_DISABLED=true`,
    /// `OTEL_TRACES_EXPORTER=none`). The endpoint, headers, timeout and
    /// compression are read by the exporter itself.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER must be `otlp` or `none`, not `{other}`"
                ));
            }
        }
        if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL must be `grpc` or `http/protobuf`, not `{other}`"
                ));
            }
        };
        Ok(Some(Self { protocol }))
    }
}

/// The installed tracing pipeline; [`Telemetry::shutdown`] flushes the
/// spans not exported yet.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if self.exporting
            && let Err(e) = self.provider.shutdown()
        {
            tracing::warn!(error = %e, "cannot flush the last spans");
        }
    }
}

/// Installs logging and trace propagation without exporting spans (tests,
/// embedding). See [`init_with_export`].
pub fn init(format: LogFormat, filter: Option<&str>) -> Telemetry {
    let provider = SdkTracerProvider::builder().build();
    install(format, filter, &provider);
    Telemetry {
        provider,
        exporting: false,
    }
}

/// Installs logging, trace propagation and, if `export` says so, the OTLP
/// exporter for `service_name` (unless `OTEL_SERVICE_NAME` names it).
/// Must run inside the Tokio runtime (the exporters use it). A subscriber
/// already installed is kept.
pub fn init_with_export(
    format: LogFormat,
    filter: Option<&str>,
    export: Option<&Export>,
    service_name: &str,
) -> Result<Telemetry, String> {
    let Some(export) = export else {
        return Ok(init(format, filter));
    };
    let exporter = match export.protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(OtlpHttpClient::new()?)
            .build(),
    }
    .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(
            resource
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    install(format, filter, &provider);
    Ok(Telemetry {
        provider,
        exporting: true,
    })
}

/// Spans of Waybill's own crates are always traced (whatever `RUST_LOG`
/// says, so the trace context always travels); `RUST_LOG` only decides
/// what is logged.
fn install(format: LogFormat, filter: Option<&str>, provider: &SdkTracerProvider) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let traced = Targets::new().with_target("waybill", tracing::Level::INFO);
    // Parents come from the tracing span tree, not from OpenTelemetry's
    // thread-local context, which is attached on every span entry (work on
    // every poll) and is the likely cause of a webhook attempt seen once in
    // CI, under load, starting a trace of its own instead of continuing
    // its task's. Waybill uses no other OpenTelemetry instrumentation that
    // would need that context.
    let otel = tracing_opentelemetry::layer()
        .with_context_activation(false)
        .with_tracer(provider.tracer("waybill"))
        .with_location(false)
        .with_threads(false)
        .with_filter(traced);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ))
            .boxed(),
    };
    // A subscriber already installed (tests) is fine.
    drop(
        Registry::default()
            .with(otel)
            .with(fmt.with_filter(filter))
            .try_init(),
    );
}

/// Prefixes each JSON line with the `trace_id` and `span_id` of the span
/// it was logged in.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span = cx.span();
            let context = span.span_context();
            context
                .is_valid()
                .then(|| (context.trace_id(), context.span_id()))
        });
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest)) if !rest.starts_with('}') => {
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Makes `parent` (a remote context, from a record or request header) the
/// parent of `span`, which must not have been entered yet. Without one the
/// span starts a trace (or continues the current one).
pub fn adopt(span: &Span, parent: Option<&TraceParent>) {
    if let Some(parent) = parent {
        let context = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            parent
                .state
                .as_deref()
                .and_then(|state| state.parse::<TraceState>().ok())
                .unwrap_or_default(),
        );
        drop(span.set_parent(opentelemetry::Context::new().with_remote_span_context(context)));
    }
}

/// The context to pass on from `span` (in a record header or the webhook
/// request). Without a tracing pipeline (no subscriber, span disabled) it
/// continues `parent`, or starts a trace.
pub fn propagate(span: &Span, parent: Option<&TraceParent>) -> TraceParent {
    let cx = span.context();
    let otel = cx.span();
    let context = otel.span_context();
    if context.is_valid() {
        let state = context.trace_state().header();
        return TraceParent {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8(),
            state: (!state.is_empty()).then(|| state.into()),
        };
    }
    parent.map_or_else(TraceParent::new_root, TraceParent::child)
}

/// OTLP/HTTP client: the service's reqwest (rustls) on the Tokio runtime;
/// the batch exporter's own thread waits for the answer.
#[derive(Debug)]
struct OtlpHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl OtlpHttpClient {
    fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the OTLP exporter must be set up inside the runtime".to_owned())?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let answer = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = answer.await??;
        let mut response = opentelemetry_http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn export_only_with_an_endpoint() {
        assert_eq!(Export::from_env(env(&[])), Ok(None));
        let http = Some(Export {
            protocol: Protocol::HttpProtobuf,
        });
        assert_eq!(
            Export::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Ok(http.clone())
        );
        assert_eq!(
            Export::from_env(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318"
            )])),
            Ok(http)
        );
        assert_eq!(
            Export::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])),
            Ok(Some(Export {
                protocol: Protocol::Grpc
            }))
        );
        // The traces-specific protocol wins.
        assert_eq!(
            Export::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])),
            Ok(Some(Export {
                protocol: Protocol::Grpc
            }))
        );
    }

    #[test]
    fn export_turned_off_or_misconfigured() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            Export::from_env(env(&[endpoint, ("OTEL_SDK_DISABLED", "true")])),
            Ok(None)
        );
        assert_eq!(
            Export::from_env(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])),
            Ok(None)
        );
        let err = Export::from_env(env(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap_err();
        assert!(err.contains("`grpc` or `http/protobuf`"), "{err}");
        let err =
            Export::from_env(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(err.contains("OTEL_TRACES_EXPORTER"), "{err}");
    }

    #[test]
    fn propagate_without_a_pipeline_continues_the_parent() {
        let parent = TraceParent::new_root();
        let span = Span::none();
        adopt(&span, Some(&parent));
        let next = propagate(&span, Some(&parent));
        assert_eq!(next.trace_id, parent.trace_id);
        assert_ne!(next.span_id, parent.span_id);
    }

    #[test]
    fn spans_adopt_remote_parents_and_propagate_their_own_context() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let parent =
                TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .unwrap();
            let span = tracing::info_span!("stage");
            adopt(&span, Some(&parent));
            let own = propagate(&span, Some(&parent));
            assert_eq!(own.trace_id, parent.trace_id);
            assert_ne!(own.span_id, parent.span_id);
            assert_eq!(own.flags, 1);
            // A child span continues the same trace with its own id.
            let child = span.in_scope(|| tracing::info_span!("child"));
            let next = propagate(&child, None);
            assert_eq!(next.trace_id, parent.trace_id);
            assert_ne!(next.span_id, own.span_id);
            // Without a parent, a new trace starts.
            let root = tracing::info_span!("root");
            assert_ne!(propagate(&root, None).trace_id, parent.trace_id);
        });
    }
}
