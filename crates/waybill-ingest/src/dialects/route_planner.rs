//! `route_planner`: the route planner's Webhooks API (seed
//! `001_669331b9b64c7e20.txt`): `GET`/`POST /webhooks`, `PATCH`/`PUT`/
//! `DELETE /webhooks/{id}`, answers `{"status": "success", "data": ...}`,
//! errors `{"status": "error", "error": {"code", "message"}}`.
//!
//! | seed | Waybill |
//! |---|---|
//! | `id` | subscription `id` |
//! | `webhook_url` (request), `url` (answer) | `url` |
//! | `events` | `event_types` (catalog names) |
//! | `dc_ids` | `filter`: one predicate `dc_id IN dc_ids` (none: no filter) |
//! | `enabled` | `enabled` |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use waybill_core::fields::Fields;
use waybill_core::filter::{Comparator, Filter};
use waybill_core::subscription::Subscription;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::revisions::Precondition;

/// Its `ingest.dialects` name.
pub const NAME: &str = "route_planner";

const MAX_BODY_BYTES: usize = 64 * 1024;

/// The attribute `dc_ids` filter on.
const DC_ATTRIBUTE: &str = "dc_id";

/// Its routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route(
            "/webhooks/{id}",
            axum::routing::patch(set_enabled)
                .put(set_enabled)
                .delete(delete),
        )
}

/// An error in the seed's shape.
pub struct Error(ApiError);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = json!({"status": "error", "error": {
            "code": e.code().as_str(),
            "message": dialect_fields(&e.message()),
        }});
        (e.status(), Json(body)).into_response()
    }
}

/// `/v1` field names in a message, as the seed names them.
fn dialect_fields(message: &str) -> String {
    message
        .replace("event_types", "events")
        .replace("filter.scopes[0].predicates[0].values", "dc_ids")
        .replace("filter", "dc_ids")
        .replace("url:", "webhook_url:")
}

fn success(data: Value) -> Json<Value> {
    Json(json!({"status": "success", "data": data}))
}

/// The seed's webhook object, or `None` if the subscription's filter is
/// one the seed cannot express (then it is listed through `/v1` only).
pub fn webhook(s: &Subscription) -> Option<Value> {
    let dc_ids = match &s.spec.filter {
        None => Vec::new(),
        Some(f) => dc_ids_of(f)?,
    };
    Some(json!({
        "id": s.id,
        "url": s.spec.url,
        "enabled": s.spec.enabled,
        "dc_ids": dc_ids,
        "events": s.spec.event_types.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
}

fn dc_ids_of(f: &Filter) -> Option<Vec<String>> {
    match f.scopes.as_slice() {
        [scope] => match scope.predicates.as_slice() {
            [p] if p.attribute == DC_ATTRIBUTE && p.comparator == Comparator::In => {
                Some(p.values.clone())
            }
            _ => None,
        },
        _ => None,
    }
}

fn principal(p: Result<Principal, ApiError>) -> Result<Principal, Error> {
    p.map_err(Error)
}

/// `GET /webhooks`.
async fn list(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
) -> Result<Json<Value>, Error> {
    let p = principal(p)?;
    let projection = state.subscriptions.read();
    let webhooks: Vec<Value> = projection
        .of_tenant(&p.tenant_id)
        .filter(|s| !crate::subscriptions::is_internal(s))
        .filter_map(webhook)
        .collect();
    Ok(success(json!({"webhooks": webhooks})))
}

/// The `/v1` create body of a seed `POST /webhooks` body.
pub fn v1_body(body: &[u8]) -> Result<Value, ApiError> {
    let mut f = Fields::parse(body).map_err(|e| ApiError::validation(vec![e]))?;
    let url: Option<String> = f.required("webhook_url", "a URL string");
    let events: Option<Vec<String>> = f.required("events", "a list of event type names");
    let dc_ids: Option<Vec<String>> = f.optional("dc_ids", "a list of DC ids (strings)");
    let errors = f.finish(&["webhook_url", "events", "dc_ids"]);
    let (Some(url), Some(events), true) = (url, events, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let mut v1 = json!({"url": url, "event_types": events});
    if let Some(dc_ids) = dc_ids.filter(|d| !d.is_empty()) {
        v1["filter"] = json!({"scopes": [{"predicates": [
            {"attribute": DC_ATTRIBUTE, "comparator": "IN", "values": dc_ids}
        ]}]});
    }
    Ok(v1)
}

/// `POST /webhooks` → `200` with the webhook.
async fn create(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let p = principal(p)?;
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let v1 = v1_body(&body)?;
    let s = crate::subscriptions::create_from(&state, &p, v1.to_string().as_bytes()).await?;
    let hook = webhook(&s).ok_or_else(ApiError::internal)?;
    Ok(success(json!({"webhook": hook})))
}

/// `PATCH` or `PUT /webhooks/{id}` (`{"enabled": bool}`, the only field
/// the seed lets change) → `200` with the webhook.
async fn set_enabled(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let p = principal(p)?;
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let mut f = Fields::parse(&body).map_err(|e| ApiError::validation(vec![e]))?;
    let enabled: Option<bool> = f.required("enabled", "a boolean");
    let mut errors = f.finish(&["enabled"]);
    for e in &mut errors {
        if e.message.starts_with("unknown field") {
            e.message = "only `enabled` can be changed; to change anything else, delete the webhook and add another".into();
        }
    }
    let (Some(enabled), true) = (enabled, errors.is_empty()) else {
        return Err(ApiError::validation(errors).into());
    };
    crate::subscriptions::find(&state, &p, &id)?;
    let change = json!({"enabled": enabled}).to_string();
    crate::subscriptions::update_with(&state, &p, &id, change.as_bytes()).await?;
    let s = crate::subscriptions::find(&state, &p, &id)?;
    let hook = webhook(&s).ok_or_else(|| {
        ApiError::conflict("this webhook's filter was changed through /v1 and has no dc_ids form")
    })?;
    Ok(success(json!({"webhook": hook})))
}

/// `DELETE /webhooks/{id}` → `200`.
async fn delete(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let p = principal(p)?;
    crate::revisions::delete(&state, &p, &id, &Precondition::Any).await?;
    tracing::info!(subscription_id = %id, dialect = NAME, "subscription deleted");
    Ok((StatusCode::OK, success(json!({}))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_create_body_is_a_v1_body() {
        let v1 = v1_body(
            br#"{"webhook_url": "https://example.com/webhook", "events": ["ROUTE_CREATED", "ROUTE_STARTED"], "dc_ids": ["1", "2", "3"]}"#,
        )
        .unwrap();
        assert_eq!(v1["url"], "https://example.com/webhook");
        assert_eq!(v1["event_types"], json!(["ROUTE_CREATED", "ROUTE_STARTED"]));
        assert_eq!(
            v1["filter"]["scopes"][0]["predicates"][0],
            json!({"attribute": "dc_id", "comparator": "IN", "values": ["1", "2", "3"]})
        );
        let e = v1_body(br#"{"events": "ROUTE_CREATED", "url": "x"}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let text = e.message();
        assert!(
            text.contains("webhook_url") && text.contains("events"),
            "{text}"
        );
    }
}
