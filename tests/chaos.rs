//! Chaos runs: the three services as separate processes on a tansu broker
//! (with SQLite storage when it restarts), one subscription, a
//! W1-sized stream of events posted through the API, and faults at random
//! points of the run:
//!
//! - `kill_matcher`, `kill_delivery`, `kill_ingest`: SIGKILL the service
//!   three times, restarting it at once;
//! - `restart_broker`: SIGKILL tansu twice and start it again on its file
//!   (5,000 events: tansu's SQLite engine slows down as its file grows);
//! - `receiver_resets`: the receiver resets the TCP connection (RST, no
//!   answer) instead of answering 30 % of first attempts;
//! - `short_run_with_every_fault` (in `make test`): 1,500 events, one kill
//!   of the ingest and of the matcher, 10 % resets (see its docs for why
//!   not the delivery service).
//!
//! Each ends by checking that every event reached the receiver at least
//! once (0 lost), reporting duplicates, and checking that the failed
//! attempts on `delivery_attempts` and the records on `deliveries.dlq` match
//! what the receiver did. Results go to `target/chaos/<scenario>.json`
//! (or `$WAYBILL_CHAOS_OUT`). The long runs are `#[ignore]`d; run one with
//! `scripts/chaos.sh kill_matcher` (or `make chaos`); `WAYBILL_CHAOS_EVENTS`
//! changes the event count. To investigate: `TESTKIT_LOG` sets the services'
//! `RUST_LOG` (e.g. `warn,waybill=debug,waybill_kafka::partitioned=trace`
//! logs every stored offset), `TESTKIT_KAFKA_DEBUG` librdkafka's debug
//! contexts; a run that loses an event keeps every log and prints what the
//! topics hold of the lost events.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::Rng as _;
use serde_json::json;
use waybill_bench::receiver::{BenchReceiver, FailWith};
use waybill_kafka::{KafkaConfig, Topics};
use waybill_proto::Message as _;
use waybill_proto::v1;
use waybill_testkit::cluster::{Cluster, KEY, Options, Role, Storage};

/// Events of a full run (W1's size).
const FULL: usize = 20_000;

struct Scenario {
    name: &'static str,
    events: usize,
    /// Roles hit, one after the other, at random points of the run.
    faults: Vec<Role>,
    /// Share of first attempts the receiver resets.
    reset_percent: u64,
}

impl Scenario {
    /// tansu's storage: SQLite when the broker restarts (it must keep its
    /// log), else memory. (tansu 0.6.0's SQLite engine panicked once here
    /// on a consumer-group update after a member was killed, leaving the
    /// broker unable to serve; the memory engine has not.)
    fn storage(&self, dir: &std::path::Path) -> Storage {
        if self.faults.contains(&Role::Broker) {
            Storage::Sqlite(dir.to_owned())
        } else {
            Storage::Memory
        }
    }
}

impl Scenario {
    fn full(name: &'static str, faults: Vec<Role>, reset_percent: u64) -> Self {
        Self::sized(name, faults, reset_percent, FULL)
    }

    fn sized(name: &'static str, faults: Vec<Role>, reset_percent: u64, default: usize) -> Self {
        let events = std::env::var("WAYBILL_CHAOS_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        Self {
            name,
            events,
            faults,
            reset_percent,
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    scenario: &'static str,
    events: usize,
    faults: Vec<String>,
    /// Distinct deliveries the receiver accepted.
    delivered: usize,
    lost: usize,
    /// Accepted requests beyond the first of a delivery.
    duplicates: usize,
    duplicate_ratio: f64,
    /// Requests the receiver reset on purpose.
    receiver_failed: usize,
    /// Failed attempts recorded on `delivery_attempts` (distinct).
    recorded_failed: usize,
    /// Records on `deliveries.dlq`.
    dead_letters: usize,
    /// POST retries the load client needed (connection errors, 5xx).
    post_retries: usize,
    seconds: f64,
}

/// In `make test`. The delivery service is not killed here: on tansu 0.6.0
/// a restarted delivery member sometimes resumes a partition at the offset
/// another group committed for the same partition number of another topic
/// (seen: `deliveries`/2 resumed at 410, the offset the matcher group had
/// just stored for `freights`/2, while the delivery group had stored 393),
/// so the records between are never read: a broker bug that fails about a
/// third of such runs. Delivery kills are covered by `sigkill.rs` on the
/// embedded broker (also in `make test`) and by `kill_delivery` here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_with_every_fault() {
    run(Scenario {
        name: "short_run_with_every_fault",
        events: 1_500,
        faults: vec![Role::Ingest, Role::Matcher],
        reset_percent: 10,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_matcher"]
async fn kill_matcher() {
    run(Scenario::full("kill_matcher", vec![Role::Matcher; 3], 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_delivery"]
async fn kill_delivery() {
    run(Scenario::full("kill_delivery", vec![Role::Delivery; 3], 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_ingest"]
async fn kill_ingest() {
    run(Scenario::full("kill_ingest", vec![Role::Ingest; 3], 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh restart_broker"]
async fn restart_broker() {
    // tansu 0.6.0's SQLite engine slows down as its file grows: past
    // about 10,000 events it spends a core on its queries and requests time
    // out. 5,000 events keep the run about the restarts.
    run(Scenario::sized(
        "restart_broker",
        vec![Role::Broker; 2],
        0,
        5_000,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh receiver_resets"]
async fn receiver_resets() {
    run(Scenario::full("receiver_resets", Vec::new(), 30)).await;
}

async fn run(scenario: Scenario) -> Outcome {
    waybill_testkit::wait::watchdog(Duration::from_secs(900));
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The broker's SQLite file on a tmpfs when there is one: the restart is
    // of the process, and a disk's fsyncs would make tansu crawl.
    let shm = std::path::Path::new("/dev/shm");
    let db_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.storage = scenario.storage(db_dir.path());
    options.log = std::env::var("TESTKIT_LOG").unwrap_or_else(|_| "warn,waybill=info".into());
    let mut cluster = Cluster::start(dir.path(), options).await;
    let receiver = BenchReceiver::start_with(scenario.reset_percent, FailWith::Reset)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let api = cluster.api();
    let (status, created) = waybill_testkit::api::Api::new(api.clone(), KEY)
        .post(
            "/v1/subscriptions",
            json!({
                "name": scenario.name,
                "url": receiver.url("/chaos"),
                "event_types": ["freights.publication.created"],
                "retry_policy": {"delays": ["100ms", "200ms", "500ms", "1s", "2s", "5s", "10s"]},
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    // Post every event until it is accepted (the same id each time: the
    // API deduplicates within a process, the receiver counts the rest).
    let posted = Arc::new(AtomicUsize::new(0));
    let post_retries = Arc::new(AtomicUsize::new(0));
    let posting = {
        let (http, api, posted, retries) = (
            http.clone(),
            api.clone(),
            posted.clone(),
            post_retries.clone(),
        );
        let events = scenario.events;
        tokio::spawn(async move {
            futures::stream::iter(0..events)
                .for_each_concurrent(32, |i| {
                    let (http, api, posted, retries) = (&http, &api, &posted, &retries);
                    async move {
                        let body = json!({
                            "id": format!("evt-chaos-{i}"),
                            "event_name": "freights.publication.created",
                            "entity": {"type": "freight", "id": format!("F-{}", i % 512)},
                            "data": {"i": i},
                        });
                        let deadline = Instant::now() + Duration::from_secs(300);
                        loop {
                            let accepted = http
                                .post(format!("{api}/v1/events"))
                                .bearer_auth(KEY)
                                .json(&body)
                                .send()
                                .await
                                .is_ok_and(|r| r.status().as_u16() == 202);
                            if accepted {
                                posted.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            assert!(Instant::now() < deadline, "event {i} never accepted");
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                })
                .await;
        })
    };

    // Faults at random points: an ingest kill by events posted, the others
    // by deliveries received.
    let mut rng = rand::rng();
    let mut points: Vec<f64> = scenario
        .faults
        .iter()
        .map(|_| rng.random_range(0.1..0.8))
        .collect();
    points.sort_by(f64::total_cmp);
    let n = scenario.events;
    for (role, at) in scenario.faults.iter().zip(&points) {
        let threshold = (at * n as f64) as usize;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let progress = if *role == Role::Ingest {
                posted.load(Ordering::Relaxed)
            } else {
                distinct(&receiver)
            };
            if progress >= threshold {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no progress to {threshold} before killing {role}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "[{:>5.1}s] SIGKILL {role} at {threshold} of {n} ({} posted, {} delivered)",
            started.elapsed().as_secs_f64(),
            posted.load(Ordering::Relaxed),
            distinct(&receiver)
        );
        cluster.kill(*role);
        cluster.restart(*role).await;
        eprintln!(
            "[{:>5.1}s] {role} ready again",
            started.elapsed().as_secs_f64()
        );
    }
    posting.await.expect("posting finished");

    // Every delivery, or no progress for a minute.
    let mut last = (0, Instant::now());
    loop {
        let got = distinct(&receiver);
        if got >= n {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates and attempt records.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let arrivals = receiver.arrivals();
    let accepted: Vec<_> = arrivals.iter().filter(|a| a.accepted).collect();
    let ids: HashSet<&str> = accepted.iter().map(|a| a.event_id.as_str()).collect();
    let missing: Vec<String> = (0..n)
        .map(|i| format!("evt-chaos-{i}"))
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    eprintln!(
        "[{:>5.1}s] {} of {n} delivered, {} requests accepted; reading the topics",
        started.elapsed().as_secs_f64(),
        ids.len(),
        accepted.len()
    );
    let (recorded_failed, dead_letters, traces) = attempts_on_topics(&cluster.brokers(), &missing);
    let outcome = Outcome {
        scenario: scenario.name,
        events: n,
        faults: scenario.faults.iter().map(ToString::to_string).collect(),
        delivered: ids.len(),
        lost: missing.len(),
        duplicates: accepted.len() - ids.len(),
        duplicate_ratio: (accepted.len() - ids.len()) as f64 / ids.len().max(1) as f64,
        receiver_failed: receiver.failed(),
        recorded_failed,
        dead_letters,
        post_retries: post_retries.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&outcome).unwrap();
    eprintln!("{text}");
    let out = std::env::var("WAYBILL_CHAOS_OUT").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/chaos"),
        PathBuf::from,
    );
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join(format!("{}.json", scenario.name)), &text);
    }

    if !missing.is_empty() {
        // Keep every log for the post-mortem.
        drop(cluster);
        let kept = dir.keep();
        panic!(
            "{} of {n} events never delivered (first: {:?}); logs kept in {}\nwhat the topics say of them:\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            kept.display(),
            traces.join("\n")
        );
    }
    assert!(
        outcome.duplicate_ratio <= 0.05,
        "duplicates far above the 1 % target: {text}"
    );
    // The receiver fails first attempts only, and the policy has 8: no
    // delivery dies.
    assert_eq!(dead_letters, 0, "{text}");
    if scenario.faults.contains(&Role::Delivery) {
        // A request the receiver reset while its delivery process was
        // killed has no attempt record; the retried one does.
        assert!(recorded_failed <= outcome.receiver_failed, "{text}");
    } else {
        assert_eq!(recorded_failed, outcome.receiver_failed, "{text}");
    }
    outcome
}

/// Distinct deliveries the receiver accepted.
fn distinct(receiver: &BenchReceiver) -> usize {
    let arrivals = receiver.arrivals();
    arrivals
        .iter()
        .filter(|a| a.accepted)
        .map(|a| a.webhook_id.as_str())
        .collect::<HashSet<_>>()
        .len()
}

/// Failed attempts recorded on `delivery_attempts` (distinct delivery and
/// attempt number: a producer retry across a broker restart may write a
/// record twice), the records of `deliveries.dlq`, and what the topics hold
/// of the `missing` events (their tasks and attempt records).
fn attempts_on_topics(brokers: &str, missing: &[String]) -> (usize, usize, Vec<String>) {
    let topics = Topics::of(&KafkaConfig {
        brokers: brokers.to_owned(),
        ..KafkaConfig::default()
    });
    let mut traces = Vec::new();
    // Where the missing events' tasks are.
    let mut places: Vec<(String, i32, i64)> = Vec::new();
    if !missing.is_empty() {
        for topic in std::iter::once(topics.deliveries()).chain(topics.retries()) {
            for record in waybill_testkit::topic::read_all(brokers, &topic) {
                let task = v1::DeliveryTask::decode(record.payload.as_slice()).unwrap();
                if task.event.as_ref().is_some_and(|e| missing.contains(&e.id)) {
                    traces.push(format!(
                        "task at {topic}/{}/{}: delivery {} attempt {}",
                        record.partition, record.offset, task.delivery_id, task.attempt
                    ));
                    places.push((topic.clone(), record.partition, record.offset));
                }
            }
        }
    }
    let mut failed: HashMap<(String, u32), ()> = HashMap::new();
    for record in waybill_testkit::topic::read_all(brokers, &topics.delivery_attempts()) {
        let attempt = v1::DeliveryAttempt::decode(record.payload.as_slice()).unwrap();
        let at_place = attempt
            .task
            .as_ref()
            .is_some_and(|t| places.contains(&(t.topic.clone(), t.partition, t.offset)));
        if missing.contains(&attempt.event_id) || at_place {
            traces.push(format!(
                "attempt record at delivery_attempts/{}/{}: {attempt:?}",
                record.partition, record.offset
            ));
        }
        if attempt.outcome == v1::AttemptOutcome::Failed as i32 {
            failed.insert((attempt.delivery_id, attempt.attempt), ());
        }
    }
    let dead = waybill_testkit::topic::read_all(brokers, &topics.deliveries_dlq()).len();
    (failed.len(), dead, traces)
}
