//! The subscription projection: every subscription, folded from the
//! compacted `subscriptions` topic (secrets opened with the operator keys).
//!
//! [`Log`] is the fold every service shares: the ledger of
//! `waybill-core` decides which records count (revisions, final
//! deletions, health under its own key), and a [`Sink`] keeps what one
//! service needs ([`SealedSubscriptions`]: every subscription as its
//! sealed record; the matcher: its index). A writing service's projection ([`Log::writer`])
//! also tells a writer whether its write won and which keys to repair.

use std::collections::BTreeMap;
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

mod sealed;
pub use sealed::SealedSubscriptions;

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

impl<S: Counted> Counted for Log<S> {
    fn count(&self) -> usize {
        self.sink.count()
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
    /// a sink that keeps records instead of states. `id` is the ledger's
    /// copy of its id: a sink keyed by it shares the allocation.
    fn upsert(&mut self, id: Arc<str>, subscription: Subscription, record: &[u8]);
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
                    let shared = self
                        .ledger
                        .shared_id(&id)
                        .unwrap_or_else(|| id.as_str().into());
                    self.sink.upsert(shared, s, value.unwrap_or_default());
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

/// The ingest service's projection: every subscription as its sealed
/// record, with an index by tenant for its lists.
pub type AllSubscriptions = Log<SealedSubscriptions>;

/// The delivery service's projection: every subscription as its sealed
/// record, by id.
pub type SealedProjection = Log<SealedSubscriptions>;
