//! API keys: `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
//!
//! A key is looked up by its SHA-256 among the static keys of the
//! configuration, then among the keys of the `tenants` topic.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use waybill_core::portal;

use crate::AppState;
use crate::config::ApiKeyConfig;
use crate::error::ApiError;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// API key id (for `created_by`/`updated_by`).
    pub key_id: String,
    /// The tenant whose objects the caller sees.
    pub tenant_id: String,
    /// A portal session's id (`ps_...`, also `key_id`), when the caller
    /// presented a session token rather than an API key.
    pub session: Option<String>,
}

/// Known keys, held by their SHA-256 digest so the process keeps no key
/// in a comparable clear form and lookups do not leak timing about prefixes.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(HashMap<[u8; 32], Principal>);

impl ApiKeys {
    /// From the configured keys.
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        Self(
            keys.iter()
                .map(|k| {
                    (
                        digest(k.key.expose()),
                        Principal {
                            key_id: k.id.clone(),
                            tenant_id: k.tenant_id.clone(),
                            session: None,
                        },
                    )
                })
                .collect(),
        )
    }

    /// The principal of a presented key.
    pub fn authenticate(&self, key: &str) -> Option<&Principal> {
        self.0.get(&digest(key))
    }
}

/// SHA-256 of a presented key or token.
pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key or token a request presents: `Authorization: Bearer <key>` or
/// `X-Api-Key: <key>`.
pub(crate) fn bearer_or_api_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    match (header("authorization"), header("x-api-key")) {
        (Some(auth), _) => {
            let (scheme, token) = auth.split_once(' ').unwrap_or((auth, ""));
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(ApiError::unauthorized(
                    "the Authorization header must be `Bearer <api key>`",
                ));
            }
            Ok(token.trim())
        }
        (None, Some(key)) if !key.is_empty() => Ok(key),
        _ => Err(ApiError::unauthorized(
            "missing API key: send `Authorization: Bearer <api key>` or `X-Api-Key: <api key>`",
        )),
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer_or_api_key(&parts.headers)?;
        let principal = if key.starts_with(portal::TOKEN_PREFIX) {
            let route = parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            session(key, parts.method.as_str(), &route, state)?
        } else {
            authenticate(&parts.headers, state)?
        };
        state.quotas.admit_request(&principal.tenant_id)?;
        Ok(principal)
    }
}

/// The principal of a portal session's token, if it may call `method
/// route` (see [`portal::scope`]).
fn session(
    token: &str,
    method: &str,
    route: &str,
    state: &AppState,
) -> Result<Principal, ApiError> {
    let session = match portal::open(&state.keys, token, time::OffsetDateTime::now_utc()) {
        Ok(session) => session,
        Err(portal::Refused::Expired) => {
            return Err(ApiError::unauthorized(
                "this portal session has expired; open the portal again from the platform",
            ));
        }
        Err(portal::Refused::Invalid) => {
            return Err(ApiError::unauthorized("unknown portal session token"));
        }
    };
    match portal::scope(session.read_only, method, route) {
        portal::Scope::Allowed => Ok(Principal {
            key_id: session.id.clone(),
            tenant_id: session.tenant_id,
            session: Some(session.id),
        }),
        portal::Scope::ReadOnly => Err(ApiError::forbidden(
            "this portal session is read-only: it can look, not change (nor reveal a secret)",
        )),
        portal::Scope::NotPortal => Err(ApiError::forbidden(
            "a portal session's token works only for the portal's calls; use an API key",
        )),
    }
}

/// The tenant of the request's API key (before any quota).
fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Principal, ApiError> {
    let key = bearer_or_api_key(headers)?;
    if let Some(principal) = state.api_keys.authenticate(key) {
        return Ok(principal.clone());
    }
    let presented = digest(key);
    if let Some(principal) = state.tenants.read().authenticate(&presented) {
        return Ok(principal.clone());
    }
    if state.operator_token == Some(presented) {
        return Err(ApiError::unauthorized(
            "the operator token manages tenants only; use one of the tenant's API keys",
        ));
    }
    Err(ApiError::unauthorized("unknown or revoked API key"))
}
