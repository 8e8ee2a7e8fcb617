//! No loss when the delivery process dies: 10,000 delivery tasks on the
//! broker, a separate `waybill delivery` process killed with SIGKILL three
//! times mid-run and restarted each time; in the end every delivery id has
//! reached the receiver at least once. Duplicates (requests in flight when
//! the process died) are counted and reported: a new owner of a partition
//! skips the records whose success the previous owner recorded on
//! `delivery_attempts` but did not commit. Then the process is stopped with
//! SIGTERM, which must drain, commit and exit 0 within the grace period,
//! and restarted once more.
//!
//! The broker is the embedded one (librdkafka's mock cluster on real TCP
//! ports), owned by this test process so it outlives the killed service.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use waybill_core::event::{EntityRef, Event};
use waybill_core::pattern::EventTypePattern;
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Spec, Subscription};
use waybill_kafka::embedded::EmbeddedBroker;
use waybill_kafka::{KafkaConfig, Producer, Topics, headers};
use waybill_proto::Message as _;
use waybill_proto::convert::{event_to_proto, subscription_to_proto, timestamp};
use waybill_proto::v1;
use waybill_testkit::receiver::Receiver;

const DELIVERIES: usize = 10_000;
const SUBSCRIPTIONS: usize = 4;
/// Kill the process once the receiver has seen this many distinct ids.
const KILL_AT: [usize; 3] = [1_500, 4_000, 7_000];
/// Then stop it gracefully (SIGTERM) at this many, and restart it.
const TERM_AT: usize = 8_500;
/// `delivery.drain_timeout` (20 s) plus start-up slack: the process must
/// have exited by then.
const GRACE: Duration = Duration::from_secs(25);

fn spawn_delivery(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["delivery", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,waybill=info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("waybill delivery starts")
}

fn distinct(receiver: &Receiver) -> (usize, usize) {
    let received = receiver.received();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *ids.entry(r.header("webhook-id").unwrap_or("").to_owned())
            .or_default() += 1;
    }
    (ids.len(), received.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_10000_deliveries_loses_nothing() {
    waybill_testkit::wait::watchdog(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start().unwrap();
    let kafka = KafkaConfig {
        brokers: broker.bootstrap_servers(),
        partitions: 4,
        subscriptions_partitions: 1,
        create_topics: false,
        ..KafkaConfig::default()
    };
    let topics = Topics::of(&kafka);
    broker.create_topics(&topics.specs(&kafka)).unwrap();

    let key = Keyring::generate_key();
    let keys: BTreeMap<String, String> = [("k1".to_owned(), key.clone())].into();
    let keyring = Keyring::new("k1", &keys).unwrap();
    let receiver = Receiver::start().await.unwrap();
    let producer = Producer::new(&kafka, Duration::from_secs(30)).unwrap();

    // Subscriptions, written as the ingest service would.
    let now = OffsetDateTime::now_utc();
    let mut subscriptions = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let spec = Spec::new(receiver.url(&format!("/s{i}")), vec![EventTypePattern::All]);
        let s = Subscription::new(format!("sub_kill_{i}"), "ten_kill".into(), spec, "key", now);
        let record = subscription_to_proto(&s, &keyring).encode_to_vec();
        producer
            .send(
                &topics.subscriptions(),
                s.id.as_bytes(),
                Some(&record),
                headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
            .await
            .unwrap();
        subscriptions.push(s.id);
    }
    // The tasks, as the matcher would write them: one entity each, so
    // deliveries of a subscription run side by side.
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..DELIVERIES {
        let subscription_id = subscriptions[n % SUBSCRIPTIONS].clone();
        let event = Event {
            id: format!("evt_kill_{n}"),
            tenant_id: "ten_kill".into(),
            name: "freights.publication.accepted".into(),
            occurred_at: now,
            entity: EntityRef {
                kind: "freight".into(),
                id: format!("F-{n}"),
            },
            attributes: BTreeMap::new(),
            callback_url: None,
            payload: format!("{{\"n\": {n}}}").into_bytes(),
        };
        let task = v1::DeliveryTask {
            delivery_id: format!("msg_kill_{n:05}"),
            subscription_id,
            tenant_id: "ten_kill".into(),
            event: Some(event_to_proto(&event)),
            attempt: 1,
            not_before: Some(timestamp(now)),
            created_at: Some(timestamp(now)),
            redeliver: false,
            replay_id: String::new(),
            strict_retry: false,
            resume: false,
            produced_at: None,
        };
        let producer = producer.clone();
        let topic = topics.deliveries();
        sends.spawn(async move {
            producer
                .send(
                    &topic,
                    task.subscription_id.as_bytes(),
                    Some(&task.encode_to_vec()),
                    headers::standard(waybill_proto::SCHEMA_VERSION, None),
                )
                .await
                .map(|_| ())
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }

    let config = dir.path().join("waybill.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
create_topics = false

[kafka.properties]
"fetch.wait.max.ms" = "10"
# A killed member leaves the group after this long.
"session.timeout.ms" = "6000"

[secrets]
current_key_id = "k1"
keys = {{ k1 = "{key}" }}

[url_policy]
allow_http = true
allow_private_networks = true
allow_any_port = true

[delivery]
listen = "127.0.0.1:{port}"
"#,
            brokers = kafka.brokers,
            port = waybill_testkit::cluster::free_port(),
        ),
    )
    .unwrap();
    let log = dir.path().join("delivery.log");
    let started = Instant::now();
    let mut child = spawn_delivery(&config, &log);
    let tail = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut kills = KILL_AT.iter().peekable();
    let mut kill_points = Vec::new();
    let mut terminated: Option<(usize, usize, Duration)> = None;
    loop {
        let (seen, total) = distinct(&receiver);
        if seen >= DELIVERIES {
            break;
        }
        if let Some(at) = kills.peek()
            && seen >= **at
        {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kill_points.push(seen);
            eprintln!("SIGKILL after {seen} distinct deliveries ({total} requests); restarting");
            kills.next();
            child = spawn_delivery(&config, &log);
        }
        if terminated.is_none() && kills.peek().is_none() && seen >= TERM_AT {
            let before = total;
            let in_flight_from = receiver.received().len();
            let asked = Instant::now();
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = loop {
                if let Some(exit) = child.try_wait().unwrap() {
                    break exit;
                }
                assert!(
                    asked.elapsed() < GRACE,
                    "no exit within {GRACE:?} of SIGTERM:\n{}",
                    tail(&log)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(exit.success(), "SIGTERM exit: {exit}\n{}", tail(&log));
            // Requests that reached the receiver between the signal and the
            // exit were in flight: the drain saw them through.
            let took = asked.elapsed();
            let drained = receiver.received().len() - in_flight_from;
            terminated = Some((receiver.received().len(), drained, took));
            eprintln!(
                "SIGTERM after {seen} distinct deliveries ({before} requests): exited {exit} in {took:.2?}, \
                 {drained} requests reached the receiver meanwhile; restarting"
            );
            child = spawn_delivery(&config, &log);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("waybill delivery exited ({status}):\n{}", tail(&log));
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of {DELIVERIES} delivered:\n{}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    // Whatever was in flight at the last kill has arrived by now too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().ok();
    child.wait().ok();

    let (seen, total) = distinct(&receiver);
    let duplicates = total - seen;
    eprintln!(
        "sigkill: {seen} of {DELIVERIES} delivery ids received in {elapsed:.1?} with {} kills at {kill_points:?}; \
         {total} requests, {duplicates} duplicates ({:.2} %)",
        kill_points.len(),
        duplicates as f64 * 100.0 / seen as f64
    );
    assert_eq!(seen, DELIVERIES, "every delivery arrived");
    assert_eq!(kill_points.len(), KILL_AT.len(), "killed three times");
    let (at_exit, drained, took) = terminated.expect("stopped once with SIGTERM");
    // A graceful stop loses nothing in flight and sends nothing twice: every
    // delivery that reached the receiver before the process exited was
    // recorded and committed, so the next process sends none of them again.
    let received = receiver.received();
    let id =
        |r: &waybill_testkit::receiver::Received| r.header("webhook-id").unwrap_or("").to_owned();
    let before_exit: std::collections::HashSet<String> =
        received[..at_exit].iter().map(id).collect();
    let again = received[at_exit..]
        .iter()
        .filter(|r| before_exit.contains(&id(r)))
        .count();
    eprintln!(
        "SIGTERM: exit in {took:.2?}, {drained} requests finished during the drain, {again} of the deliveries before the exit sent again after the restart"
    );
    assert_eq!(again, 0, "a graceful stop commits what it delivered");
    // At-least-once: a successful delivery whose attempt record was
    // written is not sent again by the next owner (it reads them back), and
    // a graceful stop finishes its requests; duplicates are requests in
    // flight at a kill, and records the takeover scan missed. Runs here see
    // 0.2 to 2 %; the bound leaves room for a loaded machine.
    assert!(
        duplicates * 100 <= DELIVERIES * 5,
        "{duplicates} duplicates: more than 5 %"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in log_text.lines().filter(|l| {
        l.contains("previous owner") || l.contains("takeover") || l.contains("delivery_attempts")
    }) {
        eprintln!("delivery log: {line}");
    }
}
