//! The librdkafka clients' statistics as metrics (`waybill_kafka_broker_*`,
//! `waybill_kafka_client_*`), set from [`waybill_kafka::stats`] at each
//! render.

use prometheus_client::encoding::EncodeLabelSet;

use super::Families;

/// One librdkafka client of the process.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// librdkafka's handle name, `<client.id>#producer-1`.
    pub client: String,
}

/// One broker as one client sees it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientBrokerLabels {
    /// librdkafka's handle name.
    pub client: String,
    /// `host:port/id`.
    pub broker: String,
}

/// One partition a client consumes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientPartitionLabels {
    /// librdkafka's handle name.
    pub client: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl Families {
    /// Sets the librdkafka gauges from the clients' latest reports; the
    /// series of a client that is gone go with it.
    pub fn record_kafka_stats(&self, clients: &[waybill_kafka::stats::ClientStats]) {
        self.kafka_broker_rtt.clear();
        self.kafka_broker_in_flight.clear();
        self.kafka_queue_messages.clear();
        self.kafka_queue_bytes.clear();
        self.kafka_partition_lag.clear();
        for c in clients {
            for b in &c.brokers {
                let labels = ClientBrokerLabels {
                    client: c.client.clone(),
                    broker: b.broker.clone(),
                };
                if let Some(rtt) = b.rtt_seconds {
                    self.kafka_broker_rtt.get_or_create(&labels).set(rtt);
                }
                self.kafka_broker_in_flight
                    .get_or_create(&labels)
                    .set(b.in_flight);
            }
            if c.kind == "producer" {
                let labels = ClientLabels {
                    client: c.client.clone(),
                };
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                self.kafka_queue_messages
                    .get_or_create(&labels)
                    .set(count(c.queued_messages));
                self.kafka_queue_bytes
                    .get_or_create(&labels)
                    .set(count(c.queued_bytes));
            }
            for p in &c.partitions {
                self.kafka_partition_lag
                    .get_or_create(&ClientPartitionLabels {
                        client: c.client.clone(),
                        topic: p.topic.clone(),
                        partition: p.partition,
                    })
                    .set(p.lag);
            }
        }
    }
}
