//! Per-tenant quotas over real HTTP against the whole system on the
//! embedded broker: a tenant over its rate, its Idempotency-Keys or its
//! running replays gets `429 rate_limited` with `Retry-After`, and the
//! other tenants go on as before.

use std::time::{Duration, SystemTime};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use waybill::dev::{self, DevStack};
use waybill_proto::Message as _;
use waybill_proto::v1;
use waybill_testkit::api::Api;

const KEY: &str = "wb_test_key_0123456789abcdef01234";

async fn start_stack() -> (DevStack, Api) {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let mut base = dev::base_config(0);
    let quotas: toml::Table = format!(
        r#"
requests_per_second = 0
idempotency_keys = 3
concurrent_replays = 1

[tenants.{dev}]
requests_per_second = 2
request_burst = 4
"#,
        dev = dev::DEV_TENANT
    )
    .parse()
    .unwrap();
    let ingest = base["ingest"].as_table_mut().unwrap();
    ingest.insert("quotas".into(), quotas.into());
    ingest.insert("replay_lease".into(), "2s".into());
    let config = waybill::load(base, None, vec![]).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    (stack, api)
}

/// A second tenant and an API client acting for it.
async fn other_tenant(stack: &DevStack, api: &Api) -> (String, Api) {
    let operator = api.with_key(stack.operator_token.clone());
    let (status, tenant) = operator.post("/v1/tenants", json!({"name": "other"})).await;
    assert_eq!(status, 201, "{tenant}");
    let id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = operator
        .post(&format!("/v1/tenants/{id}/api_keys"), json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    (id, api.with_key(key["key"].as_str().unwrap()))
}

/// `POST /v1/subscriptions` of `body` under an `Idempotency-Key`.
async fn post_keyed(
    api: &Api,
    body: &Value,
    key: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    api.call_full(
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .expect("a 429 says when to come back")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

async fn metrics(stack: &DevStack) -> String {
    reqwest::get(format!("http://{}/metrics", stack.admin[2]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quotas_is_refused_and_the_others_are_not() {
    let (stack, dev_api) = start_stack().await;
    let (other_id, other) = other_tenant(&stack, &dev_api).await;

    // Requests per second: the dev tenant has 2/s with bursts of 4.
    for _ in 0..4 {
        let (status, body) = dev_api.get("/v1/subscriptions").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, headers) = dev_api
        .call_full(reqwest::Method::GET, "/v1/subscriptions", None, &[])
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 calls per second"), "{message}");
    let wait = retry_after(&headers);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    // Another tenant is not slowed down by the first one's flood.
    for _ in 0..20 {
        let (status, body) = other.get("/v1/subscriptions").await;
        assert_eq!(status, 200, "{body}");
    }
    // A client that honours Retry-After gets in again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, body) = dev_api.get("/v1/subscriptions").await;
    assert_eq!(status, 200, "{body}");

    // Idempotency-Keys: 3 per tenant within the window.
    let receiver = waybill_testkit::receiver::Receiver::start().await.unwrap();
    let sub = json!({"url": receiver.url("/hook"), "event_types": ["*"]});
    let mut first: Option<Value> = None;
    for key in ["k1", "k2", "k3"] {
        let (status, body, _) = post_keyed(&other, &sub, key).await;
        assert_eq!(status, 201, "{body}");
        first.get_or_insert(body);
    }
    let (status, body, headers) = post_keyed(&other, &sub, "k4").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 Idempotency-Keys"),
        "{body}"
    );
    // The oldest key lapses at the end of the 24 h window.
    let wait = retry_after(&headers);
    assert!((86_000..=86_400).contains(&wait), "Retry-After: {wait}");
    // A repeat of a remembered key still answers its first result.
    let (status, repeat, _) = post_keyed(&other, &sub, "k1").await;
    assert_eq!(status, 201, "{repeat}");
    assert_eq!(Some(&repeat), first.as_ref());
    // Without a key the tenant goes on; the other tenant's keys are its own
    // (after its bucket of calls has filled up again).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = other.post("/v1/subscriptions", sub.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = post_keyed(&dev_api, &sub, "k4").await;
    assert_eq!(status, 201, "{body}");

    // Replays: one running at once per tenant, counted on the shared
    // `replays` topic — here one that another ingest replica runs.
    let subscription_id = first.as_ref().unwrap()["id"].as_str().unwrap().to_owned();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let at = waybill_proto::prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: 0,
    };
    let elsewhere = v1::ReplayJob {
        id: "rpl_running_elsewhere".into(),
        tenant_id: other_id.clone(),
        subscription_id: subscription_id.clone(),
        since: Some(at),
        status: v1::ReplayStatus::Running as i32,
        started_at: Some(at),
        heartbeat_at: Some(at),
        owner: "ingest-another-replica".into(),
        revision: 1,
        write_id: "w_running_elsewhere".into(),
        ..Default::default()
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .unwrap();
    let topic = waybill_kafka::topics::Topics::of(&stack.config.kafka).replays();
    let payload = elsewhere.encode_to_vec();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(elsewhere.id.as_bytes())
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("the job is written");
    let replay = format!("/v1/subscriptions/{subscription_id}/replay");
    let window = json!({"since": "2026-01-01T00:00:00Z"});
    let refused = waybill_testkit::wait::until(
        "the running job counts",
        Duration::from_secs(20),
        || async {
            let (status, body, headers) = other
                .call_full(reqwest::Method::POST, &replay, Some(&window), &[])
                .await;
            assert_ne!(status, 202, "a replay started while another ran: {body}");
            (status == 429).then_some((body, headers))
        },
    )
    .await
    .expect("the running job counts against the quota");
    let (body, headers) = refused;
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 replays running"),
        "{body}"
    );
    assert!(retry_after(&headers) >= 1);
    // The dev tenant's replays are not counted against it.
    let (status, dev_subs) = dev_api.get("/v1/subscriptions").await;
    assert_eq!(status, 200, "{dev_subs}");
    let dev_sub = dev_subs["subscriptions"][0]["id"].as_str().unwrap();
    let (status, body) = dev_api
        .post(
            &format!("/v1/subscriptions/{dev_sub}/replay"),
            window.clone(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Once the abandoned job is taken over and finished, the tenant may
    // replay again.
    waybill_testkit::wait::until(
        "the abandoned job taken over",
        Duration::from_secs(30),
        || async {
            let (_, job) = other.get("/v1/replays/rpl_running_elsewhere").await;
            (job["status"] == "done").then_some(job)
        },
    )
    .await
    .expect("the abandoned job was taken over and finished");
    let (status, body) = other.post(&replay, window.clone()).await;
    assert_eq!(status, 202, "{body}");

    let text = metrics(&stack).await;
    for quota in ["requests", "idempotency_keys", "replays"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "waybill_quota_refusals_total{{quota=\"{quota}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {quota} series in {text}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 1.0, "{line}");
    }
    stack.stop().await.unwrap();
}
