//! `/v1/events`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::Instrument as _;
use waybill_core::event::parse_event_request;
use waybill_kafka::headers;
use waybill_proto::Message;
use waybill_proto::convert::event_to_proto;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;

/// Where an accepted event was written.
#[derive(Debug, Serialize)]
pub struct Accepted {
    id: String,
    topic: String,
    partition: i32,
    offset: i64,
}

/// `POST /v1/events` → `202 {"id", "topic", "partition", "offset"}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    request_headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = read_json(&request_headers, body, state.config.max_event_bytes).await?;
    let accepted = parse_event_request(
        &body,
        &principal.tenant_id,
        &state.catalog,
        OffsetDateTime::now_utc(),
    )
    .map_err(ApiError::validation)?;
    let event = accepted.event;
    let topic = state.topics.domain(accepted.topic);

    // The request span continues the caller's trace; publishing is its child.
    let span = tracing::info_span!(
        "ingest.publish",
        otel.name = %format!("{topic} publish"),
        otel.kind = "producer",
        event_id = %event.id,
        event_name = %event.name,
        messaging.destination.name = %topic,
        messaging.kafka.partition = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
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
    span.record("messaging.kafka.partition", acked.partition);
    span.record("messaging.kafka.offset", acked.offset);
    waybill_runtime::metrics::Families::topic_counter(
        &state.metrics.get().events_published,
        &topic,
    );
    tracing::debug!(
        event_id = %event.id,
        event_name = %event.name,
        topic,
        partition = acked.partition,
        offset = acked.offset,
        "event accepted"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: event.id,
            topic,
            partition: acked.partition,
            offset: acked.offset,
        }),
    ))
}

/// `GET /v1/event_types` → the deployment's catalog, sorted by name.
pub(crate) async fn list_types(
    State(state): State<Arc<AppState>>,
    _principal: Principal,
) -> Json<serde_json::Value> {
    let event_types: Vec<serde_json::Value> = state
        .catalog
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "domain": e.domain,
                "topic": e.topic.name(),
                "description": e.description,
            })
        })
        .collect();
    Json(serde_json::json!({ "event_types": event_types }))
}
