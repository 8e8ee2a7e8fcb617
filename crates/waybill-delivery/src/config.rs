//! The `[delivery]` configuration section.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the delivery workers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Address of `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Consumer group of the delivery instances.
    pub group_id: String,
    /// Longest wait for a TCP (and TLS) connection to a subscriber.
    #[serde(with = "waybill_core::duration")]
    pub connect_timeout: Duration,
    /// Longest wait for a whole webhook request, response included.
    #[serde(with = "waybill_core::duration")]
    pub request_timeout: Duration,
    /// Longest wait for the projection to include a task's subscription.
    #[serde(with = "waybill_core::duration")]
    pub freshness_timeout: Duration,
    /// Records of one partition read ahead and worked on at once.
    pub max_in_flight_per_partition: usize,
    /// Requests of one subscription in flight at once in one partition
    /// (one per entity at most, so an entity's events stay in order). A
    /// request's slot is free once its response is in; writing its outcome
    /// to Kafka happens behind it.
    pub max_in_flight_per_subscription: usize,
    /// How long a revoked partition may take to finish its current request.
    #[serde(with = "waybill_core::duration")]
    pub drain_timeout: Duration,
    /// How often the group's backlog (lag per partition, oldest record
    /// age) is sampled for `/metrics`.
    #[serde(with = "waybill_core::duration")]
    pub backlog_sample_interval: Duration,
    /// A subscription whose every attempt failed for this long is disabled
    /// (with a reason, and an event on `operational_events`); `reset`
    /// re-enables it. Default 5 days.
    #[serde(with = "waybill_core::duration")]
    pub disable_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8082)),
            group_id: "waybill-delivery".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            freshness_timeout: Duration::from_secs(10),
            max_in_flight_per_partition: 1000,
            max_in_flight_per_subscription: 8,
            drain_timeout: Duration::from_secs(20),
            backlog_sample_interval: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl DeliveryConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.backlog_sample_interval < std::time::Duration::from_millis(100) {
            out.push("delivery.backlog_sample_interval: must be at least 100ms".into());
        }
        if self.group_id.trim().is_empty() {
            out.push("delivery.group_id: must not be empty".into());
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            out.push(
                "delivery.connect_timeout and delivery.request_timeout must be positive".into(),
            );
        }
        if self.connect_timeout > self.request_timeout {
            out.push("delivery.connect_timeout: must not exceed delivery.request_timeout".into());
        }
        if !(1..=100_000).contains(&self.max_in_flight_per_partition) {
            out.push("delivery.max_in_flight_per_partition: must be between 1 and 100000".into());
        }
        if !(1..=1000).contains(&self.max_in_flight_per_subscription) {
            out.push("delivery.max_in_flight_per_subscription: must be between 1 and 1000".into());
        }
        if self.disable_after.is_zero() {
            out.push("delivery.disable_after: must be positive".into());
        }
        if self.request_timeout >= self.drain_timeout {
            out.push(
                "delivery.drain_timeout: must exceed delivery.request_timeout so an in-flight request can finish"
                    .into(),
            );
        }
        out
    }
}
