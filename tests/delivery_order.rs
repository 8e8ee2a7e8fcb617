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
use waybill_testkit::cluster::{Cluster, KEY, Options};
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
