//! `Idempotency-Key` on POST: a repeat within the window answers the first
//! result.
//!
//! Answers are remembered per tenant and key, with a fingerprint of the
//! route and body: the same key with a different request is a `409`, a
//! repeat while the first is still running is a `409` too (retry shortly).
//! Failed requests are forgotten so that the client can retry them.
//!
//! Two layers: this instance's bounded memory (a repeat it saw answers
//! without Kafka), and the compacted `idempotency` topic that every ingest
//! replica follows ([`Answers`]): the first request claims its key there
//! (a write on the key's revision, so two replicas cannot both claim it),
//! then records its answer, so a repeat through any replica answers the
//! first result. Only requests that send the header pay the two writes.
//! A claim whose request never finished (its process died) lapses after
//! [`CLAIM_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use waybill_core::ledger::{Ledger, RecentVerdicts};
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::convert::{from_timestamp, timestamp};
use waybill_proto::v1;

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

/// One tenant's remembered answers, by key.
type TenantEntries = HashMap<String, Entry>;

/// Remembered answers, by tenant: each tenant is bounded by its quota, all
/// of them together by `capacity`.
pub struct Store {
    entries: Mutex<Entries>,
    window: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Entries {
    by_tenant: HashMap<String, TenantEntries>,
    total: usize,
}

/// How long and how many answers are kept.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    window: Duration,
    /// Per tenant.
    quota: usize,
    /// All tenants together.
    capacity: usize,
}

/// What the store says about a key.
#[derive(Debug, PartialEq)]
enum Local {
    /// New here: now held as running.
    Held,
    /// Answered here before.
    Done(StatusCode, Value),
    /// Another request runs under it.
    Running,
    /// Used with another request.
    Other,
    /// The tenant has its quota of keys; the oldest lapses after this.
    OverQuota(Duration),
    /// Every place is taken by a running request.
    Full,
}

impl Entries {
    /// Looks `key` of `tenant` up at `now`, holding it when it is new.
    fn begin(
        &mut self,
        tenant: &str,
        key: &str,
        fingerprint: [u8; 32],
        now: Instant,
        bounds: Bounds,
    ) -> Local {
        let Bounds {
            window,
            quota,
            capacity,
        } = bounds;
        let live = |e: &Entry| now.duration_since(e.since()) < window;
        let own = self.by_tenant.entry(tenant.to_owned()).or_default();
        match own.get(key) {
            Some(e) if !live(e) => {}
            Some(Entry::Running { fingerprint: f, .. } | Entry::Done { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                return Local::Other;
            }
            Some(Entry::Running { .. }) => return Local::Running,
            Some(Entry::Done { status, body, .. }) => return Local::Done(*status, body.clone()),
            None => {}
        }
        if own.len() >= quota {
            let before = own.len();
            own.retain(|_, e| live(e));
            self.total -= before - own.len();
            if own.len() >= quota {
                let oldest = own.values().map(Entry::since).min().unwrap_or(now);
                return Local::OverQuota(window.saturating_sub(now.duration_since(oldest)));
            }
        }
        if self.total >= capacity && !self.make_room(now, window, capacity) {
            return Local::Full;
        }
        let own = self.by_tenant.entry(tenant.to_owned()).or_default();
        if own
            .insert(
                key.to_owned(),
                Entry::Running {
                    fingerprint,
                    since: now,
                },
            )
            .is_none()
        {
            self.total += 1;
        }
        Local::Held
    }

    /// Forgets lapsed answers, then (if still full) the oldest answered one:
    /// the shared topic still answers it. `false`: everything is running.
    fn make_room(&mut self, now: Instant, window: Duration, capacity: usize) -> bool {
        let mut total = 0;
        for own in self.by_tenant.values_mut() {
            own.retain(|_, e| now.duration_since(e.since()) < window);
            total += own.len();
        }
        self.by_tenant.retain(|_, own| !own.is_empty());
        self.total = total;
        while self.total >= capacity {
            let oldest = self
                .by_tenant
                .iter()
                .flat_map(|(t, own)| own.iter().map(move |(k, e)| (t, k, e)))
                .filter(|(_, _, e)| matches!(e, Entry::Done { .. }))
                .min_by_key(|(_, _, e)| e.since())
                .map(|(t, k, _)| (t.clone(), k.clone()));
            let Some((tenant, key)) = oldest else {
                return false;
            };
            self.remove(&tenant, &key);
        }
        true
    }

    fn remove(&mut self, tenant: &str, key: &str) {
        if let Some(own) = self.by_tenant.get_mut(tenant)
            && own.remove(key).is_some()
        {
            self.total -= 1;
            if own.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
    }

    fn answer(&mut self, tenant: &str, key: &str, entry: Entry) {
        let own = self.by_tenant.entry(tenant.to_owned()).or_default();
        if own.insert(key.to_owned(), entry).is_none() {
            self.total += 1;
        }
    }
}

impl Store {
    /// A store keeping answers for `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            window,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a claim of a key holds without an answer.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a repeat waits for the first request's answer before `409`.
const RUNNING_WAIT: Duration = Duration::from_secs(2);

/// The `idempotency` topic: every key's claim or answer that counts.
#[derive(Default)]
pub struct Answers {
    ledger: Ledger,
    answers: HashMap<String, v1::IdempotentAnswer>,
    verdicts: RecentVerdicts<bool>,
}

impl Answers {
    fn get(&self, key: &str) -> Option<&v1::IdempotentAnswer> {
        self.answers.get(key)
    }

    fn counted(&self, write_id: &str) -> Option<bool> {
        self.verdicts.get(write_id)
    }

    fn revision(&self, key: &str) -> u64 {
        self.ledger.revision(key).unwrap_or(0)
    }
}

impl Fold for Answers {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
        let Some(value) = value else {
            // A released key starts again at revision 1.
            self.answers.remove(key);
            self.ledger.forget(key);
            return Ok(());
        };
        let answer = v1::IdempotentAnswer::decode(value).map_err(|e| e.to_string())?;
        let counts = self
            .ledger
            .judge_write(key, answer.revision, &answer.write_id, 0)
            .counts();
        self.verdicts.remember(&answer.write_id, counts);
        if counts {
            self.answers.insert(key.to_owned(), answer);
        }
        Ok(())
    }
}

/// The topic key of a tenant's `Idempotency-Key`.
fn shared_key(tenant_id: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant_id.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the shared table says about a key.
enum Shared {
    /// Nobody has it (or its claim lapsed): claim it.
    Free,
    /// Another request runs under it.
    Running,
    /// Answered.
    Done(StatusCode, Value),
    /// Used with another request.
    Other,
}

fn judge(
    answer: Option<&v1::IdempotentAnswer>,
    fingerprint: &[u8; 32],
    window: Duration,
) -> Shared {
    let Some(a) = answer else {
        return Shared::Free;
    };
    let age = from_timestamp(a.at.as_ref(), "at")
        .map(|at| OffsetDateTime::now_utc() - at)
        .unwrap_or(time::Duration::MAX);
    let limit = if a.status == 0 { CLAIM_TTL } else { window };
    if age > limit {
        return Shared::Free;
    }
    if a.fingerprint != fingerprint {
        return Shared::Other;
    }
    if a.status == 0 {
        return Shared::Running;
    }
    match (
        StatusCode::from_u16(a.status as u16),
        serde_json::from_slice(&a.body),
    ) {
        (Ok(status), Ok(body)) => Shared::Done(status, body),
        _ => Shared::Free,
    }
}

/// One request under an `Idempotency-Key` (or none).
pub(crate) struct Idempotent<'a> {
    held: Option<(&'a Store, Key, [u8; 32])>,
    replay: Option<(StatusCode, Value)>,
    /// The claim on the shared table, to answer or release.
    claim: Option<(&'a AppState, String, v1::IdempotentAnswer)>,
}

impl<'a> Idempotent<'a> {
    /// Looks the request up: a stored answer to replay, a conflict, or a
    /// new request to run (then [`Idempotent::finish`] it).
    pub async fn begin(
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
                claim: None,
            });
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::validation(vec![waybill_core::FieldError::new(
                    "Idempotency-Key",
                    format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces)"),
                )])
            })?;
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let store = &state.idempotency;
        let tenant = &principal.tenant_id;
        let id = (tenant.clone(), key.to_owned());
        let quota = state.quotas.limits(tenant).idempotency_keys;
        let bounds = Bounds {
            window: store.window,
            quota,
            capacity: store.capacity,
        };
        let seen = store
            .lock()
            .begin(tenant, key, fingerprint, Instant::now(), bounds);
        match seen {
            Local::Held => {}
            Local::Other => {
                return Err(ApiError::conflict(
                    "this Idempotency-Key was used with a different request; use a new key",
                ));
            }
            Local::Running => {
                return Err(ApiError::conflict(
                    "a request with this Idempotency-Key is still running; retry shortly",
                ));
            }
            Local::Done(status, body) => {
                return Ok(Self {
                    held: None,
                    replay: Some((status, body)),
                    claim: None,
                });
            }
            Local::OverQuota(wait) => {
                return Err(state.quotas.refuse(
                    crate::quotas::Kind::IdempotencyKeys,
                    tenant,
                    wait,
                    format!(
                        "this tenant has {quota} Idempotency-Keys remembered from the last {}, its quota; send the request without one, or retry after the Retry-After seconds",
                        waybill_core::duration::format(store.window)
                    ),
                ));
            }
            Local::Full => {
                return Err(ApiError::unavailable(
                    "too many requests with an Idempotency-Key are running; retry shortly",
                ));
            }
        }
        let mut this = Self {
            held: Some((store, id, fingerprint)),
            replay: None,
            claim: None,
        };
        // Another replica may have seen it: claim the key on the topic.
        let shared = shared_key(&principal.tenant_id, key);
        // Everything another replica wrote before this request counts.
        state
            .wait_current(&state.answers, "Idempotency-Key answers")
            .await?;
        let running_until = Instant::now() + RUNNING_WAIT;
        for _ in 0..64 {
            let (seen, revision) = {
                let answers = state.answers.read();
                (
                    judge(answers.get(&shared), &fingerprint, store.window),
                    answers.revision(&shared),
                )
            };
            match seen {
                Shared::Other => {
                    return Err(ApiError::conflict(
                        "this Idempotency-Key was used with a different request; use a new key",
                    ));
                }
                Shared::Running if Instant::now() < running_until => {
                    // The first request may be answering right now.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Shared::Running => {
                    return Err(ApiError::conflict(
                        "a request with this Idempotency-Key is still running; retry shortly",
                    ));
                }
                Shared::Done(status, body) => {
                    // The local hold is released when `this` is dropped.
                    this.replay = Some((status, body));
                    return Ok(this);
                }
                Shared::Free => {}
            }
            let claim = v1::IdempotentAnswer {
                tenant_id: principal.tenant_id.clone(),
                fingerprint: fingerprint.to_vec(),
                status: 0,
                body: Vec::new(),
                at: Some(timestamp(OffsetDateTime::now_utc())),
                revision: revision + 1,
                write_id: waybill_core::ids::new_write_id(),
            };
            write_answer(state, &shared, Some(&claim)).await?;
            if state.answers.read().counted(&claim.write_id) == Some(true) {
                this.claim = Some((state, shared, claim));
                return Ok(this);
            }
        }
        Err(ApiError::conflict(
            "a request with this Idempotency-Key is still running; retry shortly",
        ))
    }

    /// The stored answer, if this is a repeat.
    pub fn replay(&self) -> Option<(StatusCode, Json<Value>)> {
        self.replay
            .as_ref()
            .map(|(status, body)| (*status, Json(body.clone())))
    }

    /// Remembers a successful answer (failures are forgotten), here and on
    /// the shared topic.
    pub async fn finish(
        mut self,
        result: Result<(StatusCode, Json<Value>), ApiError>,
    ) -> Result<(StatusCode, Json<Value>), ApiError> {
        if let Some((state, shared, mut claim)) = self.claim.take() {
            let record = match &result {
                Ok((status, Json(body))) => {
                    claim.status = u32::from(status.as_u16());
                    claim.body = serde_json::to_vec(body).unwrap_or_default();
                    claim.at = Some(timestamp(OffsetDateTime::now_utc()));
                    claim.revision += 1;
                    claim.write_id = waybill_core::ids::new_write_id();
                    Some(claim.encode_to_vec())
                }
                Err(_) => None,
            };
            // Best effort: a lost answer lets a repeat through another
            // replica run again once the claim lapses.
            if let Err(e) = write_raw(state, &shared, record.as_deref()).await {
                tracing::warn!(error = e.message(), "Idempotency-Key answer not shared");
            }
        }
        if let Ok((status, Json(body))) = &result
            && let Some((store, id, fingerprint)) = self.held.take()
        {
            store.lock().answer(
                &id.0,
                &id.1,
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

async fn write_answer(
    state: &AppState,
    key: &str,
    answer: Option<&v1::IdempotentAnswer>,
) -> Result<(), ApiError> {
    let value = answer.map(|a| a.encode_to_vec());
    write_raw(state, key, value.as_deref()).await
}

async fn write_raw(state: &AppState, key: &str, value: Option<&[u8]>) -> Result<(), ApiError> {
    state
        .write_through(
            &state.answers,
            &state.topics.idempotency(),
            key.as_bytes(),
            value,
        )
        .await
}

impl Drop for Idempotent<'_> {
    /// A request that failed or was abandoned releases its key.
    fn drop(&mut self) {
        if let Some((store, (tenant, key), _)) = self.held.take() {
            store.lock().remove(&tenant, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn done(entries: &mut Entries, tenant: &str, key: &str, at: Instant) {
        entries.answer(
            tenant,
            key,
            Entry::Done {
                fingerprint: [1; 32],
                at,
                status: StatusCode::CREATED,
                body: Value::from(key),
            },
        );
    }

    fn bounds(quota: usize, capacity: usize) -> Bounds {
        Bounds {
            window: HOUR,
            quota,
            capacity,
        }
    }

    #[test]
    fn a_tenant_at_its_quota_is_refused_until_its_oldest_key_lapses() {
        let mut e = Entries::default();
        let start = Instant::now();
        for (i, key) in ["a", "b"].iter().enumerate() {
            done(&mut e, "t1", key, start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(600);
        assert_eq!(
            e.begin("t1", "c", [1; 32], now, bounds(2, 100)),
            Local::OverQuota(HOUR - Duration::from_secs(600))
        );
        // A repeat of a remembered key still answers.
        assert_eq!(
            e.begin("t1", "a", [1; 32], now, bounds(2, 100)),
            Local::Done(StatusCode::CREATED, Value::from("a"))
        );
        // Another tenant has its own quota.
        assert_eq!(
            e.begin("t2", "c", [1; 32], now, bounds(2, 100)),
            Local::Held
        );
        // Once the oldest lapsed, the tenant gets a place again.
        let later = start + HOUR + Duration::from_millis(500);
        assert_eq!(
            e.begin("t1", "c", [1; 32], later, bounds(2, 100)),
            Local::Held
        );
        assert_eq!(e.total, 3);
    }

    #[test]
    fn a_full_store_forgets_the_oldest_answer_instead_of_refusing_everybody() {
        let mut e = Entries::default();
        let start = Instant::now();
        done(&mut e, "t1", "old", start);
        done(&mut e, "t2", "new", start + Duration::from_secs(5));
        let now = start + Duration::from_secs(10);
        assert_eq!(e.begin("t3", "k", [1; 32], now, bounds(10, 2)), Local::Held);
        assert!(!e.by_tenant.contains_key("t1"), "the oldest answer went");
        assert!(e.by_tenant["t2"].contains_key("new"));
        assert_eq!(e.total, 2);
        // Only running requests left: nothing can be forgotten.
        let mut running = Entries::default();
        assert_eq!(
            running.begin("t1", "a", [1; 32], now, bounds(10, 1)),
            Local::Held
        );
        assert_eq!(
            running.begin("t2", "b", [1; 32], now, bounds(10, 1)),
            Local::Full
        );
    }

    #[test]
    fn a_key_reused_with_another_request_is_a_conflict() {
        let mut e = Entries::default();
        let now = Instant::now();
        assert_eq!(e.begin("t", "k", [1; 32], now, bounds(5, 5)), Local::Held);
        assert_eq!(
            e.begin("t", "k", [1; 32], now, bounds(5, 5)),
            Local::Running
        );
        assert_eq!(e.begin("t", "k", [2; 32], now, bounds(5, 5)), Local::Other);
        e.remove("t", "k");
        assert_eq!(e.total, 0);
        assert!(e.by_tenant.is_empty());
    }
}
