//! How far a consumer group is behind, per partition: committed offset,
//! high watermark, and the age of the oldest record not yet consumed.
//!
//! Read with a client that joins nothing (it only fetches the group's
//! committed offsets), so sampling never disturbs the group. Blocking: call
//! from `spawn_blocking`.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaConfig, Result};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records not yet committed by the group.
    pub lag: i64,
    /// Write time (ms since the epoch) of the oldest uncommitted record.
    pub oldest_ms: Option<i64>,
}

/// Records a topic holds (sum over partitions of high minus low watermark).
pub fn topic_size(config: &KafkaConfig, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = config
        .client_config(crate::config::ClientRole::Consumer)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let mut size = 0;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), CALL_TIMEOUT)?;
            size += (high - low).max(0);
        }
    }
    Ok(size)
}

/// The high watermark (next offset) of each partition of `topic`.
pub fn high_watermarks(config: &KafkaConfig, topic: &str) -> Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer = config
        .client_config(crate::config::ClientRole::Consumer)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let mut out = Vec::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), CALL_TIMEOUT)?;
            out.push((p.id(), high));
        }
    }
    Ok(out)
}

/// The backlog of `group` on every partition of `topics`.
pub fn group_lag(
    config: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>> {
    let mut client = config.client_config(crate::config::ClientRole::Consumer);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create()?;
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                wanted.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(wanted, CALL_TIMEOUT)?;
    let mut out = Vec::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic().to_owned(), element.partition());
        let (low, high) = consumer.fetch_watermarks(&topic, partition, CALL_TIMEOUT)?;
        let from = match element.offset() {
            Offset::Offset(o) => o.max(low),
            // Never committed: the group starts at the earliest record.
            _ => low,
        };
        let lag = (high - from).max(0);
        let oldest_ms = if lag > 0 {
            crate::log::timestamp_at(&consumer, &topic, partition, from)?
        } else {
            None
        };
        out.push(PartitionLag {
            topic,
            partition,
            lag,
            oldest_ms,
        });
    }
    Ok(out)
}
