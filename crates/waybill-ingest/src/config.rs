//! The `[ingest]` configuration section.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Shortest API key accepted from configuration: at least as much entropy
/// as the keys Waybill makes itself.
pub const MIN_IMPORTED_KEY_LEN: usize = 32;

/// Settings of the ingest service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngestConfig {
    /// Address of the HTTP API (`/v1`, what tenants call).
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz` (kept off the API
    /// port, so the API can be exposed without them).
    pub admin_listen: SocketAddr,
    /// How long a write waits for this service's projection to apply it
    /// before answering `503 unavailable` (read-your-writes).
    #[serde(with = "waybill_core::duration")]
    pub write_timeout: Duration,
    /// Largest accepted event body, in bytes.
    pub max_event_bytes: usize,
    /// Static API keys and the tenant each belongs to, for deployments that
    /// manage keys in configuration. Keys made through `/v1/tenants` live on
    /// the `tenants` topic instead.
    pub api_keys: Vec<ApiKeyConfig>,
    /// The operator token that manages tenants and API keys (`/v1/tenants`).
    /// Without it, tenants can only come from `api_keys`.
    pub operator_token: Option<waybill_core::redacted::Redacted>,
    /// How long the previous signing secret keeps signing after a rotation.
    #[serde(with = "waybill_core::duration")]
    pub secret_overlap: Duration,
    /// How long an `Idempotency-Key` answer is remembered.
    #[serde(with = "waybill_core::duration")]
    pub idempotency_window: Duration,
    /// Most `Idempotency-Key` answers remembered at once.
    pub idempotency_capacity: usize,
    /// How long a client event id (`"id"` of `POST /v1/events`) is
    /// remembered: a repeat within it is accepted once.
    #[serde(with = "waybill_core::duration")]
    pub event_dedup_window: Duration,
    /// Most client event ids remembered at once (the oldest are forgotten
    /// first beyond it).
    pub event_dedup_capacity: u64,
    /// Most events in one `POST /v1/events/batch`.
    pub max_batch_events: usize,
    /// Largest `POST /v1/events/batch` body.
    pub max_batch_bytes: usize,
    /// Deliveries kept in the history per subscription (the newest).
    pub history_per_subscription: usize,
    /// Deliveries older than this leave the history.
    #[serde(with = "waybill_core::duration")]
    pub history_retention: Duration,
    /// A running replay whose ingest process wrote no progress for this long
    /// is taken over by another (or the restarted) process.
    #[serde(with = "waybill_core::duration")]
    pub replay_lease: Duration,
    /// Per-tenant quotas (`[ingest.quotas]`).
    pub quotas: crate::quotas::QuotaConfig,
    /// Where users open the portal, as the platform exposes it (e.g.
    /// `https://webhooks.example.com/portal`); session URLs start with it.
    /// Default: this service's `/portal` at the host the session was asked
    /// from.
    pub portal_url: Option<String>,
    /// Origins allowed to frame the portal (its `Content-Security-Policy`
    /// `frame-ancestors`), e.g. `["https://app.example.com"]`. Default:
    /// none but its own origin.
    pub portal_frame_ancestors: Vec<String>,
    /// The seed platforms' webhook APIs also served, on the same
    /// subscriptions (`route_planner`, `logistics_2023_07`, `spotgo`,
    /// `spotnana`; see docs/dialects.md).
    pub dialects: Vec<String>,
}

/// One API key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Key id, shown in `created_by`/`updated_by` (never the key itself).
    pub id: String,
    /// The secret key clients send.
    pub key: waybill_core::redacted::Redacted,
    /// The tenant the key acts for.
    pub tenant_id: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            write_timeout: Duration::from_secs(5),
            max_event_bytes: 256 * 1024,
            api_keys: Vec::new(),
            operator_token: None,
            secret_overlap: Duration::from_secs(24 * 3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            idempotency_capacity: 100_000,
            event_dedup_window: Duration::from_secs(24 * 3600),
            event_dedup_capacity: 1_000_000,
            max_batch_events: 1000,
            max_batch_bytes: 16 * 1024 * 1024,
            history_per_subscription: 1000,
            history_retention: Duration::from_secs(7 * 24 * 3600),
            replay_lease: Duration::from_secs(15),
            quotas: crate::quotas::QuotaConfig::default(),
            portal_url: None,
            portal_frame_ancestors: Vec::new(),
            dialects: Vec::new(),
        }
    }
}

impl IngestConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.api_keys.is_empty() && self.operator_token.is_none() {
            out.push(
                "ingest: set `operator_token` (to manage tenants through /v1/tenants) or at least one of `api_keys`"
                    .into(),
            );
        }
        if let Some(token) = &self.operator_token
            && token.expose().len() < 24
        {
            out.push("ingest.operator_token: must be at least 24 characters".into());
        }
        if let Some(url) = &self.portal_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            out.push("ingest.portal_url: must be an http(s) URL, e.g. https://webhooks.example.com/portal".into());
        }
        for origin in &self.portal_frame_ancestors {
            let ok = origin == "'self'"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.contains([' ', ';', ',', '\'', '"']));
            if !ok {
                out.push(format!(
                    "ingest.portal_frame_ancestors: `{origin}` must be an origin such as https://app.example.com (or 'self')"
                ));
            }
        }
        for dialect in &self.dialects {
            if !crate::dialects::KNOWN.contains(&dialect.as_str()) {
                out.push(format!(
                    "ingest.dialects: `{dialect}` is not a dialect; known: {}",
                    crate::dialects::KNOWN.join(", ")
                ));
            }
        }
        if self.idempotency_capacity == 0 {
            out.push("ingest.idempotency_capacity: must be at least 1".into());
        }
        if self.event_dedup_capacity == 0 {
            out.push("ingest.event_dedup_capacity: must be at least 1".into());
        }
        if self.max_batch_events == 0 || self.max_batch_events > 10_000 {
            out.push("ingest.max_batch_events: must be 1 to 10000".into());
        }
        if self.max_batch_bytes < self.max_event_bytes {
            out.push("ingest.max_batch_bytes: must be at least max_event_bytes".into());
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.key.expose().len() < MIN_IMPORTED_KEY_LEN {
                out.push(format!(
                    "ingest.api_keys[{i}].key: must be at least {MIN_IMPORTED_KEY_LEN} characters (e.g. `openssl rand -hex 24`)"
                ));
            }
            if key.id.is_empty() || key.tenant_id.is_empty() {
                out.push(format!(
                    "ingest.api_keys[{i}]: `id` and `tenant_id` are required"
                ));
            }
        }
        if self.history_per_subscription == 0 {
            out.push("ingest.history_per_subscription: must be at least 1".into());
        }
        if self.max_event_bytes < 1024 {
            out.push("ingest.max_event_bytes: must be at least 1024".into());
        }
        if self.replay_lease < Duration::from_secs(2) {
            out.push("ingest.replay_lease: must be at least 2s".into());
        }
        out.extend(self.quotas.problems());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_operator_token_and_keys() {
        let c = IngestConfig {
            operator_token: Some("wbop_operator-token-secret-value".into()),
            api_keys: vec![ApiKeyConfig {
                id: "k1".into(),
                key: "wb_imported-key-secret-value-0123456".into(),
                tenant_id: "t".into(),
            }],
            ..IngestConfig::default()
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("operator-token-secret"), "{printed}");
        assert!(!printed.contains("imported-key-secret"), "{printed}");
        assert!(printed.contains("k1"));
    }
}
