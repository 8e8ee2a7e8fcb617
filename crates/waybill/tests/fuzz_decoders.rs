//! Fuzzing (proptest) every decoder of Kafka records, as the services run
//! them: the folds of the compacted topics (subscriptions in the ingest,
//! delivery and matcher projections, tenants, event types, attempt history)
//! and the conversion of `DomainEvent` and `DeliveryTask` records. Whatever
//! the key and value bytes, a record is applied or refused with a reason;
//! nothing panics (a panic would stop a partition). Inputs are random
//! bytes and valid records with bytes mutated.
//!
//! `PROPTEST_CASES=100000 cargo test --release -p waybill --test fuzz_decoders`
//! runs longer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use time::OffsetDateTime;
use waybill_core::catalog::Catalog;
use waybill_core::event::{EntityRef, Event};
use waybill_core::pattern::EventTypePattern;
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Spec, Subscription};
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::convert::{event_from_proto, event_to_proto, subscription_to_proto, timestamp};
use waybill_proto::v1;

fn keyring() -> Keyring {
    let keys: BTreeMap<String, String> = [("k1".to_owned(), Keyring::generate_key())].into();
    Keyring::new("k1", &keys).unwrap()
}

fn event() -> Event {
    Event {
        id: "evt-1".into(),
        tenant_id: "ten_1".into(),
        name: "freights.publication.created".into(),
        occurred_at: OffsetDateTime::now_utc(),
        entity: EntityRef {
            kind: "freight".into(),
            id: "F-1".into(),
        },
        attributes: [("dc_id".to_owned(), "7".to_owned())].into(),
        callback_url: Some("https://example.com/cb".into()),
        payload: br#"{"a": 1}"#.to_vec(),
    }
}

/// Valid records of every kind: (kind, key, value).
fn valid_records(keys: &Keyring) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let now = OffsetDateTime::now_utc();
    let mut spec = Spec::new(
        "https://example.com/hook",
        vec![EventTypePattern::parse("freights.*").unwrap()],
    );
    spec.headers.insert("X-A".into(), "1".into());
    let subscription = Subscription::new("sub_1".into(), "ten_1".into(), spec, "key", now);
    let task = v1::DeliveryTask {
        delivery_id: "msg_1".into(),
        subscription_id: "sub_1".into(),
        tenant_id: "ten_1".into(),
        event: Some(event_to_proto(&event())),
        attempt: 2,
        not_before: Some(timestamp(now)),
        created_at: Some(timestamp(now)),
        redeliver: false,
        replay_id: String::new(),
        strict_retry: false,
        resume: false,
        produced_at: Some(timestamp(now)),
    };
    let attempt = v1::DeliveryAttempt {
        delivery_id: "msg_1".into(),
        subscription_id: "sub_1".into(),
        tenant_id: "ten_1".into(),
        event_id: "evt-1".into(),
        event_name: "freights.publication.created".into(),
        attempt: 1,
        outcome: v1::AttemptOutcome::Failed as i32,
        status_code: 500,
        started_at: Some(timestamp(now)),
        task: Some(v1::TaskRef {
            topic: "deliveries".into(),
            partition: 0,
            offset: 3,
        }),
        ..Default::default()
    };
    let event_type = v1::EventTypeRecord {
        name: "Shipment.Created".into(),
        topic: "freights".into(),
        description: "d".into(),
        domain: "shipments".into(),
    };
    vec![
        (
            "subscription",
            b"sub_1".to_vec(),
            subscription_to_proto(&subscription, keys).encode_to_vec(),
        ),
        (
            "event",
            b"F-1".to_vec(),
            event_to_proto(&event()).encode_to_vec(),
        ),
        ("task", b"sub_1".to_vec(), task.encode_to_vec()),
        ("attempt", b"sub_1".to_vec(), attempt.encode_to_vec()),
        (
            "event_type",
            b"Shipment.Created".to_vec(),
            event_type.encode_to_vec(),
        ),
    ]
}

/// Feeds one record to every decoder the services run.
struct Decoders {
    keys: Keyring,
    subscriptions: waybill_runtime::projection::AllSubscriptions,
    indexed: waybill_matcher::projection::Projection,
    tenants: waybill_ingest::tenants::Tenants,
    catalogue: waybill_runtime::catalog::Catalogue,
    history: waybill_ingest::history::History,
}

impl Decoders {
    fn new() -> Self {
        let keys = keyring();
        Self {
            subscriptions: waybill_runtime::projection::Log::writer(
                keys.clone(),
                waybill_runtime::projection::SealedSubscriptions::with_tenant_index(keys.clone()),
            ),
            indexed: waybill_matcher::projection::new(keys.clone()),
            tenants: waybill_ingest::tenants::Tenants::default(),
            catalogue: waybill_runtime::catalog::Catalogue::new(Catalog::builtin()),
            history: waybill_ingest::history::History::new(100, Duration::from_secs(3600)),
            keys,
        }
    }

    fn feed(&mut self, key: &[u8], value: Option<&[u8]>) {
        let _ = self.subscriptions.apply(key, value);
        let _ = self.indexed.apply(key, value);
        let _ = self.tenants.apply(key, value);
        let _ = self.catalogue.apply(key, value);
        let _ = self.history.apply(key, value);
        let Some(value) = value else { return };
        let _ = waybill_runtime::projection::decode_record(key, Some(value), &self.keys);
        if let Ok(e) = v1::DomainEvent::decode(value) {
            let _ = event_from_proto(e, &Catalog::builtin());
        }
        if let Ok(task) = v1::DeliveryTask::decode(value)
            && let Some(e) = task.event
        {
            let _ = event_from_proto(e, &Catalog::builtin());
        }
    }
}

fn mutate(bytes: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(at, byte, kind) in edits {
        let at = at % b.len().max(1);
        match kind % 3 {
            0 if !b.is_empty() => b[at] = byte,
            1 => b.insert(at, byte),
            _ => b.truncate(at),
        }
    }
    b
}

/// 512 cases per target, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_records_never_panic(
        key in prop::collection::vec(any::<u8>(), 0..24),
        value in prop::option::of(prop::collection::vec(any::<u8>(), 0..512)),
    ) {
        Decoders::new().feed(&key, value.as_deref());
    }

    #[test]
    fn mutated_records_never_panic(
        which in 0usize..5,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        keep_key in any::<bool>(),
    ) {
        let mut decoders = Decoders::new();
        let records = valid_records(&decoders.keys);
        let (_, key, value) = &records[which];
        let value = mutate(value, &edits);
        let key = if keep_key { key.clone() } else { mutate(key, &edits) };
        decoders.feed(&key, Some(&value));
        // A tombstone after whatever was applied.
        decoders.feed(&key, None);
    }
}

#[test]
fn the_valid_records_decode() {
    let mut decoders = Decoders::new();
    let records = valid_records(&decoders.keys);
    let by_kind: HashMap<&str, (&Vec<u8>, &Vec<u8>)> =
        records.iter().map(|(k, key, v)| (*k, (key, v))).collect();
    let (key, value) = by_kind["subscription"];
    assert!(decoders.subscriptions.apply(key, Some(value)).is_ok());
    assert!(decoders.indexed.apply(key, Some(value)).is_ok());
    let (key, value) = by_kind["event_type"];
    assert!(decoders.catalogue.apply(key, Some(value)).is_ok());
    let (key, value) = by_kind["attempt"];
    assert!(decoders.history.apply(key, Some(value)).is_ok());
    let (_, value) = by_kind["event"];
    let e = v1::DomainEvent::decode(value.as_slice()).unwrap();
    assert!(event_from_proto(e, &Catalog::builtin()).is_ok());
    let (_, value) = by_kind["task"];
    let task = v1::DeliveryTask::decode(value.as_slice()).unwrap();
    assert!(event_from_proto(task.event.unwrap(), &Catalog::builtin()).is_ok());
}
