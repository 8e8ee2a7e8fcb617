//! Per-subscription rate limits (`rate_limit_per_second`), shared by every
//! partition task of the process.
//!
//! Requests are spaced evenly (one every `1.02 s / rate`, no burst: the 2 %
//! margin absorbs network jitter), so an endpoint limited to N per second
//! never sees more than N requests in any one-second window. Waiting for a permit happens in the delivery's own
//! task: other subscriptions never wait for it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Limiters by subscription id, rebuilt when the rate changes.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    /// Waits until subscription `id`, limited to `per_second`, may send.
    /// `None` = unlimited (and forgets a former limiter).
    /// Returns how long it waited (`None`: no wait).
    pub async fn acquire(&self, id: &str, per_second: Option<u32>) -> Option<Duration> {
        let limiter = self.limiter(id, per_second)?;
        if limiter.check().is_ok() {
            return None;
        }
        let started = std::time::Instant::now();
        limiter.until_ready().await;
        Some(started.elapsed())
    }

    fn limiter(&self, id: &str, per_second: Option<u32>) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rate) = per_second.and_then(NonZeroU32::new) else {
            limiters.remove(id);
            return None;
        };
        if let Some((r, limiter)) = limiters.get(id)
            && *r == rate.get()
        {
            return Some(limiter.clone());
        }
        let period = Duration::from_millis(1020) / rate.get();
        let quota = Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(quota));
        limiters.insert(id.to_owned(), (rate.get(), limiter.clone()));
        Some(limiter)
    }

    /// Forgets the limiter of a deleted subscription.
    pub fn forget(&self, id: &str) {
        self.limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaced_evenly_without_burst() {
        let limits = RateLimits::default();
        let start = std::time::Instant::now();
        for _ in 0..5 {
            limits.acquire("s", Some(50)).await;
        }
        // 5 permits at 20 ms spacing: the first at once, the fifth ≥ 80 ms later.
        assert!(
            start.elapsed() >= Duration::from_millis(79),
            "{:?}",
            start.elapsed()
        );
        // Unlimited never waits.
        limits.acquire("u", None).await;
    }
}
