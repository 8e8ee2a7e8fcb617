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
    // One partition: every subscription shares it, the hard case for
    // isolation. Millisecond tiers, and a short request timeout.
    let env: Vec<(String, String)> = [
        (
            "WAYBILL_KAFKA__RETRY_TIERS",
            r#"["100ms", "500ms", "1s", "2s"]"#,
        ),
        ("WAYBILL_KAFKA__PARTITIONS", "1"),
        ("WAYBILL_DELIVERY__REQUEST_TIMEOUT", "2s"),
        ("WAYBILL_DELIVERY__CONNECT_TIMEOUT", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = waybill::load(dev::base_config(0), None, env).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    (stack, api)
}

async fn subscribe(api: &Api, url: String, event_types: Value, delays: &[&str]) -> String {
    subscribe_with(
        api,
        json!({"url": url, "event_types": event_types, "retry_policy": {"delays": delays}}),
    )
    .await
}

async fn subscribe_with(api: &Api, body: Value) -> String {
    let (status, body) = api.post("/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn post_event(api: &Api, name: &str) {
    post_event_for(api, name, "f-1").await;
}

async fn post_event_for(api: &Api, name: &str, entity: &str) {
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": name, "entity": {"type": "freight", "id": entity}, "data": {}}),
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

/// A hanging endpoint (answers after the request timeout) and a healthy one
/// share the one partition: the healthy one keeps its pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_slow_the_others() {
    let (stack, api) = start_stack().await;
    let hanging = Receiver::with(Options {
        delay: Some(Duration::from_secs(30)),
        ..Options::default()
    })
    .await
    .unwrap();
    let healthy = Receiver::start().await.unwrap();
    let types = json!(["freights.publication.accepted"]);
    // The consumer groups join first (the embedded broker delays the first
    // assignment by a few seconds).
    let warm_up = Receiver::start().await.unwrap();
    subscribe(
        &api,
        warm_up.url("/w"),
        json!(["freight_orders.*"]),
        &["5s"],
    )
    .await;
    post_event(&api, "freight_orders.order.created").await;
    warm_up.wait_for(1, WAIT).await.unwrap();

    subscribe(&api, hanging.url("/h"), types.clone(), &["5s"]).await;
    subscribe(&api, healthy.url("/ok"), types, &["5s"]).await;

    const EVENTS: usize = 40;
    let start = Instant::now();
    for i in 0..EVENTS {
        post_event_for(&api, "freights.publication.accepted", &format!("f-{i}")).await;
    }
    let posted = start.elapsed();
    let got = healthy.wait_for(EVENTS, WAIT).await.unwrap();
    eprintln!(
        "posted in {posted:?}; healthy arrivals (ms): {:?}",
        got.iter()
            .map(|r| (r.at - start).as_millis())
            .collect::<Vec<_>>()
    );
    let healthy_took = got.last().unwrap().at - start;
    let hanging_started = hanging.received().len();
    eprintln!(
        "healthy: {EVENTS} deliveries in {healthy_took:?} ({:.0}/s); hanging: {hanging_started} requests started meanwhile, none answered",
        EVENTS as f64 / healthy_took.as_secs_f64()
    );
    // Every healthy delivery arrived before the first hanging request even
    // timed out (2 s): none of them waited for the hanging endpoint.
    assert!(
        healthy_took < Duration::from_secs(2),
        "healthy deliveries took {healthy_took:?}"
    );
    // The hanging endpoint holds at most its own cap of requests.
    assert!(
        (1..=8).contains(&hanging_started),
        "{hanging_started} requests to the hanging endpoint"
    );
    stack.stop().await.unwrap();
}

/// An endpoint limited to 20 requests per second never gets more than 20 in
/// any one-second window, and still gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_caps_every_one_second_window() {
    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    subscribe_with(
        &api,
        json!({"url": receiver.url("/limited"), "event_types": ["*"], "rate_limit_per_second": 20}),
    )
    .await;
    const EVENTS: usize = 60;
    for i in 0..EVENTS {
        post_event_for(&api, "freights.publication.accepted", &format!("f-{i}")).await;
    }
    let got = receiver.wait_for(EVENTS, WAIT).await.unwrap();
    let busiest = got
        .iter()
        .map(|first| {
            got.iter()
                .filter(|r| r.at >= first.at && r.at - first.at < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    let span = got.last().unwrap().at - got[0].at;
    eprintln!("rate limit 20/s: {EVENTS} deliveries over {span:?}, busiest 1-s window {busiest}");
    assert!(busiest <= 20, "{busiest} requests in one second");
    assert!(busiest >= 15, "the limit is used, not undercut: {busiest}");
    stack.stop().await.unwrap();
}
