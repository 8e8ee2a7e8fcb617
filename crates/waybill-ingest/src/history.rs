//! The delivery history: a projection of `delivery_attempts`, bounded per
//! subscription and in time.
//!
//! Each record is one attempt (or a skip, or a "queued again" marker);
//! folded by delivery id, they give a delivery's status, its attempts and
//! where its task can be read again for a retry.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use serde_json::Value;
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
    /// Every status.
    pub const ALL: [Status; 4] = [
        Status::Succeeded,
        Status::Failed,
        Status::Pending,
        Status::Dead,
    ];

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
    /// The event's entity kind, `""` when not known.
    pub entity_type: String,
    /// The event's entity id, `""` when not known.
    pub entity_id: String,
    attempts: VecDeque<AttemptView>,
    next_attempt_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

/// An attempt as the API shows it.
#[derive(Debug, serde::Serialize)]
pub struct AttemptAnswer<'a> {
    attempt: u32,
    at: String,
    status_code: Option<u32>,
    duration_ms: u32,
    error_class: Option<&'a str>,
    error: Option<&'a str>,
    response_excerpt: &'a str,
}

/// Every field of [`AttemptAnswer`].
pub const ATTEMPT_FIELDS: &[&str] = &[
    "attempt",
    "at",
    "status_code",
    "duration_ms",
    "error_class",
    "error",
    "response_excerpt",
];

/// A delivery as the lists show it (and, with its attempts, as `GET
/// /v1/deliveries/{id}` does).
#[derive(Debug, serde::Serialize)]
pub struct DeliveryAnswer<'a> {
    id: &'a str,
    subscription_id: &'a str,
    event_id: &'a str,
    event_name: &'a str,
    status: &'static str,
    attempt_count: usize,
    last_attempt_at: Option<String>,
    last_status_code: Option<u32>,
    next_attempt_at: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptAnswer<'a>>>,
}

/// Every field of a [`DeliveryAnswer`] in a list (`attempts` is added by
/// `GET /v1/deliveries/{id}`).
pub const SUMMARY_FIELDS: &[&str] = &[
    "id",
    "subscription_id",
    "event_id",
    "event_name",
    "status",
    "attempt_count",
    "last_attempt_at",
    "last_status_code",
    "next_attempt_at",
    "created_at",
    "updated_at",
];

impl Delivery {
    fn answer(&self, with_attempts: bool) -> DeliveryAnswer<'_> {
        let last = self.attempts.back();
        DeliveryAnswer {
            id: &self.id,
            subscription_id: &self.subscription_id,
            event_id: &self.event_id,
            event_name: &self.event_name,
            status: self.status.as_str(),
            attempt_count: self.attempts.len(),
            last_attempt_at: last.map(|a| format_rfc3339(a.at)),
            last_status_code: last.and_then(|a| (a.status_code != 0).then_some(a.status_code)),
            next_attempt_at: self.next_attempt_at.map(format_rfc3339),
            created_at: format_rfc3339(self.created_at),
            updated_at: format_rfc3339(self.updated_at),
            attempts: with_attempts.then(|| {
                self.attempts
                    .iter()
                    .map(|a| AttemptAnswer {
                        attempt: a.attempt,
                        at: format_rfc3339(a.at),
                        status_code: (a.status_code != 0).then_some(a.status_code),
                        duration_ms: a.duration_ms,
                        error_class: (!a.error_class.is_empty()).then_some(a.error_class.as_str()),
                        error: (!a.error.is_empty()).then_some(a.error.as_str()),
                        response_excerpt: &a.response_excerpt,
                    })
                    .collect()
            }),
        }
    }

    /// `GET /v1/deliveries/{id}`.
    pub fn view(&self) -> Value {
        serde_json::to_value(self.answer(true)).expect("a delivery serialises")
    }

    /// An item of the delivery lists.
    pub fn summary(&self) -> Value {
        serde_json::to_value(self.answer(false)).expect("a delivery serialises")
    }
}

/// Where a delivery sorts: when it was created, then its id.
pub type Key = (i128, String);

fn key_of(d: &Delivery) -> Key {
    (d.created_at.unix_timestamp_nanos(), d.id.clone())
}

/// The `cursor` of a page that ends at `key` (the next page starts after
/// it).
pub fn cursor(key: &Key) -> String {
    format!("c{}_{}", key.0, key.1)
}

/// Reads a `cursor` back.
pub fn parse_cursor(text: &str) -> Option<Key> {
    let (nanos, id) = text.strip_prefix('c')?.split_once('_')?;
    if id.is_empty() {
        return None;
    }
    Some((nanos.parse().ok()?, id.to_owned()))
}

/// A search of one tenant's deliveries (`GET /v1/deliveries`).
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The tenant.
    pub tenant_id: String,
    /// Only this subscription's.
    pub subscription_id: Option<String>,
    /// Only deliveries of events about this entity.
    pub entity_id: Option<String>,
    /// Only this event.
    pub event_name: Option<String>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Created at or after.
    pub since: Option<OffsetDateTime>,
    /// Created at or before.
    pub until: Option<OffsetDateTime>,
    /// After this place of the previous page.
    pub after: Option<Key>,
    /// At most this many.
    pub limit: usize,
}

/// Deliveries by id, ordered by creation per subscription, per tenant and
/// per entity.
pub struct History {
    per_subscription: usize,
    retention: Duration,
    deliveries: HashMap<String, Delivery>,
    by_subscription: HashMap<String, BTreeSet<Key>>,
    by_tenant: HashMap<String, BTreeSet<Key>>,
    by_entity: HashMap<(String, String), BTreeSet<Key>>,
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
            by_tenant: HashMap::new(),
            by_entity: HashMap::new(),
        }
    }

    /// One delivery.
    pub fn get(&self, id: &str) -> Option<&Delivery> {
        self.deliveries.get(id)
    }

    /// A subscription's deliveries, newest first (by creation).
    pub fn of_subscription(&self, subscription_id: &str) -> impl Iterator<Item = &Delivery> {
        self.by_subscription
            .get(subscription_id)
            .into_iter()
            .flat_map(|keys| keys.iter().rev())
            .filter_map(|(_, id)| self.deliveries.get(id))
    }

    /// A page of a search, newest first, and the cursor of the next page
    /// (`None` on the last one).
    pub fn search(&self, q: &Search) -> (Vec<&Delivery>, Option<String>) {
        let keys = match (&q.entity_id, &q.subscription_id) {
            (Some(entity), _) => self.by_entity.get(&(q.tenant_id.clone(), entity.clone())),
            (None, Some(sub)) => self.by_subscription.get(sub),
            (None, None) => self.by_tenant.get(&q.tenant_id),
        };
        let Some(keys) = keys else {
            return (Vec::new(), None);
        };
        let until = q
            .until
            .map(|t| (t.unix_timestamp_nanos() + 1, String::new()));
        let upper = match (&q.after, until) {
            (Some(a), Some(u)) => Bound::Excluded(a.clone().min(u)),
            (Some(a), None) => Bound::Excluded(a.clone()),
            (None, Some(u)) => Bound::Excluded(u),
            (None, None) => Bound::Unbounded,
        };
        let since = q.since.map(OffsetDateTime::unix_timestamp_nanos);
        let mut page = Vec::new();
        let mut last = None;
        for key in keys.range((Bound::Unbounded, upper)).rev() {
            if since.is_some_and(|s| key.0 < s) {
                break;
            }
            let Some(d) = self.deliveries.get(&key.1) else {
                continue;
            };
            let selected = d.tenant_id == q.tenant_id
                && q.subscription_id
                    .as_ref()
                    .is_none_or(|s| *s == d.subscription_id)
                && q.event_name.as_ref().is_none_or(|n| *n == d.event_name)
                && q.status.is_none_or(|s| s == d.status);
            if !selected {
                continue;
            }
            if page.len() == q.limit {
                return (page, last.map(cursor));
            }
            page.push(d);
            last = Some(key);
        }
        (page, None)
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
        // Records written before deliveries carried their creation time
        // stand for it with their own.
        let created = match record.created_at.as_ref() {
            Some(t) => from_timestamp(Some(t), "created_at").map_err(|e| e.to_string())?,
            None => at,
        };
        let outcome = v1::AttemptOutcome::try_from(record.outcome)
            .map_err(|_| format!("unknown attempt outcome {}", record.outcome))?;
        if !self.deliveries.contains_key(&record.delivery_id) {
            self.admit(&record, created, at);
        } else {
            self.refine(&record, created);
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

    /// A later record of a known delivery may know better when it was
    /// created (records arrive out of order) or what it is about.
    fn refine(&mut self, record: &v1::DeliveryAttempt, created: OffsetDateTime) {
        let Some(d) = self.deliveries.get(&record.delivery_id) else {
            return;
        };
        let earlier = created < d.created_at;
        let entity = d.entity_id.is_empty() && !record.entity_id.is_empty();
        if !earlier && !entity {
            return;
        }
        let mut d = self.unindex(&record.delivery_id).expect("known");
        if earlier {
            d.created_at = created;
        }
        if entity {
            d.entity_type = record.entity_type.clone();
            d.entity_id = record.entity_id.clone();
        }
        self.index(d);
    }

    fn index(&mut self, d: Delivery) {
        let key = key_of(&d);
        self.by_subscription
            .entry(d.subscription_id.clone())
            .or_default()
            .insert(key.clone());
        self.by_tenant
            .entry(d.tenant_id.clone())
            .or_default()
            .insert(key.clone());
        if !d.entity_id.is_empty() {
            self.by_entity
                .entry((d.tenant_id.clone(), d.entity_id.clone()))
                .or_default()
                .insert(key);
        }
        self.deliveries.insert(d.id.clone(), d);
    }

    fn unindex(&mut self, id: &str) -> Option<Delivery> {
        let d = self.deliveries.remove(id)?;
        let key = key_of(&d);
        let take = |set: Option<&mut BTreeSet<Key>>| {
            set.is_some_and(|set| {
                set.remove(&key);
                set.is_empty()
            })
        };
        if take(self.by_subscription.get_mut(&d.subscription_id)) {
            self.by_subscription.remove(&d.subscription_id);
        }
        if take(self.by_tenant.get_mut(&d.tenant_id)) {
            self.by_tenant.remove(&d.tenant_id);
        }
        let entity = (d.tenant_id.clone(), d.entity_id.clone());
        if take(self.by_entity.get_mut(&entity)) {
            self.by_entity.remove(&entity);
        }
        Some(d)
    }

    /// Makes room for a new delivery of the record's subscription: drops
    /// its oldest beyond the bound or the retention, then adds it.
    fn admit(&mut self, record: &v1::DeliveryAttempt, created: OffsetDateTime, at: OffsetDateTime) {
        while let Some(keys) = self.by_subscription.get(&record.subscription_id) {
            let Some((_, oldest)) = keys.first() else {
                break;
            };
            let expired = self
                .deliveries
                .get(oldest)
                .is_none_or(|d| at - d.updated_at > self.retention);
            if keys.len() < self.per_subscription && !expired {
                break;
            }
            let oldest = oldest.clone();
            if self.unindex(&oldest).is_none() {
                // An index entry without its delivery: drop it.
                if let Some(keys) = self.by_subscription.get_mut(&record.subscription_id) {
                    keys.pop_first();
                }
            }
        }
        self.index(Delivery {
            id: record.delivery_id.clone(),
            subscription_id: record.subscription_id.clone(),
            tenant_id: record.tenant_id.clone(),
            status: Status::Pending,
            task: None,
            event_id: record.event_id.clone(),
            event_name: record.event_name.clone(),
            entity_type: record.entity_type.clone(),
            entity_id: record.entity_id.clone(),
            attempts: VecDeque::new(),
            next_attempt_at: None,
            created_at: created,
            updated_at: at,
        });
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
    fn the_answers_have_exactly_their_documented_fields() {
        let mut h = History::new(10, Duration::from_secs(3600));
        h.apply_record(record("m1", v1::AttemptOutcome::Succeeded, 0))
            .unwrap();
        let d = h.get("m1").unwrap();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let sorted = |f: &[&str]| {
            let mut f: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
            f.sort();
            f
        };
        assert_eq!(keys(&d.summary()), sorted(SUMMARY_FIELDS));
        let view = d.view();
        let mut full = SUMMARY_FIELDS.to_vec();
        full.push("attempts");
        assert_eq!(keys(&view), sorted(&full));
        assert_eq!(keys(&view["attempts"][0]), sorted(ATTEMPT_FIELDS));
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

    fn made(
        delivery: &str,
        sub: &str,
        entity: &str,
        created: i64,
        started: i64,
    ) -> v1::DeliveryAttempt {
        let minute = |m: i64| {
            Some(timestamp(
                OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(m),
            ))
        };
        v1::DeliveryAttempt {
            subscription_id: sub.into(),
            entity_type: "freight".into(),
            entity_id: entity.into(),
            created_at: minute(created),
            started_at: minute(started),
            ..record(delivery, v1::AttemptOutcome::Succeeded, started)
        }
    }

    fn ids<'a>(page: &[&'a Delivery]) -> Vec<&'a str> {
        page.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn ordered_by_creation_whatever_order_the_records_arrive_in() {
        let mut h = History::new(100, Duration::from_secs(36_000));
        // Created 1, 2, 3; the first one's attempt is folded last (it was
        // retried), the third's record knows its creation time late.
        h.apply_record(made("m2", "sub_1", "F-1", 2, 2)).unwrap();
        h.apply_record(made("m3", "sub_1", "F-1", 9, 9)).unwrap();
        h.apply_record(made("m1", "sub_1", "F-1", 1, 8)).unwrap();
        h.apply_record(made("m3", "sub_1", "F-1", 3, 10)).unwrap();
        let listed: Vec<&str> = h.of_subscription("sub_1").map(|d| d.id.as_str()).collect();
        assert_eq!(listed, ["m3", "m2", "m1"]);
        let q = Search {
            tenant_id: "t".into(),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ids(&h.search(&q).0), ["m3", "m2", "m1"]);
    }

    #[test]
    fn search_by_entity_across_subscriptions_with_pages() {
        let mut h = History::new(100, Duration::from_secs(36_000));
        for i in 0..7 {
            let sub = if i % 2 == 0 { "sub_a" } else { "sub_b" };
            let entity = if i < 5 { "F-1" } else { "F-2" };
            h.apply_record(made(&format!("m{i}"), sub, entity, i, i))
                .unwrap();
        }
        let mut q = Search {
            tenant_id: "t".into(),
            entity_id: Some("F-1".into()),
            limit: 2,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let (page, next) = h.search(&q);
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            let Some(next) = next else { break };
            q.after = Some(parse_cursor(&next).unwrap());
        }
        assert_eq!(seen, ["m4", "m3", "m2", "m1", "m0"]);
        // Filters combine; the window is inclusive.
        let q = Search {
            tenant_id: "t".into(),
            entity_id: Some("F-1".into()),
            subscription_id: Some("sub_a".into()),
            since: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(1)),
            until: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(4)),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ids(&h.search(&q).0), ["m4", "m2"]);
        let other = Search {
            tenant_id: "t2".into(),
            entity_id: Some("F-1".into()),
            limit: 10,
            ..Default::default()
        };
        assert!(h.search(&other).0.is_empty(), "another tenant sees nothing");
        assert_eq!(parse_cursor("garbage"), None);
        assert_eq!(
            parse_cursor(&cursor(&(5, "m_1".into()))),
            Some((5, "m_1".into()))
        );
    }
}
