//! `/v1/events`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::Instrument as _;
use waybill_core::FieldError;
use waybill_core::catalog::ExtraEventType;
use waybill_core::event::{AcceptedEvent, parse_event_request};
use waybill_core::fields::Fields;
use waybill_kafka::headers;
use waybill_proto::Message;
use waybill_proto::convert::event_to_proto;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::tenants::Operator;

/// Where an accepted event was written.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    id: String,
    topic: String,
    partition: i32,
    offset: i64,
}

/// Client event ids (per tenant) seen within the dedup window, with the
/// answer of their first acceptance. Bounded: beyond the capacity the least
/// recently used are forgotten first.
pub type SeenIds = moka::future::Cache<(String, String), Accepted>;

/// The cache of client event ids.
pub fn seen_ids(window: Duration, capacity: u64) -> SeenIds {
    moka::future::Cache::builder()
        .max_capacity(capacity)
        .time_to_live(window)
        .build()
}

/// `POST /v1/events` → `202 {"id", "topic", "partition", "offset"}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    request_headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = read_json(&request_headers, body, state.config.max_event_bytes).await?;
    let accepted = {
        let catalog = state.catalog.read();
        parse_event_request(
            &body,
            &principal.tenant_id,
            catalog.catalog(),
            OffsetDateTime::now_utc(),
        )
    }
    .map_err(ApiError::validation)?;
    check_callback(&state, &accepted, &principal.key_id).await?;
    Ok((StatusCode::ACCEPTED, Json(accept(&state, accepted).await?)))
}

/// `POST /v1/events/batch {"events": [...]}` → `202 {"results": [...],
/// "accepted", "refused"}`: each event is validated and published on its
/// own (a refused one does not stop the others); its result is where it was
/// written, or the error it would have had alone. The events are published
/// concurrently, so the producer batches them.
pub(crate) async fn create_batch(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    request_headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = read_json(&request_headers, body, state.config.max_batch_bytes).await?;
    let items = parse_batch(&body, state.config.max_batch_events)?;
    let now = OffsetDateTime::now_utc();
    let limit = state.config.max_event_bytes;
    let results = futures::future::join_all(items.iter().map(|item| {
        let state = &state;
        let tenant = &principal.tenant_id;
        let key_id = &principal.key_id;
        async move {
            if item.get().len() > limit {
                return Err(ApiError::payload_too_large(format!(
                    "this event is larger than the limit of {limit} bytes"
                )));
            }
            let accepted = {
                let catalog = state.catalog.read();
                parse_event_request(item.get().as_bytes(), tenant, catalog.catalog(), now)
            }
            .map_err(ApiError::validation)?;
            check_callback(state, &accepted, key_id).await?;
            accept(state, accepted).await
        }
    }))
    .await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let results: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(e) => e.to_json(),
        })
        .collect();
    let refused = results.len() - accepted;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"results": results, "accepted": accepted, "refused": refused})),
    ))
}

/// The `events` array of a batch body, each item still raw.
fn parse_batch(body: &[u8], max: usize) -> Result<Vec<Box<serde_json::value::RawValue>>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        events: Vec<Box<serde_json::value::RawValue>>,
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|e| {
        let field = if e.is_data() { "events" } else { "body" };
        ApiError::validation(vec![waybill_core::FieldError::new(
            field,
            format!("expected {{\"events\": [event, ...]}} ({e})"),
        )])
    })?;
    if batch.events.is_empty() || batch.events.len() > max {
        return Err(ApiError::validation(vec![waybill_core::FieldError::new(
            "events",
            format!(
                "must hold 1 to {max} events, not {}; split larger batches",
                batch.events.len()
            ),
        )]));
    }
    // An item that is not even an object is a malformed batch (nothing is
    // published); an object with invalid fields gets its error in `results`.
    let shapeless: Vec<waybill_core::FieldError> = batch
        .events
        .iter()
        .enumerate()
        .filter(|(_, raw)| !raw.get().trim_start().starts_with('{'))
        .map(|(i, _)| {
            waybill_core::FieldError::new(format!("events[{i}]"), "must be an event object")
        })
        .collect();
    if !shapeless.is_empty() {
        return Err(ApiError::validation(shapeless));
    }
    Ok(batch.events)
}

/// An event's `callback_url` must pass the URL policy (as a subscription's
/// URL), and the tenant's callbacks subscription (its secret signs the
/// callbacks) must exist before the event is published.
async fn check_callback(
    state: &AppState,
    accepted: &AcceptedEvent,
    key_id: &str,
) -> Result<(), ApiError> {
    let Some(url) = &accepted.event.callback_url else {
        return Ok(());
    };
    state.url_policy.check_url(url).map_err(|message| {
        ApiError::validation(vec![waybill_core::FieldError::new("callback_url", message)])
    })?;
    crate::subscriptions::check_resolved(state, url, "callback_url").await?;
    crate::subscriptions::ensure_callbacks(state, &accepted.event.tenant_id, key_id).await?;
    Ok(())
}

/// Publishes a valid event, once per client id within the dedup window (a
/// repeat, even a concurrent one, gets the first answer).
async fn accept(state: &Arc<AppState>, accepted: AcceptedEvent) -> Result<Accepted, ApiError> {
    if !accepted.client_id {
        return publish(state, accepted).await;
    }
    let key = (accepted.event.tenant_id.clone(), accepted.event.id.clone());
    let state_c = state.clone();
    state
        .event_ids
        .try_get_with(key, async move { publish(&state_c, accepted).await })
        .await
        .map_err(|e| (*e).clone())
}

/// Publishes one event to its domain topic, keyed by its entity.
async fn publish(state: &AppState, accepted: AcceptedEvent) -> Result<Accepted, ApiError> {
    let event = accepted.event;
    let topic = state.topics.domain(accepted.topic);

    // The request span continues the caller's trace; publishing is its child.
    // A messaging producer span by the semantic conventions.
    let span = tracing::info_span!(
        "ingest.publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.name = "publish",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        waybill.event_id = %event.id,
        waybill.event_name = %event.name,
        waybill.tenant_id = %event.tenant_id,
    );
    let trace = waybill_runtime::telemetry::propagate(&span, None);
    let record = event_to_proto(&event).encode_to_vec();
    let acked = state
        .producer
        .send(
            &topic,
            event.partition_key().as_bytes(),
            Some(&record),
            headers::standard(waybill_proto::SCHEMA_VERSION, Some(&trace)),
        )
        .instrument(span.clone())
        .await
        .map_err(|e| {
            tracing::error!(parent: &span, error = %e, topic, "cannot publish event");
            ApiError::unavailable("Kafka did not accept the event; retry shortly")
        })?;
    span.record(
        "messaging.destination.partition.id",
        tracing::field::display(acked.partition),
    );
    span.record("messaging.kafka.offset", acked.offset);
    waybill_runtime::metrics::Families::topic_counter(
        &state.metrics.get().events_published,
        &topic,
    );
    tracing::debug!(
        parent: &span,
        event_id = %event.id,
        event_name = %event.name,
        topic,
        partition = acked.partition,
        offset = acked.offset,
        "event accepted"
    );
    Ok(Accepted {
        id: event.id,
        topic,
        partition: acked.partition,
        offset: acked.offset,
    })
}

/// `GET /v1/event_types` → the deployment's catalog, sorted by name.
pub(crate) async fn list_types(
    State(state): State<Arc<AppState>>,
    _principal: Principal,
) -> Json<serde_json::Value> {
    let catalog = state.catalog.read();
    let event_types: Vec<serde_json::Value> = catalog.catalog().iter().map(type_view).collect();
    Json(serde_json::json!({ "event_types": event_types }))
}

/// `POST /v1/event_types` (operator) → `201` the added type, on the
/// compacted `event_types` topic every service follows.
pub(crate) async fn add_type(
    State(state): State<Arc<AppState>>,
    _: Operator,
    request_headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = read_json(&request_headers, body, 16 * 1024).await?;
    let mut f = Fields::parse(&body).map_err(|e| ApiError::validation(vec![e]))?;
    let name: Option<String> = f.required("name", "a string");
    let topic: Option<String> = f.required("topic", "a string, a domain topic");
    let description: Option<String> = f.optional("description", "a string");
    let domain: Option<String> = f.optional("domain", "a string");
    if name.as_ref().is_some_and(|n| n.len() > 255) {
        f.error("name", "must be at most 255 characters");
    }
    if description.as_ref().is_some_and(|d| d.len() > 1024) {
        f.error("description", "must be at most 1024 characters");
    }
    let errors = f.finish(&["name", "topic", "description", "domain"]);
    let (Some(name), Some(topic), true) = (name, topic, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let extra = ExtraEventType {
        name,
        topic,
        description: description.unwrap_or_default(),
        domain,
    };
    let _guard = state.write_lock(&extra.name).await;
    let checked = state
        .catalog
        .read()
        .catalog()
        .clone()
        .with_extra(std::slice::from_ref(&extra));
    if let Err(problems) = checked {
        let errors: Vec<FieldError> = problems
            .iter()
            .map(|p| {
                // `catalog.event_types[0].name: ...` → field `name`.
                let (path, message) = p.split_once(": ").unwrap_or(("", p));
                let field = path.rsplit('.').next().unwrap_or("name");
                FieldError::new(field, message)
            })
            .collect();
        if errors
            .iter()
            .any(|e| e.message.contains("already in the catalog"))
        {
            return Err(ApiError::conflict(format!(
                "`{}` is already in the catalog",
                extra.name
            )));
        }
        return Err(ApiError::validation(errors));
    }
    let record = waybill_runtime::catalog::record(&extra).encode_to_vec();
    state
        .write_through(
            &state.catalog,
            &state.topics.event_types(),
            extra.name.as_bytes(),
            Some(&record),
        )
        .await?;
    tracing::info!(event_type = %extra.name, topic = %extra.topic, "event type added");
    let view = {
        let catalog = state.catalog.read();
        catalog.catalog().get(&extra.name).map(type_view)
    };
    Ok((StatusCode::CREATED, Json(view.unwrap_or_default())))
}

/// `DELETE /v1/event_types/{name}` (operator): only types added through
/// the API; events of that type are refused from then on, subscriptions
/// naming it keep their pattern.
pub(crate) async fn delete_type(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _guard = state.write_lock(&name).await;
    let (added, known) = {
        let catalog = state.catalog.read();
        (
            catalog.is_added(&name),
            catalog.catalog().get(&name).is_some(),
        )
    };
    if !added {
        return Err(if known {
            ApiError::conflict(format!(
                "`{name}` is built in or configured; only types added through the API can be removed"
            ))
        } else {
            ApiError::not_found(format!("no event type `{name}`"))
        });
    }
    state
        .write_through(
            &state.catalog,
            &state.topics.event_types(),
            name.as_bytes(),
            None,
        )
        .await?;
    tracing::info!(event_type = %name, "event type removed");
    Ok(StatusCode::NO_CONTENT)
}

fn type_view(e: &waybill_core::catalog::EventType) -> serde_json::Value {
    serde_json::json!({
        "name": e.name,
        "domain": e.domain,
        "topic": e.topic.name(),
        "description": e.description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_item_that_is_not_an_object_refuses_the_whole_batch() {
        let e = parse_batch(br#"{"events": [{"event_name": "x"}, [null, null], 3]}"#, 10)
            .expect_err("malformed");
        let json = e.to_json();
        assert_eq!(json["error"]["code"], "validation_failed");
        assert_eq!(json["error"]["details"][0]["field"], "events[1]");
        assert_eq!(json["error"]["details"][1]["field"], "events[2]");
        // Objects with invalid fields are judged one by one later.
        assert_eq!(
            parse_batch(br#"{"events": [{}, {"x": 1}]}"#, 10)
                .unwrap()
                .len(),
            2
        );
    }
}
