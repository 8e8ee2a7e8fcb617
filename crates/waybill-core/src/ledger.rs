//! Which records of the `subscriptions` topic count: the revision check
//! every projection of the topic applies, so that all of them fold the same
//! state whatever the number of writers.
//!
//! # Why a revision check in the fold (and a repair), not a single writer
//!
//! Several ingest replicas write a subscription's state, and the delivery
//! service writes its health. A single writer per key would need a
//! consumer group of writers, requests forwarded to the owner and answers
//! sent back, and fencing of an owner that lost its partition but still
//! writes (Kafka transactions, which this project does not rely on). A
//! check in the fold needs none of this and fences a stale writer by
//! construction:
//!
//! - A state record carries its `revision`. It counts only if it is the
//!   next revision of the state folded so far (`revision = current + 1`), or
//!   the same write again (a *restatement*, same revision and write id).
//!   Two writers that read revision 4 both write revision 5; the first one
//!   on the log wins, the second is *stale* and changes nothing. A writer
//!   waits until its projection applied its own record and asks whether its
//!   write id won ([`Verdict`]); if not, it applies its change again on the
//!   new state, or answers `409`.
//! - A tombstone, or a delete marker that won, is final: nothing after it
//!   brings the subscription back.
//! - Health is a record of its own, under its own key, written only by the
//!   delivery service: it never rewrites what the user set, and a user's
//!   edit never rewrites it. A reset (a user's change) makes older health
//!   stop counting, by revision, not by clock.
//!
//! Compaction keeps only the last record of a key. If that last record is a
//! stale one, compaction would drop the winner before it and a fresh
//! projection would fold the loser. So a stale record at the tail of a key
//! is *repaired*: the ingest service writes the winning state again (a
//! restatement, or a tombstone for a deleted subscription). The losing
//! writer does it at once; every ingest replica does it for any stale tail
//! it folds and that nobody repaired within seconds. The topic's
//! `min.compaction.lag.ms` (see `waybill-kafka`'s topic settings) keeps
//! every record uncompacted, and uncounted as superseding older ones, for
//! far longer than that, so the winner is still on the log when the repair
//! lands.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::subscription::{Health, Subscription};

/// What one state record means for the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next revision: applied.
    Applied,
    /// The current revision written again: nothing changes.
    Restated,
    /// Written against an older revision: ignored (and to be repaired if it
    /// stays the key's last record).
    Stale {
        /// The revision the fold holds.
        current: u64,
    },
    /// The subscription was deleted: ignored (and to be repaired).
    Deleted,
}

impl Verdict {
    /// Whether the record is part of the state (applied or restated).
    pub fn counts(self) -> bool {
        matches!(self, Verdict::Applied | Verdict::Restated)
    }
}

/// What one health record means for the fold.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthVerdict {
    /// The subscription's health is now this.
    Applied,
    /// Its subscription was deleted: ignored (and its key to be cleared).
    Deleted,
}

/// The verdicts on the latest writes, by write id, for the writers that
/// ask whether their own write counted (bounded: the oldest are forgotten).
#[derive(Debug)]
pub struct RecentVerdicts<V> {
    capacity: usize,
    verdicts: HashMap<String, V>,
    order: std::collections::VecDeque<String>,
}

impl<V: Copy> Default for RecentVerdicts<V> {
    /// Remembers 4,096 verdicts.
    fn default() -> Self {
        Self::new(4096)
    }
}

impl<V: Copy> RecentVerdicts<V> {
    /// Remembers at most `capacity` verdicts.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            verdicts: HashMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    /// Remembers the verdict on `write_id` (the first one, if it is folded
    /// twice).
    pub fn remember(&mut self, write_id: &str, verdict: V) {
        if self.verdicts.contains_key(write_id) {
            return;
        }
        self.verdicts.insert(write_id.to_owned(), verdict);
        self.order.push_back(write_id.to_owned());
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.verdicts.remove(&old);
        }
    }

    /// The verdict on `write_id`, if remembered.
    pub fn get(&self, write_id: &str) -> Option<V> {
        self.verdicts.get(write_id).copied()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    revision: u64,
    write: u64,
    /// The revision of the last reset: older health does not count.
    reset: u64,
}

/// Per subscription id: the revision folded, whether it was deleted, and
/// its last health record.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids shared (`Arc`) with the projection that keeps the states
    /// ([`Ledger::shared_id`]): one copy of each id per service.
    live: HashMap<std::sync::Arc<str>, Entry>,
    deleted: HashSet<Box<str>>,
    health: HashMap<Box<str>, Health>,
}

fn write_hash(write_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    write_id.hash(&mut h);
    h.finish()
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges a state record and, when it counts, records its revision.
    pub fn judge(&mut self, s: &Subscription) -> Verdict {
        self.judge_write(&s.id, s.revision, &s.write_id, s.health_reset_revision)
    }

    /// Judges a write of `revision` by `write_id` (a state record, or a
    /// delete marker), whose last reset was at revision `reset`.
    pub fn judge_write(&mut self, id: &str, revision: u64, write_id: &str, reset: u64) -> Verdict {
        if self.deleted.contains(id) {
            return Verdict::Deleted;
        }
        let write = write_hash(write_id);
        let entry = Entry {
            revision,
            write,
            reset,
        };
        match self.live.get_mut(id) {
            // The first record of a key: the create, or after compaction
            // the last state written.
            None => {
                self.live.insert(id.into(), entry);
                Verdict::Applied
            }
            Some(e) if revision == e.revision + 1 => {
                *e = entry;
                Verdict::Applied
            }
            Some(e) if revision == e.revision && write == e.write => Verdict::Restated,
            Some(e) => Verdict::Stale {
                current: e.revision,
            },
        }
    }

    /// The ledger's own copy of a live subscription's id, for a projection
    /// to key its state with (the same allocation).
    pub fn shared_id(&self, id: &str) -> Option<std::sync::Arc<str>> {
        self.live.get_key_value(id).map(|(id, _)| id.clone())
    }

    /// Records a deletion (a tombstone, or a delete marker that counted):
    /// final.
    pub fn delete(&mut self, id: &str) {
        self.live.remove(id);
        self.health.remove(id);
        self.deleted.insert(id.into());
    }

    /// Forgets `id` without marking it deleted: its next record counts
    /// whatever its revision (a key released for reuse).
    pub fn forget(&mut self, id: &str) {
        self.live.remove(id);
    }

    /// Whether `id` was deleted.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.deleted.contains(id)
    }

    /// The revision folded for `id`, if it exists.
    pub fn revision(&self, id: &str) -> Option<u64> {
        self.live.get(id).map(|e| e.revision)
    }

    /// Records a health record (kept even before its subscription's state
    /// is folded: the two keys live in different partitions).
    pub fn record_health(&mut self, id: &str, health: Health) -> HealthVerdict {
        if self.deleted.contains(id) {
            return HealthVerdict::Deleted;
        }
        self.health.insert(id.into(), health);
        HealthVerdict::Applied
    }

    /// Forgets a health record (its key's tombstone).
    pub fn clear_health(&mut self, id: &str) {
        self.health.remove(id);
    }

    /// The last health record of `id`.
    pub fn health(&self, id: &str) -> Option<&Health> {
        self.health.get(id)
    }

    /// The health of `id` that counts: its last health record, unless it
    /// was recorded before the last reset (`None`: healthy).
    pub fn effective_health(&self, id: &str) -> Option<&Health> {
        let reset = self.live.get(id).map_or(0, |e| e.reset);
        self.health.get(id).filter(|h| h.revision >= reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{Spec, Status};
    use time::OffsetDateTime;

    fn sub() -> Subscription {
        Subscription::new(
            "sub_1".into(),
            "t".into(),
            Spec::new("https://x/", Vec::new()),
            "key",
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    fn next(s: &Subscription) -> Subscription {
        let mut n = s.clone();
        n.touch("key", OffsetDateTime::UNIX_EPOCH);
        n
    }

    #[test]
    fn the_next_revision_counts_and_a_second_write_of_it_is_stale() {
        let mut l = Ledger::new();
        let s1 = sub();
        assert_eq!(l.judge(&s1), Verdict::Applied);
        let a = next(&s1);
        let b = next(&s1);
        assert_eq!(l.judge(&a), Verdict::Applied);
        assert_eq!(l.judge(&b), Verdict::Stale { current: 2 });
        assert_eq!(l.judge(&a), Verdict::Restated);
        assert_eq!(l.judge(&s1), Verdict::Stale { current: 2 });
        assert_eq!(l.revision("sub_1"), Some(2));
        // A write that skips a revision is stale too.
        assert_eq!(l.judge(&next(&next(&a))), Verdict::Stale { current: 2 });
    }

    #[test]
    fn the_first_record_of_a_compacted_key_counts_whatever_its_revision() {
        let mut l = Ledger::new();
        let mut s = sub();
        s.revision = 7;
        assert_eq!(l.judge(&s), Verdict::Applied);
        assert_eq!(l.judge(&next(&s)), Verdict::Applied);
    }

    #[test]
    fn a_deletion_is_final() {
        let mut l = Ledger::new();
        let s = sub();
        l.judge(&s);
        l.delete("sub_1");
        assert_eq!(l.judge(&next(&s)), Verdict::Deleted);
        assert_eq!(l.judge(&s), Verdict::Deleted);
        let health = Health {
            status: Status::Failing,
            failing_since: None,
            disabled_reason: None,
            revision: 1,
            recorded_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(l.record_health("sub_1", health), HealthVerdict::Deleted);
        assert!(l.health("sub_1").is_none());
        assert!(l.is_deleted("sub_1"));
        assert_eq!(l.revision("sub_1"), None);
    }

    #[test]
    fn health_before_a_reset_stops_counting() {
        let mut s = sub();
        let failing = s.health_record(
            &crate::subscription::HealthChange::Failing {
                since: OffsetDateTime::UNIX_EPOCH,
            },
            OffsetDateTime::UNIX_EPOCH,
        );
        s.set_health(Some(&failing));
        assert_eq!(s.status, Status::Failing);
        // A user's edit keeps the health.
        s.touch("key", OffsetDateTime::UNIX_EPOCH);
        s.set_health(Some(&failing));
        assert_eq!(s.status, Status::Failing);
        // A reset clears it, and the same record no longer counts.
        s.touch("key", OffsetDateTime::UNIX_EPOCH);
        s.reset();
        s.set_health(Some(&failing));
        assert_eq!(s.status, Status::Active);
        assert_eq!(s.failing_since, None);
    }
}
