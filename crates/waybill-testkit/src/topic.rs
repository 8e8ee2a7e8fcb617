//! Reading a topic's raw records, as a test looking behind the API does.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One record as stored.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Headers, values as UTF-8 (lossy).
    pub headers: Vec<(String, String)>,
}

impl RawRecord {
    /// The last value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every record of `topic`, partition by partition, from the beginning up to
/// the high watermark at the time of the call.
pub fn read_all(brokers: &str, topic: &str) -> Vec<RawRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "waybill-testkit-reader")
        .set("enable.auto.commit", "false")
        // The end of a partition is reported, so offsets the log skips
        // (after a broker restart) do not leave the reader waiting.
        .set("enable.partition.eof", "true")
        .create()
        .expect("a Kafka consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("topic metadata");
    let mut out = Vec::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), timeout)
            .expect("watermarks");
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition.id(), Offset::Offset(low))
            .expect("partition list");
        consumer.assign(&tpl).expect("assign");
        let mut next = low;
        while next < high {
            let m = match consumer.poll(timeout) {
                Some(Ok(m)) => m,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("unreadable record: {e}"),
                None => {
                    // Nothing for 10 s below the high watermark: a broker
                    // that lost records it had acknowledged (or a stretch
                    // of offsets it does not serve). Report, go on.
                    eprintln!(
                        "{topic}/{}: nothing served from offset {next} (high watermark {high}); {} records of the partition not read",
                        partition.id(),
                        high - next
                    );
                    break;
                }
            };
            next = m.offset() + 1;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(RawRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}
