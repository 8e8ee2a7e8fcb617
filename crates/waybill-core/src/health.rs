//! Which attempt outcomes a subscription's health follows.
//!
//! One subscription's entities are delivered at the same time, so their
//! attempts settle in any order: a success that started before the endpoint
//! went down can settle after the failure that followed it. The health
//! follows the attempt that *started* last; an outcome older than one
//! already judged is older news and changes nothing.

use std::collections::HashMap;

use time::OffsetDateTime;

/// The start of the latest attempt judged per subscription, in one
/// delivery process (a subscription's tasks are all on one partition, so
/// one process sees them all).
#[derive(Debug)]
pub struct LatestAttempts {
    started: HashMap<Box<str>, OffsetDateTime>,
    capacity: usize,
}

impl LatestAttempts {
    /// Remembers at most `capacity` subscriptions; when full it forgets them
    /// all (only outcomes then in flight lose their order, as after a
    /// restart).
    pub fn new(capacity: usize) -> Self {
        Self {
            started: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether the outcome of an attempt on `id` that started at `at` may
    /// change the health: no attempt that started later was judged. Records
    /// it as the latest when it may.
    pub fn admit(&mut self, id: &str, at: OffsetDateTime) -> bool {
        if let Some(latest) = self.started.get_mut(id) {
            if at < *latest {
                return false;
            }
            *latest = at;
            return true;
        }
        if self.started.len() >= self.capacity {
            self.started.clear();
        }
        self.started.insert(id.into(), at);
        true
    }

    /// How many subscriptions it remembers.
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn an_outcome_older_than_one_judged_is_not_news() {
        let t0 = datetime!(2026-12-02 10:00 UTC);
        let ms = time::Duration::milliseconds(1);
        let mut latest = LatestAttempts::new(10);
        // A failure that started at t0 + 20 ms settles first ...
        assert!(latest.admit("sub_1", t0 + 20 * ms));
        // ... then the success that started before it: the endpoint was
        // answering then, not now.
        assert!(!latest.admit("sub_1", t0 + 10 * ms));
        // Same start, or later: news.
        assert!(latest.admit("sub_1", t0 + 20 * ms));
        assert!(latest.admit("sub_1", t0 + 30 * ms));
        // Other subscriptions have their own order.
        assert!(latest.admit("sub_2", t0));
    }

    #[test]
    fn bounded() {
        let t0 = datetime!(2026-12-02 10:00 UTC);
        let mut latest = LatestAttempts::new(2);
        assert!(latest.admit("a", t0));
        assert!(latest.admit("b", t0));
        assert_eq!(latest.len(), 2);
        assert!(latest.admit("c", t0));
        assert_eq!(latest.len(), 1, "full: forgets all, then remembers c");
        assert!(latest.admit("a", t0 - time::Duration::SECOND), "forgotten");
    }
}
