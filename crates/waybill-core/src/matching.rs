//! Does an event go to a subscription?
//!
//! The one rule every matcher implementation (the index included) must agree
//! with: same tenant, subscription deliverable, one of its event-type
//! patterns selects the event's name, and its filter (if any) accepts the
//! event's attributes.

use crate::event::Event;
use crate::subscription::Subscription;

/// Whether `event` is delivered to `subscription`.
pub fn matches(subscription: &Subscription, event: &Event) -> bool {
    subscription.tenant_id == event.tenant_id
        // An operational event never goes to the subscription it is about.
        && !(crate::catalog::is_operational(&event.name)
            && event.entity.id == subscription.id)
        && subscription.is_deliverable()
        && subscription
            .spec
            .event_types
            .iter()
            .any(|pattern| pattern.matches(&event.name))
        && subscription
            .spec
            .filter
            .as_ref()
            .is_none_or(|f| f.accepts(&event.tenant_id, &event.attributes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EntityRef;
    use crate::filter::{Comparator, Filter, Predicate, Scope};
    use crate::pattern::EventTypePattern;
    use crate::subscription::{Spec, Status};
    use time::OffsetDateTime;

    fn sub(tenant: &str, patterns: &[&str]) -> Subscription {
        let patterns = patterns
            .iter()
            .map(|p| EventTypePattern::parse(p).unwrap())
            .collect();
        Subscription::new(
            "sub_1".into(),
            tenant.into(),
            Spec::new("https://example.com", patterns),
            "key_1",
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    fn event(tenant: &str, name: &str) -> Event {
        Event {
            id: "e".into(),
            tenant_id: tenant.into(),
            name: name.into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef::default(),
            attributes: Default::default(),
            callback_url: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn tenant_state_and_patterns() {
        let e = event("t1", "freights.publication.accepted");
        assert!(matches(&sub("t1", &["*"]), &e));
        assert!(matches(&sub("t1", &["orders.x", "freights.*"]), &e));
        assert!(!matches(&sub("t2", &["*"]), &e), "other tenant");
        assert!(!matches(&sub("t1", &["freight_orders.*"]), &e));
        let mut disabled = sub("t1", &["*"]);
        disabled.spec.enabled = false;
        assert!(!matches(&disabled, &e));
        let mut gone = sub("t1", &["*"]);
        gone.status = Status::Disabled;
        assert!(!matches(&gone, &e));
        let mut failing = sub("t1", &["*"]);
        failing.status = Status::Failing;
        assert!(matches(&failing, &e), "failing subscriptions still receive");
    }

    #[test]
    fn filter_on_attributes() {
        let mut e = event("t1", "freights.publication.accepted");
        let mut s = sub("t1", &["*"]);
        s.spec.filter = Some(Filter {
            scopes: vec![Scope {
                predicates: vec![Predicate {
                    attribute: "dc_id".into(),
                    comparator: Comparator::In,
                    values: vec!["7".into()],
                }],
            }],
        });
        assert!(!matches(&s, &e));
        e.attributes.insert("dc_id".into(), "7".into());
        assert!(matches(&s, &e));
    }

    #[test]
    fn operational_events_need_their_names_and_skip_their_own_subscription() {
        let event = |about: &str| Event {
            id: "op_1".into(),
            tenant_id: "t".into(),
            name: crate::catalog::SUBSCRIPTION_FAILING.into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef {
                kind: "subscription".into(),
                id: about.into(),
            },
            attributes: Default::default(),
            callback_url: None,
            payload: Vec::new(),
        };
        let named = |id: &str, patterns: &[&str]| Subscription {
            id: id.into(),
            ..sub("t", patterns)
        };
        let all = named("sub_all", &["*"]);
        let ops = named("sub_ops", &["waybill.*"]);
        let exact = named("sub_exact", &["waybill.subscription.failing"]);
        assert!(!matches(&all, &event("sub_x")), "`*` does not select them");
        assert!(matches(&ops, &event("sub_x")));
        assert!(matches(&exact, &event("sub_x")));
        assert!(!matches(&ops, &event(&ops.id)), "never about itself");
        assert!(crate::catalog::is_operational("waybill.delivery.dead"));
        assert!(!crate::catalog::is_operational(crate::catalog::TEST_EVENT));
        assert!(!crate::catalog::is_operational("waybillish.x"));
        let mut index = crate::index::MatchIndex::new();
        for s in [&all, &ops, &exact] {
            index.upsert(s);
        }
        assert_eq!(index.matching(&event("sub_x")).len(), 2);
        assert_eq!(index.matching(&event(&ops.id)), vec![exact.id.as_str()]);
    }
}
