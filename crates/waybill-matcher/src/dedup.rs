//! Client event ids seen on one domain-topic partition: the same event
//! posted twice (through two ingest replicas, or retried by a client that
//! missed the answer) is matched once.
//!
//! One event's records share its entity, hence its key and its partition,
//! and a partition has one matcher: the check holds whatever the number of
//! ingest replicas, with no shared store. A record handled again after a
//! rewind or a restart has the offset it had the first time, so it is not a
//! duplicate; another record with the same tenant and event id within the
//! window is. A new owner of the partition first learns the ids of the
//! records just below its first one (at most [`BAND`], written within the
//! window), so a rebalance does not open a gap.

use std::collections::{HashMap, VecDeque};

/// Records below a new owner's first one whose ids it learns.
pub const BAND: i64 = 50_000;

type Key = (Box<str>, Box<str>);

/// The ids of one partition's recent records.
#[derive(Debug)]
pub struct Seen {
    window_ms: i64,
    capacity: usize,
    first: HashMap<Key, i64>,
    order: VecDeque<(i64, Key)>,
}

impl Seen {
    /// Remembers ids for `window_ms` (by record timestamp), at most
    /// `capacity` of them (the oldest are forgotten first).
    pub fn new(window_ms: i64, capacity: usize) -> Self {
        Self {
            window_ms,
            capacity: capacity.max(1),
            first: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether the record at `offset` (written at `at_ms`) repeats an
    /// event of `tenant` with id `id` seen at another offset; remembers it
    /// if it is the first.
    pub fn is_duplicate(&mut self, tenant: &str, id: &str, offset: i64, at_ms: i64) -> bool {
        while let Some((t, _)) = self.order.front() {
            if *t >= at_ms - self.window_ms && self.order.len() < self.capacity {
                break;
            }
            let (_, key) = self.order.pop_front().expect("front exists");
            self.first.remove(&key);
        }
        let key: Key = (tenant.into(), id.into());
        match self.first.get(&key) {
            Some(first) => *first != offset,
            None => {
                self.first.insert(key.clone(), offset);
                self.order.push_back((at_ms, key));
                false
            }
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_a_duplicate_the_same_record_again_is_not() {
        let mut seen = Seen::new(10_000, 100);
        assert!(!seen.is_duplicate("t", "e1", 5, 1_000));
        assert!(
            !seen.is_duplicate("t", "e1", 5, 1_000),
            "handled again after a rewind"
        );
        assert!(seen.is_duplicate("t", "e1", 9, 2_000), "posted twice");
        assert!(
            !seen.is_duplicate("t2", "e1", 10, 2_000),
            "another tenant's id"
        );
        assert!(!seen.is_duplicate("t", "e2", 11, 2_000));
        // Past the window it is new again.
        assert!(!seen.is_duplicate("t", "e1", 12, 12_500));
        assert_eq!(seen.len(), 1, "the old ids are forgotten");
        let mut small = Seen::new(10_000, 2);
        for (n, id) in ["a", "b", "c"].iter().enumerate() {
            small.is_duplicate("t", id, n as i64, 0);
        }
        assert_eq!(small.len(), 2, "bounded");
        assert!(
            !small.is_duplicate("t", "a", 7, 0),
            "the oldest was forgotten"
        );
    }
}
