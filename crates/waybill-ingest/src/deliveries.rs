//! Deliveries: their history, a retry of one, and the replay of a
//! subscription's events from the log.
//!
//! - `GET /v1/subscriptions/{id}/deliveries` and `GET /v1/deliveries/{id}`
//!   answer from the [`History`](crate::history::History) projection.
//! - `POST /v1/deliveries/{id}/retry` reads the delivery's task again from
//!   where the history says it is (its `deliveries` or retry record, or its
//!   dead letter), and queues it as a new first attempt with the same
//!   delivery id.
//! - `POST /v1/subscriptions/{id}/replay` scans the domain topics the
//!   subscription's event types live on, for records written within
//!   `since`..`until`, and queues a task for each event the subscription
//!   matches now (only those whose delivery failed or died, with
//!   `only_failed`). The scan runs in the background; its end is logged.
//!
//! A queued task gets a `queued` marker on `delivery_attempts`, so the
//! history shows it `pending` at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use rdkafka::Message as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use waybill_core::FieldError;
use waybill_core::catalog::DomainTopic;
use waybill_core::event::{Event, format_rfc3339};
use waybill_core::fields::Fields;
use waybill_core::ids;
use waybill_core::matching::matches;
use waybill_core::subscription::Subscription;
use waybill_kafka::log;
use waybill_proto::Message as _;
use waybill_proto::convert::{event_from_proto, timestamp};
use waybill_proto::v1;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::history::{self, Delivery, Search, Status};
use crate::idempotency::Idempotent;
use crate::replays;
use crate::subscriptions::find;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// The query parameters of both delivery lists.
const SEARCH_PARAMETERS: &[&str] = &[
    "entity_id",
    "event_name",
    "subscription_id",
    "status",
    "since",
    "until",
    "limit",
    "cursor",
];

/// Reads a delivery search of `tenant_id` (`subscription_id` is not a
/// parameter of the list of one subscription: its path names it).
fn parse_search(
    query: &HashMap<String, String>,
    tenant_id: &str,
    nested: bool,
) -> Result<Search, ApiError> {
    let mut errors = Vec::new();
    let mut search = Search {
        tenant_id: tenant_id.to_owned(),
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (key, value) in query {
        match key.as_str() {
            "status" => match Status::parse(value) {
                Some(s) => search.status = Some(s),
                None => errors.push(FieldError::new(
                    "status",
                    "must be `succeeded`, `failed`, `pending` or `dead`",
                )),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => search.limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                )),
            },
            "since" | "until" => match OffsetDateTime::parse(value, &Rfc3339) {
                Ok(t) if key == "since" => search.since = Some(t),
                Ok(t) => search.until = Some(t),
                Err(_) => errors.push(FieldError::new(
                    key.as_str(),
                    "must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z",
                )),
            },
            "cursor" => match history::parse_cursor(value) {
                Some(k) => search.after = Some(k),
                None => errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API gave (send `next_cursor` of the previous page as it is)",
                )),
            },
            "entity_id" if !value.is_empty() => search.entity_id = Some(value.clone()),
            "event_name" if !value.is_empty() => search.event_name = Some(value.clone()),
            "subscription_id" if !nested && !value.is_empty() => {
                search.subscription_id = Some(value.clone());
            }
            "entity_id" | "event_name" | "subscription_id" if !nested || key != "subscription_id" => {
                errors.push(FieldError::new(key.as_str(), "must not be empty"));
            }
            _ => {
                let accepted: Vec<&str> = SEARCH_PARAMETERS
                    .iter()
                    .copied()
                    .filter(|p| !nested || *p != "subscription_id")
                    .collect();
                errors.push(FieldError::new(
                    key.as_str(),
                    format!("unknown query parameter; accepted: {}", accepted.join(", ")),
                ));
            }
        }
    }
    if let (Some(since), Some(until)) = (search.since, search.until)
        && since > until
    {
        errors.push(FieldError::new("until", "must not be before `since`"));
    }
    if errors.is_empty() {
        Ok(search)
    } else {
        Err(ApiError::validation(errors))
    }
}

fn page(state: &AppState, search: &Search) -> Json<Value> {
    let history = state.history.read();
    let (deliveries, next) = history.search(search);
    let deliveries: Vec<Value> = deliveries.into_iter().map(Delivery::summary).collect();
    Json(json!({"deliveries": deliveries, "limit": search.limit, "next_cursor": next}))
}

/// `GET /v1/subscriptions/{id}/deliveries?status&limit&cursor&...`: newest
/// first by creation.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut search = parse_search(&query, &principal.tenant_id, true)?;
    let subscription = find(&state, &principal, &id)?;
    search.subscription_id = Some(subscription.id);
    Ok(page(&state, &search))
}

/// `GET /v1/deliveries?entity_id&event_name&subscription_id&status&since&until&limit&cursor`:
/// the tenant's deliveries across its subscriptions (also of deleted ones,
/// while the history keeps them), newest first by creation.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let search = parse_search(&query, &principal.tenant_id, false)?;
    Ok(page(&state, &search))
}

/// `GET /v1/deliveries/{id}`: the delivery with its attempts.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find_delivery(&state, &principal, &id)?.view()))
}

/// The caller's delivery `id`; another tenant's answers 404 too.
fn find_delivery(state: &AppState, principal: &Principal, id: &str) -> Result<Delivery, ApiError> {
    state
        .history
        .read()
        .get(id)
        .filter(|d| d.tenant_id == principal.tenant_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no delivery `{id}` (the history keeps each subscription's latest deliveries only)"
            ))
        })
}

/// `POST /v1/deliveries/{id}/retry` → `202`: delivered again now, with the
/// same `webhook-id`, also when it is dead.
pub(crate) async fn retry(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let route = format!("POST /v1/deliveries/{id}/retry");
    let idem = Idempotent::begin(&state, &principal, &headers, &route, b"").await?;
    if let Some(replay) = idem.replay() {
        return Ok(replay);
    }
    let result = async {
        let delivery = find_delivery(&state, &principal, &id)?;
        let subscription = find(&state, &principal, &delivery.subscription_id)?;
        if !subscription.is_deliverable() {
            return Err(ApiError::conflict(format!(
                "subscription `{}` is disabled; `reset` it first",
                subscription.id
            )));
        }
        let gone = || {
            ApiError::conflict(format!(
                "the task of delivery `{id}` is no longer in the log (retention); replay the subscription instead"
            ))
        };
        let place = delivery.task.clone().ok_or_else(gone)?;
        let kafka = state.kafka.clone();
        let read = tokio::task::spawn_blocking(move || {
            log::read_at(&kafka, &place.topic, place.partition, place.offset)
        })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::warn!(error = %e, delivery_id = %id, "cannot read the task back");
            ApiError::unavailable("Kafka did not return the delivery's task; retry shortly")
        })?
        .ok_or_else(gone)?;
        let mut task = read
            .payload()
            .and_then(|bytes| v1::DeliveryTask::decode(bytes).ok())
            .filter(|t| t.delivery_id == delivery.id)
            .ok_or_else(gone)?;
        let now = OffsetDateTime::now_utc();
        task.attempt = 1;
        task.not_before = None;
        task.created_at = Some(timestamp(now));
        task.redeliver = true;
        queue(&state, &task, true).await?;
        tracing::info!(delivery_id = %task.delivery_id, subscription_id = %task.subscription_id, "delivery queued again");
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"delivery_id": task.delivery_id, "status": "pending"})),
        ))
    }
    .await;
    idem.finish(result).await
}

/// Writes `task` to `deliveries`, then its `queued` marker on
/// `delivery_attempts`; with `visible`, waits until this instance's history
/// shows it (read-your-writes).
pub(crate) async fn queue(
    state: &AppState,
    task: &v1::DeliveryTask,
    visible: bool,
) -> Result<(), ApiError> {
    let acked = state
        .send(
            &state.topics.deliveries(),
            task.subscription_id.as_bytes(),
            Some(&task.encode_to_vec()),
        )
        .await?;
    let event = task.event.as_ref();
    let marker = v1::DeliveryAttempt {
        delivery_id: task.delivery_id.clone(),
        subscription_id: task.subscription_id.clone(),
        tenant_id: task.tenant_id.clone(),
        event_id: event.map(|e| e.id.clone()).unwrap_or_default(),
        event_name: event.map(|e| e.event_name.clone()).unwrap_or_default(),
        attempt: 0,
        started_at: task.created_at,
        created_at: task.created_at,
        entity_type: event
            .and_then(|e| e.entity.as_ref())
            .map(|e| e.r#type.clone())
            .unwrap_or_default(),
        entity_id: event
            .and_then(|e| e.entity.as_ref())
            .map(|e| e.id.clone())
            .unwrap_or_default(),
        outcome: v1::AttemptOutcome::Queued as i32,
        task: Some(v1::TaskRef {
            topic: state.topics.deliveries(),
            partition: acked.partition,
            offset: acked.offset,
        }),
        ..Default::default()
    };
    let topic = state.topics.delivery_attempts();
    let key = task.subscription_id.as_bytes();
    let value = marker.encode_to_vec();
    if visible {
        state
            .write_through(&state.history, &topic, key, Some(&value))
            .await
    } else {
        state.send(&topic, key, Some(&value)).await.map(|_| ())
    }
}

/// What a replay asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Events written at or after this time.
    pub since: OffsetDateTime,
    /// Events written at or before this time; `None` = up to now.
    pub until: Option<OffsetDateTime>,
    /// Only events whose delivery failed or died.
    pub only_failed: bool,
}

impl ReplayRequest {
    /// Parses and validates a replay body, every error at once.
    pub fn parse(body: &[u8], now: OffsetDateTime) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body).map_err(|e| vec![e])?;
        let time = |fields: &mut Fields, key: &str, required: bool| {
            let raw: Option<String> = if required {
                fields.required(key, "an RFC 3339 time, e.g. \"2026-12-01T08:00:00Z\"")
            } else {
                fields.optional(key, "an RFC 3339 time, e.g. \"2026-12-01T08:00:00Z\"")
            };
            let raw = raw?;
            match OffsetDateTime::parse(&raw, &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    fields.error(
                        key,
                        format!("`{raw}` is not an RFC 3339 time, e.g. \"2026-12-01T08:00:00Z\""),
                    );
                    None
                }
            }
        };
        let since = time(&mut fields, "since", true);
        let until = time(&mut fields, "until", false);
        let only_failed: Option<bool> = fields.optional("only_failed", "a boolean");
        if let Some(since) = since
            && since > now
        {
            fields.error(
                "since",
                "is in the future; nothing was written after it yet",
            );
        }
        if let (Some(since), Some(until)) = (since, until)
            && until < since
        {
            fields.error("until", "must not be before `since`");
        }
        let errors = fields.finish(&["since", "until", "only_failed"]);
        match since {
            Some(since) if errors.is_empty() => Ok(Self {
                since,
                until,
                only_failed: only_failed.unwrap_or(false),
            }),
            _ => Err(errors),
        }
    }
}

/// When a replay refused by the tenant's quota is worth sending again.
const REPLAY_QUOTA_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /v1/subscriptions/{id}/replay` → `202 {"replay_id"}`.
pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = read_json(&headers, body, 4096).await?;
    let route = format!("POST /v1/subscriptions/{id}/replay");
    let idem = Idempotent::begin(&state, &principal, &headers, &route, &body).await?;
    if let Some(replay) = idem.replay() {
        return Ok(replay);
    }
    let result = async {
        let request =
            ReplayRequest::parse(&body, OffsetDateTime::now_utc()).map_err(ApiError::validation)?;
        let subscription = find(&state, &principal, &id)?;
        if !subscription.is_deliverable() {
            return Err(ApiError::conflict(format!(
                "subscription `{id}` is disabled; `reset` it first"
            )));
        }
        let topics = domain_topics(&state, &subscription);
        let failed: Vec<String> = if request.only_failed {
            state
                .history
                .read()
                .of_subscription(&subscription.id)
                .filter(|d| matches!(d.status, Status::Failed | Status::Dead))
                .map(|d| d.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        // Checked and recorded under the gate: two requests of this
        // process cannot both take the tenant's last place.
        let _gate = state.quotas.replay_gate.lock().await;
        // Every job another replica started before this request counts.
        state.wait_current(&state.replays, "replay jobs").await?;
        let limit = state.quotas.limits(&principal.tenant_id).concurrent_replays;
        let running = state.replays.read().running_of(&principal.tenant_id);
        if running >= limit {
            return Err(state.quotas.refuse(
                crate::quotas::Kind::Replays,
                &principal.tenant_id,
                REPLAY_QUOTA_RETRY,
                format!(
                    "this tenant has {running} replays running, its quota is {limit}; wait for one to finish (GET /v1/replays/{{id}}) and send it again"
                ),
            ));
        }
        let mut job =
            replays::plan(&state, &subscription, &request, topics.clone(), failed).await?;
        if !replays::write(&state, &mut job).await? {
            return Err(ApiError::conflict(
                "the replay could not be recorded; send it again",
            ));
        }
        tracing::info!(
            replay_id = %job.id,
            subscription_id = %subscription.id,
            since = %format_rfc3339(request.since),
            until = ?request.until.map(format_rfc3339),
            only_failed = request.only_failed,
            topics = ?topics,
            partitions = job.ranges.len(),
            "replay started"
        );
        let replay_id = job.id.clone();
        tokio::spawn(replays::run(state.clone(), job, false));
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "replay_id": replay_id,
                "status_url": replays::status_url(&replay_id),
                "subscription_id": id,
                "since": format_rfc3339(request.since),
                "until": request.until.map(format_rfc3339),
                "only_failed": request.only_failed,
            })),
        ))
    }
    .await;
    idem.finish(result).await
}

/// The domain topics holding the event types the subscription selects.
fn domain_topics(state: &AppState, subscription: &Subscription) -> Vec<String> {
    let topics: BTreeSet<DomainTopic> = state
        .catalog
        .read()
        .catalog()
        .iter()
        .filter(|t| {
            subscription
                .spec
                .event_types
                .iter()
                .any(|p| p.matches(&t.name))
        })
        .map(|t| t.topic)
        .collect();
    topics.into_iter().map(|t| state.topics.domain(t)).collect()
}

/// The task replaying `message` to `subscription`, if the subscription
/// matches its event (and, with `failed`, its delivery failed).
pub(crate) fn replay_task(
    subscription: &Subscription,
    catalog: &waybill_core::catalog::Catalog,
    failed: Option<&HashSet<String>>,
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> Option<v1::DeliveryTask> {
    let record = v1::DomainEvent::decode(message.payload()?).ok()?;
    let event: Event = event_from_proto(record.clone(), catalog).ok()?;
    if event.tenant_id != subscription.tenant_id || !matches(subscription, &event) {
        return None;
    }
    let delivery_id = ids::delivery_id(&event.tenant_id, &event.id, &subscription.id);
    if failed.is_some_and(|f| !f.contains(&delivery_id)) {
        return None;
    }
    let now = OffsetDateTime::now_utc();
    Some(v1::DeliveryTask {
        delivery_id,
        subscription_id: subscription.id.clone(),
        tenant_id: event.tenant_id,
        event: Some(record),
        attempt: 1,
        not_before: None,
        created_at: Some(timestamp(now)),
        redeliver: true,
        replay_id: String::new(),
        strict_retry: false,
        resume: false,
        produced_at: None,
    })
}

/// `GET /v1/replays/{id}`: a replay job and how far it got.
pub(crate) async fn get_replay(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .replays
        .read()
        .get(&id)
        .filter(|j| j.tenant_id == principal.tenant_id)
        .map(|j| Json(replays::view(j)))
        .ok_or_else(|| ApiError::not_found(format!("no replay `{id}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn replay_requests_are_validated_at_once() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let ok = ReplayRequest::parse(
            br#"{"since": "2026-12-01T08:00:00Z", "until": "2026-12-01T09:00:00+01:00", "only_failed": true}"#,
            now,
        )
        .unwrap();
        assert_eq!(ok.since, datetime!(2026-12-01 8:00 UTC));
        assert_eq!(ok.until, Some(datetime!(2026-12-01 8:00 UTC)));
        assert!(ok.only_failed);

        let errors = ReplayRequest::parse(
            br#"{"since": "yesterday", "until": 3, "only_failed": "yes", "from": 1}"#,
            now,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields.len(), 4, "{errors:?}");
        for f in ["since", "until", "only_failed", "from"] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        let errors = ReplayRequest::parse(br#"{}"#, now).unwrap_err();
        assert_eq!(errors[0].field, "since");
        let errors = ReplayRequest::parse(
            br#"{"since": "2026-12-01T11:00:00Z", "until": "2026-12-01T10:00:00Z"}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "until");
        let errors =
            ReplayRequest::parse(br#"{"since": "2026-12-02T00:00:00Z"}"#, now).unwrap_err();
        assert!(errors[0].message.contains("future"));
    }
}
