//! Every catalog event, sent through HTTP and through a raw protobuf
//! producer writing straight to its domain topic, reaches exactly the
//! subscriptions that select it: `*`, a domain prefix, an exact name, a
//! filter with two scopes (OR) of `IN`/`NOT_IN` predicates (AND), a
//! `NOT_IN` filter; never a disabled or deleted subscription, nor another
//! tenant's. The raw records' trace context (with its `tracestate`) reaches
//! the webhook requests. A poison record between the raw events lands on `dead_letters`
//! with its reason, and the partition keeps flowing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use waybill::dev::{self, DevStack};
use waybill_core::catalog::Catalog;
use waybill_core::event::{EntityRef, Event};
use waybill_core::trace::TraceParent;
use waybill_kafka::{Producer, Topics, headers};
use waybill_proto::Message as _;
use waybill_proto::convert::event_to_proto;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::Receiver;

const KEY: &str = "wb_matching_key_0123456789abcdef0";
const WAIT: Duration = Duration::from_secs(60);

async fn start_stack() -> DevStack {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let config = waybill::load(dev::base_config(0), None, Vec::new()).expect("dev config");
    dev::start(config, KEY).await.expect("dev stack starts")
}

async fn subscribe(api: &Api, receiver: &Receiver, body: Value) -> String {
    let mut body = body;
    body["url"] = receiver.url("/hook").into();
    let (status, answer) = api.post("/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// The attributes of the `i`-th event of a round.
fn attributes(i: usize) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("dc_id".to_owned(), ["7", "9", "11"][i % 3].to_owned());
    if i % 2 == 0 {
        a.insert("company_id".to_owned(), "c-1".to_owned());
    }
    a
}

fn ids(receiver: &Receiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_event_reaches_exactly_its_subscriptions() {
    let stack = start_stack().await;
    let api = Api::new(stack.api_url(), KEY);
    // Waybill's own operational events are not posted by producers.
    let catalog: Vec<String> = Catalog::builtin()
        .iter()
        .map(|e| e.name.clone())
        .filter(|name| !waybill_core::catalog::is_operational(name))
        .collect();

    // Another tenant, subscribed to everything.
    let operator = Api::new(stack.api_url(), stack.operator_token.clone());
    let (status, tenant) = operator.post("/v1/tenants", json!({"name": "other"})).await;
    assert_eq!(status, 201, "{tenant}");
    let (status, key) = operator
        .post(
            &format!("/v1/tenants/{}/api_keys", tenant["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let other = Api::new(stack.api_url(), key["key"].as_str().unwrap());

    let all = Receiver::start().await.unwrap();
    let freights = Receiver::start().await.unwrap();
    let exact = Receiver::start().await.unwrap();
    let scoped = Receiver::start().await.unwrap();
    let not_in = Receiver::start().await.unwrap();
    let disabled = Receiver::start().await.unwrap();
    let deleted = Receiver::start().await.unwrap();
    let other_tenant = Receiver::start().await.unwrap();
    subscribe(&api, &all, json!({"event_types": ["*"]})).await;
    subscribe(&api, &freights, json!({"event_types": ["freights.*"]})).await;
    subscribe(
        &api,
        &exact,
        json!({"event_types": ["time_slot_management.time_window.created"]}),
    )
    .await;
    // dc 7, or (company c-1 and not dc 9).
    subscribe(
        &api,
        &scoped,
        json!({"event_types": ["*"], "filter": {"scopes": [
            {"predicates": [{"attribute": "dc_id", "comparator": "IN", "values": ["7"]}]},
            {"predicates": [
                {"attribute": "company_id", "comparator": "IN", "values": ["c-1"]},
                {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["9"]},
            ]},
        ]}}),
    )
    .await;
    subscribe(
        &api,
        &not_in,
        json!({"event_types": ["freight_orders.*", "loads_monitoring.*"],
               "filter": {"scopes": [{"predicates": [
                   {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["7", "11"]}]}]}}),
    )
    .await;
    subscribe(
        &api,
        &disabled,
        json!({"event_types": ["*"], "enabled": false}),
    )
    .await;
    let gone = subscribe(&api, &deleted, json!({"event_types": ["*"]})).await;
    let (status, _) = api.delete(&format!("/v1/subscriptions/{gone}")).await;
    assert_eq!(status, 204);
    subscribe(&other, &other_tenant, json!({"event_types": ["*"]})).await;

    // What each subscription must receive, by event id.
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut expect = |id: &str, name: &str, a: &BTreeMap<String, String>| {
        let dc = a["dc_id"].as_str();
        let company = a.get("company_id").map(String::as_str);
        let mut add = |who| {
            expected.entry(who).or_default().insert(id.to_owned());
        };
        add("all");
        if name.starts_with("freights.") {
            add("freights");
        }
        if name == "time_slot_management.time_window.created" {
            add("exact");
        }
        if dc == "7" || (company == Some("c-1") && dc != "9") {
            add("scoped");
        }
        if (name.starts_with("freight_orders.") || name.starts_with("loads_monitoring."))
            && dc != "7"
            && dc != "11"
        {
            add("not_in");
        }
    };

    // Round 1: through the API.
    for (i, name) in catalog.iter().enumerate() {
        let id = format!("http-{i}");
        let a = attributes(i);
        let (status, body) = api
            .post(
                "/v1/events",
                json!({"id": id, "event_name": name, "entity": {"type": "x", "id": format!("E-{i}")},
                       "attributes": a, "data": {"i": i}}),
            )
            .await;
        assert_eq!(status, 202, "{name}: {body}");
        expect(&id, name, &a);
    }

    // Round 2: a producer writing `DomainEvent` records itself, with a
    // poison record among them on the same partition.
    let kafka = stack.config.kafka.clone();
    let topics = Topics::of(&kafka);
    let producer = Producer::new(&kafka, Duration::from_secs(10)).unwrap();
    // The upstream producer's trace context, with a vendor's tracestate.
    let upstream = TraceParent::new_root().with_state(Some("upstream=raw"));
    for (i, name) in catalog.iter().enumerate() {
        let id = format!("raw-{i}");
        let event = Event {
            id: id.clone(),
            tenant_id: dev::DEV_TENANT.into(),
            name: name.clone(),
            occurred_at: OffsetDateTime::now_utc(),
            entity: EntityRef {
                kind: "x".into(),
                id: "E-raw".into(),
            },
            attributes: attributes(i),
            callback_url: None,
            payload: format!("{{\"i\": {i}}}").into_bytes(),
        };
        let topic = topics.domain(Catalog::builtin().get(name).unwrap().topic);
        if i == 1 {
            producer
                .send(
                    &topics.domain(waybill_core::catalog::DomainTopic::Freights),
                    b"E-raw",
                    Some(b"\x08\xff\xff not a DomainEvent"),
                    headers::standard(waybill_proto::SCHEMA_VERSION, None),
                )
                .await
                .unwrap();
        }
        producer
            .send(
                &topic,
                b"E-raw",
                Some(&event_to_proto(&event).encode_to_vec()),
                headers::standard(waybill_proto::SCHEMA_VERSION, Some(&upstream)),
            )
            .await
            .unwrap();
        expect(&id, name, &event.attributes);
    }

    let receivers = [
        ("all", &all),
        ("freights", &freights),
        ("exact", &exact),
        ("scoped", &scoped),
        ("not_in", &not_in),
    ];
    for (who, receiver) in receivers {
        let want = &expected[who];
        receiver
            .wait_for(want.len(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
    }
    assert_eq!(expected["all"].len(), 2 * catalog.len());
    // Deliveries that should not happen would have come with the others.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (who, receiver) in receivers {
        assert_eq!(&ids(receiver), &expected[who], "{who}");
        assert_eq!(
            receiver.received().len(),
            expected[who].len(),
            "{who}: duplicates"
        );
    }
    // Records written straight to Kafka continue their producer's trace,
    // tracestate included, up to the webhook request.
    for r in all.received() {
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let parent = TraceParent::parse(r.header("traceparent").unwrap()).unwrap();
        if id.starts_with("raw-") {
            assert_eq!(parent.trace_id, upstream.trace_id, "{id}");
            assert_eq!(r.header("tracestate"), Some("upstream=raw"), "{id}");
        } else {
            assert_ne!(parent.trace_id, upstream.trace_id, "{id}");
            assert_eq!(r.header("tracestate"), None, "{id}");
        }
    }
    for (who, receiver) in [
        ("disabled", &disabled),
        ("deleted", &deleted),
        ("other tenant", &other_tenant),
    ] {
        assert!(
            receiver.received().is_empty(),
            "{who} received {:?}",
            ids(receiver)
        );
    }

    // The poison record is set aside with its reason and origin.
    let dead = waybill_testkit::topic::read_all(&stack.brokers, &topics.dead_letters());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .header(headers::DLQ_REASON)
            .unwrap()
            .contains("undecodable DomainEvent"),
        "{dead:?}"
    );
    assert_eq!(dead[0].header(headers::DLQ_SOURCE_TOPIC), Some("freights"));
    stack.stop().await.unwrap();
}
