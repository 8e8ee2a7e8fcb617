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
    /// A paused subscription's hold: the pause it releases (the `from` of
    /// the subscription's `kept_from`); 0 on a lane.
    pub generation: i64,
    /// A paused subscription's hold: every delivery kept before
    /// `parked.from` went out (see [`pause_gate`]).
    pub released: bool,
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

/// What to do with a delivery of a subscription that is or was paused.
///
/// `pause` writes an empty record to the subscription's partition of
/// `deliveries.parked` and keeps where the next one goes as the
/// subscription's `kept_from`: every delivery parked since is after it.
/// Parkers (any delivery process, on any partition) only append there;
/// they never write the hold. The one releaser (the owner of the
/// partition where `resume` wrote its marker) is the only writer of the
/// subscription's hold: its progress, then `released` with where it
/// stopped. A delivery is parked while the subscription is paused, and
/// after `resume` until its generation is released; one parked after the
/// releaser looked for the last time (`parked.from`) is sent by its
/// parker ([`parked_late`]).
pub fn pause_gate(paused: bool, kept_from: Option<Parked>, hold: Option<&Hold>) -> PauseGate {
    match kept_from {
        _ if paused => PauseGate::Park,
        None => PauseGate::Send,
        Some(kept) if hold.is_some_and(|h| h.released && h.generation == kept.from) => {
            PauseGate::Send
        }
        Some(_) => PauseGate::Park,
    }
}

/// [`pause_gate`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseGate {
    /// Send it (never paused, or everything kept went out).
    Send,
    /// Park it behind the kept ones.
    Park,
}

/// Whether a delivery of a resumed subscription, parked at `offset`, was
/// parked after its releaser had finished (so its parker sends it).
pub fn parked_late(kept_from: Option<Parked>, hold: Option<&Hold>, offset: i64) -> bool {
    match (kept_from, hold) {
        (Some(kept), Some(h)) if h.released && h.generation == kept.from => {
            h.parked.is_none_or(|upto| offset >= upto.from)
        }
        _ => false,
    }
}

/// Where the release of a resumed subscription starts: where its pause
/// started; where an interrupted release of this pause stopped; or
/// earlier, where an interrupted release of an earlier pause stopped
/// (everything between is the subscription's, kept since).
pub fn release_start(kept_from: Parked, hold: Option<&Hold>) -> Parked {
    let Some((progress, generation)) =
        hold.and_then(|h| h.parked.filter(|_| !h.released).map(|p| (p, h.generation)))
    else {
        return kept_from;
    };
    if progress.partition != kept_from.partition {
        return kept_from;
    }
    let from = if generation == kept_from.from {
        progress.from
    } else {
        progress.from.min(kept_from.from)
    };
    Parked {
        partition: kept_from.partition,
        from,
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
            ..Hold::default()
        }
    }

    fn at(from: i64) -> Parked {
        Parked { partition: 2, from }
    }

    fn progress(generation: i64, from: i64, released: bool) -> Hold {
        Hold {
            blocked_by: Some(PAUSED.into()),
            parked: Some(at(from)),
            generation,
            released,
        }
    }

    #[test]
    fn a_paused_subscription_parks_until_its_generation_is_released() {
        assert_eq!(pause_gate(false, None, None), PauseGate::Send);
        assert_eq!(pause_gate(true, None, None), PauseGate::Park);
        assert_eq!(pause_gate(true, Some(at(10)), None), PauseGate::Park);
        // Resumed, release not started or under way: still parked.
        assert_eq!(pause_gate(false, Some(at(10)), None), PauseGate::Park);
        let releasing = progress(10, 40, false);
        assert_eq!(
            pause_gate(false, Some(at(10)), Some(&releasing)),
            PauseGate::Park
        );
        let done = progress(10, 90, true);
        assert_eq!(
            pause_gate(false, Some(at(10)), Some(&done)),
            PauseGate::Send
        );
        // Paused again: the earlier release does not count.
        assert_eq!(
            pause_gate(false, Some(at(95)), Some(&done)),
            PauseGate::Park
        );
        assert_eq!(pause_gate(true, Some(at(10)), Some(&done)), PauseGate::Park);
    }

    #[test]
    fn a_delivery_parked_after_the_release_finished_is_its_parkers_to_send() {
        let done = progress(10, 90, true);
        assert!(parked_late(Some(at(10)), Some(&done), 90));
        assert!(parked_late(Some(at(10)), Some(&done), 95));
        assert!(
            !parked_late(Some(at(10)), Some(&done), 89),
            "released already"
        );
        assert!(!parked_late(
            Some(at(10)),
            Some(&progress(10, 90, false)),
            95
        ));
        assert!(!parked_late(Some(at(95)), Some(&done), 96), "another pause");
        assert!(!parked_late(None, Some(&done), 95));
        assert!(!parked_late(Some(at(10)), None, 95));
    }

    #[test]
    fn a_release_starts_where_an_interrupted_one_stopped() {
        assert_eq!(release_start(at(50), None), at(50));
        // An earlier pause's release, interrupted.
        assert_eq!(
            release_start(at(50), Some(&progress(10, 30, false))),
            at(30)
        );
        assert_eq!(release_start(at(50), Some(&progress(10, 30, true))), at(50));
        // This pause's release, interrupted (the marker read again).
        assert_eq!(
            release_start(at(50), Some(&progress(50, 70, false))),
            at(70)
        );
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
            ..Hold::default()
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
