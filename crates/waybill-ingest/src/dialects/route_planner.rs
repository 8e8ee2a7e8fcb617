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
        .replace("event_types[", "events[")
        .replace("event_types:", "events:")
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
        .filter_map(|s| webhook(&s))
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
    let s = crate::subscriptions::find(&state, &p, &id)?;
    if webhook(&s).is_none() {
        return Err(ApiError::not_found(format!("no webhook {id}")).into());
    }
    let change = json!({"enabled": enabled}).to_string();
    crate::subscriptions::update_with(&state, &p, &id, change.as_bytes()).await?;
    let s = crate::subscriptions::find(&state, &p, &id)?;
    // Only a /v1 edit between the two reads can make it inexpressible.
    let hook = webhook(&s).ok_or_else(|| {
        ApiError::conflict("this webhook was changed through /v1 meanwhile into a form without dc_ids; read it through /v1")
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
    let s = crate::subscriptions::find(&state, &p, &id)?;
    if webhook(&s).is_none() {
        return Err(ApiError::not_found(format!("no webhook {id}")).into());
    }
    crate::revisions::delete(&state, &p, &id, &Precondition::Any).await?;
    tracing::info!(subscription_id = %id, dialect = NAME, "subscription deleted");
    Ok((StatusCode::OK, success(json!({}))))
}

/// Its operations and schemas for the OpenAPI document (tag
/// `route_planner`), merged in when the dialect is enabled.
pub fn openapi() -> (Value, Value) {
    let security = json!([{"apiKey": []}]);
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RoutePlannerError"}}}});
    let ok = |schema: &str, what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The webhook id"}]);
    let enabled_body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["enabled"], "additionalProperties": false,
        "properties": {"enabled": {"type": "boolean", "description": "Whether this webhook is enabled; the only field that can change"}},
    }}}});
    let change = |op_id: &str| {
        json!({
            "operationId": op_id, "tags": [NAME], "security": security,
            "summary": "Updates a Webhook (only `enabled`)",
            "parameters": id, "requestBody": enabled_body,
            "responses": {"200": ok("RoutePlannerWebhookAnswer", "The updated Webhook object"),
                "409": error("The webhook was changed through /v1 meanwhile into a form without dc_ids"),
                "400": error("One or more parameters was invalid"), "401": error("API key is invalid"),
                "404": error("The Webhook with this ID could not be found")},
        })
    };
    let paths = json!({
        "/webhooks": {
            "get": {"operationId": "routePlannerListWebhooks", "tags": [NAME], "security": security,
                "summary": "Gets all registered Webhooks",
                "responses": {"200": ok("RoutePlannerWebhookList", "The Webhooks"), "401": error("API key is invalid")}},
            "post": {"operationId": "routePlannerCreateWebhook", "tags": [NAME], "security": security,
                "summary": "Creates a Webhook",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["webhook_url", "events"], "additionalProperties": false,
                    "properties": {
                        "webhook_url": {"type": "string", "format": "uri", "description": "The Webhook URL to register"},
                        "events": {"type": "array", "items": {"type": "string"}, "description": "The event types that should be sent (catalog names)"},
                        "dc_ids": {"type": ["array", "null"], "items": {"type": "string"}, "description": "The DCs for which events should be sent (event attribute dc_id)"},
                    },
                }, "example": {"webhook_url": "https://example.com/webhook", "events": ["ROUTE_CREATED", "ROUTE_STARTED"], "dc_ids": ["1", "2", "3"]}}}},
                "responses": {"200": ok("RoutePlannerWebhookAnswer", "The newly created Webhook object"),
                    "400": error("One or more parameters was invalid"), "401": error("API key is invalid")}},
        },
        "/webhooks/{id}": {
            "patch": change("routePlannerPatchWebhook"),
            "put": change("routePlannerPutWebhook"),
            "delete": {"operationId": "routePlannerDeleteWebhook", "tags": [NAME], "security": security,
                "summary": "Deletes a Webhook", "parameters": id,
                "responses": {"200": ok("RoutePlannerDeleted", "The Webhook was deleted"),
                    "401": error("API key is invalid"), "404": error("The Webhook with this ID could not be found")}},
        },
    });
    let webhook = json!({
        "type": "object", "required": ["id", "url", "enabled", "dc_ids", "events"], "additionalProperties": false,
        "properties": {
            "id": {"type": "string"}, "url": {"type": "string"}, "enabled": {"type": "boolean"},
            "dc_ids": {"type": "array", "items": {"type": "string"}},
            "events": {"type": "array", "items": {"type": "string"}},
        },
    });
    let envelope = |data: Value| {
        json!({"type": "object", "required": ["status", "data"], "additionalProperties": false,
            "properties": {"status": {"const": "success"}, "data": data}})
    };
    let schemas = json!({
        "RoutePlannerWebhook": webhook,
        "RoutePlannerWebhookAnswer": envelope(json!({"type": "object", "required": ["webhook"], "additionalProperties": false,
            "properties": {"webhook": {"$ref": "#/components/schemas/RoutePlannerWebhook"}}})),
        "RoutePlannerWebhookList": envelope(json!({"type": "object", "required": ["webhooks"], "additionalProperties": false,
            "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/RoutePlannerWebhook"}}}})),
        "RoutePlannerDeleted": envelope(json!({"type": "object", "additionalProperties": false})),
        "RoutePlannerError": {"type": "object", "required": ["status", "error"], "additionalProperties": false,
            "properties": {"status": {"const": "error"}, "error": {"type": "object", "required": ["code", "message"],
                "additionalProperties": false,
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    });
    (paths, schemas)
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
