//! Does an event go to a subscription?
//!
//! The one rule every matcher implementation (the index included) must agree
//! with: same tenant, subscription deliverable, and one of its event-type
//! patterns selects the event's name.

use crate::event::Event;
use crate::subscription::Subscription;

/// Whether `event` is delivered to `subscription`.
pub fn matches(subscription: &Subscription, event: &Event) -> bool {
    subscription.tenant_id == event.tenant_id
        && subscription.is_deliverable()
        && subscription
            .event_types
            .iter()
            .any(|pattern| pattern.matches(&event.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EntityRef;
    use crate::pattern::EventTypePattern;
    use crate::signing::SigningSecret;
    use crate::subscription::{Method, Status};
    use time::OffsetDateTime;

    fn sub(tenant: &str, patterns: &[&str]) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            tenant_id: tenant.into(),
            name: String::new(),
            url: "https://example.com".into(),
            method: Method::Post,
            event_types: patterns
                .iter()
                .map(|p| EventTypePattern::parse(p).unwrap())
                .collect(),
            enabled: true,
            status: Status::Active,
            disabled_reason: None,
            headers: Default::default(),
            metadata: Default::default(),
            signing_secret: SigningSecret::generate(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            created_by: String::new(),
            updated_by: String::new(),
            revision: 1,
        }
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
        disabled.enabled = false;
        assert!(!matches(&disabled, &e));
        let mut gone = sub("t1", &["*"]);
        gone.status = Status::Disabled;
        assert!(!matches(&gone, &e));
        let mut failing = sub("t1", &["*"]);
        failing.status = Status::Failing;
        assert!(matches(&failing, &e), "failing subscriptions still receive");
    }
}
