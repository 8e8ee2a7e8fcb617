//! Strict lanes: an entity's later deliveries wait behind one being
//! retried, durably (see [`waybill_core::hold`]).
//!
//! A strict lane's failed delivery (the blocker) writes the lane's hold to
//! `delivery_lanes`, then goes to its retry tier marked `strict_retry`;
//! what arrives for the lane meanwhile is parked on `deliveries.parked`
//! (the partition's offset moves on: nothing is held in memory, a crash
//! loses nothing). When due, the blocker's retry goes back to `deliveries`,
//! to the lane's own partition, and is attempted there: once it succeeded
//! or is dead, the parked deliveries are sent in order from where the hold
//! says, the hold moving on after each, then the hold is removed. All of a
//! lane's steps run in its lane task on its partition, one at a time.

use std::collections::{HashMap, HashSet};

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use waybill_core::hold::{Gate, Hold, LaneEffect, Parked, gate};
use waybill_core::subscription::Ordering;
use waybill_core::trace::TraceParent;
use waybill_kafka::headers;
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::v1;

use crate::worker::{Finished, Job, Worker};

/// Parked records read per scan of the parking topic.
const RELEASE_BATCH: usize = 500;

/// Every held lane, folded from `delivery_lanes`.
#[derive(Debug, Default)]
pub struct Holds {
    by_lane: HashMap<String, Hold>,
}

impl Holds {
    /// The hold of the lane keyed `key`, if it is held.
    pub fn get(&self, key: &str) -> Option<&Hold> {
        self.by_lane.get(key)
    }

    /// Every hold, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Hold)> {
        self.by_lane.iter().map(|(k, h)| (k.as_str(), h))
    }

    /// How many lanes are held.
    pub fn len(&self) -> usize {
        self.by_lane.len()
    }

    /// Whether no lane is held.
    pub fn is_empty(&self) -> bool {
        self.by_lane.is_empty()
    }
}

impl Fold for Holds {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let key = std::str::from_utf8(key).map_err(|_| "lane key is not UTF-8".to_owned())?;
        match value {
            None => {
                self.by_lane.remove(key);
            }
            Some(bytes) => {
                let record = v1::LaneHold::decode(bytes).map_err(|e| e.to_string())?;
                self.by_lane.insert(key.to_owned(), from_record(&record));
            }
        }
        Ok(())
    }
}

fn from_record(r: &v1::LaneHold) -> Hold {
    Hold {
        blocked_by: (!r.blocked_by.is_empty()).then(|| r.blocked_by.clone()),
        parked: r.parked.then_some(Parked {
            partition: r.parked_partition,
            from: r.parked_from,
        }),
        generation: r.generation,
        released: r.released,
    }
}

/// The record of `hold` (the inverse of [`from_record`]).
pub(crate) fn to_record(h: &Hold, subscription_id: &str, entity: &str) -> v1::LaneHold {
    let parked = h.parked.unwrap_or(Parked {
        partition: 0,
        from: 0,
    });
    v1::LaneHold {
        subscription_id: subscription_id.to_owned(),
        entity: entity.to_owned(),
        blocked_by: h.blocked_by.clone().unwrap_or_default(),
        parked: h.parked.is_some(),
        parked_partition: parked.partition,
        parked_from: parked.from,
        generation: h.generation,
        released: h.released,
    }
}

/// A delivery's lane, as its settlement needs it (or a paused
/// subscription's hold).
pub(crate) struct LaneCtx {
    /// The hold record's key.
    pub key: String,
    pub subscription_id: String,
    entity: String,
    /// Its subscription's ordering is strict.
    pub strict: bool,
    /// The lane's hold, as last read or written here.
    pub hold: Option<Hold>,
}

impl LaneCtx {
    /// The hold of a paused subscription, keyed `key`.
    pub fn paused(subscription_id: &str, hold: Option<Hold>) -> Self {
        Self {
            key: waybill_core::hold::paused_key(subscription_id),
            subscription_id: subscription_id.to_owned(),
            entity: String::new(),
            strict: false,
            hold,
        }
    }

    /// Whether `job` holds the lane.
    pub fn is_blocker(&self, job: &Job) -> bool {
        self.hold
            .as_ref()
            .and_then(|h| h.blocked_by.as_deref())
            .is_some_and(|b| b == job.task.delivery_id)
    }

    /// Whether the lane may be given to its next delivery as soon as this
    /// one's request is over (before its outcome is durable): not when the
    /// outcome may hold the lane.
    pub fn frees_early(&self) -> bool {
        !self.strict && self.hold.is_none()
    }

    /// The hold after `job`, retried, blocks the lane (what was parked
    /// stays parked).
    fn blocked_by(&self, job: &Job) -> Hold {
        Hold {
            blocked_by: Some(job.task.delivery_id.clone()),
            parked: self.hold.as_ref().and_then(|h| h.parked),
            ..Hold::default()
        }
    }
}

/// How a release ended.
pub(crate) enum Released {
    /// Everything parked went out: the lane is free.
    Free,
    /// A released delivery is being retried: the lane is held by it.
    Blocked,
    /// The partition was taken away.
    Interrupted,
}

impl Worker {
    /// The lane of `job`, its subscription's ordering and its hold (fresh
    /// as of the job when it may matter).
    pub(crate) async fn lane_of(&self, job: &Job, ordering: Ordering) -> LaneCtx {
        let strict = ordering == Ordering::Strict;
        let entity = job.event.partition_key().to_owned();
        let key = waybill_core::hold::key(&job.task.subscription_id, &entity);
        if (strict || job.task.strict_retry)
            && let Err(e) = self
                .holds
                .wait_fresh(job.written, self.config.freshness_timeout)
                .await
        {
            tracing::warn!(error = %e, "lane holds lagging");
        }
        let hold = self.holds.read().get(&key).cloned();
        LaneCtx {
            key,
            subscription_id: job.task.subscription_id.clone(),
            entity,
            strict,
            hold,
        }
    }

    /// Before sending `job`: `None` to send it now, else how it ended
    /// (parked behind its lane's blocker, or dropped as a stale retry).
    pub(crate) async fn hold_gate(
        &self,
        job: &Job,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Option<Finished> {
        loop {
            let task = &job.task;
            match gate(
                lane.hold.as_ref(),
                &task.delivery_id,
                task.strict_retry,
                task.redeliver,
            ) {
                Gate::Send => return None,
                Gate::Stale => {
                    tracing::debug!(delivery_id = %task.delivery_id, "retry of a lane's former blocker; it settled already");
                    tracing::Span::current().record("waybill.outcome", "stale");
                    return Some(Finished::Done);
                }
                Gate::Park => return Some(self.park(job, lane, trace, stop).await),
                Gate::Release => match self.release(lane, trace, stop).await {
                    Released::Interrupted => return Some(Finished::Interrupted),
                    Released::Free | Released::Blocked => {}
                },
            }
        }
    }

    /// Parks `job` behind its lane's blocker.
    pub(crate) async fn park(
        &self,
        job: &Job,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Finished {
        let Some(acked) = self.park_record(job, "strict", trace, stop).await else {
            return Finished::Interrupted;
        };
        tracing::debug!(delivery_id = %job.task.delivery_id, partition = acked.partition, offset = acked.offset, "parked behind its lane's blocker");
        let Some(hold) = lane.hold.as_mut() else {
            return Finished::Done;
        };
        if hold.parked.is_none() {
            hold.parked = Some(Parked {
                partition: acked.partition,
                from: acked.offset,
            });
            let hold = hold.clone();
            return self.write_hold(lane, Some(hold), stop).await;
        }
        Finished::Done
    }

    /// Appends `job` to `deliveries.parked` (its subscription's partition)
    /// and records it as queued there, so the history shows it pending;
    /// `reason` labels the metric. `None`: interrupted.
    pub(crate) async fn park_record(
        &self,
        job: &Job,
        reason: &'static str,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Option<waybill_kafka::producer::Acked> {
        let topic = self.topics.deliveries_parked();
        let value = job.task.encode_to_vec();
        let acked = self
            .until_acked(stop, "parked delivery", || {
                self.producer.send(
                    &topic,
                    job.task.subscription_id.as_bytes(),
                    Some(&value),
                    headers::standard(waybill_proto::SCHEMA_VERSION, Some(trace)),
                )
            })
            .await?;
        self.metrics
            .get()
            .deliveries_parked
            .get_or_create(&waybill_runtime::metrics::ReasonLabels { reason })
            .inc();
        // The history shows it pending, and where it waits.
        let queued = v1::DeliveryAttempt {
            outcome: v1::AttemptOutcome::Queued as i32,
            task: Some(v1::TaskRef {
                topic: topic.clone(),
                partition: acked.partition,
                offset: acked.offset,
            }),
            ..crate::worker::job_record(job, 0, time::OffsetDateTime::now_utc())
        };
        self.publish_attempt(&queued).await;
        tracing::Span::current().record("waybill.outcome", "parked");
        Some(acked)
    }

    /// Holds `lane` behind `job`, which is retried: written before its
    /// retry is, so that its next attempt finds the lane held by it.
    pub(crate) async fn block(
        &self,
        job: &Job,
        lane: &mut LaneCtx,
        stop: &CancellationToken,
    ) -> Finished {
        let hold = lane.blocked_by(job);
        tracing::info!(delivery_id = %job.task.delivery_id, subscription_id = %job.task.subscription_id, "strict lane held until this delivery succeeds or is dead");
        self.write_hold(lane, Some(hold), stop).await
    }

    /// Writes the lane's hold (`None`: the lane is free) and waits until
    /// this process's table shows it.
    pub(crate) async fn write_hold(
        &self,
        lane: &mut LaneCtx,
        hold: Option<Hold>,
        stop: &CancellationToken,
    ) -> Finished {
        let topic = self.topics.delivery_lanes();
        let value = hold
            .as_ref()
            .map(|h| to_record(h, &lane.subscription_id, &lane.entity).encode_to_vec());
        let Some(acked) = self
            .until_acked(stop, "lane hold", || {
                self.producer.send(
                    &topic,
                    lane.key.as_bytes(),
                    value.as_deref(),
                    headers::standard(waybill_proto::SCHEMA_VERSION, None),
                )
            })
            .await
        else {
            return Finished::Interrupted;
        };
        if let Err(e) = self
            .holds
            .wait_applied(acked.partition, acked.offset, self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, "lane hold written but not seen yet");
        }
        lane.hold = hold;
        Finished::Done
    }

    /// Sends what was parked behind the lane, in order, from where its hold
    /// says; the hold moves on after each. Ends when nothing is left (the
    /// hold is removed) or a released delivery is retried (it holds the
    /// lane now).
    pub(crate) async fn release(
        &self,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Released {
        let mut seen = HashSet::new();
        loop {
            let Some(parked) = lane.hold.as_ref().and_then(|h| h.parked) else {
                return match self.write_hold(lane, None, stop).await {
                    Finished::Done => Released::Free,
                    Finished::Interrupted => Released::Interrupted,
                };
            };
            let records = match self
                .read_parked(&lane.subscription_id, Some(&lane.entity), parked)
                .await
            {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read parked deliveries; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return Released::Interrupted,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            if records.is_empty() {
                tracing::info!(subscription_id = %lane.subscription_id, "strict lane free again");
                return match self.write_hold(lane, None, stop).await {
                    Finished::Done => Released::Free,
                    Finished::Interrupted => Released::Interrupted,
                };
            }
            for message in records {
                if stop.is_cancelled() {
                    return Released::Interrupted;
                }
                let next = Hold {
                    blocked_by: None,
                    parked: Some(Parked {
                        partition: parked.partition,
                        from: message.offset() + 1,
                    }),
                    ..Hold::default()
                };
                lane.hold = Some(next.clone());
                let job = match self.decode(&message).await {
                    Ok(job) if seen.insert(job.task.delivery_id.clone()) => Some(job),
                    Ok(_) => None,
                    Err(reason) => {
                        tracing::error!(
                            offset = message.offset(),
                            reason,
                            "parked record unreadable; skipped"
                        );
                        None
                    }
                };
                if let Some(job) = job {
                    match self.send_released(&job, lane, trace, stop).await {
                        (Finished::Interrupted, _) => return Released::Interrupted,
                        (Finished::Done, LaneEffect::Block) => return Released::Blocked,
                        (Finished::Done, _) => {}
                    }
                }
                if let Finished::Interrupted = self.write_hold(lane, Some(next), stop).await {
                    return Released::Interrupted;
                }
            }
        }
    }

    /// Attempts a released delivery (its lane is already its own).
    async fn send_released(
        &self,
        job: &Job,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> (Finished, LaneEffect) {
        let attempt_no = job.task.attempt.max(1);
        let Some(ready) = self.prepare(job, attempt_no).await else {
            return (Finished::Done, LaneEffect::Unchanged);
        };
        self.attempt(job, attempt_no, &ready, lane, trace, stop, None)
            .await
    }

    /// The next parked records of a subscription (of one entity, if
    /// given) from `parked` (at most [`RELEASE_BATCH`]), in order.
    pub(crate) async fn read_parked(
        &self,
        subscription: &str,
        entity: Option<&str>,
        parked: Parked,
    ) -> waybill_kafka::Result<Vec<OwnedMessage>> {
        let (kafka, topic) = (self.kafka.clone(), self.topics.deliveries_parked());
        let (subscription, entity) = (subscription.to_owned(), entity.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            waybill_kafka::log::scan_range(
                &kafka,
                &topic,
                parked.partition,
                parked.from,
                i64::MAX,
                0,
                |m| {
                    if out.len() >= RELEASE_BATCH {
                        return;
                    }
                    let ours = m
                        .payload()
                        .and_then(|p| v1::DeliveryTask::decode(p).ok())
                        .is_some_and(|t| {
                            t.subscription_id == subscription
                                && entity.as_ref().is_none_or(|entity| {
                                    t.event
                                        .as_ref()
                                        .and_then(|e| e.entity.as_ref())
                                        .is_some_and(|e| &e.id == entity)
                                })
                        });
                    if ours {
                        out.push(m.detach());
                    }
                },
            )?;
            Ok(out)
        })
        .await
        .map_err(|e| waybill_kafka::Error::Task(e.to_string()))?
    }

    /// Sends a strict lane's blocker, due, back to its lane's partition of
    /// `deliveries`, where the lane's other steps run.
    pub(crate) async fn send_home(
        &self,
        job: &Job,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Finished {
        let topic = self.topics.deliveries();
        let written = self.write(&topic, &job.task, trace, None, stop).await;
        tracing::Span::current().record("waybill.outcome", "home");
        written.into()
    }
}
