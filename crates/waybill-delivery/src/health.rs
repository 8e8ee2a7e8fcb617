//! One health judgement at a time per subscription.
//!
//! Attempts of one subscription's different entities settle side by side;
//! its health follows the attempt that started last ([`LatestAttempts`]),
//! and a judgement that writes a change holds its subscription until the
//! projection shows what it wrote, so the next one is judged on it. Other
//! subscriptions' judgements never wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use waybill_core::health::LatestAttempts;

/// The judgement locks of a process's subscriptions.
pub struct HealthLocks {
    latest: Mutex<LatestAttempts>,
    /// Held locks only: an entry goes when its last holder or waiter does.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to judge one subscription's health.
pub struct Judging<'a> {
    locks: &'a HealthLocks,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl HealthLocks {
    /// Remembers the latest attempt of at most `capacity` subscriptions.
    pub fn new(capacity: usize) -> Self {
        Self {
            latest: Mutex::new(LatestAttempts::new(capacity)),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for the subscription's judgement lock.
    pub async fn lock(&self, id: &str) -> Judging<'_> {
        let lock = self
            .locks
            .lock()
            .expect("health locks")
            .entry(id.to_owned())
            .or_default()
            .clone();
        Judging {
            locks: self,
            id: id.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many subscriptions are being judged or waited for.
    pub fn held(&self) -> usize {
        self.locks.lock().expect("health locks").len()
    }
}

impl Judging<'_> {
    /// Whether an attempt that started at `at` is news: no attempt of the
    /// subscription that started later was judged.
    pub fn admit(&self, at: OffsetDateTime) -> bool {
        self.locks
            .latest
            .lock()
            .expect("latest attempts")
            .admit(&self.id, at)
    }
}

impl Drop for Judging<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().expect("health locks");
        // Waiters hold a clone (taken under this map's lock): the entry
        // stays while anyone does.
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn subscriptions_are_judged_apart_and_forgotten_when_done() {
        let locks = Arc::new(HealthLocks::new(10));
        let a = locks.lock("a").await;
        // Another subscription does not wait for `a`.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock("b"))
            .await
            .expect("b is not held by a");
        drop(b);
        // `a` again waits until the first judgement is over.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _a = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        assert_eq!(locks.held(), 1);
        drop(a);
        waiter.await.unwrap();
        assert_eq!(locks.held(), 0);
    }

    #[tokio::test]
    async fn an_attempt_older_than_one_judged_is_not_news() {
        let locks = HealthLocks::new(10);
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let judging = locks.lock("s").await;
        assert!(judging.admit(t0 + Duration::from_secs(2)));
        assert!(!judging.admit(t0 + Duration::from_secs(1)));
        assert!(judging.admit(t0 + Duration::from_secs(3)));
    }
}
