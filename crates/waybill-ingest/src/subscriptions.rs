//! `/v1/subscriptions`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use waybill_core::event::format_rfc3339;
use waybill_core::ids;
use waybill_core::signing::SigningSecret;
use waybill_core::subscription::{Status, Subscription, parse_new_subscription};
use waybill_kafka::headers;
use waybill_proto::Message;
use waybill_proto::convert::subscription_to_proto;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;

/// Largest subscription body accepted.
const MAX_SUBSCRIPTION_BYTES: usize = 64 * 1024;

/// A subscription as the API returns it.
#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    id: String,
    tenant_id: String,
    name: String,
    url: String,
    method: &'static str,
    event_types: Vec<String>,
    enabled: bool,
    status: &'static str,
    disabled_reason: Option<String>,
    headers: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    created_by: String,
    updated_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
}

impl SubscriptionView {
    fn of(s: &Subscription) -> Self {
        // A subscription switched off by its owner reads as disabled.
        let (status, disabled_reason) = if !s.enabled && s.status != Status::Disabled {
            (Status::Disabled, Some("disabled by the user".to_owned()))
        } else {
            (s.status, s.disabled_reason.clone())
        };
        Self {
            id: s.id.clone(),
            tenant_id: s.tenant_id.clone(),
            name: s.name.clone(),
            url: s.url.clone(),
            method: s.method.as_str(),
            event_types: s.event_types.iter().map(ToString::to_string).collect(),
            enabled: s.enabled,
            status: status.as_str(),
            disabled_reason,
            headers: s.headers.clone(),
            metadata: s.metadata.clone(),
            created_at: format_rfc3339(s.created_at),
            updated_at: format_rfc3339(s.updated_at),
            created_by: s.created_by.clone(),
            updated_by: s.updated_by.clone(),
            signing_secret: None,
        }
    }
}

/// `POST /v1/subscriptions` → `201` with the subscription and its signing secret.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let body = read_json(&headers, body, MAX_SUBSCRIPTION_BYTES).await?;
    let new = parse_new_subscription(&body, &state.catalog, &state.url_policy)
        .map_err(ApiError::validation)?;
    let now = OffsetDateTime::now_utc();
    let subscription = Subscription {
        id: ids::new_subscription_id(),
        tenant_id: principal.tenant_id.clone(),
        name: new.name,
        url: new.url,
        method: new.method,
        event_types: new.event_types,
        enabled: new.enabled,
        status: Status::Active,
        disabled_reason: None,
        headers: new.headers,
        metadata: new.metadata,
        signing_secret: SigningSecret::generate(),
        created_at: now,
        updated_at: now,
        created_by: principal.key_id.clone(),
        updated_by: principal.key_id,
        revision: 1,
    };
    publish(&state, &subscription).await?;
    tracing::info!(
        subscription_id = %subscription.id,
        tenant_id = %subscription.tenant_id,
        "subscription created"
    );
    let mut view = SubscriptionView::of(&subscription);
    view.signing_secret = Some(subscription.signing_secret.expose());
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/subscriptions/{id}`, from this service's projection.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let projection = state.subscriptions.read();
    projection
        .get(&id)
        .filter(|s| s.tenant_id == principal.tenant_id)
        .map(|s| Json(SubscriptionView::of(s)))
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))
}

/// Writes the full state of `subscription` to the compacted topic and waits
/// until this service's projection has applied it.
async fn publish(state: &AppState, subscription: &Subscription) -> Result<(), ApiError> {
    let record = subscription_to_proto(subscription, &state.keys).encode_to_vec();
    let acked = state
        .producer
        .send(
            &state.topics.subscriptions(),
            subscription.id.as_bytes(),
            Some(&record),
            headers::standard(waybill_proto::SCHEMA_VERSION, None),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot publish subscription");
            ApiError::unavailable("Kafka did not accept the write; retry shortly")
        })?;
    state
        .subscriptions
        .wait_applied(acked.partition, acked.offset, state.config.write_timeout)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "write accepted by Kafka but not yet visible");
            ApiError::unavailable(
                "the change was written but is not visible yet (Kafka is lagging); GET it again shortly",
            )
        })
}
