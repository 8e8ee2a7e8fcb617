//! The whole system in one process on the embedded broker, driven through
//! its real HTTP API, with a real receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use waybill::dev::{self, DevStack};
use waybill_core::signing::SigningSecret;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::{Options, Receiver};

const KEY: &str = "wb_test_key_0123456789abcdef01234";

async fn start_stack() -> DevStack {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    tracing_subscriber_init();
    // Millisecond retry tiers for the failing-receiver case.
    // Backlog sampled often for the metrics case.
    let env = vec![
        (
            "WAYBILL_KAFKA__RETRY_TIERS".to_owned(),
            r#"["50ms", "200ms", "1s"]"#.to_owned(),
        ),
        (
            "WAYBILL_DELIVERY__BACKLOG_SAMPLE_INTERVAL".to_owned(),
            "200ms".to_owned(),
        ),
        // librdkafka's statistics often, for the metrics case.
        (
            "WAYBILL_KAFKA__PROPERTIES__STATISTICS_INTERVAL_MS".to_owned(),
            "200".to_owned(),
        ),
    ];
    let config = waybill::load(dev::base_config(0), None, env).expect("dev config");
    dev::start(config, KEY).await.expect("dev stack starts")
}

fn tracing_subscriber_init() {
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
}

async fn subscribe(
    api: &Api,
    url: String,
    event_types: Value,
    enabled: bool,
) -> (String, SigningSecret) {
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            json!({"url": url, "event_types": event_types, "enabled": enabled,
                   "retry_policy": {"delays": ["50ms", "100ms", "200ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = SigningSecret::parse(body["signing_secret"].as_str().unwrap()).unwrap();
    (body["id"].as_str().unwrap().to_owned(), secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_matching_subscription_signed_and_once() {
    let stack = start_stack().await;
    let api = Api::new(stack.api_url(), KEY);
    // The receiver refuses the first two requests: delivery must retry them.
    let receiver = Receiver::with(Options {
        script: vec![500, 503],
        ..Options::default()
    })
    .await
    .unwrap();

    let (all_id, all_secret) = subscribe(&api, receiver.url("/all"), json!(["*"]), true).await;
    let (orders_id, orders_secret) = subscribe(
        &api,
        receiver.url("/orders"),
        json!(["freight_orders.*"]),
        true,
    )
    .await;
    subscribe(&api, receiver.url("/disabled"), json!(["*"]), false).await;

    // GET answers from the projection right after the write.
    let got: Value = api
        .http
        .get(format!("{}/v1/subscriptions/{orders_id}", api.base))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["event_types"], json!(["freight_orders.*"]));
    assert!(
        got.get("signing_secret").is_none(),
        "the secret is only shown at creation"
    );

    let events = [
        (
            "freights.publication.accepted",
            "freight",
            "F-1",
            "freights",
        ),
        ("freight_orders.order.created", "order", "O-1", "orders"),
        (
            "time_slot_management.time_window.created",
            "time_window",
            "TW-1",
            "time_slot_management",
        ),
        (
            "loads_monitoring.monitoring.device_added",
            "monitoring",
            "M-1",
            "loads_monitoring",
        ),
    ];
    let mut sent = BTreeMap::new();
    for (i, (name, kind, id, topic)) in events.iter().enumerate() {
        let event_id = format!("e-{i}");
        let (status, body) = api
            .post(
                "/v1/events",
                json!({"id": event_id, "event_name": name, "entity": {"type": kind, "id": id},
                       "occurred_at": "2026-11-22T10:00:00Z", "data": {"n": i, "big": 12345678901234567890u64}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["topic"], *topic);
        assert_eq!(body["id"], event_id);
        sent.insert(event_id, (*name, *kind, *id));
    }

    // 4 to /all, 1 to /orders, 2 refused attempts that are retried.
    let received = receiver.wait_for(7, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received().len().max(received.len());
    assert_eq!(received, 7, "no extra deliveries");

    let ok: Vec<_> = receiver.received().into_iter().skip(2).collect();
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in receiver.received() {
        let (secret, sub) = if r.path == "/all" {
            (&all_secret, &all_id)
        } else {
            assert_eq!(r.path, "/orders", "nothing goes to a disabled subscription");
            (&orders_secret, &orders_id)
        };
        assert!(
            r.signature_valid(secret),
            "valid Standard Webhooks signature"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("user-agent").unwrap().starts_with("Waybill/"));
        assert!(r.header("traceparent").is_some());
        let body = r.json();
        let event_id = body["id"].as_str().unwrap().to_owned();
        let (name, kind, entity_id) = sent[&event_id];
        assert_eq!(body["event_name"], name);
        assert_eq!(body["entity"], json!({"type": kind, "id": entity_id}));
        assert_eq!(body["occurred_at"], "2026-11-22T10:00:00Z");
        assert!(
            String::from_utf8_lossy(&r.body).contains("12345678901234567890"),
            "data is delivered byte for byte"
        );
        assert_eq!(
            r.header("webhook-id").unwrap(),
            waybill_core::ids::delivery_id(dev::DEV_TENANT, &event_id, sub)
        );
        by_path
            .entry(r.path.clone())
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_owned());
    }
    assert_eq!(by_path["/all"].len(), 4);
    assert_eq!(by_path["/orders"].len(), 1);
    // The two refused attempts were retried with the same webhook-id.
    let refused: Vec<_> = receiver.received().into_iter().take(2).collect();
    for r in &refused {
        assert!(
            ok.iter()
                .any(|o| o.header("webhook-id") == r.header("webhook-id"))
        );
    }
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_partition_moves_on() {
    let stack = start_stack().await;
    let api = Api::new(stack.api_url(), KEY);
    let receiver = Receiver::start().await.unwrap();
    subscribe(&api, receiver.url("/hook"), json!(["freights.*"]), true).await;

    // An upstream producer writes garbage, then a record with an unknown event.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .unwrap();
    for (key, payload) in [
        ("F-9", &b"\xff\x00garbage"[..]),
        ("F-9", &unknown_event()[..]),
    ] {
        producer
            .send(
                FutureRecord::to("freights").key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    // Closed while the broker is up.
    drop(producer);
    // Then a good event for the same entity (same partition).
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.freight.create", "entity": {"id": "F-9"}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(got[0].json()["event_name"], "freights.freight.create");

    // Both bad records are on the dead-letter topic, with their reasons.
    // (Read by assignment: a group member left behind when the broker stops
    // can hang in its close.)
    let dead = waybill_testkit::wait::until("two dead letters", Duration::from_secs(30), || {
        let records = waybill_testkit::topic::read_all(&stack.brokers, "dead_letters");
        async move { (records.len() >= 2).then_some(records) }
    })
    .await
    .unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|r| {
            assert_eq!(r.key, b"F-9");
            r.header("waybill-dlq-reason").unwrap().to_owned()
        })
        .collect();
    assert!(reasons[0].contains("undecodable"), "{reasons:?}");
    assert!(reasons[1].contains("catalog"), "{reasons:?}");
    stack.stop().await.unwrap();
}

fn unknown_event() -> Vec<u8> {
    use waybill_proto::Message as _;
    waybill_proto::v1::DomainEvent {
        id: "bad-1".into(),
        event_name: "freights.not_in_catalog".into(),
        tenant_id: dev::DEV_TENANT.into(),
        occurred_at: Some(prost_types_now()),
        ..Default::default()
    }
    .encode_to_vec()
}

fn prost_types_now() -> waybill_proto::convert::Timestamp {
    waybill_proto::convert::timestamp(time::OffsetDateTime::now_utc())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_structured() {
    let stack = start_stack().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", stack.api_url());

    let r = http
        .post(url("/v1/events"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );

    let r = http
        .post(url("/v1/events"))
        .bearer_auth(KEY)
        .body("event_name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );

    let r = http
        .post(url("/v1/subscriptions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(r#"{"url": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("column")
    );

    let r = http
        .post(url("/v1/subscriptions"))
        .bearer_auth(KEY)
        .json(&json!({"url": "ftp://x", "event_types": ["nope"], "method": "GET"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["url", "method", "event_types[0]"]);

    let r = http
        .get(url("/v1/subscriptions/sub_missing"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    let big = format!(
        r#"{{"event_name": "freights.freight.create", "data": "{}"}}"#,
        "a".repeat(300_000)
    );
    let r = http
        .post(url("/v1/events"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    stack.stop().await.unwrap();
}

/// The value of one sample line of a Prometheus text exposition (`0` when
/// the series is absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `/metrics` counts what the receivers saw: successes, retries, published
/// events, matches, API requests by route, attempt durations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let stack = start_stack().await;
    let api = Api::new(stack.api_url(), KEY);
    let healthy = Receiver::start().await.unwrap();
    let flaky = Receiver::with(Options {
        script: vec![500],
        ..Options::default()
    })
    .await
    .unwrap();
    let freights = json!(["freights.*"]);
    subscribe(&api, healthy.url("/h"), freights.clone(), true).await;
    subscribe(&api, flaky.url("/f"), freights, true).await;
    let dead = Receiver::with(Options {
        default_status: Some(503),
        ..Options::default()
    })
    .await
    .unwrap();
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            json!({"url": dead.url("/d"), "event_types": ["freight_orders.*"],
                   "retry_policy": {"delays": ["50ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freight_orders.order.created",
                   "entity": {"type": "order", "id": "O-1"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    for i in 0..5 {
        let (status, body) = api
            .post(
                "/v1/events",
                json!({"event_name": "freights.publication.accepted",
                       "entity": {"type": "freight", "id": format!("F-{i}")}, "data": {}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    healthy.wait_for(5, Duration::from_secs(30)).await.unwrap();
    flaky.wait_for(6, Duration::from_secs(30)).await.unwrap();
    dead.wait_for(2, Duration::from_secs(30)).await.unwrap();

    let scrape = || async {
        let response = reqwest::get(format!("http://{}/metrics", stack.admin[1]))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        response.text().await.unwrap()
    };
    // The API port serves the API only: the admin routes are on the admin
    // listener (ingest's is admin[2]).
    for path in ["/metrics", "/healthz", "/readyz"] {
        let on_api = reqwest::get(format!("{}{path}", stack.api_url()))
            .await
            .unwrap();
        assert_eq!(on_api.status(), 404, "{path} on the API port");
        let on_admin = reqwest::get(format!("http://{}{path}", stack.admin[2]))
            .await
            .unwrap();
        assert_eq!(on_admin.status(), 200, "{path} on ingest's admin port");
    }
    let succeeded = r#"waybill_deliveries_total{outcome="succeeded",status_class="2xx"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape().await;
        let lag: f64 = (0..4)
            .map(|p| {
                sample(
                    &text,
                    &format!(
                        r#"waybill_consumer_lag_records{{topic="deliveries",partition="{p}"}}"#
                    ),
                )
            })
            .sum();
        let settled = sample(&text, succeeded) >= 10.0
            && lag == 0.0
            && sample(&text, "waybill_dlq_records") == 1.0
            && sample(
                &text,
                r#"waybill_deliveries_total{outcome="dead",status_class="5xx"}"#,
            ) == 1.0;
        if settled || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ok = (healthy.received().len() + flaky.received().len() - 1) as f64;
    assert_eq!(
        sample(&text, succeeded),
        ok,
        "successes = 2xx answers seen\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_deliveries_total{outcome="retried",status_class="5xx"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_deliveries_total{outcome="dead",status_class="5xx"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "waybill_dlq_records"), 1.0);
    assert_eq!(
        sample(&text, "waybill_delivery_attempt_duration_seconds_count"),
        13.0
    );
    assert_eq!(
        sample(&text, r#"waybill_events_published_total{topic="freights"}"#),
        5.0
    );
    // The 6 posted, and the operational events the flaky and the dead
    // subscriptions' transitions wrote (failing, recovered, dead: how many
    // depends on how their attempts interleave), which no subscription
    // names.
    let operational =
        waybill_testkit::topic::read_all(&stack.brokers, "operational_events").len() as f64;
    let matched = sample(&text, "waybill_matcher_events_total");
    assert!(
        operational >= 2.0 && (6.0..=6.0 + operational).contains(&matched),
        "{matched} events matched, {operational} operational"
    );
    assert_eq!(sample(&text, "waybill_matcher_matches_per_event_sum"), 11.0);
    assert_eq!(
        sample(
            &text,
            r#"waybill_http_requests_total{route="POST /v1/events",status="202"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_http_requests_total{route="POST /v1/subscriptions",status="201"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_retries_scheduled_total{topic="deliveries.retry.50ms"}"#
        ),
        2.0
    );
    assert_eq!(sample(&text, "waybill_projection_subscriptions"), 3.0);
    // The backlog: every partition of `deliveries` sampled, nothing left.
    let lags: Vec<f64> = (0..4)
        .map(|p| {
            sample(
                &text,
                &format!(r#"waybill_consumer_lag_records{{topic="deliveries",partition="{p}"}}"#),
            )
        })
        .collect();
    assert_eq!(lags, [0.0; 4], "{text}");
    assert!(
        text.contains(r#"waybill_backlog_oldest_age_seconds{topic="deliveries.retry.50ms"}"#),
        "{text}"
    );
    // Nothing waits on the tier much beyond its delay (a processed record
    // counts until its offset is committed, every 200 ms).
    let overdue = r#"waybill_backlog_overdue_seconds{topic="deliveries.retry.50ms"}"#;
    assert!(text.contains(overdue), "{text}");
    assert!(sample(&text, overdue) < 2.0, "{text}");
    // The projection was caught up within the last sampling rounds.
    assert!(text.contains("waybill_projection_age_seconds "), "{text}");
    assert!(
        sample(&text, "waybill_projection_age_seconds") < 60.0,
        "{text}"
    );
    // What the build, the API's timing, the end-to-end latency and the
    // per-tenant counts say.
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"waybill_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_http_request_duration_seconds_count{route="POST /v1/events",status_class="2xx"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            r#"waybill_end_to_end_latency_seconds_count{domain="freights"}"#
        ),
        ok,
        "every first delivery (retried or not) that succeeded\n{text}"
    );
    assert!(
        sample(
            &text,
            r#"waybill_end_to_end_latency_seconds_sum{domain="freights"}"#
        ) > 0.0
    );
    let by_tenant: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("waybill_tenant_deliveries_total{"))
        .collect();
    let tenant_succeeded: f64 = by_tenant
        .iter()
        .filter(|l| l.contains(r#"outcome="succeeded""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(tenant_succeeded, ok, "{by_tenant:#?}");
    assert!(
        by_tenant.iter().all(|l| !l.contains(r#"tenant="other""#)),
        "one tenant is among the top: {by_tenant:#?}"
    );
    // librdkafka's statistics: round trips to the broker, the producers'
    // queues.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let text = scrape().await;
        if text.contains("waybill_kafka_broker_rtt_seconds{")
            && text.contains("waybill_kafka_client_queue_messages{")
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rtt = stats
        .lines()
        .find(|l| l.starts_with("waybill_kafka_broker_rtt_seconds{"))
        .unwrap_or_else(|| panic!("no round trip:\n{stats}"));
    let rtt: f64 = rtt.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..5.0).contains(&rtt), "{rtt}");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("waybill_kafka_client_queue_messages{")
                && l.contains("#producer-")),
        "{stats}"
    );
    // Bounded labels: no subscription id or URL in any series, a tenant id
    // only in the per-tenant counts.
    assert!(!text.contains("sub_"));
    assert!(
        text.lines()
            .filter(|l| l.contains("127.0.0.1"))
            .all(|l| l.starts_with("waybill_kafka_broker_")),
        "only brokers' addresses: {text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("ten_"))
            .all(|l| l.starts_with("waybill_tenant_deliveries_total{")),
        "{text}"
    );
    stack.stop().await.unwrap();
}

/// Kafka slower than the input: with the broker down and the producer's
/// queue full, `POST /v1/events` answers `503 unavailable` with
/// `Retry-After` after the queue timeout instead of buffering without bound;
/// the accepted events wait in the bounded queue. When the broker is back,
/// those are acknowledged, the client's retries of the refused ones (same
/// ids) are accepted, and every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_503_with_retry_after_and_loses_nothing() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    tracing_subscriber_init();
    const QUEUE: usize = 4;
    let mut base = dev::base_config(0);
    base["kafka"]["properties"].as_table_mut().unwrap().insert(
        "queue.buffering.max.messages".into(),
        QUEUE.to_string().into(),
    );
    let config = waybill::load(base, None, Vec::new()).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    let receiver = Receiver::start().await.unwrap();
    subscribe(&api, receiver.url("/hook"), json!(["freights.*"]), true).await;
    let post = |id: String| {
        let api = api.clone();
        async move {
            let body = json!({"id": id, "event_name": "freights.freight.create",
                              "entity": {"type": "freight", "id": id}, "data": {}});
            let (status, answer, headers) = api
                .call_full(reqwest::Method::POST, "/v1/events", Some(&body), &[])
                .await;
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (id, status, answer, retry_after)
        }
    };
    // The delivery path is up before the fault.
    let (_, status, _, _) = post("warm-up".into()).await;
    assert_eq!(status, 202);
    receiver.wait_for(1, Duration::from_secs(60)).await.unwrap();

    stack.broker().cluster().broker_down(1).unwrap();
    const EVENTS: usize = 10;
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..EVENTS {
        posts.spawn(post(format!("ev-{i}")));
        // In order, so the queue fills with the first ones.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The refused ones come back while the broker is still down.
    let mut refused = Vec::new();
    while refused.len() < EVENTS - QUEUE {
        let (id, status, answer, retry_after) =
            tokio::time::timeout(Duration::from_secs(30), posts.join_next())
                .await
                .expect("refused requests answer within the queue timeout")
                .unwrap()
                .unwrap();
        assert_eq!(status, 503, "{id}: {answer}");
        assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        refused.push(id);
    }
    assert!(posts.len() >= QUEUE - 1, "the queued requests still wait");

    stack.broker().cluster().broker_up(1).unwrap();
    while let Some(done) = posts.join_next().await {
        let (id, status, answer, _) = done.unwrap();
        assert_eq!(status, 202, "{id}: {answer}");
    }
    for id in refused.clone() {
        let (id, status, answer, _) = post(id).await;
        assert_eq!(status, 202, "{id} retried: {answer}");
    }
    let got = receiver
        .wait_for(1 + EVENTS, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1 + EVENTS, "each exactly once: {ids:?}");
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 1 + EVENTS, "{ids:?}");
    eprintln!(
        "overload: {} refused with 503 + Retry-After while the broker was down, {} waited in the queue; all {} delivered once",
        refused.len(),
        EVENTS - refused.len(),
        got.len() - 1
    );
    stack.stop().await.unwrap();
}

/// A record of a state topic that cannot be folded (here undecodable on
/// `subscriptions`) is skipped by every projection, counted in
/// `waybill_state_records_skipped_total{topic}`, and the records after it
/// are applied as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_state_records_are_counted_and_skipped() {
    let stack = start_stack().await;
    let api = Api::new(stack.api_url(), KEY);
    let receiver = Receiver::start().await.unwrap();
    subscribe(&api, receiver.url("/a"), json!(["freights.*"]), true).await;
    let producer =
        waybill_kafka::Producer::new(&stack.config.kafka, Duration::from_secs(10)).unwrap();
    producer
        .send(
            "subscriptions",
            b"sub_garbage",
            Some(b"\x0a\xff\xff not a subscription"),
            waybill_kafka::headers::standard(waybill_proto::SCHEMA_VERSION, None),
        )
        .await
        .unwrap();
    drop(producer);
    // Written after the garbage: answered once the projection passed it.
    subscribe(&api, receiver.url("/b"), json!(["freights.*"]), true).await;
    let (_, list) = api.get("/v1/subscriptions").await;
    assert_eq!(list["total_count"], 2, "{list}");

    let series = r#"waybill_state_records_skipped_total{topic="subscriptions"}"#;
    let skipped = waybill_testkit::wait::until(
        "the skip to be counted",
        Duration::from_secs(30),
        || async {
            let text = reqwest::get(format!("http://{}/metrics", stack.admin[2]))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let n = sample(&text, series);
            (n >= 1.0).then_some(n)
        },
    )
    .await
    .unwrap();
    eprintln!("{series} = {skipped}");
    // Events still reach both subscriptions.
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.freight.create", "entity": {"id": "F-1"}}),
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(2, Duration::from_secs(60)).await.unwrap();
    stack.stop().await.unwrap();
}

/// `/readyz` follows Kafka: with the broker down the subscription
/// projection cannot confirm it is current, and the service turns not ready
/// after `stale_after` (10 s here); it is ready again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_kafka() {
    let stack = start_stack().await;
    let readyz = format!("http://{}/readyz", stack.admin[1]);
    let status = || async { reqwest::get(&readyz).await.unwrap().status().as_u16() };
    assert_eq!(status().await, 200);
    stack.broker().cluster().broker_down(1).unwrap();
    let down = std::time::Instant::now();
    waybill_testkit::wait::until("not ready", Duration::from_secs(40), || async {
        (status().await == 503).then_some(())
    })
    .await
    .unwrap();
    let took = down.elapsed();
    stack.broker().cluster().broker_up(1).unwrap();
    let up = std::time::Instant::now();
    waybill_testkit::wait::until("ready again", Duration::from_secs(40), || async {
        (status().await == 200).then_some(())
    })
    .await
    .unwrap();
    eprintln!(
        "readiness: not ready {took:.1?} after the broker went down, ready {:.1?} after it came back",
        up.elapsed()
    );
    assert!(
        took >= Duration::from_secs(9),
        "not before stale_after: {took:?}"
    );
    stack.stop().await.unwrap();
}
