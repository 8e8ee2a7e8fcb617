//! The subscription projection: every subscription, folded from the
//! compacted `subscriptions` topic (secrets opened with the operator keys).
//!
//! [`Log`] is the fold every service shares: the ledger of
//! `waybill-core` decides which records count (revisions, final
//! deletions, health under its own key), and a [`Sink`] keeps what one
//! service needs ([`Subscriptions`]: every subscription in full; the
//! matcher: its index). A writing service's projection ([`Log::writer`])
//! also tells a writer whether its write won and which keys to repair.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use waybill_kafka::table::Table;
use waybill_kafka::{KafkaConfig, Topics};

use waybill_core::ledger::{HealthVerdict, Ledger, RecentVerdicts, Verdict};
use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Health, Subscription};
use waybill_kafka::table::Fold;
use waybill_proto::Message;
use waybill_proto::convert::{SealedWith, health_from_proto, subscription_from_proto};
use waybill_proto::v1;

/// Starts following the `subscriptions` topic into `projection`.
pub async fn follow<S: Sink>(
    kafka: &KafkaConfig,
    topics: &Topics,
    projection: Log<S>,
    shutdown: CancellationToken,
) -> waybill_kafka::Result<Table<Log<S>>> {
    Table::follow(kafka, &topics.subscriptions(), projection, shutdown).await
}

/// Waits until the projection holds every subscription written before this
/// call, logging while it loads. `false` if `shutdown` came first.
pub async fn wait_loaded<S: Fold + Counted>(
    table: &Table<S>,
    shutdown: &CancellationToken,
) -> bool {
    let started = SystemTime::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            r = table.wait_fresh(started, Duration::from_secs(30)) => match r {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "subscription projection still loading"),
            },
        }
    }
    tracing::info!(
        subscriptions = table.read().count(),
        "subscription projection loaded"
    );
    true
}

/// A projection that can say how many subscriptions it holds.
pub trait Counted {
    /// How many subscriptions.
    fn count(&self) -> usize;
}

impl Counted for Subscriptions {
    fn count(&self) -> usize {
        self.len()
    }
}

impl<S: Counted> Counted for Log<S> {
    fn count(&self) -> usize {
        self.sink.count()
    }
}

/// Subscriptions by tenant, then id.
///
/// Each subscription is boxed: a B-tree node holds eleven entries and is
/// allocated whole, so unboxed the free slots of the nodes cost most of a
/// subscription's size each; a tenant's name is stored once (`Arc`), and
/// the id → tenant lookup is a hash map.
#[derive(Default)]
pub struct Subscriptions {
    by_tenant: BTreeMap<Arc<str>, BTreeMap<Box<str>, Box<Subscription>>>,
    tenant_of: HashMap<Box<str>, Arc<str>>,
}

impl Subscriptions {
    /// An empty projection.
    pub fn new() -> Self {
        Self::default()
    }

    /// One subscription by id.
    pub fn get(&self, id: &str) -> Option<&Subscription> {
        let tenant = self.tenant_of.get(id)?;
        self.by_tenant.get(tenant)?.get(id).map(|s| &**s)
    }

    /// One tenant's subscriptions, by id.
    pub fn of_tenant(&self, tenant_id: &str) -> impl Iterator<Item = &Subscription> {
        self.by_tenant
            .get(tenant_id)
            .into_iter()
            .flat_map(|subs| subs.values().map(|s| &**s))
    }

    /// Every subscription, by tenant then id.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.by_tenant
            .values()
            .flat_map(|subs| subs.values().map(|s| &**s))
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.tenant_of.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenant_of.is_empty()
    }

    fn remove(&mut self, id: &str) {
        if let Some(tenant) = self.tenant_of.remove(id)
            && let Some(subs) = self.by_tenant.get_mut(&tenant)
        {
            subs.remove(id);
            if subs.is_empty() {
                self.by_tenant.remove(&tenant);
            }
        }
    }
}

/// Key prefix of the health records on the `subscriptions` topic.
pub const HEALTH_KEY_PREFIX: &str = "health/";

/// The key of subscription `id`'s health record.
pub fn health_key(id: &str) -> String {
    format!("{HEALTH_KEY_PREFIX}{id}")
}

/// One record of the `subscriptions` topic.
pub enum Record<'a> {
    /// A state of the subscription (counts if the ledger says so), and how
    /// its record is sealed.
    Upsert(Box<Subscription>, SealedWith),
    /// The subscription of this id was deleted (a tombstone).
    Delete(&'a str),
    /// A delete marker: a deletion written on a revision.
    DeleteMarker {
        /// The subscription.
        id: &'a str,
        /// The revision it deletes at.
        revision: u64,
        /// Its write.
        write_id: String,
    },
    /// The subscription's health.
    Health(&'a str, Health),
    /// The tombstone of a health record.
    HealthCleared(&'a str),
}

/// Decodes one record of the `subscriptions` topic (every projection of it
/// uses this): the key must be the record's id.
pub fn decode_record<'a>(
    key: &'a [u8],
    value: Option<&[u8]>,
    keys: &Keyring,
) -> Result<Record<'a>, String> {
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
    if let Some(id) = key.strip_prefix(HEALTH_KEY_PREFIX) {
        let Some(value) = value else {
            return Ok(Record::HealthCleared(id));
        };
        let record = v1::SubscriptionHealth::decode(value).map_err(|e| e.to_string())?;
        if record.subscription_id != id {
            return Err(format!(
                "health record of `{}` under the key of `{id}`",
                record.subscription_id
            ));
        }
        let health = health_from_proto(record).map_err(|e| e.to_string())?;
        return Ok(Record::Health(id, health));
    }
    let id = key;
    let Some(value) = value else {
        return Ok(Record::Delete(id));
    };
    let record = v1::Subscription::decode(value).map_err(|e| e.to_string())?;
    if record.id != id {
        return Err(format!("record id `{}` differs from its key", record.id));
    }
    if record.deleted {
        return Ok(Record::DeleteMarker {
            id,
            revision: record.revision,
            write_id: record.write_id,
        });
    }
    let sealed = SealedWith::of(&record);
    let subscription = subscription_from_proto(record, keys).map_err(|e| e.to_string())?;
    Ok(Record::Upsert(Box::new(subscription), sealed))
}

/// What a projection keeps of the subscriptions the ledger lets through.
pub trait Sink: Send + Sync + 'static {
    /// A subscription's new state (its health fields set from the health
    /// that counts), and the record it was read from (secrets sealed), for
    /// a sink that keeps records instead of states.
    fn upsert(&mut self, subscription: Subscription, record: &[u8]);
    /// A subscription's health changed (`None`: healthy).
    fn set_health(&mut self, id: &str, health: Option<&Health>);
    /// A subscription was deleted.
    fn remove(&mut self, id: &str);
}

/// What a writer of the topic must write again so that the last record of
/// a key is one that counts (see [`waybill_core::ledger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Write the current state again.
    Restate,
    /// Write a tombstone (the subscription was deleted).
    Tombstone,
    /// Write a tombstone for the health key (its subscription was deleted).
    ClearHealth,
}

/// How many write verdicts a writing projection remembers.
const REMEMBERED_WRITES: usize = 65_536;

/// What a writer needs from its projection: whether its write counted,
/// and which keys end with a record that does not.
struct Writes {
    verdicts: RecentVerdicts<Verdict>,
    repairs: BTreeMap<String, (Repair, Instant)>,
}

impl Default for Writes {
    fn default() -> Self {
        Self {
            verdicts: RecentVerdicts::new(REMEMBERED_WRITES),
            repairs: BTreeMap::new(),
        }
    }
}

impl Writes {
    fn remember(&mut self, write_id: &str, verdict: Verdict) {
        self.verdicts.remember(write_id, verdict);
    }

    fn needs(&mut self, id: &str, repair: Option<Repair>) {
        match repair {
            Some(r) => {
                self.repairs
                    .entry(id.to_owned())
                    .or_insert((r, Instant::now()))
                    .0 = r;
            }
            None => {
                self.repairs.remove(id);
            }
        }
    }
}

/// A projection of the `subscriptions` topic: the [`Ledger`] decides which
/// records count, the sink keeps what this service needs of them.
pub struct Log<S> {
    keys: Keyring,
    ledger: Ledger,
    sink: S,
    writes: Option<Writes>,
    /// Subscriptions whose state that counts is sealed with another key
    /// than the current one, or an older seal version (`waybill reseal`).
    stale_seals: std::collections::BTreeSet<String>,
    /// Subscriptions whose latest record could not be read (e.g. sealed
    /// with a key this process does not have), with why.
    unreadable: BTreeMap<String, String>,
}

impl<S> std::ops::Deref for Log<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.sink
    }
}

impl<S: Sink> Log<S> {
    /// A projection into `sink`, opening secrets with `keys`.
    pub fn new(keys: Keyring, sink: S) -> Self {
        Self {
            keys,
            ledger: Ledger::new(),
            sink,
            writes: None,
            stale_seals: std::collections::BTreeSet::new(),
            unreadable: BTreeMap::new(),
        }
    }

    /// A projection of a service that writes the topic: it remembers the
    /// verdicts of recent writes and the keys to repair.
    pub fn writer(keys: Keyring, sink: S) -> Self {
        Self {
            writes: Some(Writes::default()),
            ..Self::new(keys, sink)
        }
    }

    /// The verdict on the write `write_id`, once folded (writers only).
    pub fn verdict(&self, write_id: &str) -> Option<Verdict> {
        self.writes.as_ref()?.verdicts.get(write_id)
    }

    /// Keys whose last record does not count and nobody repaired for
    /// `grace` (writers only).
    pub fn repairs_due(&self, grace: Duration) -> Vec<(String, Repair)> {
        let Some(writes) = &self.writes else {
            return Vec::new();
        };
        writes
            .repairs
            .iter()
            .filter(|(_, (_, since))| since.elapsed() >= grace)
            .map(|(id, (r, _))| (id.clone(), *r))
            .collect()
    }

    /// Subscriptions whose record that counts is not sealed with the
    /// current key and seal version: what `waybill reseal` writes again.
    pub fn stale_seals(&self) -> &std::collections::BTreeSet<String> {
        &self.stale_seals
    }

    /// Subscriptions whose latest record this process could not read, with
    /// why (the state before it, if any, is what the projection holds).
    pub fn unreadable(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    /// The revision folded for `id`.
    pub fn revision(&self, id: &str) -> Option<u64> {
        self.ledger.revision(id)
    }

    /// Whether `id` was deleted (as far as this projection remembers).
    pub fn is_deleted(&self, id: &str) -> bool {
        self.ledger.is_deleted(id)
    }

    fn note_seal(&mut self, id: &str, sealed: &SealedWith) {
        if sealed.is_current(&self.keys) {
            self.stale_seals.remove(id);
        } else {
            self.stale_seals.insert(id.to_owned());
        }
    }

    fn judged(&mut self, id: &str, write_id: &str, verdict: Verdict) {
        if let Some(w) = &mut self.writes {
            w.remember(write_id, verdict);
            w.needs(
                id,
                match verdict {
                    Verdict::Applied | Verdict::Restated => None,
                    Verdict::Stale { .. } => Some(Repair::Restate),
                    Verdict::Deleted => Some(Repair::Tombstone),
                },
            );
        }
    }
}

impl<S: Sink> Fold for Log<S> {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let record = match decode_record(key, value, &self.keys) {
            Ok(record) => record,
            Err(e) => {
                if let Ok(id) = std::str::from_utf8(key)
                    && !id.starts_with(HEALTH_KEY_PREFIX)
                {
                    self.unreadable.insert(id.to_owned(), e.clone());
                }
                return Err(e);
            }
        };
        if let Ok(id) = std::str::from_utf8(key) {
            self.unreadable.remove(id);
        }
        match record {
            Record::Upsert(s, sealed) => {
                let mut s = *s;
                let verdict = self.ledger.judge(&s);
                if verdict == Verdict::Applied {
                    self.note_seal(&s.id, &sealed);
                    s.set_health(self.ledger.health(&s.id));
                    let (id, write_id) = (s.id.clone(), s.write_id.clone());
                    self.sink.upsert(s, value.unwrap_or_default());
                    self.judged(&id, &write_id, verdict);
                } else {
                    // A state written again is read from its latest record.
                    if verdict == Verdict::Restated {
                        self.note_seal(&s.id, &sealed);
                    }
                    let (id, write_id) = (s.id.clone(), s.write_id.clone());
                    self.judged(&id, &write_id, verdict);
                }
            }
            Record::DeleteMarker {
                id,
                revision,
                write_id,
            } => {
                let verdict = self.ledger.judge_write(id, revision, &write_id, 0);
                if verdict == Verdict::Applied {
                    self.ledger.delete(id);
                    self.sink.remove(id);
                    self.stale_seals.remove(id);
                    // The tombstone follows (the marker's writer writes
                    // it; a repair does if it cannot).
                    self.judged(id, &write_id, verdict);
                    if let Some(w) = &mut self.writes {
                        w.needs(id, Some(Repair::Tombstone));
                    }
                } else {
                    self.judged(id, &write_id, verdict);
                }
            }
            Record::Delete(id) => {
                self.ledger.delete(id);
                self.sink.remove(id);
                self.stale_seals.remove(id);
                if let Some(w) = &mut self.writes {
                    w.needs(id, None);
                }
            }
            Record::Health(id, health) => match self.ledger.record_health(id, health) {
                HealthVerdict::Applied => {
                    let health = self.ledger.effective_health(id).cloned();
                    self.sink.set_health(id, health.as_ref());
                    if let Some(w) = &mut self.writes {
                        w.needs(&health_key(id), None);
                    }
                }
                HealthVerdict::Deleted => {
                    if let Some(w) = &mut self.writes {
                        w.needs(&health_key(id), Some(Repair::ClearHealth));
                    }
                }
            },
            Record::HealthCleared(id) => {
                self.ledger.clear_health(id);
                self.sink.set_health(id, None);
                if let Some(w) = &mut self.writes {
                    w.needs(&health_key(id), None);
                }
            }
        }
        Ok(())
    }
}

impl Sink for Subscriptions {
    fn upsert(&mut self, subscription: Subscription, _record: &[u8]) {
        self.remove(&subscription.id);
        let tenant: Arc<str> = match self
            .by_tenant
            .get_key_value(subscription.tenant_id.as_str())
        {
            Some((tenant, _)) => tenant.clone(),
            None => subscription.tenant_id.as_str().into(),
        };
        let id: Box<str> = subscription.id.as_str().into();
        self.tenant_of.insert(id.clone(), tenant.clone());
        self.by_tenant
            .entry(tenant)
            .or_default()
            .insert(id, Box::new(subscription));
    }

    fn set_health(&mut self, id: &str, health: Option<&Health>) {
        if let Some(tenant) = self.tenant_of.get(id)
            && let Some(s) = self
                .by_tenant
                .get_mut(tenant)
                .and_then(|subs| subs.get_mut(id))
        {
            s.set_health(health);
        }
    }

    fn remove(&mut self, id: &str) {
        Subscriptions::remove(self, id);
    }
}

/// Every subscription in full, behind the ledger (the ingest service's
/// projection).
pub type AllSubscriptions = Log<Subscriptions>;

/// Every subscription as its sealed record, behind the ledger (the
/// delivery service's projection).
pub type SealedProjection = Log<SealedSubscriptions>;

/// Every subscription kept as the record it was read from, secrets still
/// sealed, with the few fields read on every delivery beside it; a
/// subscription is decoded (and its secrets opened) when a delivery needs
/// it. A fraction of the memory of [`Subscriptions`] (BENCHMARKS.md), and
/// no secret lies open in memory between deliveries.
pub struct SealedSubscriptions {
    keys: Keyring,
    by_id: HashMap<Box<str>, Sealed>,
}

/// One subscription of [`SealedSubscriptions`].
struct Sealed {
    record: Box<[u8]>,
    ordering: waybill_core::subscription::Ordering,
    max_in_flight: u32,
    /// The health that counts (it may be newer than the record's).
    status: waybill_core::subscription::Status,
    failing_since: Option<time::OffsetDateTime>,
    disabled_reason: Option<Box<str>>,
    /// Paused by the user.
    paused: bool,
    /// Deliveries kept since there (while paused, or until released).
    kept_from: Option<waybill_core::hold::Parked>,
}

impl SealedSubscriptions {
    /// An empty projection opening secrets with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self {
            keys,
            by_id: HashMap::new(),
        }
    }

    /// Subscription `id`, decoded, its secrets opened.
    pub fn get(&self, id: &str) -> Option<Subscription> {
        let sealed = self.by_id.get(id)?;
        let mut s = match v1::Subscription::decode(&*sealed.record)
            .map_err(|e| e.to_string())
            .and_then(|r| subscription_from_proto(r, &self.keys).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                // It was read once with these keys: only a key removed
                // since could make this fail.
                tracing::error!(subscription_id = id, error = %e, "a kept subscription record cannot be read again");
                return None;
            }
        };
        s.status = sealed.status;
        s.failing_since = sealed.failing_since;
        s.disabled_reason = sealed.disabled_reason.as_deref().map(str::to_owned);
        Some(s)
    }

    /// Subscription `id`'s ordering and `max_in_flight`, without decoding.
    pub fn lane_policy(&self, id: &str) -> Option<(waybill_core::subscription::Ordering, u32)> {
        self.by_id.get(id).map(|s| (s.ordering, s.max_in_flight))
    }

    /// Subscription `id`'s health fields (status, failing since), without
    /// decoding.
    pub fn health(
        &self,
        id: &str,
    ) -> Option<(
        waybill_core::subscription::Status,
        Option<time::OffsetDateTime>,
    )> {
        self.by_id.get(id).map(|s| (s.status, s.failing_since))
    }

    /// The subscriptions with deliveries kept: id, whether paused, and
    /// since where.
    pub fn kept(&self) -> impl Iterator<Item = (&str, bool, waybill_core::hold::Parked)> {
        self.by_id
            .iter()
            .filter_map(|(id, s)| Some((&**id, s.paused, s.kept_from?)))
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn keep(subscription: &Subscription, record: Box<[u8]>) -> Sealed {
        Sealed {
            record,
            ordering: subscription.spec.ordering,
            max_in_flight: subscription.spec.max_in_flight,
            status: subscription.status,
            failing_since: subscription.failing_since,
            disabled_reason: subscription.disabled_reason.as_deref().map(Into::into),
            paused: subscription.paused,
            kept_from: subscription.kept_from,
        }
    }
}

impl Counted for SealedSubscriptions {
    fn count(&self) -> usize {
        self.len()
    }
}

impl Sink for SealedSubscriptions {
    fn upsert(&mut self, subscription: Subscription, record: &[u8]) {
        let sealed = Self::keep(&subscription, record.into());
        self.by_id.insert(subscription.id.as_str().into(), sealed);
    }

    fn set_health(&mut self, id: &str, health: Option<&Health>) {
        if let Some(mut s) = self.get(id)
            && let Some(sealed) = self.by_id.get_mut(id)
        {
            s.set_health(health);
            sealed.status = s.status;
            sealed.failing_since = s.failing_since;
            sealed.disabled_reason = s.disabled_reason.as_deref().map(Into::into);
        }
    }

    fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waybill_core::subscription::{Ordering, Spec, Status};
    use waybill_proto::convert::{health_to_proto, subscription_to_proto};

    fn keys() -> Keyring {
        Keyring::new(
            "k1",
            &[("k1".to_owned(), Keyring::generate_key())]
                .into_iter()
                .collect(),
        )
        .unwrap()
    }

    /// The delivery service's sealed projection answers what the decoded
    /// one answers, through creates, updates, health, pause and deletes.
    #[test]
    fn the_sealed_projection_gives_back_what_the_decoded_one_holds() {
        let keys = keys();
        let mut decoded = Log::new(keys.clone(), Subscriptions::new());
        let mut sealed = Log::new(keys.clone(), SealedSubscriptions::new(keys.clone()));
        fn both(
            decoded: &mut Log<Subscriptions>,
            sealed: &mut Log<SealedSubscriptions>,
            key: &str,
            value: Option<Vec<u8>>,
        ) {
            decoded.apply(key.as_bytes(), value.as_deref()).unwrap();
            sealed.apply(key.as_bytes(), value.as_deref()).unwrap();
        }
        let now = time::OffsetDateTime::now_utc();
        let mut spec = Spec::new("https://hooks.example.com/a", Vec::new());
        spec.headers = [("X-Team".to_owned(), "ops".to_owned())].into();
        spec.ordering = Ordering::Strict;
        spec.max_in_flight = 3;
        let mut a = Subscription::new("sub_a".into(), "ten_1".into(), spec, "key_1", now);
        let b = Subscription::new(
            "sub_b".into(),
            "ten_2".into(),
            Spec::new("https://hooks.example.com/b", Vec::new()),
            "key_2",
            now,
        );
        for s in [&a, &b] {
            both(
                &mut decoded,
                &mut sealed,
                &s.id,
                Some(subscription_to_proto(s, &keys).encode_to_vec()),
            );
        }
        // An update, paused with deliveries kept.
        a.revision += 1;
        a.write_id = "w2".into();
        a.paused = true;
        a.kept_from = Some(waybill_core::hold::Parked {
            partition: 2,
            from: 40,
        });
        both(
            &mut decoded,
            &mut sealed,
            &a.id,
            Some(subscription_to_proto(&a, &keys).encode_to_vec()),
        );
        // Its health: failing.
        let health = Health {
            status: Status::Failing,
            failing_since: Some(now),
            disabled_reason: None,
            revision: a.revision,
            recorded_at: now,
        };
        both(
            &mut decoded,
            &mut sealed,
            &health_key(&a.id),
            Some(health_to_proto(&a.id, &a.tenant_id, &health).encode_to_vec()),
        );

        let got = sealed.get("sub_a").unwrap();
        assert_eq!(Some(&got), decoded.get("sub_a"));
        assert_eq!(got.status, Status::Failing);
        assert_eq!(
            got.spec.headers.get("X-Team").map(String::as_str),
            Some("ops")
        );
        assert_eq!(got.signing_secret, a.signing_secret, "the secret opened");
        assert_eq!(sealed.lane_policy("sub_a"), Some((Ordering::Strict, 3)));
        assert_eq!(sealed.health("sub_a"), Some((Status::Failing, Some(now))));
        let kept: Vec<_> = sealed
            .kept()
            .map(|(id, p, k)| (id.to_owned(), p, k))
            .collect();
        assert_eq!(kept, vec![("sub_a".to_owned(), true, a.kept_from.unwrap())]);
        assert_eq!(sealed.get("sub_b").as_ref(), decoded.get("sub_b"));
        assert_eq!(sealed.count(), 2);

        // Deleted (a tombstone): gone from both.
        both(&mut decoded, &mut sealed, "sub_b", None);
        assert!(sealed.get("sub_b").is_none() && decoded.get("sub_b").is_none());
        assert_eq!((sealed.count(), sealed.lane_policy("sub_b")), (1, None));
    }
}
