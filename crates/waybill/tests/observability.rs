//! What an SRE sees of one event, from the outside: `waybill dev` runs as
//! its own process with OTLP export to an in-test collector and JSON logs at
//! debug level. One event, posted with the producer's `traceparent` (and a
//! vendor's `tracestate`, passed on to the receivers untouched), reaches
//! five subscriptions (every auth type). Then:
//!
//! - the collector holds ONE trace: ingest request → publish → match →
//!   delivery task → delivery attempt, each the parent of the next, and the
//!   receiver's `traceparent` names the attempt as its parent;
//! - the JSON log lines written inside those spans carry their trace and
//!   span ids;
//! - no credential, signing secret, API key, operator token or encryption
//!   key appears anywhere in the logs.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use waybill_core::sealing::Keyring;
use waybill_core::trace::TraceParent;
use waybill_testkit::api::Api;
use waybill_testkit::otlp::{CollectedSpan, Collector};
use waybill_testkit::receiver::{Options, Receiver};
use waybill_testkit::tls::TestCa;

const WAIT: Duration = Duration::from_secs(30);
const API_KEY: &str = "wb_observability_key_5f1c2d0a1b2c";
const OPERATOR_TOKEN: &str = "wbop_observability_operator_8a7e";

/// At most two `waybill dev` processes of this file at once: five at once
/// on a 2-core machine (with the other test binaries' work) slowed
/// deliveries past the tests' waits.
async fn slot() -> tokio::sync::SemaphorePermit<'static> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| tokio::sync::Semaphore::new(2))
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

fn one<'a>(spans: &'a [CollectedSpan], name: &str) -> &'a CollectedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span expected: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_producer_to_receiver_and_no_secret_in_logs() {
    /// A vendor's entries, to be passed on untouched.
    const PRODUCER_STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    waybill_testkit::wait::watchdog(Duration::from_secs(240));
    let _slot = slot().await;
    let collector = Collector::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let encryption_key = Keyring::generate_key();
    let config = dir.path().join("waybill.toml");
    std::fs::write(
        &config,
        format!(
            "[secrets]\ncurrent_key_id = \"obs\"\nkeys = {{ obs = \"{encryption_key}\" }}\n\
             [ingest]\noperator_token = \"{OPERATOR_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let (child, base) = spawn_dev(
        &config,
        &stderr_path,
        &[
            ("WAYBILL_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci"),
        ],
    );
    let api = Api::new(base, API_KEY);

    // Five subscriptions, one per auth type, each with its own receiver.
    let token_endpoint = Receiver::with(Options {
        body: Some(r#"{"access_token": "oauth-access-token-3c9d", "expires_in": 3600}"#.into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let auths = [
        json!({"type": "none"}),
        json!({"type": "basic", "username": "ops", "password": "basic-password-71b2"}),
        json!({"type": "api_key", "header_name": "X-Partner-Key", "header_value": "header-key-value-44e0"}),
        json!({"type": "bearer", "token": "bearer-token-9f3a"}),
        json!({"type": "oauth2", "token_url": token_endpoint.url("/token"),
               "client_id": "waybill-client", "client_secret": "oauth-client-secret-0d6e",
               "scope": "webhooks"}),
    ];
    let mut receivers = Vec::new();
    let mut subscriptions = Vec::new();
    let mut secrets = vec![
        API_KEY.to_owned(),
        OPERATOR_TOKEN.to_owned(),
        encryption_key.clone(),
        "basic-password-71b2".to_owned(),
        // What the basic credentials look like on the wire.
        "b3BzOmJhc2ljLXBhc3N3b3JkLTcxYjI=".to_owned(),
        "header-key-value-44e0".to_owned(),
        "bearer-token-9f3a".to_owned(),
        "oauth-client-secret-0d6e".to_owned(),
        "oauth-access-token-3c9d".to_owned(),
    ];
    for auth in auths {
        let receiver = Receiver::start().await.unwrap();
        let (status, body) = api
            .post(
                "/v1/subscriptions",
                json!({"url": receiver.url("/hook"), "event_types": ["freights.publication.*"],
                       "auth": auth}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, secret) = api.get(&format!("/v1/subscriptions/{id}/secret")).await;
        assert_eq!(status, 200, "{secret}");
        let secret = secret["signing_secret"].as_str().unwrap().to_owned();
        secrets.push(secret.trim_start_matches("whsec_").to_owned());
        secrets.push(secret);
        subscriptions.push(id);
        receivers.push(receiver);
    }

    // The producer's own span starts the trace.
    let producer = TraceParent::new_root();
    let (status, body) = api
        .call_with(
            reqwest::Method::POST,
            "/v1/events",
            Some(&json!({"event_name": "freights.publication.created",
                         "entity": {"type": "freight", "id": "FR-1"}, "data": {"weight_kg": 900}})),
            &[
                ("traceparent", &producer.to_string()),
                ("tracestate", PRODUCER_STATE),
            ],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let mut outgoing = Vec::new();
    for receiver in &receivers {
        let got = receiver
            .wait_for(1, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}; logs:\n{}", read(&stderr_path)));
        let traceparent = TraceParent::parse(got[0].header("traceparent").unwrap()).unwrap();
        assert_eq!(
            traceparent.trace_id, producer.trace_id,
            "same trace at the receiver"
        );
        assert_eq!(
            got[0].header("tracestate"),
            Some(PRODUCER_STATE),
            "the producer's tracestate is passed on"
        );
        outgoing.push(traceparent);
    }
    assert_eq!(token_endpoint.received().len(), 1);
    assert_eq!(
        receivers[3].received()[0].header("authorization"),
        Some("Bearer bearer-token-9f3a")
    );

    // One trace: request → publish → match → 5 × (task → attempt).
    let trace_id = producer.trace_id_hex();
    let spans = collector
        .wait_for_trace(&trace_id, WAIT, |spans| {
            // A task's span ends after its attempt's (the attempt record is
            // written in between), so wait for both kinds.
            spans.iter().filter(|s| s.name == "POST").count() == 5
                && spans
                    .iter()
                    .filter(|s| s.name == "process deliveries")
                    .count()
                    == 5
                && spans.iter().any(|s| s.name == "POST /v1/events")
        })
        .await
        .unwrap_or_else(|spans| panic!("the trace is incomplete: {spans:#?}"));
    let request = one(&spans, "POST /v1/events");
    assert_eq!(request.kind, "server");
    assert!(spans.iter().all(|s| s.protocol == "http"));
    assert_eq!(request.parent_span_id, hex(&producer.span_id));
    assert_eq!(request.attribute("http.route"), Some("/v1/events"));
    assert_eq!(request.attribute("http.response.status_code"), Some("202"));
    assert_eq!(request.attribute("url.path"), Some("/v1/events"));
    assert_eq!(request.attribute("url.scheme"), Some("http"));
    assert_eq!(request.attribute("http.request.method"), Some("POST"));
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some("waybill-dev")
    );
    assert_eq!(
        request
            .resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("ci")
    );
    let publish = one(&spans, "publish freights");
    assert_eq!(
        (publish.kind, &publish.parent_span_id),
        ("producer", &request.span_id)
    );
    let matched = one(&spans, "process freights");
    assert_eq!(
        (matched.kind, &matched.parent_span_id),
        ("consumer", &publish.span_id)
    );
    assert_eq!(matched.attribute("waybill.matches"), Some("5"));
    // The messaging semantic conventions: what is done, on what, by whom.
    for (span, operation, kind, topic) in [
        (publish, "publish", "send", "freights"),
        (matched, "process", "process", "freights"),
    ] {
        messaging(span, operation, kind, topic);
    }
    assert_eq!(
        matched.attribute("messaging.consumer.group.name"),
        Some("waybill-matcher")
    );
    assert_eq!(
        publish.attribute("waybill.event_name"),
        Some("freights.publication.created")
    );
    let tasks: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "process deliveries")
        .collect();
    assert_eq!(tasks.len(), 5, "{spans:#?}");
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "POST").collect();
    assert_eq!(attempts.len(), 5, "{spans:#?}");
    for (i, subscription) in subscriptions.iter().enumerate() {
        let task = tasks
            .iter()
            .find(|t| t.attribute("waybill.subscription_id") == Some(subscription))
            .unwrap_or_else(|| panic!("no task span of {subscription}: {tasks:#?}"));
        assert_eq!(
            (task.kind, &task.parent_span_id),
            ("consumer", &matched.span_id)
        );
        assert_eq!(task.attribute("waybill.outcome"), Some("succeeded"));
        messaging(task, "process", "process", "deliveries");
        assert_eq!(
            task.attribute("messaging.consumer.group.name"),
            Some("waybill-delivery")
        );
        assert!(task.attribute("waybill.delivery_id").is_some(), "{task:#?}");
        let attempt = attempts
            .iter()
            .find(|a| a.parent_span_id == task.span_id)
            .unwrap_or_else(|| panic!("no attempt under {task:#?}"));
        assert_eq!(attempt.kind, "client");
        assert_eq!(attempt.attribute("http.response.status_code"), Some("200"));
        // The HTTP client conventions, the URL without query values.
        assert_eq!(attempt.attribute("http.request.method"), Some("POST"));
        assert_eq!(attempt.attribute("server.address"), Some("127.0.0.1"));
        let url = attempt.attribute("url.full").unwrap_or_default();
        let port = attempt.attribute("server.port").unwrap_or_default();
        assert!(
            url.starts_with(&format!("http://127.0.0.1:{port}/")) && port.parse::<u16>().is_ok(),
            "{attempt:#?}"
        );
        // The receiver's parent is the attempt that called it.
        assert_eq!(hex(&outgoing[i].span_id), attempt.span_id);
    }

    // SIGTERM: the process flushes and exits.
    terminate(child).await;

    let logs = read(&stderr_path);
    assert!(logs.lines().count() > 50, "debug logs expected:\n{logs}");
    let span_ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut in_trace = Vec::new();
    for line in logs.lines() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{line}"
        );
        if entry["trace_id"] == trace_id.as_str() {
            let span_id = entry["span_id"].as_str().unwrap();
            assert!(span_ids.contains(span_id), "unknown span {span_id}: {line}");
            in_trace.push(entry);
        }
    }
    let messages: HashSet<&str> = in_trace
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for expected in ["event accepted", "event matched", "delivered"] {
        assert!(
            messages.contains(expected),
            "`{expected}` logged with the trace id: {messages:?}"
        );
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs: {secret}"
        );
        for span in &spans {
            assert!(
                span.attributes
                    .values()
                    .all(|v| !v.contains(secret.as_str())),
                "a secret appears in a span: {span:#?}"
            );
        }
    }
}

/// A messaging span's required attributes (OpenTelemetry semantic
/// conventions for Kafka).
fn messaging(span: &CollectedSpan, operation: &str, kind: &str, topic: &str) {
    assert_eq!(
        span.attribute("messaging.system"),
        Some("kafka"),
        "{span:#?}"
    );
    assert_eq!(
        span.attribute("messaging.operation.name"),
        Some(operation),
        "{span:#?}"
    );
    assert_eq!(
        span.attribute("messaging.operation.type"),
        Some(kind),
        "{span:#?}"
    );
    assert_eq!(
        span.attribute("messaging.destination.name"),
        Some(topic),
        "{span:#?}"
    );
    assert!(
        span.attribute("messaging.destination.partition.id")
            .is_some_and(|p| p.parse::<u32>().is_ok()),
        "{span:#?}"
    );
}

/// Starts `waybill dev` with `config`, logs to `stderr`, `env` on top of
/// a clean OTEL environment; returns it and its API's address.
fn spawn_dev(config: &Path, stderr: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waybill"));
    command
        .args(["dev", "--port", "0", "--api-key", API_KEY, "--config"])
        .arg(config)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(stderr).unwrap()));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name == "WAYBILL_LOG_FORMAT" || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("waybill dev starts");
    // The greeting names the API's address.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end, so the process never writes to a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            drop(lines_tx.send(line));
        }
    });
    let base = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("waybill dev prints its greeting");
        if let Some(url) = line.strip_prefix("api: ") {
            break url.to_owned();
        }
    };
    (child, base)
}

/// SIGTERM; the process must flush its spans and exit 0.
async fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "waybill dev exits cleanly on SIGTERM: {exit}"
    );
}

/// `waybill dev` exporting to an in-test collector, with `env`, and a
/// receiver subscribed to `freights.*`.
struct Exporting {
    collector: Collector,
    child: Child,
    api: Api,
    receiver: Receiver,
    stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

async fn exporting_to_a_collector(env: &[(&str, &str)]) -> Exporting {
    exporting_to(Collector::start().await.unwrap(), env).await
}

async fn exporting_to(collector: Collector, env: &[(&str, &str)]) -> Exporting {
    waybill_testkit::wait::watchdog(Duration::from_secs(240));
    let slot = slot().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waybill.toml");
    std::fs::write(&config, "").unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let endpoint = collector.endpoint();
    let mut all_env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    all_env.extend_from_slice(env);
    let (child, base) = spawn_dev(&config, &stderr_path, &all_env);
    let api = Api::new(base, API_KEY);
    let receiver = Receiver::start().await.unwrap();
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/hook"), "event_types": ["freights.*"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Exporting {
        collector,
        child,
        api,
        receiver,
        stderr_path,
        _dir: dir,
        _slot: slot,
    }
}

/// Posts one event without a `traceparent` and waits for its whole trace
/// (the API request and the webhook attempt) at the collector.
async fn one_exported_trace(run: &Exporting, entity_id: &str) -> Vec<CollectedSpan> {
    let (status, body) = run
        .api
        .post(
            "/v1/events",
            json!({"event_name": "freights.publication.created",
                   "entity": {"type": "freight", "id": entity_id}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = run
        .receiver
        .wait_for(1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", read(&run.stderr_path)));
    let traceparent = TraceParent::parse(got[0].header("traceparent").unwrap()).unwrap();
    let spans = run
        .collector
        .wait_for_trace(&traceparent.trace_id_hex(), WAIT, |spans| {
            spans.iter().any(|s| s.name == "POST")
                && spans.iter().any(|s| s.name == "POST /v1/events")
        })
        .await
        .unwrap_or_else(|spans| {
            panic!(
                "the trace is incomplete: {spans:#?}; logs:\n{}",
                read(&run.stderr_path)
            )
        });
    assert_eq!(one(&spans, "POST").span_id, hex(&traceparent.span_id));
    spans
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` exports over OTLP/gRPC; without a
/// producer's `traceparent` the API request starts the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_grpc() {
    let run = exporting_to_a_collector(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "waybill-grpc-check"),
    ])
    .await;
    let spans = one_exported_trace(&run, "FR-2").await;
    let request = one(&spans, "POST /v1/events");
    assert_eq!(request.parent_span_id, "", "the request is the root");
    assert!(spans.iter().all(|s| s.protocol == "grpc"));
    assert!(spans.iter().all(|s| s.encoding == "identity"));
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some("waybill-grpc-check")
    );
    terminate(run.child).await;
}

/// OTLP/gRPC to an `https://` collector that trusts only a private CA and
/// asks for a client certificate, gzip-compressed: the standard
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_CERTIFICATE`,
/// `..._CLIENT_KEY` and `..._COMPRESSION` variables do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_gzipped_over_grpc_with_tls_and_a_client_certificate() {
    let ca = TestCa::new().unwrap();
    let collector = Collector::start_tls(&ca, true).await.unwrap();
    let paths = ["ca.pem", "client.pem", "client-key.pem"]
        .map(|name| ca.path(name).to_str().unwrap().to_owned());
    let run = exporting_to(
        collector,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &paths[0]),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &paths[1]),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &paths[2]),
        ],
    )
    .await;
    assert!(run.collector.endpoint().starts_with("https://"));
    let spans = one_exported_trace(&run, "FR-TLS-1").await;
    assert!(spans.iter().all(|s| s.protocol == "grpc"), "{spans:#?}");
    assert!(spans.iter().all(|s| s.encoding == "gzip"), "{spans:#?}");
    terminate(run.child).await;
}

/// OTLP/HTTP to an `https://` collector of a private CA, gzip-compressed
/// (`Content-Encoding: gzip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_gzipped_over_https() {
    let ca = TestCa::new().unwrap();
    let collector = Collector::start_tls(&ca, false).await.unwrap();
    let ca_path = ca.path("ca.pem").to_str().unwrap().to_owned();
    let run = exporting_to(
        collector,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_path),
        ],
    )
    .await;
    let spans = one_exported_trace(&run, "FR-TLS-2").await;
    assert!(spans.iter().all(|s| s.protocol == "http"), "{spans:#?}");
    assert!(spans.iter().all(|s| s.encoding == "gzip"), "{spans:#?}");
    terminate(run.child).await;
}

/// `OTEL_TRACES_SAMPLER=parentbased_traceidratio` with ratio 0: a trace
/// the producer sampled is still exported whole (the parent decides), one
/// that starts at the API is not, yet its context still travels to the
/// receiver, marked not sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_settings_are_honoured() {
    let run = exporting_to_a_collector(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ])
    .await;
    let event = json!({"event_name": "freights.publication.created",
                       "entity": {"type": "freight", "id": "FR-3"}, "data": {}});

    // Not sampled: started at the API, ratio 0.
    let (status, body) = run.api.post("/v1/events", event.clone()).await;
    assert_eq!(status, 202, "{body}");
    let got = run
        .receiver
        .wait_for(1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", read(&run.stderr_path)));
    let unsampled = TraceParent::parse(got[0].header("traceparent").unwrap()).unwrap();
    assert_eq!(
        unsampled.flags & 1,
        0,
        "the run.receiver is told it is not sampled"
    );

    // Sampled by the producer: exported, ingest to run.receiver.
    let producer = TraceParent::new_root();
    let (status, body) = run
        .api
        .call_with(
            reqwest::Method::POST,
            "/v1/events",
            Some(&event),
            &[("traceparent", &producer.to_string())],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Found by its trace id (at-least-once: the first event may arrive twice).
    let sampled = waybill_testkit::wait::until("the producer's event", WAIT, || {
        let found = run.receiver.received().iter().find_map(|r| {
            TraceParent::parse(r.header("traceparent")?).filter(|t| t.trace_id == producer.trace_id)
        });
        async move { found }
    })
    .await
    .unwrap_or_else(|e| {
        // Was it not delivered, or delivered in another trace?
        let received: Vec<_> = run
            .receiver
            .received()
            .iter()
            .map(|r| {
                (
                    r.header("traceparent").map(str::to_owned),
                    r.json()["data"].clone(),
                )
            })
            .collect();
        panic!(
            "{e}; the producer's trace {}; received {received:?}; logs:\n{}",
            producer.trace_id_hex(),
            read(&run.stderr_path)
        )
    });
    assert_eq!(sampled.flags & 1, 1);
    run.collector
        .wait_for_trace(&producer.trace_id_hex(), WAIT, |spans| {
            spans.iter().any(|s| s.name == "POST")
                && spans.iter().any(|s| s.name == "POST /v1/events")
        })
        .await
        .unwrap_or_else(|spans| panic!("the sampled trace is incomplete: {spans:#?}"));
    // The spans of the sampled trace were exported after the first event's
    // would have been (one exporter, in order): none of those came.
    let leaked: Vec<_> = run
        .collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == unsampled.trace_id_hex())
        .collect();
    assert!(
        leaked.is_empty(),
        "spans of an unsampled trace: {leaked:#?}"
    );
    terminate(run.child).await;
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
