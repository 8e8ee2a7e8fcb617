//! Writes of subscription states that never lose one another, through any
//! number of ingest replicas (see `waybill_core::ledger` for why the check
//! lives in the fold): `ETag` / `If-Match`, the write that confirms it won
//! or applies its change again, and the repair of keys whose last record
//! does not count.

use std::time::Duration;

use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use waybill_core::FieldError;
use waybill_core::ledger::Verdict;
use waybill_core::subscription::Subscription;
use waybill_proto::Message;
use waybill_proto::convert::subscription_to_proto;
use waybill_proto::v1;
use waybill_runtime::projection::Repair;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// How many times a write is applied again on a newer state before it is
/// answered `409`.
const ATTEMPTS: usize = 8;
/// How long a key may end with a record that does not count before a
/// replica repairs it (its writer usually does at once).
const REPAIR_GRACE: Duration = Duration::from_secs(2);
/// How often the repairs are looked for.
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// What `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// No `If-Match`, or `*`: any current revision.
    Any,
    /// One of these revisions.
    OneOf(Vec<u64>),
}

impl Precondition {
    /// Reads `If-Match`: `"3"`, a list `"3", "4"`, or `*`. A weak tag
    /// (`W/"3"`) never matches, as RFC 9110 says for `If-Match`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(raw) = headers.get(IF_MATCH) else {
            return Ok(Self::Any);
        };
        let bad = || {
            ApiError::validation(vec![FieldError::new(
                "If-Match",
                "must be `*` or entity tags like `\"3\"` (the `ETag` of the subscription)",
            )])
        };
        let text = raw.to_str().map_err(|_| bad())?.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        let mut revisions = Vec::new();
        for tag in text.split(',').map(str::trim) {
            if let Some(weak) = tag.strip_prefix("W/") {
                // Valid but never matching.
                weak.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .ok_or_else(bad)?;
                continue;
            }
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tag);
            revisions.push(inner.parse::<u64>().map_err(|_| bad())?);
        }
        Ok(Self::OneOf(revisions))
    }

    /// Whether `revision` satisfies it.
    pub fn admits(&self, revision: u64) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(revisions) => revisions.contains(&revision),
        }
    }

    fn failed(revision: u64) -> ApiError {
        ApiError::precondition_failed(format!(
            "the subscription is at revision {revision} (ETag \"{revision}\"), not the one \
             If-Match names; GET it, apply your change to it and send it again"
        ))
    }
}

/// The `ETag` of a subscription at `revision`.
pub(crate) fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header")
}

/// An answer carrying a subscription: its `ETag` is the `revision` in the
/// body.
pub(crate) struct Revisioned(pub StatusCode, pub Value);

impl IntoResponse for Revisioned {
    fn into_response(self) -> Response {
        let etag = self.1.get("revision").and_then(Value::as_u64).map(etag);
        let mut response = (self.0, axum::Json(self.1)).into_response();
        if let Some(etag) = etag {
            response.headers_mut().insert(ETAG, etag);
        }
        response
    }
}

/// Applies a change to subscription `id` on its current state, writes the
/// next revision and returns the state once its write counted. A write that
/// lost to another one is applied again on the newer state (`change` sees
/// it) up to [`ATTEMPTS`] times, then answered `409`; an `If-Match` that
/// no longer holds answers `412`. `change` answers errors of its own
/// (validation) on the first state, and `409` on a later one; `marked`
/// finishes the change once it is marked as the next revision (a reset
/// must know its own revision).
pub(crate) async fn commit<F, Fut, T, G>(
    state: &AppState,
    principal: &Principal,
    id: &str,
    precondition: &Precondition,
    mut change: F,
    mut marked: G,
) -> Result<Subscription, ApiError>
where
    F: FnMut(Subscription) -> Fut,
    Fut: std::future::Future<Output = Result<(Subscription, T), ApiError>>,
    G: FnMut(&mut Subscription, T),
{
    // Within one replica, writes of one id queue rather than collide.
    let _guard = state.write_lock(id).await;
    for attempt in 0..ATTEMPTS {
        let current = crate::subscriptions::find(state, principal, id)?;
        if !precondition.admits(current.revision) {
            return Err(Precondition::failed(current.revision));
        }
        let revision = current.revision;
        let (mut next, then) = match change(current).await {
            Ok(next) => next,
            Err(e) if attempt == 0 => return Err(e),
            Err(e) => {
                return Err(ApiError::conflict(format!(
                    "the subscription changed meanwhile and this change no longer applies to \
                     it ({}); GET it and send the change again",
                    e.message()
                )));
            }
        };
        next.touch(&principal.key_id, time::OffsetDateTime::now_utc());
        marked(&mut next, then);
        debug_assert_eq!(next.revision, revision + 1);
        publish(state, &next).await?;
        let verdict = state.subscriptions.read().verdict(&next.write_id);
        match verdict {
            Some(Verdict::Applied | Verdict::Restated) => {
                return crate::subscriptions::find(state, principal, id);
            }
            Some(Verdict::Deleted) => {
                // The tombstone already follows; nothing to repair here.
                return Err(ApiError::not_found(format!(
                    "no subscription `{id}` (deleted meanwhile)"
                )));
            }
            Some(Verdict::Stale { current }) => {
                tracing::info!(
                    subscription_id = id,
                    written = next.revision,
                    current,
                    attempt,
                    "a concurrent write won; applying the change again"
                );
            }
            None => {
                tracing::warn!(subscription_id = id, "write folded without a verdict");
                return Err(ApiError::unavailable(
                    "the change was written but its outcome is not known yet; GET the subscription",
                ));
            }
        }
    }
    // Our last record lost: the key must not end with it.
    restate(state, id).await;
    Err(ApiError::conflict(format!(
        "subscription `{id}` kept changing while this change was applied ({ATTEMPTS} attempts); \
         send it again"
    )))
}

/// Writes a delete marker on the current revision (so that `If-Match`
/// holds exactly), then the tombstone. `404` if it was deleted meanwhile.
pub(crate) async fn delete(
    state: &AppState,
    principal: &Principal,
    id: &str,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    let _guard = state.write_lock(id).await;
    if *precondition != Precondition::Any {
        for _ in 0..ATTEMPTS {
            let current = crate::subscriptions::find(state, principal, id)?;
            if !precondition.admits(current.revision) {
                return Err(Precondition::failed(current.revision));
            }
            let marker = v1::Subscription {
                id: current.id.clone(),
                tenant_id: current.tenant_id.clone(),
                revision: current.revision + 1,
                write_id: waybill_core::ids::new_write_id(),
                deleted: true,
                ..Default::default()
            };
            write(state, id, Some(&marker.encode_to_vec())).await?;
            let verdict = state.subscriptions.read().verdict(&marker.write_id);
            match verdict {
                Some(Verdict::Applied) => break,
                Some(Verdict::Deleted) => {
                    return Err(ApiError::not_found(format!(
                        "no subscription `{id}` (deleted meanwhile)"
                    )));
                }
                // Another write won: judge If-Match on the new revision.
                _ => continue,
            }
        }
        if !state.subscriptions.read().is_deleted(id) {
            restate(state, id).await;
            return Err(ApiError::conflict(format!(
                "subscription `{id}` kept changing while it was deleted; send the DELETE again"
            )));
        }
    } else {
        crate::subscriptions::find(state, principal, id)?;
    }
    // A tombstone is final whatever came before it.
    write(state, id, None).await?;
    let health = waybill_runtime::projection::health_key(id);
    state
        .send(&state.topics.subscriptions(), health.as_bytes(), None)
        .await?;
    Ok(())
}

/// Writes the full state of `subscription` to the compacted topic and waits
/// until this service's projection has applied it.
pub(crate) async fn publish(state: &AppState, subscription: &Subscription) -> Result<(), ApiError> {
    let record = subscription_to_proto(subscription, &state.keys).encode_to_vec();
    write(state, &subscription.id, Some(&record)).await
}

async fn write(state: &AppState, key: &str, record: Option<&[u8]>) -> Result<(), ApiError> {
    state
        .write_through(
            &state.subscriptions,
            &state.topics.subscriptions(),
            key.as_bytes(),
            record,
        )
        .await
}

/// Writes the current state of `id` again, so that the key's last record
/// is one that counts (a tombstone if it was deleted). Best effort: a
/// failure leaves it to the repair loop.
async fn restate(state: &AppState, id: &str) {
    let repair = if state.subscriptions.read().is_deleted(id) {
        Repair::Tombstone
    } else {
        Repair::Restate
    };
    if let Err(e) = repair_key(state, id, repair).await {
        tracing::warn!(
            subscription_id = id,
            error = e.message(),
            "repair postponed"
        );
    }
}

async fn repair_key(state: &AppState, key: &str, repair: Repair) -> Result<(), ApiError> {
    match repair {
        Repair::Restate => {
            let current = state.subscriptions.read().get(key);
            match current {
                Some(s) => publish(state, &s).await,
                None => Ok(()),
            }
        }
        Repair::Tombstone => write(state, key, None).await,
        Repair::ClearHealth => state
            .send(&state.topics.subscriptions(), key.as_bytes(), None)
            .await
            .map(|_| ()),
    }
}

/// Repairs, until `shutdown`, every key whose last record does not count
/// and that nobody repaired within [`REPAIR_GRACE`]: a writer that lost and
/// stopped (a crash, a `409`), a health record written after a delete.
pub(crate) async fn repair_loop(state: std::sync::Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REPAIR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = state.subscriptions.read().repairs_due(REPAIR_GRACE);
        for (key, repair) in due {
            match repair_key(&state, &key, repair).await {
                Ok(()) => tracing::info!(key, ?repair, "subscription record repaired"),
                Err(e) => tracing::warn!(key, ?repair, error = e.message(), "repair failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IF_MATCH, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(
            Precondition::from_headers(&HeaderMap::new()).unwrap(),
            Precondition::Any
        );
        assert_eq!(
            Precondition::from_headers(&headers("*")).unwrap(),
            Precondition::Any
        );
        let p = Precondition::from_headers(&headers("\"3\", \"5\"")).unwrap();
        assert!(p.admits(3) && p.admits(5) && !p.admits(4));
        let bare = Precondition::from_headers(&headers("7")).unwrap();
        assert!(bare.admits(7));
        let weak = Precondition::from_headers(&headers("W/\"3\"")).unwrap();
        assert!(!weak.admits(3));
        for bad in ["\"x\"", "W/3", "\"-1\"", ""] {
            let e = Precondition::from_headers(&headers(bad)).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn the_etag_is_the_revision_of_the_body() {
        let response =
            Revisioned(StatusCode::OK, serde_json::json!({"revision": 4})).into_response();
        assert_eq!(response.headers()[ETAG], "\"4\"");
    }
}
