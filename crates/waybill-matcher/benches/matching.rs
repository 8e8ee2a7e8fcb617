//! The matcher at scale: 1,000,000 subscriptions over 1,000 tenants and the
//! whole catalog.
//!
//! Each tenant has 1,000 subscriptions: 70 % on one exact event name, 15 %
//! on an object prefix (`freights.publication.*`), 10 % on a domain prefix
//! (`freights.*`), 5 % on `*`; 95 % of them filter on `dc_id IN [two of 100
//! distribution centres]`, the rest take everything they select. An event
//! of a random tenant, name and `dc_id` then goes to about 7 subscriptions
//! (reported below).
//!
//! Measured, and written to `target/waybill-bench/matcher.json`:
//! - load: every subscription record (protobuf, secrets sealed, as on the
//!   `subscriptions` topic) folded into the matcher's projection;
//! - memory: bytes the projection holds per subscription (counting
//!   allocator);
//! - match latency percentiles of one event: the index lookup alone, and
//!   the whole step (lookup + one delivery task per match);
//! - criterion's estimate of the same two steps.
//!
//! Run: `cargo bench -p waybill-matcher` (`WAYBILL_BENCH_SUBSCRIPTIONS`
//! overrides the count).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use time::OffsetDateTime;
use waybill_core::catalog::Catalog;
use waybill_core::event::{EntityRef, Event};
use waybill_core::filter::{Comparator, Filter, Predicate, Scope};
use waybill_core::pattern::EventTypePattern;
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Spec, Subscription};
use waybill_kafka::table::Fold;
use waybill_matcher::tasks::tasks_for;
use waybill_proto::Message as _;
use waybill_proto::convert::{event_to_proto, subscription_to_proto};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const TENANTS: usize = 1_000;
const DCS: u32 = 100;

fn tenant(n: usize) -> String {
    format!("ten_{n:04}")
}

/// A subscription as a platform's customers create them.
fn subscription(rng: &mut StdRng, n: usize, tenant_id: String, catalog: &[String]) -> Subscription {
    let name = &catalog[rng.random_range(0..catalog.len())];
    let segments: Vec<&str> = name.split('.').collect();
    let pattern = match rng.random_range(0..100) {
        0..70 => name.clone(),
        70..85 => format!("{}.{}.*", segments[0], segments[1]),
        85..95 => format!("{}.*", segments[0]),
        _ => "*".to_owned(),
    };
    let mut spec = Spec::new(
        format!("https://hooks.customer-{n}.example.com/waybill"),
        vec![EventTypePattern::parse(&pattern).unwrap()],
    );
    if rng.random_range(0..100) < 95 {
        let mut values: Vec<String> = (0..2)
            .map(|_| rng.random_range(0..DCS).to_string())
            .collect();
        values.sort();
        values.dedup();
        spec.filter = Some(Filter {
            scopes: vec![Scope {
                predicates: vec![Predicate {
                    attribute: "dc_id".into(),
                    comparator: Comparator::In,
                    values,
                }],
            }],
        });
    }
    Subscription::new(
        format!("sub_{n:032x}"),
        tenant_id,
        spec,
        "key_bench",
        OffsetDateTime::UNIX_EPOCH,
    )
}

fn event(rng: &mut StdRng, catalog: &[String]) -> Event {
    let mut attributes = BTreeMap::new();
    attributes.insert("dc_id".to_owned(), rng.random_range(0..DCS).to_string());
    attributes.insert("company_id".to_owned(), "c-1".to_owned());
    Event {
        id: format!("evt_{:016x}", rng.random::<u64>()),
        tenant_id: tenant(rng.random_range(0..TENANTS)),
        name: catalog[rng.random_range(0..catalog.len())].clone(),
        occurred_at: OffsetDateTime::UNIX_EPOCH,
        entity: EntityRef {
            kind: "freight".into(),
            id: "FR-1".into(),
        },
        attributes,
        callback_url: None,
        payload: br#"{"price": 1000, "currency": "EUR"}"#.to_vec(),
    }
}

fn percentiles(mut samples: Vec<Duration>) -> BTreeMap<&'static str, f64> {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    [
        ("p50_us", at(0.50)),
        ("p90_us", at(0.90)),
        ("p99_us", at(0.99)),
        ("p999_us", at(0.999)),
        ("max_us", *samples.last().unwrap()),
    ]
    .into_iter()
    .map(|(k, d)| (k, d.as_secs_f64() * 1e6))
    .collect()
}

fn main() {
    let count: usize = std::env::var("WAYBILL_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let catalog: Vec<String> = Catalog::builtin().iter().map(|e| e.name.clone()).collect();
    let keys: BTreeMap<String, String> = [("bench".to_owned(), Keyring::generate_key())]
        .into_iter()
        .collect();
    let keyring = Keyring::new("bench", &keys).unwrap();
    let mut rng = StdRng::seed_from_u64(7);

    eprintln!("generating {count} subscription records...");
    let records: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            let s = subscription(&mut rng, n, tenant(n % TENANTS), &catalog);
            let record = subscription_to_proto(&s, &keyring).encode_to_vec();
            (s.id, record)
        })
        .collect();
    let record_bytes: usize = records.iter().map(|(_, r)| r.len()).sum();

    let before = ALLOCATOR.allocated();
    let started = Instant::now();
    let mut projection = waybill_matcher::projection::new(keyring.clone());
    for (id, record) in &records {
        projection.apply(id.as_bytes(), Some(record)).unwrap();
    }
    let load = started.elapsed();
    let held = ALLOCATOR.allocated().saturating_sub(before);
    drop(records);
    let index = projection.index();
    assert_eq!(index.len(), count);

    let events: Vec<Event> = (0..10_000).map(|_| event(&mut rng, &catalog)).collect();
    let protos: Vec<_> = events.iter().map(event_to_proto).collect();
    let hits: Vec<usize> = events.iter().map(|e| index.matching(e).len()).collect();
    let mean_hits = hits.iter().sum::<usize>() as f64 / hits.len() as f64;
    let max_hits = *hits.iter().max().unwrap();

    let rounds = 20;
    let mut lookup = Vec::with_capacity(events.len() * rounds);
    let mut step = Vec::with_capacity(events.len() * rounds);
    let now = OffsetDateTime::now_utc();
    for _ in 0..rounds {
        for (e, p) in events.iter().zip(&protos) {
            let t = Instant::now();
            black_box(index.matching(black_box(e)));
            lookup.push(t.elapsed());
            let t = Instant::now();
            black_box(tasks_for(black_box(e), p, index, now));
            step.push(t.elapsed());
        }
    }
    let lookup = percentiles(lookup);
    let step = percentiles(step);

    let results = serde_json::json!({
        "subscriptions": count,
        "tenants": TENANTS,
        "record_bytes_mean": record_bytes as f64 / count as f64,
        "load_seconds": load.as_secs_f64(),
        "load_per_second": count as f64 / load.as_secs_f64(),
        "memory_bytes_per_subscription": held as f64 / count as f64,
        "matches_per_event_mean": mean_hits,
        "matches_per_event_max": max_hits,
        "index_lookup": lookup,
        "match_and_build_tasks": step,
    });
    let text = serde_json::to_string_pretty(&results).unwrap();
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/waybill-bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("matcher.json"), &text);
    }

    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut next = 0usize;
    criterion.bench_function("index lookup, one event", |b| {
        b.iter(|| {
            next = (next + 1) % events.len();
            black_box(index.matching(&events[next]).len())
        })
    });
    criterion.bench_function("match + build tasks, one event", |b| {
        b.iter(|| {
            next = (next + 1) % events.len();
            black_box(tasks_for(&events[next], &protos[next], index, now).len())
        })
    });
    criterion.final_summary();
}
