//! The subscription projection: every subscription, folded from the
//! compacted `subscriptions` topic (secrets opened with the operator keys).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use waybill_kafka::table::Table;
use waybill_kafka::{KafkaConfig, Topics};

use waybill_core::sealing::Keyring;
use waybill_core::subscription::Subscription;
use waybill_kafka::table::Fold;
use waybill_proto::Message;
use waybill_proto::convert::subscription_from_proto;
use waybill_proto::v1;

/// Starts following the `subscriptions` topic into a projection.
pub async fn follow(
    kafka: &KafkaConfig,
    topics: &Topics,
    keys: Keyring,
    shutdown: CancellationToken,
) -> waybill_kafka::Result<Table<Subscriptions>> {
    Table::follow(
        kafka,
        &topics.subscriptions(),
        Subscriptions::new(keys),
        shutdown,
    )
    .await
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

/// Subscriptions by tenant, then id.
pub struct Subscriptions {
    keys: Keyring,
    by_tenant: BTreeMap<String, BTreeMap<String, Subscription>>,
    tenant_of: BTreeMap<String, String>,
}

impl Subscriptions {
    /// An empty projection that opens secrets with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self {
            keys,
            by_tenant: BTreeMap::new(),
            tenant_of: BTreeMap::new(),
        }
    }

    /// One subscription by id.
    pub fn get(&self, id: &str) -> Option<&Subscription> {
        let tenant = self.tenant_of.get(id)?;
        self.by_tenant.get(tenant)?.get(id)
    }

    /// One tenant's subscriptions, by id.
    pub fn of_tenant(&self, tenant_id: &str) -> impl Iterator<Item = &Subscription> {
        self.by_tenant
            .get(tenant_id)
            .into_iter()
            .flat_map(BTreeMap::values)
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

/// One record of the `subscriptions` topic.
pub enum Record<'a> {
    /// The subscription's full new state.
    Upsert(Box<Subscription>),
    /// The subscription of this id was deleted.
    Delete(&'a str),
}

/// Decodes one record of the `subscriptions` topic (every projection of it
/// uses this): the key must be the record's id.
pub fn decode_record<'a>(
    key: &'a [u8],
    value: Option<&[u8]>,
    keys: &Keyring,
) -> Result<Record<'a>, String> {
    let id = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
    let Some(value) = value else {
        return Ok(Record::Delete(id));
    };
    let record = v1::Subscription::decode(value).map_err(|e| e.to_string())?;
    let subscription = subscription_from_proto(record, keys).map_err(|e| e.to_string())?;
    if subscription.id != id {
        return Err(format!(
            "record id `{}` differs from its key",
            subscription.id
        ));
    }
    Ok(Record::Upsert(Box::new(subscription)))
}

impl Fold for Subscriptions {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let subscription = match decode_record(key, value, &self.keys)? {
            Record::Delete(id) => {
                self.remove(id);
                return Ok(());
            }
            Record::Upsert(s) => *s,
        };
        let id = subscription.id.clone();
        self.remove(&id);
        self.tenant_of
            .insert(subscription.id.clone(), subscription.tenant_id.clone());
        self.by_tenant
            .entry(subscription.tenant_id.clone())
            .or_default()
            .insert(subscription.id.clone(), subscription);
        Ok(())
    }
}
