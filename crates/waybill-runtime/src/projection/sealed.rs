//! [`SealedSubscriptions`]: every subscription kept as its sealed record
//! (the ingest and delivery services' projection).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use waybill_core::sealing::Keyring;
use waybill_core::subscription::{Health, Subscription};
use waybill_proto::Message;
use waybill_proto::convert::subscription_from_proto;
use waybill_proto::v1;

use super::{Counted, Sink};

/// Every subscription kept as the record it was read from, secrets still
/// sealed, with the few fields read on every delivery beside it; a
/// subscription is decoded (and its secrets opened) when it is read. About
/// a quarter of the memory of the decoded model (BENCHMARKS.md), and no
/// secret lies open in memory between reads.
///
/// Ids are shared (`Arc<str>`) between the map by id and, when kept
/// ([`SealedSubscriptions::with_tenant_index`]), the tenant index, whose
/// sets give a tenant's subscriptions in id order (UUIDv7 ids: oldest
/// first).
pub struct SealedSubscriptions {
    keys: Keyring,
    by_id: HashMap<Arc<str>, Box<Sealed>>,
    by_tenant: Option<HashMap<Arc<str>, BTreeSet<Arc<str>>>>,
}

/// One subscription of [`SealedSubscriptions`].
struct Sealed {
    record: Box<[u8]>,
    ordering: waybill_core::subscription::Ordering,
    max_in_flight: u32,
    /// The health that counts (it may be newer than the record's).
    status: waybill_core::subscription::Status,
    /// Paused by the user.
    paused: bool,
    /// What only some subscriptions have, boxed apart: 32 bytes a
    /// subscription instead of 96.
    rare: Option<Box<Rare>>,
}

/// The fields of [`Sealed`] most subscriptions leave empty.
#[derive(Default, PartialEq)]
struct Rare {
    failing_since: Option<time::OffsetDateTime>,
    disabled_reason: Option<Box<str>>,
    /// Deliveries kept since there (while paused, or until released).
    kept_from: Option<waybill_core::hold::Parked>,
}

impl Sealed {
    fn failing_since(&self) -> Option<time::OffsetDateTime> {
        self.rare.as_ref().and_then(|r| r.failing_since)
    }

    fn kept_from(&self) -> Option<waybill_core::hold::Parked> {
        self.rare.as_ref().and_then(|r| r.kept_from)
    }

    /// Sets the health fields (from the health that counts).
    fn set_health(&mut self, s: &Subscription) {
        self.status = s.status;
        let mut rare = self.rare.take().map(|r| *r).unwrap_or_default();
        rare.failing_since = s.failing_since;
        rare.disabled_reason = s.disabled_reason.as_deref().map(Into::into);
        self.rare = (rare != Rare::default()).then(|| Box::new(rare));
    }
}

impl SealedSubscriptions {
    /// An empty projection by id, opening secrets with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self {
            keys,
            by_id: HashMap::new(),
            by_tenant: None,
        }
    }

    /// An empty projection by id and by tenant (for lists).
    pub fn with_tenant_index(keys: Keyring) -> Self {
        Self {
            by_tenant: Some(HashMap::new()),
            ..Self::new(keys)
        }
    }

    /// Subscription `id`, decoded, its secrets opened.
    pub fn get(&self, id: &str) -> Option<Subscription> {
        self.open(id, self.by_id.get(id)?)
    }

    fn open(&self, id: &str, sealed: &Sealed) -> Option<Subscription> {
        let mut s = match v1::Subscription::decode(&*sealed.record)
            .map(|mut r| {
                if r.id.is_empty() {
                    r.id = id.to_owned();
                }
                r
            })
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
        s.failing_since = sealed.failing_since();
        s.disabled_reason = sealed
            .rare
            .as_ref()
            .and_then(|r| r.disabled_reason.as_deref())
            .map(str::to_owned);
        Some(s)
    }

    /// The ids of one tenant's subscriptions, in id order (empty without
    /// the tenant index).
    pub fn ids_of_tenant(&self, tenant_id: &str) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.by_tenant
            .as_ref()
            .and_then(|t| t.get(tenant_id))
            .map(|ids| ids.iter())
            .unwrap_or_default()
            .map(|id| &**id)
    }

    /// One tenant's subscriptions in id order, each decoded as it is
    /// reached (empty without the tenant index).
    pub fn of_tenant(&self, tenant_id: &str) -> impl Iterator<Item = Subscription> + '_ {
        self.ids_of_tenant(tenant_id).filter_map(|id| self.get(id))
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
        self.by_id.get(id).map(|s| (s.status, s.failing_since()))
    }

    /// The subscriptions with deliveries kept: id, whether paused, and
    /// since where.
    pub fn kept(&self) -> impl Iterator<Item = (&str, bool, waybill_core::hold::Parked)> {
        self.by_id
            .iter()
            .filter_map(|(id, s)| Some((&**id, s.paused, s.kept_from()?)))
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
        let rare = Rare {
            failing_since: subscription.failing_since,
            disabled_reason: subscription.disabled_reason.as_deref().map(Into::into),
            kept_from: subscription.kept_from,
        };
        Sealed {
            record,
            ordering: subscription.spec.ordering,
            max_in_flight: subscription.spec.max_in_flight,
            status: subscription.status,
            paused: subscription.paused,
            rare: (rare != Rare::default()).then(|| Box::new(rare)),
        }
    }
}

/// `record` without its id, when the id is its first field as an encoder
/// writes it (the key of the map holds it; [`SealedSubscriptions::get`]
/// puts it back): 40 bytes less per subscription.
fn without_id<'r>(record: &'r [u8], id: &str) -> &'r [u8] {
    const ID_TAG: u8 = 1 << 3 | 2; // field 1, length-delimited
    let Some((&ID_TAG, rest)) = record.split_first() else {
        return record;
    };
    // The length, a varint.
    let mut len = 0u64;
    for (i, b) in rest.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let value = &rest[i + 1..];
            return if len == id.len() as u64 && value.starts_with(id.as_bytes()) {
                &value[id.len()..]
            } else {
                record
            };
        }
    }
    record
}

impl Counted for SealedSubscriptions {
    fn count(&self) -> usize {
        self.len()
    }
}

impl Sink for SealedSubscriptions {
    fn upsert(&mut self, id: Arc<str>, subscription: Subscription, record: &[u8]) {
        let record = without_id(record, &subscription.id);
        let sealed = Box::new(Self::keep(&subscription, record.into()));
        if let Some(by_tenant) = &mut self.by_tenant {
            // A subscription never changes tenant: its id is in its set
            // already, or goes in now.
            match by_tenant.get_mut(subscription.tenant_id.as_str()) {
                Some(ids) => {
                    ids.insert(id.clone());
                }
                None => {
                    by_tenant.insert(
                        subscription.tenant_id.as_str().into(),
                        BTreeSet::from([id.clone()]),
                    );
                }
            }
        }
        self.by_id.insert(id, sealed);
    }

    fn set_health(&mut self, id: &str, health: Option<&Health>) {
        if let Some(mut s) = self.get(id)
            && let Some(sealed) = self.by_id.get_mut(id)
        {
            s.set_health(health);
            sealed.set_health(&s);
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(sealed) = self.by_id.remove(id) else {
            return;
        };
        if let Some(by_tenant) = &mut self.by_tenant {
            // The tenant is read from the record (no secret is opened).
            let tenant = v1::Subscription::decode(&*sealed.record)
                .map(|r| r.tenant_id)
                .unwrap_or_default();
            if let Some(ids) = by_tenant.get_mut(tenant.as_str()) {
                ids.remove(id);
                if ids.is_empty() {
                    by_tenant.remove(tenant.as_str());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{Log, health_key};
    use waybill_core::subscription::{Ordering, Spec, Status};
    use waybill_kafka::table::Fold;
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

    fn fold(projection: &mut [&mut Log<SealedSubscriptions>], key: &str, value: Option<Vec<u8>>) {
        for p in projection {
            p.apply(key.as_bytes(), value.as_deref()).unwrap();
        }
    }

    /// The sealed projection gives back each subscription as it was
    /// written, with the health that counts, through creates, updates,
    /// health, pause and deletes; the ingest service's tenant index lists a
    /// tenant's subscriptions in id order.
    #[test]
    fn the_sealed_projection_gives_back_what_was_written() {
        let keys = keys();
        let mut by_id = Log::new(keys.clone(), SealedSubscriptions::new(keys.clone()));
        let mut indexed = Log::new(
            keys.clone(),
            SealedSubscriptions::with_tenant_index(keys.clone()),
        );
        let now = time::OffsetDateTime::now_utc();
        let mut spec = Spec::new("https://hooks.example.com/a", Vec::new());
        spec.headers = [("X-Team".to_owned(), "ops".to_owned())].into();
        spec.ordering = Ordering::Strict;
        spec.max_in_flight = 3;
        let mut a = Subscription::new("sub_b1".into(), "ten_1".into(), spec, "key_1", now);
        let plain = |id: &str, tenant: &str| {
            let url = format!("https://hooks.example.com/{id}");
            Subscription::new(
                id.into(),
                tenant.into(),
                Spec::new(url, Vec::new()),
                "key_1",
                now,
            )
        };
        let (b, c) = (plain("sub_a2", "ten_2"), plain("sub_a3", "ten_1"));
        for s in [&a, &b, &c] {
            fold(
                &mut [&mut by_id, &mut indexed],
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
        fold(
            &mut [&mut by_id, &mut indexed],
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
        fold(
            &mut [&mut by_id, &mut indexed],
            &health_key(&a.id),
            Some(health_to_proto(&a.id, &a.tenant_id, &health).encode_to_vec()),
        );
        a.set_health(Some(&health));

        for p in [&by_id, &indexed] {
            let got = p.get("sub_b1").unwrap();
            assert_eq!(got, a);
            assert_eq!(got.status, Status::Failing);
            assert_eq!(
                got.spec.headers.get("X-Team").map(String::as_str),
                Some("ops")
            );
            assert_eq!(got.signing_secret, a.signing_secret, "the secret opened");
            assert_eq!(p.lane_policy("sub_b1"), Some((Ordering::Strict, 3)));
            assert_eq!(p.health("sub_b1"), Some((Status::Failing, Some(now))));
            let kept: Vec<_> = p.kept().map(|(id, p, k)| (id.to_owned(), p, k)).collect();
            assert_eq!(
                kept,
                vec![("sub_b1".to_owned(), true, a.kept_from.unwrap())]
            );
            assert_eq!(p.get("sub_a2").as_ref(), Some(&b));
            assert_eq!(p.count(), 3);
        }
        // A tenant's subscriptions in id order, the update in its place.
        let ids = |p: &Log<SealedSubscriptions>, t: &str| -> Vec<String> {
            p.ids_of_tenant(t).map(str::to_owned).collect()
        };
        assert_eq!(ids(&indexed, "ten_1"), ["sub_a3", "sub_b1"]);
        assert_eq!(
            indexed.of_tenant("ten_1").collect::<Vec<_>>(),
            vec![c.clone(), a.clone()]
        );
        assert_eq!(ids(&indexed, "ten_2"), ["sub_a2"]);
        assert!(ids(&by_id, "ten_1").is_empty(), "no index by tenant");

        // Deleted (a tombstone): gone, and from its tenant's list.
        fold(&mut [&mut by_id, &mut indexed], "sub_a2", None);
        fold(&mut [&mut by_id, &mut indexed], "sub_a3", None);
        for p in [&by_id, &indexed] {
            assert!(p.get("sub_a2").is_none() && p.get("sub_a3").is_none());
            assert_eq!((p.count(), p.lane_policy("sub_a2")), (1, None));
        }
        assert!(ids(&indexed, "ten_2").is_empty());
        assert_eq!(ids(&indexed, "ten_1"), ["sub_b1"]);
    }

    /// A record is kept without its id when the id is its first field, and
    /// whole otherwise; both read back whole.
    #[test]
    fn a_kept_record_leaves_out_its_id() {
        let keys = keys();
        let s = Subscription::new(
            "sub_0123456789".into(),
            "ten_1".into(),
            Spec::new("https://hooks.example.com/a", Vec::new()),
            "key_1",
            time::OffsetDateTime::now_utc(),
        );
        let record = subscription_to_proto(&s, &keys).encode_to_vec();
        let kept = without_id(&record, &s.id);
        assert_eq!(kept.len(), record.len() - 2 - s.id.len());
        assert_eq!(without_id(&record, "sub_other"), &record[..], "not its id");
        assert_eq!(without_id(&[], "x"), &[] as &[u8]);
        assert_eq!(
            without_id(&[0x0a, 0xff], "x"),
            &[0x0a, 0xff],
            "a cut varint"
        );
        let mut p = SealedSubscriptions::new(keys.clone());
        p.upsert(s.id.as_str().into(), s.clone(), &record);
        assert_eq!(p.by_id["sub_0123456789"].record.len(), kept.len());
        // What a subscription costs beside its record stays small.
        assert!(std::mem::size_of::<Sealed>() <= 32);
        assert!(p.by_id["sub_0123456789"].rare.is_none(), "nothing rare");
        assert_eq!(p.get(&s.id), Some(s));
    }
}
