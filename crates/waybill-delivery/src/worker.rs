//! One delivery, from its record to its durable outcome.
//!
//! A `deliveries` record is attempted at once; a due retry tier record
//! either hops to the tier of its remaining wait or is attempted (the
//! partition loop is in [`crate::partition`]). An attempt goes through
//! typed stages: prepare (is it sent, and with what), call (rate limit and
//! request), [`settle`] (pure: success ends it, a retry goes to the tier of
//! its delay, `410` disables the subscription, an exhausted policy goes to
//! `deliveries.dlq`) and apply (make that durable, then the health). The
//! offset is stored only once the outcome is durable.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use waybill_core::event::Event;
use waybill_core::hold::{LaneEffect, lane_effect};
use waybill_core::outcome::{
    Decision, ErrorClass, HealthSignal, Ready, Settlement, Target, prepare, settle, tier_for,
};
use waybill_core::retry::RetryPolicy;
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{DEFAULT_MAX_IN_FLIGHT, HealthChange, Ordering, Subscription};
use waybill_core::trace::TraceParent;
use waybill_kafka::producer::Acked;
use waybill_kafka::table::Table;
use waybill_kafka::{Producer, Topics, dead_letter, headers};
use waybill_proto::Message as _;
use waybill_proto::convert::{from_timestamp, health_to_proto, timestamp};
use waybill_proto::v1;
use waybill_runtime::metrics::{DeliveryLabels, Families, HealthLabels};
use waybill_runtime::projection::SealedProjection;
use waybill_runtime::telemetry;

use crate::config::DeliveryConfig;
use crate::health::HealthLocks;
use crate::lanes::LaneKey;
use crate::limits::RateLimits;
use crate::operational::{Cause, dead_event, health_event};
use crate::sender::{Attempt, Sender};
use crate::strict::{Holds, LaneCtx, Released};
use crate::takeover;

/// The policy of subscriptions without one, built once.
static DEFAULT_RETRY_POLICY: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::default);

/// Labels of a delivery not sent: its subscription is gone or disabled.
const SKIPPED: DeliveryLabels = DeliveryLabels {
    outcome: "skipped",
    status_class: "none",
};

/// Delivery ids that succeeded recently, remembered to skip the duplicate
/// tasks a restarted matcher re-emits: at most this many...
const SUCCEEDED_CAPACITY: u64 = 500_000;
/// ...for this long.
const SUCCEEDED_FOR: Duration = Duration::from_secs(3600);

/// The cache of delivery ids that succeeded recently.
pub fn succeeded_cache() -> moka::future::Cache<String, ()> {
    moka::future::Cache::builder()
        .max_capacity(SUCCEEDED_CAPACITY)
        .time_to_live(SUCCEEDED_FOR)
        .build()
}

/// Header of a `deliveries.dlq` record: why the delivery died.
pub const DEAD_REASON: &str = "waybill-dead-reason";

/// Shared by every partition task.
pub struct Worker {
    /// Sends the webhook requests.
    pub sender: Sender,
    /// Publishes retries, dead letters, attempt records and state changes.
    pub producer: Producer,
    /// Topic names and retry tiers.
    pub topics: Topics,
    /// Known event types.
    pub catalog: Table<waybill_runtime::catalog::Catalogue>,
    /// The subscription projection.
    pub subscriptions: Table<SealedProjection>,
    /// The holds on strict lanes and paused subscriptions.
    pub holds: Table<Holds>,
    /// Seals secrets of the subscription records this service writes.
    pub keys: Keyring,
    /// The `[delivery]` section.
    pub config: DeliveryConfig,
    /// Per-subscription rate limits.
    pub limits: RateLimits,
    /// The process's requests in flight (`max_in_flight_total`).
    pub slots: crate::slots::RequestSlots,
    /// Kafka connection, to read `delivery_attempts` when a partition is
    /// taken over.
    pub kafka: waybill_kafka::KafkaConfig,
    /// The process's metrics.
    pub metrics: waybill_runtime::metrics::Metrics,
    /// One health judgement at a time per subscription, following the
    /// attempt that started last.
    pub health: HealthLocks,
    /// Delivery ids that succeeded recently (here, or by a previous owner
    /// of a partition taken over): a first attempt of one of them that no
    /// user asked for again is a duplicate.
    pub succeeded: moka::future::Cache<String, ()>,
}

/// How one record ended in this process.
pub(crate) enum Finished {
    /// Durable outcome: the offset may move past the record.
    Done,
    /// Interrupted (revoke or shutdown): the next owner handles it again.
    Interrupted,
}

/// A decoded record of a partition, ready to be processed.
pub(crate) struct Job {
    pub(crate) offset: i64,
    /// Where the record is, to be read again by a retry through the API.
    source: v1::TaskRef,
    pub(crate) task: v1::DeliveryTask,
    pub(crate) event: Event,
    /// When the record was written (its Kafka timestamp).
    pub(crate) written: SystemTime,
    /// The trace context of the record (from its `traceparent` header).
    parent: Option<TraceParent>,
    /// Kept while its subscription was paused, now released: sent even if
    /// the subscription's pause hold is still there.
    pub(crate) kept: bool,
}

impl Job {
    /// Its lane: the entity's, or one of its own when its subscription
    /// keeps no order.
    pub(crate) fn lane(&self, ordering: Ordering) -> LaneKey {
        let key = match ordering {
            // The record itself: unique, whatever the entity.
            Ordering::None => format!("\0{}/{}", self.source.topic, self.offset),
            Ordering::Entity | Ordering::Strict => self.event.partition_key().to_owned(),
        };
        (self.task.subscription_id.clone(), key)
    }

    /// Not to be attempted before this time.
    pub(crate) fn not_before(&self) -> SystemTime {
        from_timestamp(self.task.not_before.as_ref(), "not_before")
            .map_or(self.written, SystemTime::from)
    }
}

impl Worker {
    /// The takeover plan of a `deliveries` partition whose first record is
    /// at `first`, written at `written` (see [`crate::takeover`]): the
    /// records its previous owner delivered after its last commit, and
    /// whether the handed offset skips records with no recorded outcome.
    /// A log that cannot be read gives the plain plan (deliver from
    /// `first`, skip nothing).
    pub(crate) async fn takeover(
        &self,
        topic: &str,
        partition: i32,
        first: i64,
        written: SystemTime,
    ) -> takeover::Takeover {
        let (kafka, attempts, topic_owned) = (
            self.kafka.clone(),
            self.topics.delivery_attempts(),
            topic.to_owned(),
        );
        let scanned = tokio::task::spawn_blocking(move || {
            takeover::read_log(&kafka, &attempts, &topic_owned, partition, first, written)
        })
        .await;
        match scanned {
            Ok(Ok((below, settled))) => {
                for id in &settled.succeeded {
                    self.succeeded.insert(id.clone(), ()).await;
                }
                let plan = takeover::plan(first, &below, &settled);
                if !plan.delivered.is_empty() {
                    tracing::info!(
                        topic,
                        partition,
                        skipped = plan.delivered.len(),
                        "records delivered by the previous owner after its last commit are not sent again"
                    );
                }
                plan
            }
            Ok(Err(e)) => {
                tracing::warn!(topic, partition, error = %e, "cannot read the partition's recent log or delivery_attempts; uncommitted records are delivered again, and the handed offset is not checked");
                takeover::Takeover::default()
            }
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "takeover scan failed");
                takeover::Takeover::default()
            }
        }
    }

    /// Decodes a record; `Err` carries why it is poison.
    pub(crate) async fn decode<M: Message>(&self, message: &M) -> Result<Job, String> {
        let task = decode_task(message)?;
        self.job(task, message).await
    }

    /// The job of a decoded task read from `message`; `Err` says why it is
    /// poison.
    pub(crate) async fn job<M: Message>(
        &self,
        task: v1::DeliveryTask,
        message: &M,
    ) -> Result<Job, String> {
        let record = task
            .event
            .clone()
            .ok_or_else(|| "DeliveryTask without an event".to_owned())?;
        let event = waybill_runtime::catalog::event_from_record(
            &self.catalog,
            record,
            waybill_kafka::produced_at(message),
            self.config.freshness_timeout,
        )
        .await
        .map_err(|e| format!("invalid event in DeliveryTask: {e}"))?;
        Ok(Job {
            offset: message.offset(),
            source: v1::TaskRef {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            task,
            event,
            written: waybill_kafka::produced_at(message),
            parent: headers::trace_parent(message.headers()),
            kept: false,
        })
    }

    /// A due record: hops to the next retry tier if its wait is not over
    /// (it waited a whole tier), else is attempted.
    pub(crate) async fn process(
        &self,
        job: &Job,
        tier: Option<Duration>,
        stop: &CancellationToken,
        slot: Option<&mut LaneSlot>,
    ) -> Finished {
        // A messaging process span by the semantic conventions.
        let span = tracing::info_span!(
            "delivery.task",
            otel.name = %format!("process {}", job.source.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            messaging.destination.name = %job.source.topic,
            messaging.destination.partition.id = %job.source.partition,
            messaging.kafka.offset = job.source.offset,
            messaging.consumer.group.name = %self.kafka.group_id(&if self.topics.tier_of(&job.source.topic).is_some() {
                self.config.retries_group_id()
            } else {
                self.config.group_id.clone()
            }),
            waybill.delivery_id = %job.task.delivery_id,
            waybill.subscription_id = %job.task.subscription_id,
            waybill.event_id = %job.event.id,
            waybill.event_name = %job.event.name,
            waybill.attempt = job.task.attempt.max(1),
            waybill.outcome = tracing::field::Empty,
        );
        telemetry::adopt(&span, job.parent.as_ref());
        let trace = telemetry::propagate(&span, job.parent.as_ref());
        self.process_traced(job, &trace, tier, stop, slot)
            .instrument(span)
            .await
    }

    async fn process_traced(
        &self,
        job: &Job,
        trace: &TraceParent,
        tier: Option<Duration>,
        stop: &CancellationToken,
        slot: Option<&mut LaneSlot>,
    ) -> Finished {
        if tier.is_some()
            && let Ok(remaining) = job.not_before().duration_since(SystemTime::now())
            && remaining >= Duration::from_millis(1)
        {
            let next = self.retry_topic(remaining);
            tracing::debug!(remaining_ms = remaining.as_secs_f64() * 1000.0, written = ?job.written, not_before = ?job.not_before(), "hop");
            Families::topic_counter(&self.metrics.get().retries_scheduled, &next);
            tracing::Span::current().record("waybill.outcome", "waiting");
            return self.write(&next, &job.task, trace, None, stop).await.into();
        }
        if tier.is_some() && job.task.strict_retry && !job.task.redeliver {
            return self.send_home(job, trace, stop).await;
        }
        self.deliver(job, trace, stop, slot).await
    }

    /// Attempts the delivery once and makes its outcome durable, in
    /// stages: [`Self::prepare`] (is it sent, and with what), the lane's
    /// gate (a strict lane held by another delivery parks it, see
    /// [`crate::strict`]), [`Self::call`] (the rate limit and the request),
    /// [`settle`] (pure: what the outcome means) and [`Self::apply`] (make
    /// it durable); a strict lane's blocker that is over then releases
    /// what was parked behind it.
    async fn deliver(
        &self,
        job: &Job,
        trace: &TraceParent,
        stop: &CancellationToken,
        slot: Option<&mut LaneSlot>,
    ) -> Finished {
        let attempt_no = job.task.attempt.max(1);
        let ready = self.prepare(job, attempt_no).await;
        let ordering = ready
            .as_ref()
            .map_or(Ordering::Entity, |r| r.subscription.spec.ordering);
        let mut lane = self.lane_of(job, ordering).await;
        let Some(ready) = ready else {
            // A blocker not sent (its subscription gone) is over too.
            if lane.is_blocker(job) && !job.task.redeliver {
                return self.released(&mut lane, trace, stop).await;
            }
            return Finished::Done;
        };
        if let Some(finished) = self.pause_gate(job, &ready, trace, stop).await {
            return finished;
        }
        if let Some(finished) = self.hold_gate(job, &mut lane, trace, stop).await {
            return finished;
        }
        let (finished, effect) = self
            .attempt(job, attempt_no, &ready, &mut lane, trace, stop, slot)
            .await;
        match (finished, effect) {
            (Finished::Done, LaneEffect::Release) => self.released(&mut lane, trace, stop).await,
            (finished, _) => finished,
        }
    }

    /// Releases the lane's parked deliveries; done unless interrupted.
    async fn released(
        &self,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Finished {
        match self.release(lane, trace, stop).await {
            Released::Interrupted => Finished::Interrupted,
            Released::Free | Released::Blocked => Finished::Done,
        }
    }

    /// One attempt of a delivery that may be sent: call, settle, apply;
    /// and what it does to its lane. The lane is given to its next delivery
    /// once the request is over when its outcome cannot hold the lane
    /// (`slot`), else when the delivery task ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn attempt(
        &self,
        job: &Job,
        attempt_no: u32,
        ready: &Ready,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
        slot: Option<&mut LaneSlot>,
    ) -> (Finished, LaneEffect) {
        let slot = slot.filter(|_| lane.frees_early());
        let Some(attempt) = self.call(job, ready, trace, stop, slot).await else {
            return (Finished::Interrupted, LaneEffect::Unchanged);
        };
        let policy = ready
            .subscription
            .spec
            .retry_policy
            .as_ref()
            .unwrap_or(&DEFAULT_RETRY_POLICY);
        let settlement = settle(
            &attempt.outcome,
            attempt_no,
            policy,
            ready.target,
            rand::random::<f64>(),
        );
        let effect = lane_effect(
            lane.strict,
            settlement.decision,
            lane.is_blocker(job),
            job.task.redeliver,
        );
        let finished = self
            .apply(
                job, attempt_no, ready, &attempt, settlement, effect, lane, trace, stop,
            )
            .await;
        (finished, effect)
    }

    /// Whether the delivery is sent: not a duplicate of one that
    /// succeeded, its subscription (as of the task) live. A delivery not
    /// sent is recorded as skipped here (`None`).
    pub(crate) async fn prepare(&self, job: &Job, attempt_no: u32) -> Option<Ready> {
        let task = &job.task;
        if attempt_no == 1 && !task.redeliver && self.succeeded.contains_key(&task.delivery_id) {
            self.metrics.get().duplicate_tasks_skipped.inc();
            tracing::Span::current().record("waybill.outcome", "duplicate");
            tracing::debug!(delivery_id = %task.delivery_id, "delivered before; duplicate task skipped");
            return None;
        }
        // A per-event callback: the tenant's callbacks subscription signs and
        // retries it, to the event's own URL.
        let target = if task
            .subscription_id
            .starts_with(waybill_core::ids::CALLBACKS_PREFIX)
        {
            Target::Callback
        } else {
            Target::Endpoint
        };
        let subscription = self.subscription(&task.subscription_id, job.written).await;
        match prepare(subscription, target, job.event.callback_url.as_deref()) {
            Ok(ready) => Some(ready),
            Err(why) => {
                if why == ErrorClass::SubscriptionDeleted {
                    self.limits.forget(&task.subscription_id);
                }
                self.record_skip(job, attempt_no, why).await;
                self.metrics.get().deliveries.get_or_create(&SKIPPED).inc();
                tracing::Span::current().record("waybill.outcome", "skipped");
                tracing::info!(delivery_id = %task.delivery_id, subscription_id = %task.subscription_id, why = why.as_str(), "delivery not sent");
                None
            }
        }
    }

    /// Waits for the subscription's rate limit and a request slot of the
    /// process, and sends the request; `None` if the partition is taken
    /// away while waiting. A request once
    /// sent is seen through (it is bounded by the request timeout, shorter
    /// than the drain timeout), so a stop does not turn it into a
    /// duplicate. The lane is free once the request is over.
    async fn call(
        &self,
        job: &Job,
        ready: &Ready,
        trace: &TraceParent,
        stop: &CancellationToken,
        slot: Option<&mut LaneSlot>,
    ) -> Option<Attempt> {
        let subscription = &ready.subscription;
        let waited = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            w = self
                .limits
                .acquire(&subscription.id, subscription.spec.rate_limit_per_second) => w,
        };
        if let Some(waited) = waited {
            let metrics = self.metrics.get();
            metrics.rate_limit_waits.inc();
            metrics.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
        }
        // A slot of the process's requests in flight, held until the
        // response is in.
        let (request_slot, waited) = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            got = self.slots.acquire() => got,
        };
        if let Some(waited) = waited {
            let metrics = self.metrics.get();
            metrics.request_slot_waits.inc();
            metrics
                .request_slot_wait_seconds
                .inc_by(waited.as_secs_f64());
        }
        let method = subscription.spec.method.as_str();
        // An HTTP client span by the semantic conventions; the URL without
        // credentials or query values.
        let url = waybill_core::url_policy::for_telemetry(&subscription.spec.url);
        let attempt_span = tracing::info_span!(
            "delivery.attempt",
            otel.name = method,
            otel.kind = "client",
            http.request.method = method,
            url.full = url.as_ref().map_or("", |u| u.as_str()),
            server.address = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default(),
            server.port = url.as_ref().and_then(|u| u.port_or_known_default()).unwrap_or(0),
            http.request.resend_count = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let attempt_no = job.task.attempt.max(1);
        if attempt_no > 1 {
            attempt_span.record("http.request.resend_count", attempt_no - 1);
        }
        // The attempt is a child of its task's context, named explicitly:
        // under load an attempt was once seen whose contextual parent was
        // gone, starting a trace of its own (CI, twice).
        telemetry::adopt(&attempt_span, Some(trace));
        // The receiver's span is a child of the attempt.
        let request_trace = telemetry::propagate(&attempt_span, Some(trace));
        let attempt = self
            .sender
            .attempt(
                subscription,
                &job.task.delivery_id,
                &job.event,
                &request_trace,
            )
            .instrument(attempt_span.clone())
            .await;
        drop(request_slot);
        // A success is remembered before the lane's next delivery may start:
        // a duplicate task right behind it on the lane is then skipped.
        if attempt.succeeded() {
            self.succeeded
                .insert(job.task.delivery_id.clone(), ())
                .await;
        }
        // The endpoint is done with this delivery: the lane's next one may
        // go while this outcome is made durable (its offset still waits).
        if let Some(slot) = slot {
            slot.release();
        }
        if attempt.status != 0 {
            attempt_span.record("http.response.status_code", attempt.status);
        }
        if !attempt.error_class.is_empty() {
            attempt_span.record("error.type", attempt.error_class);
            attempt_span.record("otel.status_code", "error");
        }
        Some(attempt)
    }

    /// Makes the settled outcome durable: the delivery's next step (a retry
    /// tier, the dead letters) and its attempt record first — what a
    /// partition's next owner reads to know what was delivered — then
    /// what it tells of the subscription's health.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        job: &Job,
        attempt_no: u32,
        ready: &Ready,
        attempt: &Attempt,
        settlement: Settlement,
        effect: LaneEffect,
        lane: &mut LaneCtx,
        trace: &TraceParent,
        stop: &CancellationToken,
    ) -> Finished {
        let task = &job.task;
        let subscription = &ready.subscription;
        tracing::Span::current().record("waybill.outcome", settlement.label());
        let metrics = self.metrics.get();
        metrics.delivery(settlement.label(), attempt.status, attempt.duration);
        metrics.tenant_delivery(&task.tenant_id, settlement.label());
        if matches!(settlement.decision, Decision::Success)
            && let Some(latency) = crate::latency::end_to_end(task, SystemTime::now())
        {
            metrics.delivered_end_to_end(&job.event.name, latency);
        }
        let mut record = attempt_record(job, attempt_no, attempt, &settlement.decision);
        let cause = Cause {
            delivery_id: task.delivery_id.clone(),
            event_name: job.event.name.clone(),
            status_code: attempt.status,
            error_class: attempt.error_class.to_owned(),
            error: attempt.error.clone(),
        };
        let written = match settlement.decision {
            Decision::Success => {
                tracing::debug!(
                    delivery_id = %task.delivery_id,
                    subscription_id = %subscription.id,
                    attempt = attempt_no,
                    status = attempt.status,
                    duration_ms = attempt.duration.as_millis() as u64,
                    "delivered"
                );
                self.publish_attempt(&record).await;
                Finished::Done
            }
            Decision::Retry(after) => {
                tracing::warn!(
                    delivery_id = %task.delivery_id,
                    subscription_id = %subscription.id,
                    attempt = attempt_no,
                    status = attempt.status,
                    error_class = attempt.error_class,
                    error = %attempt.error,
                    retry_in_ms = after.as_millis() as u64,
                    "delivery failed; retry scheduled"
                );
                self.publish_attempt(&record).await;
                let mut next = task.clone();
                next.attempt = attempt_no + 1;
                next.not_before = Some(timestamp(OffsetDateTime::now_utc() + after));
                // The lane is held before the retry exists: its next
                // attempt finds the lane held by it.
                let blocker = lane.is_blocker(job);
                if effect == LaneEffect::Block
                    && let Finished::Interrupted = self.block(job, lane, stop).await
                {
                    return Finished::Interrupted;
                }
                next.strict_retry = !task.redeliver && (blocker || effect == LaneEffect::Block);
                let topic = self.retry_topic(after);
                Families::topic_counter(&self.metrics.get().retries_scheduled, &topic);
                self.write(&topic, &next, trace, None, stop).await.into()
            }
            Decision::Dead => {
                let reason = format!(
                    "{} attempts failed; last: {}",
                    attempt_no,
                    if attempt.error.is_empty() {
                        "unknown"
                    } else {
                        &attempt.error
                    }
                );
                tracing::warn!(
                    delivery_id = %task.delivery_id,
                    subscription_id = %subscription.id,
                    attempts = attempt_no,
                    reason,
                    "delivery dead"
                );
                let topic = self.topics.deliveries_dlq();
                let Some(acked) = self.write(&topic, task, trace, Some(&reason), stop).await else {
                    return Finished::Interrupted;
                };
                // The history points at the dead letter, which a retry
                // through the API reads again.
                record.task = Some(v1::TaskRef {
                    topic,
                    partition: acked.partition,
                    offset: acked.offset,
                });
                record.dead = true;
                self.publish_attempt(&record).await;
                let dead = dead_event(
                    &task.tenant_id,
                    &task.subscription_id,
                    &cause,
                    &job.event.id,
                    attempt_no,
                    OffsetDateTime::now_utc(),
                );
                self.announce(dead, &cause, stop).await
            }
            Decision::Disable => {
                tracing::warn!(
                    delivery_id = %task.delivery_id,
                    subscription_id = %subscription.id,
                    "endpoint answered 410 Gone; disabling the subscription"
                );
                self.publish_attempt(&record).await;
                Finished::Done
            }
        };
        if matches!(written, Finished::Interrupted) {
            return written;
        }
        match settlement.health {
            HealthSignal::Unchanged => Finished::Done,
            HealthSignal::Succeeded | HealthSignal::Failed => {
                let succeeded = settlement.health == HealthSignal::Succeeded;
                self.update_health(subscription, succeeded, attempt.started, &cause, stop)
                    .await;
                Finished::Done
            }
            HealthSignal::Gone => {
                let _judging = self.health.lock(&subscription.id).await;
                self.change_health(subscription, &cause, stop, |_| {
                    Some(HealthChange::Disabled {
                        reason: "the endpoint answered 410 Gone".to_owned(),
                    })
                })
                .await
            }
        }
    }

    /// Records the health change an attempt outcome brings (failing,
    /// recovered, disabled after failing too long), if any, judged on the
    /// latest state: attempts of other entities settle at the same time,
    /// and one that started before the latest judged changes nothing.
    async fn update_health(
        &self,
        subscription: &Subscription,
        succeeded: bool,
        at: OffsetDateTime,
        cause: &Cause,
        stop: &CancellationToken,
    ) {
        let disable_after = self.config.disable_after;
        let judging = self.health.lock(&subscription.id).await;
        if !judging.admit(at) {
            return;
        }
        // Most outcomes change nothing on the state known now: only a
        // change waits for the projection to be fresh and is judged again.
        let (status, failing_since) = self
            .subscriptions
            .read()
            .health(&subscription.id)
            .unwrap_or((subscription.status, subscription.failing_since));
        let change = waybill_core::subscription::health_change(
            status,
            failing_since,
            succeeded,
            at,
            disable_after,
        );
        if change.is_none() {
            return;
        }
        self.change_health(subscription, cause, stop, |current| {
            current.health_after(succeeded, at, disable_after)
        })
        .await;
        drop(judging);
    }

    /// How a subscription's deliveries queue: its ordering and
    /// `max_in_flight`, as the projection knows them now (a subscription it
    /// does not know yet queues by entity; its deliveries wait for the
    /// projection before they are sent).
    pub(crate) fn lane_policy(&self, subscription_id: &str) -> (Ordering, usize) {
        self.subscriptions
            .read()
            .lane_policy(subscription_id)
            .map_or(
                (Ordering::Entity, DEFAULT_MAX_IN_FLIGHT as usize),
                |(ordering, max)| (ordering, max as usize),
            )
    }

    /// The retry tier topic for a wait of `after`.
    fn retry_topic(&self, after: Duration) -> String {
        let tiers = self.topics.retry_tiers();
        self.topics.retry(tiers[tier_for(after, tiers)])
    }

    /// The subscription as of the task's production: every change written
    /// before the task (a rotated secret, new auth, a delete) is applied
    /// first. The wait is shared by all tasks and is free once the
    /// projection is known fresh past that time.
    pub(crate) async fn subscription(
        &self,
        id: &str,
        produced_at: SystemTime,
    ) -> Option<Subscription> {
        if let Err(e) = self
            .subscriptions
            .wait_fresh(produced_at, self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, subscription_id = id, "projection lagging");
        }
        let projection = self.subscriptions.read();
        self.metrics
            .get()
            .projection_subscriptions
            .set(projection.len() as i64);
        projection.get(id)
    }

    /// Writes `task` to `topic` (a retry tier or the DLQ), retrying until
    /// Kafka acknowledges it (`Some`, where it was written) or the
    /// partition is taken away (`None`).
    pub(crate) async fn write(
        &self,
        topic: &str,
        task: &v1::DeliveryTask,
        trace: &TraceParent,
        dead_reason: Option<&str>,
        stop: &CancellationToken,
    ) -> Option<Acked> {
        let value = task.encode_to_vec();
        let outcome = self
            .until_acked(stop, "delivery task", || {
                let mut record_headers =
                    headers::standard(waybill_proto::SCHEMA_VERSION, Some(trace));
                if let Some(reason) = dead_reason {
                    record_headers = record_headers.insert(Header {
                        key: DEAD_REASON,
                        value: Some(reason),
                    });
                }
                self.producer.send(
                    topic,
                    task.subscription_id.as_bytes(),
                    Some(&value),
                    record_headers,
                )
            })
            .await;
        if outcome.is_some() {
            tracing::debug!(topic, delivery_id = %task.delivery_id, attempt = task.attempt, "task written");
        }
        outcome
    }

    /// Records a health change: the subscription's health record, under
    /// its own key, so the user's state is never rewritten (and a user's
    /// edit never rewrites the health). Every change is also announced as
    /// an operational event (`waybill.subscription.*`). The same change is
    /// not written twice while the projection catches up.
    async fn change_health(
        &self,
        subscription: &Subscription,
        cause: &Cause,
        stop: &CancellationToken,
        judge: impl FnOnce(&Subscription) -> Option<HealthChange>,
    ) -> Finished {
        // Judge on the latest state: a user's delete or disable wins, and a
        // change another attempt already recorded is not recorded again.
        let Some(current) = self.subscription(&subscription.id, SystemTime::now()).await else {
            return Finished::Done;
        };
        if !current.is_deliverable() {
            return Finished::Done;
        }
        let Some(change) = judge(&current) else {
            return Finished::Done;
        };
        let change = &change;
        let now = OffsetDateTime::now_utc();
        let health = current.health_record(change, now);
        self.metrics
            .get()
            .health_changes
            .get_or_create(&HealthLabels {
                status: health.status.as_str(),
            })
            .inc();
        tracing::info!(
            subscription_id = %current.id,
            status = health.status.as_str(),
            reason = health.disabled_reason.as_deref().unwrap_or(""),
            "subscription health changed"
        );
        let value = health_to_proto(&current.id, &current.tenant_id, &health).encode_to_vec();
        let key = waybill_runtime::projection::health_key(&current.id);
        let topic = self.topics.subscriptions();
        let written = self
            .until_acked(stop, "subscription health", || {
                self.producer.send(
                    &topic,
                    key.as_bytes(),
                    Some(&value),
                    headers::standard(waybill_proto::SCHEMA_VERSION, None),
                )
            })
            .await;
        if written.is_some() {
            // The next judgement reads what this one wrote.
            if let Err(e) = self
                .subscriptions
                .wait_fresh(SystemTime::now(), self.config.freshness_timeout)
                .await
            {
                tracing::warn!(error = %e, subscription_id = %current.id, "projection lagging");
            }
        }
        if written.is_none() {
            return Finished::Interrupted;
        }
        self.announce(health_event(&current, change, cause, now), cause, stop)
            .await
    }

    /// Retries a Kafka write with backoff until it is acknowledged (then
    /// where it was written) or the partition is taken away (`None`: the
    /// record is handled again by its next owner).
    pub(crate) async fn until_acked<F, Fut>(
        &self,
        stop: &CancellationToken,
        what: &str,
        mut send: F,
    ) -> Option<Acked>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = waybill_kafka::Result<Acked>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match send().await {
                Ok(acked) => return Some(acked),
                Err(e) => tracing::error!(error = %e, what, "write not acknowledged; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn record_skip(&self, job: &Job, attempt: u32, class: ErrorClass) {
        let why = class.as_str();
        let record = v1::DeliveryAttempt {
            outcome: v1::AttemptOutcome::Skipped as i32,
            error_class: why.to_owned(),
            error: format!("not sent: {}", why.replace('_', " ")),
            ..job_record(job, attempt, OffsetDateTime::now_utc())
        };
        self.publish_attempt(&record).await;
    }

    pub(crate) async fn publish_attempt(&self, record: &v1::DeliveryAttempt) {
        let value = record.encode_to_vec();
        if let Err(e) = self
            .producer
            .send(
                &self.topics.delivery_attempts(),
                record.subscription_id.as_bytes(),
                Some(&value),
                headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
            .await
        {
            tracing::error!(error = %e, delivery_id = %record.delivery_id, "attempt record not written");
        }
    }

    pub(crate) async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        stop: &CancellationToken,
    ) -> Finished {
        let topic = self.topics.dead_letters();
        Families::topic_counter(&self.metrics.get().poison_records, message.topic());
        self.until_acked(stop, "dead letter", || {
            dead_letter::send(&self.producer, &topic, message, reason)
        })
        .await
        .into()
    }
}

/// A running delivery's hold on its lane, given back once its request is
/// over, or when the delivery ends without one.
pub(crate) struct LaneSlot {
    lane: Option<LaneKey>,
    released: tokio::sync::mpsc::UnboundedSender<LaneKey>,
}

impl LaneSlot {
    pub(crate) fn new(
        lane: LaneKey,
        released: tokio::sync::mpsc::UnboundedSender<LaneKey>,
    ) -> Self {
        Self {
            lane: Some(lane),
            released,
        }
    }

    fn release(&mut self) {
        if let Some(lane) = self.lane.take() {
            // The partition loop may be gone (revoked): nothing to free.
            let _ = self.released.send(lane);
        }
    }
}

impl Drop for LaneSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl From<Option<Acked>> for Finished {
    fn from(acked: Option<Acked>) -> Self {
        if acked.is_some() {
            Finished::Done
        } else {
            Finished::Interrupted
        }
    }
}

/// The task a record holds; `Err` says why it is poison.
pub(crate) fn decode_task<M: Message>(message: &M) -> Result<v1::DeliveryTask, String> {
    v1::DeliveryTask::decode(message.payload().unwrap_or_default())
        .map_err(|e| format!("undecodable DeliveryTask: {e}"))
}

/// The attempt record of an HTTP attempt and what was decided after it.
fn attempt_record(
    job: &Job,
    attempt_no: u32,
    attempt: &Attempt,
    decision: &Decision,
) -> v1::DeliveryAttempt {
    let outcome = if attempt.succeeded() {
        v1::AttemptOutcome::Succeeded
    } else {
        v1::AttemptOutcome::Failed
    };
    let next_attempt_at = match decision {
        Decision::Retry(after) => Some(timestamp(OffsetDateTime::now_utc() + *after)),
        _ => None,
    };
    v1::DeliveryAttempt {
        outcome: outcome as i32,
        error_class: attempt.error_class.to_owned(),
        duration_ms: u32::try_from(attempt.duration.as_millis()).unwrap_or(u32::MAX),
        status_code: u32::from(attempt.status),
        error: attempt.error.clone(),
        response_excerpt: attempt.excerpt.clone(),
        next_attempt_at,
        ..job_record(job, attempt_no, attempt.started)
    }
}

/// The fields every attempt record of a job shares.
pub(crate) fn job_record(job: &Job, attempt: u32, started: OffsetDateTime) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        delivery_id: job.task.delivery_id.clone(),
        subscription_id: job.task.subscription_id.clone(),
        tenant_id: job.task.tenant_id.clone(),
        event_id: job.event.id.clone(),
        event_name: job.event.name.clone(),
        attempt,
        started_at: Some(timestamp(started)),
        created_at: job.task.created_at,
        entity_type: job.event.entity.kind.clone(),
        entity_id: job.event.entity.id.clone(),
        task: Some(job.source.clone()),
        ..Default::default()
    }
}
