//! Delivery order and concurrency per subscription, on Apache Kafka with
//! the three services as separate processes, to a real HTTP receiver.
//!
//! - `ordering: "entity"` (the default): one entity's deliveries one at a
//!   time, in the order of its events; different entities side by side.
//! - `ordering: "none"`: one entity's deliveries overlap.
//! - `max_in_flight`: a subscription never has more requests in flight.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_testkit::api::Api;
use waybill_testkit::cluster::{Cluster, KEY, Options, Role};
use waybill_testkit::receiver::{self, Received, Receiver};

const EVENT: &str = "freights.publication.accepted";

/// How long the receiver takes to answer: requests that overlap arrived
/// less than this apart.
const ANSWER_AFTER: Duration = Duration::from_millis(300);

async fn post_event(api: &Api, entity: &str, seq: usize) {
    let (status, answer) = api
        .post(
            "/v1/events",
            json!({"event_name": EVENT, "entity": {"type": "freight", "id": entity},
                   "data": {"seq": seq}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
}

async fn subscribe(api: &Api, url: String, extra: Value) -> Value {
    let mut body = json!({"url": url, "event_types": [EVENT]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, created) = api.post("/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// The most requests in flight at once among `got`, each taking
/// [`ANSWER_AFTER`] from its arrival.
fn most_in_flight(got: &[&Received]) -> usize {
    let mut edges: Vec<(Instant, i32)> = got
        .iter()
        .flat_map(|r| [(r.at, 1), (r.at + ANSWER_AFTER, -1)])
        .collect();
    // An answer at the instant another arrives does not overlap it.
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut most) = (0, 0);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// A process's `/metrics` text.
async fn scrape(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One sample of a process's `/metrics` (`series` with its labels), 0 when
/// absent.
async fn metric(admin: &str, series: &str) -> f64 {
    scrape(admin)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Every series of `name` in a process's `/metrics`, summed.
async fn metric_sum(admin: &str, name: &str) -> f64 {
    scrape(admin)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn entity(r: &Received) -> String {
    r.json()["entity"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn seq(r: &Received) -> u64 {
    r.json()["data"]["seq"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_order_by_default_none_overlaps_and_max_in_flight_caps() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::with(receiver::Options {
        delay: Some(ANSWER_AFTER),
        ..Default::default()
    })
    .await
    .unwrap();

    let by_entity = subscribe(&api, receiver.url("/entity"), json!({})).await;
    assert_eq!(by_entity["ordering"], "entity", "{by_entity}");
    assert_eq!(by_entity["max_in_flight"], 8, "{by_entity}");
    let unordered = subscribe(&api, receiver.url("/none"), json!({"ordering": "none"})).await;
    assert_eq!(unordered["ordering"], "none", "{unordered}");
    let capped = subscribe(&api, receiver.url("/capped"), json!({"max_in_flight": 2})).await;
    assert_eq!(capped["max_in_flight"], 2, "{capped}");

    // One busy entity and six others, all at once.
    let per_entity = 6;
    for n in 0..per_entity {
        post_event(&api, "F-busy", n).await;
    }
    for n in 0..per_entity {
        post_event(&api, &format!("F-{n}"), 0).await;
    }
    let all = 2 * per_entity * 3;
    if let Err(e) = receiver.wait_for(all, Duration::from_secs(120)).await {
        panic!("{e}\n{}", cluster.logs());
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    assert_eq!(got.len(), all, "no request twice");
    let of = |path: &str| -> Vec<&Received> { got.iter().filter(|r| r.path == path).collect() };
    let busy = |path: &str| -> Vec<&Received> {
        got.iter()
            .filter(|r| r.path == path && entity(r) == "F-busy")
            .collect()
    };

    // entity: the busy entity's events one at a time, in order, while the
    // other entities went side by side.
    let lane = busy("/entity");
    assert_eq!(most_in_flight(&lane), 1, "one entity, one at a time");
    let order: Vec<u64> = lane.iter().map(|r| seq(r)).collect();
    assert_eq!(order, (0..per_entity as u64).collect::<Vec<_>>());
    let entity_most = most_in_flight(&of("/entity"));
    assert!(entity_most > 1, "entities overlap: {entity_most}");

    // none: the busy entity's deliveries overlap.
    let none_most = most_in_flight(&busy("/none"));
    assert!(
        none_most > 1,
        "ordering none overlaps one entity: {none_most}"
    );

    // max_in_flight 2: never more than 2 at once, and 2 reached.
    assert_eq!(most_in_flight(&of("/capped")), 2, "max_in_flight caps");
    eprintln!(
        "most in flight: entity {entity_most} (busy entity 1), none {none_most} on one entity, capped 2"
    );

    // A patch changes the order and cap; they read back.
    let path = format!("/v1/subscriptions/{}", capped["id"].as_str().unwrap());
    let (status, patched) = api
        .patch(&path, json!({"ordering": "strict", "max_in_flight": 64}))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["ordering"], &patched["max_in_flight"]),
        (&json!("strict"), &json!(64))
    );
    let (status, refused) = api
        .patch(&path, json!({"ordering": "fifo", "max_in_flight": 65}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "validation_failed", "{refused}");
}

/// `delivery.max_in_flight_total` bounds the process's requests across
/// subscriptions: three subscriptions that would each send 6 at once (no
/// ordering) share 3 slots; every delivery arrives once, and the waits are
/// counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_total_bounds_the_process_across_subscriptions() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.extra_config = "max_in_flight_total = 3\n".into();
    let cluster = Cluster::start(dir.path(), options).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::with(receiver::Options {
        delay: Some(ANSWER_AFTER),
        ..Default::default()
    })
    .await
    .unwrap();
    for path in ["/a", "/b", "/c"] {
        subscribe(&api, receiver.url(path), json!({"ordering": "none"})).await;
    }
    let events = 6;
    for n in 0..events {
        post_event(&api, &format!("F-{n}"), n).await;
    }
    let all = 3 * events;
    if let Err(e) = receiver.wait_for(all, Duration::from_secs(120)).await {
        panic!("{e}\n{}", cluster.logs());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    assert_eq!(got.len(), all, "no request twice");
    let every: Vec<&Received> = got.iter().collect();
    assert_eq!(most_in_flight(&every), 3, "3 slots, all used, never more");
    let admin = cluster.health_url(Role::Delivery).unwrap();
    assert!(metric(&admin, "waybill_request_slot_waits_total").await >= 1.0);
    assert_eq!(
        metric(&admin, "waybill_delivery_requests_in_flight").await,
        0.0,
        "every slot given back"
    );
}

/// Two delivery processes share `deliveries`: each sends part of the
/// deliveries. (With the retry tiers in the same consumer group, the
/// assignor balanced partition counts over all the topics and the second
/// process got tiers only: it added nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_delivery_process_takes_a_share_of_deliveries() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.partitions = 4;
    let mut cluster = Cluster::start(dir.path(), options).await;
    let second = cluster.start_delivery_replica().await;
    // The group settles with both members before anything is sent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    // Tasks are keyed by subscription: 16 of them spread over the 4
    // partitions.
    let subscriptions = 16;
    for n in 0..subscriptions {
        subscribe(&api, receiver.url(&format!("/s{n}")), json!({})).await;
    }
    let events = 5;
    for n in 0..events {
        post_event(&api, &format!("F-{n}"), n).await;
    }
    if let Err(e) = receiver
        .wait_for(subscriptions * events, Duration::from_secs(120))
        .await
    {
        panic!("{e}\n{}", cluster.logs());
    }
    let first = cluster.health_url(Role::Delivery).unwrap();
    let expected = (subscriptions * events) as f64;
    // A delivery is counted once its outcome is settled, just after the
    // receiver answered: the last ones may still be on their way.
    let (a, b) = waybill_testkit::wait::until(
        "every delivery counted",
        Duration::from_secs(10),
        || async {
            let a = metric_sum(&first, "waybill_deliveries_total").await;
            let b = metric_sum(&second, "waybill_deliveries_total").await;
            (a + b >= expected).then_some((a, b))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("deliveries: first process {a}, second {b}");
    assert_eq!(a + b, expected, "each sent once");
    assert!(a > 0.0 && b > 0.0, "both processes deliver: {a} and {b}");
}

/// `ordering: "strict"`: one entity's 20 events, the 3rd answered 500
/// twice, arrive (2xx) exactly in order; another entity of the subscription
/// is not delayed by the held one. With `kill`, the delivery process is
/// SIGKILLed while the 3rd waits in its retry tier, and started again.
async fn strict_order(kill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let third_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = {
        let third_seen = third_seen.clone();
        Receiver::with(receiver::Options {
            answer: Some(std::sync::Arc::new(move |r: &Received| {
                let third = entity(r) == "F-held" && seq(r) == 3;
                let seen = if third {
                    third_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                } else {
                    usize::MAX
                };
                (seen < 2).then_some(500)
            })),
            ..Default::default()
        })
        .await
        .unwrap()
    };
    let strict = subscribe(
        &api,
        receiver.url("/strict"),
        json!({"ordering": "strict", "retry_policy": {"delays": ["2s", "2s", "2s"]}}),
    )
    .await;
    assert_eq!(strict["ordering"], "strict", "{strict}");

    let n = 20;
    for seq in 1..=n {
        post_event(&api, "F-held", seq).await;
        post_event(&api, "F-free", seq).await;
        if seq == 3 && kill {
            // The 3rd failed once and waits in its tier: the process dies.
            let deadline = Instant::now() + Duration::from_secs(60);
            while third_seen.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the 3rd never came\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    if kill {
        // Later events of the held entity are parked meanwhile.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.kill(waybill_testkit::cluster::Role::Delivery);
        cluster
            .restart(waybill_testkit::cluster::Role::Delivery)
            .await;
    }
    let ok = |r: &&Received| r.path == "/strict";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = receiver.received();
        let held_2xx = got
            .iter()
            .filter(ok)
            .filter(|r| entity(r) == "F-held" && !(seq(r) == 3 && failed_third(r, &got)))
            .count();
        if held_2xx >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held_2xx} of {n} held-entity deliveries arrived\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let held: Vec<&Received> = got
        .iter()
        .filter(ok)
        .filter(|r| entity(r) == "F-held")
        .collect();
    // The two failed attempts of the 3rd are the 3rd and 4th requests.
    let answered_2xx: Vec<u64> = held
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i == 2 || *i == 3))
        .map(|(_, r)| seq(r))
        .collect();
    let held_order: Vec<u64> = held.iter().map(|r| seq(r)).collect();
    assert_eq!(
        &held_order[..4],
        &[1, 2, 3, 3],
        "the 3rd failed twice before anything else of its entity went: {held_order:?}"
    );
    assert_eq!(
        answered_2xx,
        (1..=n as u64).collect::<Vec<_>>(),
        "2xx in order: {held_order:?}"
    );
    // The free entity went on while the held one waited.
    let free: Vec<&Received> = got
        .iter()
        .filter(ok)
        .filter(|r| entity(r) == "F-free")
        .collect();
    let free_order: Vec<u64> = free.iter().map(|r| seq(r)).collect();
    assert_eq!(free_order, (1..=n as u64).collect::<Vec<_>>());
    let third_ok = held[4].at;
    let last_free = free.last().unwrap().at;
    assert!(
        last_free < third_ok,
        "the free entity's last delivery came {:?} after the held one went on",
        last_free - third_ok
    );
    eprintln!(
        "strict (kill: {kill}): held entity released {:?} after the free one finished",
        third_ok - last_free
    );
}

/// Whether `r` (the held entity's 3rd) was one of its two failed attempts.
fn failed_third(r: &Received, got: &[Received]) -> bool {
    let thirds: Vec<&Received> = got
        .iter()
        .filter(|g| g.path == "/strict" && entity(g) == "F-held" && seq(g) == 3)
        .collect();
    thirds.iter().take(2).any(|t| t.at == r.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_holds_an_entity_behind_its_retried_delivery() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    strict_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_survives_a_delivery_kill_while_an_entity_is_held() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    strict_order(true).await;
}

/// Pause keeps, resume sends: 500 events arrive while a subscription is
/// paused, none goes out before the resume, all do after it, per entity in
/// order; another subscription on the same partition keeps its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_keeps_its_deliveries_until_resumed() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    // Three partitions and two delivery processes: the paused
    // subscription's partition of `deliveries` (tasks are keyed by
    // subscription) may be either's.
    options.partitions = 3;
    options.extra_config = "backlog_sample_interval = \"500ms\"\n".into();
    let mut cluster = Cluster::start(dir.path(), options).await;
    let second = cluster.start_delivery_replica().await;
    let deliveries = [cluster.health_url(Role::Delivery).unwrap(), second.clone()];
    // The group settles with both members before anything is sent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let paused = subscribe(&api, receiver.url("/paused"), json!({})).await;
    let other = subscribe(&api, receiver.url("/other"), json!({})).await;
    let path = format!("/v1/subscriptions/{}", paused["id"].as_str().unwrap());

    let (status, answer) = api.post(&format!("{path}/pause"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "paused", "{answer}");
    let (_, listed) = api.get("/v1/subscriptions?status=paused").await;
    assert_eq!(listed["total_count"], 1, "{listed}");

    let (entities, per_entity) = (10, 50);
    let mut posted = std::collections::HashMap::new();
    for seq in 0..per_entity {
        for e in 0..entities {
            let entity = format!("F-{e}");
            post_event(&api, &entity, seq).await;
            posted.insert((entity, seq as u64), Instant::now());
        }
    }
    let n = entities * per_entity;
    let other_got = |got: &[Received]| got.iter().filter(|r| r.path == "/other").count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while other_got(&receiver.received()) < n {
        assert!(
            Instant::now() < deadline,
            "the other subscription got {} of {n}",
            other_got(&receiver.received())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pause goes on a while longer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    assert_eq!(
        got.iter().filter(|r| r.path == "/paused").count(),
        0,
        "nothing is sent to a paused subscription"
    );
    let latencies: Vec<Duration> = got
        .iter()
        .filter(|r| r.path == "/other")
        .map(|r| r.at - posted[&(entity(r), seq(r))])
        .collect();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    // The kept deliveries are listed as pending.
    let (_, pending) = api
        .get(&format!("{path}/deliveries?status=pending&limit=100"))
        .await;
    assert_eq!(
        pending["deliveries"].as_array().map(Vec::len),
        Some(100),
        "kept deliveries are pending: {pending}"
    );

    // Each was parked once; the gauge shows them kept.
    let mut parked = Vec::new();
    for url in &deliveries {
        parked.push(metric(url, "waybill_deliveries_parked_total{reason=\"paused\"}").await);
    }
    assert!(
        parked.iter().sum::<f64>() == n as f64,
        "each of the {n} parked once: {parked:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&deliveries[0], "waybill_deliveries_kept").await < n as f64
        || metric(&deliveries[1], "waybill_deliveries_kept").await < n as f64
    {
        assert!(
            Instant::now() < deadline,
            "the kept gauge did not reach {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let resumed_at = Instant::now();
    let (status, answer) = api.post(&format!("{path}/resume"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "active", "{answer}");
    let kept = |got: &[Received]| got.iter().filter(|r| r.path == "/paused").count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while kept(&receiver.received()) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} kept deliveries arrived after the resume\n{}",
            kept(&receiver.received()),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Newer events go after the kept ones.
    post_event(&api, "F-0", per_entity).await;
    receiver
        .wait_for(2 * n + 2, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let to_paused: Vec<&Received> = got.iter().filter(|r| r.path == "/paused").collect();
    assert_eq!(
        to_paused.len(),
        n + 1,
        "each kept delivery once, then the new one"
    );
    assert!(
        to_paused.iter().all(|r| r.at >= resumed_at),
        "none before the resume"
    );
    for e in 0..entities {
        let entity_id = format!("F-{e}");
        let order: Vec<u64> = to_paused
            .iter()
            .filter(|r| entity(r) == entity_id)
            .map(|r| seq(r))
            .collect();
        let expected = if e == 0 { per_entity + 1 } else { per_entity };
        assert_eq!(
            order,
            (0..expected as u64).collect::<Vec<_>>(),
            "{entity_id} in order"
        );
    }
    let drained = to_paused[n - 1].at - resumed_at;
    eprintln!(
        "pause: the other subscription's worst latency {worst:?} during the pause; {n} kept deliveries out {drained:?} after the resume"
    );
    assert!(
        worst < Duration::from_secs(10),
        "the other subscription waited {worst:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for url in &deliveries {
        while metric(url, "waybill_deliveries_kept").await != 0.0 {
            assert!(Instant::now() < deadline, "the kept gauge stays above 0");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A disabled subscription cannot be paused.
    let other_path = format!("/v1/subscriptions/{}", other["id"].as_str().unwrap());
    let (status, _) = api.patch(&other_path, json!({"enabled": false})).await;
    assert_eq!(status, 200);
    let (status, refused) = api.post(&format!("{other_path}/pause"), json!({})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
}

/// `delivery.pause_retention`: a delivery kept longer than it while its
/// subscription was paused is dead on resume (listed with error class
/// `pause_retention`, never sent); newer ones go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_kept_past_the_pause_retention_is_dead_on_resume() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.extra_config = "pause_retention = \"2s\"\n".into();
    let cluster = Cluster::start(dir.path(), options).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let sub = subscribe(&api, receiver.url("/kept"), json!({})).await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let (status, answer) = api.post(&format!("{path}/pause"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    for seq in 0..3 {
        post_event(&api, "F-1", seq).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, pending) = api.get(&format!("{path}/deliveries?status=pending")).await;
        if pending["deliveries"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 kept deliveries pending: {pending}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, answer) = api.post(&format!("{path}/resume"), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    post_event(&api, "F-1", 3).await;
    receiver.wait_for(1, Duration::from_secs(60)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (_, dead) = api.get(&format!("{path}/deliveries?status=dead")).await;
        if dead["deliveries"].as_array().map(Vec::len) == Some(3) {
            break dead;
        }
        assert!(Instant::now() < deadline, "3 dead deliveries: {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = dead["deliveries"][0]["id"].as_str().unwrap();
    let (_, one) = api.get(&format!("/v1/deliveries/{id}")).await;
    let attempts = one["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.last().unwrap()["error_class"],
        "pause_retention",
        "{one}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    assert_eq!(
        got.iter().map(seq).collect::<Vec<_>>(),
        [3],
        "only the delivery newer than the retention is sent"
    );
}

/// Operational events: a tenant's subscription naming `waybill.*`
/// receives, signed, `waybill.subscription.failing` and `.recovered` about
/// a flaky subscription and `waybill.delivery.dead` about a dead delivery,
/// never an event about itself; `*` does not select them, and producers
/// cannot post them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_events_reach_the_tenants_subscriptions_that_name_them() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    let receiver = {
        let seen = seen.clone();
        Receiver::with(receiver::Options {
            answer: Some(std::sync::Arc::new(move |r: &Received| {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(r.path.clone()).or_default();
                *n += 1;
                match r.path.as_str() {
                    // Fails twice, then recovers.
                    "/flaky" if *n <= 2 => Some(500),
                    "/dead" => Some(500),
                    // The operations endpoint fails once itself.
                    "/ops" if *n == 1 => Some(500),
                    _ => None,
                }
            })),
            ..Default::default()
        })
        .await
        .unwrap()
    };
    let (_, catalog) = api.get("/v1/event_types").await;
    for name in [
        "waybill.subscription.failing",
        "waybill.subscription.recovered",
        "waybill.subscription.disabled",
        "waybill.delivery.dead",
    ] {
        assert!(catalog.to_string().contains(name), "{name} in the catalog");
    }
    let ops = subscribe(
        &api,
        receiver.url("/ops"),
        json!({"event_types": ["waybill.*"], "retry_policy": {"delays": ["200ms", "200ms"]}}),
    )
    .await;
    let ops_id = ops["id"].as_str().unwrap().to_owned();
    let secret =
        waybill_core::signing::SigningSecret::parse(ops["signing_secret"].as_str().unwrap())
            .unwrap();
    let all = subscribe(&api, receiver.url("/all"), json!({"event_types": ["*"]})).await;
    let flaky = subscribe(
        &api,
        receiver.url("/flaky"),
        json!({"retry_policy": {"delays": ["200ms", "200ms", "200ms"]}}),
    )
    .await;
    let dead = subscribe(
        &api,
        receiver.url("/dead"),
        json!({"retry_policy": {"delays": ["200ms"]}}),
    )
    .await;
    let (status, refused) = api
        .post(
            "/v1/events",
            json!({"event_name": "waybill.subscription.failing", "entity": {"type": "x", "id": "1"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "validation_failed", "{refused}");

    post_event(&api, "F-ops", 1).await;
    let about = |r: &Received| {
        r.json()["data"]["subscription_id"]
            .as_str()
            .map(str::to_owned)
    };
    let want = [
        (
            "waybill.subscription.failing",
            flaky["id"].as_str().unwrap(),
        ),
        (
            "waybill.subscription.recovered",
            flaky["id"].as_str().unwrap(),
        ),
        ("waybill.subscription.failing", dead["id"].as_str().unwrap()),
        ("waybill.delivery.dead", dead["id"].as_str().unwrap()),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = receiver.received();
        let ops_got: Vec<(String, Option<String>)> = got
            .iter()
            .filter(|r| r.path == "/ops" && r.json()["event_name"].is_string())
            .map(|r| {
                (
                    r.json()["event_name"].as_str().unwrap().to_owned(),
                    about(r),
                )
            })
            .collect();
        let missing: Vec<_> = want
            .iter()
            .filter(|(name, id)| {
                !ops_got
                    .iter()
                    .any(|(n, a)| n == name && a.as_deref() == Some(*id))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing at /ops: {missing:?}; got {ops_got:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let to_ops: Vec<&Received> = got.iter().filter(|r| r.path == "/ops").collect();
    for r in &to_ops {
        assert!(
            r.signature_valid(&secret),
            "signed with the subscription's secret"
        );
        let body = r.json();
        assert!(
            body["event_name"].as_str().unwrap().starts_with("waybill."),
            "{body}"
        );
        assert_eq!(body["entity"]["type"], "subscription", "{body}");
        assert_ne!(
            about(r).as_deref(),
            Some(ops_id.as_str()),
            "never about itself: {body}"
        );
    }
    let dead_event = to_ops
        .iter()
        .map(|r| r.json())
        .find(|b| b["event_name"] == "waybill.delivery.dead")
        .unwrap();
    assert_eq!(dead_event["data"]["attempts"], 2, "{dead_event}");
    assert_eq!(dead_event["data"]["event_name"], EVENT, "{dead_event}");
    let failing = to_ops
        .iter()
        .map(|r| r.json())
        .find(|b| b["event_name"] == "waybill.subscription.failing")
        .unwrap();
    assert_eq!(failing["data"]["status_code"], 500, "{failing}");
    // `*` selected the domain event only.
    let to_all: Vec<&Received> = got.iter().filter(|r| r.path == "/all").collect();
    assert_eq!(to_all.len(), 1, "`*` does not select operational events");
    assert_eq!(to_all[0].json()["event_name"], EVENT);
    let _ = all;
}
