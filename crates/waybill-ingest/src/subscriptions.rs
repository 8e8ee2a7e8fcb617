//! `/v1/subscriptions`: every call of the subscription API.
//!
//! Each write publishes the subscription's full new state to the compacted
//! `subscriptions` topic (a tombstone on delete) and answers only after this
//! service's own projection applied it, so a following `GET` sees the change.
//! Reads are served from that projection.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use waybill_core::auth::CallbackAuth;
use waybill_core::event::{EntityRef, Event, format_rfc3339};
use waybill_core::hold::Parked;
use waybill_core::pattern::EventTypePattern;
use waybill_core::subscription::{Mode, SHOWN_STATUSES, Spec, Status, Subscription, parse_spec};
use waybill_core::url_policy::UrlPolicy;
use waybill_core::{FieldError, catalog, ids};
use waybill_proto::Message;
use waybill_proto::convert::{event_to_proto, timestamp};
use waybill_proto::v1;
use waybill_runtime::dns::{Dns, Unusable};

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;
use crate::idempotency::Idempotent;
use crate::revisions::{self, Precondition, Revisioned, publish};

/// Largest subscription body accepted.
const MAX_SUBSCRIPTION_BYTES: usize = 64 * 1024;
/// Default and largest page of `GET /v1/subscriptions`.
pub(crate) const DEFAULT_LIMIT: usize = 50;
pub(crate) const MAX_LIMIT: usize = 1000;

/// A subscription as the API returns it, credentials masked. Its fields
/// are [`VIEW_FIELDS`], which the OpenAPI document describes (a unit test
/// holds the two together).
#[derive(Debug, serde::Serialize)]
pub struct SubscriptionView<'a> {
    id: &'a str,
    tenant_id: &'a str,
    name: &'a str,
    url: &'a str,
    method: &'static str,
    event_types: Vec<String>,
    filter: Option<Value>,
    auth: Value,
    headers: std::collections::BTreeMap<String, String>,
    secret_headers: &'a std::collections::BTreeSet<String>,
    enabled: bool,
    rate_limit_per_second: Option<u32>,
    retry_policy: Option<Value>,
    ordering: &'static str,
    max_in_flight: u32,
    metadata: &'a std::collections::BTreeMap<String, String>,
    status: &'static str,
    disabled_reason: Option<String>,
    failing_since: Option<String>,
    created_at: String,
    updated_at: String,
    created_by: &'a str,
    updated_by: &'a str,
    revision: u64,
}

/// Every field of [`SubscriptionView`], in order.
pub const VIEW_FIELDS: &[&str] = &[
    "id",
    "tenant_id",
    "name",
    "url",
    "method",
    "event_types",
    "filter",
    "auth",
    "headers",
    "secret_headers",
    "enabled",
    "rate_limit_per_second",
    "retry_policy",
    "ordering",
    "max_in_flight",
    "metadata",
    "status",
    "disabled_reason",
    "failing_since",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "revision",
];

impl<'a> SubscriptionView<'a> {
    /// The view of `s`.
    pub fn of(s: &'a Subscription) -> Self {
        let spec = &s.spec;
        // Switched off by its owner reads as disabled; paused as paused.
        let (status, disabled_reason) = s.shown_status();
        Self {
            id: &s.id,
            tenant_id: &s.tenant_id,
            name: &spec.name,
            url: &spec.url,
            method: spec.method.as_str(),
            event_types: spec.event_types.iter().map(ToString::to_string).collect(),
            filter: spec.filter.as_ref().map(|f| f.to_json()),
            auth: spec.auth.masked(),
            headers: spec.masked_headers(),
            secret_headers: &spec.secret_headers,
            enabled: spec.enabled,
            rate_limit_per_second: spec.rate_limit_per_second,
            retry_policy: spec.retry_policy.as_ref().map(|r| r.to_json()),
            ordering: spec.ordering.as_str(),
            max_in_flight: spec.max_in_flight,
            metadata: &spec.metadata,
            status,
            disabled_reason,
            failing_since: s.failing_since.map(format_rfc3339),
            created_at: format_rfc3339(s.created_at),
            updated_at: format_rfc3339(s.updated_at),
            created_by: &s.created_by,
            updated_by: &s.updated_by,
            revision: s.revision,
        }
    }
}

/// A subscription as the API returns it, as JSON.
pub fn view(s: &Subscription) -> Value {
    serde_json::to_value(SubscriptionView::of(s)).expect("a view serialises")
}

/// `POST /v1/subscriptions` → `201` with the subscription and its signing secret.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Revisioned, ApiError> {
    let body = read_json(&headers, body, MAX_SUBSCRIPTION_BYTES).await?;
    let idem = Idempotent::begin(
        &state,
        &principal,
        &headers,
        "POST /v1/subscriptions",
        &body,
    )
    .await?;
    if let Some((status, Json(body))) = idem.replay() {
        return Ok(Revisioned(status, body));
    }
    let result = async {
        let subscription = create_from(&state, &principal, &body).await?;
        let mut view = view(&subscription);
        view["signing_secret"] = subscription.signing_secret.expose().into();
        Ok((StatusCode::CREATED, Json(view)))
    }
    .await;
    idem.finish(result)
        .await
        .map(|(status, Json(body))| Revisioned(status, body))
}

/// Creates a subscription of `principal`'s tenant from a `/v1` create
/// body (the API's and the dialects' creates).
pub(crate) async fn create_from(
    state: &AppState,
    principal: &Principal,
    body: &[u8],
) -> Result<Subscription, ApiError> {
    let parsed = {
        let catalog = state.catalog.read();
        parse_spec(body, Mode::Create, catalog.catalog(), &state.url_policy)
    };
    let spec = parsed.map_err(ApiError::validation)?;
    check_spec_hosts(state, &spec).await?;
    let subscription = Subscription::new(
        ids::new_subscription_id(),
        principal.tenant_id.clone(),
        spec,
        &principal.key_id,
        OffsetDateTime::now_utc(),
    );
    publish(state, &subscription).await?;
    tracing::info!(
        subscription_id = %subscription.id,
        tenant_id = %subscription.tenant_id,
        "subscription created"
    );
    Ok(subscription)
}

/// Whether `s` is Waybill's own (the tenant's callbacks subscription),
/// not one its users made.
pub(crate) fn is_internal(s: &Subscription) -> bool {
    s.id == ids::callbacks_subscription_id(&s.tenant_id)
}

/// Applies a `/v1` patch body to subscription `id`, without a
/// precondition (the dialects' updates).
pub(crate) async fn update_with(
    state: &AppState,
    principal: &Principal,
    id: &str,
    patch: &[u8],
) -> Result<(), ApiError> {
    update(state, principal, id, &HeaderMap::new(), patch, true)
        .await
        .map(drop)
}

/// `GET /v1/subscriptions?limit&offset&enabled&status&event_type`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = ListQuery::parse(&query).map_err(ApiError::validation)?;
    let projection = state.subscriptions.read();
    // A tenant's subscriptions come in id order, and ids are time-ordered
    // (UUIDv7): oldest first, stable across pages. Each is decoded only
    // if a filter must read it or it is on the page.
    let (total, page): (usize, Vec<Value>) = if q.filters() {
        // Counted as they pass; only the page is kept.
        let (mut total, mut page) = (0, Vec::new());
        for s in projection
            .of_tenant(&principal.tenant_id)
            .filter(|s| q.selects(s))
        {
            if total >= q.offset && page.len() < q.limit {
                page.push(view(&s));
            }
            total += 1;
        }
        (total, page)
    } else {
        let ids = projection.ids_of_tenant(&principal.tenant_id);
        let total = ids.len();
        let page = ids
            .skip(q.offset)
            .take(q.limit)
            .filter_map(|id| projection.get(id))
            .map(|s| view(&s));
        (total, page.collect())
    };
    Ok(Json(json!({
        "subscriptions": page,
        "total_count": total,
        "limit": q.limit,
        "offset": q.offset,
    })))
}

/// Parsed query of the list call.
struct ListQuery {
    limit: usize,
    offset: usize,
    enabled: Option<bool>,
    status: Option<&'static str>,
    /// The `event_type` asked for, and whether it is an event name (else a
    /// pattern).
    event_type: Option<(String, bool)>,
}

impl ListQuery {
    fn parse(query: &HashMap<String, String>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut number = |key: &str, default: usize, max: usize| match query.get(key) {
            None => default,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max => n,
                _ => {
                    errors.push(FieldError::new(
                        key,
                        format!("must be an integer from 0 to {max}"),
                    ));
                    default
                }
            },
        };
        let limit = number("limit", DEFAULT_LIMIT, MAX_LIMIT);
        let offset = number("offset", 0, usize::MAX);
        if limit == 0 {
            errors.push(FieldError::new(
                "limit",
                format!("must be from 1 to {MAX_LIMIT}"),
            ));
        }
        let enabled = match query.get("enabled").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                errors.push(FieldError::new("enabled", "must be `true` or `false`"));
                None
            }
        };
        let status = match query.get("status").map(String::as_str) {
            None => None,
            Some(shown) => {
                let known = SHOWN_STATUSES.into_iter().find(|s| *s == shown);
                if known.is_none() {
                    errors.push(FieldError::new(
                        "status",
                        "must be `active`, `disabled`, `failing` or `paused`",
                    ));
                }
                known
            }
        };
        let event_type = query.get("event_type").map(|t| {
            let is_name = matches!(EventTypePattern::parse(t), Ok(EventTypePattern::Exact(_)));
            (t.clone(), is_name)
        });
        for key in query.keys() {
            if !["limit", "offset", "enabled", "status", "event_type"].contains(&key.as_str()) {
                errors.push(FieldError::new(
                    key.as_str(),
                    "unknown query parameter; accepted: limit, offset, enabled, status, event_type",
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self {
                limit,
                offset,
                enabled,
                status,
                event_type,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether any filter is asked for.
    fn filters(&self) -> bool {
        self.enabled.is_some() || self.status.is_some() || self.event_type.is_some()
    }

    fn selects(&self, s: &Subscription) -> bool {
        self.enabled.is_none_or(|e| s.spec.enabled == e)
            && self.status.is_none_or(|st| st == s.shown_status().0)
            && self.event_type.as_ref().is_none_or(|(t, is_name)| {
                // An event name selects the subscriptions that receive it; a
                // pattern selects the subscriptions listing that pattern.
                s.spec.event_types.iter().any(|p| {
                    if *is_name {
                        p.matches(t)
                    } else {
                        p.to_string() == *t
                    }
                })
            })
    }
}

/// `GET /v1/subscriptions/{id}`, from this service's projection.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Revisioned, ApiError> {
    find(&state, &principal, &id).map(|s| Revisioned(StatusCode::OK, view(&s)))
}

/// `PATCH /v1/subscriptions/{id}`: present fields replace, absent stay.
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Revisioned, ApiError> {
    let body = read_json(&headers, body, MAX_SUBSCRIPTION_BYTES).await?;
    update(&state, &principal, &id, &headers, &body, true).await
}

/// `PUT /v1/subscriptions/{id}`: full replacement (the create body).
pub(crate) async fn replace(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Revisioned, ApiError> {
    let body = read_json(&headers, body, MAX_SUBSCRIPTION_BYTES).await?;
    update(&state, &principal, &id, &headers, &body, false).await
}

/// A change of the spec (`PATCH`, `PUT`), applied on the current state;
/// applied again on a newer state if another write won meanwhile.
async fn update(
    state: &AppState,
    principal: &Principal,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    patch: bool,
) -> Result<Revisioned, ApiError> {
    let precondition = Precondition::from_headers(headers)?;
    let s = revisions::commit(
        state,
        principal,
        id,
        &precondition,
        |mut s| async move {
            let mode = if patch {
                Mode::Patch(&s.spec)
            } else {
                Mode::Replace(&s.spec)
            };
            let spec = parse_spec(
                body,
                mode,
                state.catalog.read().catalog(),
                &state.url_policy,
            )
            .map_err(ApiError::validation)?;
            if spec.url != s.spec.url || spec.auth != s.spec.auth {
                check_spec_hosts(state, &spec).await?;
            }
            let switched_on = spec.enabled && !s.spec.enabled;
            s.spec = spec;
            // Switching a subscription back on clears a disable by the system
            // too (as `reset` does): the user asked for deliveries.
            Ok((s, switched_on))
        },
        |s, switched_on| {
            if switched_on && s.status == Status::Disabled {
                s.reset();
            }
        },
    )
    .await?;
    tracing::info!(subscription_id = %s.id, revision = s.revision, "subscription updated");
    Ok(Revisioned(StatusCode::OK, view(&s)))
}

/// `DELETE /v1/subscriptions/{id}` → `204`; a tombstone on the topic.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    revisions::delete(&state, &principal, &id, &precondition).await?;
    tracing::info!(subscription_id = %id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// An action call (`reset`, `pause`, `resume`): `apply` to the current
/// state, under `If-Match`, unless `refuse` says why it no longer applies
/// (`409`).
async fn act(
    state: &AppState,
    principal: &Principal,
    id: &str,
    headers: &HeaderMap,
    refuse: fn(&Subscription) -> Option<&'static str>,
    apply: fn(&mut Subscription),
) -> Result<Subscription, ApiError> {
    let precondition = Precondition::from_headers(headers)?;
    revisions::commit(
        state,
        principal,
        id,
        &precondition,
        |s| async move {
            match refuse(&s) {
                Some(why) => Err(ApiError::conflict(why)),
                None => Ok((s, ())),
            }
        },
        |s, ()| apply(s),
    )
    .await
}

/// `POST /v1/subscriptions/{id}/reset`: clears the failure state, re-enables.
pub(crate) async fn reset(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Revisioned, ApiError> {
    let s = act(
        &state,
        &principal,
        &id,
        &headers,
        |_| None,
        Subscription::reset,
    )
    .await?;
    tracing::info!(subscription_id = %s.id, "subscription reset");
    Ok(Revisioned(StatusCode::OK, view(&s)))
}

/// `POST /v1/subscriptions/{id}/pause`: nothing is sent, and nothing
/// matched is dropped: deliveries are kept until `resume`. A disabled
/// subscription cannot be paused (`409`).
pub(crate) async fn pause(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Revisioned, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let s = revisions::commit(
        &state,
        &principal,
        &id,
        &precondition,
        |s| {
            let state = &state;
            async move {
                if !s.is_deliverable() {
                    return Err(ApiError::conflict(
                        "the subscription is disabled: enable it (or reset it) before pausing it",
                    ));
                }
                if s.paused {
                    return Ok((s, None));
                }
                let kept_from = kept_from(state, &s.id).await?;
                Ok((s, Some(kept_from)))
            }
        },
        |s, kept_from| {
            s.paused = true;
            if kept_from.is_some() {
                s.kept_from = kept_from;
            }
        },
    )
    .await?;
    tracing::info!(subscription_id = %s.id, "subscription paused");
    Ok(Revisioned(StatusCode::OK, view(&s)))
}

/// Where a new pause of subscription `id` starts keeping: after an empty
/// record written to its partition of `deliveries.parked` (the delivery
/// service parks each of its deliveries there once it sees the pause, so
/// after this; see `waybill_core::hold::pause_gate`).
async fn kept_from(state: &AppState, id: &str) -> Result<Parked, ApiError> {
    let acked = state
        .send(&state.topics.deliveries_parked(), id.as_bytes(), Some(&[]))
        .await?;
    Ok(Parked {
        partition: acked.partition,
        from: acked.offset + 1,
    })
}

/// `POST /v1/subscriptions/{id}/resume`: back to the status it had; the
/// deliveries kept meanwhile go out first, per entity in order.
pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Revisioned, ApiError> {
    let s = act(
        &state,
        &principal,
        &id,
        &headers,
        |_| None,
        |s| s.paused = false,
    )
    .await?;
    // The delivery service releases what it kept when it reads this
    // record on the subscription's partition of `deliveries`.
    let marker = v1::DeliveryTask {
        subscription_id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        resume: true,
        created_at: Some(timestamp(OffsetDateTime::now_utc())),
        ..Default::default()
    };
    state
        .send(
            &state.topics.deliveries(),
            s.id.as_bytes(),
            Some(&marker.encode_to_vec()),
        )
        .await?;
    tracing::info!(subscription_id = %s.id, "subscription resumed");
    Ok(Revisioned(StatusCode::OK, view(&s)))
}

/// `GET /v1/subscriptions/{id}/secret`.
pub(crate) async fn secret(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = find(&state, &principal, &id)?;
    Ok(Json(secret_view(&s)))
}

/// The tenant's callbacks subscription (created on first use): its secret
/// signs, and its retry policy retries, the deliveries to the per-event
/// `callback_url`s; it selects no event type, so nothing else goes to it.
pub(crate) async fn ensure_callbacks(
    state: &AppState,
    tenant_id: &str,
    by: &str,
) -> Result<Subscription, ApiError> {
    let id = waybill_core::ids::callbacks_subscription_id(tenant_id);
    let existing = || state.subscriptions.read().get(&id);
    if let Some(s) = existing() {
        return Ok(s);
    }
    let _guard = state.write_lock(&id).await;
    if let Some(s) = existing() {
        return Ok(s);
    }
    let mut spec = Spec::new(CALLBACKS_URL, Vec::new());
    spec.name = "per-event callbacks (callback_url)".to_owned();
    let s = Subscription::new(
        id,
        tenant_id.to_owned(),
        spec,
        by,
        OffsetDateTime::now_utc(),
    );
    publish(state, &s).await?;
    tracing::info!(subscription_id = %s.id, tenant_id, "callbacks subscription created");
    Ok(s)
}

/// Where the callbacks subscription "points": each event's own
/// `callback_url` replaces it at delivery.
pub(crate) const CALLBACKS_URL: &str = "https://per-event-callback-url.invalid/";

/// `GET /v1/callbacks/secret`: the secret that signs deliveries to
/// per-event `callback_url`s (rotate it through the callbacks
/// subscription, whose id this answer gives).
pub(crate) async fn callbacks_secret(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let s = ensure_callbacks(&state, &principal.tenant_id, &principal.key_id).await?;
    let mut view = secret_view(&s);
    view["subscription_id"] = s.id.clone().into();
    Ok(Json(view))
}

/// `POST /v1/subscriptions/{id}/secret/rotate`: a new secret; the old one
/// keeps signing (second signature) for the overlap window.
pub(crate) async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let overlap = state.config.secret_overlap;
    let s = revisions::commit(
        &state,
        &principal,
        &id,
        &precondition,
        |s| async move { Ok((s, ())) },
        |s, ()| s.rotate_secret(OffsetDateTime::now_utc(), overlap),
    )
    .await?;
    tracing::info!(subscription_id = %s.id, "signing secret rotated");
    Ok((
        [(axum::http::header::ETAG, revisions::etag(s.revision))],
        Json(secret_view(&s)),
    ))
}

fn secret_view(s: &Subscription) -> Value {
    json!({
        "signing_secret": s.signing_secret.expose(),
        "previous_secret_expires_at": s.previous_secret.as_ref()
            .filter(|p| p.expires_at > OffsetDateTime::now_utc())
            .map(|p| format_rfc3339(p.expires_at)),
    })
}

/// `POST /v1/subscriptions/{id}/test` → `202 {"delivery_id"}`: a
/// `waybill.test` event delivered to this subscription only.
pub(crate) async fn test(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let route = format!("POST /v1/subscriptions/{id}/test");
    let idem = Idempotent::begin(&state, &principal, &headers, &route, b"").await?;
    if let Some(replay) = idem.replay() {
        return Ok(replay);
    }
    let result = async {
        let (delivery_id, event_id) = send_test(&state, &principal, &id).await?;
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"delivery_id": delivery_id, "event_id": event_id})),
        ))
    }
    .await;
    idem.finish(result).await
}

/// Queues a `waybill.test` delivery to subscription `id` only; its
/// delivery and event ids.
pub(crate) async fn send_test(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(String, String), ApiError> {
    {
        let s = find(state, principal, id)?;
        let now = OffsetDateTime::now_utc();
        let event = Event {
            id: ids::new_event_id(),
            tenant_id: s.tenant_id.clone(),
            name: catalog::TEST_EVENT.to_owned(),
            occurred_at: now,
            entity: EntityRef {
                kind: "subscription".to_owned(),
                id: s.id.clone(),
            },
            attributes: Default::default(),
            callback_url: None,
            payload: serde_json::to_vec(&json!({
                "message": "Test notification from Waybill",
                "subscription_id": s.id,
                "requested_by": principal.key_id,
            }))
            .map_err(|_| ApiError::internal())?,
        };
        let delivery_id = ids::delivery_id(&s.tenant_id, &event.id, &s.id);
        let task = v1::DeliveryTask {
            delivery_id: delivery_id.clone(),
            subscription_id: s.id.clone(),
            tenant_id: s.tenant_id.clone(),
            event: Some(event_to_proto(&event)),
            attempt: 1,
            not_before: None,
            created_at: Some(timestamp(now)),
            // Every test notification is new.
            redeliver: true,
            replay_id: String::new(),
            strict_retry: false,
            resume: false,
            produced_at: None,
        };
        state
            .send(
                &state.topics.deliveries(),
                s.id.as_bytes(),
                Some(&task.encode_to_vec()),
            )
            .await?;
        tracing::info!(subscription_id = %s.id, delivery_id, "test notification queued");
        Ok((delivery_id, event.id))
    }
}

/// Clears subscription `id`'s failure state and re-enables it (`reset`,
/// without a precondition: the dialects').
pub(crate) async fn reset_with(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Subscription, ApiError> {
    act(
        state,
        principal,
        id,
        &HeaderMap::new(),
        |_| None,
        Subscription::reset,
    )
    .await
}

/// The caller's subscription `id`; another tenant's answers 404 too.
pub(crate) fn find(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Subscription, ApiError> {
    state
        .subscriptions
        .read()
        .get(id)
        .filter(|s| s.tenant_id == principal.tenant_id)
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))
}

/// Resolves the hosts a subscription will call (its URL, and its OAuth2
/// `token_url`) and refuses them if any address is not allowed. Send time
/// checks again.
pub(crate) async fn check_spec_hosts(state: &AppState, spec: &Spec) -> Result<(), ApiError> {
    check_resolved(state, &spec.url, "url").await?;
    if let CallbackAuth::OAuth2(oauth2) = &spec.auth {
        check_resolved(state, &oauth2.token_url, "auth.token_url").await?;
    }
    Ok(())
}

/// Resolves the host of a URL and refuses it if any address is not allowed
/// (a name pointing into a private network).
pub(crate) async fn check_resolved(
    state: &AppState,
    url: &str,
    field: &str,
) -> Result<(), ApiError> {
    check_host(&state.url_policy, &state.dns, url, field).await
}

/// [`check_resolved`] on a given policy and resolver. The answer says
/// which host was refused, never which addresses it resolved to (those are
/// logged for the operator).
pub(crate) async fn check_host(
    policy: &UrlPolicy,
    dns: &Dns,
    url: &str,
    field: &str,
) -> Result<(), ApiError> {
    if policy.allow_private_networks {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let Some(url::Host::Domain(host)) = parsed.host() else {
        return Ok(()); // IP literals were checked by the policy already.
    };
    let message = match dns.resolve_allowed(policy, host).await {
        Ok(_) => return Ok(()),
        Err(Unusable::Unresolved(_)) => format!("host `{host}` does not resolve; check the name"),
        Err(Unusable::Refused(refusal)) => refusal.public,
    };
    Err(ApiError::validation(vec![FieldError::new(field, message)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At create time: a host whose DNS answers include an address in a
    /// refused range (bare or wrapped in IPv6) is refused, naming the host
    /// and field, never the address.
    #[tokio::test]
    async fn hosts_resolving_into_refused_ranges_are_refused_without_the_address() {
        let answers = [
            "169.254.169.254",
            "192.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
            "2001:0:a00:5::ffff:ffff",
        ];
        let dns = Dns::fixed(answers.iter().enumerate().map(|(i, ip)| {
            (
                format!("h{i}.test"),
                vec!["8.8.8.8".parse().unwrap(), ip.parse().unwrap()],
            )
        }));
        let strict = UrlPolicy::strict();
        for (i, ip) in answers.iter().enumerate() {
            let url = format!("https://h{i}.test/hook");
            let e = check_host(&strict, &dns, &url, "auth.token_url")
                .await
                .unwrap_err();
            let body = e.to_json().to_string();
            assert!(body.contains("auth.token_url"), "{body}");
            assert!(body.contains(&format!("h{i}.test")), "{body}");
            assert!(!body.contains(ip), "{ip}: {body}");
        }
        let public = Dns::fixed([("ok.test".to_owned(), vec!["8.8.8.8".parse().unwrap()])]);
        assert!(
            check_host(&strict, &public, "https://ok.test/", "url")
                .await
                .is_ok()
        );
        let e = check_host(&strict, &public, "https://nx.test/", "url")
            .await
            .unwrap_err();
        assert!(e.to_json().to_string().contains("does not resolve"));
    }

    #[test]
    fn the_view_has_exactly_its_documented_fields() {
        let s = Subscription::new(
            "sub_1".into(),
            "t".into(),
            Spec::new("https://x/", Vec::new()),
            "key",
            OffsetDateTime::UNIX_EPOCH,
        );
        let v = view(&s);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = VIEW_FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        assert_eq!(v["revision"], 1);
    }
}
