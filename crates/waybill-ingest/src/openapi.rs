//! The OpenAPI document of the HTTP API, built from the same operation table
//! the router is built from, and from the limits the validators enforce, so
//! the two cannot drift apart.

use serde_json::{Map, Value, json};
use waybill_core::auth::{AUTH_TYPES, MASK};
use waybill_core::catalog::Catalog;
use waybill_core::event::{EVENT_FIELDS, MAX_ATTRIBUTES, MAX_ID_LEN};
use waybill_core::filter::{MAX_PREDICATES, MAX_SCOPES, MAX_VALUES};
use waybill_core::retry::MAX_ATTEMPTS;
use waybill_core::subscription::{
    DEFAULT_MAX_IN_FLIGHT, MAX_EVENT_TYPES, MAX_HEADERS, MAX_IN_FLIGHT, MAX_METADATA, MAX_NAME_LEN,
    MAX_RATE_LIMIT, Method, Ordering, SHOWN_STATUSES, SUBSCRIPTION_FIELDS,
};
use waybill_core::url_policy::MAX_URL_LEN;

use crate::subscriptions::{DEFAULT_LIMIT, MAX_LIMIT};

/// Every operation the API serves. The router maps each to its handler with
/// an exhaustive `match`, so a new operation cannot be routed without being
/// documented, nor documented without being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateEvent,
    CreateEvents,
    ListEventTypes,
    AddEventType,
    DeleteEventType,
    GetCallbackSecret,
    CreateSubscription,
    ListSubscriptions,
    GetSubscription,
    UpdateSubscription,
    ReplaceSubscription,
    DeleteSubscription,
    ResetSubscription,
    PauseSubscription,
    ResumeSubscription,
    TestSubscription,
    GetSigningSecret,
    RotateSigningSecret,
    ListDeliveries,
    SearchDeliveries,
    GetDelivery,
    RetryDelivery,
    ReplaySubscription,
    GetReplay,
    CreatePortalSession,
    CreateTenant,
    ListTenants,
    GetTenant,
    CreateApiKey,
    DeleteApiKey,
    OpenApi,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A tenant's API key.
    Tenant,
    /// The operator token.
    Operator,
    /// Anyone (no credentials).
    Anyone,
}

/// What the document says about one operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template with `{param}` segments.
    pub path: &'static str,
    /// `operationId`.
    pub id: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Who may call it.
    pub caller: Caller,
    /// Schema of the JSON body, if it takes one; `true` = required.
    pub body: Option<(&'static str, bool)>,
    /// Success status and the schema of its body (`None` = no body).
    pub success: (u16, Option<&'static str>),
    /// Whether it honours `Idempotency-Key`.
    pub idempotent: bool,
}

impl Op {
    /// Every operation, in the order the document lists them.
    pub const ALL: [Op; 31] = [
        Op::CreateEvent,
        Op::CreateEvents,
        Op::ListEventTypes,
        Op::AddEventType,
        Op::DeleteEventType,
        Op::GetCallbackSecret,
        Op::CreateSubscription,
        Op::ListSubscriptions,
        Op::GetSubscription,
        Op::UpdateSubscription,
        Op::ReplaceSubscription,
        Op::DeleteSubscription,
        Op::ResetSubscription,
        Op::PauseSubscription,
        Op::ResumeSubscription,
        Op::TestSubscription,
        Op::GetSigningSecret,
        Op::RotateSigningSecret,
        Op::ListDeliveries,
        Op::SearchDeliveries,
        Op::GetDelivery,
        Op::RetryDelivery,
        Op::ReplaySubscription,
        Op::GetReplay,
        Op::CreatePortalSession,
        Op::CreateTenant,
        Op::ListTenants,
        Op::GetTenant,
        Op::CreateApiKey,
        Op::DeleteApiKey,
        Op::OpenApi,
    ];

    /// The operation's entry in the document.
    pub fn spec(self) -> Operation {
        const SUB: &str = "/v1/subscriptions/{id}";
        let op = |method, path, id, summary, caller, body, success| Operation {
            method,
            path,
            id,
            summary,
            caller,
            body,
            success,
            idempotent: false,
        };
        use Caller::*;
        match self {
            Op::CreateEvent => op(
                "POST",
                "/v1/events",
                "createEvent",
                "Publish a domain event to its topic",
                Tenant,
                Some(("EventInput", true)),
                (202, Some("EventAccepted")),
            ),
            Op::CreateEvents => op(
                "POST",
                "/v1/events/batch",
                "createEvents",
                "Publish up to 1,000 events; each item is accepted or refused on its own",
                Tenant,
                Some(("EventBatchInput", true)),
                (202, Some("EventBatchResult")),
            ),
            Op::ListEventTypes => op(
                "GET",
                "/v1/event_types",
                "listEventTypes",
                "The event catalog: every event name accepted, its domain, topic and description",
                Tenant,
                None,
                (200, Some("EventTypeList")),
            ),
            Op::AddEventType => op(
                "POST",
                "/v1/event_types",
                "addEventType",
                "Add an event type to the catalog, for another naming scheme (operator)",
                Operator,
                Some(("EventTypeInput", true)),
                (201, Some("EventType")),
            ),
            Op::DeleteEventType => op(
                "DELETE",
                "/v1/event_types/{name}",
                "deleteEventType",
                "Remove an event type added through the API (operator); built-in and configured ones stay",
                Operator,
                None,
                (204, None),
            ),
            Op::GetCallbackSecret => op(
                "GET",
                "/v1/callbacks/secret",
                "getCallbackSecret",
                "The secret signing deliveries to per-event callback_url (of the tenant's callbacks subscription, created on first use)",
                Tenant,
                None,
                (200, Some("CallbackSecret")),
            ),
            Op::CreateSubscription => Operation {
                idempotent: true,
                ..op(
                    "POST",
                    "/v1/subscriptions",
                    "createSubscription",
                    "Create a subscription; the answer holds its signing secret",
                    Tenant,
                    Some(("SubscriptionInput", true)),
                    (201, Some("CreatedSubscription")),
                )
            },
            Op::ListSubscriptions => op(
                "GET",
                "/v1/subscriptions",
                "listSubscriptions",
                "List the tenant's subscriptions, oldest first, with a total count",
                Tenant,
                None,
                (200, Some("SubscriptionList")),
            ),
            Op::GetSubscription => op(
                "GET",
                SUB,
                "getSubscription",
                "Get a subscription",
                Tenant,
                None,
                (200, Some("Subscription")),
            ),
            Op::UpdateSubscription => op(
                "PATCH",
                SUB,
                "updateSubscription",
                "Partial update: present fields replace, absent fields stay, null resets to the default; \"headers\": {} clears headers",
                Tenant,
                Some(("SubscriptionPatch", true)),
                (200, Some("Subscription")),
            ),
            Op::ReplaceSubscription => op(
                "PUT",
                SUB,
                "replaceSubscription",
                "Full replacement (same body as create); masked credentials sent back keep their stored value",
                Tenant,
                Some(("SubscriptionInput", true)),
                (200, Some("Subscription")),
            ),
            Op::DeleteSubscription => op(
                "DELETE",
                SUB,
                "deleteSubscription",
                "Delete a subscription; no delivery starts for it afterwards",
                Tenant,
                None,
                (204, None),
            ),
            Op::ResetSubscription => op(
                "POST",
                "/v1/subscriptions/{id}/reset",
                "resetSubscription",
                "Clear the failure state and re-enable",
                Tenant,
                None,
                (200, Some("Subscription")),
            ),
            Op::PauseSubscription => op(
                "POST",
                "/v1/subscriptions/{id}/pause",
                "pauseSubscription",
                "Pause: nothing is sent, nothing matched is dropped (kept for delivery.pause_retention, then dead); 409 if the subscription is disabled",
                Tenant,
                None,
                (200, Some("Subscription")),
            ),
            Op::ResumeSubscription => op(
                "POST",
                "/v1/subscriptions/{id}/resume",
                "resumeSubscription",
                "Resume: back to the status it had; the kept deliveries go out first, per entity in order",
                Tenant,
                None,
                (200, Some("Subscription")),
            ),
            Op::TestSubscription => Operation {
                idempotent: true,
                ..op(
                    "POST",
                    "/v1/subscriptions/{id}/test",
                    "testSubscription",
                    "Send a waybill.test event to this subscription only",
                    Tenant,
                    None,
                    (202, Some("TestQueued")),
                )
            },
            Op::GetSigningSecret => op(
                "GET",
                "/v1/subscriptions/{id}/secret",
                "getSigningSecret",
                "The current signing secret",
                Tenant,
                None,
                (200, Some("SigningSecret")),
            ),
            Op::RotateSigningSecret => op(
                "POST",
                "/v1/subscriptions/{id}/secret/rotate",
                "rotateSigningSecret",
                "New signing secret; the old one keeps signing (second signature) for the overlap window",
                Tenant,
                None,
                (200, Some("SigningSecret")),
            ),
            Op::ListDeliveries => op(
                "GET",
                "/v1/subscriptions/{id}/deliveries",
                "listDeliveries",
                "The subscription's latest deliveries, newest first by creation; `next_cursor` pages on",
                Tenant,
                None,
                (200, Some("DeliveryList")),
            ),
            Op::SearchDeliveries => op(
                "GET",
                "/v1/deliveries",
                "searchDeliveries",
                "The tenant's deliveries across its subscriptions (also deleted ones, while the history keeps them), newest first by creation: every delivery about one entity with `entity_id`",
                Tenant,
                None,
                (200, Some("DeliveryList")),
            ),
            Op::GetDelivery => op(
                "GET",
                "/v1/deliveries/{id}",
                "getDelivery",
                "A delivery and its attempts",
                Tenant,
                None,
                (200, Some("Delivery")),
            ),
            Op::RetryDelivery => Operation {
                idempotent: true,
                ..op(
                    "POST",
                    "/v1/deliveries/{id}/retry",
                    "retryDelivery",
                    "Deliver again now, with the same webhook-id (also a dead one)",
                    Tenant,
                    None,
                    (202, Some("RetryQueued")),
                )
            },
            Op::ReplaySubscription => Operation {
                idempotent: true,
                ..op(
                    "POST",
                    "/v1/subscriptions/{id}/replay",
                    "replaySubscription",
                    "Re-deliver the events written within since..until that the subscription matches (only failed or dead ones with only_failed)",
                    Tenant,
                    Some(("ReplayInput", true)),
                    (202, Some("ReplayAccepted")),
                )
            },
            Op::GetReplay => op(
                "GET",
                "/v1/replays/{id}",
                "getReplay",
                "A replay job: its status and progress (it goes on after a restart of the process that ran it)",
                Tenant,
                None,
                (200, Some("Replay")),
            ),
            Op::CreatePortalSession => op(
                "POST",
                "/v1/portal/sessions",
                "createPortalSession",
                "Open a portal session for the tenant's users: `url` opens GET /portal with the session's token after `#`; the token works only for the portal's calls of this tenant, until `expires_at`",
                Tenant,
                Some(("PortalSessionInput", false)),
                (201, Some("PortalSession")),
            ),
            Op::CreateTenant => op(
                "POST",
                "/v1/tenants",
                "createTenant",
                "Create a tenant (operator)",
                Operator,
                Some(("TenantInput", true)),
                (201, Some("CreatedTenant")),
            ),
            Op::ListTenants => op(
                "GET",
                "/v1/tenants",
                "listTenants",
                "List tenants (operator)",
                Operator,
                None,
                (200, Some("TenantList")),
            ),
            Op::GetTenant => op(
                "GET",
                "/v1/tenants/{id}",
                "getTenant",
                "Get a tenant and its key ids (operator)",
                Operator,
                None,
                (200, Some("Tenant")),
            ),
            Op::CreateApiKey => op(
                "POST",
                "/v1/tenants/{id}/api_keys",
                "createApiKey",
                "Issue (or import) an API key; the key is shown once and stored hashed (operator)",
                Operator,
                Some(("ApiKeyInput", false)),
                (201, Some("CreatedApiKey")),
            ),
            Op::DeleteApiKey => op(
                "DELETE",
                "/v1/tenants/{id}/api_keys/{key_id}",
                "deleteApiKey",
                "Revoke an API key (operator)",
                Operator,
                None,
                (204, None),
            ),
            Op::OpenApi => op(
                "GET",
                "/v1/openapi.json",
                "getOpenApi",
                "This document",
                Anyone,
                None,
                (200, None),
            ),
        }
    }
}

/// The OpenAPI 3.1 document of this deployment (the event-name enum comes
/// from its catalog).
pub fn document(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    for op in Op::ALL {
        let spec = op.spec();
        let entry = paths
            .entry(spec.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        entry.insert(spec.method.to_ascii_lowercase(), operation(op, &spec));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Waybill",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Kafka-native webhook delivery. Every 4xx/5xx answer has the Error body; \
                a request with several invalid fields lists them all in `details`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A tenant API key (`wb_...`); `X-Api-Key: <key>` is accepted too."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "The operator token from the deployment's configuration."},
            },
            "schemas": schemas(catalog),
        },
    })
}

/// `doc` with the operations and schemas of the enabled `dialects`, each
/// under a tag of its own.
pub fn with_dialects(mut doc: Value, dialects: &[String]) -> Value {
    for dialect in dialects {
        let (paths, schemas) = match dialect.as_str() {
            crate::dialects::route_planner::NAME => crate::dialects::route_planner::openapi(),
            crate::dialects::logistics_2023_07::NAME => {
                crate::dialects::logistics_2023_07::openapi()
            }
            crate::dialects::spotgo::NAME => crate::dialects::spotgo::openapi(),
            crate::dialects::spotnana::NAME => crate::dialects::spotnana::openapi(),
            _ => continue,
        };
        let mut paths = paths;
        answers_of_every_call(&mut paths);
        if let (Some(into), Some(from)) = (doc["paths"].as_object_mut(), paths.as_object()) {
            into.extend(from.clone());
        }
        if let (Some(into), Some(from)) = (
            doc["components"]["schemas"].as_object_mut(),
            schemas.as_object(),
        ) {
            into.extend(from.clone());
        }
    }
    doc
}

/// Adds to each of a dialect's operations the errors that any call can
/// get before its handler runs, in the dialect's error shape (that of its
/// `401`): `429` (a tenant quota), and for a call with a body `413` and
/// `415`.
fn answers_of_every_call(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in operation.values_mut() {
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(content) = responses.get("401").and_then(|r| r.get("content")).cloned() else {
                continue;
            };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status)
                    .or_insert_with(|| json!({"description": description, "content": content}));
            };
            add(
                "429",
                "A quota of the tenant is used up; `Retry-After` says when to try again",
            );
            if has_body {
                add("413", "The body is over the size limit");
                add(
                    "415",
                    "The body is not sent as `Content-Type: application/json`",
                );
            }
        }
    }
}

fn operation(op: Op, spec: &Operation) -> Value {
    let mut o = json!({
        "operationId": spec.id,
        "summary": spec.summary,
        "tags": [tag(spec.path)],
    });
    o["security"] = match spec.caller {
        Caller::Tenant => json!([{"apiKey": []}, {"apiKeyHeader": []}]),
        Caller::Operator => json!([{"operatorToken": []}]),
        Caller::Anyone => json!([]),
    };
    let mut params: Vec<Value> = spec
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if op == Op::ListSubscriptions {
        params.extend(list_parameters());
    }
    if matches!(op, Op::ListDeliveries | Op::SearchDeliveries) {
        if op == Op::SearchDeliveries {
            params.push(json!({"name": "subscription_id", "in": "query", "schema": {"type": "string", "minLength": 1}}));
        }
        params.extend([
            json!({"name": "entity_id", "in": "query", "description": "Only deliveries of events about this freight, order, time slot...", "schema": {"type": "string", "minLength": 1}}),
            json!({"name": "event_name", "in": "query", "schema": {"type": "string", "minLength": 1}}),
            json!({"name": "status", "in": "query", "schema": {"type": "string", "enum": words(crate::history::Status::ALL.map(|s| s.as_str()))}}),
            json!({"name": "since", "in": "query", "description": "Created at or after (RFC 3339)", "schema": {"type": "string", "format": "date-time"}}),
            json!({"name": "until", "in": "query", "description": "Created at or before (RFC 3339)", "schema": {"type": "string", "format": "date-time"}}),
            json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}),
            json!({"name": "cursor", "in": "query", "description": "`next_cursor` of the previous page, as it is", "schema": {"type": "string", "minLength": 1}}),
        ]);
    }
    if conditional(op) {
        params.push(json!({
            "name": "If-Match", "in": "header", "required": false,
            "description": "`\"<revision>\"` (the subscription's ETag; also taken without quotes): the call changes nothing and answers 412 unless it is the current revision; `*` or no header: any revision.",
            "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
        }));
    }
    if spec.idempotent {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A repeat with the same key within 24 h answers the first result; a different body under the same key answers 409.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
        }));
    }
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if let Some((schema, required)) = spec.body {
        o["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": schema_ref(schema)}},
        });
    }
    let (status, body) = spec.success;
    let mut responses = Map::new();
    responses.insert(
        status.to_string(),
        match body {
            Some(schema) if tagged(op) => json!({
                "description": "Success",
                "headers": {"ETag": {
                    "description": "`\"<revision>\"` of the subscription, for If-Match",
                    "schema": {"type": "string"},
                }},
                "content": {"application/json": {"schema": schema_ref(schema)}},
            }),
            Some(schema) => json!({
                "description": "Success",
                "content": {"application/json": {"schema": schema_ref(schema)}},
            }),
            None if op == Op::OpenApi => json!({
                "description": "This document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }),
            None => json!({"description": "Success, no body"}),
        },
    );
    for (status, when) in error_statuses(op, spec) {
        let mut answer = json!({
            "description": when,
            "content": {"application/json": {"schema": schema_ref("Error")}},
        });
        if matches!(status, 429 | 503) {
            answer["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before sending the request again",
                "schema": {"type": "integer", "minimum": 1},
            }});
        }
        responses.insert(status.to_string(), answer);
    }
    o["responses"] = Value::Object(responses);
    o
}

fn tag(path: &str) -> &'static str {
    if path.starts_with("/v1/events") {
        "events"
    } else if path.starts_with("/v1/deliveries")
        || path.ends_with("/deliveries")
        || path.ends_with("/replay")
        || path.starts_with("/v1/replays")
    {
        "deliveries"
    } else if path.starts_with("/v1/subscriptions") {
        "subscriptions"
    } else if path.starts_with("/v1/tenants") {
        "tenants"
    } else if path.starts_with("/v1/portal") {
        "portal"
    } else {
        "meta"
    }
}

/// The error answers an operation can give, besides 500 `internal`.
fn error_statuses(op: Op, spec: &Operation) -> Vec<(u16, &'static str)> {
    let mut out = Vec::new();
    if spec.body.is_some()
        || spec.idempotent
        || conditional(op)
        || matches!(
            op,
            Op::ListSubscriptions | Op::ListDeliveries | Op::SearchDeliveries
        )
    {
        out.push((
            400,
            "`validation_failed`: every invalid field (or header: If-Match, Idempotency-Key) in `details`",
        ));
    }
    if spec.caller != Caller::Anyone {
        out.push((
            401,
            "`unauthorized`: missing or unknown credentials (or an API key on an operator call)",
        ));
    }
    if spec.caller == Caller::Tenant {
        out.push((
            403,
            "`forbidden`: a portal session's token on a call it may not make (a change by a read-only session, or a call outside the portal's)",
        ));
    }
    if spec.path.contains('{') {
        out.push((404, "`not_found`: no such object for this caller"));
    }
    if conditional(op) {
        out.push((
            409,
            "`conflict`: concurrent writes kept changing the subscription, or the change no longer applies to its new state; send it again",
        ));
        out.push((
            412,
            "`precondition_failed`: If-Match does not name the current revision; nothing changed",
        ));
    } else if matches!(op, Op::RetryDelivery | Op::ReplaySubscription) {
        out.push((
            409,
            "`conflict`: the subscription is disabled, the task is no longer in the log, or the Idempotency-Key is used",
        ));
    } else if spec.idempotent
        || matches!(op, Op::CreateTenant | Op::CreateApiKey | Op::AddEventType)
    {
        out.push((409, "`conflict`: the id or Idempotency-Key is already used"));
    }
    if spec.body.is_some() {
        out.push((413, "`payload_too_large`"));
        out.push((
            415,
            "`unsupported_media_type`: send `content-type: application/json`",
        ));
    }
    if spec.caller == Caller::Tenant {
        out.push((
            429,
            "`rate_limited`: a quota of the tenant is used up (calls per second, Idempotency-Keys, running replays); retry after `Retry-After` seconds",
        ));
    }
    if op != Op::OpenApi && spec.method != "GET" {
        out.push((
            503,
            "`unavailable`: Kafka did not acknowledge in time; retry",
        ));
    }
    out.push((500, "`internal`"));
    out
}

/// Calls that take `If-Match`.
fn conditional(op: Op) -> bool {
    matches!(
        op,
        Op::UpdateSubscription
            | Op::ReplaceSubscription
            | Op::DeleteSubscription
            | Op::ResetSubscription
            | Op::PauseSubscription
            | Op::ResumeSubscription
            | Op::RotateSigningSecret
    )
}

/// Calls whose answer carries the subscription's `ETag`.
fn tagged(op: Op) -> bool {
    conditional(op) && op != Op::DeleteSubscription
        || matches!(op, Op::CreateSubscription | Op::GetSubscription)
}

/// The values of an enum, for the document (from the code's own list, so
/// that no value is served without being documented).
fn words<const N: usize>(all: [&'static str; N]) -> Value {
    all.into_iter().map(Value::from).collect()
}

fn list_parameters() -> Vec<Value> {
    vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}),
        json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}}),
        json!({"name": "enabled", "in": "query", "schema": {"type": "boolean"}}),
        json!({"name": "status", "in": "query", "schema": {"type": "string", "enum": words(SHOWN_STATUSES)}}),
        json!({"name": "event_type", "in": "query", "description": "Subscriptions that would receive this event name, or that list this exact pattern", "schema": {"type": "string"}}),
    ]
}

/// What `If-Match` may hold: `*`, or a list of entity tags (strong ones
/// are revisions, also taken without their quotes; weak ones are valid but
/// never match).
const IF_MATCH_PATTERN: &str = r#"^(\*|(W/"[!#-~]*"|"[0-9]{1,19}"|[0-9]{1,19})( *, *(W/"[!#-~]*"|"[0-9]{1,19}"|[0-9]{1,19}))*)$"#;

/// The largest `offset` the server takes.
const MAX_OFFSET: u64 = u64::MAX;

/// `schema`, or `null` (an optional field sent as null is left out).
fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Every schema. Request schemas are closed (`additionalProperties: false`)
/// because the server rejects unknown fields.
fn schemas(catalog: &Catalog) -> Value {
    let timestamp = json!({"type": "string", "format": "date-time"});
    let nullable_string = json!({"type": ["string", "null"]});
    let event_names: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    let (delivery_props, delivery_full) = delivery_schemas(&timestamp);

    let subscription_input = {
        let mut props = Map::new();
        for field in SUBSCRIPTION_FIELDS {
            props.insert((*field).to_owned(), subscription_field(field, catalog));
        }
        json!({
            "type": "object",
            "required": ["url", "event_types"],
            "properties": props,
            "additionalProperties": false,
            "example": {
                "name": "carrier TMS",
                "url": "https://hooks.example.com/waybill",
                "method": "POST",
                "event_types": ["freights.publication.*"],
                "filter": {"scopes": [{"predicates": [
                    {"attribute": "company_id", "comparator": "IN", "values": ["c-1", "c-2"]}]}]},
                "auth": {"type": "bearer", "token": "s3cr3t-token"},
                "headers": {"X-Custom-Header": "my-value"},
                "enabled": true,
                "rate_limit_per_second": 50,
                "retry_policy": {"delays": ["5s", "5m", "30m", "2h"]},
                "ordering": "strict",
                "max_in_flight": 8,
                "metadata": {"team": "ops"},
            },
        })
    };
    // `null` stands for the default of an optional field, in every body
    // (in a patch: resets it).
    let mut subscription_input = subscription_input;
    for nullable in NULLABLE_FIELDS {
        let prop = &mut subscription_input["properties"][nullable];
        *prop = json!({"oneOf": [prop.take(), {"type": "null"}]});
    }
    let mut subscription_patch = subscription_input.clone();
    subscription_patch
        .as_object_mut()
        .expect("object")
        .remove("required");
    subscription_patch["example"] = json!({"enabled": false, "headers": {}});

    let mut subscription_props = Map::new();
    for field in SUBSCRIPTION_FIELDS {
        let mut schema = subscription_field(field, catalog);
        if *field == "auth" {
            schema = schema_ref("MaskedAuth");
        }
        if matches!(*field, "filter" | "rate_limit_per_second" | "retry_policy") {
            schema = json!({"oneOf": [schema, {"type": "null"}]});
        }
        subscription_props.insert((*field).to_owned(), schema);
    }
    for (field, schema) in [
        ("id", json!({"type": "string"})),
        ("tenant_id", json!({"type": "string"})),
        (
            "status",
            json!({"type": "string", "enum": words(SHOWN_STATUSES)}),
        ),
        ("disabled_reason", nullable_string.clone()),
        (
            "failing_since",
            json!({"oneOf": [timestamp.clone(), {"type": "null"}], "description": "Since when every attempt failed (status `failing`)"}),
        ),
        ("created_at", timestamp.clone()),
        ("updated_at", timestamp.clone()),
        (
            "created_by",
            json!({"type": "string", "description": "API key id"}),
        ),
        (
            "updated_by",
            json!({"type": "string", "description": "API key id"}),
        ),
        (
            "revision",
            json!({"type": "integer", "minimum": 1, "description": "1 on create, one more with every change a user makes (health changes do not count); the ETag of the answer, for If-Match"}),
        ),
    ] {
        subscription_props.insert(field.to_owned(), schema);
    }
    let all_fields: Vec<&String> = subscription_props.keys().collect();
    let subscription = json!({
        "type": "object",
        "required": all_fields,
        "properties": subscription_props,
        "additionalProperties": false,
    });
    let mut subscription = subscription;
    // The tenant's callbacks subscription (GET /v1/callbacks/secret) selects
    // no event type: the events' own callback_url chooses its deliveries.
    subscription["properties"]["event_types"]["minItems"] = 0.into();
    subscription["properties"]["event_types"]["description"] =
        "Empty only for the callbacks subscription, which receives the events that name a callback_url".into();
    let mut created = subscription.clone();
    created["properties"]["signing_secret"] = json!({"type": "string", "pattern": "^whsec_", "description": "Shown here and by GET .../secret"});
    created["required"]
        .as_array_mut()
        .expect("array")
        .push("signing_secret".into());

    let mut event_props = Map::new();
    for field in EVENT_FIELDS {
        let schema = match *field {
            "event_name" => json!({"type": "string", "enum": event_names}),
            "id" => {
                json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN, "description": "Client id; a repeat within the dedup window is accepted once"})
            }
            "occurred_at" => timestamp.clone(),
            "entity" => json!({
                "type": "object",
                "description": "Without `id`, the event's `id` is the partition key",
                "properties": {
                    "type": {"type": ["string", "null"]},
                    "id": {"type": ["string", "null"], "maxLength": MAX_ID_LEN, "description": "Partition key: events of one entity are delivered in order"},
                },
                "additionalProperties": false,
            }),
            "attributes" => json!({
                "type": "object", "maxProperties": MAX_ATTRIBUTES,
                "additionalProperties": {"type": ["string", "number", "boolean"]},
                "description": "What filters compare, as text (7 and \"7\" are the same)",
            }),
            "data" => json!({"description": "Any JSON; delivered as is"}),
            "callback_url" => json!({"type": "string", "format": "iri", "maxLength": MAX_URL_LEN}),
            other => json!({"description": other}),
        };
        // An optional field sent as `null` is taken as left out.
        let schema = if *field == "event_name" {
            schema
        } else {
            or_null(schema)
        };
        event_props.insert((*field).to_owned(), schema);
    }

    let error_codes: Vec<&str> = crate::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": false,
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": false,
                "properties": {
                    "code": {"type": "string", "enum": error_codes},
                    "message": {"type": "string", "description": "What is wrong and what to do about it"},
                    "field": {"type": "string", "description": "Path of the first invalid field, e.g. `event_types[2]`"},
                    "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The request's trace id, as in the answer's `traceparent` header: quote it in a support request"},
                    "details": {"type": "array", "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "additionalProperties": false,
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
            }},
        },
        "EventInput": {
            "type": "object",
            "required": ["event_name"],
            "properties": event_props,
            "additionalProperties": false,
            "example": {
                "event_name": "freights.publication.accepted",
                "occurred_at": "2026-11-22T10:00:00Z",
                "entity": {"type": "freight", "id": "12345"},
                "attributes": {"company_id": "c-1", "dc_id": "7"},
                "data": {"price": 1000},
            },
        },
        "EventAccepted": {
            "type": "object",
            "required": ["id", "topic", "partition", "offset"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "topic": {"type": "string"},
                "partition": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "EventBatchInput": {
            "type": "object",
            "required": ["events"],
            "additionalProperties": false,
            "properties": {
                "events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
                    "type": "object",
                    "description": "An EventInput; each is judged on its own, an invalid one gets its error in `results` and the others are published",
                }},
            },
            "example": {"events": [
                {"event_name": "freights.publication.created", "id": "pub-12345-created",
                 "entity": {"type": "freight", "id": "12345"}, "data": {"price": 1000}},
                {"event_name": "freights.publication.accepted",
                 "entity": {"type": "freight", "id": "12345"}, "data": {"carrier_id": "c-9"}},
            ]},
        },
        "EventBatchResult": {
            "type": "object",
            "required": ["results", "accepted", "refused"],
            "additionalProperties": false,
            "properties": {
                "results": {"type": "array", "description": "One per event, in order", "items": {
                    "oneOf": [schema_ref("EventAccepted"), schema_ref("Error")],
                }},
                "accepted": {"type": "integer", "minimum": 0},
                "refused": {"type": "integer", "minimum": 0},
            },
        },
        "EventType": {
            "type": "object",
            "required": ["name", "domain", "topic", "description"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "description": "What `event_name` and subscription `event_types` use"},
                "domain": {"type": "string"},
                "topic": {"type": "string", "description": "The Kafka topic its records go to (before the deployment's prefix)"},
                "description": {"type": "string"},
            },
        },
        "EventTypeInput": {
            "type": "object",
            "required": ["name", "topic"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "maxLength": 255, "description": "Segments of letters, digits, `_` or `-`, separated by `.`"},
                "topic": {"type": "string", "enum": words(waybill_core::catalog::DomainTopic::ALL.map(|t| t.name()))},
                "description": or_null(json!({"type": "string", "maxLength": 1024})),
                "domain": or_null(json!({"type": "string", "description": "Default (or null): the first segment of the name"})),
            },
            "example": {"name": "Shipment.Created", "topic": "freights", "description": "A shipment was created."},
        },
        "EventTypeList": {
            "type": "object",
            "required": ["event_types"],
            "additionalProperties": false,
            "properties": {
                "event_types": {"type": "array", "items": schema_ref("EventType")},
            },
        },
        "SubscriptionInput": subscription_input,
        "SubscriptionPatch": subscription_patch,
        "Subscription": subscription,
        "CreatedSubscription": created,
        "SubscriptionList": {
            "type": "object",
            "required": ["subscriptions", "total_count", "limit", "offset"],
            "additionalProperties": false,
            "properties": {
                "subscriptions": {"type": "array", "items": schema_ref("Subscription")},
                "total_count": {"type": "integer", "minimum": 0},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
        "Filter": {
            "type": "object",
            "description": "Scopes are OR'ed, predicates inside a scope are AND'ed. Attributes come from the event's `attributes` and `tenant`.",
            "required": ["scopes"],
            "additionalProperties": false,
            "properties": {"scopes": {"type": "array", "maxItems": MAX_SCOPES, "items": {
                "type": "object",
                "required": ["predicates"],
                "additionalProperties": false,
                "properties": {"predicates": {"type": "array", "minItems": 1, "maxItems": MAX_PREDICATES, "items": {
                    "type": "object",
                    "required": ["attribute", "comparator", "values"],
                    "additionalProperties": false,
                    "properties": {
                        "attribute": {"type": "string", "minLength": 1},
                        "comparator": {"type": "string", "enum": words(waybill_core::filter::Comparator::ALL.map(|c| c.as_str()))},
                        "values": {"type": "array", "minItems": 1, "maxItems": MAX_VALUES, "items": {"type": ["string", "number", "boolean"], "description": "Compared as text: 7 and \"7\" match the same"}},
                    },
                }}},
            }}},
        },
        "Auth": {"oneOf": AUTH_TYPES.iter().map(|t| auth_schema(t, false)).collect::<Vec<_>>()},
        "MaskedAuth": {
            "description": format!("Auth with credentials shown as `{MASK}`; sending `{MASK}` back keeps the stored credential"),
            "oneOf": AUTH_TYPES.iter().map(|t| auth_schema(t, true)).collect::<Vec<_>>(),
        },
        "RetryPolicy": {"oneOf": [
            {
                "type": "object",
                "required": ["delays"],
                "additionalProperties": false,
                "properties": {"delays": {"type": "array", "maxItems": MAX_ATTEMPTS - 1, "items": {"$ref": "#/components/schemas/Duration"}}},
            },
            {
                "type": "object",
                "required": ["initial_delay", "max_delay", "max_attempts"],
                "additionalProperties": false,
                "properties": {
                    "initial_delay": schema_ref("Duration"),
                    "multiplier": or_null(json!({"type": "number", "minimum": 1, "maximum": 10, "default": 2})),
                    "max_delay": schema_ref("Duration"),
                    "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
                },
            },
        ]},
        "Duration": {"type": "string", "minLength": 1, "examples": ["500ms", "5m", "2h", "1h 30m"], "description": "A duration such as \"500ms\", \"5m\" or \"2h\"; at most 7 days"},
        "TestQueued": {
            "type": "object",
            "required": ["delivery_id", "event_id"],
            "additionalProperties": false,
            "properties": {"delivery_id": {"type": "string"}, "event_id": {"type": "string"}},
        },
        "SigningSecret": {
            "type": "object",
            "required": ["signing_secret", "previous_secret_expires_at"],
            "additionalProperties": false,
            "properties": {
                "signing_secret": {"type": "string", "pattern": "^whsec_"},
                "previous_secret_expires_at": {"oneOf": [timestamp, {"type": "null"}], "description": "Until then the previous secret signs too"},
            },
        },
        "CallbackSecret": {
            "type": "object",
            "required": ["subscription_id", "signing_secret", "previous_secret_expires_at"],
            "additionalProperties": false,
            "properties": {
                "subscription_id": {"type": "string", "description": "The callbacks subscription: rotate its secret, read its deliveries"},
                "signing_secret": {"type": "string", "pattern": "^whsec_"},
                "previous_secret_expires_at": {"oneOf": [timestamp, {"type": "null"}], "description": "Until then the previous secret signs too"},
            },
        },
        "DeliverySummary": {
            "type": "object",
            "required": ["id", "subscription_id", "event_id", "event_name", "status", "attempt_count", "last_attempt_at", "last_status_code", "next_attempt_at", "created_at", "updated_at"],
            "additionalProperties": false,
            "properties": delivery_props.clone(),
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "subscription_id", "event_id", "event_name", "status", "attempts", "next_attempt_at"],
            "additionalProperties": false,
            "properties": delivery_full,
        },
        "DeliveryList": {
            "type": "object",
            "required": ["deliveries", "limit", "next_cursor"],
            "additionalProperties": false,
            "properties": {
                "deliveries": {"type": "array", "items": schema_ref("DeliverySummary")},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "next_cursor": {"oneOf": [{"type": "string"}, {"type": "null"}], "description": "`cursor` of the next page; null on the last page"},
            },
        },
        "RetryQueued": {
            "type": "object",
            "required": ["delivery_id", "status"],
            "additionalProperties": false,
            "properties": {"delivery_id": {"type": "string"}, "status": {"const": "pending"}},
        },
        "ReplayInput": {
            "type": "object",
            "required": ["since"],
            "additionalProperties": false,
            "properties": {
                "since": {"type": "string", "format": "date-time", "description": "Events written to Waybill at or after this time"},
                "until": or_null(json!({"type": "string", "format": "date-time", "description": "... and at or before this time (default, or null: now)"})),
                "only_failed": or_null(json!({"type": "boolean", "default": false, "description": "Only events whose delivery failed or is dead"})),
            },
            "example": {"since": "2026-01-01T00:00:00Z", "only_failed": true},
        },
        "Replay": {
            "type": "object",
            "required": ["id", "subscription_id", "since", "until", "only_failed", "status", "scanned", "queued", "started_at", "finished_at", "error"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "subscription_id": {"type": "string"},
                "since": timestamp,
                "until": {"oneOf": [timestamp, {"type": "null"}]},
                "only_failed": {"type": "boolean"},
                "status": {"type": "string", "enum": words(crate::replays::STATUSES.map(crate::replays::status_word))},
                "scanned": {"type": "integer", "minimum": 0, "description": "Domain records read in the window"},
                "queued": {"type": "integer", "minimum": 0, "description": "Deliveries queued"},
                "started_at": timestamp,
                "finished_at": {"oneOf": [timestamp, {"type": "null"}]},
                "error": {"oneOf": [{"type": "string"}, {"type": "null"}], "description": "Why it failed"},
            },
        },
        "ReplayAccepted": {
            "type": "object",
            "required": ["replay_id", "status_url", "subscription_id", "since", "until", "only_failed"],
            "additionalProperties": false,
            "properties": {
                "replay_id": {"type": "string"},
                "status_url": {"type": "string", "description": "GET it for the replay's progress: /v1/replays/{replay_id}"},
                "subscription_id": {"type": "string"},
                "since": timestamp,
                "until": {"oneOf": [timestamp, {"type": "null"}]},
                "only_failed": {"type": "boolean"},
            },
        },
        "PortalSessionInput": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "expires_in": or_null(json!({"type": "string", "default": "1h", "examples": ["15m", "1h", "8h"], "description": "How long the session lasts: 1m to 24h (default, or null: 1h); a session is revoked by its expiry alone"})),
                "read_only": or_null(json!({"type": "boolean", "default": false, "description": "The session can look, not change (nor reveal a secret)"})),
            },
            "example": {"expires_in": "1h", "read_only": false},
        },
        "PortalSession": {
            "type": "object",
            "required": ["url", "token", "expires_at"],
            "additionalProperties": false,
            "properties": {
                "url": {"type": "string", "format": "uri", "description": "Opens the portal for this session (the token after `#` never reaches a server log)"},
                "token": {"type": "string", "description": "Bearer token of the portal's API calls"},
                "expires_at": {"type": "string", "format": "date-time"},
            },
        },
        "TenantInput": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 256},
                "id": or_null(json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "Omit (or null) to get a generated id"})),
            },
            "example": {"name": "ACME Logistics"},
        },
        "CreatedTenant": {
            "type": "object",
            "required": ["id", "name", "created_at"],
            "additionalProperties": false,
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "created_at": timestamp},
        },
        "Tenant": {
            "type": "object",
            "required": ["id", "name", "created_at", "api_keys"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "created_at": timestamp,
                "api_keys": {"type": "array", "items": {
                    "type": "object",
                    "required": ["id", "prefix", "created_at"],
                    "additionalProperties": false,
                    "properties": {
                        "id": {"type": "string"},
                        "prefix": {"type": "string", "description": "First characters of the key, to recognise it"},
                        "created_at": timestamp,
                    },
                }},
            },
        },
        "TenantList": {
            "type": "object",
            "required": ["tenants"],
            "additionalProperties": false,
            "properties": {"tenants": {"type": "array", "items": schema_ref("Tenant")}},
        },
        "ApiKeyInput": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"key": or_null(json!({"type": "string", "minLength": crate::config::MIN_IMPORTED_KEY_LEN, "maxLength": 256, "pattern": "^[!-~]+$", "description": "Import this key instead of generating one"}))},
            "example": {},
        },
        "CreatedApiKey": {
            "type": "object",
            "required": ["id", "key"],
            "additionalProperties": false,
            "properties": {"id": {"type": "string"}, "key": {"type": "string", "description": "Shown once; stored hashed"}},
        },
    })
}

/// The properties of a delivery summary, and of a delivery with attempts.
fn delivery_schemas(timestamp: &Value) -> (Value, Value) {
    let nullable_time = json!({"oneOf": [timestamp, {"type": "null"}]});
    let status = json!({"type": "string", "enum": words(crate::history::Status::ALL.map(|s| s.as_str())),
        "description": "`failed`: the last attempt failed (`next_attempt_at` says when the next comes, if any); `dead`: every attempt of the policy failed"});
    let summary = json!({
        "id": {"type": "string", "description": "The webhook-id"},
        "subscription_id": {"type": "string"},
        "event_id": {"type": "string"},
        "event_name": {"type": "string"},
        "status": status,
        "attempt_count": {"type": "integer", "minimum": 0},
        "last_attempt_at": nullable_time,
        "last_status_code": {"type": ["integer", "null"]},
        "next_attempt_at": nullable_time,
        "created_at": timestamp,
        "updated_at": timestamp,
    });
    let mut full = summary.clone();
    let mut error_classes: Vec<Value> = waybill_core::outcome::ErrorClass::ALL
        .iter()
        .map(|c| c.as_str().into())
        .collect();
    error_classes.push(Value::Null);
    full["attempts"] = json!({"type": "array", "items": {
        "type": "object",
        "required": ["attempt", "at", "status_code", "duration_ms", "error_class", "error", "response_excerpt"],
        "additionalProperties": false,
        "properties": {
            "attempt": {"type": "integer", "minimum": 0},
            "at": timestamp,
            "status_code": {"type": ["integer", "null"], "description": "null when no response came"},
            "duration_ms": {"type": "integer", "minimum": 0},
            "error_class": {"type": ["string", "null"], "enum": error_classes},
            "error": {"type": ["string", "null"]},
            "response_excerpt": {"type": "string", "description": "The first 4 KiB of the response body"},
        },
    }});
    (summary, full)
}

/// Optional fields of a subscription body that take `null` (the default).
const NULLABLE_FIELDS: [&str; 10] = [
    "name",
    "filter",
    "auth",
    "headers",
    "secret_headers",
    "rate_limit_per_second",
    "retry_policy",
    "ordering",
    "max_in_flight",
    "metadata",
];

/// The schema of one field of a subscription body.
fn subscription_field(field: &str, catalog: &Catalog) -> Value {
    match field {
        "name" => json!({"type": "string", "maxLength": MAX_NAME_LEN}),
        "url" => json!({
            "type": "string", "format": "iri", "maxLength": MAX_URL_LEN,
            "description": "https (http only if the deployment allows it; a host may be an internationalised name, kept as written); private, loopback and link-local targets are refused unless allow-listed",
        }),
        "method" => {
            json!({"type": "string", "enum": words(Method::ALL.map(|m| m.as_str())), "default": "POST"})
        }
        "event_types" => {
            let mut examples: Vec<String> =
                catalog.iter().take(3).map(|e| e.name.clone()).collect();
            examples.push("*".to_owned());
            json!({
                "type": "array", "minItems": 1, "maxItems": MAX_EVENT_TYPES,
                "description": "Exact event names of the catalog, `domain.*` / `domain.object.*` prefixes, or `*`",
                "items": {"type": "string", "minLength": 1, "examples": examples},
            })
        }
        "filter" => schema_ref("Filter"),
        "auth" => schema_ref("Auth"),
        "headers" => json!({
            "type": "object", "additionalProperties": {"type": "string"}, "maxProperties": MAX_HEADERS,
            "description": "Added to every request; content-type, content-length, host, user-agent, traceparent, webhook-*, hop-by-hop headers (connection, expect, keep-alive, proxy-*, te, trailer, transfer-encoding, upgrade) and (when auth is set) authorization are refused. Values are sealed at rest; those of authorization and of the names in secret_headers read `***` in answers, and `***` sent back keeps the stored value while the URL's origin stays the same",
        }),
        "secret_headers" => json!({
            "type": "array", "maxItems": MAX_HEADERS, "uniqueItems": true,
            "items": {"type": "string", "minLength": 1, "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
            "description": "Names of custom headers whose values are masked (`***`) in answers, besides authorization",
        }),
        "enabled" => json!({"type": "boolean", "default": true}),
        "rate_limit_per_second" => {
            json!({"type": "integer", "minimum": 1, "maximum": MAX_RATE_LIMIT, "description": "Omit for no limit"})
        }
        "retry_policy" => {
            json!({"allOf": [schema_ref("RetryPolicy")], "description": "Omit for the deployment default (spanning more than 24 h)"})
        }
        "ordering" => json!({
            "type": "string", "enum": words(Ordering::ALL.map(|o| o.as_str())), "default": "entity",
            "description": "entity: one delivery at a time per entity, in the order of its events (a failed one waits in its retry tier while later ones go on); strict: as entity, and an entity's later events wait while an earlier one is retried, until it succeeded or is dead; none: no order",
        }),
        "max_in_flight" => json!({
            "type": "integer", "minimum": 1, "maximum": MAX_IN_FLIGHT, "default": DEFAULT_MAX_IN_FLIGHT,
            "description": "Deliveries of this subscription in flight at once, at most",
        }),
        "metadata" => {
            json!({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": MAX_METADATA})
        }
        other => json!({"description": other}),
    }
}

/// The schema of one auth type; `masked` for answers.
fn auth_schema(kind: &str, masked: bool) -> Value {
    let text = json!({"type": "string", "minLength": 1});
    let secret = if masked {
        json!({"const": MASK})
    } else {
        json!({"type": "string", "minLength": 1, "writeOnly": true})
    };
    let (required, props): (Vec<&str>, Vec<(&str, Value)>) = match kind {
        "basic" => (
            vec!["username", "password"],
            vec![("username", text.clone()), ("password", secret)],
        ),
        "api_key" => (
            vec!["header_name", "header_value"],
            vec![("header_name", text.clone()), ("header_value", secret)],
        ),
        "bearer" => (vec!["token"], vec![("token", secret)]),
        "oauth2" => (
            vec!["token_url", "client_id", "client_secret"],
            vec![
                ("token_url", json!({"type": "string", "format": "iri"})),
                ("client_id", text.clone()),
                ("client_secret", secret),
                (
                    "scope",
                    // null is no scope, in answers and requests alike.
                    json!({"type": ["string", "null"]}),
                ),
                (
                    "extra_params",
                    or_null(
                        json!({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 20}),
                    ),
                ),
            ],
        ),
        _ => (vec![], vec![]),
    };
    let mut properties = Map::new();
    properties.insert("type".into(), json!({"const": kind}));
    for (name, schema) in props {
        properties.insert(name.into(), schema);
    }
    let mut required_all = vec!["type"];
    required_all.extend(required);
    if masked && kind == "oauth2" {
        required_all.extend(["scope", "extra_params"]);
    }
    json!({
        "type": "object",
        "required": required_all,
        "additionalProperties": false,
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers are typed views; their fields are the documented ones.
    #[test]
    fn every_view_field_is_documented_and_nothing_else() {
        let doc = document(&Catalog::builtin());
        let schemas = &doc["components"]["schemas"];
        let keys = |name: &str, path: &[&str]| {
            let mut schema = &schemas[name];
            for p in path {
                schema = &schema[*p];
            }
            let mut keys: Vec<String> = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} has properties"))
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        let sorted = |fields: &[&str]| {
            let mut f: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
            f.sort();
            f
        };
        assert_eq!(
            keys("Subscription", &[]),
            sorted(crate::subscriptions::VIEW_FIELDS)
        );
        assert_eq!(
            keys("DeliverySummary", &[]),
            sorted(crate::history::SUMMARY_FIELDS)
        );
        let mut full = crate::history::SUMMARY_FIELDS.to_vec();
        full.push("attempts");
        assert_eq!(keys("Delivery", &[]), sorted(&full));
        assert_eq!(
            keys("Delivery", &["properties", "attempts", "items"]),
            sorted(crate::history::ATTEMPT_FIELDS)
        );
        assert_eq!(keys("Replay", &[]), sorted(crate::replays::VIEW_FIELDS));
    }

    #[test]
    fn every_operation_has_a_unique_method_and_path_and_id() {
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for op in Op::ALL {
            let s = op.spec();
            assert!(seen.insert((s.method, s.path)), "{s:?}");
            assert!(ids.insert(s.id), "{s:?}");
        }
    }

    #[test]
    fn request_schemas_list_exactly_the_fields_the_parsers_accept() {
        let doc = document(&Catalog::builtin());
        let schemas = &doc["components"]["schemas"];
        let keys = |name: &str| {
            let mut k: Vec<String> = schemas[name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        let sorted = |fields: &[&str]| {
            let mut v: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(keys("SubscriptionInput"), sorted(SUBSCRIPTION_FIELDS));
        assert_eq!(keys("SubscriptionPatch"), sorted(SUBSCRIPTION_FIELDS));
        assert_eq!(keys("EventInput"), sorted(EVENT_FIELDS));
        let auth_types: Vec<&str> = schemas["Auth"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["properties"]["type"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(auth_types, AUTH_TYPES);
    }

    /// The parsers take an optional field sent as `null` as left out
    /// (`Fields::optional`), so every optional field of a request body
    /// must admit null in the document, or a client generated from it (and
    /// the API fuzzer) would think null is refused. The exceptions refuse
    /// null on purpose, with a message saying to leave the field out.
    #[test]
    fn optional_request_fields_admit_null() {
        let doc = document(&Catalog::builtin());
        let schemas = &doc["components"]["schemas"];
        fn resolve<'a>(schemas: &'a Value, s: &'a Value) -> &'a Value {
            match s["$ref"].as_str() {
                Some(r) => resolve(schemas, &schemas[r.rsplit('/').next().unwrap()]),
                None => s,
            }
        }
        fn admits_null(schemas: &Value, s: &Value) -> bool {
            let s = resolve(schemas, s);
            let composed = ["anyOf", "oneOf", "allOf"]
                .iter()
                .filter_map(|k| s[*k].as_array())
                .flatten()
                .collect::<Vec<_>>();
            match &s["type"] {
                Value::String(t) => t == "null",
                Value::Array(ts) => ts.iter().any(|t| t == "null"),
                _ if s.get("const").is_some() || s.get("enum").is_some() => false,
                _ if !composed.is_empty() => {
                    if s["allOf"].is_array() {
                        composed.iter().all(|c| admits_null(schemas, c))
                    } else {
                        composed.iter().any(|c| admits_null(schemas, c))
                    }
                }
                _ => true,
            }
        }
        fn walk(
            schemas: &Value,
            s: &Value,
            at: &str,
            bad: &mut Vec<String>,
            seen: &mut Vec<String>,
        ) {
            if let Some(r) = s["$ref"].as_str() {
                if seen.iter().any(|x| x == r) {
                    return;
                }
                seen.push(r.to_owned());
            }
            let s = resolve(schemas, s);
            for k in ["anyOf", "oneOf", "allOf"] {
                for c in s[k].as_array().into_iter().flatten() {
                    walk(schemas, c, at, bad, seen);
                }
            }
            if let Some(items) = s.get("items") {
                walk(schemas, items, &format!("{at}[]"), bad, seen);
            }
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            for (name, prop) in s["properties"].as_object().into_iter().flatten() {
                let here = format!("{at}.{name}");
                if !required.contains(&name.as_str()) && !admits_null(schemas, prop) {
                    bad.push(here.clone());
                }
                walk(schemas, prop, &here, bad, seen);
            }
        }
        let refuse_null = [
            "SubscriptionPatch.url",
            "SubscriptionPatch.event_types",
            "SubscriptionPatch.method",
            "SubscriptionPatch.enabled",
            "SubscriptionInput.method",
            "SubscriptionInput.enabled",
        ];
        let mut bad = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(body) = op["requestBody"]["content"]["application/json"].get("schema")
                else {
                    continue;
                };
                let name = body["$ref"]
                    .as_str()
                    .map(|r| r.rsplit('/').next().unwrap().to_owned())
                    .unwrap_or_else(|| format!("{method} {path}"));
                walk(schemas, body, &name, &mut bad, &mut Vec::new());
            }
        }
        bad.retain(|b| !refuse_null.contains(&b.as_str()));
        bad.sort();
        bad.dedup();
        assert!(bad.is_empty(), "optional fields that refuse null: {bad:?}");
    }

    #[test]
    fn every_dialect_call_documents_the_refusals_made_before_its_handler() {
        let doc = with_dialects(
            json!({"paths": {}, "components": {"schemas": {}}}),
            &crate::dialects::KNOWN.map(String::from),
        );
        let mut calls = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                calls += 1;
                let responses = &op["responses"];
                assert!(responses.get("429").is_some(), "{method} {path}: 429");
                if op.get("requestBody").is_some() {
                    for status in ["413", "415"] {
                        assert_eq!(
                            responses[status]["content"], responses["401"]["content"],
                            "{method} {path}: {status} in the dialect's error shape"
                        );
                    }
                }
            }
        }
        assert!(calls >= 17, "{calls} dialect calls");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = with_dialects(
            document(&Catalog::builtin()),
            &crate::dialects::KNOWN.map(String::from),
        );
        let text = doc.to_string();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
