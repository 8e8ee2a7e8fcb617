//! Fuzzing (proptest) the JSON parsers of the API: `POST /v1/events` bodies
//! and subscription bodies (create, replace, patch). Whatever the bytes,
//! they answer `Ok` or field errors, and never panic. Inputs are random
//! bytes, random JSON built from the real field names (so generation
//! reaches the field validators, not only the JSON parser), and valid
//! bodies with bytes mutated.
//!
//! `PROPTEST_CASES=100000 cargo test --release -p waybill-core --test fuzz_parsers`
//! runs longer.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use waybill_core::catalog::Catalog;
use waybill_core::event::parse_event_request;
use waybill_core::subscription::{Mode, parse_spec};
use waybill_core::url_policy::UrlPolicy;

/// Field names the parsers know, at every level, and some they do not.
const NAMES: &[&str] = &[
    "id",
    "event_name",
    "occurred_at",
    "entity",
    "type",
    "attributes",
    "data",
    "callback_url",
    "name",
    "description",
    "url",
    "method",
    "event_types",
    "filter",
    "scopes",
    "predicates",
    "attribute",
    "comparator",
    "values",
    "auth",
    "username",
    "password",
    "header",
    "value",
    "token",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "extra_params",
    "headers",
    "enabled",
    "rate_limit_per_second",
    "retry_policy",
    "delays",
    "initial_delay",
    "multiplier",
    "max_delay",
    "max_attempts",
    "metadata",
    "dc_id",
    "x",
];

/// Strings that mean something to some validator.
const WORDS: &[&str] = &[
    "",
    "freights.publication.created",
    "freights.*",
    "*",
    "waybill.test",
    "https://example.com/hook",
    "http://127.0.0.1:9/x",
    "ftp://x",
    "POST",
    "PUT",
    "GET",
    "basic",
    "api_key",
    "bearer",
    "oauth2",
    "none",
    "IN",
    "NOT_IN",
    "2026-12-01T00:00:00Z",
    "1s",
    "100ms",
    "-1s",
    "99999999999999h",
    "Authorization",
    "webhook-id",
    "X-Custom",
    "bad header\n",
    "\u{0}",
    "é✓",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(NAMES), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A top-level object of known fields with random values.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((prop::sample::select(NAMES), json_value()), 0..12).prop_map(|kv| {
        let object: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&Value::Object(object)).unwrap()
    })
}

/// Random changes to a valid body: flipped, inserted and removed bytes,
/// truncation.
fn mutated(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    let bytes = serde_json::to_vec(&valid).unwrap();
    let len = bytes.len();
    prop::collection::vec((0..len, any::<u8>(), 0..3u8), 1..8).prop_map(move |edits| {
        let mut b = bytes.clone();
        for (at, byte, kind) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match kind {
                0 if !b.is_empty() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if !b.is_empty() => {
                    b.truncate(at.max(1));
                }
                _ => {}
            }
        }
        b
    })
}

fn valid_event() -> Value {
    json!({"id": "evt-1", "event_name": "freights.publication.created",
           "occurred_at": "2026-12-01T00:00:00Z",
           "entity": {"type": "freight", "id": "F-1"},
           "attributes": {"dc_id": "7"}, "data": {"a": [1, 2]},
           "callback_url": "https://example.com/cb"})
}

fn valid_subscription() -> Value {
    json!({"name": "s", "url": "https://example.com/hook", "method": "PUT",
           "event_types": ["freights.*", "freight_orders.order.created"],
           "filter": {"scopes": [{"predicates": [{"attribute": "dc_id", "comparator": "IN", "values": ["1"]}]}]},
           "auth": {"type": "oauth2", "token_url": "https://example.com/t", "client_id": "c",
                    "client_secret": "s", "scope": "x", "extra_params": {"a": "b"}},
           "headers": {"X-A": "1"}, "enabled": true, "rate_limit_per_second": 5,
           "retry_policy": {"delays": ["1s", "5s"]}, "metadata": {"k": "v"}})
}

fn parse_event(body: &[u8]) {
    let _ = parse_event_request(
        body,
        "ten_1",
        &Catalog::builtin(),
        OffsetDateTime::now_utc(),
    );
}

fn parse_subscription(body: &[u8]) {
    let catalog = Catalog::builtin();
    for policy in [UrlPolicy::strict(), UrlPolicy::permissive()] {
        let _ = parse_spec(body, Mode::Create, &catalog, &policy);
    }
    let base = parse_spec(
        &serde_json::to_vec(&valid_subscription()).unwrap(),
        Mode::Create,
        &catalog,
        &UrlPolicy::strict(),
    )
    .expect("the valid subscription parses");
    let _ = parse_spec(body, Mode::Replace(&base), &catalog, &UrlPolicy::strict());
    let _ = parse_spec(body, Mode::Patch(&base), &catalog, &UrlPolicy::strict());
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
    fn event_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_event(&bytes);
    }

    #[test]
    fn event_parser_never_panics_on_json(body in body()) {
        parse_event(&body);
    }

    #[test]
    fn event_parser_never_panics_on_mutated_events(body in mutated(valid_event())) {
        parse_event(&body);
    }

    #[test]
    fn subscription_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_subscription(&bytes);
    }

    #[test]
    fn subscription_parser_never_panics_on_json(body in body()) {
        parse_subscription(&body);
    }

    #[test]
    fn subscription_parser_never_panics_on_mutated_subscriptions(body in mutated(valid_subscription())) {
        parse_subscription(&body);
    }
}

#[test]
fn the_valid_bodies_are_valid() {
    let event = serde_json::to_vec(&valid_event()).unwrap();
    assert!(
        parse_event_request(
            &event,
            "ten_1",
            &Catalog::builtin(),
            OffsetDateTime::now_utc()
        )
        .is_ok()
    );
    parse_subscription(&serde_json::to_vec(&valid_subscription()).unwrap());
}
