//! The delivery history: a projection of `delivery_attempts`, bounded per
//! subscription and in time.
//!
//! Each record is one attempt (or a skip, or a "queued again" marker);
//! folded by delivery id, they give a delivery's status, its attempts and
//! where its task can be read again for a retry.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use waybill_core::event::format_rfc3339;
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::convert::from_timestamp;
use waybill_proto::v1;

/// Attempts kept per delivery (the latest).
pub const MAX_ATTEMPTS_KEPT: usize = 50;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Queued, not attempted yet.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// The last attempt failed (`next_attempt_at` says if another comes).
    Failed,
    /// Every attempt of its policy failed: on `deliveries.dlq`.
    Dead,
}

impl Status {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Dead => "dead",
        }
    }

    /// Parses the API's word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "dead" => Status::Dead,
            _ => return None,
        })
    }
}

/// One attempt as shown.
#[derive(Debug, Clone)]
pub struct AttemptView {
    attempt: u32,
    at: OffsetDateTime,
    status_code: u32,
    duration_ms: u32,
    error_class: String,
    error: String,
    response_excerpt: String,
}

/// One delivery of one event to one subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `msg_...`, the `webhook-id`.
    pub id: String,
    /// Its subscription.
    pub subscription_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Where it stands.
    pub status: Status,
    /// Where its task can be read again (retry).
    pub task: Option<v1::TaskRef>,
    event_id: String,
    event_name: String,
    attempts: VecDeque<AttemptView>,
    next_attempt_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Delivery {
    /// `GET /v1/deliveries/{id}`.
    pub fn view(&self) -> Value {
        let mut v = self.summary();
        v["attempts"] = self
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt,
                    "at": format_rfc3339(a.at),
                    "status_code": (a.status_code != 0).then_some(a.status_code),
                    "duration_ms": a.duration_ms,
                    "error_class": (!a.error_class.is_empty()).then_some(&a.error_class),
                    "error": (!a.error.is_empty()).then_some(&a.error),
                    "response_excerpt": a.response_excerpt,
                })
            })
            .collect();
        v
    }

    /// An item of `GET /v1/subscriptions/{id}/deliveries`.
    pub fn summary(&self) -> Value {
        let last = self.attempts.back();
        json!({
            "id": self.id,
            "subscription_id": self.subscription_id,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "status": self.status.as_str(),
            "attempt_count": self.attempts.len(),
            "last_attempt_at": last.map(|a| format_rfc3339(a.at)),
            "last_status_code": last.and_then(|a| (a.status_code != 0).then_some(a.status_code)),
            "next_attempt_at": self.next_attempt_at.map(format_rfc3339),
            "created_at": format_rfc3339(self.created_at),
            "updated_at": format_rfc3339(self.updated_at),
        })
    }
}

/// Deliveries by id, with each subscription's newest deliveries in order.
pub struct History {
    per_subscription: usize,
    retention: Duration,
    deliveries: HashMap<String, Delivery>,
    /// Delivery ids per subscription, oldest first.
    by_subscription: HashMap<String, VecDeque<String>>,
}

impl History {
    /// Keeps at most `per_subscription` deliveries per subscription, none
    /// older than `retention`.
    pub fn new(per_subscription: usize, retention: Duration) -> Self {
        Self {
            per_subscription,
            retention,
            deliveries: HashMap::new(),
            by_subscription: HashMap::new(),
        }
    }

    /// One delivery.
    pub fn get(&self, id: &str) -> Option<&Delivery> {
        self.deliveries.get(id)
    }

    /// A subscription's deliveries, newest first.
    pub fn of_subscription(&self, subscription_id: &str) -> impl Iterator<Item = &Delivery> {
        self.by_subscription
            .get(subscription_id)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .filter_map(|id| self.deliveries.get(id))
    }

    /// How many deliveries are kept.
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Folds one attempt record.
    pub fn apply_record(&mut self, record: v1::DeliveryAttempt) -> Result<(), String> {
        if record.delivery_id.is_empty() || record.subscription_id.is_empty() {
            return Err("attempt record without delivery or subscription id".into());
        }
        let at =
            from_timestamp(record.started_at.as_ref(), "started_at").map_err(|e| e.to_string())?;
        let outcome = v1::AttemptOutcome::try_from(record.outcome)
            .map_err(|_| format!("unknown attempt outcome {}", record.outcome))?;
        if !self.deliveries.contains_key(&record.delivery_id) {
            self.admit(&record, at);
        }
        let delivery = self
            .deliveries
            .get_mut(&record.delivery_id)
            .expect("admitted above");
        delivery.updated_at = delivery.updated_at.max(at);
        if record.task.is_some() {
            delivery.task = record.task.clone();
        }
        delivery.next_attempt_at = None;
        delivery.status = match outcome {
            v1::AttemptOutcome::Queued => Status::Pending,
            v1::AttemptOutcome::Succeeded => Status::Succeeded,
            v1::AttemptOutcome::Failed if record.dead => Status::Dead,
            v1::AttemptOutcome::Failed | v1::AttemptOutcome::Skipped => {
                delivery.next_attempt_at = record
                    .next_attempt_at
                    .as_ref()
                    .and_then(|t| from_timestamp(Some(t), "next_attempt_at").ok());
                Status::Failed
            }
            v1::AttemptOutcome::Unspecified => return Err("attempt outcome unspecified".into()),
        };
        if outcome != v1::AttemptOutcome::Queued {
            if delivery.attempts.len() >= MAX_ATTEMPTS_KEPT {
                delivery.attempts.pop_front();
            }
            delivery.attempts.push_back(AttemptView {
                attempt: record.attempt,
                at,
                status_code: record.status_code,
                duration_ms: record.duration_ms,
                error_class: record.error_class,
                error: record.error,
                response_excerpt: record.response_excerpt,
            });
        }
        Ok(())
    }

    /// Makes room for a new delivery of the record's subscription: drops
    /// its oldest beyond the bound or the retention, then adds it.
    fn admit(&mut self, record: &v1::DeliveryAttempt, at: OffsetDateTime) {
        let ids = self
            .by_subscription
            .entry(record.subscription_id.clone())
            .or_default();
        while let Some(oldest) = ids.front() {
            let expired = self
                .deliveries
                .get(oldest)
                .is_none_or(|d| at - d.updated_at > self.retention);
            if ids.len() < self.per_subscription && !expired {
                break;
            }
            let oldest = ids.pop_front().expect("front exists");
            self.deliveries.remove(&oldest);
        }
        ids.push_back(record.delivery_id.clone());
        self.deliveries.insert(
            record.delivery_id.clone(),
            Delivery {
                id: record.delivery_id.clone(),
                subscription_id: record.subscription_id.clone(),
                tenant_id: record.tenant_id.clone(),
                status: Status::Pending,
                task: None,
                event_id: record.event_id.clone(),
                event_name: record.event_name.clone(),
                attempts: VecDeque::new(),
                next_attempt_at: None,
                created_at: at,
                updated_at: at,
            },
        );
    }
}

impl Fold for History {
    fn apply(&mut self, _key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let Some(value) = value else {
            return Ok(());
        };
        let record = v1::DeliveryAttempt::decode(value).map_err(|e| e.to_string())?;
        self.apply_record(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waybill_proto::convert::timestamp;

    fn record(delivery: &str, outcome: v1::AttemptOutcome, minute: i64) -> v1::DeliveryAttempt {
        v1::DeliveryAttempt {
            delivery_id: delivery.into(),
            subscription_id: "sub_1".into(),
            tenant_id: "t".into(),
            event_id: format!("evt_{delivery}"),
            event_name: "freights.publication.accepted".into(),
            attempt: 1,
            started_at: Some(timestamp(
                OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute),
            )),
            outcome: outcome as i32,
            ..Default::default()
        }
    }

    #[test]
    fn status_follows_the_latest_record() {
        use v1::AttemptOutcome::*;
        let mut h = History::new(10, Duration::from_secs(3600));
        let mut failed = record("m1", Failed, 0);
        failed.status_code = 500;
        failed.next_attempt_at = Some(timestamp(OffsetDateTime::UNIX_EPOCH));
        h.apply_record(failed.clone()).unwrap();
        assert_eq!(h.get("m1").unwrap().status, Status::Failed);
        assert!(h.get("m1").unwrap().view()["next_attempt_at"].is_string());
        failed.next_attempt_at = None;
        failed.dead = true;
        failed.task = Some(v1::TaskRef {
            topic: "deliveries.dlq".into(),
            partition: 0,
            offset: 7,
        });
        h.apply_record(failed).unwrap();
        let d = h.get("m1").unwrap();
        assert_eq!(d.status, Status::Dead);
        assert_eq!(d.task.as_ref().unwrap().offset, 7);
        h.apply_record(record("m1", Queued, 2)).unwrap();
        assert_eq!(h.get("m1").unwrap().status, Status::Pending);
        h.apply_record(record("m1", Succeeded, 3)).unwrap();
        let view = h.get("m1").unwrap().view();
        assert_eq!(view["status"], "succeeded");
        assert_eq!(
            view["attempts"].as_array().unwrap().len(),
            3,
            "queued is no attempt"
        );
        assert_eq!(view["attempts"][0]["status_code"], 500);
    }

    #[test]
    fn bounded_per_subscription_and_in_time() {
        use v1::AttemptOutcome::*;
        let mut h = History::new(3, Duration::from_secs(600));
        for (i, minute) in [0, 1, 2, 3].into_iter().enumerate() {
            h.apply_record(record(&format!("m{i}"), Succeeded, minute))
                .unwrap();
        }
        let ids: Vec<&str> = h.of_subscription("sub_1").map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m3", "m2", "m1"], "newest first, oldest dropped");
        // Twenty minutes later, everything older than ten is gone.
        h.apply_record(record("m9", Succeeded, 23)).unwrap();
        let ids: Vec<&str> = h.of_subscription("sub_1").map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m9"]);
        assert_eq!(h.len(), 1);
    }
}
