//! One task per assigned domain-topic partition.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use time::OffsetDateTime;
use tracing::Instrument as _;
use waybill_core::ids;
use waybill_kafka::partitioned::Assigned;
use waybill_kafka::table::Table;
use waybill_kafka::{Producer, Topics, dead_letter, headers};
use waybill_proto::Message as _;
use waybill_proto::v1;

use crate::config::MatcherConfig;
use crate::dedup::Seen;
use crate::tasks::tasks_for;

fn seen_window(config: &MatcherConfig) -> i64 {
    i64::try_from(config.dedup_window.as_millis()).unwrap_or(i64::MAX)
}

/// A pending outcome: resolves to the record's offset once everything it
/// produced is acknowledged, or to the offset to restart from.
type Pending = Pin<Box<dyn Future<Output = Result<i64, i64>> + Send>>;

/// Shared by every partition task.
pub struct Worker {
    /// Publishes tasks and dead letters.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// Known event types.
    pub catalog: Table<waybill_runtime::catalog::Catalogue>,
    /// The subscription projection.
    pub subscriptions: Table<crate::projection::Projection>,
    /// The `[matcher]` section.
    pub config: MatcherConfig,
    /// The process's metrics.
    pub metrics: waybill_runtime::metrics::Metrics,
    /// Kafka connection, to read what precedes a partition taken over.
    pub kafka: waybill_kafka::KafkaConfig,
}

impl Worker {
    /// Consumes one partition until it is revoked or the service stops.
    ///
    /// Records are handled in order; their tasks are enqueued in order, and
    /// the partition's offset advances only over records whose tasks Kafka
    /// acknowledged. If an acknowledgement fails, the partition rewinds to
    /// that record and handles it again (same delivery ids, so receivers can
    /// deduplicate).
    pub async fn run_partition(self: Arc<Self>, assigned: Assigned) {
        let mut stream = assigned.messages.stream();
        let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
        let mut skip_until: Option<i64> = None;
        let mut seen = Seen::new(seen_window(&self.config), self.config.dedup_capacity);
        let mut seeded = false;
        loop {
            let room = in_flight.len() < self.config.max_in_flight;
            tokio::select! {
                biased;
                _ = assigned.stop.cancelled() => break,
                Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                    Ok(offset) => assigned.store_offset(offset),
                    Err(restart) => {
                        in_flight = FuturesOrdered::new();
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Err(e) = assigned.rewind(restart) {
                            tracing::error!(partition = assigned.partition, error = %e, "cannot rewind");
                        }
                        // Records fetched before the seek took effect are dropped.
                        skip_until = Some(restart);
                    }
                },
                message = stream.next(), if room => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!(partition = assigned.partition, error = %e, "consume error");
                            continue;
                        }
                        None => break,
                    };
                    if let Some(start) = skip_until {
                        if message.offset() != start {
                            continue;
                        }
                        skip_until = None;
                    }
                    if !seeded {
                        seeded = true;
                        self.seed(&mut seen, &assigned, message.offset()).await;
                    }
                    match self.handle(&message, &mut seen).await {
                        Some(pending) => in_flight.push_back(pending),
                        None => break,
                    }
                }
            }
        }
        // Finish what is in flight so its offsets can be committed on revoke.
        while let Some(done) = in_flight.next().await {
            match done {
                Ok(offset) => assigned.store_offset(offset),
                Err(_) => break,
            }
        }
    }

    /// Decodes, matches and enqueues the tasks of one record. `None` when
    /// the producer refuses work (the partition task stops; the record will
    /// be consumed again after the next assignment).
    async fn handle(&self, message: &BorrowedMessage<'_>, seen: &mut Seen) -> Option<Pending> {
        // A messaging process span by the semantic conventions.
        let span = tracing::info_span!(
            "matcher.match",
            otel.name = %format!("process {}", message.topic()),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            messaging.destination.name = message.topic(),
            messaging.destination.partition.id = %message.partition(),
            messaging.kafka.offset = message.offset(),
            messaging.consumer.group.name = %self.kafka.group_id(&self.config.group_id),
            waybill.event_id = tracing::field::Empty,
            waybill.event_name = tracing::field::Empty,
            waybill.tenant_id = tracing::field::Empty,
            waybill.matches = tracing::field::Empty,
        );
        let parent = headers::trace_parent(message.headers());
        waybill_runtime::telemetry::adopt(&span, parent.as_ref());
        self.match_record(message, seen, &span, parent.as_ref())
            .instrument(span.clone())
            .await
    }

    /// Learns the event ids of the records just below `first` (the first
    /// record this owner handles), so that a repeat of one of them is known
    /// after a rebalance too. Best effort: a failed read is logged.
    async fn seed(&self, seen: &mut Seen, assigned: &Assigned, first: i64) {
        let (kafka, topic, partition) = (
            self.kafka.clone(),
            assigned.topic.clone(),
            assigned.partition,
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let since_ms = now_ms.saturating_sub(seen_window(&self.config));
        let read = tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            waybill_kafka::log::scan_range(
                &kafka,
                &topic,
                partition,
                first - crate::dedup::BAND,
                first,
                since_ms,
                |m| {
                    if let Some(e) = m.payload().and_then(|p| v1::DomainEvent::decode(p).ok()) {
                        ids.push((
                            e.tenant_id,
                            e.id,
                            m.offset(),
                            m.timestamp().to_millis().unwrap_or(0),
                        ));
                    }
                },
            )
            .map(|_| ids)
        })
        .await;
        match read {
            Ok(Ok(ids)) => {
                for (tenant, id, offset, at) in &ids {
                    seen.is_duplicate(tenant, id, *offset, *at);
                }
                tracing::debug!(
                    partition = assigned.partition,
                    ids = ids.len(),
                    "event ids learnt"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(partition = assigned.partition, error = %e, "event ids below the first record not read")
            }
            Err(e) => {
                tracing::warn!(partition = assigned.partition, error = %e, "event id read failed")
            }
        }
    }

    async fn match_record(
        &self,
        message: &BorrowedMessage<'_>,
        seen: &mut Seen,
        span: &tracing::Span,
        parent: Option<&waybill_core::trace::TraceParent>,
    ) -> Option<Pending> {
        let offset = message.offset();
        let record = match v1::DomainEvent::decode(message.payload().unwrap_or_default()) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .dead_letter(message, &format!("undecodable DomainEvent: {e}"))
                    .await;
            }
        };
        let parsed = waybill_runtime::catalog::event_from_record(
            &self.catalog,
            record.clone(),
            waybill_kafka::produced_at(message),
            self.config.freshness_timeout,
        )
        .await;
        let event = match parsed {
            Ok(e) if e.name == waybill_core::catalog::TEST_EVENT => {
                return self
                    .dead_letter(
                        message,
                        "invalid DomainEvent: `waybill.test` is reserved for test notifications",
                    )
                    .await;
            }
            Ok(e)
                if waybill_core::catalog::is_operational(&e.name)
                    && message.topic() != self.topics.operational_events() =>
            {
                return self
                    .dead_letter(
                        message,
                        &format!(
                            "invalid DomainEvent: `{}` is one of Waybill's operational events, produced by Waybill only (on {})",
                            e.name,
                            self.topics.operational_events()
                        ),
                    )
                    .await;
            }
            Ok(e) => e,
            Err(e) => {
                return self
                    .dead_letter(message, &format!("invalid DomainEvent: {e}"))
                    .await;
            }
        };

        span.record("waybill.event_id", tracing::field::display(&event.id));
        span.record("waybill.event_name", tracing::field::display(&event.name));
        span.record(
            "waybill.tenant_id",
            tracing::field::display(&event.tenant_id),
        );

        let at_ms = message.timestamp().to_millis().unwrap_or(0);
        if seen.is_duplicate(&event.tenant_id, &event.id, offset, at_ms) {
            self.metrics.get().matcher_duplicates.inc();
            tracing::info!(
                event_id = %event.id,
                tenant_id = %event.tenant_id,
                partition = message.partition(),
                offset,
                "event posted again within the dedup window; not matched again"
            );
            return Some(Box::pin(async move { Ok(offset) }));
        }

        // Every subscription written before this event was produced must be
        // in the projection before matching.
        let produced_at = waybill_kafka::produced_at(message);
        if let Err(e) = self
            .subscriptions
            .wait_fresh(produced_at, self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, event_id = %event.id, "matching with a lagging projection");
        }

        let mut tasks = {
            let projection = self.subscriptions.read();
            self.metrics
                .get()
                .projection_subscriptions
                .set(projection.index().len() as i64);
            tasks_for(
                &event,
                &record,
                projection.index(),
                OffsetDateTime::now_utc(),
            )
        };
        // Where each delivery's end-to-end latency starts.
        let produced = waybill_proto::convert::timestamp(OffsetDateTime::from(produced_at));
        for task in &mut tasks {
            task.produced_at = Some(produced);
        }
        let metrics = self.metrics.get();
        metrics.matcher_events.inc();
        metrics.matches_per_event.observe(tasks.len() as f64);
        span.record("waybill.matches", tasks.len());
        if event.callback_url.is_some()
            && !tasks
                .iter()
                .any(|t| t.subscription_id.starts_with(ids::CALLBACKS_PREFIX))
        {
            // Nothing could sign it: set aside, never dropped silently. The
            // event's other deliveries go on.
            waybill_runtime::metrics::Families::topic_counter(
                &self.metrics.get().poison_records,
                message.topic(),
            );
            if let Err(e) = dead_letter::send(
                &self.producer,
                &self.topics.dead_letters(),
                message,
                "callback_url without the tenant's callbacks subscription; GET /v1/callbacks/secret creates it",
            )
            .await
            {
                tracing::error!(error = %e, offset, "callback not set aside; rewinding");
                return None;
            }
        }
        let trace = waybill_runtime::telemetry::propagate(span, parent);
        tracing::debug!(
            event_id = %event.id,
            event_name = %event.name,
            partition = message.partition(),
            offset,
            matches = tasks.len(),
            "event matched"
        );
        let deliveries = self.topics.deliveries();
        let mut acks = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let value = task.encode_to_vec();
            match self
                .producer
                .enqueue(
                    &deliveries,
                    task.subscription_id.as_bytes(),
                    Some(&value),
                    headers::standard(waybill_proto::SCHEMA_VERSION, Some(&trace)),
                )
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    tracing::error!(error = %e, "cannot enqueue delivery task");
                    return None;
                }
            }
        }
        Some(Box::pin(async move {
            for ack in acks {
                if let Err(e) = ack.await {
                    tracing::error!(error = %e, offset, "delivery task not acknowledged; rewinding");
                    return Err(offset);
                }
            }
            Ok(offset)
        }))
    }

    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) -> Option<Pending> {
        let offset = message.offset();
        waybill_runtime::metrics::Families::topic_counter(
            &self.metrics.get().poison_records,
            message.topic(),
        );
        let sent =
            dead_letter::send(&self.producer, &self.topics.dead_letters(), message, reason).await;
        Some(Box::pin(async move {
            match sent {
                Ok(_) => Ok(offset),
                Err(e) => {
                    tracing::error!(error = %e, offset, "dead letter not acknowledged; rewinding");
                    Err(offset)
                }
            }
        }))
    }
}
