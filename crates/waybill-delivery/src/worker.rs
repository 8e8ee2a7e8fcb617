//! One task per assigned partition of `deliveries`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use time::OffsetDateTime;
use waybill_core::auth::CallbackAuth;
use waybill_core::catalog::Catalog;
use waybill_core::event::Event;
use waybill_core::subscription::Subscription;
use waybill_core::trace::TraceParent;
use waybill_core::url_policy::UrlPolicy;
use waybill_kafka::partitioned::Assigned;
use waybill_kafka::table::Table;
use waybill_kafka::{Producer, Topics, dead_letter, headers};
use waybill_proto::Message as _;
use waybill_proto::convert::{event_from_proto, timestamp};
use waybill_proto::v1;
use waybill_runtime::projection::Subscriptions;

use crate::config::DeliveryConfig;
use crate::oauth2::Tokens;
use crate::request;

/// Bytes of the response body kept in the attempt record.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// Shared by every partition task.
pub struct Worker {
    /// Pooled HTTP client (keep-alive, timeouts, no redirects).
    pub client: reqwest::Client,
    /// Publishes attempt records and dead letters.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// Known event types.
    pub catalog: Catalog,
    /// The subscription projection.
    pub subscriptions: Table<Subscriptions>,
    /// Callback URL rules.
    pub url_policy: UrlPolicy,
    /// The `[delivery]` section.
    pub config: DeliveryConfig,
    /// OAuth2 tokens, shared by every partition task.
    pub tokens: Tokens,
}

/// How one task ended in this process.
enum Finished {
    /// Durable outcome: the offset may move past the task.
    Done,
    /// Interrupted (revoke or shutdown): the next owner delivers it again.
    Interrupted,
}

/// The result of one HTTP attempt.
struct AttemptResult {
    status: u16,
    error_class: &'static str,
    error: String,
    excerpt: String,
}

impl AttemptResult {
    fn failed(class: &'static str, error: String) -> Self {
        Self {
            status: 0,
            error_class: class,
            error,
            excerpt: String::new(),
        }
    }
}

impl Worker {
    /// Consumes one partition until it is revoked or the service stops.
    pub async fn run_partition(self: Arc<Self>, assigned: Assigned) {
        let mut stream = assigned.messages.stream();
        loop {
            let message = tokio::select! {
                biased;
                _ = assigned.stop.cancelled() => return,
                m = stream.next() => m,
            };
            let message = match message {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(partition = assigned.partition, error = %e, "consume error");
                    continue;
                }
                None => return,
            };
            match self.handle(&message, &assigned).await {
                Finished::Done => assigned.store_offset(message.offset()),
                Finished::Interrupted => return,
            }
        }
    }

    async fn handle(&self, message: &BorrowedMessage<'_>, assigned: &Assigned) -> Finished {
        let task = match v1::DeliveryTask::decode(message.payload().unwrap_or_default()) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .dead_letter(message, &format!("undecodable DeliveryTask: {e}"), assigned)
                    .await;
            }
        };
        let Some(record) = task.event.clone() else {
            return self
                .dead_letter(message, "DeliveryTask without an event", assigned)
                .await;
        };
        let event = match event_from_proto(record, &self.catalog) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .dead_letter(
                        message,
                        &format!("invalid event in DeliveryTask: {e}"),
                        assigned,
                    )
                    .await;
            }
        };
        let produced_at = waybill_kafka::produced_at(message);
        let trace = headers::trace_parent(message.headers()).unwrap_or_else(TraceParent::new_root);
        self.deliver(&task, &event, produced_at, &trace, assigned)
            .await
    }

    /// Attempts the delivery until it succeeds, its subscription is gone or
    /// disabled, or the partition is taken away.
    async fn deliver(
        &self,
        task: &v1::DeliveryTask,
        event: &Event,
        produced_at: SystemTime,
        trace: &TraceParent,
        assigned: &Assigned,
    ) -> Finished {
        let mut attempt = task.attempt.max(1);
        let mut delay = self.config.retry_initial_delay;
        loop {
            let Some(subscription) = self.subscription(&task.subscription_id, produced_at).await
            else {
                self.record_skip(task, event, attempt, "subscription_deleted")
                    .await;
                tracing::info!(delivery_id = %task.delivery_id, subscription_id = %task.subscription_id, "subscription deleted; delivery dropped");
                return Finished::Done;
            };
            if !subscription.is_deliverable() {
                self.record_skip(task, event, attempt, "subscription_disabled")
                    .await;
                tracing::info!(delivery_id = %task.delivery_id, subscription_id = %task.subscription_id, "subscription disabled; delivery dropped");
                return Finished::Done;
            }

            let started = OffsetDateTime::now_utc();
            let clock = Instant::now();
            let result = tokio::select! {
                biased;
                _ = assigned.stop.cancelled() => return Finished::Interrupted,
                r = self.attempt(&subscription, task, event, trace) => r,
            };
            let duration = clock.elapsed();
            let success = (200..300).contains(&result.status);
            let next = (!success).then(|| started + delay);
            self.record_attempt(task, event, attempt, started, duration, &result, next)
                .await;
            if success {
                tracing::debug!(
                    delivery_id = %task.delivery_id,
                    subscription_id = %subscription.id,
                    attempt,
                    status = result.status,
                    duration_ms = duration.as_millis() as u64,
                    "delivered"
                );
                return Finished::Done;
            }
            tracing::warn!(
                delivery_id = %task.delivery_id,
                subscription_id = %subscription.id,
                attempt,
                status = result.status,
                error_class = result.error_class,
                error = %result.error,
                retry_in_ms = delay.as_millis() as u64,
                "delivery failed; will retry"
            );
            tokio::select! {
                biased;
                _ = assigned.stop.cancelled() => return Finished::Interrupted,
                _ = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
            delay = (delay * 2).min(self.config.retry_max_delay);
        }
    }

    /// The subscription as of the task's production: every change written
    /// before the task (a rotated secret, new auth, a delete) is applied
    /// first. The wait is shared by all tasks and is free once the
    /// projection is known fresh past that time.
    async fn subscription(&self, id: &str, produced_at: SystemTime) -> Option<Subscription> {
        if let Err(e) = self
            .subscriptions
            .wait_fresh(produced_at, self.config.freshness_timeout)
            .await
        {
            tracing::warn!(error = %e, subscription_id = id, "projection lagging");
        }
        self.subscriptions.read().get(id).cloned()
    }

    async fn attempt(
        &self,
        subscription: &Subscription,
        task: &v1::DeliveryTask,
        event: &Event,
        trace: &TraceParent,
    ) -> AttemptResult {
        let CallbackAuth::OAuth2(settings) = &subscription.spec.auth else {
            return self.send(subscription, task, event, trace, None).await;
        };
        // Tokens are cached per subscription and settings: changed
        // settings get a new token, other changes (a rotation) do not.
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            settings.hash(&mut h);
            format!("{}#{:x}", subscription.id, h.finish())
        };
        let mut refreshed = false;
        loop {
            let token = match self
                .tokens
                .get(&self.client, &self.url_policy, &key, settings)
                .await
            {
                Ok(token) => token,
                Err(e) => return AttemptResult::failed("oauth2", e.to_string()),
            };
            let result = self
                .send(subscription, task, event, trace, Some(&token))
                .await;
            if result.status != 401 || refreshed {
                return result;
            }
            // The endpoint no longer accepts the cached token: fetch a new one once.
            self.tokens.invalidate(&key);
            refreshed = true;
        }
    }

    async fn send(
        &self,
        subscription: &Subscription,
        task: &v1::DeliveryTask,
        event: &Event,
        trace: &TraceParent,
        oauth2_token: Option<&str>,
    ) -> AttemptResult {
        let fail = AttemptResult::failed;
        let url = match self.url_policy.check_url(&subscription.spec.url) {
            Ok(url) => url,
            Err(message) => return fail("url_policy", format!("url {message}")),
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let req = request::build(
            subscription,
            event,
            &task.delivery_id,
            now,
            &trace.child(),
            oauth2_token,
        );
        let method = if req.method == "PUT" {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let mut builder = self.client.request(method, url);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let mut response = match builder.body(req.body).send().await {
            Ok(r) => r,
            Err(e) => {
                let class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                // reqwest errors name the URL, which may carry a token in its
                // query: keep only the cause.
                return fail(class, describe(&e.without_url()));
            }
        };
        let status = response.status().as_u16();
        let mut excerpt = Vec::new();
        while excerpt.len() < RESPONSE_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        excerpt.truncate(RESPONSE_EXCERPT_BYTES);
        let success = (200..300).contains(&status);
        AttemptResult {
            status,
            error_class: if success { "" } else { "status" },
            error: if success {
                String::new()
            } else {
                format!("HTTP {status}")
            },
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_attempt(
        &self,
        task: &v1::DeliveryTask,
        event: &Event,
        attempt: u32,
        started: OffsetDateTime,
        duration: Duration,
        result: &AttemptResult,
        next: Option<OffsetDateTime>,
    ) {
        let outcome = if (200..300).contains(&result.status) {
            v1::AttemptOutcome::Succeeded
        } else {
            v1::AttemptOutcome::Failed
        };
        let record = v1::DeliveryAttempt {
            duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
            status_code: u32::from(result.status),
            error: result.error.clone(),
            response_excerpt: result.excerpt.clone(),
            next_attempt_at: next.map(timestamp),
            ..attempt_record(task, event, attempt, started, outcome, result.error_class)
        };
        self.publish_attempt(&record).await;
    }

    async fn record_skip(&self, task: &v1::DeliveryTask, event: &Event, attempt: u32, why: &str) {
        let now = OffsetDateTime::now_utc();
        let record = attempt_record(task, event, attempt, now, v1::AttemptOutcome::Skipped, why);
        self.publish_attempt(&record).await;
    }

    async fn publish_attempt(&self, record: &v1::DeliveryAttempt) {
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

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        assigned: &Assigned,
    ) -> Finished {
        let mut delay = Duration::from_millis(200);
        loop {
            match dead_letter::send(&self.producer, &self.topics.dead_letters(), message, reason)
                .await
            {
                Ok(_) => return Finished::Done,
                Err(e) => tracing::error!(error = %e, "dead letter not written; retrying"),
            }
            tokio::select! {
                _ = assigned.stop.cancelled() => return Finished::Interrupted,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// The fields every attempt record of `task` shares.
fn attempt_record(
    task: &v1::DeliveryTask,
    event: &Event,
    attempt: u32,
    started: OffsetDateTime,
    outcome: v1::AttemptOutcome,
    error_class: &str,
) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        delivery_id: task.delivery_id.clone(),
        subscription_id: task.subscription_id.clone(),
        tenant_id: task.tenant_id.clone(),
        event_id: event.id.clone(),
        event_name: event.name.clone(),
        attempt,
        started_at: Some(timestamp(started)),
        outcome: outcome as i32,
        error_class: error_class.to_owned(),
        ..Default::default()
    }
}

/// An error and its causes on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
