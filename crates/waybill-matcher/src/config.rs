//! The `[matcher]` configuration section.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the matcher.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct MatcherConfig {
    /// Address of `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Consumer group of the matcher instances.
    pub group_id: String,
    /// Events being matched at once per partition (tasks awaiting Kafka's
    /// acknowledgement); offsets advance in order behind them.
    pub max_in_flight: usize,
    /// Longest wait for the projection to include subscriptions written
    /// before an event; past it the event is matched with what is known.
    #[serde(with = "waybill_core::duration")]
    pub freshness_timeout: Duration,
    /// How long a revoked partition may take to finish in-flight events.
    #[serde(with = "waybill_core::duration")]
    pub drain_timeout: Duration,
    /// How often the group's backlog (lag per partition, oldest record
    /// age) is sampled for `/metrics`.
    #[serde(with = "waybill_core::duration")]
    pub backlog_sample_interval: Duration,
    /// A record repeating the tenant and event id of another record of its
    /// partition written within this window is not matched again (an event
    /// posted twice through two ingest replicas is delivered once).
    #[serde(with = "waybill_core::duration")]
    pub dedup_window: Duration,
    /// Most event ids remembered per partition (the oldest are forgotten
    /// first beyond it; 100,000 ids take about 10 MiB).
    pub dedup_capacity: usize,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            group_id: "waybill-matcher".into(),
            max_in_flight: 256,
            freshness_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            backlog_sample_interval: Duration::from_secs(15),
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 100_000,
        }
    }
}

impl MatcherConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.backlog_sample_interval < std::time::Duration::from_millis(100) {
            out.push("matcher.backlog_sample_interval: must be at least 100ms".into());
        }
        if self.group_id.trim().is_empty() {
            out.push("matcher.group_id: must not be empty".into());
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            out.push("matcher.max_in_flight: must be between 1 and 100000".into());
        }
        out
    }
}
