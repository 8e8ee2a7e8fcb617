//! Which deliveries of a partition may run now.
//!
//! Records of one partition belong to many subscriptions. Each (subscription,
//! entity) pair is a lane: its deliveries run one at a time, in offset order,
//! so one entity's events reach a subscriber in the order they happened (a
//! subscription with `ordering: none` gives each delivery a lane of its
//! own). Lanes of one subscription run side by side up to its cap (its
//! `max_in_flight`), and lanes of different subscriptions never wait for
//! each other, so a slow endpoint holds only its own lanes.

use std::collections::{HashMap, HashSet, VecDeque};

/// A lane: subscription id and entity key.
pub type LaneKey = (String, String);

/// Deliveries waiting in lanes, and the running ones.
#[derive(Debug)]
pub struct Lanes<J> {
    /// The cap of a subscription whose push gave none.
    per_subscription: usize,
    /// Each busy or waiting subscription's cap, as its latest push gave it.
    caps: HashMap<String, usize>,
    queued: HashMap<LaneKey, VecDeque<J>>,
    busy: HashSet<LaneKey>,
    running: HashMap<String, usize>,
    /// Lanes with work, not running, held back by their subscription's cap.
    waiting: HashMap<String, VecDeque<LaneKey>>,
}

impl<J> Lanes<J> {
    /// Lanes letting at most `per_subscription` deliveries of one
    /// subscription run at once (at least one), unless a push says
    /// otherwise.
    pub fn new(per_subscription: usize) -> Self {
        Self {
            per_subscription: per_subscription.max(1),
            caps: HashMap::new(),
            queued: HashMap::new(),
            busy: HashSet::new(),
            running: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Queues `job` on `lane`; returns it back if it may start now.
    pub fn push(&mut self, lane: LaneKey, job: J) -> Option<(LaneKey, J)> {
        let cap = self.per_subscription;
        self.push_capped(lane, job, cap)
    }

    /// Queues `job` on `lane`, its subscription running at most `cap`
    /// deliveries at once (at least one; the latest push's cap holds);
    /// returns it back if it may start now.
    pub fn push_capped(&mut self, lane: LaneKey, job: J, cap: usize) -> Option<(LaneKey, J)> {
        self.caps.insert(lane.0.clone(), cap.max(1));
        let queue = self.queued.entry(lane.clone()).or_default();
        let had_work = !queue.is_empty();
        queue.push_back(job);
        // A lane that is not running but already had work is waiting for
        // its subscription's cap already (`finish` starts waiting lanes
        // while the subscription is under its cap).
        if had_work || self.busy.contains(&lane) {
            return None;
        }
        if self.running.get(&lane.0).copied().unwrap_or(0) < self.cap(&lane.0) {
            return self.start(lane);
        }
        self.waiting
            .entry(lane.0.clone())
            .or_default()
            .push_back(lane);
        None
    }

    /// The running job of `lane` finished; returns the jobs that may start
    /// now (the lane's next, or another lane of the same subscription).
    pub fn finish(&mut self, lane: &LaneKey) -> Vec<(LaneKey, J)> {
        self.busy.remove(lane);
        let subscription = lane.0.clone();
        if let Some(n) = self.running.get_mut(&subscription) {
            *n = n.saturating_sub(1);
        }
        if self.queued.get(lane).is_some_and(|q| !q.is_empty()) {
            // Behind the subscription's other waiting lanes: fairness.
            self.waiting
                .entry(subscription.clone())
                .or_default()
                .push_back(lane.clone());
        } else {
            self.queued.remove(lane);
        }
        let mut started = Vec::new();
        let cap = self.cap(&subscription);
        while self.running.get(&subscription).copied().unwrap_or(0) < cap {
            let Some(next) = self
                .waiting
                .get_mut(&subscription)
                .and_then(VecDeque::pop_front)
            else {
                break;
            };
            started.extend(self.start(next));
        }
        if self
            .waiting
            .get(&subscription)
            .is_some_and(VecDeque::is_empty)
        {
            self.waiting.remove(&subscription);
        }
        if self.running.get(&subscription) == Some(&0) {
            self.running.remove(&subscription);
        }
        if !self.running.contains_key(&subscription) && !self.waiting.contains_key(&subscription) {
            self.caps.remove(&subscription);
        }
        started
    }

    fn cap(&self, subscription: &str) -> usize {
        self.caps
            .get(subscription)
            .copied()
            .unwrap_or(self.per_subscription)
    }

    fn start(&mut self, lane: LaneKey) -> Option<(LaneKey, J)> {
        let job = self.queued.get_mut(&lane)?.pop_front()?;
        self.busy.insert(lane.clone());
        *self.running.entry(lane.0.clone()).or_default() += 1;
        Some((lane, job))
    }

    /// Whether nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.busy.is_empty() && self.queued.values().all(VecDeque::is_empty)
    }

    /// Subscriptions with work queued or running (each holds a cap).
    pub fn subscriptions(&self) -> usize {
        self.caps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(sub: &str, entity: &str) -> LaneKey {
        (sub.to_owned(), entity.to_owned())
    }

    #[test]
    fn one_entity_runs_in_order_one_at_a_time() {
        let mut l = Lanes::new(4);
        assert_eq!(l.push(lane("s", "e"), 1), Some((lane("s", "e"), 1)));
        assert_eq!(l.push(lane("s", "e"), 2), None);
        assert_eq!(l.push(lane("s", "e"), 3), None);
        assert_eq!(l.finish(&lane("s", "e")), vec![(lane("s", "e"), 2)]);
        assert_eq!(l.finish(&lane("s", "e")), vec![(lane("s", "e"), 3)]);
        assert!(l.finish(&lane("s", "e")).is_empty());
        assert!(l.is_idle());
    }

    #[test]
    fn a_slow_subscription_holds_only_its_own_lanes() {
        let mut l = Lanes::new(2);
        assert!(l.push(lane("slow", "a"), 1).is_some());
        assert!(l.push(lane("slow", "b"), 2).is_some());
        // The cap of `slow` is reached: its third entity waits...
        assert_eq!(l.push(lane("slow", "c"), 3), None);
        // ...while another subscription starts at once.
        assert_eq!(l.push(lane("fast", "a"), 4), Some((lane("fast", "a"), 4)));
        assert!(l.finish(&lane("fast", "a")).is_empty());
        // When one of `slow` finishes, its waiting lane starts.
        assert_eq!(l.finish(&lane("slow", "a")), vec![(lane("slow", "c"), 3)]);
        assert!(l.finish(&lane("slow", "b")).is_empty());
        assert!(l.finish(&lane("slow", "c")).is_empty());
        assert!(l.is_idle());
    }

    #[test]
    fn lanes_of_a_capped_subscription_take_turns() {
        let mut l = Lanes::new(1);
        assert!(l.push(lane("s", "a"), 1).is_some());
        assert_eq!(l.push(lane("s", "a"), 2), None);
        assert_eq!(l.push(lane("s", "b"), 3), None);
        // `a` finished one; `b` was waiting longer and goes first.
        assert_eq!(l.finish(&lane("s", "a")), vec![(lane("s", "b"), 3)]);
        assert_eq!(l.finish(&lane("s", "b")), vec![(lane("s", "a"), 2)]);
        assert!(l.finish(&lane("s", "a")).is_empty());
        assert!(l.is_idle());
    }

    #[test]
    fn each_subscription_has_its_own_cap() {
        let mut l = Lanes::new(8);
        // `one` runs a delivery at a time, whatever the entity.
        assert!(l.push_capped(lane("one", "a"), 1, 1).is_some());
        assert_eq!(l.push_capped(lane("one", "b"), 2, 1), None);
        // `three` runs three entities at once.
        for (n, e) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(l.push_capped(lane("three", e), 10 + n, 3).is_some(), "{e}");
        }
        assert_eq!(l.push_capped(lane("three", "d"), 13, 3), None);
        assert_eq!(l.finish(&lane("one", "a")), vec![(lane("one", "b"), 2)]);
        assert_eq!(
            l.finish(&lane("three", "b")),
            vec![(lane("three", "d"), 13)]
        );
        assert!(l.finish(&lane("one", "b")).is_empty());
        for e in ["a", "c", "d"] {
            assert!(l.finish(&lane("three", e)).is_empty());
        }
        assert!(l.is_idle());
        assert_eq!(l.subscriptions(), 0, "caps are forgotten when idle");
    }
}
