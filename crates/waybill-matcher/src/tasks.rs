//! From one event to its delivery tasks (pure).

use time::OffsetDateTime;
use waybill_core::event::Event;
use waybill_core::ids;
use waybill_core::index::MatchIndex;
use waybill_proto::convert::timestamp;
use waybill_proto::v1;

/// One task per subscription the index finds for the event, and one for
/// the tenant's callbacks subscription when the event has a `callback_url`
/// (and the tenant has that subscription).
///
/// `record` is the event as it arrived (re-used as is, so the task carries
/// exactly what the producer wrote).
pub fn tasks_for(
    event: &Event,
    record: &v1::DomainEvent,
    index: &MatchIndex,
    now: OffsetDateTime,
) -> Vec<v1::DeliveryTask> {
    let callbacks = event
        .callback_url
        .as_ref()
        .map(|_| ids::callbacks_subscription_id(&event.tenant_id))
        .filter(|id| index.contains(id));
    index
        .matching(event)
        .into_iter()
        .chain(callbacks.as_deref())
        .map(|id| v1::DeliveryTask {
            delivery_id: ids::delivery_id(&event.tenant_id, &event.id, id),
            subscription_id: id.to_owned(),
            tenant_id: event.tenant_id.clone(),
            event: Some(record.clone()),
            attempt: 1,
            not_before: Some(timestamp(now)),
            created_at: Some(timestamp(now)),
            redeliver: false,
            replay_id: String::new(),
            strict_retry: false,
            resume: false,
            // The worker sets it from the record.
            produced_at: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use waybill_core::catalog::Catalog;
    use waybill_core::event::EntityRef;
    use waybill_core::pattern::EventTypePattern;
    use waybill_core::sealing::Keyring;
    use waybill_core::subscription::{Spec, Subscription};
    use waybill_kafka::table::Fold;
    use waybill_proto::Message;
    use waybill_proto::convert::{event_to_proto, subscription_to_proto};

    fn keyring() -> Keyring {
        let keys: BTreeMap<String, String> = [("k".to_owned(), Keyring::generate_key())]
            .into_iter()
            .collect();
        Keyring::new("k", &keys).unwrap()
    }

    fn subscription(id: &str, tenant: &str, patterns: &[&str], enabled: bool) -> Subscription {
        let patterns = patterns
            .iter()
            .map(|p| EventTypePattern::parse(p).unwrap())
            .collect();
        let mut spec = Spec::new("https://example.com", patterns);
        spec.enabled = enabled;
        Subscription::new(
            id.into(),
            tenant.into(),
            spec,
            "key_1",
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn one_task_per_matching_subscription_with_stable_ids() {
        let keys = keyring();
        let mut subs = crate::projection::new(keys.clone());
        for s in [
            subscription("sub_a", "t1", &["*"], true),
            subscription("sub_b", "t1", &["freights.publication.*"], true),
            subscription("sub_c", "t1", &["freight_orders.*"], true),
            subscription("sub_d", "t1", &["*"], false),
            subscription("sub_e", "t2", &["*"], true),
        ] {
            let record = subscription_to_proto(&s, &keys).encode_to_vec();
            subs.apply(s.id.as_bytes(), Some(&record)).unwrap();
        }
        subs.apply(b"sub_a", None).unwrap();
        subs.apply(b"sub_f", None).unwrap();
        let event = Event {
            id: "e1".into(),
            tenant_id: "t1".into(),
            name: "freights.publication.accepted".into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef {
                kind: "freight".into(),
                id: "f".into(),
            },
            attributes: BTreeMap::new(),
            callback_url: None,
            payload: b"{}".to_vec(),
        };
        let record = event_to_proto(&event);
        assert!(Catalog::builtin().get(&event.name).is_some());
        let tasks = tasks_for(&event, &record, subs.index(), OffsetDateTime::UNIX_EPOCH);
        let ids: Vec<&str> = tasks.iter().map(|t| t.subscription_id.as_str()).collect();
        assert_eq!(
            ids,
            ["sub_b"],
            "deleted, disabled, other-tenant and non-matching are skipped"
        );
        assert_eq!(tasks[0].delivery_id, ids::delivery_id("t1", "e1", "sub_b"));
        assert_eq!(tasks[0].attempt, 1);
        assert_eq!(tasks[0].event.as_ref(), Some(&record));
    }
}
