//! One task per assigned partition of `deliveries` and of each retry tier.
//!
//! Records are read ahead (up to `max_in_flight_per_partition`) into
//! [`Lanes`]; deliveries of different subscriptions and entities run
//! concurrently, and the stored offset only covers the contiguous prefix of
//! finished records. A retry tier partition holds its head record until it
//! is due (the tier's records are due in offset order).
//!
//! [`Partition`] is the partition's state: [`Partition::on_message`] takes a
//! record in, [`Partition::finish`] a finished delivery out;
//! [`Worker::run_partition`] only waits for what happens next.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use waybill_core::outcome::due_at;
use waybill_kafka::offsets::OffsetTracker;
use waybill_kafka::partitioned::Assigned;
use waybill_runtime::metrics::Families;

use crate::lanes::{LaneKey, Lanes};
use crate::worker::{Finished, Job, LaneSlot, Worker, decode_task};

/// What the loop does after a record was taken in.
enum Step {
    /// Nothing to start (held, queued behind its lane, or done already).
    Nothing,
    /// Start this delivery.
    Start(Box<(LaneKey, Job)>),
    /// Release what this subscription kept while paused (a resume marker).
    Resume(i64, String),
    /// The partition cannot go on (revoked while writing a dead letter).
    Stop,
}

/// The state of one assigned partition.
struct Partition {
    topic: String,
    partition: i32,
    /// The retry tier's wait, `None` on `deliveries`.
    tier: Option<Duration>,
    offsets: OffsetTracker,
    lanes: Lanes<Job>,
    /// A retry tier's head record, not due yet.
    held: Option<(Job, SystemTime)>,
    /// Records the previous owner delivered after its last commit.
    delivered_before: Option<HashSet<i64>>,
    /// Set after going back below the handed offset: until the record gone
    /// back to arrives, what arrives was fetched before.
    rewound_to: Option<i64>,
}

impl Partition {
    fn new(worker: &Worker, assigned: &Assigned) -> Self {
        Self {
            topic: assigned.topic.clone(),
            partition: assigned.partition,
            tier: worker.topics.tier_of(&assigned.topic),
            offsets: OffsetTracker::default(),
            lanes: Lanes::new(worker.config.max_in_flight_per_subscription),
            held: None,
            delivered_before: None,
            rewound_to: None,
        }
    }

    /// Whether to read the next record: nothing is held and the read-ahead
    /// has room.
    fn read_more(&self, max_in_flight: usize) -> bool {
        self.held.is_none() && self.offsets.in_flight() < max_in_flight
    }

    /// How long the held record still waits.
    fn hold_for(&self) -> Option<Duration> {
        self.held
            .as_ref()
            .map(|(_, due)| due.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// The held record is due: it joins its lane.
    fn release_held(&mut self, worker: &Worker) -> Option<(LaneKey, Job)> {
        let (job, _) = self.held.take()?;
        self.enqueue(worker, job)
    }

    /// Queues a delivery on its lane, by its subscription's ordering and
    /// `max_in_flight` (bounded by the deployment's
    /// `max_in_flight_per_subscription`); returns it if it may start now.
    fn enqueue(&mut self, worker: &Worker, job: Job) -> Option<(LaneKey, Job)> {
        let (ordering, cap) = worker.lane_policy(&job.task.subscription_id);
        let cap = cap.min(worker.config.max_in_flight_per_subscription);
        self.lanes.push_capped(job.lane(ordering), job, cap)
    }

    /// A lane's request is over: what may start now.
    fn lane_free(&mut self, lane: &LaneKey) -> Vec<(LaneKey, Job)> {
        self.lanes.finish(lane)
    }

    /// The record at `offset` has a durable outcome: the offset to store,
    /// if the finished prefix grew.
    fn finish(&mut self, offset: i64) -> Option<i64> {
        self.offsets.finish(offset)
    }

    /// Takes a record in: skips what was fetched before a rewind and what
    /// the previous owner delivered, dead-letters what cannot be decoded,
    /// holds a retry that is not due, and queues the rest on its lane.
    async fn on_message(
        &mut self,
        worker: &Worker,
        assigned: &Assigned,
        message: &BorrowedMessage<'_>,
        stop: &CancellationToken,
    ) -> Step {
        let offset = message.offset();
        if let Some(to) = self.rewound_to {
            // Fetched before the rewind's seek took effect.
            if offset > to {
                return Step::Nothing;
            }
            self.rewound_to = None;
        }
        // Retry tiers carry few records: their duplicates after a crash
        // are not worth the scan.
        if self.delivered_before.is_none() && self.tier.is_none() {
            tracing::debug!(topic = %self.topic, partition = self.partition, offset, "first record of the assignment");
            let plan = worker
                .takeover(
                    &self.topic,
                    self.partition,
                    offset,
                    waybill_kafka::produced_at(message),
                )
                .await;
            self.delivered_before = Some(plan.delivered);
            if let Some(to) = plan.rewind_to {
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    handed = offset,
                    rewind_to = to,
                    "the group's offset is past records with no recorded outcome; going back to the first of them (what was delivered since is not sent again)"
                );
                Families::topic_counter(&worker.metrics.get().takeover_rewinds, &self.topic);
                match assigned.rewind(to) {
                    Ok(()) => {
                        self.rewound_to = Some(to);
                        return Step::Nothing;
                    }
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = self.partition, rewind_to = to, error = %e, "cannot go back; the records before the handed offset are not delivered");
                    }
                }
            }
        }
        self.offsets.read(offset);
        if self
            .delivered_before
            .as_ref()
            .is_some_and(|d| d.contains(&offset))
        {
            tracing::debug!(topic = %self.topic, partition = self.partition, offset, "delivered by the previous owner; not sent again");
            worker.metrics.get().takeover_skipped.inc();
            self.store(assigned, offset);
            return Step::Nothing;
        }
        // Decoded once: a resume marker, or a delivery.
        let job = match decode_task(message) {
            Ok(task) if task.resume => return Step::Resume(offset, task.subscription_id),
            Ok(task) => worker.job(task, message).await,
            Err(reason) => Err(reason),
        };
        let job = match job {
            Ok(job) => job,
            Err(reason) => {
                return match worker.dead_letter(message, &reason, stop).await {
                    Finished::Done => {
                        self.store(assigned, offset);
                        Step::Nothing
                    }
                    Finished::Interrupted => Step::Stop,
                };
            }
        };
        if let Some(tier) = self.tier {
            let due = due_at(job.written, tier, job.not_before());
            if due > SystemTime::now() {
                self.held = Some((job, due));
                return Step::Nothing;
            }
        }
        match self.enqueue(worker, job) {
            Some(start) => Step::Start(Box::new(start)),
            None => Step::Nothing,
        }
    }

    fn store(&mut self, assigned: &Assigned, offset: i64) {
        if let Some(upto) = self.finish(offset) {
            assigned.store_offset(upto);
        }
    }
}

impl Worker {
    /// Consumes one partition until it is revoked or the service stops.
    pub async fn run_partition(self: Arc<Self>, assigned: Assigned) {
        let stop = assigned.stop.clone();
        let mut stream = assigned.messages.stream();
        let mut state = Partition::new(&self, &assigned);
        let tier = state.tier;
        let mut running: JoinSet<(i64, Finished)> = JoinSet::new();
        // Lanes whose request is over: the next delivery of the lane may
        // start while the previous one's outcome is being written.
        let (released_tx, mut released) = tokio::sync::mpsc::unbounded_channel::<LaneKey>();
        let spawn = |running: &mut JoinSet<_>, lane: LaneKey, job: Job| {
            let worker = self.clone();
            let stop = stop.clone();
            let mut slot = LaneSlot::new(lane, released_tx.clone());
            running.spawn(async move {
                let finished = worker.process(&job, tier, &stop, Some(&mut slot)).await;
                (job.offset, finished)
            });
        };
        loop {
            let read_more = state.read_more(self.config.max_in_flight_per_partition);
            let hold_for = state.hold_for();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(lane) = released.recv() => {
                    for (lane, job) in state.lane_free(&lane) {
                        spawn(&mut running, lane, job);
                    }
                }
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    let Ok((offset, finished)) = joined else {
                        tracing::error!(topic = %assigned.topic, partition = assigned.partition, "delivery task panicked; partition stops");
                        break;
                    };
                    if matches!(finished, Finished::Interrupted) {
                        break;
                    }
                    state.store(&assigned, offset);
                }
                _ = tokio::time::sleep(hold_for.unwrap_or_default()), if hold_for.is_some() => {
                    if let Some((lane, job)) = state.release_held(&self) {
                        spawn(&mut running, lane, job);
                    }
                }
                message = stream.next(), if read_more => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!(topic = %assigned.topic, partition = assigned.partition, error = %e, "consume error");
                            continue;
                        }
                        None => break,
                    };
                    match state.on_message(&self, &assigned, &message, &stop).await {
                        Step::Nothing => {}
                        Step::Start(start) => {
                            let (lane, job) = *start;
                            spawn(&mut running, lane, job);
                        }
                        Step::Resume(offset, subscription_id) => {
                            let (worker, stop) = (self.clone(), stop.clone());
                            running.spawn(async move {
                                (offset, worker.release_kept(&subscription_id, &stop).await)
                            });
                        }
                        Step::Stop => break,
                    }
                }
            }
        }
        // Revoked or stopping: running deliveries see `stop` and end; store
        // what finished, so the next owner starts after it.
        while let Some(joined) = running.join_next().await {
            if let Ok((offset, Finished::Done)) = joined {
                state.store(&assigned, offset);
            }
        }
    }
}
