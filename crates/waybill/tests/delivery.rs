//! The delivery engine's outcomes over real HTTP on the embedded broker:
//! retries at the policy's delays through the retry tier topics, dead
//! letters after the last attempt, `410 Gone` disabling the subscription,
//! and `Retry-After` honoured.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill::dev::{self, DevStack};
use waybill_proto::Message as _;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::{Options, Received, Receiver};

const KEY: &str = "wb_test_key_0123456789";
const WAIT: Duration = Duration::from_secs(30);

async fn start_stack() -> (DevStack, Api) {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let env = vec![(
        "WAYBILL_KAFKA__RETRY_TIERS".to_owned(),
        r#"["100ms", "500ms", "1s", "2s"]"#.to_owned(),
    )];
    let config = waybill::load(dev::base_config(0), None, env).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    (stack, api)
}

async fn subscribe(api: &Api, url: String, event_types: Value, delays: &[&str]) -> String {
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            json!({"url": url, "event_types": event_types, "retry_policy": {"delays": delays}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn post_event(api: &Api, name: &str) {
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": name, "entity": {"type": "freight", "id": "f-1"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn gaps(received: &[Received]) -> Vec<Duration> {
    received.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// `actual` is `delay` (plus at most 10 % jitter) late by at most
/// max(1 s, 10 %).
fn assert_on_time(actual: Duration, delay: Duration) {
    let latest = delay.mul_f64(1.1) + Duration::from_secs(1).max(delay / 10);
    assert!(
        actual >= delay && actual <= latest,
        "waited {actual:?}, scheduled {delay:?} (+10 % jitter, tolerance up to {latest:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_gone_and_retry_after() {
    let (stack, api) = start_stack().await;
    let recovering = Receiver::with(Options {
        script: vec![500, 500],
        ..Options::default()
    })
    .await
    .unwrap();
    let failing = Receiver::with(Options {
        default_status: Some(500),
        ..Options::default()
    })
    .await
    .unwrap();
    let gone = Receiver::with(Options {
        default_status: Some(410),
        ..Options::default()
    })
    .await
    .unwrap();
    let throttling = Receiver::with(Options {
        script: vec![429],
        answer_headers: vec![("Retry-After".into(), "2".into())],
        ..Options::default()
    })
    .await
    .unwrap();

    let freights = json!(["freights.publication.*"]);
    subscribe(&api, recovering.url("/r"), freights.clone(), &["1s", "2s"]).await;
    let dead_id = subscribe(
        &api,
        failing.url("/f"),
        freights.clone(),
        &["100ms", "100ms"],
    )
    .await;
    subscribe(&api, throttling.url("/t"), freights, &["100ms"]).await;
    let gone_id = subscribe(
        &api,
        gone.url("/g"),
        json!(["freight_orders.*"]),
        &["100ms"],
    )
    .await;

    post_event(&api, "freights.publication.accepted").await;
    post_event(&api, "freight_orders.order.created").await;

    // Fails twice, then succeeds: three requests at the policy's delays,
    // all with the same webhook-id.
    let got = recovering.wait_for(3, WAIT).await.unwrap();
    let g = gaps(&got);
    eprintln!("retry gaps after 1s and 2s delays: {g:?}");
    assert_on_time(g[0], Duration::from_secs(1));
    assert_on_time(g[1], Duration::from_secs(2));
    let id = got[0].header("webhook-id").unwrap();
    assert!(got.iter().all(|r| r.header("webhook-id") == Some(id)));

    // 429 with Retry-After: 2 waits 2 s although the policy says 100 ms.
    let got = throttling.wait_for(2, WAIT).await.unwrap();
    assert_on_time(gaps(&got)[0], Duration::from_secs(2));

    // Always failing: exactly max_attempts (3) requests, then the task is
    // on the dead-letter topic with its reason.
    let got = failing.wait_for(3, WAIT).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead = waybill_testkit::topic::read_all(&stack.brokers, "deliveries.dlq");
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "one dead letter");
    let task = waybill_proto::v1::DeliveryTask::decode(dead[0].payload.as_slice()).unwrap();
    assert_eq!(task.subscription_id, dead_id);
    assert_eq!(task.attempt, 3);
    assert_eq!(Some(task.delivery_id.as_str()), got[0].header("webhook-id"));
    assert_eq!(
        dead[0].header("waybill-dead-reason"),
        Some("3 attempts failed; last: HTTP 500")
    );

    // 410 Gone disables the subscription, with the reason shown by the API.
    gone.wait_for(1, WAIT).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let sub = loop {
        let (status, sub) = api.get(&format!("/v1/subscriptions/{gone_id}")).await;
        assert_eq!(status, 200);
        if sub["status"] == "disabled" || Instant::now() > deadline {
            break sub;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sub["status"], "disabled", "{sub}");
    assert!(
        sub["disabled_reason"].as_str().unwrap().contains("410"),
        "{sub}"
    );
    // ...so nothing more goes there, and reset brings it back.
    post_event(&api, "freight_orders.order.created").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        gone.received().len(),
        1,
        "nothing to a disabled subscription"
    );
    let (status, sub) = api
        .post(&format!("/v1/subscriptions/{gone_id}/reset"), json!({}))
        .await;
    assert_eq!((status, &sub["status"]), (200, &json!("active")), "{sub}");
    post_event(&api, "freight_orders.order.created").await;
    gone.wait_for(2, WAIT).await.unwrap();

    // Nothing else arrives later: no retry after success or death.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recovering.received().len(), 3);
    assert_eq!(failing.received().len(), 3);
    assert_eq!(throttling.received().len(), 2);
    stack.stop().await.unwrap();
}
