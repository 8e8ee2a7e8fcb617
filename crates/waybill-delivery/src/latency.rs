//! The end-to-end latency of a delivery: from its event's record on the
//! domain topic to the receiver's successful answer.

use std::time::{Duration, SystemTime};

use waybill_proto::v1;

/// How long after its event was written to Kafka `task` was delivered at
/// `now`; `None` for what a user asked for again (retry, replay, test:
/// their events are as old as the user chose) or a task without the time.
pub fn end_to_end(task: &v1::DeliveryTask, now: SystemTime) -> Option<Duration> {
    if task.redeliver || !task.replay_id.is_empty() {
        return None;
    }
    let produced = task.produced_at.as_ref()?;
    let produced = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(produced.seconds).ok()?,
            u32::try_from(produced.nanos).ok()?,
        );
    // A producer's clock ahead of ours counts as no time at all.
    Some(now.duration_since(produced).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(produced_at: Option<(i64, i32)>) -> v1::DeliveryTask {
        v1::DeliveryTask {
            produced_at: produced_at
                .map(|(seconds, nanos)| waybill_proto::prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        }
    }

    #[test]
    fn from_the_record_to_the_answer() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(10_250);
        assert_eq!(
            end_to_end(&task(Some((10, 0))), now),
            Some(Duration::from_millis(250))
        );
        // A clock ahead of ours: zero, not a panic or a huge value.
        assert_eq!(end_to_end(&task(Some((11, 0))), now), Some(Duration::ZERO));
    }

    #[test]
    fn not_for_what_a_user_asked_again_or_without_a_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(end_to_end(&task(None), now), None);
        let mut retry = task(Some((1, 0)));
        retry.redeliver = true;
        assert_eq!(end_to_end(&retry, now), None);
        let mut replay = task(Some((1, 0)));
        replay.replay_id = "rpl_1".into();
        assert_eq!(end_to_end(&replay, now), None);
    }
}
