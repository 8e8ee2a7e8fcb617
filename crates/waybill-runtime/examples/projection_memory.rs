//! Measures the subscription projection: memory per subscription and the
//! time to fold records into it (decode + open sealed secrets + index).
//!
//! `cargo run --release -p waybill-runtime --example projection_memory -- [count] [--delivery]`
//! (default 200,000): the ingest service's projection (each subscription
//! as its sealed record, an index by tenant, a writer's verdicts), or with
//! `--delivery` the delivery service's (sealed records by id). Both decode
//! a subscription, opening its secrets, when it is read: the tool also
//! times reads (one by id; a page of 100 of a tenant's list).
//! Subscriptions are realistic: a name, an https URL,
//! three event-type patterns, a filter with one predicate of three values,
//! bearer auth, two custom headers, one metadata entry. Memory is the growth
//! of the process's resident set while folding (Linux `/proc/self/statm`).

#![allow(clippy::print_stdout)] // a measuring tool: its output is the result

use std::time::Instant;

use time::OffsetDateTime;
use waybill_core::auth::CallbackAuth;
use waybill_core::filter::{Comparator, Filter, Predicate, Scope};
use waybill_core::pattern::EventTypePattern;
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Spec, Subscription};
use waybill_kafka::table::Fold;
use waybill_proto::Message;
use waybill_proto::convert::subscription_to_proto;
use waybill_runtime::projection::{Counted, Log, SealedSubscriptions};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args.iter().find_map(|s| s.parse().ok()).unwrap_or(200_000);
    let delivery = args.iter().any(|a| a == "--delivery");
    let keys = Keyring::new(
        "k1",
        &[("k1".to_owned(), Keyring::generate_key())]
            .into_iter()
            .collect(),
    )
    .expect("keyring");
    let patterns = [
        "freights.publication.*",
        "freight_orders.order.created",
        "time_slot_management.*",
    ];
    // Records first (as on the topic), then fold them, measuring only the fold.
    let records: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let mut spec = Spec::new(
                format!("https://hooks.carrier-{}.example.com/waybill/{i}", i % 1000),
                patterns
                    .iter()
                    .map(|p| EventTypePattern::parse(p).expect("pattern"))
                    .collect(),
            );
            spec.name = format!("carrier TMS {i}");
            spec.auth = CallbackAuth::Bearer {
                token: format!("token-{i:08}-abcdefghijklmnop"),
            };
            spec.headers = [
                ("X-Team".to_owned(), "ops".to_owned()),
                ("X-Carrier".to_owned(), format!("c-{}", i % 1000)),
            ]
            .into_iter()
            .collect();
            spec.metadata = [("team".to_owned(), "ops".to_owned())]
                .into_iter()
                .collect();
            spec.filter = Some(Filter {
                scopes: vec![Scope {
                    predicates: vec![Predicate {
                        attribute: "dc_id".into(),
                        comparator: Comparator::In,
                        values: vec!["1".into(), "2".into(), "3".into()],
                    }],
                }],
            });
            let s = Subscription::new(
                format!("sub_{i:032x}"),
                format!("ten_{:08}", i % 1000),
                spec,
                "key_0123456789",
                OffsetDateTime::now_utc(),
            );
            (
                s.id.clone(),
                subscription_to_proto(&s, &keys).encode_to_vec(),
            )
        })
        .collect();
    let record_bytes: usize = records.iter().map(|(_, r)| r.len()).sum();

    let before = resident_bytes();
    let started = Instant::now();
    let mut projection = if delivery {
        Log::new(keys.clone(), SealedSubscriptions::new(keys))
    } else {
        Log::writer(keys.clone(), SealedSubscriptions::with_tenant_index(keys))
    };
    fold(&mut projection, &records);
    let elapsed = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(projection.count(), count);

    // Reads: one subscription by id (decoded, secrets opened), and the
    // first page of 100 of a tenant's list (ingest).
    let reads = 10_000;
    let started = Instant::now();
    for i in 0..reads {
        let id = &records[(i * 7919) % count].0;
        assert!(projection.get(id).is_some());
    }
    let get_us = started.elapsed().as_secs_f64() * 1e6 / reads as f64;
    let page_us = (!delivery).then(|| {
        let pages = 1_000;
        let started = Instant::now();
        for i in 0..pages {
            let tenant = format!("ten_{:08}", i % 1000);
            let page: Vec<_> = projection
                .ids_of_tenant(&tenant)
                .take(100)
                .filter_map(|id| projection.get(id))
                .collect();
            assert_eq!(page.len(), 100.min(count / 1000));
        }
        started.elapsed().as_secs_f64() * 1e6 / pages as f64
    });
    let per_sub = grown as f64 / count as f64;
    println!(
        "{}",
        serde_json::json!({
            "subscriptions": count,
            "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
            "projection": if delivery { "delivery (sealed records by id)" } else { "ingest (sealed records, tenant index)" },
            "record_bytes_avg": record_bytes / count,
            "fold_seconds": elapsed.as_secs_f64(),
            "folds_per_second": count as f64 / elapsed.as_secs_f64(),
            "resident_growth_bytes": grown,
            "bytes_per_subscription": per_sub,
            "subscriptions_per_gib": (1u64 << 30) as f64 / per_sub,
            "get_microseconds": get_us,
            "list_page_of_100_microseconds": page_us,
        })
    );
}

fn fold<F: Fold>(projection: &mut F, records: &[(String, Vec<u8>)]) {
    for (id, record) in records {
        projection
            .apply(id.as_bytes(), Some(record))
            .expect("record folds");
    }
}
