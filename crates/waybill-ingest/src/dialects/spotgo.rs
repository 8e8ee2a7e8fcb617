//! `spotgo`: SpotGo's Webhook API (seed `000_8cc288e8016d6043.txt`):
//! `POST`/`GET /api/v1/webhooks`, `PUT /api/v1/webhooks/{subscriptionId}/reset`
//! and `/notify`, `DELETE /api/v1/webhooks/{subscriptionId}`. Errors are
//! ProblemDetails (RFC 9457, as ASP.NET writes them: `type`, `title`,
//! `status`, `detail`, `instance`, `errors` by field).
//!
//! | seed | Waybill |
//! |---|---|
//! | `subscriptionId` | subscription `id` |
//! | `eventType` `All` / a name | `event_types` `["*"]` (the domain events, not Waybill's operational ones) / `[name]` |
//! | `callbackUrl` | `url` |
//! | `callbackAuth.type` `None` / `Basic` / `ApiKey` / `OAuth2` | `auth` `none` / `basic` / `api_key` / `oauth2` |
//! | `basic.username`, `basic.password` | `auth.username`, `auth.password` |
//! | `apiKey.headerName`, `apiKey.headerValue` | `auth.header_name`, `auth.header_value` |
//! | `oauth2.tokenUrl`, `oauth2.properties` | `auth.token_url`; `properties.client_id`, `client_secret`, `scope` → those fields, the other properties → `extra_params` |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde_json::{Map, Value, json};
use waybill_core::auth::{CallbackAuth, MASK};
use waybill_core::fields::Fields;
use waybill_core::pattern::EventTypePattern;
use waybill_core::subscription::Subscription;

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::revisions::Precondition;

/// Its `ingest.dialects` name.
pub const NAME: &str = "spotgo";

const BASE: &str = "/api/v1/webhooks";
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Its routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(BASE, get(list).post(create))
        .route(&format!("{BASE}/{{subscriptionId}}/reset"), put(reset))
        .route(&format!("{BASE}/{{subscriptionId}}/notify"), put(notify))
        .route(&format!("{BASE}/{{subscriptionId}}"), delete(remove))
}

/// A ProblemDetails error for the request at `instance`.
pub struct Error(ApiError, String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let Error(e, instance) = self;
        let status = e.status();
        let mut errors = Map::new();
        for d in e.details() {
            let field = seed_field(&d.field);
            let list = errors.entry(field).or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(json!(seed_message(&d.message)));
            }
        }
        let mut body = json!({
            "type": format!("https://waybill.dev/errors/{}", e.code().as_str()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": seed_message(&e.message()),
            "instance": instance,
        });
        if !errors.is_empty() {
            body["errors"] = Value::Object(errors);
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// A `/v1` field path as the seed names it.
fn seed_field(field: &str) -> String {
    let mapped = [
        ("event_types", "eventType"),
        ("url", "callbackUrl"),
        ("auth.username", "callbackAuth.basic.username"),
        ("auth.password", "callbackAuth.basic.password"),
        ("auth.header_name", "callbackAuth.apiKey.headerName"),
        ("auth.header_value", "callbackAuth.apiKey.headerValue"),
        ("auth.token_url", "callbackAuth.oauth2.tokenUrl"),
        ("auth.client_id", "callbackAuth.oauth2.properties.client_id"),
        (
            "auth.client_secret",
            "callbackAuth.oauth2.properties.client_secret",
        ),
        ("auth.extra_params", "callbackAuth.oauth2.properties"),
        ("auth.type", "callbackAuth.type"),
        ("auth", "callbackAuth"),
    ];
    for (v1, seed) in mapped {
        if let Some(rest) = field.strip_prefix(v1)
            && (rest.is_empty() || rest.starts_with(['.', '[']))
        {
            return if v1 == "event_types" {
                seed.to_owned()
            } else {
                format!("{seed}{rest}")
            };
        }
    }
    field.to_owned()
}

fn seed_message(message: &str) -> String {
    message.replace("event_types[0]:", "eventType:")
}

fn fail(instance: &str) -> impl Fn(ApiError) -> Error + '_ {
    move |e| Error(e, instance.to_owned())
}

/// The seed's list item, or `None` if the seed cannot express the
/// subscription (several event types, a prefix pattern, a filter, bearer
/// auth): then it is seen through `/v1` only.
pub fn item(s: &Subscription) -> Option<Value> {
    let event_type = match s.spec.event_types.as_slice() {
        [EventTypePattern::All] => "All".to_owned(),
        [EventTypePattern::Exact(name)] => name.clone(),
        _ => return None,
    };
    if s.spec.filter.is_some() {
        return None;
    }
    let auth = match &s.spec.auth {
        CallbackAuth::None => json!({"type": "None"}),
        CallbackAuth::Basic { username, .. } => {
            json!({"type": "Basic", "basic": {"username": username, "password": MASK}})
        }
        CallbackAuth::ApiKey { header_name, .. } => {
            json!({"type": "ApiKey", "apiKey": {"headerName": header_name, "headerValue": MASK}})
        }
        CallbackAuth::OAuth2(o) => {
            let mut properties: Map<String, Value> = o
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            properties.insert("client_id".into(), json!(o.client_id));
            properties.insert("client_secret".into(), json!(MASK));
            if let Some(scope) = &o.scope {
                properties.insert("scope".into(), json!(scope));
            }
            json!({"type": "OAuth2", "oauth2": {"tokenUrl": o.token_url, "properties": properties}})
        }
        CallbackAuth::Bearer { .. } => return None,
    };
    Some(json!({
        "subscriptionId": s.id,
        "eventType": event_type,
        "callbackUrl": s.spec.url,
        "callbackAuth": auth,
    }))
}

/// The `/v1` create body of a seed `POST /api/v1/webhooks` body.
pub fn v1_body(body: &[u8]) -> Result<Value, ApiError> {
    let mut f = Fields::parse(body).map_err(|e| ApiError::validation(vec![e]))?;
    let event_type: Option<String> =
        f.required("eventType", "\"All\" or the name of an event type");
    let url: Option<String> = f.required("callbackUrl", "a URL string");
    let auth: Option<Value> = f.optional("callbackAuth", "an object");
    let errors = f.finish(&["eventType", "callbackUrl", "callbackAuth"]);
    let (Some(event_type), Some(url), true) = (event_type, url, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let event_types = if event_type == "All" {
        json!(["*"])
    } else {
        json!([event_type])
    };
    let auth = match auth {
        None => json!({"type": "none"}),
        Some(a) => v1_auth(&a)?,
    };
    Ok(json!({"url": url, "event_types": event_types, "auth": auth}))
}

fn v1_auth(a: &Value) -> Result<Value, ApiError> {
    let refuse = |field: &str, message: &str| {
        ApiError::validation(vec![waybill_core::FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }])
    };
    // The seed's example sends every block with `type` saying which counts.
    let kind = a["type"].as_str().unwrap_or("None");
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Ok(match kind {
        "None" => json!({"type": "none"}),
        "Basic" => json!({"type": "basic",
            "username": text(&a["basic"]["username"]), "password": text(&a["basic"]["password"])}),
        "ApiKey" => json!({"type": "api_key",
            "header_name": text(&a["apiKey"]["headerName"]), "header_value": text(&a["apiKey"]["headerValue"])}),
        "OAuth2" => {
            let mut properties: BTreeMap<String, String> = BTreeMap::new();
            if let Some(map) = a["oauth2"]["properties"].as_object() {
                for (k, v) in map {
                    match v.as_str() {
                        Some(v) => {
                            properties.insert(k.clone(), v.to_owned());
                        }
                        None => {
                            return Err(refuse(
                                &format!("callbackAuth.oauth2.properties.{k}"),
                                "must be a string",
                            ));
                        }
                    }
                }
            }
            let client_id = properties.remove("client_id");
            let client_secret = properties.remove("client_secret");
            let scope = properties.remove("scope");
            json!({"type": "oauth2", "token_url": text(&a["oauth2"]["tokenUrl"]),
                "client_id": client_id, "client_secret": client_secret, "scope": scope,
                "extra_params": properties})
        }
        other => {
            return Err(refuse(
                "callbackAuth.type",
                &format!("must be None, Basic, ApiKey or OAuth2, not {other:?}"),
            ));
        }
    })
}

/// `POST /api/v1/webhooks` → `200 {}`.
async fn create(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    let body = read_json(&headers, body, MAX_BODY_BYTES)
        .await
        .map_err(&fail)?;
    let v1 = v1_body(&body).map_err(&fail)?;
    crate::subscriptions::create_from(&state, &p, v1.to_string().as_bytes())
        .await
        .map_err(&fail)?;
    Ok(Json(json!({})))
}

/// `GET /api/v1/webhooks`.
async fn list(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
) -> Result<Json<Value>, Error> {
    let p = p.map_err(fail(uri.path()))?;
    let projection = state.subscriptions.read();
    let items: Vec<Value> = projection
        .of_tenant(&p.tenant_id)
        .filter(|s| !crate::subscriptions::is_internal(s))
        .filter_map(|s| item(&s))
        .collect();
    Ok(Json(Value::Array(items)))
}

fn expressible(state: &AppState, p: &Principal, id: &str) -> Result<(), ApiError> {
    let s = crate::subscriptions::find(state, p, id)?;
    match item(&s) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no webhook subscription {id}"))),
    }
}

/// `PUT /api/v1/webhooks/{subscriptionId}/reset`: clears the failure
/// state and re-enables it → `200 {}`.
async fn reset(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    expressible(&state, &p, &id).map_err(&fail)?;
    crate::subscriptions::reset_with(&state, &p, &id)
        .await
        .map_err(&fail)?;
    Ok(Json(json!({})))
}

/// `PUT /api/v1/webhooks/{subscriptionId}/notify`: sends a `waybill.test`
/// event to it → `200 {}`.
async fn notify(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    expressible(&state, &p, &id).map_err(&fail)?;
    crate::subscriptions::send_test(&state, &p, &id)
        .await
        .map_err(&fail)?;
    Ok(Json(json!({})))
}

/// `DELETE /api/v1/webhooks/{subscriptionId}` → `200 {}`.
async fn remove(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let fail = fail(uri.path());
    let p = p.map_err(&fail)?;
    expressible(&state, &p, &id).map_err(&fail)?;
    crate::revisions::delete(&state, &p, &id, &Precondition::Any)
        .await
        .map_err(&fail)?;
    tracing::info!(subscription_id = %id, dialect = NAME, "subscription deleted");
    Ok(Json(json!({})))
}

/// Its operations and schemas for the OpenAPI document (tag `spotgo`).
pub fn openapi() -> (Value, Value) {
    let security = json!([{"apiKey": []}]);
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let problem = |what: &str| json!({"description": what, "content": {"application/problem+json": {"schema": schema("SpotGoProblemDetails")}}});
    let empty = json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false}}}});
    let id = json!([{"name": "subscriptionId", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let paths = json!({
        BASE: {
            "post": {"operationId": "spotgoCreateWebhook", "tags": [NAME], "security": security,
                "summary": "Subscribe a callback URL to one event type, or All",
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("SpotGoWebhookSubscriptionRequest")}}},
                "responses": {"200": empty, "400": problem("Bad Request"), "401": problem("Unauthorized")}},
            "get": {"operationId": "spotgoListWebhooks", "tags": [NAME], "security": security,
                "summary": "The subscriptions, credentials masked",
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "array", "items": schema("SpotGoWebhookItem")}}}}, "401": problem("Unauthorized")}},
        },
        format!("{BASE}/{{subscriptionId}}/reset"): {"put": {"operationId": "spotgoResetWebhook", "tags": [NAME],
            "security": security, "summary": "Clear the failure state and re-enable", "parameters": id,
            "responses": {"200": empty, "401": problem("Unauthorized"), "404": problem("Not Found")}}},
        format!("{BASE}/{{subscriptionId}}/notify"): {"put": {"operationId": "spotgoNotifyWebhook", "tags": [NAME],
            "security": security, "summary": "Send a waybill.test event to it", "parameters": id,
            "responses": {"200": empty, "401": problem("Unauthorized"), "404": problem("Not Found")}}},
        format!("{BASE}/{{subscriptionId}}"): {"delete": {"operationId": "spotgoDeleteWebhook", "tags": [NAME],
            "security": security, "summary": "Delete the subscription", "parameters": id,
            "responses": {"200": empty, "401": problem("Unauthorized"), "404": problem("Not Found")}}},
    });
    let auth = json!({"type": "object", "properties": {
        "type": {"enum": ["None", "Basic", "ApiKey", "OAuth2"]},
        "basic": {"type": "object", "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
        "apiKey": {"type": "object", "properties": {"headerName": {"type": "string"}, "headerValue": {"type": "string"}}},
        "oauth2": {"type": "object", "properties": {"tokenUrl": {"type": "string"},
            "properties": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "client_id, client_secret and scope, then any parameter of the token request"}}},
    }});
    let schemas = json!({
        "SpotGoWebhookSubscriptionRequest": {"type": "object", "required": ["eventType", "callbackUrl"],
            "additionalProperties": false, "properties": {
                "eventType": {"type": "string", "description": "\"All\" or one event type"},
                "callbackUrl": {"type": "string"}, "callbackAuth": auth}},
        "SpotGoWebhookItem": {"type": "object", "required": ["subscriptionId", "eventType", "callbackUrl", "callbackAuth"],
            "additionalProperties": false, "properties": {
                "subscriptionId": {"type": "string"}, "eventType": {"type": "string"},
                "callbackUrl": {"type": "string"}, "callbackAuth": auth}},
        "SpotGoProblemDetails": {"type": "object", "required": ["type", "title", "status", "detail", "instance"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "instance": {"type": "string"},
                "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
    });
    (paths, schemas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_example_is_a_v1_body() {
        let v1 = v1_body(
            br#"{"eventType": "All", "callbackUrl": "https://tms.example.com/hook",
                 "callbackAuth": {"type": "ApiKey", "basic": {"username": "string", "password": "string"},
                   "apiKey": {"headerName": "X-Key", "headerValue": "k"},
                   "oauth2": {"tokenUrl": "string", "properties": {"property1": "string"}}}}"#,
        )
        .unwrap();
        assert_eq!(v1["event_types"], json!(["*"]));
        assert_eq!(
            v1["auth"],
            json!({"type": "api_key", "header_name": "X-Key", "header_value": "k"})
        );
        let v1 = v1_body(
            br#"{"eventType": "freights.publication.created", "callbackUrl": "https://x.example",
                 "callbackAuth": {"type": "OAuth2", "oauth2": {"tokenUrl": "https://id.example/token",
                   "properties": {"client_id": "c", "client_secret": "s", "audience": "tms"}}}}"#,
        )
        .unwrap();
        assert_eq!(v1["auth"]["client_id"], "c");
        assert_eq!(v1["auth"]["extra_params"], json!({"audience": "tms"}));
        assert_eq!(
            seed_field("auth.header_value"),
            "callbackAuth.apiKey.headerValue"
        );
        assert_eq!(seed_field("event_types[0]"), "eventType");
        assert_eq!(seed_field("url"), "callbackUrl");
    }
}
