//! State integrity across replicas, on Apache Kafka with separate
//! processes: two ingest replicas and a delivery service write one
//! subscription at once, and nothing is lost, nothing comes back.
//!
//! - Concurrent PATCHes of different fields through both replicas while
//!   the endpoint flips between failing and healthy: every change answered
//!   `2xx` is in the final state, the revision counts exactly the changes
//!   answered `2xx`, every other answer is `409` or `412`, and the health is
//!   the last one recorded (a user's edit never resets it, a health change
//!   never undoes an edit).
//! - Sealing-key rotation while events flow: a new key rolled out, `waybill
//!   reseal`, the old key removed; every record stays readable, every event
//!   arrives with its credentials.
//! - DELETE racing health changes: the subscription never comes back, and
//!   no delivery starts after the DELETE's answer (beyond the delivery
//!   service's fold of the tombstone, measured).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_core::signing::SigningSecret;
use waybill_proto::Message as _;
use waybill_proto::convert::SealedWith;
use waybill_proto::v1;
use waybill_testkit::api::Api;
use waybill_testkit::cluster::{Cluster, KEY, Options, Role};
use waybill_testkit::receiver::Receiver;

const EVENT: &str = "freights.publication.accepted";

async fn post_event(api: &Api, entity: &str) {
    let (status, answer) = api
        .post(
            "/v1/events",
            json!({"event_name": EVENT, "entity": {"type": "freight", "id": entity}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
}

/// Polls `GET path` through `api` until `done` holds (then the answer).
async fn until(api: &Api, path: &str, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, got) = api.get(path).await;
        if done(status, &got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last answer {status} {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_through_two_replicas_lose_nothing() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let a = Api::new(cluster.api(), KEY);
    let b = Api::new(cluster.start_ingest_replica().await, KEY);
    let receiver = Receiver::start().await.unwrap();

    let (status, created) = a
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/races"), "event_types": [EVENT],
                   "retry_policy": {"delays": ["100ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/subscriptions/{}", created["id"].as_str().unwrap());

    let mut revision = 1u64;
    let (mut conflicts, mut preconditions) = (0, 0);
    for round in 0..30u64 {
        // The endpoint flips: health records race the edits.
        receiver.set_status(if round % 2 == 0 { 500 } else { 200 });
        post_event(&a, &format!("F-{round}")).await;
        let r = round.to_string();
        let delays = if round % 2 == 0 { "100ms" } else { "150ms" };
        let if_match = format!("\"{revision}\"");
        let writes = [
            (&a, json!({"name": format!("n{r}")}), None),
            (&b, json!({"metadata": {"round": r}}), None),
            (&a, json!({"headers": {"X-Round": r}}), None),
            (&b, json!({"rate_limit_per_second": 100 + round}), None),
            (
                &b,
                json!({"retry_policy": {"delays": [delays]}}),
                Some(if_match.as_str()),
            ),
        ];
        let answers = futures::future::join_all(writes.iter().map(|(api, body, if_match)| {
            let headers: Vec<(&str, &str)> = if_match.iter().map(|m| ("if-match", *m)).collect();
            let path = path.clone();
            async move {
                api.call_with(reqwest::Method::PATCH, &path, Some(body), &headers)
                    .await
            }
        }))
        .await;
        let mut applied = Vec::new();
        for ((_, body, if_match), (status, answer)) in writes.iter().zip(&answers) {
            match *status {
                200 => {
                    revision += 1;
                    applied.push(body.clone());
                }
                409 => {
                    assert_eq!(answer["error"]["code"], "conflict", "{answer}");
                    conflicts += 1;
                }
                412 if if_match.is_some() => {
                    assert_eq!(answer["error"]["code"], "precondition_failed");
                    preconditions += 1;
                }
                other => panic!("round {round}: {body} answered {other} {answer}"),
            }
        }
        // Both replicas converge on a state holding every applied change,
        // at exactly one revision per applied change.
        for api in [&a, &b] {
            let got = until(api, &path, "convergence", |s, g| {
                s == 200 && g["revision"].as_u64() >= Some(revision)
            })
            .await;
            assert_eq!(got["revision"].as_u64(), Some(revision), "{got}");
            for change in &applied {
                for (field, value) in change.as_object().unwrap() {
                    assert_eq!(&got[field], value, "round {round}: {field} lost\n{got}");
                }
            }
        }
    }
    // The replicas did race: writes lost to the other replica's and were
    // applied again.
    let reapplied: usize = ["ingest.log", "ingest-2.log"]
        .iter()
        .map(|log| {
            std::fs::read_to_string(cluster.dir().join(log))
                .unwrap_or_default()
                .matches("a concurrent write won")
                .count()
        })
        .sum();
    eprintln!(
        "30 rounds: revision {revision}, {reapplied} writes applied again, {conflicts} conflicts, \
         {preconditions} precondition failures"
    );
    assert!(reapplied > 0, "no write ever raced another");

    // Every delivery of the rounds settles (the endpoint answers again), so
    // none is in flight while the health is judged below.
    receiver.set_status(200);
    post_event(&a, "F-settled").await;
    let deliveries = format!("{path}/deliveries?limit=100");
    until(&a, &deliveries, "every delivery settled", |s, g| {
        let settled = |d: &Value| d["status"] == "succeeded" || d["status"] == "dead";
        s == 200
            && g["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 31 && d.iter().all(settled))
    })
    .await;
    for api in [&a, &b] {
        until(api, &path, "active after the rounds", |_, g| {
            g["status"] == "active"
        })
        .await;
    }

    // Health is the last one recorded, and edits neither reset it nor are
    // undone by it; it does not count as a revision.
    receiver.set_status(500);
    post_event(&a, "F-failing").await;
    until(&b, &path, "failing", |_, g| g["status"] == "failing").await;
    let (status, edited) = b
        .patch(&path, json!({"name": "edited while failing"}))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["status"], "failing", "an edit kept the health");
    revision += 1;
    receiver.set_status(200);
    post_event(&a, "F-recovered").await;
    for api in [&a, &b] {
        let got = until(api, &path, "recovered", |_, g| g["status"] == "active").await;
        assert_eq!(
            got["name"], "edited while failing",
            "the health kept the edit"
        );
        assert_eq!(got["revision"].as_u64(), Some(revision), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subscription_never_comes_back() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let a = Api::new(cluster.api(), KEY);
    let b = Api::new(cluster.start_ingest_replica().await, KEY);
    let receiver = Arc::new(Receiver::start().await.unwrap());
    let mut latest_start = Duration::ZERO;

    for round in 0..8 {
        let hook = format!("/deleted-{round}");
        let (status, created) = a
            .post(
                "/v1/subscriptions",
                json!({"url": receiver.url(&hook), "event_types": [EVENT],
                       "retry_policy": {"delays": ["100ms", "100ms", "100ms"]}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/subscriptions/{id}");

        // Events keep coming and the endpoint flips, so health records are
        // being written while the DELETE goes through.
        let running = Arc::new(AtomicBool::new(true));
        let load = {
            let (a, running, receiver) = (a.clone(), running.clone(), receiver.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while running.load(Ordering::Relaxed) {
                    receiver.set_status(if n % 2 == 0 { 500 } else { 200 });
                    post_event(&a, &format!("D-{n}")).await;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !receiver.received().iter().any(|r| r.path == hook) {
            assert!(
                Instant::now() < deadline,
                "no delivery to {hook}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * round)).await;
        let (status, answer) = b.delete(&path).await;
        assert_eq!(status, 204, "{answer}");
        let deleted_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        running.store(false, Ordering::Relaxed);
        load.await.unwrap();

        // Never back: not through either replica, not in the list, not
        // after the delivery service wrote more health.
        for api in [&a, &b] {
            until(api, &path, "deleted", |s, _| s == 404).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for api in [&a, &b] {
            let (status, got) = api.get(&path).await;
            assert_eq!(status, 404, "round {round}: came back: {got}");
            let (_, list) = api.get("/v1/subscriptions?limit=1000").await;
            assert!(
                !list.to_string().contains(&id),
                "round {round}: listed after delete"
            );
        }
        for r in receiver.received().iter().filter(|r| r.path == hook) {
            if r.at > deleted_at {
                latest_start = latest_start.max(r.at - deleted_at);
            }
        }
    }
    eprintln!("latest delivery start after a DELETE's answer: {latest_start:?}");
    // A delivery that started after the answer can only be one whose
    // worker had not folded the tombstone yet: milliseconds, not more.
    assert!(
        latest_start < Duration::from_millis(500),
        "a delivery started {latest_start:?} after the DELETE's answer"
    );
}

/// A delivery attempt record as the delivery service writes it.
fn attempt_record(
    delivery: &str,
    subscription: &str,
    entity: &str,
    created: time::OffsetDateTime,
    started: time::OffsetDateTime,
) -> Vec<u8> {
    use waybill_proto::Message as _;
    use waybill_proto::convert::timestamp;
    waybill_proto::v1::DeliveryAttempt {
        delivery_id: delivery.into(),
        subscription_id: subscription.into(),
        tenant_id: waybill_testkit::cluster::TENANT.into(),
        event_id: format!("evt_{delivery}"),
        event_name: EVENT.into(),
        attempt: 1,
        started_at: Some(timestamp(started)),
        created_at: Some(timestamp(created)),
        entity_type: "freight".into(),
        entity_id: entity.into(),
        outcome: waybill_proto::v1::AttemptOutcome::Succeeded as i32,
        status_code: 200,
        ..Default::default()
    }
    .encode_to_vec()
}

fn ids(list: &Value) -> Vec<String> {
    list["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `path` (which has a query), following `next_cursor`.
async fn all_pages(api: &Api, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = api.get(&page_path).await;
        assert_eq!(status, 200, "{page}");
        out.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_and_searched_in_creation_order() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();

    // A real workload: two subscriptions, events about two freights, each
    // delivered before the next is posted; the first one fails once and is
    // retried, so its records come last.
    receiver.script(&[500]);
    let mut subs = Vec::new();
    for name in ["a", "b"] {
        let (status, created) = api
            .post(
                "/v1/subscriptions",
                json!({"name": name, "url": receiver.url(&format!("/{name}")), "event_types": [EVENT],
                       "retry_policy": {"delays": ["1s"]}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        subs.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut expected = 0;
    for entity in ["F-1", "F-2", "F-1"] {
        post_event(&api, entity).await;
        expected += 2;
        if expected == 2 {
            expected += 1; // the retry
        }
        receiver
            .wait_for(expected, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    }
    let search = |q: &str| format!("/v1/deliveries?{q}");
    let got = until(&api, &search("entity_id=F-1"), "F-1 searched", |_, v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 4)
            && v["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "succeeded")
    })
    .await;
    let created: Vec<String> = got["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["created_at"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, sorted, "newest first by creation: {got}");
    let subs_seen: std::collections::BTreeSet<&str> = got["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subscription_id"].as_str().unwrap())
        .collect();
    assert_eq!(subs_seen.len(), 2, "one entity across the subscriptions");
    // The first delivery (retried, so recorded last) is still the oldest
    // of its subscription (the first request of all answered 500).
    let mut retried = 0;
    for sub in &subs {
        let listed = all_pages(&api, &format!("/v1/subscriptions/{sub}/deliveries?limit=1")).await;
        assert_eq!(listed.len(), 3, "{listed:?}");
        for (n, delivery) in listed.iter().enumerate() {
            let (_, d) = api.get(&format!("/v1/deliveries/{delivery}")).await;
            if d["attempts"].as_array().unwrap().len() == 2 {
                assert_eq!(
                    n, 2,
                    "the retried delivery is listed as the oldest: {listed:?}"
                );
                retried += 1;
            }
        }
    }
    assert_eq!(retried, 1);

    // Attempt records written straight to the topic in any order: the
    // lists follow when each delivery was created, page by page.
    let sub = &subs[1];
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.brokers())
        .create()
        .unwrap();
    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let at = |m: i64| base + time::Duration::minutes(m);
    // Created 1..=6 (minutes), folded as 4, 6, 1, 3, 5, 2; entity F-9 for
    // the even ones.
    for n in [4i64, 6, 1, 3, 5, 2] {
        let entity = if n % 2 == 0 { "F-9" } else { "F-8" };
        let value = attempt_record(&format!("msg_out_{n}"), sub, entity, at(n), at(10 - n));
        producer
            .send(
                rdkafka::producer::FutureRecord::to("delivery_attempts")
                    .key(sub.as_str())
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let window = format!(
        "since={}&until={}",
        at(1)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        at(6)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let listed = until(
        &api,
        &format!("/v1/subscriptions/{sub}/deliveries?limit=100&{window}"),
        "out-of-order records listed",
        |_, v| v["deliveries"].as_array().is_some_and(|d| d.len() == 6),
    )
    .await;
    let want: Vec<String> = (1..=6).rev().map(|n| format!("msg_out_{n}")).collect();
    assert_eq!(ids(&listed), want);
    let paged = all_pages(
        &api,
        &format!("/v1/deliveries?subscription_id={sub}&limit=4&{window}"),
    )
    .await;
    assert_eq!(paged, want, "pages follow the same order");
    let by_entity = all_pages(&api, &search("entity_id=F-9&limit=1")).await;
    assert_eq!(by_entity, ["msg_out_6", "msg_out_4", "msg_out_2"]);

    // Bad parameters are named.
    let (status, answer) = api.get(&search("cursor=nonsense")).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("cursor"))
    );
    let (status, answer) = api.get(&search("since=yesterday")).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("since"))
    );
    let (status, answer) = api
        .get(&format!(
            "/v1/subscriptions/{sub}/deliveries?subscription_id={sub}"
        ))
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_after_its_ingest_is_killed_and_queues_nothing_twice() {
    waybill_testkit::wait::watchdog(Duration::from_secs(900));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/replayed"), "event_types": [EVENT]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    const EVENTS: usize = 10_000;
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    for batch in 0..EVENTS / 1000 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                json!({"id": format!("evt-r-{n:05}"), "event_name": EVENT,
                       "entity": {"type": "freight", "id": format!("F-{}", n % 300)}, "data": {"n": n}})
            })
            .collect();
        let (status, answer) = api
            .post("/v1/events/batch", json!({ "events": events }))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    receiver
        .wait_for(EVENTS, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("originals: {e}\n{}", cluster.logs()));

    let (status, accepted) = api
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"since": since.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let status_url = accepted["status_url"].as_str().unwrap().to_owned();
    // Kill the ingest process once part of the replay is recorded.
    let at_kill = until(&api, &status_url, "replay under way", |s, r| {
        s == 200 && (r["queued"].as_u64() > Some(0) || r["status"] != "running")
    })
    .await;
    assert_eq!(at_kill["status"], "running", "killed mid-way: {at_kill}");
    cluster.kill(waybill_testkit::cluster::Role::Ingest);
    let killed_at = at_kill["queued"].as_u64().unwrap();
    cluster
        .restart(waybill_testkit::cluster::Role::Ingest)
        .await;
    let done = until(
        &api,
        &status_url,
        "replay done after the restart",
        |s, r| s == 200 && r["status"] != "running",
    )
    .await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["scanned"], EVENTS, "{done}");
    assert_eq!(done["queued"], EVENTS, "{done}");
    assert!(
        done["finished_at"].is_string() && done["error"].is_null(),
        "{done}"
    );

    // Every event once more, none twice.
    receiver
        .wait_for(2 * EVENTS, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("replayed: {e}\n{}", cluster.logs()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_event = std::collections::HashMap::<String, usize>::new();
    for r in receiver.received() {
        *per_event
            .entry(r.json()["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), EVENTS);
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n != 2).take(5).collect();
    assert!(twice.is_empty(), "not delivered exactly twice: {twice:?}");
    let resumed = std::fs::read_to_string(cluster.dir().join("ingest.log"))
        .unwrap_or_default()
        .matches("replay resumed")
        .count();
    assert_eq!(resumed, 1, "the restarted process resumed it");
    eprintln!("replay of {EVENTS}: killed at {killed_at} queued, resumed, done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_through_another_replica_are_recognised() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let a = Api::new(cluster.api(), KEY);
    let b = Api::new(cluster.start_ingest_replica().await, KEY);
    let receiver = Receiver::start().await.unwrap();

    // Idempotency-Key: the first result, through the other replica too.
    let body = json!({"url": receiver.url("/once"), "event_types": [EVENT]});
    let key = [("idempotency-key", "create-once")];
    let (status, first) = a
        .call_with(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = b
        .call_with(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        again["id"], first["id"],
        "the first result, not a second subscription"
    );
    let (status, other) = b
        .call_with(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&json!({"url": receiver.url("/other"), "event_types": [EVENT]})),
            &key,
        )
        .await;
    assert_eq!(status, 409, "the key with another body: {other}");
    let (_, list) = b.get("/v1/subscriptions?limit=100").await;
    assert_eq!(list["total_count"], 1, "{list}");
    let id = first["id"].as_str().unwrap();
    let test_key = [("idempotency-key", "test-once")];
    let path = format!("/v1/subscriptions/{id}/test");
    let (s1, t1) = b
        .call_with(reqwest::Method::POST, &path, None, &test_key)
        .await;
    let (s2, t2) = a
        .call_with(reqwest::Method::POST, &path, None, &test_key)
        .await;
    assert_eq!((s1, s2), (202, 202), "{t1} {t2}");
    assert_eq!(t1["delivery_id"], t2["delivery_id"]);

    // The same client event id through both replicas at once.
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        let event = json!({"id": format!("evt-twice-{n}"), "event_name": EVENT,
                           "entity": {"type": "freight", "id": format!("F-{n}")}, "data": {"n": n}});
        let (ra, rb) = tokio::join!(
            a.post("/v1/events", event.clone()),
            b.post("/v1/events", event)
        );
        assert_eq!((ra.0, rb.0), (202, 202), "{} {}", ra.1, rb.1);
    }
    receiver
        .wait_for(EVENTS + 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        got.len(),
        EVENTS + 1,
        "each event once, one test notification"
    );
    assert_eq!(ids.len(), EVENTS + 1);
    let duplicates = std::fs::read_to_string(cluster.dir().join("matcher.log"))
        .unwrap_or_default()
        .matches("not matched again")
        .count();
    assert_eq!(duplicates, EVENTS, "the matcher recognised every repeat");
}

/// The cost of the revision check: sequential PATCHes through one replica
/// on Apache Kafka (answer after the write is folded, verdict checked).
/// A measurement, not a pass/fail check: `cargo test -p waybill --test
/// state_integrity subscription_write_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: BENCHMARKS.md"]
async fn subscription_write_latency() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            json!({"url": "http://127.0.0.1:9/x", "event_types": [EVENT]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/subscriptions/{}", created["id"].as_str().unwrap());
    let mut took = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        let (status, _) = api.patch(&path, json!({"name": format!("n{n}")})).await;
        assert_eq!(status, 200);
        if n >= 50 {
            took.push(started.elapsed());
        }
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    eprintln!(
        "PATCH, sequential, 250 measured: p50 {:?} p90 {:?} p99 {:?}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

/// Makes the broker compact `topic` within seconds.
async fn compact_soon(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("cleanup.policy", "compact")
        .set("min.insync.replicas", "1")
        // Still longer than a repair takes (about 2 s).
        .set("min.compaction.lag.ms", "6000")
        .set("segment.ms", "1000")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "1000");
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .unwrap();
    for r in results {
        r.unwrap_or_else(|e| panic!("alter {topic}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_projection_of_the_compacted_log_holds_every_winner() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    compact_soon(&cluster.brokers(), "subscriptions").await;
    let a = Api::new(cluster.api(), KEY);
    let b = Api::new(cluster.start_ingest_replica().await, KEY);

    let mut paths = Vec::new();
    for n in 0..8 {
        let (status, created) = a
            .post(
                "/v1/subscriptions",
                json!({"name": format!("s{n}"), "url": "http://127.0.0.1:9/x", "event_types": [EVENT]}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        paths.push(format!(
            "/v1/subscriptions/{}",
            created["id"].as_str().unwrap()
        ));
    }
    // Races through both replicas leave records that lost on the log, some
    // of them last of their key until a repair.
    let mut written = 8;
    for round in 0..15 {
        let writes = paths.iter().flat_map(|path| {
            [
                (&a, path.clone(), json!({"name": format!("a{round}")})),
                (
                    &b,
                    path.clone(),
                    json!({"metadata": {"round": round.to_string()}}),
                ),
            ]
        });
        let answers = futures::future::join_all(
            writes.map(|(api, path, body)| async move { api.patch(&path, body).await.0 }),
        )
        .await;
        written += answers.len();
        assert!(
            answers.iter().all(|s| *s == 200 || *s == 409),
            "{answers:?}"
        );
    }
    for path in &paths[..2] {
        let (status, _) = b.delete(path).await;
        assert_eq!(status, 204);
    }
    // What both replicas agree on.
    let mut expected = Vec::new();
    for path in &paths {
        let got_a = until(&a, path, "settled", |_, _| true).await;
        let deleted = got_a["error"]["code"] == "not_found";
        until(&b, path, "the same on both replicas", |s, g| {
            if deleted {
                s == 404
            } else {
                g["revision"] == got_a["revision"]
            }
        })
        .await;
        expected.push(got_a);
    }

    // Compaction runs (new segments roll while a filler keeps writing);
    // wait until most of what was written is gone.
    let filler = &paths[7];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = waybill_testkit::topic::read_all(&cluster.brokers(), "subscriptions").len();
        if left * 3 < written {
            eprintln!("compacted: {left} records left of {written} written");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction: {left} of {written} left\n{}",
            cluster.logs()
        );
        let (status, _) = a.patch(filler, json!({"headers": {"X-Fill": "1"}})).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, last) = a.get(filler).await;
    *expected.last_mut().unwrap() = last;

    // A replica that folds the compacted log from scratch sees every
    // winner, and no deleted subscription.
    let c = Api::new(cluster.start_ingest_replica().await, KEY);
    for (path, want) in paths.iter().zip(&expected) {
        let (status, got) = c.get(path).await;
        if want["error"]["code"] == "not_found" {
            assert_eq!(status, 404, "{path} came back after compaction: {got}");
            continue;
        }
        assert_eq!(status, 200, "{got}");
        for field in ["revision", "name", "metadata", "headers", "updated_at"] {
            assert_eq!(
                got[field], want[field],
                "{path}: {field} after compaction\n{got}\n{want}"
            );
        }
    }
}

/// Rolls a new `[secrets]` section out: writes it into the configuration
/// and restarts every service, one after the other.
async fn roll_keys(cluster: &mut Cluster, current: &str, keys: &[(&str, &str)]) {
    let path = cluster.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[secrets]").expect("a [secrets] section");
    let end = start + text[start..].find("\n\n").expect("the section ends");
    let keys = keys
        .iter()
        .map(|(id, key)| format!("{id} = \"{key}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let section = format!("[secrets]\ncurrent_key_id = \"{current}\"\nkeys = {{ {keys} }}");
    std::fs::write(
        &path,
        format!("{}{section}{}", &text[..start], &text[end..]),
    )
    .unwrap();
    // As a rolling update does: SIGTERM, then the new process.
    for role in [Role::Ingest, Role::Matcher, Role::Delivery] {
        if let Err(e) = cluster.terminate(role, Duration::from_secs(30)) {
            panic!("{e}");
        }
        cluster.restart(role).await;
    }
}

/// The key of the configuration's `[secrets]` section named `id`.
fn configured_key(cluster: &Cluster, id: &str) -> String {
    let text = std::fs::read_to_string(cluster.config_path()).unwrap();
    let at = text
        .find(&format!("{id} = \""))
        .expect("the key is configured")
        + id.len()
        + 4;
    text[at..at + text[at..].find('"').unwrap()].to_owned()
}

/// `waybill reseal` with `args`: its exit status and what it printed.
fn reseal(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = cluster.command("reseal").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The latest record of each subscription on the topic: how it is sealed.
fn latest_seals(brokers: &str) -> std::collections::BTreeMap<String, SealedWith> {
    let mut latest = std::collections::BTreeMap::new();
    for r in waybill_testkit::topic::read_all(brokers, "subscriptions") {
        let key = String::from_utf8(r.key.clone()).unwrap();
        if key.starts_with("health/") {
            continue;
        }
        if r.payload.is_empty() {
            latest.remove(&key);
            continue;
        }
        let record = v1::Subscription::decode(r.payload.as_slice()).unwrap();
        latest.insert(key, SealedWith::of(&record));
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_keys_rotate_on_a_running_deployment_and_no_record_becomes_unreadable() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    // Subscriptions with every kind of sealed value: signing secret,
    // credential, secret header.
    let mut subs = Vec::new();
    for n in 0..4 {
        let (status, created) = api
            .post(
                "/v1/subscriptions",
                json!({"name": format!("r{n}"), "url": receiver.url(&format!("/r{n}")),
                       "event_types": [EVENT],
                       "auth": {"type": "bearer", "token": format!("token-{n}")},
                       "headers": {"X-Secret": format!("hv-{n}")},
                       "secret_headers": ["X-Secret"]}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let secret = SigningSecret::parse(created["signing_secret"].as_str().unwrap()).unwrap();
        subs.push((created["id"].as_str().unwrap().to_owned(), secret));
    }

    // Events go on through the whole rotation; a post that meets a
    // restarting ingest is sent again under the same id (accepted once).
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let api = api.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut posted = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"id": format!("evt-rot-{posted}"), "event_name": EVENT,
                                  "entity": {"type": "freight", "id": format!("F-{}", posted % 5)},
                                  "data": {"n": posted}});
                loop {
                    let sent = http
                        .post(format!("{}/v1/events", api.base))
                        .bearer_auth(KEY)
                        .json(&body)
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 202) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                posted += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            posted
        })
    };

    // 1. A new key, current, next to the old one; every service rolled.
    let old = configured_key(&cluster, "k1");
    let new = waybill_core::sealing::Keyring::generate_key();
    roll_keys(&mut cluster, "k2", &[("k1", &old), ("k2", &new)]).await;
    // A change through the API now seals with the new key.
    let (status, patched) = api
        .patch(
            &format!("/v1/subscriptions/{}", subs[0].0),
            json!({"name": "r0 renamed"}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let seals = latest_seals(&cluster.brokers());
    let under = |seals: &std::collections::BTreeMap<String, SealedWith>, key: &str| {
        seals
            .values()
            .filter(|s| s.key_ids.iter().all(|k| k == key))
            .count()
    };
    assert_eq!(
        (under(&seals, "k1"), under(&seals, "k2")),
        (3, 1),
        "{seals:?}"
    );

    // 2. What is left under the old key: a dry run counts it, changes
    // nothing and says the old key must stay.
    let (ok, text) = reseal(&cluster, &["--dry-run"]);
    assert!(!ok, "a dry run with records left must fail\n{text}");
    assert!(text.contains("to reseal:       3"), "{text}");
    assert!(text.contains("keep every key"), "{text}");
    assert_eq!(latest_seals(&cluster.brokers()), seals);

    // 3. The reseal, while events flow.
    let (ok, text) = reseal(&cluster, &[]);
    assert!(ok, "{text}\n{}", cluster.logs());
    assert!(text.contains("resealed:        3"), "{text}");
    assert!(text.contains("left to reseal:  0"), "{text}");
    assert!(text.contains("unreadable:      0"), "{text}");
    let seals = latest_seals(&cluster.brokers());
    assert_eq!(seals.len(), 4);
    for (id, sealed) in &seals {
        assert_eq!(
            sealed.key_ids.iter().collect::<Vec<_>>(),
            ["k2"],
            "{id} is still sealed with another key"
        );
        assert_eq!(sealed.version, waybill_proto::convert::SEAL_VERSION);
    }
    // Nothing of the subscriptions changed but their revision.
    let (_, renamed) = api.get(&format!("/v1/subscriptions/{}", subs[0].0)).await;
    assert_eq!(renamed["name"], "r0 renamed");

    // 4. The old key removed; every service rolled again, and each reads
    // every subscription with the new key alone.
    roll_keys(&mut cluster, "k2", &[("k2", &new)]).await;
    for (id, _) in &subs {
        let (status, got) = api.get(&format!("/v1/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["auth"]["token"], "***", "{got}");
    }
    let (ok, text) = reseal(&cluster, &["--dry-run"]);
    assert!(ok, "{text}");
    assert!(text.contains("to reseal:       0"), "{text}");

    // Every event posted through the rotation reached every subscription,
    // with its credential, its secret header and its signature.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let posted = poster.await.unwrap();
    assert!(posted > 10, "only {posted} events posted");
    // At least once: a service stopped mid-delivery may send one again.
    let unique = |got: &[waybill_testkit::receiver::Received]| {
        got.iter()
            .map(|r| {
                (
                    r.path.clone(),
                    r.json()["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let got = receiver.received();
        if unique(&got) >= posted * subs.len() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} deliveries arrived\n{}",
            unique(&got),
            posted * subs.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (n, (_, secret)) in subs.iter().enumerate() {
        let mine: Vec<_> = got.iter().filter(|r| r.path == format!("/r{n}")).collect();
        let ids: std::collections::BTreeSet<_> = mine
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), posted, "subscription r{n} lost events");
        for r in mine {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer token-{n}").as_str())
            );
            assert_eq!(r.header("x-secret"), Some(format!("hv-{n}").as_str()));
            assert!(r.signature_valid(secret), "r{n}: signature");
        }
    }
}
