//! An idempotent producer whose sends resolve once Kafka acknowledged.

use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::set_default;
use crate::{Error, KafkaConfig, Result};

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A shared producer. Clones share one librdkafka client and its batches.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<crate::stats::StatsContext>,
    queue_timeout: Duration,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer with idempotence (no duplicates or reordering from its own
    /// retries), `acks=all`, and a short linger so concurrent sends batch.
    ///
    /// Keys are placed by `murmur2_random`, the Java client's partitioner
    /// (librdkafka's default is CRC32): an entity written by a JVM producer
    /// and through the ingest API lands on one partition, so its events
    /// stay in order. `kafka.properties.partitioner` overrides it.
    ///
    /// When librdkafka's local queue is full, a send waits up to
    /// `queue_timeout` for room and then fails: callers see backpressure
    /// instead of unbounded buffering.
    pub fn new(config: &KafkaConfig, queue_timeout: Duration) -> Result<Self> {
        let mut client = config.client_config_with_stats(crate::config::ClientRole::Producer);
        set_default(&mut client, "enable.idempotence", "true");
        set_default(&mut client, "acks", "all");
        set_default(&mut client, "partitioner", "murmur2_random");
        set_default(&mut client, "linger.ms", "2");
        set_default(&mut client, "message.timeout.ms", "30000");
        Ok(Self {
            inner: client.create_with_context(crate::stats::StatsContext)?,
            queue_timeout,
        })
    }

    /// Sends one record and waits for its acknowledgement. `value: None`
    /// writes a tombstone.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<Acked> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .headers(headers);
        if let Some(value) = value {
            record = record.payload(value);
        }
        match self.inner.send(record, self.queue_timeout).await {
            Ok(delivery) => Ok(Acked {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                _,
            )) => Err(Error::Timeout(format!(
                "room in the producer queue for {topic} (Kafka is slower than the input)"
            ))),
            Err((e, _)) => Err(Error::Kafka(e)),
        }
    }

    /// Enqueues one record now, in call order, and returns a future of its
    /// acknowledgement. Awaiting this call only waits for room in the local
    /// queue (backpressure, up to the queue timeout); records enqueued one
    /// after another keep their order per partition, which `send` spawned
    /// concurrently would not guarantee.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<impl std::future::Future<Output = Result<Acked>> + Send + 'static> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .headers(headers);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        let delivery = loop {
            match self.inner.send_result(record) {
                Ok(delivery) => break delivery,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Timeout(format!(
                            "room in the producer queue for {topic} (Kafka is slower than the input)"
                        )));
                    }
                    record = back;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        };
        Ok(async move {
            match delivery.await {
                Ok(Ok(d)) => Ok(Acked {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => Err(Error::Kafka(e)),
                Err(_) => Err(Error::Task("producer dropped the delivery report".into())),
            }
        })
    }

    /// Waits until every queued record is acknowledged (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).map_err(Error::Kafka)
    }
}
