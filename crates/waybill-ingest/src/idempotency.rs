//! `Idempotency-Key` on POST: a repeat within the window answers the first
//! result.
//!
//! Answers are remembered per tenant and key, with a fingerprint of the
//! route and body: the same key with a different request is a `409`, a
//! repeat while the first is still running is a `409` too (retry shortly).
//! Failed requests are forgotten so that the client can retry them. The
//! store is in memory, bounded, and per instance: behind a load balancer,
//! route by tenant (or accept that a repeat reaching another instance is
//! executed again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// Longest accepted key.
const MAX_KEY_LEN: usize = 255;

type Key = (String, String);

enum Entry {
    Running {
        fingerprint: [u8; 32],
        since: Instant,
    },
    Done {
        fingerprint: [u8; 32],
        at: Instant,
        status: StatusCode,
        body: Value,
    },
}

impl Entry {
    fn since(&self) -> Instant {
        match self {
            Entry::Running { since, .. } => *since,
            Entry::Done { at, .. } => *at,
        }
    }
}

/// Remembered answers.
pub struct Store {
    entries: Mutex<HashMap<Key, Entry>>,
    window: Duration,
    capacity: usize,
}

impl Store {
    /// A store keeping answers for `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            window,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One request under an `Idempotency-Key` (or none).
pub(crate) struct Idempotent<'a> {
    held: Option<(&'a Store, Key, [u8; 32])>,
    replay: Option<(StatusCode, Value)>,
}

impl<'a> Idempotent<'a> {
    /// Looks the request up: a stored answer to replay, a conflict, or a
    /// new request to run (then [`Idempotent::finish`] it).
    pub fn begin(
        state: &'a AppState,
        principal: &Principal,
        headers: &HeaderMap,
        route: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let Some(raw) = headers.get("idempotency-key") else {
            return Ok(Self {
                held: None,
                replay: None,
            });
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .ok_or_else(|| {
                ApiError::validation(vec![waybill_core::FieldError::new(
                    "Idempotency-Key",
                    format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
                )])
            })?;
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let store = &state.idempotency;
        let id = (principal.tenant_id.clone(), key.to_owned());
        let mut entries = store.lock();
        let now = Instant::now();
        if entries.len() >= store.capacity {
            entries.retain(|_, e| now.duration_since(e.since()) < store.window);
            if entries.len() >= store.capacity {
                return Err(ApiError::unavailable(
                    "too many recent Idempotency-Keys; retry shortly",
                ));
            }
        }
        match entries.get(&id) {
            Some(e) if now.duration_since(e.since()) >= store.window => {}
            Some(Entry::Running { fingerprint: f, .. } | Entry::Done { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                return Err(ApiError::conflict(
                    "this Idempotency-Key was used with a different request; use a new key",
                ));
            }
            Some(Entry::Running { .. }) => {
                return Err(ApiError::conflict(
                    "a request with this Idempotency-Key is still running; retry shortly",
                ));
            }
            Some(Entry::Done { status, body, .. }) => {
                return Ok(Self {
                    held: None,
                    replay: Some((*status, body.clone())),
                });
            }
            None => {}
        }
        entries.insert(
            id.clone(),
            Entry::Running {
                fingerprint,
                since: now,
            },
        );
        Ok(Self {
            held: Some((store, id, fingerprint)),
            replay: None,
        })
    }

    /// The stored answer, if this is a repeat.
    pub fn replay(&self) -> Option<(StatusCode, Json<Value>)> {
        self.replay
            .as_ref()
            .map(|(status, body)| (*status, Json(body.clone())))
    }

    /// Remembers a successful answer (failures are forgotten).
    pub fn finish(
        mut self,
        result: Result<(StatusCode, Json<Value>), ApiError>,
    ) -> Result<(StatusCode, Json<Value>), ApiError> {
        if let Ok((status, Json(body))) = &result
            && let Some((store, id, fingerprint)) = self.held.take()
        {
            store.lock().insert(
                id,
                Entry::Done {
                    fingerprint,
                    at: Instant::now(),
                    status: *status,
                    body: body.clone(),
                },
            );
        }
        result
    }
}

impl Drop for Idempotent<'_> {
    /// A request that failed or was abandoned releases its key.
    fn drop(&mut self) {
        if let Some((store, id, _)) = self.held.take() {
            store.lock().remove(&id);
        }
    }
}
