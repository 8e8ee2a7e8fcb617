//! End to end: a separate tansu broker process, the three services as three
//! separate `waybill` processes, a subscription pointing at a local
//! receiver, and one event of each domain that must arrive exactly once,
//! signed, with the right body. Then SIGTERM stops every service cleanly.
//!
//! tansu is found as [`waybill_testkit::cluster::tansu_bin`] says
//! (`make test` installs it first).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_core::signing::SigningSecret;
use waybill_testkit::api::Api;
use waybill_testkit::cluster::{Cluster, KEY, OPERATOR, Options, Role};
use waybill_testkit::receiver::{Options as ReceiverOptions, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_of_each_domain_arrives_once_through_three_processes_on_tansu() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = cluster.api();

    let receiver = Receiver::start().await.unwrap();
    let http = reqwest::Client::new();
    let (status, created) = Api::new(api.clone(), KEY)
        .post(
            "/v1/subscriptions",
            json!({"name": "e2e", "url": receiver.url("/hook"), "event_types": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = SigningSecret::parse(created["signing_secret"].as_str().expect("secret")).unwrap();
    let subscription_id = created["id"].as_str().unwrap().to_owned();

    let events = [
        ("freights.publication.accepted", "freight", "F-100"),
        ("freight_orders.order.created", "order", "O-100"),
        (
            "time_slot_management.announcement.updated",
            "announcement",
            "A-100",
        ),
        (
            "loads_monitoring.monitoring.monitoring_completed",
            "monitoring",
            "M-100",
        ),
    ];
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let r = http
            .post(format!("{api}/v1/events"))
            .bearer_auth(KEY)
            .json(&json!({"id": format!("evt-e2e-{i}"), "event_name": name,
                          "entity": {"type": kind, "id": id}, "data": {"seq": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    let got = match receiver
        .wait_for(events.len(), Duration::from_secs(90))
        .await
    {
        Ok(got) => got,
        Err(e) => panic!("{e}\n{}", cluster.logs()),
    };
    // Nothing more arrives (exactly once in the happy path).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), events.len(), "no duplicates");
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let event_id = format!("evt-e2e-{i}");
        let r = got
            .iter()
            .find(|r| r.json()["id"] == event_id.as_str())
            .unwrap_or_else(|| panic!("{event_id} did not arrive"));
        assert!(r.signature_valid(&secret), "{event_id}: signature");
        let body = r.json();
        assert_eq!(body["event_name"], *name);
        assert_eq!(body["entity"], json!({"type": kind, "id": id}));
        assert_eq!(body["data"], json!({"seq": i}));
        assert_eq!(
            r.header("webhook-id").unwrap(),
            waybill_core::ids::delivery_id("ten_e2e", &event_id, &subscription_id)
        );
    }

    // On tansu too: a failed attempt is retried through a retry tier, the
    // history shows both attempts, a retry through the API reads the task
    // back from the log, and a replay finds the event by time.
    let tenant_api = Api::new(api.clone(), KEY);
    let flaky = Receiver::with(ReceiverOptions {
        script: vec![500],
        ..ReceiverOptions::default()
    })
    .await
    .unwrap();
    let (status, sub) = tenant_api
        .post(
            "/v1/subscriptions",
            json!({"url": flaky.url("/flaky"), "event_types": ["freight_orders.order.created"],
                   "retry_policy": {"delays": ["100ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let since = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    let (status, _) = tenant_api
        .post(
            "/v1/events",
            json!({"id": "evt-e2e-retry", "event_name": "freight_orders.order.created",
                   "entity": {"type": "order", "id": "O-200"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = flaky.wait_for(2, Duration::from_secs(60)).await.unwrap();
    let delivery_id = got[0].header("webhook-id").unwrap().to_owned();
    assert_eq!(got[1].header("webhook-id"), Some(delivery_id.as_str()));
    assert!(got[1].at - got[0].at >= Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let (_, d) = tenant_api
            .get(&format!("/v1/deliveries/{delivery_id}"))
            .await;
        if d["status"] == "succeeded" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(200)]);
    let (status, queued) = tenant_api
        .post(&format!("/v1/deliveries/{delivery_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    flaky.wait_for(3, Duration::from_secs(60)).await.unwrap();
    let sub_id = sub["id"].as_str().unwrap();
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, replay) = tenant_api
        .post(
            &format!("/v1/subscriptions/{sub_id}/replay"),
            json!({"since": since}),
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    let got = flaky.wait_for(4, Duration::from_secs(60)).await.unwrap();
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == Some(delivery_id.as_str()))
    );

    // Tenants and subscriptions made through the API are rebuilt, equal,
    // from the topics by a restarted ingest process.
    let operator = Api::new(api.clone(), OPERATOR);
    let (status, tenant) = operator
        .post("/v1/tenants", json!({"name": "restart"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = operator
        .post(&format!("/v1/tenants/{tenant_id}/api_keys"), json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    let acme = Api::new(api.clone(), key["key"].as_str().unwrap());
    let mut made = Vec::new();
    for (i, extra) in [
        json!({"auth": {"type": "basic", "username": "u", "password": "p"}}),
        json!({"filter": {"scopes": [{"predicates": [
            {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["7"]}]}]},
            "retry_policy": {"initial_delay": "1s", "multiplier": 2, "max_delay": "1m", "max_attempts": 5}}),
        json!({"headers": {"X-A": "1"}, "rate_limit_per_second": 3, "method": "PUT"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"name": format!("s{i}"), "url": receiver.url("/r"), "event_types": ["freights.*"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, created) = acme.post("/v1/subscriptions", body).await;
        assert_eq!(status, 201, "{created}");
        made.push(created["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = acme
        .patch(
            &format!("/v1/subscriptions/{}", made[0]),
            json!({"enabled": false, "headers": {"X-B": "2"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme
        .post(
            &format!("/v1/subscriptions/{}/secret/rotate", made[1]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme.delete(&format!("/v1/subscriptions/{}", made[2])).await;
    assert_eq!(status, 204);
    let snapshot = |acme: Api, made: Vec<String>| async move {
        let (_, list) = acme.get("/v1/subscriptions").await;
        let mut secrets = Vec::new();
        for id in &made {
            secrets.push(acme.get(&format!("/v1/subscriptions/{id}/secret")).await);
        }
        (list, secrets)
    };
    let before = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(before.0["total_count"], 2);

    cluster
        .terminate(Role::Ingest, Duration::from_secs(30))
        .unwrap();
    cluster.restart(Role::Ingest).await;
    let after = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(
        after, before,
        "the rebuilt projection equals the state before"
    );

    // Graceful shutdown: every service exits 0 on SIGTERM within its grace.
    for role in [Role::Delivery, Role::Matcher, Role::Ingest] {
        cluster.terminate(role, Duration::from_secs(30)).unwrap();
    }
}
