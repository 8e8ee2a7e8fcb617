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
//! `http/protobuf`, headers, timeout, compression `gzip`, service name,
//! resource attributes, sampler and its ratio, batch settings,
//! `OTEL_SDK_DISABLED`). An `https://` endpoint is reached over TLS, both
//! protocols, verified against the public web roots or the CA file of
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, with the client certificate of
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `..._CLIENT_KEY` when the
//! collector asks for one (each also as `OTEL_EXPORTER_OTLP_TRACES_*`).

use std::fmt;
use std::path::PathBuf;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::EnvFilter;
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
    /// How the collector is reached over TLS; `None` for an `http://`
    /// endpoint.
    pub tls: Option<Tls>,
}

/// TLS to the collector: whom to trust, and who we are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// A PEM file of the CA certificates that verify the collector; the
    /// public web roots without one.
    pub ca_certificate: Option<PathBuf>,
    /// A PEM certificate and its PEM private key, presented when the
    /// collector asks for a client certificate.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    /// The files read: the CA certificates and the client's certificate
    /// and key, each checked to be PEM of the right kind.
    fn read(&self) -> Result<TlsMaterial, String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the OTLP {what} {}: {e}", path.display()))
        };
        let ca = self
            .ca_certificate
            .as_ref()
            .map(|path| {
                let pem = read(path, "CA certificate file")?;
                if !contains_pem(&pem, "CERTIFICATE") {
                    return Err(format!(
                        "the OTLP CA certificate file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                Ok(pem)
            })
            .transpose()?;
        let identity = self
            .client_identity
            .as_ref()
            .map(|(cert_path, key_path)| {
                let cert = read(cert_path, "client certificate")?;
                let key = read(key_path, "client key")?;
                if !contains_pem(&cert, "CERTIFICATE") {
                    return Err(format!(
                        "the OTLP client certificate {} holds no PEM certificate",
                        cert_path.display()
                    ));
                }
                if !contains_pem(&key, "PRIVATE KEY") {
                    return Err(format!(
                        "the OTLP client key {} holds no PEM private key",
                        key_path.display()
                    ));
                }
                Ok((cert, key))
            })
            .transpose()?;
        Ok(TlsMaterial { ca, identity })
    }
}

/// Whether `pem` has a block whose label ends with `label` (`PRIVATE KEY`
/// matches `RSA PRIVATE KEY` and `EC PRIVATE KEY` too).
fn contains_pem(pem: &[u8], label: &str) -> bool {
    String::from_utf8_lossy(pem).lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    })
}

/// What [`Tls`] names, read.
struct TlsMaterial {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
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
        let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let either = |name: &str| {
            set(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| set(&format!("OTEL_EXPORTER_OTLP_{name}")))
                .map(|v| PathBuf::from(v.trim()))
        };
        let client_identity = match (either("CLIENT_CERTIFICATE"), either("CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                     OTEL_EXPORTER_OTLP_CLIENT_KEY go together: set both or neither"
                    .to_owned());
            }
        };
        let https = endpoint
            .trim()
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let tls = https.then(|| Tls {
            ca_certificate: either("CERTIFICATE"),
            client_identity,
        });
        match set("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
            .or_else(|| set("OTEL_EXPORTER_OTLP_COMPRESSION"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("gzip") | Some("none") => {}
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_COMPRESSION must be `gzip` or `none`, not `{other}`"
                ));
            }
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
        Ok(Some(Self { protocol, tls }))
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
    let tls = export.tls.as_ref().map(Tls::read).transpose()?;
    let exporter = match export.protocol {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match tls {
                Some(tls) => builder.with_tls_config(grpc_tls(tls)),
                None => builder,
            }
            .build()
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(OtlpHttpClient::new(tls)?)
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
    drop(subscriber(provider.tracer("waybill"), fmt, filter).try_init());
}

/// The registry with the OpenTelemetry layer (Waybill's spans at `INFO`
/// and above) and the log layer (what `filter` enables).
///
/// Both filters are per layer, and tracing-subscriber keeps which of them
/// enabled a callsite in a thread-local map, set by `enabled()` and
/// consumed by the span or event that follows. `tracing::enabled!` (which
/// rdkafka calls whenever a client is configured) sets it with nothing to
/// consume it, and a callsite whose interest is cached as `always` is
/// created without asking the filters again: the next span on that thread
/// used the stale map and was hidden from OpenTelemetry (an API request
/// or a webhook attempt, seen in CI, then started a trace of its own). The
/// traced filter is therefore dynamic (`Interest::sometimes`), so every
/// callsite asks both filters each time and the map is always fresh.
fn subscriber(
    tracer: opentelemetry_sdk::trace::SdkTracer,
    logs: Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>,
    filter: EnvFilter,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a> {
    // Parents come from the tracing span tree, not from OpenTelemetry's
    // thread-local context, which is attached on every span entry (work on
    // every poll). Waybill uses no other OpenTelemetry instrumentation that
    // would need that context.
    let otel = tracing_opentelemetry::layer()
        .with_context_activation(false)
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(Traced);
    Registry::default()
        .with(logs.with_filter(filter))
        .with(otel)
}

/// Waybill's own spans and events at `INFO` and above, decided on every
/// call (see [`subscriber`] for why it is never cached).
struct Traced;

impl<S> tracing_subscriber::layer::Filter<S> for Traced {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        traced(meta)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if traced(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

fn traced(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO && meta.target().starts_with("waybill")
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

/// The gRPC channel's TLS: the CA file's certificates, or the public web
/// roots, and the client certificate if one is configured.
fn grpc_tls(tls: TlsMaterial) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let config = match tls.ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    match tls.identity {
        Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
        None => config,
    }
}

/// OTLP/HTTP client: the service's reqwest (rustls) on the Tokio runtime;
/// the batch exporter's own thread waits for the answer.
#[derive(Debug)]
struct OtlpHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl OtlpHttpClient {
    fn new(tls: Option<TlsMaterial>) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the OTLP exporter must be set up inside the runtime".to_owned())?;
        let mut client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = tls {
            if let Some(ca) = tls.ca {
                let certificates = reqwest::Certificate::from_pem_bundle(&ca)
                    .map_err(|e| format!("the OTLP CA certificate file is not PEM: {e}"))?;
                client = client.tls_built_in_root_certs(false);
                for certificate in certificates {
                    client = client.add_root_certificate(certificate);
                }
            }
            if let Some((mut cert, key)) = tls.identity {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                let identity = reqwest::Identity::from_pem(&cert).map_err(|e| {
                    format!("the OTLP client certificate or key is not usable: {e}")
                })?;
                client = client.identity(identity);
            }
        }
        let client = client
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
            tls: None,
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
                protocol: Protocol::Grpc,
                tls: None,
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
                protocol: Protocol::Grpc,
                tls: None,
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
    fn an_https_endpoint_is_reached_over_tls() {
        let tls = |pairs: &[(&str, &str)]| Export::from_env(env(pairs)).map(|e| e.unwrap().tls);
        // http:// has no TLS, whatever else is set.
        assert_eq!(
            tls(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ]),
            Ok(None)
        );
        // https:// with the public roots, or a CA file and a client pair.
        assert_eq!(
            tls(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "HTTPS://c:4317")]),
            Ok(Some(Tls::default()))
        );
        assert_eq!(
            tls(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces-ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/me.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/me-key.pem"),
            ]),
            Ok(Some(Tls {
                ca_certificate: Some("/traces-ca.pem".into()),
                client_identity: Some(("/me.pem".into(), "/me-key.pem".into())),
            }))
        );
        let err = tls(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/me.pem"),
        ])
        .unwrap_err();
        assert!(err.contains("set both or neither"), "{err}");
    }

    #[test]
    fn compression_is_gzip_or_none() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        for ok in ["gzip", "none"] {
            let set = [endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", ok)];
            assert!(Export::from_env(env(&set)).is_ok(), "{ok}");
        }
        let err = Export::from_env(env(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
        ]))
        .unwrap_err();
        assert!(err.contains("`gzip` or `none`, not `zstd`"), "{err}");
    }

    #[test]
    fn tls_files_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let read = |ca: &std::path::Path, c: &std::path::Path, k: &std::path::Path| {
            Tls {
                ca_certificate: Some(ca.to_owned()),
                client_identity: Some((c.to_owned(), k.to_owned())),
            }
            .read()
            .map(|_| ())
        };
        assert_eq!(read(&cert, &cert, &key), Ok(()));
        let missing = dir.join("missing.pem");
        let err = read(&missing, &cert, &key).unwrap_err();
        assert!(
            err.contains("cannot read the OTLP CA certificate file"),
            "{err}"
        );
        let err = read(&key, &cert, &key).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = read(&cert, &cert, &cert).unwrap_err();
        assert!(err.contains("holds no PEM private key"), "{err}");
    }

    /// rdkafka asks `tracing::enabled!(target: "librdkafka", ..)` whenever
    /// a client is configured: logged by `RUST_LOG=info`, not traced. The
    /// next span on that thread (here an API request and its publish span)
    /// must still be traced, its child in its trace.
    #[test]
    fn a_stray_enabled_check_hides_no_span_from_tracing() {
        let provider = SdkTracerProvider::builder().build();
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .boxed();
        let subscriber = subscriber(provider.tracer("test"), logs, EnvFilter::new("info"));
        tracing::subscriber::with_default(subscriber, || {
            for round in 0..3 {
                let _ = tracing::enabled!(target: "librdkafka", tracing::Level::INFO);
                let request = tracing::info_span!(target: "waybill_ingest", "ingest.request");
                let publish =
                    request.in_scope(|| tracing::info_span!(target: "waybill_ingest", "publish"));
                let request = request.context().span().span_context().clone();
                let publish = publish.context().span().span_context().clone();
                assert!(
                    request.is_valid(),
                    "round {round}: the request is not traced"
                );
                assert_eq!(publish.trace_id(), request.trace_id(), "round {round}");
            }
            // What is not Waybill's is not traced.
            let other = tracing::info_span!(target: "hyper", "connect");
            assert!(!other.context().span().span_context().is_valid());
        });
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
