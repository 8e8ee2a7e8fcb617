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

const KEY: &str = "wb_test_key_0123456789abcdef01234";
const WAIT: Duration = Duration::from_secs(30);

async fn start_stack() -> (DevStack, Api) {
    start_stack_with(&[]).await
}

async fn start_stack_with(extra_env: &[(&str, &str)]) -> (DevStack, Api) {
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
    .chain(extra_env.iter().copied())
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

    // The history shows the dead delivery with its three attempts, and the
    // subscription as failing.
    let (status, list) = api
        .get(&format!(
            "/v1/subscriptions/{dead_id}/deliveries?status=dead"
        ))
        .await;
    assert_eq!(status, 200, "{list}");
    let listed = list["deliveries"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["id"].as_str(), Some(task.delivery_id.as_str()));
    assert_eq!(listed[0]["attempt_count"], 3);
    let (status, delivery) = api
        .get(&format!("/v1/deliveries/{}", task.delivery_id))
        .await;
    assert_eq!(status, 200, "{delivery}");
    assert_eq!(delivery["status"], "dead");
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["status_code"], 500);
        assert_eq!(a["error"], "HTTP 500");
    }
    let (_, sub) = api.get(&format!("/v1/subscriptions/{dead_id}")).await;
    assert_eq!(sub["status"], "failing", "{sub}");
    assert!(sub["failing_since"].is_string(), "{sub}");

    // Retried through the API: the dead letter is delivered again, with the
    // same webhook-id; pending at once, then succeeded, and the
    // subscription healthy again.
    failing.script(&[200]);
    let (status, queued) = api
        .post(
            &format!("/v1/deliveries/{}/retry", task.delivery_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let (_, now) = api
        .get(&format!("/v1/deliveries/{}", task.delivery_id))
        .await;
    assert!(
        now["status"] == "pending" || now["status"] == "succeeded",
        "{now}"
    );
    let got = failing.wait_for(4, WAIT).await.unwrap();
    assert_eq!(got[3].header("webhook-id"), Some(task.delivery_id.as_str()));
    let delivery = eventually(&api, &format!("/v1/deliveries/{}", task.delivery_id), |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 4);
    let sub = eventually(&api, &format!("/v1/subscriptions/{dead_id}"), |s| {
        s["status"] == "active"
    })
    .await;
    assert_eq!(sub["failing_since"], Value::Null);

    // Another tenant's or an unknown delivery is a 404; a bad filter a 400.
    let (status, err) = api.get("/v1/deliveries/msg_nope").await;
    assert_eq!((status, &err["error"]["code"]), (404, &json!("not_found")));
    let (status, err) = api
        .get(&format!(
            "/v1/subscriptions/{dead_id}/deliveries?status=lost"
        ))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["details"][0]["field"], "status");
    stack.stop().await.unwrap();
}

/// GETs `path` until `done` holds for the answer (or the wait is over).
async fn eventually(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscription failing for longer than `disable_after` is disabled with
/// a reason and an operational event; a failed token request is retried
/// like a failed delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_too_long_disables_and_token_failures_retry() {
    let (stack, api) = start_stack_with(&[("WAYBILL_DELIVERY__DISABLE_AFTER", "2s")]).await;
    let failing = Receiver::with(Options {
        default_status: Some(503),
        ..Options::default()
    })
    .await
    .unwrap();
    let id = subscribe(
        &api,
        failing.url("/f"),
        json!(["loads_monitoring.*"]),
        &["500ms"; 12],
    )
    .await;
    post_event(&api, "loads_monitoring.monitoring.device_added").await;
    let sub = eventually(&api, &format!("/v1/subscriptions/{id}"), |s| {
        s["status"] == "disabled"
    })
    .await;
    assert_eq!(sub["status"], "disabled", "{sub}");
    let reason = sub["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("without a success"), "{reason}");
    let requests = failing.received().len();
    assert!(
        (4..=8).contains(&requests),
        "about 2 s of 500 ms retries: {requests}"
    );
    // The transitions are operational events about the subscription.
    let events: Vec<waybill_proto::v1::DomainEvent> =
        waybill_testkit::topic::read_all(&stack.brokers, "operational_events")
            .iter()
            .map(|r| waybill_proto::v1::DomainEvent::decode(r.payload.as_slice()).unwrap())
            .collect();
    let names: Vec<&str> = events.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "waybill.subscription.failing",
            "waybill.subscription.disabled"
        ],
        "one failing, one disabled"
    );
    let disabled = &events[1];
    assert_eq!(disabled.entity.as_ref().unwrap().id, id);
    assert_eq!(disabled.attributes["subscription_id"], id);
    let data: Value = serde_json::from_slice(&disabled.payload).unwrap();
    assert_eq!(data["reason"], reason);
    // The queued retries of a disabled subscription are not sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(failing.received().len(), requests);
    let (_, reset) = api
        .post(&format!("/v1/subscriptions/{id}/reset"), json!({}))
        .await;
    assert_eq!(
        (&reset["status"], &reset["failing_since"]),
        (&json!("active"), &Value::Null)
    );

    // The token endpoint fails once: the attempt fails with class oauth2
    // and the retry gets a token and delivers.
    let token_endpoint = Receiver::with(Options {
        script: vec![503],
        body: Some(r#"{"access_token": "tok-9", "expires_in": 3600}"#.into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await.unwrap();
    let oauth = subscribe_with(
        &api,
        json!({"url": receiver.url("/o"), "event_types": ["time_slot_management.*"],
               "retry_policy": {"delays": ["100ms"]},
               "auth": {"type": "oauth2", "token_url": token_endpoint.url("/token"),
                        "client_id": "c", "client_secret": "s"}}),
    )
    .await;
    post_event(&api, "time_slot_management.time_window.created").await;
    let got = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(got[0].header("authorization"), Some("Bearer tok-9"));
    assert_eq!(token_endpoint.received().len(), 2);
    let (_, list) = api
        .get(&format!("/v1/subscriptions/{oauth}/deliveries"))
        .await;
    let delivery_id = list["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let delivery = eventually(&api, &format!("/v1/deliveries/{delivery_id}"), |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        delivery["attempts"][0]["error_class"], "oauth2",
        "{delivery}"
    );
    assert_eq!(
        delivery["attempts"][0]["error"],
        "token endpoint answered HTTP 503"
    );
    stack.stop().await.unwrap();
}

/// Replay since a time re-delivers exactly the subscription's matching
/// events written within the window, with their original webhook-ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_redelivers_exactly_the_window() {
    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    let id = subscribe(
        &api,
        receiver.url("/r"),
        json!([
            "freights.publication.*",
            "time_slot_management.time_window.created"
        ]),
        &["100ms"],
    )
    .await;
    post_event_for(&api, "freights.publication.accepted", "before").await;
    receiver.wait_for(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = time::OffsetDateTime::now_utc();
    post_event_for(&api, "freights.publication.created", "in-1").await;
    post_event_for(&api, "freight_orders.order.created", "other-type").await;
    post_event_for(&api, "time_slot_management.time_window.created", "in-2").await;
    receiver.wait_for(3, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let until = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(50)).await;
    post_event_for(&api, "freights.publication.finished", "after").await;
    let first = receiver.wait_for(4, WAIT).await.unwrap();

    let format = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (status, accepted) = api
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"since": format(since), "until": format(until)}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert!(accepted["replay_id"].as_str().unwrap().starts_with("rpl_"));
    let got = receiver.wait_for(6, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received().len(),
        6,
        "exactly the two events of the window"
    );
    let entity = |r: &Received| r.json()["entity"]["id"].as_str().unwrap().to_owned();
    let mut replayed: Vec<String> = got[4..].iter().map(entity).collect();
    replayed.sort();
    assert_eq!(replayed, ["in-1", "in-2"]);
    for r in &got[4..] {
        let original = first.iter().find(|o| entity(o) == entity(r)).unwrap();
        assert_eq!(r.header("webhook-id"), original.header("webhook-id"));
    }

    // Only the failed ones: nothing failed, so nothing is sent.
    let (status, _) = api
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"since": format(since), "only_failed": true}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, err) = api
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"since": "last week"}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 6);
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

    // The healthy endpoint alone first, for its normal rate; then next to
    // the hanging one. Each round is one batch, so posting does not pace it.
    subscribe(&api, healthy.url("/ok"), types.clone(), &["5s"]).await;
    const EVENTS: usize = 40;
    let round = |first: usize| {
        let api = api.clone();
        let healthy = &healthy;
        async move {
            let events: Vec<Value> = (first..first + EVENTS)
                .map(|i| {
                    json!({"event_name": "freights.publication.accepted",
                                "entity": {"type": "freight", "id": format!("f-{i}")}, "data": {}})
                })
                .collect();
            let start = Instant::now();
            let (status, body) = api
                .post("/v1/events/batch", json!({"events": events}))
                .await;
            assert_eq!(status, 202, "{body}");
            assert!(
                body["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["error"].is_null()),
                "{body}"
            );
            let got = healthy.wait_for(first + EVENTS, WAIT).await.unwrap();
            got[first + EVENTS - 1].at - start
        }
    };
    let alone = round(0).await;
    subscribe(&api, hanging.url("/h"), types, &["5s"]).await;
    let shared = round(EVENTS).await;
    let hanging_started = hanging.received().len();
    let rate = |took: Duration| EVENTS as f64 / took.as_secs_f64();
    eprintln!(
        "healthy alone: {EVENTS} deliveries in {alone:?} ({:.0}/s); next to a hanging endpoint: \
         {EVENTS} in {shared:?} ({:.0}/s); hanging: {hanging_started} requests started meanwhile, none answered",
        rate(alone),
        rate(shared)
    );
    // Every healthy delivery arrived before the first hanging request even
    // timed out (2 s): none of them waited for the hanging endpoint.
    assert!(
        shared < Duration::from_secs(2),
        "healthy deliveries took {shared:?}"
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

/// The catalog: `GET /v1/event_types` lists the built-in events and the
/// ones the operator added in `[catalog]` (another naming scheme), which
/// are accepted, matched by pattern and delivered like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_event_types_are_listed_and_delivered() {
    let (stack, api) = start_stack_with(&[(
        "WAYBILL_CATALOG__EVENT_TYPES",
        r#"[{name = "Shipment.Created", topic = "freights", description = "A shipment was created."},
            {name = "ROUTE_CREATED", topic = "orders", domain = "routes"}]"#,
    )])
    .await;
    let (status, list) = api.get("/v1/event_types").await;
    assert_eq!(status, 200, "{list}");
    let types = list["event_types"].as_array().unwrap();
    // The 39 of the four domains, Waybill's 4 operational events, 2 added.
    assert_eq!(types.len(), 39 + 4 + 2, "{list}");
    let find = |name: &str| types.iter().find(|t| t["name"] == name).cloned();
    assert_eq!(
        find("freights_processing.publication.finished").unwrap(),
        json!({"name": "freights_processing.publication.finished", "domain": "freights_processing",
               "topic": "freights", "description": "The processing of a freight's publication finished."})
    );
    assert_eq!(find("ROUTE_CREATED").unwrap()["domain"], "routes");
    assert_eq!(find("Shipment.Created").unwrap()["topic"], "freights");
    let names: Vec<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");

    let receiver = Receiver::start().await.unwrap();
    subscribe(
        &api,
        receiver.url("/s"),
        json!(["Shipment.*", "ROUTE_CREATED"]),
        &["100ms"],
    )
    .await;
    // Unknown names are still refused, with the catalog to look at.
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": "Shipment.Lost", "entity": {"type": "s", "id": "1"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET /v1/event_types"),
        "{body}"
    );
    post_event(&api, "Shipment.Created").await;
    post_event(&api, "ROUTE_CREATED").await;
    post_event(&api, "freights.freight.create").await;
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    let mut names: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["event_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["ROUTE_CREATED", "Shipment.Created"]);

    // Through the operator API: every service learns the type from the
    // `event_types` topic.
    let operator = Api::new(stack.api_url(), stack.operator_token.clone());
    let added =
        json!({"name": "Dispatch.Truck.Left", "topic": "orders", "description": "A truck left."});
    let (status, body) = api.post("/v1/event_types", added.clone()).await;
    assert_eq!(status, 401, "tenants cannot add types: {body}");
    let (status, body) = operator.post("/v1/event_types", added.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"name": "Dispatch.Truck.Left", "domain": "Dispatch", "topic": "orders",
               "description": "A truck left."})
    );
    let (status, body) = operator.post("/v1/event_types", added).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("conflict")),
        "{body}"
    );
    let (status, body) = operator
        .post(
            "/v1/event_types",
            json!({"name": "bad name", "topic": "shipments"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        2,
        "{body}"
    );
    subscribe(&api, receiver.url("/d"), json!(["Dispatch.*"]), &["100ms"]).await;
    post_event(&api, "Dispatch.Truck.Left").await;
    let got = receiver.wait_for(3, WAIT).await.unwrap();
    assert_eq!(got[2].json()["event_name"], "Dispatch.Truck.Left");
    let (_, list) = api.get("/v1/event_types").await;
    assert_eq!(list["event_types"].as_array().unwrap().len(), 39 + 4 + 3);

    let (status, _) = operator
        .delete("/v1/event_types/freights.freight.create")
        .await;
    assert_eq!(status, 409, "built-in types stay");
    let (status, _) = operator.delete("/v1/event_types/Nope.Nope").await;
    assert_eq!(status, 404);
    let (status, _) = operator.delete("/v1/event_types/Dispatch.Truck.Left").await;
    assert_eq!(status, 204);
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": "Dispatch.Truck.Left", "entity": {"id": "1"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    stack.stop().await.unwrap();
}

/// `POST /v1/events/batch`: each item accepted or refused on its own, in
/// order; a client id is accepted once within the dedup window (a repeat,
/// in a batch or alone, answers where the first was written and is not
/// delivered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_client_ids_accepted_once() {
    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    subscribe(&api, receiver.url("/b"), json!(["freights.*"]), &["100ms"]).await;
    let event = |name: &str, id: Option<&str>| {
        let mut e = json!({"event_name": name, "entity": {"type": "freight", "id": "F-9"},
                           "data": {"n": 1}});
        if let Some(id) = id {
            e["id"] = json!(id);
        }
        e
    };
    let huge = json!({"event_name": "freights.freight.create", "entity": {"id": "F-9"},
                      "data": {"blob": "x".repeat(300 * 1024)}});
    let (status, body) = api
        .post(
            "/v1/events/batch",
            json!({"events": [
                event("freights.freight.create", Some("client-1")),
                event("freights.nope", None),
                huge,
                event("freights.freight.update", None),
                event("freights.freight.create", Some("client-1")),
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["refused"].as_u64()),
        (Some(3), Some(2))
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], "client-1");
    assert_eq!(results[1]["error"]["code"], "validation_failed");
    assert_eq!(results[1]["error"]["field"], "event_name");
    assert_eq!(results[2]["error"]["code"], "payload_too_large");
    assert!(results[3]["id"].as_str().unwrap().starts_with("evt_"));
    // The repeat inside the batch got the first answer.
    assert_eq!(results[4], results[0]);

    // Alone, later: the same answer, nothing new on the topic.
    let (status, again) = api
        .post(
            "/v1/events",
            event("freights.freight.create", Some("client-1")),
        )
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again, results[0]);
    // Same entity, so in order: once the last one arrives, every earlier
    // one has.
    post_event_for(&api, "freights.freight.update", "F-9").await;
    let got = receiver.wait_for(3, WAIT).await.unwrap();
    let ids: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| *id == "client-1").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(ids.len(), 3, "{ids:?}");

    // Whole-batch problems are one 400 that says what to fix.
    for (bad, field) in [
        (json!({"events": []}), "events"),
        (
            json!({"events": vec![event("freights.freight.create", None); 1001]}),
            "events",
        ),
        (json!({"event": []}), "events"),
    ] {
        let (status, body) = api.post("/v1/events/batch", bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    stack.stop().await.unwrap();
}

/// Per-event `callback_url` (as in per-object callback APIs): the event also
/// goes to its own URL, signed with the tenant's callbacks secret
/// (`GET /v1/callbacks/secret`), retried by that subscription's policy; a
/// 410 from one callback URL kills that delivery, not the subscription. A
/// producer writing a callback for a tenant that never asked for the
/// secret gets a dead letter, not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_event_callbacks() {
    let (stack, api) = start_stack().await;
    let everything = Receiver::start().await.unwrap();
    subscribe(&api, everything.url("/all"), json!(["*"]), &["100ms"]).await;
    let callbacks = Receiver::with(Options {
        script: vec![500],
        ..Options::default()
    })
    .await
    .unwrap();

    // Straight to Kafka, before the tenant has a callbacks subscription.
    let kafka = stack.config.kafka.clone();
    let topics = waybill_kafka::Topics::of(&kafka);
    let producer = waybill_kafka::Producer::new(&kafka, WAIT).unwrap();
    let raw = waybill_core::event::Event {
        id: "evt-raw-callback".into(),
        tenant_id: waybill::dev::DEV_TENANT.into(),
        name: "freights.freight.create".into(),
        occurred_at: time::OffsetDateTime::now_utc(),
        entity: waybill_core::event::EntityRef {
            kind: "freight".into(),
            id: "F-cb".into(),
        },
        attributes: Default::default(),
        callback_url: Some(callbacks.url("/raw")),
        payload: b"{}".to_vec(),
    };
    producer
        .send(
            &topics.domain(waybill_core::catalog::DomainTopic::Freights),
            b"F-cb",
            Some(&waybill_proto::convert::event_to_proto(&raw).encode_to_vec()),
            waybill_kafka::headers::standard(waybill_proto::SCHEMA_VERSION, None),
        )
        .await
        .unwrap();
    everything.wait_for(1, WAIT).await.unwrap();
    let dead = waybill_testkit::topic::read_all(&stack.brokers, "dead_letters");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .header("waybill-dlq-reason")
            .unwrap()
            .contains("GET /v1/callbacks/secret")
    );

    let (status, secret) = api.get("/v1/callbacks/secret").await;
    assert_eq!(status, 200, "{secret}");
    let callbacks_id = secret["subscription_id"].as_str().unwrap().to_owned();
    let secret =
        waybill_core::signing::SigningSecret::parse(secret["signing_secret"].as_str().unwrap())
            .unwrap();
    // The callbacks subscription takes the default policy; make it quick.
    let (status, body) = api
        .patch(
            &format!("/v1/subscriptions/{callbacks_id}"),
            json!({"retry_policy": {"delays": ["100ms"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Refused like a subscription URL.
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.freight.create", "entity": {"id": "F-cb"},
                   "callback_url": "ftp://example.com/x", "data": {}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "callback_url");

    let (status, body) = api
        .post(
            "/v1/events",
            json!({"id": "evt-with-callback", "event_name": "freights.freight.update",
                   "entity": {"id": "F-cb"}, "callback_url": callbacks.url("/freight/F-cb"),
                   "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Failed once, retried by the callbacks policy, signed with its secret.
    let got = callbacks.wait_for(2, WAIT).await.unwrap();
    assert!(got.iter().all(|r| r.path == "/freight/F-cb"), "{got:?}");
    assert!(got[1].signature_valid(&secret));
    assert_eq!(got[1].json()["id"], "evt-with-callback");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    // The subscriptions get the event as usual, once.
    let all = everything.wait_for(2, WAIT).await.unwrap();
    assert_eq!(all[1].json()["id"], "evt-with-callback");

    // A 410 from a callback URL: that delivery is dead, the callbacks
    // subscription stays active.
    let gone = Receiver::with(Options {
        default_status: Some(410),
        ..Options::default()
    })
    .await
    .unwrap();
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.freight.update", "entity": {"id": "F-cb"},
                   "callback_url": gone.url("/gone"), "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    gone.wait_for(1, WAIT).await.unwrap();
    let list = eventually(
        &api,
        &format!("/v1/subscriptions/{callbacks_id}/deliveries"),
        |l| {
            l["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["status"] == "dead"))
        },
    )
    .await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 2, "{list}");
    let (_, sub) = api.get(&format!("/v1/subscriptions/{callbacks_id}")).await;
    assert_eq!(sub["status"], "active", "{sub}");
    stack.stop().await.unwrap();
}

/// An upstream producer that writes the same event twice (a retried write)
/// gets one delivery: the matcher recognises the repeated event id on its
/// partition. And a task emitted twice (a matcher that restarted before its
/// commit re-emits its tasks) is skipped by the delivery service, which saw
/// its id succeed. A replay still delivers it again (tested above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_twice_is_delivered_once() {
    use waybill_core::event::{EntityRef, Event};
    use waybill_kafka::{Producer, Topics, headers};

    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    let subscription_id = subscribe(
        &api,
        receiver.url("/r"),
        json!(["freights.publication.created"]),
        &["100ms"],
    )
    .await;
    let kafka = stack.config.kafka.clone();
    let topics = Topics::of(&kafka);
    let producer = Producer::new(&kafka, Duration::from_secs(10)).unwrap();
    let event = Event {
        id: "evt-twice".into(),
        tenant_id: dev::DEV_TENANT.into(),
        name: "freights.publication.created".into(),
        occurred_at: time::OffsetDateTime::now_utc(),
        entity: EntityRef {
            kind: "freight".into(),
            id: "F-twice".into(),
        },
        attributes: Default::default(),
        callback_url: None,
        payload: b"{}".to_vec(),
    };
    let record = waybill_proto::convert::event_to_proto(&event).encode_to_vec();
    for _ in 0..2 {
        producer
            .send(
                &topics.domain(waybill_core::catalog::DomainTopic::Freights),
                b"F-twice",
                Some(&record),
                headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
            .await
            .unwrap();
    }
    receiver.wait_for(1, WAIT).await.unwrap();
    let metric = |name: &'static str| {
        let admin = stack.admin.clone();
        async move {
            // One process: every admin endpoint serves the same registry.
            let mut total: f64 = 0.0;
            for addr in admin {
                let text = reqwest::get(format!("http://{addr}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                total = total.max(
                    text.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap()),
                );
            }
            total
        }
    };
    let deadline = Instant::now() + WAIT;
    while metric("waybill_matcher_duplicate_events_total ").await < 1.0 {
        assert!(Instant::now() < deadline, "the repeat was not recognised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.received().len(), 1, "delivered once");

    // The same task twice, straight onto `deliveries`.
    let task = waybill_proto::v1::DeliveryTask {
        delivery_id: waybill_core::ids::delivery_id(
            dev::DEV_TENANT,
            "evt-task-twice",
            &subscription_id,
        ),
        subscription_id: subscription_id.clone(),
        tenant_id: dev::DEV_TENANT.into(),
        event: Some(waybill_proto::convert::event_to_proto(&Event {
            id: "evt-task-twice".into(),
            ..event
        })),
        attempt: 1,
        created_at: Some(waybill_proto::convert::timestamp(
            time::OffsetDateTime::now_utc(),
        )),
        ..Default::default()
    }
    .encode_to_vec();
    for _ in 0..2 {
        producer
            .send(
                &topics.deliveries(),
                subscription_id.as_bytes(),
                Some(&task),
                headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
            .await
            .unwrap();
    }
    receiver.wait_for(2, WAIT).await.unwrap();
    // The second task comes right behind the first on the same lane.
    let deadline = Instant::now() + WAIT;
    let skipped = loop {
        let skipped = metric("waybill_duplicate_tasks_skipped_total ").await;
        if skipped >= 1.0 || Instant::now() > deadline {
            break skipped;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(skipped, 1.0, "the second task was skipped as a duplicate");
    assert_eq!(receiver.received().len(), 2, "each delivered once");
    stack.stop().await.unwrap();
}
