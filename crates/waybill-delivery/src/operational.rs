//! Operational events: what Waybill tells a tenant about its own
//! subscriptions and deliveries (`waybill.subscription.failing`,
//! `.recovered`, `.disabled`, `waybill.delivery.dead`), written to
//! `operational_events` as domain events when the transition happens, then
//! matched and delivered (signed, retried) like any event to the tenant's
//! subscriptions that name them, never to the one they are about. None is
//! written about the delivery of an operational event, so no loop forms.

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use waybill_core::catalog;
use waybill_core::subscription::{HealthChange, Subscription};
use waybill_kafka::headers;
use waybill_proto::Message as _;
use waybill_proto::convert::timestamp;
use waybill_proto::v1;

use crate::worker::{Finished, Worker};

/// What caused a health change: the attempt that failed or succeeded.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// The delivery attempted.
    pub delivery_id: String,
    /// Its event's name.
    pub event_name: String,
    /// HTTP status, 0 without a response.
    pub status_code: u16,
    /// `status`, `timeout`, ... (empty on success).
    pub error_class: String,
    /// What went wrong.
    pub error: String,
}

/// The operational event a health change announces (pure).
pub fn health_event(
    before: &Subscription,
    change: &HealthChange,
    cause: &Cause,
    now: OffsetDateTime,
) -> v1::DomainEvent {
    let (name, data) = match change {
        HealthChange::Failing { .. } => (
            catalog::SUBSCRIPTION_FAILING,
            json!({
                "subscription_id": before.id,
                "delivery_id": cause.delivery_id,
                "status_code": (cause.status_code != 0).then_some(cause.status_code),
                "error_class": cause.error_class,
                "error": cause.error,
            }),
        ),
        HealthChange::Recovered => (
            catalog::SUBSCRIPTION_RECOVERED,
            json!({
                "subscription_id": before.id,
                "failing_since": before.failing_since.map(waybill_core::event::format_rfc3339),
            }),
        ),
        HealthChange::Disabled { reason } => (
            catalog::SUBSCRIPTION_DISABLED,
            json!({"subscription_id": before.id, "reason": reason}),
        ),
    };
    event(&before.tenant_id, &before.id, name, &data, now)
}

/// `waybill.delivery.dead` (pure).
pub fn dead_event(
    tenant_id: &str,
    subscription_id: &str,
    cause: &Cause,
    event_id: &str,
    attempts: u32,
    now: OffsetDateTime,
) -> v1::DomainEvent {
    let data = json!({
        "subscription_id": subscription_id,
        "delivery_id": cause.delivery_id,
        "event_id": event_id,
        "event_name": cause.event_name,
        "attempts": attempts,
        "last_error": cause.error,
    });
    event(
        tenant_id,
        subscription_id,
        catalog::DELIVERY_DEAD,
        &data,
        now,
    )
}

fn event(
    tenant_id: &str,
    subscription_id: &str,
    name: &str,
    data: &Value,
    now: OffsetDateTime,
) -> v1::DomainEvent {
    v1::DomainEvent {
        id: waybill_core::ids::new_operational_event_id(),
        event_name: name.to_owned(),
        tenant_id: tenant_id.to_owned(),
        occurred_at: Some(timestamp(now)),
        entity: Some(v1::EntityRef {
            r#type: "subscription".to_owned(),
            id: subscription_id.to_owned(),
        }),
        attributes: [
            ("subscription_id".to_owned(), subscription_id.to_owned()),
            ("event_name".to_owned(), name.to_owned()),
        ]
        .into_iter()
        .collect(),
        callback_url: String::new(),
        payload: data.to_string().into_bytes(),
        payload_content_type: "application/json".to_owned(),
    }
}

impl Worker {
    /// Writes an operational event, unless its cause was the delivery of
    /// one; keyed by the subscription it is about.
    pub(crate) async fn announce(
        &self,
        event: v1::DomainEvent,
        cause: &Cause,
        stop: &CancellationToken,
    ) -> Finished {
        if catalog::is_operational(&cause.event_name) {
            return Finished::Done;
        }
        let topic = self.topics.operational_events();
        let key = event
            .entity
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_default();
        let value = event.encode_to_vec();
        tracing::info!(event_name = %event.event_name, subscription_id = %key, "operational event");
        self.until_acked(stop, "operational event", || {
            self.producer.send(
                &topic,
                key.as_bytes(),
                Some(&value),
                headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
        })
        .await
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waybill_core::subscription::Spec;

    fn subscription() -> Subscription {
        let mut s = Subscription::new(
            "sub_1".into(),
            "t".into(),
            Spec::new("https://a.example", Vec::new()),
            "key_1",
            OffsetDateTime::UNIX_EPOCH,
        );
        s.failing_since = Some(OffsetDateTime::UNIX_EPOCH);
        s
    }

    fn data(e: &v1::DomainEvent) -> Value {
        serde_json::from_slice(&e.payload).unwrap()
    }

    #[test]
    fn health_changes_become_events_about_their_subscription() {
        let s = subscription();
        let cause = Cause {
            delivery_id: "dlv_1".into(),
            event_name: "freights.freight.create".into(),
            status_code: 503,
            error_class: "status".into(),
            error: "HTTP 503".into(),
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        let failing = health_event(&s, &HealthChange::Failing { since: now }, &cause, now);
        assert_eq!(failing.event_name, "waybill.subscription.failing");
        assert_eq!(failing.entity.as_ref().unwrap().id, "sub_1");
        assert_eq!(failing.attributes["subscription_id"], "sub_1");
        assert_eq!(failing.attributes["event_name"], failing.event_name);
        assert_eq!(
            data(&failing),
            json!({"subscription_id": "sub_1", "delivery_id": "dlv_1", "status_code": 503,
                   "error_class": "status", "error": "HTTP 503"})
        );
        let recovered = health_event(&s, &HealthChange::Recovered, &cause, now);
        assert_eq!(
            data(&recovered),
            json!({"subscription_id": "sub_1", "failing_since": "1970-01-01T00:00:00Z"})
        );
        let gone = HealthChange::Disabled {
            reason: "the endpoint answered 410 Gone".into(),
        };
        let disabled = health_event(&s, &gone, &cause, now);
        assert_eq!(disabled.event_name, "waybill.subscription.disabled");
        assert_eq!(data(&disabled)["reason"], "the endpoint answered 410 Gone");
        let dead = dead_event("t", "sub_1", &cause, "evt_1", 3, now);
        assert_eq!(
            data(&dead),
            json!({"subscription_id": "sub_1", "delivery_id": "dlv_1", "event_id": "evt_1",
                   "event_name": "freights.freight.create", "attempts": 3, "last_error": "HTTP 503"})
        );
    }
}
