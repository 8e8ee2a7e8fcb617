//! Strict order: an entity's later deliveries held behind one being
//! retried.
//!
//! A lane (subscription, entity) of a subscription with `ordering:
//! "strict"` is *held* while one of its deliveries, the blocker, waits in a
//! retry tier. What arrives for a held lane is parked (on Kafka, in order)
//! instead of being sent; once the blocker succeeded or is dead, the parked
//! deliveries go out in order, then the lane is free again. The hold is a
//! record of its own (compacted), so a crash or a rebalance keeps it.
//!
//! These are the pure decisions; the delivery service writes and reads the
//! records.

use crate::outcome::Decision;

/// The hold on one lane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    /// The delivery being retried (`None`: the blocker settled, and the
    /// parked deliveries are being released).
    pub blocked_by: Option<String>,
    /// The first parked delivery not yet released, if any was parked.
    pub parked: Option<Parked>,
}

/// Where a lane's parked deliveries start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    /// The partition of the parking topic.
    pub partition: i32,
    /// The offset to read from.
    pub from: i64,
}

/// What to do with a delivery about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it.
    Send,
    /// Its lane is held by another delivery: park it behind.
    Park,
    /// A retry of a strict lane's blocker that no longer blocks (it
    /// settled already): drop it.
    Stale,
    /// The lane's blocker settled but its parked deliveries were not all
    /// released (the previous owner stopped): release them first, then
    /// ask again.
    Release,
}

/// What a delivery does, given its lane's hold. `strict_retry` marks a
/// retry of a strict lane's blocker; `redeliver` a delivery a user asked
/// for again (a retry through the API, a replay), which never waits for,
/// nor releases, a lane.
pub fn gate(hold: Option<&Hold>, delivery_id: &str, strict_retry: bool, redeliver: bool) -> Gate {
    if redeliver {
        return Gate::Send;
    }
    match hold {
        None if strict_retry => Gate::Stale,
        None => Gate::Send,
        Some(Hold {
            blocked_by: Some(blocker),
            ..
        }) if blocker == delivery_id => Gate::Send,
        Some(Hold {
            blocked_by: Some(_),
            ..
        }) if strict_retry => Gate::Stale,
        Some(Hold {
            blocked_by: Some(_),
            ..
        }) => Gate::Park,
        Some(Hold {
            blocked_by: None, ..
        }) if strict_retry => Gate::Stale,
        Some(Hold {
            blocked_by: None, ..
        }) => Gate::Release,
    }
}

/// What a settled attempt does to its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneEffect {
    /// Nothing.
    Unchanged,
    /// It is retried on a strict lane: the lane is held behind it.
    Block,
    /// It was the lane's blocker and is over (delivered, dead, or its
    /// subscription gone): release what was parked.
    Release,
}

/// The effect on its lane of an attempt decided `decision`: `strict` is the
/// subscription's ordering, `blocker` whether the delivery holds the lane.
pub fn lane_effect(strict: bool, decision: Decision, blocker: bool, redeliver: bool) -> LaneEffect {
    match decision {
        _ if redeliver => LaneEffect::Unchanged,
        Decision::Retry(_) if strict || blocker => {
            // A blocker stays one (a lane changed from strict meanwhile
            // still releases in order).
            if blocker {
                LaneEffect::Unchanged
            } else {
                LaneEffect::Block
            }
        }
        Decision::Retry(_) => LaneEffect::Unchanged,
        Decision::Success | Decision::Dead | Decision::Disable if blocker => LaneEffect::Release,
        Decision::Success | Decision::Dead | Decision::Disable => LaneEffect::Unchanged,
    }
}

/// `blocked_by` of a paused subscription's hold.
pub const PAUSED: &str = "\u{1}paused";

/// The key of a paused subscription's hold (it cannot be a lane's: those
/// have a NUL after the subscription id).
pub fn paused_key(subscription_id: &str) -> String {
    format!("{subscription_id}\u{1}paused")
}

/// The key of a lane's hold record: subscription id, NUL, entity key.
pub fn key(subscription_id: &str, entity: &str) -> String {
    format!("{subscription_id}\0{entity}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn blocked(by: &str) -> Hold {
        Hold {
            blocked_by: Some(by.into()),
            parked: None,
        }
    }

    #[test]
    fn a_held_lane_parks_what_comes_behind_its_blocker() {
        let hold = blocked("d1");
        assert_eq!(gate(None, "d1", false, false), Gate::Send);
        assert_eq!(
            gate(Some(&hold), "d1", true, false),
            Gate::Send,
            "the blocker's retry"
        );
        assert_eq!(
            gate(Some(&hold), "d1", false, false),
            Gate::Send,
            "the blocker's first record read again after a crash"
        );
        assert_eq!(gate(Some(&hold), "d2", false, false), Gate::Park);
    }

    #[test]
    fn a_retry_or_replay_a_user_asked_for_never_waits_nor_releases() {
        let hold = blocked("d1");
        assert_eq!(gate(Some(&hold), "d2", false, true), Gate::Send);
        let retry = Decision::Retry(Duration::from_secs(1));
        for d in [Decision::Success, Decision::Dead, retry] {
            assert_eq!(lane_effect(true, d, true, true), LaneEffect::Unchanged);
            assert_eq!(lane_effect(true, d, false, true), LaneEffect::Unchanged);
        }
    }

    #[test]
    fn a_retry_that_no_longer_blocks_is_stale() {
        assert_eq!(gate(None, "d1", true, false), Gate::Stale);
        assert_eq!(gate(Some(&blocked("d2")), "d1", true, false), Gate::Stale);
        let releasing = Hold {
            blocked_by: None,
            parked: Some(Parked {
                partition: 0,
                from: 7,
            }),
        };
        assert_eq!(gate(Some(&releasing), "d1", true, false), Gate::Stale);
        // A new delivery of a lane left half released releases it first.
        assert_eq!(gate(Some(&releasing), "d3", false, false), Gate::Release);
    }

    #[test]
    fn strict_lanes_block_on_a_retry_and_release_when_the_blocker_is_over() {
        let retry = Decision::Retry(Duration::from_secs(1));
        assert_eq!(lane_effect(true, retry, false, false), LaneEffect::Block);
        assert_eq!(lane_effect(true, retry, true, false), LaneEffect::Unchanged);
        assert_eq!(
            lane_effect(false, retry, false, false),
            LaneEffect::Unchanged
        );
        for over in [Decision::Success, Decision::Dead, Decision::Disable] {
            assert_eq!(lane_effect(true, over, true, false), LaneEffect::Release);
            assert_eq!(lane_effect(false, over, true, false), LaneEffect::Release);
            assert_eq!(lane_effect(true, over, false, false), LaneEffect::Unchanged);
        }
    }
}
