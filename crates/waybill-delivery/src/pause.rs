//! Paused subscriptions: still matched, nothing sent, nothing dropped.
//!
//! `pause` (the ingest service) writes an empty record to the
//! subscription's partition of `deliveries.parked` and stores where the
//! next one goes as the subscription's `kept_from`. A delivery of a paused
//! subscription is appended there (with a `queued` attempt record, so the
//! history shows it pending) by whichever process reads it, on any
//! partition; the partition moves on, so a pause of days holds nothing of
//! the other subscriptions. Parkers never write the subscription's hold.
//!
//! `resume` writes a marker to the subscription's partition of
//! `deliveries`: its owner is the one releaser, and the hold on
//! `delivery_lanes` is its alone: it sends what was kept, in order (so per
//! entity in order), the hold moving on after each, then marks the hold
//! `released` with where it stopped, and looks once more for deliveries
//! parked while it did so. Until then deliveries are still parked, behind
//! the kept ones; one parked after the releaser's last look is sent by its
//! parker ([`waybill_core::hold::parked_late`]). Duplicates are possible at
//! that edge, losses are not. One kept longer than
//! `delivery.pause_retention` is dead. The decisions are
//! [`waybill_core::hold::pause_gate`] and its neighbours.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rdkafka::Message as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use waybill_core::hold::{Hold, PAUSED, Parked, PauseGate, parked_late, release_start};
use waybill_core::outcome::{ErrorClass, Ready};
use waybill_core::trace::TraceParent;
use waybill_proto::convert::from_timestamp;
use waybill_proto::v1;

use crate::strict::LaneCtx;
use crate::worker::{Finished, Job, Worker};

/// How a release pass over the kept deliveries ended.
enum Pass {
    /// Nothing more was found from where the hold is.
    Empty,
    /// Some were sent; look again.
    More,
    /// Paused again: the rest stays kept.
    Paused,
    /// The partition was taken away or the service stops.
    Interrupted,
}

impl Worker {
    /// Before sending `job`: parks it while its subscription is paused or
    /// its kept deliveries are not all released (`Some`); `None` to go on
    /// (never paused, released, or parked too late for the releaser: sent
    /// now by this parker).
    pub(crate) async fn pause_gate(
        &self,
        job: &Job,
        ready: &Ready,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Option<Finished> {
        let sub = &ready.subscription;
        if job.kept || (!sub.paused && sub.kept_from.is_none()) {
            return None;
        }
        let key = waybill_core::hold::paused_key(&sub.id);
        let gate = |holds: &crate::strict::Holds| {
            waybill_core::hold::pause_gate(sub.paused, sub.kept_from, holds.get(&key))
        };
        if gate(&self.holds.read()) == PauseGate::Send {
            return None;
        }
        if !sub.paused {
            // The release may have finished since the table was read.
            self.holds_fresh(job.written).await;
            if gate(&self.holds.read()) == PauseGate::Send {
                return None;
            }
        }
        let Some(acked) = self.park_record(job, "paused", trace, stop).await else {
            return Some(Finished::Interrupted);
        };
        tracing::debug!(delivery_id = %job.task.delivery_id, offset = acked.offset, "kept: its subscription is paused or its kept deliveries are not all out");
        if sub.paused {
            return Some(Finished::Done);
        }
        // Resumed: the releaser may have looked for the last time before
        // this one landed.
        self.holds_fresh(SystemTime::now()).await;
        let late = parked_late(sub.kept_from, self.holds.read().get(&key), acked.offset);
        if late {
            tracing::debug!(delivery_id = %job.task.delivery_id, "parked after its subscription's release finished; sent by its parker");
            return None;
        }
        Some(Finished::Done)
    }

    async fn holds_fresh(&self, as_of: SystemTime) {
        if let Err(e) = self
            .holds
            .wait_fresh(as_of, self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, "lane holds lagging");
        }
    }

    /// After `resume` (its marker): sends what the subscription kept, in
    /// order, then marks its hold released. Stops early (done) if it is
    /// paused again, deleted or disabled meanwhile: the kept deliveries
    /// stay for the next resume (a disabled or deleted subscription's are
    /// recorded as not sent when released).
    pub(crate) async fn release_kept(
        &self,
        subscription_id: &str,
        stop: &CancellationToken,
    ) -> Finished {
        self.holds_fresh(SystemTime::now()).await;
        let Some(sub) = self.subscription(subscription_id, SystemTime::now()).await else {
            return Finished::Done;
        };
        let key = waybill_core::hold::paused_key(subscription_id);
        let current = self.holds.read().get(&key).cloned();
        // A pause from before `kept_from` existed: its parkers wrote where
        // it started into the hold.
        let legacy = current
            .as_ref()
            .filter(|h| h.generation == 0 && !h.released)
            .and_then(|h| h.parked);
        let Some(kept_from) = sub.kept_from.or(legacy) else {
            return Finished::Done;
        };
        if current
            .as_ref()
            .is_some_and(|h| h.released && h.generation == kept_from.from)
        {
            // A marker read again (a crash after the release): done.
            return Finished::Done;
        }
        let start = release_start(kept_from, current.as_ref());
        let mut lane = LaneCtx::paused(subscription_id, current);
        let mut hold = Hold {
            blocked_by: Some(PAUSED.to_owned()),
            parked: Some(start),
            generation: kept_from.from,
            released: false,
        };
        let mut seen = HashSet::new();
        let mut released = 0u64;
        let mut finishing = false;
        loop {
            match self
                .release_pass(&mut lane, &mut hold, &mut seen, &mut released, stop)
                .await
            {
                Pass::Interrupted => return Finished::Interrupted,
                Pass::Paused => {
                    tracing::info!(
                        subscription_id,
                        released,
                        "paused again; the rest stays kept"
                    );
                    return Finished::Done;
                }
                Pass::More => {}
                Pass::Empty if finishing => break,
                Pass::Empty => {
                    // Released: from now on parkers see it, and send what
                    // they park after `hold.parked` themselves; one more
                    // look finds what was parked before they could.
                    hold.released = true;
                    let written = self.write_hold(&mut lane, Some(hold.clone()), stop).await;
                    if let Finished::Interrupted = written {
                        return Finished::Interrupted;
                    }
                    finishing = true;
                }
            }
        }
        tracing::info!(
            subscription_id,
            released,
            "resumed: every kept delivery went out"
        );
        Finished::Done
    }

    /// One pass over the kept deliveries from where `hold` is: sends them
    /// in order, moving the hold on after each (once released, the hold
    /// moves on only if one was found).
    async fn release_pass(
        &self,
        lane: &mut LaneCtx,
        hold: &mut Hold,
        seen: &mut HashSet<String>,
        released: &mut u64,
        stop: &CancellationToken,
    ) -> Pass {
        // Paused again (a new pause has a new `kept_from`): stop.
        let sub = self
            .subscription(&lane.subscription_id, SystemTime::now())
            .await;
        if sub.is_some_and(|s| s.paused || s.kept_from.is_some_and(|k| k.from != hold.generation)) {
            return Pass::Paused;
        }
        let Some(parked) = hold.parked else {
            return Pass::Empty;
        };
        let records = loop {
            match self.read_parked(&lane.subscription_id, None, parked).await {
                Ok(records) => break records,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read kept deliveries; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return Pass::Interrupted,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        if records.is_empty() {
            return Pass::Empty;
        }
        for message in records {
            if stop.is_cancelled() {
                return Pass::Interrupted;
            }
            hold.parked = Some(Parked {
                partition: parked.partition,
                from: message.offset() + 1,
            });
            match self.decode(&message).await {
                Ok(mut job) if seen.insert(job.task.delivery_id.clone()) => {
                    job.kept = true;
                    let finished = if self.kept_too_long(&job) {
                        self.expire_kept(&job, stop).await
                    } else {
                        self.process(&job, None, stop, None).await
                    };
                    if let Finished::Interrupted = finished {
                        return Pass::Interrupted;
                    }
                    *released += 1;
                }
                Ok(_) => {}
                Err(reason) => {
                    tracing::error!(
                        offset = message.offset(),
                        reason,
                        "kept record unreadable; skipped"
                    );
                }
            }
            if let Finished::Interrupted = self.write_hold(lane, Some(hold.clone()), stop).await {
                return Pass::Interrupted;
            }
        }
        Pass::More
    }

    fn kept_too_long(&self, job: &Job) -> bool {
        let created = from_timestamp(job.task.created_at.as_ref(), "created_at")
            .map_or(job.written, SystemTime::from);
        SystemTime::now()
            .duration_since(created)
            .is_ok_and(|age| age > self.config.pause_retention)
    }

    /// A delivery kept past `delivery.pause_retention`: dead, visible, and
    /// retried by hand if still wanted.
    async fn expire_kept(&self, job: &Job, stop: &CancellationToken) -> Finished {
        let reason =
            "kept while the subscription was paused for longer than delivery.pause_retention";
        let topic = self.topics.deliveries_dlq();
        let trace = TraceParent::new_root();
        let Some(acked) = self
            .write(&topic, &job.task, &trace, Some(reason), stop)
            .await
        else {
            return Finished::Interrupted;
        };
        let record = v1::DeliveryAttempt {
            outcome: v1::AttemptOutcome::Failed as i32,
            error_class: ErrorClass::PauseRetention.as_str().to_owned(),
            error: reason.to_owned(),
            dead: true,
            task: Some(v1::TaskRef {
                topic,
                partition: acked.partition,
                offset: acked.offset,
            }),
            ..crate::worker::job_record(job, job.task.attempt.max(1), OffsetDateTime::now_utc())
        };
        self.publish_attempt(&record).await;
        tracing::warn!(delivery_id = %job.task.delivery_id, "kept too long while paused; dead");
        Finished::Done
    }
}
