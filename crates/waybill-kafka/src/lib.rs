//! Waybill's Kafka glue, shared by every service.
//!
//! # Layout
//!
//! - [`config`]: connection settings ([`KafkaConfig`]) turned into librdkafka client configs.
//! - [`topics`]: topic names (with the deployment prefix) and their creation at start-up.
//! - [`headers`]: record headers (`traceparent`, content type, schema version, dead-letter reasons).
//! - [`producer`]: an idempotent producer whose sends resolve when Kafka acknowledged.
//! - [`table`]: follows a compacted topic into in-memory state, with "caught up" barriers.
//! - [`partitioned`]: a consumer-group member that runs one task per assigned partition.
//! - [`offsets`]: the storable offset when a partition's records finish out of order.
//! - [`lag`]: a consumer group's backlog per partition (for metrics).
//! - [`log`]: reads one record by its place, or a topic within a time window (retry, replay).
//! - [`dead_letter`]: where poison records go, with the reason, so no partition ever stops.
//! - [`embedded`]: the in-process broker (librdkafka mock cluster) of `waybill dev` and tests.
//!
//! What this crate must not do: decide anything about webhooks. It moves
//! records; the services decide what they mean.
#![forbid(unsafe_code)]

pub mod config;
pub mod dead_letter;
pub mod embedded;
pub mod headers;
pub mod lag;
pub mod log;
pub mod offsets;
pub mod partitioned;
pub mod producer;
pub mod stats;
pub mod table;
pub mod topics;

pub use config::{ClientRole, KafkaConfig};
pub use producer::Producer;
pub use topics::Topics;

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka reported an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A wait on the broker took longer than allowed.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// Topic metadata or creation failed.
    #[error("topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// A blocking call could not complete.
    #[error("background task failed: {0}")]
    Task(String),
}

/// When a record was produced (its timestamp), never later than now; now if
/// it has none. Used with [`table::Table::wait_fresh`].
pub fn produced_at<M: rdkafka::Message>(message: &M) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    message
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(now, |ms| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
        })
        .min(now)
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
