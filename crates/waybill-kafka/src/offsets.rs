//! Which offset of a partition may be stored when its records finish out of
//! order.
//!
//! A partition task works on several records at once; Kafka stores one
//! position per partition. Only the contiguous prefix of finished records
//! may be stored, so that a crash re-delivers every unfinished record
//! (at-least-once) and never skips one.

use std::collections::BTreeSet;

/// Offsets read but not finished, and how far the finished prefix reaches.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    pending: BTreeSet<i64>,
    first_read: Option<i64>,
    highest_read: Option<i64>,
    stored: Option<i64>,
}

impl OffsetTracker {
    /// A record at `offset` was read (offsets are read in increasing order).
    pub fn read(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.first_read.get_or_insert(offset);
        self.highest_read = Some(self.highest_read.map_or(offset, |h| h.max(offset)));
    }

    /// The record at `offset` finished. Returns the offset to store when the
    /// finished prefix grew: every record read up to it is finished.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        let prefix_end = match self.pending.first() {
            Some(first) => first - 1,
            None => self.highest_read?,
        };
        // Records before the first one read are not this task's to store.
        if prefix_end < self.first_read? || self.stored.is_some_and(|s| s >= prefix_end) {
            return None;
        }
        self.stored = Some(prefix_end);
        Some(prefix_end)
    }

    /// Records read and not finished.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_finished_prefix_is_stored() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.read(o);
        }
        assert_eq!(t.in_flight(), 5);
        assert_eq!(t.finish(12), None, "10 and 11 still pending");
        assert_eq!(t.finish(11), None);
        assert_eq!(t.finish(10), Some(12), "10..=12 done");
        assert_eq!(t.finish(14), None, "13 pending");
        assert_eq!(t.finish(13), Some(14));
        assert_eq!(t.in_flight(), 0);
        t.read(15);
        assert_eq!(t.finish(15), Some(15));
    }

    #[test]
    fn the_first_record_read_bounds_what_is_stored() {
        let mut t = OffsetTracker::default();
        t.read(100);
        t.read(101);
        // Finishing 101 first must not store 99 (not ours) or 101.
        assert_eq!(t.finish(101), None);
        assert_eq!(t.finish(100), Some(101));
    }
}
