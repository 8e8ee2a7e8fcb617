//! `/v1/tenants`: tenants and their API keys, managed with the operator
//! token and event-sourced on the compacted `tenants` topic.
//!
//! A tenant record holds the SHA-256 of each live key, never the key: the
//! key is shown once, in the answer that made it. Every ingest instance folds
//! the topic into [`Tenants`] and authenticates API keys against it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use waybill_core::event::format_rfc3339;
use waybill_core::fields::Fields;
use waybill_core::ids;
use waybill_kafka::table::Fold;
use waybill_proto::Message;
use waybill_proto::convert::{from_timestamp, timestamp};
use waybill_proto::v1;

use crate::AppState;
use crate::auth::{Principal, bearer_or_api_key, digest};
use crate::body::read_json;
use crate::error::ApiError;

/// Largest tenant or key body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Characters of a key kept to recognise it (`wb_` and 3 more): enough to
/// tell keys apart in a list, too few to narrow a guess.
const KEY_PREFIX_LEN: usize = 6;
/// Most live keys per tenant.
const MAX_KEYS: usize = 100;

/// A tenant as folded from the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Live keys.
    pub api_keys: Vec<ApiKey>,
    /// Incremented by every change.
    pub revision: u64,
}

/// A live API key (its digest, not the key).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// `key_...`.
    pub id: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// First characters of the key.
    pub prefix: String,
}

/// Every tenant, and every live key by digest.
#[derive(Debug, Default)]
pub struct Tenants {
    by_id: BTreeMap<String, Tenant>,
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tenants {
    /// One tenant.
    pub fn get(&self, id: &str) -> Option<&Tenant> {
        self.by_id.get(id)
    }

    /// The principal of a key digest.
    pub fn authenticate(&self, digest: &[u8; 32]) -> Option<&Principal> {
        self.by_digest.get(digest)
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            for key in old.api_keys {
                self.by_digest.remove(&key.sha256);
            }
        }
    }
}

impl Fold for Tenants {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let id = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
        self.remove(id);
        let Some(value) = value else {
            return Ok(());
        };
        let tenant = tenant_from_proto(v1::Tenant::decode(value).map_err(|e| e.to_string())?)?;
        if tenant.id != id {
            return Err(format!("record id `{}` differs from its key", tenant.id));
        }
        for key in &tenant.api_keys {
            self.by_digest.insert(
                key.sha256,
                Principal {
                    key_id: key.id.clone(),
                    tenant_id: tenant.id.clone(),
                    session: None,
                },
            );
        }
        self.by_id.insert(tenant.id.clone(), tenant);
        Ok(())
    }
}

fn tenant_from_proto(p: v1::Tenant) -> Result<Tenant, String> {
    let api_keys = p
        .api_keys
        .into_iter()
        .map(|k| {
            Ok(ApiKey {
                sha256: k
                    .sha256
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("key `{}` has no 32-byte digest", k.id))?,
                created_at: from_timestamp(k.created_at.as_ref(), "api_keys.created_at")
                    .map_err(|e| e.to_string())?,
                id: k.id,
                prefix: k.prefix,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Tenant {
        created_at: from_timestamp(p.created_at.as_ref(), "created_at")
            .map_err(|e| e.to_string())?,
        id: p.id,
        name: p.name,
        api_keys,
        revision: p.revision,
    })
}

fn tenant_to_proto(t: &Tenant) -> v1::Tenant {
    v1::Tenant {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: Some(timestamp(t.created_at)),
        api_keys: t
            .api_keys
            .iter()
            .map(|k| v1::ApiKey {
                id: k.id.clone(),
                sha256: k.sha256.to_vec(),
                created_at: Some(timestamp(k.created_at)),
                prefix: k.prefix.clone(),
            })
            .collect(),
        revision: t.revision,
    }
}

fn view(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "created_at": format_rfc3339(t.created_at),
        "api_keys": t.api_keys.iter().map(|k| json!({
            "id": k.id,
            "prefix": k.prefix,
            "created_at": format_rfc3339(k.created_at),
        })).collect::<Vec<_>>(),
    })
}

/// The caller presented the operator token.
pub(crate) struct Operator;

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer_or_api_key(&parts.headers)?;
        match &state.operator_token {
            Some(expected) if digest(presented) == *expected => Ok(Operator),
            Some(_) => Err(ApiError::operator_only()),
            None => Err(ApiError::unauthorized(
                "tenant management is off: this deployment has no `ingest.operator_token`",
            )),
        }
    }
}

/// `POST /v1/tenants {"name", "id"?}` → `201 {"id", "name", "created_at"}`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    _: Operator,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let mut f = Fields::parse(&body).map_err(|e| ApiError::validation(vec![e]))?;
    let name: Option<String> = f.required("name", "a string");
    if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 256) {
        f.error("name", "must be 1 to 256 characters");
    }
    let id: Option<String> = f.optional("id", "a string");
    if id.as_ref().is_some_and(|id| !ids::is_valid_client_id(id)) {
        f.error(
            "id",
            "must be 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-` (leave it out to get a generated id)",
        );
    }
    let errors = f.finish(&["name", "id"]);
    let (Some(name), true) = (name, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let id = id.unwrap_or_else(ids::new_tenant_id);
    let _guard = state.write_lock(&id).await;
    if state.tenants.read().get(&id).is_some() {
        return Err(ApiError::conflict(format!("tenant `{id}` already exists")));
    }
    let tenant = Tenant {
        id,
        name,
        created_at: OffsetDateTime::now_utc(),
        api_keys: Vec::new(),
        revision: 1,
    };
    publish(&state, &tenant).await?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": tenant.id,
            "name": tenant.name,
            "created_at": format_rfc3339(tenant.created_at),
        })),
    ))
}

/// `GET /v1/tenants` (operator).
pub(crate) async fn list(State(state): State<Arc<AppState>>, _: Operator) -> Json<Value> {
    let tenants = state.tenants.read();
    Json(json!({"tenants": tenants.by_id.values().map(view).collect::<Vec<_>>()}))
}

/// `GET /v1/tenants/{id}` (operator).
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id).map(|t| Json(view(&t)))
}

/// `POST /v1/tenants/{id}/api_keys` → `201 {"id", "key"}`: the key is shown
/// this once. An optional body `{"key": "..."}` imports an existing key
/// (e.g. when moving from another system) instead of generating one.
pub(crate) async fn create_key(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let imported = if headers.contains_key(axum::http::header::CONTENT_TYPE) {
        let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
        let mut f = Fields::parse(&body).map_err(|e| ApiError::validation(vec![e]))?;
        let key: Option<String> = f.optional("key", "a string");
        if key.as_ref().is_some_and(|k| {
            k.len() < crate::config::MIN_IMPORTED_KEY_LEN
                || k.len() > 256
                || k.bytes().any(|b| !b.is_ascii_graphic())
        }) {
            f.error(
                "key",
                format!(
                    "must be {} to 256 visible ASCII characters",
                    crate::config::MIN_IMPORTED_KEY_LEN
                ),
            );
        }
        let errors = f.finish(&["key"]);
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        key
    } else {
        None
    };
    let _guard = state.write_lock(&id).await;
    let mut tenant = find(&state, &id)?;
    if tenant.api_keys.len() >= MAX_KEYS {
        return Err(ApiError::conflict(format!(
            "tenant `{id}` has {MAX_KEYS} keys already; delete one first"
        )));
    }
    let key = imported.unwrap_or_else(ids::new_api_key);
    let sha256 = digest(&key);
    if state.api_keys.authenticate(&key).is_some()
        || state.tenants.read().authenticate(&sha256).is_some()
    {
        return Err(ApiError::conflict(
            "this key is already in use; choose another",
        ));
    }
    let api_key = ApiKey {
        id: ids::new_api_key_id(),
        sha256,
        created_at: OffsetDateTime::now_utc(),
        prefix: key.chars().take(KEY_PREFIX_LEN).collect(),
    };
    let key_id = api_key.id.clone();
    tenant.api_keys.push(api_key);
    tenant.revision += 1;
    publish(&state, &tenant).await?;
    tracing::info!(tenant_id = %tenant.id, key_id, "API key created");
    Ok((StatusCode::CREATED, Json(json!({"id": key_id, "key": key}))))
}

/// `DELETE /v1/tenants/{id}/api_keys/{key_id}` → `204`: the key stops
/// working once this answer is sent.
pub(crate) async fn delete_key(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let _guard = state.write_lock(&id).await;
    let mut tenant = find(&state, &id)?;
    let before = tenant.api_keys.len();
    tenant.api_keys.retain(|k| k.id != key_id);
    if tenant.api_keys.len() == before {
        return Err(ApiError::not_found(format!(
            "tenant `{id}` has no API key `{key_id}`"
        )));
    }
    tenant.revision += 1;
    publish(&state, &tenant).await?;
    tracing::info!(tenant_id = %tenant.id, key_id, "API key deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn find(state: &AppState, id: &str) -> Result<Tenant, ApiError> {
    state
        .tenants
        .read()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{id}`")))
}

async fn publish(state: &AppState, tenant: &Tenant) -> Result<(), ApiError> {
    let record = tenant_to_proto(tenant).encode_to_vec();
    state
        .write_through(
            &state.tenants,
            &state.topics.tenants(),
            tenant.id.as_bytes(),
            Some(&record),
        )
        .await
}
