//! The matcher's index: which subscriptions an event goes to, without
//! scanning them.
//!
//! Subscriptions are indexed by tenant, then by each of their event-type
//! patterns (exact names and prefixes in hash maps, `*` apart), then by
//! their filter: a subscription whose every filter scope has an `IN`
//! predicate (`dc_id IN ["7", "9"]`) is listed under each `attribute=value`
//! it needs; the others (no filter, or a scope of `NOT_IN` only) are listed
//! apart and always evaluated. An event named `a.b.c` with `dc_id=7` looks
//! at the exact name `a.b.c`, the prefixes `a.` and `a.b.` and `*` of its
//! tenant, and in each at the unkeyed list and the `dc_id=7` list: only
//! those candidates have their filter evaluated. Only deliverable
//! subscriptions are indexed, and only what matching needs is kept (id,
//! patterns, filter). The index agrees with [`crate::matching::matches`] on
//! every input (property-tested).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::event::Event;
use crate::filter::{Comparator, Filter, TENANT_ATTRIBUTE};
use crate::pattern::EventTypePattern;
use crate::subscription::{Status, Subscription};

/// The subscriptions of every tenant, indexed for matching.
#[derive(Debug, Default)]
pub struct MatchIndex {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Every known subscription id (indexed or not) → its slot if indexed.
    by_id: HashMap<Arc<str>, Option<u32>>,
    tenants: HashMap<Arc<str>, TenantIndex>,
}

#[derive(Debug)]
struct Slot {
    id: Arc<str>,
    /// Shared with the tenant map's key.
    tenant: Arc<str>,
    /// Normalised: no pattern selects a name another one selects.
    patterns: Box<[EventTypePattern]>,
    /// What a candidate must pass beyond its keys; `None` when the keys
    /// decide the filter whole ([`keys_decide`]), the most common filter.
    filter: Option<Box<Filter>>,
    /// The `attribute\0value` keys it is listed under; empty = unkeyed.
    keys: Box<[Box<str>]>,
    /// Disabled by its health (a `410`, failing too long): matches nothing.
    suspended: bool,
}

/// The subscriptions of one pattern.
#[derive(Debug, Default)]
struct Bucket {
    unkeyed: Vec<u32>,
    keyed: HashMap<Box<str>, Vec<u32>>,
}

impl Bucket {
    fn add(&mut self, slot: u32, keys: &[Box<str>]) {
        if keys.is_empty() {
            self.unkeyed.push(slot);
        }
        for key in keys {
            self.keyed.entry(key.clone()).or_default().push(slot);
        }
    }

    fn take(&mut self, slot: u32, keys: &[Box<str>]) {
        fn drop_from(list: &mut Vec<u32>, slot: u32) {
            if let Some(at) = list.iter().position(|s| *s == slot) {
                list.swap_remove(at);
            }
        }
        if keys.is_empty() {
            drop_from(&mut self.unkeyed, slot);
        }
        for key in keys {
            if let Some(list) = self.keyed.get_mut(key) {
                drop_from(list, slot);
                if list.is_empty() {
                    self.keyed.remove(key);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.unkeyed.is_empty() && self.keyed.is_empty()
    }
}

#[derive(Debug, Default)]
struct TenantIndex {
    exact: HashMap<Box<str>, Bucket>,
    prefix: HashMap<Box<str>, Bucket>,
    all: Bucket,
}

impl TenantIndex {
    fn bucket(&mut self, pattern: &EventTypePattern) -> &mut Bucket {
        match pattern {
            EventTypePattern::All => &mut self.all,
            EventTypePattern::Prefix(p) => self.prefix.entry(p.as_str().into()).or_default(),
            EventTypePattern::Exact(e) => self.exact.entry(e.as_str().into()).or_default(),
        }
    }

    fn take(&mut self, pattern: &EventTypePattern, slot: u32, keys: &[Box<str>]) {
        let (map, name) = match pattern {
            EventTypePattern::All => {
                self.all.take(slot, keys);
                return;
            }
            EventTypePattern::Prefix(p) => (&mut self.prefix, p.as_str()),
            EventTypePattern::Exact(e) => (&mut self.exact, e.as_str()),
        };
        if let Some(bucket) = map.get_mut(name) {
            bucket.take(slot, keys);
            if bucket.is_empty() {
                map.remove(name);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.exact.is_empty() && self.prefix.is_empty()
    }
}

/// Drops every pattern another one of the list already covers (`*` covers
/// all; `a.` covers `a.b.` and `a.b.c`), and duplicates, so that each
/// event name is selected by at most one remaining pattern.
pub fn normalise(patterns: &[EventTypePattern]) -> Vec<EventTypePattern> {
    if patterns.contains(&EventTypePattern::All) {
        return vec![EventTypePattern::All];
    }
    let prefixes: Vec<&str> = patterns
        .iter()
        .filter_map(|p| match p {
            EventTypePattern::Prefix(p) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    let mut kept: Vec<EventTypePattern> = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let covered = match pattern {
            EventTypePattern::All => false,
            EventTypePattern::Prefix(p) => prefixes
                .iter()
                .any(|other| other.len() < p.len() && p.starts_with(other)),
            EventTypePattern::Exact(e) => prefixes.iter().any(|other| e.starts_with(other)),
        };
        if !covered && !kept.contains(pattern) {
            kept.push(pattern.clone());
        }
    }
    kept
}

fn key(attribute: &str, value: &str) -> Box<str> {
    format!("{attribute}\0{value}").into()
}

/// The `attribute\0value` keys an event must have one of to pass `filter`:
/// for each scope, the values of its first `IN` predicate. Empty when the
/// filter cannot be keyed (no filter, or a scope without `IN`).
fn filter_keys(filter: Option<&Filter>) -> Vec<Box<str>> {
    let Some(filter) = filter.filter(|f| !f.scopes.is_empty()) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for scope in &filter.scopes {
        let Some(predicate) = scope
            .predicates
            .iter()
            .find(|p| p.comparator == Comparator::In)
        else {
            return Vec::new();
        };
        keys.extend(
            predicate
                .values
                .iter()
                .map(|v| key(&predicate.attribute, v)),
        );
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether being reached under one of its keys is passing `filter`: each
/// scope is one `IN` predicate (whose values are its keys), and no name or
/// value holds the keys' separator (which could make two keys alike).
fn keys_decide(filter: &Filter) -> bool {
    !filter.scopes.is_empty()
        && filter.scopes.iter().all(|scope| {
            matches!(scope.predicates.as_slice(), [p] if p.comparator == Comparator::In
                && !p.values.is_empty()
                && !p.attribute.contains('\0')
                && p.values.iter().all(|v| !v.contains('\0')))
        })
}

/// The keys an event has: one per attribute, and its tenant.
fn event_keys(tenant_id: &str, attributes: &BTreeMap<String, String>) -> Vec<Box<str>> {
    attributes
        .iter()
        .filter(|(name, _)| name.as_str() != TENANT_ATTRIBUTE)
        .map(|(name, value)| key(name, value))
        .chain(std::iter::once(key(TENANT_ATTRIBUTE, tenant_id)))
        .collect()
}

impl MatchIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a subscription (a disabled one is known but matches
    /// nothing; one disabled by its health is indexed but suspended, so
    /// that a health change needs no re-indexing).
    pub fn upsert(&mut self, subscription: &Subscription) {
        self.upsert_as(subscription.id.as_str().into(), subscription);
    }

    /// [`MatchIndex::upsert`], keyed by `id` (the subscription's id, an
    /// allocation shared with whoever else keeps it).
    pub fn upsert_as(&mut self, id: Arc<str>, subscription: &Subscription) {
        debug_assert_eq!(&*id, subscription.id);
        self.remove(&subscription.id);
        if !subscription.spec.enabled {
            self.by_id.insert(id, None);
            return;
        }
        let patterns = normalise(&subscription.spec.event_types).into_boxed_slice();
        let filter = subscription
            .spec
            .filter
            .clone()
            .filter(|f| !f.scopes.is_empty())
            .map(Box::new);
        let keys = filter_keys(filter.as_deref()).into_boxed_slice();
        let filter = filter.filter(|f| !keys_decide(f));
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let tenant_id: Arc<str> = match self.tenants.get_key_value(subscription.tenant_id.as_str())
        {
            Some((t, _)) => t.clone(),
            None => subscription.tenant_id.as_str().into(),
        };
        let tenant = self.tenants.entry(tenant_id.clone()).or_default();
        for pattern in &patterns {
            tenant.bucket(pattern).add(slot, &keys);
        }
        self.slots[slot as usize] = Some(Slot {
            id: id.clone(),
            tenant: tenant_id,
            patterns,
            filter,
            keys,
            suspended: subscription.status == Status::Disabled,
        });
        self.by_id.insert(id, Some(slot));
    }

    /// Suspends (disabled by its health) or resumes a subscription.
    pub fn set_suspended(&mut self, id: &str, suspended: bool) {
        if let Some(Some(slot)) = self.by_id.get(id)
            && let Some(entry) = &mut self.slots[*slot as usize]
        {
            entry.suspended = suspended;
        }
    }

    /// Forgets a subscription (deleted).
    pub fn remove(&mut self, id: &str) {
        let Some(Some(slot)) = self.by_id.remove(id) else {
            return;
        };
        let Some(entry) = self.slots[slot as usize].take() else {
            return;
        };
        if let Some(tenant) = self.tenants.get_mut(&entry.tenant) {
            for pattern in &entry.patterns {
                tenant.take(pattern, slot, &entry.keys);
            }
            if tenant.is_empty() {
                self.tenants.remove(&entry.tenant);
            }
        }
        self.free.push(slot);
    }

    /// Whether a subscription of that id is known (deliverable or not).
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// How many subscriptions are known (deliverable or not).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The ids of the subscriptions `event` goes to, sorted.
    pub fn matching(&self, event: &Event) -> Vec<&str> {
        let mut found = Vec::new();
        let Some(tenant) = self.tenants.get(event.tenant_id.as_str()) else {
            return found;
        };
        let keys = event_keys(&event.tenant_id, &event.attributes);
        let operational = crate::catalog::is_operational(&event.name);
        // An operational event never goes to the subscription it is about.
        let about = operational.then_some(event.entity.id.as_str());
        let mut visit = |bucket: &Bucket| {
            let keyed = keys.iter().filter_map(|k| bucket.keyed.get(k)).flatten();
            for slot in bucket.unkeyed.iter().chain(keyed) {
                if let Some(entry) = &self.slots[*slot as usize]
                    && !entry.suspended
                    && about != Some(&*entry.id)
                    && entry
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.accepts(&event.tenant_id, &event.attributes))
                {
                    found.push(&*entry.id);
                }
            }
        };
        let name = event.name.as_str();
        if let Some(bucket) = tenant.exact.get(name) {
            visit(bucket);
        }
        if !tenant.prefix.is_empty() {
            for (at, _) in name.match_indices('.') {
                if let Some(bucket) = tenant.prefix.get(&name[..=at]) {
                    visit(bucket);
                }
            }
        }
        // `*` selects every event but the operational ones.
        if !operational {
            visit(&tenant.all);
        }
        found.sort_unstable();
        // A subscription keyed by two scopes is reached twice.
        found.dedup();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EntityRef;
    use crate::filter::{Comparator, Predicate, Scope};
    use crate::matching::matches;
    use crate::subscription::{Spec, Status};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;

    fn pattern(s: &str) -> EventTypePattern {
        EventTypePattern::parse(s).unwrap()
    }

    fn sub(id: &str, tenant: &str, patterns: &[&str]) -> Subscription {
        Subscription::new(
            id.into(),
            tenant.into(),
            Spec::new(
                "https://example.com",
                patterns.iter().map(|p| pattern(p)).collect(),
            ),
            "key_1",
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    fn event(tenant: &str, name: &str, attributes: &[(&str, &str)]) -> Event {
        Event {
            id: "e".into(),
            tenant_id: tenant.into(),
            name: name.into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef::default(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            callback_url: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn normalise_keeps_disjoint_patterns() {
        let n = |ps: &[&str]| {
            normalise(&ps.iter().map(|p| pattern(p)).collect::<Vec<_>>())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(n(&["a.b.c", "*", "a.*"]), ["*"]);
        assert_eq!(n(&["a.b.c", "a.*", "a.b.*", "x.y", "x.y"]), ["a.*", "x.y"]);
        assert_eq!(n(&["ab.*", "a.*"]), ["ab.*", "a.*"]);
    }

    #[test]
    fn exact_prefix_all_tenant_and_updates() {
        let mut index = MatchIndex::new();
        index.upsert(&sub("s1", "t1", &["freights.publication.created"]));
        index.upsert(&sub(
            "s2",
            "t1",
            &["freights.*", "freights.publication.created"],
        ));
        index.upsert(&sub("s3", "t1", &["*"]));
        index.upsert(&sub("s4", "t2", &["*"]));
        index.upsert(&sub("s5", "t1", &["freights.publication.*"]));
        let e = event("t1", "freights.publication.created", &[]);
        assert_eq!(index.matching(&e), ["s1", "s2", "s3", "s5"]);
        assert_eq!(
            index.matching(&event("t1", "freight_orders.order.created", &[])),
            ["s3"]
        );
        // Disabled: known, matches nothing; deleted: gone.
        let mut disabled = sub("s3", "t1", &["*"]);
        disabled.status = Status::Disabled;
        index.upsert(&disabled);
        index.remove("s1");
        assert_eq!(index.matching(&e), ["s2", "s5"]);
        assert_eq!(index.len(), 4);
        // A changed pattern list re-indexes.
        index.upsert(&sub("s5", "t1", &["time_slot_management.*"]));
        assert_eq!(index.matching(&e), ["s2"]);
        index.remove("s2");
        index.remove("s3");
        index.remove("s5");
        assert!(index.matching(&e).is_empty());
        assert!(
            !index.tenants.contains_key("t1"),
            "empty tenants are dropped"
        );
    }

    /// A filter of one scope: `attribute IN [value]`.
    fn one_in(attribute: &str, value: &str) -> Filter {
        Filter {
            scopes: vec![Scope {
                predicates: vec![Predicate {
                    attribute: attribute.into(),
                    comparator: Comparator::In,
                    values: vec![value.into()],
                }],
            }],
        }
    }

    #[test]
    fn filters_apply_after_lookup() {
        let mut index = MatchIndex::new();
        let mut s = sub("s1", "t1", &["*"]);
        s.spec.filter = Some(one_in("dc_id", "7"));
        index.upsert(&s);
        assert!(index.matching(&event("t1", "a.b", &[])).is_empty());
        assert_eq!(
            index.matching(&event("t1", "a.b", &[("dc_id", "7")])),
            ["s1"]
        );
        // One IN predicate per scope: the keys decide, nothing is kept to
        // evaluate.
        assert!(index.slots[0].as_ref().unwrap().filter.is_none());

        // Keys alike (`a\0b` = `c` and `a` = `b\0c`): the filter is kept and
        // evaluated, so the look-alike does not pass.
        let mut s = sub("s2", "t1", &["*"]);
        s.spec.filter = Some(one_in("a\0b", "c"));
        index.upsert(&s);
        assert!(index.slots[1].as_ref().unwrap().filter.is_some());
        assert!(
            index
                .matching(&event("t1", "a.b", &[("a", "b\0c")]))
                .is_empty()
        );
        assert_eq!(
            index.matching(&event("t1", "a.b", &[("a\0b", "c")])),
            ["s2"]
        );
    }

    // Small alphabets so that random subscriptions and events collide often.
    const NAMES: &[&str] = &[
        "a.x.one", "a.x.two", "a.y.one", "b.x.one", "b.z.two", "ab.x.one",
    ];
    const PATTERNS: &[&str] = &[
        "*", "a.*", "a.x.*", "a.y.*", "b.*", "ab.*", "a.x.one", "a.x.two", "b.z.two", "ab.x.one",
    ];

    fn arb_filter() -> impl Strategy<Value = Option<Filter>> {
        let predicate = (
            prop::sample::select(vec!["dc_id", "company_id", "tenant"]),
            any::<bool>(),
            prop::collection::btree_set(
                prop::sample::select(vec!["1", "2", "3", "t1", "t2"]),
                1..3,
            ),
        )
            .prop_map(|(attribute, in_, values)| Predicate {
                attribute: attribute.into(),
                comparator: if in_ {
                    Comparator::In
                } else {
                    Comparator::NotIn
                },
                values: values.into_iter().map(str::to_owned).collect(),
            });
        let scope =
            prop::collection::vec(predicate, 1..3).prop_map(|predicates| Scope { predicates });
        prop::option::of(prop::collection::vec(scope, 0..4).prop_map(|scopes| Filter { scopes }))
    }

    fn arb_subscription() -> impl Strategy<Value = (Subscription, bool)> {
        (
            0..30u32,
            prop::sample::select(vec!["t1", "t2"]),
            prop::collection::vec(prop::sample::select(PATTERNS.to_vec()), 1..4),
            arb_filter(),
            prop::sample::select(vec![Status::Active, Status::Failing, Status::Disabled]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(n, tenant, patterns, filter, status, enabled, delete)| {
                let mut s = sub(&format!("s{n}"), tenant, &patterns);
                s.spec.filter = filter;
                s.spec.enabled = enabled;
                s.status = status;
                (s, delete)
            })
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            prop::sample::select(vec!["t1", "t2", "t3"]),
            prop::sample::select(NAMES.to_vec()),
            prop::option::of(prop::sample::select(vec!["1", "2", "3"])),
            prop::option::of(prop::sample::select(vec!["1", "2", "3"])),
            // An attribute named like the tenant pseudo-attribute is ignored.
            prop::option::of(prop::sample::select(vec!["t1", "t2"])),
        )
            .prop_map(|(tenant, name, dc, company, fake_tenant)| {
                let mut attributes = Vec::new();
                if let Some(t) = fake_tenant {
                    attributes.push(("tenant", t));
                }
                if let Some(dc) = dc {
                    attributes.push(("dc_id", dc));
                }
                if let Some(company) = company {
                    attributes.push(("company_id", company));
                }
                event(tenant, name, &attributes)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// After any sequence of upserts and deletes, the index gives
        /// exactly what scanning every subscription with `matches` gives.
        #[test]
        fn index_equals_the_naive_scan(
            changes in prop::collection::vec(arb_subscription(), 1..60),
            events in prop::collection::vec(arb_event(), 1..20),
        ) {
            let mut index = MatchIndex::new();
            let mut all: BTreeMap<String, Subscription> = BTreeMap::new();
            for (s, delete) in changes {
                if delete {
                    index.remove(&s.id);
                    all.remove(&s.id);
                } else {
                    index.upsert(&s);
                    all.insert(s.id.clone(), s);
                }
            }
            prop_assert_eq!(index.len(), all.len());
            for e in &events {
                let naive: Vec<&str> = all
                    .values()
                    .filter(|s| matches(s, e))
                    .map(|s| s.id.as_str())
                    .collect();
                prop_assert_eq!(index.matching(e), naive, "event {:?}", e);
            }
        }
    }
}
