//! `logistics_2023_07`: the logistics Webhooks API of 2023-07 (seed
//! `004_7295b02660b47c63.txt`): `POST`/`GET /logistics/api/2023-07/webhooks`,
//! `GET`/`DELETE /logistics/api/2023-07/webhooks/{webhookId}`, numeric ids,
//! `https://` only, `TOKEN` auth with `tokenHeader`, `202` on create, `204`
//! on delete, errors `{"status", "type", "title", "detail", "instance",
//! "code", "message"}`.
//!
//! | seed | Waybill |
//! |---|---|
//! | `id` (a JSON number) | derived from the subscription id (52 bits of its SHA-256), so nothing is stored and every subscription has one |
//! | `type` | `event_types`: that one name |
//! | `url` | `url` (`https://` only) |
//! | `method` | `method` |
//! | `authMethod` `NONE` / `BASIC_AUTH` / `TOKEN` | `auth` `none` / `basic` (`username`, `password`) / `api_key` (`header_name` = `tokenHeader`, `header_value` = `token`) |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use waybill_core::auth::{CallbackAuth, MASK};
use waybill_core::fields::Fields;
use waybill_core::pattern::EventTypePattern;
use waybill_core::subscription::{Method, Subscription};

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::revisions::Precondition;

/// Its `ingest.dialects` name.
pub const NAME: &str = "logistics_2023_07";

const BASE: &str = "/logistics/api/2023-07/webhooks";
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Its routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(BASE, get(list).post(create))
        .route(&format!("{BASE}/{{webhookId}}"), get(one).delete(delete))
}

/// The seed's numeric id of a subscription.
pub fn numeric_id(subscription_id: &str) -> u64 {
    let digest = Sha256::digest(subscription_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // A JSON number stays exact up to 2^53.
    (u64::from_be_bytes(bytes) & ((1 << 52) - 1)).max(1)
}

/// An error in the seed's shape, for the request at `instance`. `Malformed`
/// errors (the seed's own checks of its body) are 400; an error of the
/// `/v1` create that only refuses values (an event type the catalog lacks,
/// a URL the policy refuses) is 422.
pub struct Error(ApiError, String, Kind);

/// Which checks refused the request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The seed's shape: status as the error has it (400 for a body).
    Malformed,
    /// `/v1`'s checks of the values.
    Refused,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let Error(e, instance, kind) = self;
        let status = if kind == Kind::Refused
            && e.status() == StatusCode::BAD_REQUEST
            && !e.details().is_empty()
            && e.details()
                .iter()
                .all(|d| d.field.starts_with("event_types") || d.field == "url")
            && e.details()
                .iter()
                .all(|d| !d.message.starts_with("is required"))
        {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            e.status()
        };
        let message = seed_fields(&e.message());
        let body = json!({
            "status": status.as_u16(),
            "type": format!("https://waybill.dev/errors/{}", e.code().as_str()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "detail": message,
            "instance": instance,
            "code": status.as_u16(),
            "message": message,
        });
        (status, Json(body)).into_response()
    }
}

fn seed_fields(message: &str) -> String {
    message
        .replace("event_types[0]:", "type:")
        .replace("event_types:", "type:")
        .replace("auth.header_name", "tokenHeader")
        .replace("auth.header_value", "token")
        .replace("auth.username", "username")
        .replace("auth.password", "password")
}

type Answer<T> = Result<T, Error>;

fn fail(instance: &str) -> impl Fn(ApiError) -> Error + '_ {
    move |e| Error(e, instance.to_owned(), Kind::Refused)
}

/// The seed's webhook object, or `None` if the subscription is one the
/// seed cannot express (several event types, a pattern, a filter, bearer
/// or OAuth2 auth): then it is seen through `/v1` only.
pub fn webhook(s: &Subscription) -> Option<Value> {
    let [EventTypePattern::Exact(kind)] = s.spec.event_types.as_slice() else {
        return None;
    };
    if s.spec.filter.is_some() {
        return None;
    }
    let mut hook = json!({
        "type": kind,
        "url": s.spec.url,
        "method": match s.spec.method { Method::Post => "POST", Method::Put => "PUT" },
        "id": numeric_id(&s.id),
    });
    match &s.spec.auth {
        CallbackAuth::None => hook["authMethod"] = json!("NONE"),
        CallbackAuth::Basic { username, .. } => {
            hook["authMethod"] = json!("BASIC_AUTH");
            hook["username"] = json!(username);
            hook["password"] = json!(MASK);
        }
        CallbackAuth::ApiKey { header_name, .. } => {
            hook["authMethod"] = json!("TOKEN");
            hook["tokenHeader"] = json!(header_name);
            hook["token"] = json!(MASK);
        }
        _ => return None,
    }
    Some(hook)
}

/// The `/v1` create body of a seed create body.
pub fn v1_body(body: &[u8]) -> Result<Value, ApiError> {
    let mut f = Fields::parse(body).map_err(|e| ApiError::validation(vec![e]))?;
    let kind: Option<String> =
        f.required("type", "a string (a webhook type, e.g. Shipment.Created)");
    let url: Option<String> = f.required("url", "a string beginning with https://");
    if url.as_ref().is_some_and(|u| !u.starts_with("https://")) {
        f.error("url", "must begin with 'https://'");
    }
    let method: Option<String> = f.required("method", "\"POST\" or \"PUT\"");
    if method.as_deref().is_some_and(|m| m != "POST" && m != "PUT") {
        f.error("method", "must be \"POST\" or \"PUT\"");
    }
    let auth_method: Option<String> =
        f.optional("authMethod", "\"NONE\", \"BASIC_AUTH\" or \"TOKEN\"");
    let text = |f: &mut Fields, key: &str| f.optional::<String>(key, "a string");
    let (username, password) = (text(&mut f, "username"), text(&mut f, "password"));
    let (token, token_header) = (text(&mut f, "token"), text(&mut f, "tokenHeader"));
    let need = |f: &mut Fields, value: &Option<String>, key: &str, when: &str| {
        if value.as_deref().is_none_or(str::is_empty) {
            f.error(key, format!("is required when authMethod is {when}"));
        }
    };
    let auth = match auth_method.as_deref().unwrap_or("NONE") {
        "NONE" => json!({"type": "none"}),
        "BASIC_AUTH" => {
            need(&mut f, &username, "username", "BASIC_AUTH");
            need(&mut f, &password, "password", "BASIC_AUTH");
            json!({"type": "basic", "username": username, "password": password})
        }
        "TOKEN" => {
            need(&mut f, &token, "token", "TOKEN");
            need(&mut f, &token_header, "tokenHeader", "TOKEN");
            json!({"type": "api_key", "header_name": token_header, "header_value": token})
        }
        other => {
            f.error(
                "authMethod",
                format!("must be \"NONE\", \"BASIC_AUTH\" or \"TOKEN\", not {other:?}"),
            );
            json!({"type": "none"})
        }
    };
    let errors = f.finish(&[
        "type",
        "url",
        "method",
        "authMethod",
        "username",
        "password",
        "token",
        "tokenHeader",
    ]);
    let (Some(kind), Some(url), Some(method), true) = (kind, url, method, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    Ok(json!({"url": url, "method": method, "event_types": [kind], "auth": auth}))
}

/// The tenant's subscription whose numeric id is `webhook_id`.
fn find(state: &AppState, p: &Principal, webhook_id: &str) -> Result<Subscription, ApiError> {
    let not_found = || ApiError::not_found(format!("no webhook {webhook_id}"));
    let n: u64 = webhook_id.parse().map_err(|_| not_found())?;
    let projection = state.subscriptions.read();
    // The numeric id is derived from the id: only candidates are decoded.
    projection
        .ids_of_tenant(&p.tenant_id)
        .filter(|id| numeric_id(id) == n)
        .filter_map(|id| projection.get(id))
        .find(|s| webhook(s).is_some())
        .ok_or_else(not_found)
}

/// `POST .../webhooks` → `202` with the webhook.
async fn create(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Answer<(StatusCode, Json<Value>)> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    let body = read_json(&headers, body, MAX_BODY_BYTES)
        .await
        .map_err(&fail)?;
    let v1 = v1_body(&body).map_err(|e| Error(e, uri.path().to_owned(), Kind::Malformed))?;
    let duplicate = {
        let projection = state.subscriptions.read();
        projection.of_tenant(&p.tenant_id).any(|s| {
            s.spec.enabled
                && s.spec.url == v1["url"].as_str().unwrap_or_default()
                && s.spec
                    .event_types
                    .iter()
                    .map(ToString::to_string)
                    .eq([v1["event_types"][0].as_str().unwrap_or_default().to_owned()])
        })
    };
    if duplicate {
        return Err(fail(ApiError::conflict(
            "a webhook of this type is already registered for this url",
        )));
    }
    let s = crate::subscriptions::create_from(&state, &p, v1.to_string().as_bytes())
        .await
        .map_err(&fail)?;
    let hook = webhook(&s).ok_or_else(|| fail(ApiError::internal()))?;
    Ok((StatusCode::ACCEPTED, Json(hook)))
}

/// `GET .../webhooks`: the registered and active ones.
async fn list(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
) -> Answer<Json<Value>> {
    let p = p.map_err(fail(uri.path()))?;
    let projection = state.subscriptions.read();
    let hooks: Vec<Value> = projection
        .of_tenant(&p.tenant_id)
        .filter(|s| s.spec.enabled && !crate::subscriptions::is_internal(s))
        .filter_map(|s| webhook(&s))
        .collect();
    Ok(Json(Value::Array(hooks)))
}

/// `GET .../webhooks/{webhookId}`.
async fn one(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    Path(webhook_id): Path<String>,
) -> Answer<Json<Value>> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    let s = find(&state, &p, &webhook_id).map_err(&fail)?;
    webhook(&s)
        .map(Json)
        .ok_or_else(|| fail(ApiError::internal()))
}

/// `DELETE .../webhooks/{webhookId}` → `204`.
async fn delete(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    Path(webhook_id): Path<String>,
) -> Answer<StatusCode> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    let s = find(&state, &p, &webhook_id).map_err(&fail)?;
    crate::revisions::delete(&state, &p, &s.id, &Precondition::Any)
        .await
        .map_err(&fail)?;
    tracing::info!(subscription_id = %s.id, dialect = NAME, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Its operations and schemas for the OpenAPI document (tag
/// `logistics_2023_07`), merged in when the dialect is enabled.
pub fn openapi() -> (Value, Value) {
    let security = json!([{"apiKey": []}]);
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let answer = |name: &str, what: &str| json!({"description": what, "content": {"application/json": {"schema": schema(name)}}});
    let error = |what: &str| answer("Logistics202307Error", what);
    let id = json!([{"name": "webhookId", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^\\d+$"}, "description": "A unique identifier for a webhook"}]);
    let paths = json!({
        BASE: {
            "post": {"operationId": "logistics202307CreateWebhook", "tags": [NAME], "security": security,
                "summary": "Create a webhook to subscribe to a type of event",
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("Logistics202307WebhookInput")}}},
                "responses": {"202": answer("Logistics202307Webhook", "Webhook has been created"),
                    "400": error("Bad Request"), "401": error("Unauthorized"), "409": error("Conflict"),
                    "422": error("Unprocessable Entity")}},
            "get": {"operationId": "logistics202307GetWebhooks", "tags": [NAME], "security": security,
                "summary": "Get all webhooks currently registered and active",
                "responses": {"200": {"description": "List of webhook entries", "content": {"application/json": {"schema": {
                    "type": "array", "items": schema("Logistics202307Webhook")}}}},
                    "401": error("Unauthorized")}},
        },
        format!("{BASE}/{{webhookId}}"): {
            "get": {"operationId": "logistics202307GetWebhook", "tags": [NAME], "security": security,
                "summary": "Get a specific webhook", "parameters": id,
                "responses": {"200": answer("Logistics202307Webhook", "Webhook details"),
                    "401": error("Unauthorized"), "404": error("A webhook with the webhook id provided was not found")}},
            "delete": {"operationId": "logistics202307DeleteWebhook", "tags": [NAME], "security": security,
                "summary": "Delete a webhook", "parameters": id,
                "responses": {"204": {"description": "Webhook has been deleted"},
                    "401": error("Unauthorized"), "404": error("A webhook with the webhook id provided was not found")}},
        },
    });
    let props = json!({
        "type": {"type": "string", "description": "Types of webhooks available (catalog names), e.g. Shipment.Created"},
        "url": {"type": "string", "pattern": "^https:\\/\\/.+"},
        "method": {"enum": ["POST", "PUT"]},
        "authMethod": {"enum": ["BASIC_AUTH", "TOKEN", "NONE"]},
        "username": {"type": "string"}, "password": {"type": "string"},
        "token": {"type": "string"}, "tokenHeader": {"type": "string"},
    });
    // The request's optional fields also admit null (taken as left out).
    let mut input_props = props.clone();
    for key in ["authMethod", "username", "password", "token", "tokenHeader"] {
        input_props[key] = json!({"anyOf": [props[key], {"type": "null"}]});
    }
    let mut answer_props = props.clone();
    answer_props["id"] =
        json!({"type": "number", "description": "A unique identifier for a webhook"});
    let schemas = json!({
        "Logistics202307WebhookInput": {"type": "object", "required": ["type", "url", "method"],
            "additionalProperties": false, "properties": input_props,
            "example": {"type": "Shipment.Created", "url": "https://example.com/hook", "method": "POST", "authMethod": "NONE"}},
        "Logistics202307Webhook": {"type": "object", "required": ["type", "url", "method", "id"],
            "additionalProperties": false, "properties": answer_props},
        "Logistics202307Error": {"type": "object", "additionalProperties": false,
            "required": ["status", "type", "title", "detail", "instance", "code", "message"],
            "properties": {"status": {"type": "integer"}, "type": {"type": "string"}, "title": {"type": "string"},
                "detail": {"type": "string"}, "instance": {"type": "string"}, "code": {"type": "integer"},
                "message": {"type": "string"}}},
    });
    (paths, schemas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_are_exact_json_numbers_and_stable() {
        let a = numeric_id("sub_01a23bbc82ee7515b734b25572bd23d2");
        assert_eq!(a, numeric_id("sub_01a23bbc82ee7515b734b25572bd23d2"));
        assert!(a > 0 && a < (1 << 53));
        assert_ne!(a, numeric_id("sub_01a23bbc82ee7515b734b25572bd23d3"));
    }

    #[test]
    fn the_seeds_create_body_is_a_v1_body() {
        let v1 = v1_body(
            br#"{"type": "Shipment.Created", "url": "https://example.com/hook", "method": "POST",
                 "authMethod": "TOKEN", "token": "s3cret", "tokenHeader": "X-Token"}"#,
        )
        .unwrap();
        assert_eq!(v1["event_types"], json!(["Shipment.Created"]));
        assert_eq!(
            v1["auth"],
            json!({"type": "api_key", "header_name": "X-Token", "header_value": "s3cret"})
        );
        let e = v1_body(br#"{"type": "Shipment.Created", "url": "http://example.com", "method": "GET", "authMethod": "BASIC_AUTH"}"#)
            .unwrap_err();
        let fields: Vec<&str> = e.details().iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["url", "method", "username", "password"]);
    }
}
