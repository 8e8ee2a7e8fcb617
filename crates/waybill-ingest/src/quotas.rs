//! Per-tenant quotas: one tenant cannot starve the others.
//!
//! Three resources a tenant controls are bounded per tenant, each answered
//! with `429 rate_limited` and a `Retry-After` when used up, and counted in
//! `waybill_quota_refusals_total{quota}`:
//!
//! - **`requests`**: API calls per second (a token bucket of
//!   `requests_per_second` with `request_burst`), per ingest process: with
//!   N replicas behind a load balancer a tenant gets about N times the rate.
//! - **`idempotency_keys`**: `Idempotency-Key`s remembered within the
//!   window, per ingest process ([`crate::idempotency`] asks).
//! - **`replays`**: replay jobs running at once, counted on the shared
//!   `replays` topic (every replica sees the same jobs).
//!
//! The deployment's defaults apply to every tenant; `[ingest.quotas.tenants.<id>]`
//! overrides them for one.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::error::ApiError;

/// The `[ingest.quotas]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// API calls per second a tenant may make to one ingest process
    /// (`0`: no limit).
    pub requests_per_second: u32,
    /// Calls above the rate a tenant may make at once after a quiet spell.
    pub request_burst: u32,
    /// `Idempotency-Key`s one tenant may have remembered within
    /// `ingest.idempotency_window` by one ingest process.
    pub idempotency_keys: usize,
    /// Replays one tenant may have running at once.
    pub concurrent_replays: usize,
    /// Other limits for some tenants, by tenant id.
    pub tenants: BTreeMap<String, TenantQuota>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 1000,
            request_burst: 2000,
            idempotency_keys: 10_000,
            concurrent_replays: 2,
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's own limits; what is left out comes from the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuota {
    /// See [`QuotaConfig::requests_per_second`].
    pub requests_per_second: Option<u32>,
    /// See [`QuotaConfig::request_burst`].
    pub request_burst: Option<u32>,
    /// See [`QuotaConfig::idempotency_keys`].
    pub idempotency_keys: Option<usize>,
    /// See [`QuotaConfig::concurrent_replays`].
    pub concurrent_replays: Option<usize>,
}

/// The limits that apply to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls per second (`None`: unlimited).
    pub requests_per_second: Option<NonZeroU32>,
    /// Burst on top of the rate.
    pub request_burst: NonZeroU32,
    /// `Idempotency-Key`s within the window.
    pub idempotency_keys: usize,
    /// Replays running at once.
    pub concurrent_replays: usize,
}

impl QuotaConfig {
    /// The limits of `tenant`: its overrides over the defaults.
    pub fn limits(&self, tenant: &str) -> Limits {
        let own = self.tenants.get(tenant).cloned().unwrap_or_default();
        let rate = own.requests_per_second.unwrap_or(self.requests_per_second);
        let burst = own.request_burst.unwrap_or(self.request_burst);
        Limits {
            requests_per_second: NonZeroU32::new(rate),
            request_burst: NonZeroU32::new(burst.max(rate)).unwrap_or(NonZeroU32::MIN),
            idempotency_keys: own.idempotency_keys.unwrap_or(self.idempotency_keys),
            concurrent_replays: own.concurrent_replays.unwrap_or(self.concurrent_replays),
        }
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |at: &str, keys: Option<usize>, replays: Option<usize>| {
            if keys == Some(0) {
                out.push(format!("{at}.idempotency_keys: must be at least 1"));
            }
            if replays == Some(0) {
                out.push(format!("{at}.concurrent_replays: must be at least 1"));
            }
        };
        check(
            "ingest.quotas",
            Some(self.idempotency_keys),
            Some(self.concurrent_replays),
        );
        for (id, own) in &self.tenants {
            check(
                &format!("ingest.quotas.tenants.{id}"),
                own.idempotency_keys,
                own.concurrent_replays,
            );
        }
        out
    }
}

/// Which quota refused a request (the `quota` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// API calls per second.
    Requests,
    /// `Idempotency-Key`s within the window.
    IdempotencyKeys,
    /// Replays running at once.
    Replays,
}

impl Kind {
    /// Every kind, for the metric's series.
    pub const ALL: [Kind; 3] = [Kind::Requests, Kind::IdempotencyKeys, Kind::Replays];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::IdempotencyKeys => "idempotency_keys",
            Kind::Replays => "replays",
        }
    }
}

/// Whole seconds a client waits for `wait` to pass (at least 1).
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// How often a tenant's refusals are logged at most (per quota).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The quotas of this process.
pub struct Quotas {
    config: QuotaConfig,
    limiters: RwLock<HashMap<String, (Limits, Arc<DefaultDirectRateLimiter>)>>,
    metrics: waybill_runtime::metrics::Metrics,
    logged: Mutex<HashMap<(String, Kind), Instant>>,
    /// Held while a replay is checked against the quota and recorded, so
    /// two requests of this process cannot both take the last place.
    pub replay_gate: tokio::sync::Mutex<()>,
}

impl Quotas {
    /// Quotas from configuration, counted in `metrics`.
    pub fn new(config: QuotaConfig, metrics: waybill_runtime::metrics::Metrics) -> Self {
        for kind in Kind::ALL {
            let _ = metrics.get().quota_refusals.get_or_create(&labels(kind));
        }
        Self {
            config,
            limiters: RwLock::default(),
            metrics,
            logged: Mutex::default(),
            replay_gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> Limits {
        self.config.limits(tenant)
    }

    /// Takes one API call from `tenant`'s rate, or answers `429` with when
    /// to come back.
    pub fn admit_request(&self, tenant: &str) -> Result<(), ApiError> {
        let limits = self.limits(tenant);
        let Some(rate) = limits.requests_per_second else {
            return Ok(());
        };
        let limiter = self.limiter(tenant, limits);
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(self.refuse(
                    Kind::Requests,
                    tenant,
                    wait,
                    format!(
                        "this tenant's API quota ({rate} calls per second, bursts of {}) is used up; retry after the Retry-After seconds, or send events in batches (POST /v1/events/batch)",
                        limits.request_burst
                    ),
                ))
            }
        }
    }

    fn limiter(&self, tenant: &str, limits: Limits) -> Arc<DefaultDirectRateLimiter> {
        if let Some((seen, limiter)) = self
            .limiters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            && *seen == limits
        {
            return limiter.clone();
        }
        let rate = limits.requests_per_second.unwrap_or(NonZeroU32::MAX);
        let limiter = Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(limits.request_burst),
        ));
        self.limiters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_owned(), (limits, limiter.clone()));
        limiter
    }

    /// Counts and logs a refusal by `kind` and makes its `429`.
    pub fn refuse(
        &self,
        kind: Kind,
        tenant: &str,
        wait: Duration,
        message: impl Into<String>,
    ) -> ApiError {
        self.metrics
            .get()
            .quota_refusals
            .get_or_create(&labels(kind))
            .inc();
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), kind);
        if logged
            .get(&key)
            .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY)
        {
            logged.insert(key, now);
            tracing::warn!(
                tenant_id = %tenant,
                quota = kind.as_str(),
                "tenant quota used up; its requests are refused with 429 (logged at most every 10 s)"
            );
        }
        ApiError::rate_limited(message, retry_after_secs(wait))
    }
}

fn labels(kind: Kind) -> waybill_runtime::metrics::QuotaLabels {
    waybill_runtime::metrics::QuotaLabels {
        quota: kind.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(config: QuotaConfig) -> Quotas {
        Quotas::new(config, waybill_runtime::metrics::Metrics::new())
    }

    #[test]
    fn a_tenant_override_replaces_only_what_it_names() {
        let mut config = QuotaConfig::default();
        config.tenants.insert(
            "big".into(),
            TenantQuota {
                requests_per_second: Some(5000),
                ..TenantQuota::default()
            },
        );
        config.tenants.insert(
            "unlimited".into(),
            TenantQuota {
                requests_per_second: Some(0),
                ..TenantQuota::default()
            },
        );
        let big = config.limits("big");
        assert_eq!(big.requests_per_second, NonZeroU32::new(5000));
        // The burst is never below the rate.
        assert_eq!(big.request_burst.get(), 5000);
        assert_eq!(big.concurrent_replays, 2);
        assert_eq!(config.limits("unlimited").requests_per_second, None);
        assert_eq!(config.limits("other"), QuotaConfig::default().limits("x"));
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_the_others_are_not() {
        let q = quotas(QuotaConfig {
            requests_per_second: 1,
            request_burst: 3,
            ..QuotaConfig::default()
        });
        for _ in 0..3 {
            q.admit_request("noisy").expect("within the burst");
        }
        let refused = q.admit_request("noisy").expect_err("over the burst");
        assert_eq!(refused.status().as_u16(), 429);
        assert_eq!(refused.code().as_str(), "rate_limited");
        assert_eq!(refused.retry_after(), Some(1));
        assert!(
            refused.message().contains("1 calls per second"),
            "{}",
            refused.message()
        );
        q.admit_request("quiet")
            .expect("another tenant has its own bucket");
        let text = q.metrics.render();
        assert!(
            text.contains(r#"waybill_quota_refusals_total{quota="requests"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"waybill_quota_refusals_total{quota="replays"} 0"#));
    }

    #[test]
    fn zero_means_no_rate_limit() {
        let q = quotas(QuotaConfig {
            requests_per_second: 0,
            request_burst: 0,
            ..QuotaConfig::default()
        });
        for _ in 0..10_000 {
            q.admit_request("t").expect("unlimited");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3600)), 3600);
    }

    #[test]
    fn zero_keys_or_replays_are_refused_in_configuration() {
        let mut config = QuotaConfig {
            concurrent_replays: 0,
            ..QuotaConfig::default()
        };
        config.tenants.insert(
            "t".into(),
            TenantQuota {
                idempotency_keys: Some(0),
                ..TenantQuota::default()
            },
        );
        assert_eq!(
            config.problems(),
            [
                "ingest.quotas.concurrent_replays: must be at least 1",
                "ingest.quotas.tenants.t.idempotency_keys: must be at least 1",
            ]
        );
    }
}
