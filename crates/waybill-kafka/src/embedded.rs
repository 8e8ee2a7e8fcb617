//! The embedded broker: librdkafka's mock cluster, in process, on real TCP
//! ports. It backs `waybill dev` and the fast integration tests. It keeps
//! data in memory only and does not compact; production uses a real Kafka
//! cluster.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::topics::TopicSpec;
use crate::{Error, Result};

/// A running in-process broker; stops when dropped.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on a free loopback port.
    pub fn start() -> Result<Self> {
        Ok(Self {
            cluster: MockCluster::new(1)?,
        })
    }

    /// `host:port` to use as `kafka.brokers`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates topics. The mock cluster does not implement the admin API, so
    /// services run against it with `kafka.create_topics = false`.
    pub fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        for spec in specs {
            self.cluster
                .create_topic(&spec.name, spec.partitions, 1)
                .map_err(|e| Error::Topic {
                    topic: spec.name.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// The mock cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
