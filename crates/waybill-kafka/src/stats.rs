//! librdkafka's own statistics, kept for the metrics endpoint.
//!
//! The producer and the group consumers ask librdkafka for statistics every
//! [`INTERVAL`] (`statistics.interval.ms`; `kafka.properties` may change
//! it, `0` turns them off). Each report replaces the last one of its client
//! in a process-wide table, which `/metrics` reads: broker round-trip
//! times, the producer's queue, each consumed partition's lag as the
//! client sees it. A client that stopped reporting (dropped) leaves the
//! table after [`STALE_AFTER`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::statistics::Statistics;

/// How often clients report, unless `statistics.interval.ms` says otherwise.
pub const INTERVAL: Duration = Duration::from_secs(15);

/// A client that has not reported for this long is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// One broker as one client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerStats {
    /// `host:port/id`.
    pub broker: String,
    /// Mean round-trip time of requests in the last interval, seconds
    /// (`None` before the first request).
    pub rtt_seconds: Option<f64>,
    /// Requests waiting to be sent or for their answer.
    pub in_flight: i64,
}

/// One consumed partition as its client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records between the committed offset and the end of the partition
    /// (librdkafka's `consumer_lag`).
    pub lag: i64,
}

/// The last report of one client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientStats {
    /// librdkafka's handle name (`<client.id>#producer-1`): one per client.
    pub client: String,
    /// `producer` or `consumer`.
    pub kind: String,
    /// Records waiting in the producer's queues.
    pub queued_messages: u64,
    /// Bytes of those.
    pub queued_bytes: u64,
    /// Every broker it talks to.
    pub brokers: Vec<BrokerStats>,
    /// The partitions it consumes (those it is assigned).
    pub partitions: Vec<PartitionStats>,
}

impl ClientStats {
    /// What is kept of a report.
    pub fn from_report(report: &Statistics) -> Self {
        let mut brokers: Vec<BrokerStats> = report
            .brokers
            .values()
            // librdkafka's bootstrap and internal pseudo-brokers have no id.
            .filter(|b| b.nodeid >= 0)
            .map(|b| BrokerStats {
                broker: b.name.clone(),
                rtt_seconds: b
                    .rtt
                    .as_ref()
                    .filter(|w| w.cnt > 0)
                    .map(|w| w.avg as f64 / 1e6),
                in_flight: b.outbuf_cnt + b.waitresp_cnt,
            })
            .collect();
        brokers.sort_by(|a, b| a.broker.cmp(&b.broker));
        let mut partitions: Vec<PartitionStats> = report
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .values()
                    // -1 is librdkafka's internal UA partition; a lag of -1
                    // means not known yet.
                    .filter(|p| {
                        p.partition >= 0 && p.consumer_lag >= 0 && p.fetch_state == "active"
                    })
                    .map(|p| PartitionStats {
                        topic: t.topic.clone(),
                        partition: p.partition,
                        lag: p.consumer_lag,
                    })
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Self {
            client: report.name.clone(),
            kind: report.client_type.clone(),
            queued_messages: report.msg_cnt,
            queued_bytes: report.msg_size,
            brokers,
            partitions,
        }
    }
}

static CLIENTS: Mutex<Option<HashMap<String, (Instant, ClientStats)>>> = Mutex::new(None);

/// Keeps `report` as its client's latest.
pub fn record(report: &Statistics) {
    keep(ClientStats::from_report(report));
}

/// Keeps `stats` as its client's latest.
pub fn keep(stats: ClientStats) {
    let mut clients = CLIENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    clients
        .get_or_insert_with(HashMap::new)
        .insert(stats.client.clone(), (Instant::now(), stats));
}

/// The latest report of every client of the process that reported within
/// [`STALE_AFTER`], by client name.
pub fn latest() -> Vec<ClientStats> {
    let mut clients = CLIENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(clients) = clients.as_mut() else {
        return Vec::new();
    };
    clients.retain(|_, (at, _)| at.elapsed() < STALE_AFTER);
    let mut all: Vec<ClientStats> = clients.values().map(|(_, s)| s.clone()).collect();
    all.sort_by(|a, b| a.client.cmp(&b.client));
    all
}

/// A client context that keeps the statistics (and logs as librdkafka's
/// default context does otherwise).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsContext;

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        record(&statistics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedBroker;
    use crate::topics::TopicSpec;
    use crate::{KafkaConfig, producer::Producer};

    /// A producer on the embedded broker reports, and what is kept of its
    /// real report names the broker with a round-trip time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_reports_its_brokers_and_queue() {
        let broker = EmbeddedBroker::start().unwrap();
        broker
            .create_topics(&[TopicSpec {
                name: "stats.check".into(),
                partitions: 1,
                compacted: false,
                retention: None,
            }])
            .unwrap();
        let config = KafkaConfig {
            brokers: broker.bootstrap_servers(),
            properties: [("statistics.interval.ms".to_owned(), "100".to_owned())].into(),
            client_id: "stats-check".into(),
            ..KafkaConfig::default()
        };
        let producer = Producer::new(&config, Duration::from_secs(5)).unwrap();
        producer
            .send("stats.check", b"k", Some(b"v"), Default::default())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mine = loop {
            let found = latest().into_iter().find(|c| {
                c.client.starts_with("stats-check#producer")
                    && c.brokers.iter().any(|b| b.rtt_seconds.is_some())
            });
            if let Some(found) = found {
                break found;
            }
            assert!(Instant::now() < deadline, "no report: {:?}", latest());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(mine.kind, "producer");
        assert_eq!(mine.queued_messages, 0, "{mine:?}");
        assert!(
            mine.brokers
                .iter()
                .all(|b| b.rtt_seconds.is_none_or(|rtt| (0.0..5.0).contains(&rtt))),
            "{mine:?}"
        );
        assert!(mine.partitions.is_empty(), "a producer consumes nothing");
    }
}
