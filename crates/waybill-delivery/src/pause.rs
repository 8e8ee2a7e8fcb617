//! Paused subscriptions: still matched, nothing sent, nothing dropped.
//!
//! A delivery of a paused subscription is parked on `deliveries.parked`
//! (with a `queued` attempt record, so the history shows it pending), and
//! the subscription's hold on `delivery_lanes` says where its first parked
//! delivery is; the partition moves on, so a pause of days holds nothing
//! of the other subscriptions. `resume` writes a marker to the
//! subscription's partition of `deliveries`: its owner sends what was kept,
//! in order (so per entity in order), the hold moving on after each, then
//! removes the hold; what arrives meanwhile is parked behind, so it goes
//! after. One kept longer than `delivery.pause_retention` is dead.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rdkafka::Message as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use waybill_core::hold::{Hold, PAUSED, Parked};
use waybill_core::outcome::{ErrorClass, Ready};
use waybill_core::trace::TraceParent;
use waybill_proto::convert::from_timestamp;
use waybill_proto::v1;

use crate::strict::LaneCtx;
use crate::worker::{Finished, Job, Worker};

impl Worker {
    /// Before sending `job`: parks it if its subscription is paused, or
    /// was and has kept deliveries not sent yet (`Some`); `None` to go on.
    pub(crate) async fn pause_gate(
        &self,
        job: &Job,
        ready: &Ready,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Option<Finished> {
        if job.kept {
            return None;
        }
        let id = &job.task.subscription_id;
        let key = waybill_core::hold::paused_key(id);
        let paused = ready.subscription.paused;
        if paused
            && let Err(e) = self
                .holds
                .wait_fresh(job.written, self.config.freshness_timeout)
                .await
        {
            tracing::warn!(error = %e, "lane holds lagging");
        }
        if !paused && self.holds.read().get(&key).is_none() {
            return None;
        }
        // Against a release finding nothing more and removing the hold.
        let _one_at_a_time = self.pause_lock.lock().await;
        let hold = self.holds.read().get(&key).cloned();
        if !paused && hold.is_none() {
            return None;
        }
        let hold = hold.unwrap_or(Hold {
            blocked_by: Some(PAUSED.to_owned()),
            parked: None,
        });
        let mut lane = LaneCtx::paused(id, Some(hold));
        Some(self.park(job, &mut lane, trace, stop).await)
    }

    /// After `resume` (its marker at `offset`): sends what the subscription
    /// kept, in order, then frees it. Stops early (done) if it is paused
    /// again, deleted or disabled meanwhile: the kept deliveries stay for
    /// the next resume (a disabled or deleted subscription's are recorded
    /// as not sent when released).
    pub(crate) async fn release_kept(
        &self,
        subscription_id: &str,
        stop: &CancellationToken,
    ) -> Finished {
        let key = waybill_core::hold::paused_key(subscription_id);
        let mut seen = HashSet::new();
        if let Err(e) = self
            .holds
            .wait_fresh(SystemTime::now(), self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, "lane holds lagging");
        }
        let mut released = 0u64;
        loop {
            let paused = self
                .subscription(subscription_id, SystemTime::now())
                .await
                .is_some_and(|s| s.paused);
            if paused {
                tracing::info!(
                    subscription_id,
                    released,
                    "paused again; the rest stays kept"
                );
                return Finished::Done;
            }
            let Some(hold) = self.holds.read().get(&key).cloned() else {
                return Finished::Done;
            };
            let mut lane = LaneCtx::paused(subscription_id, Some(hold.clone()));
            let Some(parked) = hold.parked else {
                match self.free_kept(&mut lane, stop).await {
                    Some(finished) => return finished,
                    None => continue,
                }
            };
            let records = match self.read_parked(subscription_id, None, parked).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read kept deliveries; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return Finished::Interrupted,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if records.is_empty() {
                match self.free_kept(&mut lane, stop).await {
                    Some(finished) => {
                        tracing::info!(
                            subscription_id,
                            released,
                            "resumed: every kept delivery went out"
                        );
                        return finished;
                    }
                    None => continue,
                }
            }
            for message in records {
                if stop.is_cancelled() {
                    return Finished::Interrupted;
                }
                let next = Hold {
                    blocked_by: Some(PAUSED.to_owned()),
                    parked: Some(Parked {
                        partition: parked.partition,
                        from: message.offset() + 1,
                    }),
                };
                match self.decode(&message).await {
                    Ok(mut job) if seen.insert(job.task.delivery_id.clone()) => {
                        job.kept = true;
                        let finished = if self.kept_too_long(&job) {
                            self.expire_kept(&job, stop).await
                        } else {
                            self.process(&job, None, stop, None).await
                        };
                        if let Finished::Interrupted = finished {
                            return Finished::Interrupted;
                        }
                        released += 1;
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
                if let Finished::Interrupted = self.write_hold(&mut lane, Some(next), stop).await {
                    return Finished::Interrupted;
                }
            }
        }
    }

    /// Removes the subscription's hold (`Some`) unless something was
    /// parked behind it since the last read (`None`: the release goes on).
    async fn free_kept(&self, lane: &mut LaneCtx, stop: &CancellationToken) -> Option<Finished> {
        let _one_at_a_time = self.pause_lock.lock().await;
        let current = self.holds.read().get(&lane.key).cloned();
        if let Some(parked) = current.as_ref().and_then(|h| h.parked) {
            match self.read_parked(&lane.subscription_id, None, parked).await {
                Ok(more) if more.is_empty() => {}
                // More to release, or unknown: the release goes on.
                _ => return None,
            }
        }
        Some(self.write_hold(lane, None, stop).await)
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
