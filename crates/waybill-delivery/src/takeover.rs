//! What a `deliveries` partition's new owner learns from the log before it
//! handles its first record.
//!
//! The group hands the new owner an offset: the last one committed. A crash
//! leaves records past it that the previous owner delivered before its next
//! commit; sending those again would only duplicate them, so their success
//! on `delivery_attempts` is looked up and they are skipped.
//!
//! The handed offset could also be too high: a commit that went wrong, a
//! broker serving another group's offset (tansu 0.6.0 was seen doing so), an
//! operator resetting offsets by hand. Then the records between the last
//! settled one and the handed offset would never be read: lost without a
//! trace. So the new owner also reads the records just below the handed
//! offset ([`BAND`] of them, written within the lookback) and checks that
//! each has a recorded outcome on `delivery_attempts` (an attempt of any
//! outcome at that place, an attempt of the same delivery and attempt
//! number, or, for a first attempt, a success of the delivery). If one has
//! none, the partition goes back to the first such record: what was settled
//! after it is skipped by the same lookup, so nothing is lost and nothing is
//! sent twice.
//!
//! Bounds: records written before the lookback, or more than [`BAND`]
//! records below the handed offset, are not checked; retry tier partitions
//! are not checked (their records are few and the scan would cost more than
//! it saves); an undecodable record never causes a rewind (its outcome is a
//! `dead_letters` record, not an attempt).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rdkafka::Message as _;
use waybill_kafka::KafkaConfig;
use waybill_kafka::log::{Window, scan, scan_range};
use waybill_proto::Message as _;
use waybill_proto::v1;

/// Records below the handed offset whose outcome is checked.
pub const BAND: i64 = 10_000;
/// How far back the new owner looks (records written, attempts recorded).
pub const LOOKBACK: Duration = Duration::from_secs(300);
/// Allowance for clocks of different hosts stamping records.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One record of the partition below the handed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Below {
    /// Its offset.
    pub offset: i64,
    /// Its delivery id and attempt number; `None` if it does not decode.
    pub task: Option<(String, u32)>,
}

/// What `delivery_attempts` holds for the partition (and its deliveries)
/// within the lookback.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Offsets of this partition with an attempt record of any outcome.
    pub places: HashSet<i64>,
    /// Offsets of this partition with a successful attempt.
    pub succeeded_places: HashSet<i64>,
    /// (delivery id, attempt number) pairs with an attempt record.
    pub attempts: HashSet<(String, u32)>,
    /// Delivery ids with a successful attempt.
    pub succeeded: HashSet<String>,
}

/// The new owner's plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// Go back to this offset before handling anything: the records from it
    /// up to the handed offset include some with no recorded outcome.
    pub rewind_to: Option<i64>,
    /// Offsets (from where the owner starts) delivered with success by a
    /// previous owner: not sent again.
    pub delivered: HashSet<i64>,
}

impl Settled {
    /// Whether a record below the handed offset has a recorded outcome.
    fn has_outcome(&self, below: &Below) -> bool {
        let Some((delivery, attempt)) = &below.task else {
            return true;
        };
        self.places.contains(&below.offset)
            || self.attempts.contains(&(delivery.clone(), *attempt))
            || (*attempt <= 1 && self.succeeded.contains(delivery))
    }
}

/// Decides the takeover (pure): `first` is the handed offset, `below` the
/// records read just below it, `settled` what the attempt log says.
pub fn plan(first: i64, below: &[Below], settled: &Settled) -> Takeover {
    let rewind_to = below
        .iter()
        .filter(|b| b.offset < first && !settled.has_outcome(b))
        .map(|b| b.offset)
        .min();
    let start = rewind_to.unwrap_or(first);
    Takeover {
        rewind_to,
        delivered: settled
            .succeeded_places
            .iter()
            .copied()
            .filter(|o| *o >= start)
            .collect(),
    }
}

/// Where the checks start in time: the older of the first handed record's
/// time and the oldest record of the band, less [`CLOCK_SKEW`], but never
/// before `now` − [`LOOKBACK`].
pub fn since(
    now: SystemTime,
    first_written: SystemTime,
    oldest_below: Option<SystemTime>,
) -> SystemTime {
    let oldest = oldest_below.map_or(first_written, |b| b.min(first_written));
    (oldest - CLOCK_SKEW).max(now - LOOKBACK)
}

/// Milliseconds since the Unix epoch.
fn millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads what [`plan`] decides on (blocking): the records of `topic`/
/// `partition` just below `first` (at most [`BAND`], written within the
/// lookback), and what `attempts` (the `delivery_attempts` topic) holds for
/// them since [`since`].
pub fn read_log(
    kafka: &KafkaConfig,
    attempts: &str,
    topic: &str,
    partition: i32,
    first: i64,
    written: SystemTime,
) -> waybill_kafka::Result<(Vec<Below>, Settled)> {
    let now = SystemTime::now();
    let mut below = Vec::new();
    let mut oldest: Option<i64> = None;
    scan_range(
        kafka,
        topic,
        partition,
        first - BAND,
        first,
        millis(now - LOOKBACK),
        |m| {
            let at = m.timestamp().to_millis().unwrap_or(0);
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
            below.push(Below {
                offset: m.offset(),
                task: m
                    .payload()
                    .and_then(|p| v1::DeliveryTask::decode(p).ok())
                    .map(|t| (t.delivery_id, t.attempt.max(1))),
            });
        },
    )?;
    let oldest = oldest.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64));
    let window = Window {
        since_ms: millis(since(now, written, oldest)),
        until_ms: None,
    };
    let mut settled = Settled::default();
    scan(kafka, attempts, window, |m| {
        let Some(record) = m
            .payload()
            .and_then(|p| v1::DeliveryAttempt::decode(p).ok())
        else {
            return true;
        };
        let succeeded = record.outcome == v1::AttemptOutcome::Succeeded as i32;
        if let Some(place) = &record.task
            && place.topic == topic
            && place.partition == partition
        {
            settled.places.insert(place.offset);
            if succeeded {
                settled.succeeded_places.insert(place.offset);
            }
        }
        if succeeded {
            settled.succeeded.insert(record.delivery_id.clone());
        }
        settled
            .attempts
            .insert((record.delivery_id, record.attempt.max(1)));
        true
    })?;
    Ok((below, settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn below(offset: i64, delivery: &str, attempt: u32) -> Below {
        Below {
            offset,
            task: Some((delivery.to_owned(), attempt)),
        }
    }

    fn settled_at(places: &[i64]) -> Settled {
        Settled {
            places: places.iter().copied().collect(),
            ..Settled::default()
        }
    }

    #[test]
    fn an_honest_offset_needs_no_rewind() {
        let records: Vec<Below> = (0..10).map(|o| below(o, &format!("d{o}"), 1)).collect();
        let plan = plan(10, &records, &settled_at(&(0..10).collect::<Vec<_>>()));
        assert_eq!(plan, Takeover::default());
    }

    #[test]
    fn a_handed_offset_past_unsettled_records_rewinds_to_the_first() {
        let records: Vec<Below> = (0..10).map(|o| below(o, &format!("d{o}"), 1)).collect();
        // 0..=3 settled; 4 and 6 not; 5, 7, 8, 9 delivered (out of order).
        let mut settled = settled_at(&[0, 1, 2, 3, 5, 7, 8, 9]);
        settled.succeeded_places = [2, 3, 5, 7, 8, 9, 12].into();
        let plan = plan(10, &records, &settled);
        assert_eq!(plan.rewind_to, Some(4));
        let mut delivered: Vec<i64> = plan.delivered.into_iter().collect();
        delivered.sort();
        assert_eq!(delivered, [5, 7, 8, 9, 12], "skipped after the rewind");
    }

    #[test]
    fn outcomes_count_by_place_by_attempt_and_by_first_success() {
        let records = [
            below(0, "a", 1),
            below(1, "b", 2),
            below(2, "c", 1),
            below(3, "d", 3),
            Below {
                offset: 4,
                task: None,
            },
        ];
        let settled = Settled {
            places: [0].into(),
            attempts: [("b".to_owned(), 2)].into(),
            succeeded: ["c".to_owned(), "d".to_owned()].into(),
            ..Settled::default()
        };
        // 0 by place, 1 by its attempt, 2 (a duplicate first attempt) by
        // the delivery's success, 4 is undecodable; 3 is a third attempt
        // whose delivery succeeded before: it has no outcome of its own.
        assert_eq!(plan(5, &records, &settled).rewind_to, Some(3));
    }

    #[test]
    fn records_at_or_past_the_handed_offset_are_not_checked() {
        let records = [below(7, "x", 1), below(8, "y", 1)];
        assert_eq!(plan(7, &records, &Settled::default()).rewind_to, None);
        assert_eq!(plan(8, &records, &Settled::default()).rewind_to, Some(7));
    }

    #[test]
    fn the_window_is_bounded_by_the_lookback() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let recent = now - Duration::from_secs(10);
        assert_eq!(since(now, recent, None), recent - CLOCK_SKEW);
        assert_eq!(
            since(now, recent, Some(now - Duration::from_secs(100))),
            now - Duration::from_secs(160)
        );
        assert_eq!(
            since(now, recent, Some(now - Duration::from_secs(3600))),
            now - LOOKBACK
        );
    }
}
