//! Chaos runs: Apache Kafka (one KRaft node, or three with replication 3
//! and `min.insync.replicas` 2) and the three services as separate
//! processes, one subscription, a W1-sized stream of events posted through
//! the API, and faults at random points of the run:
//!
//! - `kill_matcher`, `kill_delivery`, `kill_ingest`: SIGKILL the service
//!   three times, restarting it at once;
//! - `restart_broker`: SIGKILL the Kafka node twice and start it again on
//!   its log directory;
//! - `kill_partition_leader` (three nodes): SIGKILL the leader of the
//!   `deliveries` partition the subscription's tasks are on, mid-run, and
//!   start it again a few seconds later;
//! - `rolling_restart` (three nodes): SIGTERM every node one after the
//!   other, each started again and back in every ISR before the next;
//! - `receiver_resets`: the receiver resets the TCP connection (RST, no
//!   answer) instead of answering 30 % of first attempts;
//! - `short_run_with_every_fault` (in `make test`): 1,500 events, one kill
//!   of each service, 10 % resets.
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
//! contexts; a run that loses an event keeps every log (the Kafka nodes'
//! too) and prints what the topics hold of the lost events.

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
use waybill_testkit::cluster::{Cluster, KEY, Options, Role};

/// Events of a full run (W1's size).
const FULL: usize = 20_000;

/// One fault of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL a role (every Kafka node for the broker), start it again at
    /// once.
    Kill(Role),
    /// SIGKILL the leader of the subscription's `deliveries` partition;
    /// start it again 5 s later.
    KillDeliveriesLeader,
    /// SIGTERM each Kafka node in turn, each started again and back in
    /// every ISR before the next.
    RollingRestart,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(role) => write!(f, "kill {role}"),
            Fault::KillDeliveriesLeader => f.write_str("kill deliveries leader"),
            Fault::RollingRestart => f.write_str("rolling restart"),
        }
    }
}

struct Scenario {
    name: &'static str,
    events: usize,
    /// Faults, one after the other, at random points of the run.
    faults: Vec<Fault>,
    /// Share of first attempts the receiver resets.
    reset_percent: u64,
    /// Kafka nodes (1 or 3).
    kafka_nodes: u32,
}

impl Scenario {
    fn full(name: &'static str, faults: Vec<Fault>, reset_percent: u64) -> Self {
        Self::sized(name, faults, reset_percent, FULL)
    }

    fn sized(name: &'static str, faults: Vec<Fault>, reset_percent: u64, default: usize) -> Self {
        let events = std::env::var("WAYBILL_CHAOS_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        Self {
            name,
            events,
            faults,
            reset_percent,
            kafka_nodes: 1,
        }
    }

    fn on_three_nodes(mut self) -> Self {
        self.kafka_nodes = 3;
        self
    }

    /// Whether a delivery process is killed (its in-flight requests have
    /// no attempt record).
    fn kills_delivery(&self) -> bool {
        self.faults.contains(&Fault::Kill(Role::Delivery))
    }
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    scenario: &'static str,
    events: usize,
    faults: Vec<String>,
    kafka_nodes: u32,
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
    /// Takeovers that found the group's offset past records with no
    /// recorded outcome and went back (from the delivery logs).
    takeover_rewinds: usize,
    /// Offset commits that failed or were refused (from every service log).
    commit_failures: usize,
    seconds: f64,
}

/// In `make test`: every service killed once (the delivery service
/// included), 10 % of first attempts reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_with_every_fault() {
    run(Scenario::sized(
        "short_run_with_every_fault",
        vec![
            Fault::Kill(Role::Ingest),
            Fault::Kill(Role::Matcher),
            Fault::Kill(Role::Delivery),
        ],
        10,
        1_500,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_matcher"]
async fn kill_matcher() {
    run(Scenario::full(
        "kill_matcher",
        vec![Fault::Kill(Role::Matcher); 3],
        0,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_delivery"]
async fn kill_delivery() {
    run(Scenario::full(
        "kill_delivery",
        vec![Fault::Kill(Role::Delivery); 3],
        0,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh kill_ingest"]
async fn kill_ingest() {
    run(Scenario::full(
        "kill_ingest",
        vec![Fault::Kill(Role::Ingest); 3],
        0,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run: scripts/chaos.sh restart_broker"]
async fn restart_broker() {
    run(Scenario::full(
        "restart_broker",
        vec![Fault::Kill(Role::Broker); 2],
        0,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run on three Kafka nodes: scripts/chaos.sh kill_partition_leader"]
async fn kill_partition_leader() {
    run(Scenario::full(
        "kill_partition_leader",
        vec![Fault::KillDeliveriesLeader],
        0,
    )
    .on_three_nodes())
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long chaos run on three Kafka nodes: scripts/chaos.sh rolling_restart"]
async fn rolling_restart() {
    run(Scenario::full("rolling_restart", vec![Fault::RollingRestart], 0).on_three_nodes()).await;
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
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.kafka_nodes = scenario.kafka_nodes;
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
    for (fault, at) in scenario.faults.iter().zip(&points) {
        let threshold = (at * n as f64) as usize;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let progress = if *fault == Fault::Kill(Role::Ingest) {
                posted.load(Ordering::Relaxed)
            } else {
                distinct(&receiver)
            };
            if progress >= threshold {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no progress to {threshold} before {fault}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "[{:>5.1}s] {fault} at {threshold} of {n} ({} posted, {} delivered)",
            started.elapsed().as_secs_f64(),
            posted.load(Ordering::Relaxed),
            distinct(&receiver)
        );
        inject(&mut cluster, *fault, started).await;
        eprintln!("[{:>5.1}s] {fault}: done", started.elapsed().as_secs_f64());
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
        kafka_nodes: scenario.kafka_nodes,
        delivered: ids.len(),
        lost: missing.len(),
        duplicates: accepted.len() - ids.len(),
        duplicate_ratio: (accepted.len() - ids.len()) as f64 / ids.len().max(1) as f64,
        receiver_failed: receiver.failed(),
        recorded_failed,
        dead_letters,
        post_retries: post_retries.load(Ordering::Relaxed),
        takeover_rewinds: count_in_log(&cluster, Role::Delivery, "going back to the first of them"),
        commit_failures: [Role::Matcher, Role::Delivery]
            .iter()
            .map(|r| {
                count_in_log(&cluster, *r, "offset commit failed")
                    + count_in_log(&cluster, *r, "offset commit refused")
            })
            .sum(),
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
    // A delivery kill re-sends what was in flight: requests under way (8
    // lanes) and deliveries whose attempt record Kafka had not yet
    // acknowledged (the lane is freed when the request ends): about 30 per
    // kill here. Beyond that, 5 % of the run.
    let kills = scenario
        .faults
        .iter()
        .filter(|f| **f == Fault::Kill(Role::Delivery))
        .count();
    let allowed = n / 20 + 64 * kills;
    assert!(
        outcome.duplicates <= allowed,
        "{} duplicates, more than the {allowed} allowed ({kills} delivery kills): {text}",
        outcome.duplicates
    );
    // The receiver fails first attempts only, and the policy has 8: no
    // delivery dies.
    assert_eq!(dead_letters, 0, "{text}");
    if scenario.kills_delivery() {
        // A request the receiver reset while its delivery process was
        // killed has no attempt record; the retried one does.
        assert!(recorded_failed <= outcome.receiver_failed, "{text}");
    } else {
        assert_eq!(recorded_failed, outcome.receiver_failed, "{text}");
    }
    outcome
}

/// Applies one fault.
async fn inject(cluster: &mut Cluster, fault: Fault, started: Instant) {
    match fault {
        Fault::Kill(role) => {
            cluster.kill(role);
            cluster.restart(role).await;
        }
        Fault::KillDeliveriesLeader => {
            let topic = Topics::of(&KafkaConfig::default()).deliveries();
            let brokers = cluster.brokers();
            let (partition, leader) = busiest_partition_leader(&brokers, &topic);
            eprintln!(
                "[{:>5.1}s] SIGKILL Kafka node {leader}, leader of {topic}/{partition}",
                started.elapsed().as_secs_f64()
            );
            cluster.kafka_mut().kill(leader);
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.kafka_mut().restart(leader).await;
            cluster
                .kafka()
                .wait_fully_replicated(Duration::from_secs(120))
                .await
                .unwrap();
        }
        Fault::RollingRestart => {
            for node in cluster.kafka().nodes() {
                let took = cluster
                    .kafka_mut()
                    .stop(node, Duration::from_secs(60))
                    .unwrap();
                eprintln!(
                    "[{:>5.1}s] Kafka node {node} stopped (SIGTERM) in {:.1} s",
                    started.elapsed().as_secs_f64(),
                    took.as_secs_f64()
                );
                cluster.kafka_mut().restart(node).await;
                cluster
                    .kafka()
                    .wait_fully_replicated(Duration::from_secs(120))
                    .await
                    .unwrap();
                eprintln!(
                    "[{:>5.1}s] Kafka node {node} back in every ISR",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// The partition of `topic` holding the most records, and its leader.
fn busiest_partition_leader(brokers: &str, topic: &str) -> (i32, u32) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
            (high - low, p.id(), p.leader() as u32)
        })
        .max()
        .map(|(_, partition, leader)| (partition, leader))
        .expect("a partition")
}

/// Lines of a service's log (every process it ran) containing `text`.
fn count_in_log(cluster: &Cluster, role: Role, text: &str) -> usize {
    cluster
        .log_tail(role, usize::MAX)
        .lines()
        .filter(|l| l.contains(text))
        .count()
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
