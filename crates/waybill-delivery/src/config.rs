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
    /// The most requests of one subscription in flight at once in one
    /// partition, whatever its `max_in_flight` says (which is 8 unless the
    /// subscription sets it, at most 64). A request's slot is free once its
    /// response is in; writing its outcome to Kafka happens behind it
    /// (except on a strict lane, where the outcome may hold the lane).
    pub max_in_flight_per_subscription: usize,
    /// The most webhook requests of this process in flight at once, across
    /// every partition and subscription: what bounds a pod's sockets and
    /// the memory of its requests and responses. An attempt waits for a
    /// slot after its rate limit; a slot is free once the response is in.
    /// Throughput against slow receivers is about this over their answer
    /// time, per process (see docs/deploy.md, sizing).
    pub max_in_flight_total: usize,
    /// How long a revoked partition may take to finish its current request.
    #[serde(with = "waybill_core::duration")]
    pub drain_timeout: Duration,
    /// How often the group's backlog (lag per partition, oldest record
    /// age) is sampled for `/metrics`.
    #[serde(with = "waybill_core::duration")]
    pub backlog_sample_interval: Duration,
    /// A subscription whose every attempt failed for this long is disabled
    /// (with a reason, and a `waybill.subscription.disabled` event); `reset`
    /// re-enables it. Default 5 days.
    #[serde(with = "waybill_core::duration")]
    pub disable_after: Duration,
    /// How long a paused subscription's deliveries are kept: one kept
    /// longer is dead when the subscription is resumed (error class
    /// `pause_retention`; a retry sends it). Default 7 days; keep it below
    /// the retention of `deliveries.parked` (30 days).
    #[serde(with = "waybill_core::duration")]
    pub pause_retention: Duration,
    /// Forward proxy for every webhook and token request (`http://` or
    /// `https://` URL, credentials allowed). None by default, and the
    /// `HTTP(S)_PROXY`/`ALL_PROXY` environment variables are ignored: with
    /// a proxy, the proxy resolves the callback hosts, so the URL policy's
    /// address rules must be enforced there (see docs/deploy.md).
    pub proxy: Option<ProxyUrl>,
}

/// A proxy URL; `Debug` hides its credentials.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ProxyUrl(pub String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
                write!(f, "{:?}", u.as_str())
            }
            Ok(u) => write!(f, "{:?}", u.as_str()),
            Err(_) => f.write_str("\"(invalid)\""),
        }
    }
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
            max_in_flight_per_subscription: 64,
            max_in_flight_total: 512,
            drain_timeout: Duration::from_secs(20),
            backlog_sample_interval: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            pause_retention: Duration::from_secs(7 * 24 * 3600),
            proxy: None,
        }
    }
}

impl DeliveryConfig {
    /// The consumer group of the retry tiers (before the topic prefix):
    /// `<group_id>.retries`. It is a group of its own so that Kafka's
    /// assignor balances `deliveries` alone across the processes: in one
    /// group with the tiers it balanced partition counts over all of them,
    /// and a second process could get tiers only (measured: it added no
    /// capacity).
    pub fn retries_group_id(&self) -> String {
        format!("{}.retries", self.group_id)
    }

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
        if !(1..=100_000).contains(&self.max_in_flight_total) {
            out.push("delivery.max_in_flight_total: must be between 1 and 100000".into());
        }
        if self.pause_retention.is_zero() {
            out.push("delivery.pause_retention: must be positive".into());
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
        if let Some(proxy) = &self.proxy {
            match reqwest::Url::parse(&proxy.0) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => out
                    .push("delivery.proxy: must be an http:// or https:// URL with a host".into()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_is_checked_and_its_credentials_never_printed() {
        let mut c = DeliveryConfig {
            proxy: Some(ProxyUrl("http://user:s3cret@proxy.internal:3128".into())),
            ..DeliveryConfig::default()
        };
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("user"),
            "{printed}"
        );
        assert!(printed.contains("proxy.internal:3128"), "{printed}");
        c.proxy = Some(ProxyUrl("socks5://proxy:1080".into()));
        assert!(c.problems()[0].starts_with("delivery.proxy"));
    }
}
