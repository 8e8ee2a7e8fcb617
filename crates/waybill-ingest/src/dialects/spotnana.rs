//! `spotnana`: Spotnana's Webhook Subscription API v3 (seed
//! `002_4bad63539dabe756.txt`): `POST /v3/webhooks/subscriptions`,
//! `GET /v3/webhooks/subscriptions/subscriber/{subscriberId}/list`,
//! `GET` and `PATCH /v3/webhooks/subscriptions/{subscriptionId}`; camelCase,
//! no DELETE (the seed has none). Errors use Spotnana's `ErrorResponse`
//! (`debugIdentifier`, `errorMessages[]` with `errorCode`, `message`,
//! `errorParameters`), as the seed shows no error of its own.
//!
//! | seed | Waybill |
//! |---|---|
//! | `id` | subscription `id` |
//! | `subscriberId` | `metadata["spotnana.subscriber_id"]` |
//! | `name` | `name` |
//! | `eventTypes` | `event_types` (catalog names) |
//! | `eventSource.scopes[].predicates[]` {`type`, `values`, `comparator`} | `filter.scopes[].predicates[]` {`attribute`: `type` lowercased + `_id`, `values`, `comparator` (`IN` when absent)} |
//! | `url` | `url` |
//! | `isActive` | `enabled` |
//! | `customHeaders` (a flat map) | `headers` |
//! | `hmacSigningSecret` | the signing secret (`whsec_...`), in the create answer only |
//! | `createdAt.iso8601`, `updatedAt.iso8601` | `created_at`, `updated_at` |
//! | `createdBy`, `updatedBy` | `created_by`, `updated_by` (the API key id) |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use waybill_core::FieldError;
use waybill_core::auth::CallbackAuth;
use waybill_core::event::format_rfc3339;
use waybill_core::fields::Fields;
use waybill_core::filter::Filter;
use waybill_core::subscription::{Method, Subscription};

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;

/// Its `ingest.dialects` name.
pub const NAME: &str = "spotnana";

/// The metadata entry holding the seed's `subscriberId`.
pub const SUBSCRIBER_KEY: &str = "spotnana.subscriber_id";

const BASE: &str = "/v3/webhooks/subscriptions";
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Its routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(BASE, axum::routing::post(create))
        .route(
            &format!("{BASE}/subscriber/{{subscriberId}}/list"),
            get(list),
        )
        .route(
            &format!("{BASE}/{{subscriptionId}}"),
            get(one).patch(update),
        )
}

/// An error as Spotnana's `ErrorResponse`: one `errorMessages` entry per
/// invalid field (named as the seed names it), and a `debugIdentifier`
/// that the log line of the refusal carries too.
pub struct Error(ApiError);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let e = self.0;
        let code = e.code().as_str();
        let messages: Vec<Value> = if e.details().is_empty() {
            vec![json!({"errorCode": code, "message": e.message()})]
        } else {
            e.details()
                .iter()
                .map(|d| {
                    let field = seed_field(&d.field);
                    json!({"errorCode": code, "message": format!("{field}: {}", d.message),
                           "errorParameters": [{"name": "field", "value": field}]})
                })
                .collect()
        };
        let debug_identifier = waybill_core::ids::new_debug_id();
        tracing::info!(
            dialect = NAME,
            debug_identifier = %debug_identifier,
            status = e.status().as_u16(),
            code,
            "request refused"
        );
        let body = json!({"debugIdentifier": debug_identifier, "errorMessages": messages});
        (e.status(), Json(body)).into_response()
    }
}

/// A `/v1` field path as the seed names it.
pub fn seed_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("filter") {
        return format!("eventSource{}", rest.replace(".attribute", ".type"));
    }
    for (v1, seed) in [
        ("event_types", "eventTypes"),
        ("enabled", "isActive"),
        ("headers", "customHeaders"),
        ("metadata", "subscriberId"),
    ] {
        if let Some(rest) = field.strip_prefix(v1)
            && (rest.is_empty() || rest.starts_with(['.', '[']))
        {
            return if v1 == "metadata" {
                seed.to_owned()
            } else {
                format!("{seed}{rest}")
            };
        }
    }
    field.to_owned()
}

/// The event attribute a predicate `type` names: lowercased, with `_id`
/// appended (`COMPANY` → `company_id`, `LEGAL_ENTITY` → `legal_entity_id`).
pub fn attribute_of(kind: &str) -> Option<String> {
    let mut chars = kind.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && kind.len() <= 120;
    valid.then(|| format!("{}_id", kind.to_ascii_lowercase()))
}

/// The predicate `type` of an event attribute, if the seed can express it
/// (the inverse of [`attribute_of`]).
pub fn type_of(attribute: &str) -> Option<String> {
    let kind = attribute.strip_suffix("_id")?.to_ascii_uppercase();
    attribute_of(&kind).filter(|a| a == attribute).map(|_| kind)
}

/// The seed's `eventSource` of a filter, or `None` if one of its
/// attributes has no predicate `type` (`tenant`, or a name without `_id`).
fn event_source(filter: &Filter) -> Option<Value> {
    let mut scopes = Vec::with_capacity(filter.scopes.len());
    for scope in &filter.scopes {
        let mut predicates = Vec::with_capacity(scope.predicates.len());
        for p in &scope.predicates {
            predicates.push(json!({"type": type_of(&p.attribute)?, "values": p.values,
                                   "comparator": p.comparator.as_str()}));
        }
        scopes.push(json!({"predicates": predicates}));
    }
    Some(json!({"scopes": scopes}))
}

/// The `/v1` filter of a seed `eventSource` (a JSON value), with errors
/// named by `/v1` path (mapped back by [`seed_field`]). An empty `scopes`
/// list is no filter: every event, as in `/v1` (read literally, "an event
/// matches if it satisfies any scope" would match none).
fn v1_filter(source: &Value, errors: &mut Vec<FieldError>) -> Value {
    let Some(object) = source.as_object() else {
        errors.push(FieldError::new("filter", "must be an object with `scopes`"));
        return Value::Null;
    };
    let mut out = object.clone();
    if let Some(scopes) = out.get_mut("scopes").and_then(Value::as_array_mut) {
        for (i, scope) in scopes.iter_mut().enumerate() {
            let Some(predicates) = scope.get_mut("predicates").and_then(Value::as_array_mut) else {
                continue;
            };
            for (j, predicate) in predicates.iter_mut().enumerate() {
                let Some(p) = predicate.as_object_mut() else {
                    continue;
                };
                let path = format!("filter.scopes[{i}].predicates[{j}]");
                match p.remove("type") {
                    None | Some(Value::Null) => errors.push(FieldError::new(
                        format!("{path}.attribute"),
                        "is required: the type of event source entity, e.g. COMPANY",
                    )),
                    Some(kind) => match kind.as_str().and_then(attribute_of) {
                        Some(attribute) => {
                            p.insert("attribute".into(), json!(attribute));
                        }
                        None => errors.push(FieldError::new(
                            format!("{path}.attribute"),
                            "must be an entity type in capitals, e.g. COMPANY or LEGAL_ENTITY",
                        )),
                    },
                }
                if p.get("comparator").is_none_or(Value::is_null) {
                    p.insert("comparator".into(), json!("IN"));
                }
            }
        }
    }
    Value::Object(out)
}

/// Which call a body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST`: `subscriberId`, `eventTypes` and `url` required.
    Create,
    /// `PATCH`: every field optional; present ones replace.
    Update,
}

/// The `/v1` body (create, or patch) of a seed body.
pub fn v1_body(body: &[u8], call: Call) -> Result<Value, ApiError> {
    let mut f = Fields::parse(body).map_err(|e| ApiError::validation(vec![e]))?;
    let mut errors = Vec::new();
    let mut v1 = Map::new();
    if call == Call::Create {
        let subscriber: Option<String> =
            f.required("subscriberId", "a string (the subscriber's UUID)");
        if let Some(subscriber) = subscriber {
            if subscriber.is_empty() || subscriber.len() > 128 {
                f.error("subscriberId", "must be 1 to 128 characters");
            }
            v1.insert("metadata".into(), json!({SUBSCRIBER_KEY: subscriber}));
        }
    }
    let event_types: Option<Vec<String>> = if call == Call::Create {
        f.required("eventTypes", "a list of event type names")
    } else {
        f.optional("eventTypes", "a list of event type names")
    };
    if let Some(event_types) = event_types {
        if event_types.is_empty() {
            f.error("eventTypes", "must list at least one event type");
        }
        v1.insert("event_types".into(), json!(event_types));
    }
    let url: Option<String> = if call == Call::Create {
        f.required("url", "an https URL string")
    } else {
        f.optional("url", "an https URL string")
    };
    if let Some(url) = url {
        v1.insert("url".into(), json!(url));
    }
    if let Some(name) = f.optional::<String>("name", "a string") {
        v1.insert("name".into(), json!(name));
    }
    if let Some(active) = f.optional::<bool>("isActive", "a boolean") {
        v1.insert("enabled".into(), json!(active));
    }
    if f.has("customHeaders") {
        // A flat map in every call (the seed's PATCH example nests maps,
        // which no other call does and no header can carry).
        let headers: Option<Map<String, Value>> =
            f.optional("customHeaders", "an object of header name to header value");
        if let Some(headers) = headers {
            for (name, value) in &headers {
                if !value.is_string() {
                    f.error(
                        &format!("customHeaders.{name}"),
                        "must be a string (customHeaders is a flat map of header name to value)",
                    );
                }
            }
            v1.insert("headers".into(), Value::Object(headers));
        }
    }
    if let Some(source) = f.optional::<Value>("eventSource", "an object with `scopes`") {
        v1.insert("filter".into(), v1_filter(&source, &mut errors));
    }
    // `subscriberId` is set once, on create.
    const FIELDS: [&str; 7] = [
        "subscriberId",
        "eventSource",
        "name",
        "eventTypes",
        "url",
        "isActive",
        "customHeaders",
    ];
    let known = if call == Call::Create {
        &FIELDS[..]
    } else {
        &FIELDS[1..]
    };
    errors.extend(f.finish(known));
    if errors.is_empty() {
        Ok(Value::Object(v1))
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The seed's subscription object, or `None` if the seed cannot express
/// the subscription (callback auth, `PUT`, a filter on an attribute
/// without a predicate type): then it is seen through `/v1` only.
pub fn subscription(s: &Subscription) -> Option<Value> {
    if s.spec.auth != CallbackAuth::None || s.spec.method != Method::Post {
        return None;
    }
    let mut out = json!({
        "id": s.id,
        "name": s.spec.name,
        "eventTypes": s.spec.event_types.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Some(subscriber) = s.spec.metadata.get(SUBSCRIBER_KEY) {
        out["subscriberId"] = json!(subscriber);
    }
    if let Some(filter) = &s.spec.filter {
        out["eventSource"] = event_source(filter)?;
    }
    out["url"] = json!(s.spec.url);
    out["customHeaders"] = json!(s.spec.masked_headers());
    out["isActive"] = json!(s.spec.enabled);
    out["createdBy"] = json!(s.created_by);
    out["updatedBy"] = json!(s.updated_by);
    out["createdAt"] = json!({"iso8601": format_rfc3339(s.created_at)});
    out["updatedAt"] = json!({"iso8601": format_rfc3339(s.updated_at)});
    Some(out)
}

fn find(state: &AppState, p: &Principal, id: &str) -> Result<Value, ApiError> {
    let s = crate::subscriptions::find(state, p, id)?;
    subscription(&s).ok_or_else(|| ApiError::not_found(format!("no webhook subscription {id}")))
}

/// `POST /v3/webhooks/subscriptions` → `200 {"id", "hmacSigningSecret",
/// "createdAt": {"iso8601"}}`.
async fn create(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let p = p?;
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let v1 = v1_body(&body, Call::Create)?;
    let s = crate::subscriptions::create_from(&state, &p, v1.to_string().as_bytes()).await?;
    Ok(Json(json!({
        "id": s.id,
        "hmacSigningSecret": s.signing_secret.expose(),
        "createdAt": {"iso8601": format_rfc3339(s.created_at)},
    })))
}

/// `GET /v3/webhooks/subscriptions/subscriber/{subscriberId}/list?limit&offset`
/// → `{"subscriptions", "totalCount"}`, oldest first.
async fn list(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    Path(subscriber): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let p = p?;
    let (limit, offset) = page(&query)?;
    let projection = state.subscriptions.read();
    // In id order (oldest first).
    let items: Vec<Value> = projection
        .of_tenant(&p.tenant_id)
        .filter(|s| s.spec.metadata.get(SUBSCRIBER_KEY) == Some(&subscriber))
        .filter_map(|s| subscription(&s))
        .collect();
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    Ok(Json(json!({"subscriptions": page, "totalCount": total})))
}

/// `limit` (1 to 1,000, default 50) and `offset` of a list query.
fn page(query: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    use crate::subscriptions::{DEFAULT_LIMIT, MAX_LIMIT};
    let mut errors = Vec::new();
    let limit = match query.get("limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                format!("must be an integer from 1 to {MAX_LIMIT}"),
            ));
            DEFAULT_LIMIT
        }
    };
    let offset = match query.get("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            errors.push(FieldError::new("offset", "must be an integer from 0"));
            0
        }
    };
    if errors.is_empty() {
        Ok((limit, offset))
    } else {
        Err(ApiError::validation(errors))
    }
}

/// `GET /v3/webhooks/subscriptions/{subscriptionId}`.
async fn one(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let p = p?;
    Ok(Json(find(&state, &p, &id)?))
}

/// `PATCH /v3/webhooks/subscriptions/{subscriptionId}`: present fields
/// replace, absent ones stay (`"customHeaders": {}` clears them) → `200`
/// with the subscription, as `GET` shows it.
async fn update(
    State(state): State<Arc<AppState>>,
    p: Result<Principal, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let p = p?;
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let patch = v1_body(&body, Call::Update)?;
    find(&state, &p, &id)?;
    crate::subscriptions::update_with(&state, &p, &id, patch.to_string().as_bytes()).await?;
    let s = crate::subscriptions::find(&state, &p, &id)?;
    let answer = subscription(&s).ok_or_else(|| {
        ApiError::conflict(
            "this subscription was changed through /v1 into a form the v3 API cannot show",
        )
    })?;
    Ok(Json(answer))
}

/// Its operations and schemas for the OpenAPI document (tag `spotnana`).
pub fn openapi() -> (Value, Value) {
    let security = json!([{"apiKey": []}]);
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": schema("SpotnanaErrorResponse")}}});
    let ok = |name: &str, what: &str| json!({"description": what, "content": {"application/json": {"schema": schema(name)}}});
    let id = json!({"name": "subscriptionId", "in": "path", "required": true, "schema": {"type": "string"}});
    let paths = json!({
        BASE: {"post": {"operationId": "spotnanaCreateWebhookSubscription", "tags": [NAME], "security": security,
            "summary": "Create webhook subscription",
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema("SpotnanaCreateWebhookSubscriptionRequest")}}},
            "responses": {"200": ok("SpotnanaCreateWebhookSubscriptionResponse", "Created"),
                "400": error("Invalid request"), "401": error("Unauthorized")}}},
        format!("{BASE}/subscriber/{{subscriberId}}/list"): {"get": {"operationId": "spotnanaListWebhookSubscriptions",
            "tags": [NAME], "security": security, "summary": "List a subscriber's webhook subscriptions, oldest first",
            "parameters": [
                {"name": "subscriberId", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}],
            "responses": {"200": ok("SpotnanaListWebhookSubscriptionsResponse", "Page of webhook subscriptions matching the request"),
                "400": error("Invalid request"), "401": error("Unauthorized")}}},
        format!("{BASE}/{{subscriptionId}}"): {
            "get": {"operationId": "spotnanaGetWebhookSubscription", "tags": [NAME], "security": security,
                "summary": "Get webhook subscription", "parameters": [id],
                "responses": {"200": ok("SpotnanaWebhookSubscription", "The subscription"),
                    "401": error("Unauthorized"), "404": error("Not found")}},
            "patch": {"operationId": "spotnanaUpdateWebhookSubscription", "tags": [NAME], "security": security,
                "summary": "Update webhook subscription: present fields replace, absent ones stay", "parameters": [id],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("SpotnanaUpdateWebhookSubscriptionRequest")}}},
                "responses": {"200": ok("SpotnanaWebhookSubscription", "The updated subscription"),
                    "409": error("Changed through /v1 meanwhile into a form the v3 API cannot show"),
                    "400": error("Invalid request"), "401": error("Unauthorized"), "404": error("Not found")}},
        },
    });
    let predicate = json!({"type": "object", "required": ["type", "values"], "additionalProperties": false, "properties": {
        "type": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$",
            "description": "The type of event source entity; matched on the event attribute `<type lowercased>_id`"},
        "values": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "List of entity IDs to match against"},
        "comparator": {"enum": ["IN", "NOT_IN", null], "description": "Comparator for evaluation. Defaults to IN."}}});
    let event_source = json!({"type": ["object", "null"], "required": ["scopes"], "properties": {
        "scopes": {"type": "array", "description": "Scopes OR'ed; no scope: every event", "items": {
            "type": "object", "required": ["predicates"], "additionalProperties": false,
            "properties": {"predicates": {"type": "array", "minItems": 1, "items": predicate}}}}}});
    let headers = json!({"type": ["object", "null"], "additionalProperties": {"type": "string"}});
    let timestamp = json!({"type": "object", "required": ["iso8601"], "properties": {"iso8601": {"type": "string"}}});
    let schemas = json!({
        "SpotnanaCreateWebhookSubscriptionRequest": {"type": "object", "required": ["subscriberId", "eventTypes", "url"],
            "additionalProperties": false, "properties": {
                "subscriberId": {"type": "string"}, "eventSource": event_source, "name": {"type": ["string", "null"]},
                "eventTypes": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "url": {"type": "string"}, "isActive": {"type": ["boolean", "null"]}, "customHeaders": headers}},
        "SpotnanaUpdateWebhookSubscriptionRequest": {"type": "object", "additionalProperties": false, "properties": {
                "eventSource": event_source, "name": {"type": ["string", "null"]},
                "eventTypes": {"type": ["array", "null"], "minItems": 1, "items": {"type": "string"}},
                "isActive": {"type": ["boolean", "null"]}, "url": {"type": ["string", "null"]}, "customHeaders": headers}},
        "SpotnanaCreateWebhookSubscriptionResponse": {"type": "object", "required": ["id", "hmacSigningSecret", "createdAt"],
            "additionalProperties": false, "properties": {
                "id": {"type": "string"}, "hmacSigningSecret": {"type": "string"}, "createdAt": timestamp}},
        "SpotnanaWebhookSubscription": {"type": "object",
            "required": ["id", "name", "eventTypes", "url", "customHeaders", "isActive", "createdBy", "updatedBy", "createdAt", "updatedAt"],
            "additionalProperties": false, "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "eventTypes": {"type": "array", "items": {"type": "string"}},
                "subscriberId": {"type": "string", "description": "UUID of the company that owns this webhook subscription"},
                "eventSource": event_source, "url": {"type": "string"},
                "customHeaders": {"type": "object", "additionalProperties": {"type": "string"}},
                "isActive": {"type": "boolean"}, "createdBy": {"type": "string"}, "updatedBy": {"type": "string"},
                "createdAt": timestamp, "updatedAt": timestamp}},
        "SpotnanaListWebhookSubscriptionsResponse": {"type": "object", "required": ["subscriptions", "totalCount"],
            "additionalProperties": false, "properties": {
                "subscriptions": {"type": "array", "items": schema("SpotnanaWebhookSubscription")},
                "totalCount": {"type": "integer"}}},
        "SpotnanaErrorResponse": {"type": "object", "required": ["debugIdentifier", "errorMessages"], "properties": {
            "debugIdentifier": {"type": "string", "description": "Names this refusal in the ingest log"},
            "errorMessages": {"type": "array", "items": {"type": "object", "required": ["errorCode", "message"], "properties": {
                "errorCode": {"type": "string"}, "message": {"type": "string"},
                "errorParameters": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "value": {"type": "string"}}}}}}}}},
    });
    (paths, schemas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate_types_name_attributes_and_back() {
        assert_eq!(attribute_of("COMPANY").as_deref(), Some("company_id"));
        assert_eq!(
            attribute_of("LEGAL_ENTITY").as_deref(),
            Some("legal_entity_id")
        );
        assert_eq!(attribute_of("company"), None);
        assert_eq!(attribute_of(""), None);
        assert_eq!(attribute_of("1X"), None);
        assert_eq!(type_of("company_id").as_deref(), Some("COMPANY"));
        assert_eq!(type_of("dc_id").as_deref(), Some("DC"));
        assert_eq!(type_of("tenant"), None);
        assert_eq!(type_of("_id"), None);
        assert_eq!(type_of("Company_id"), None);
    }

    #[test]
    fn the_seeds_create_example_is_a_v1_body() {
        let v1 = v1_body(
            br#"{"subscriberId": "96d0a1b8-7f77-4d5c-847e-2afd90ed23b3",
                 "eventSource": {"scopes": [{"predicates": [{"type": "COMPANY",
                     "values": ["497f6eca-6276-4993-bfeb-53cbbbba6f08"], "comparator": "IN"}]}]},
                 "name": "string", "eventTypes": ["TRAVELER_V2"], "url": "http://example.com",
                 "isActive": true,
                 "customHeaders": {"X-Custom-Header": "my-value", "Authorization-Extra": "token123"}}"#,
            Call::Create,
        )
        .unwrap();
        assert_eq!(
            v1,
            json!({"metadata": {SUBSCRIBER_KEY: "96d0a1b8-7f77-4d5c-847e-2afd90ed23b3"},
                   "event_types": ["TRAVELER_V2"], "url": "http://example.com", "name": "string",
                   "enabled": true,
                   "headers": {"X-Custom-Header": "my-value", "Authorization-Extra": "token123"},
                   "filter": {"scopes": [{"predicates": [{"attribute": "company_id",
                       "values": ["497f6eca-6276-4993-bfeb-53cbbbba6f08"], "comparator": "IN"}]}]}})
        );
    }

    #[test]
    fn the_comparator_defaults_to_in_and_a_patch_takes_only_what_it_names() {
        let v1 = v1_body(
            br#"{"eventSource": {"scopes": [{"predicates": [{"type": "DC", "values": ["7"]}]}]}}"#,
            Call::Update,
        )
        .unwrap();
        assert_eq!(
            v1,
            json!({"filter": {"scopes": [{"predicates": [
                {"attribute": "dc_id", "values": ["7"], "comparator": "IN"}]}]}})
        );
        assert_eq!(
            v1_body(br#"{"isActive": false}"#, Call::Update).unwrap(),
            json!({"enabled": false})
        );
    }

    #[test]
    fn refusals_name_the_seeds_fields() {
        let e = v1_body(
            br#"{"eventTypes": [], "url": 5, "isActive": "yes",
                 "eventSource": {"scopes": [{"predicates": [{"type": "company", "values": ["c"]}]}]}}"#,
            Call::Create,
        )
        .unwrap_err();
        let fields: Vec<String> = e.details().iter().map(|d| seed_field(&d.field)).collect();
        for field in [
            "subscriberId",
            "eventTypes",
            "url",
            "isActive",
            "eventSource.scopes[0].predicates[0].type",
        ] {
            assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
        }
        // The seed's PATCH example nests maps in customHeaders; a header
        // value is a string.
        let e = v1_body(
            br#"{"customHeaders": {"headerName1": {"X-Custom-Header": "my-value"}}}"#,
            Call::Update,
        )
        .unwrap_err();
        assert_eq!(
            seed_field(&e.details()[0].field),
            "customHeaders.headerName1"
        );
        let e = v1_body(br#"{"subscriberId": "x"}"#, Call::Update).unwrap_err();
        assert_eq!(e.details()[0].field, "subscriberId");
        assert_eq!(seed_field("headers.X-A"), "customHeaders.X-A");
        assert_eq!(seed_field("enabled"), "isActive");
        assert_eq!(
            seed_field("filter.scopes[1].predicates[0].values"),
            "eventSource.scopes[1].predicates[0].values"
        );
    }
}
