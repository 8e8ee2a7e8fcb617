//! Conversions between wire records and the domain model.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use waybill_core::catalog::Catalog;
use waybill_core::event::{EntityRef, Event};
use waybill_core::pattern::EventTypePattern;
use waybill_core::sealing::{Keyring, SealError, Sealed};
use waybill_core::signing::SigningSecret;
use waybill_core::subscription::{Method, Status, Subscription};

use crate::v1;

pub use prost_types::Timestamp;

/// Why a record is not usable. Records that fail here are poison: they are
/// sent to the dead-letter topic with this message.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a protobuf message of the expected type.
    #[error("undecodable protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A required field is missing or empty.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has a value outside its domain.
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A sealed secret cannot be opened.
    #[error("sealed secret: {0}")]
    Seal(#[from] SealError),
}

/// Protobuf timestamp of a time.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    let nanos = t.unix_timestamp_nanos();
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Time of a protobuf timestamp.
pub fn from_timestamp(
    ts: Option<&prost_types::Timestamp>,
    field: &'static str,
) -> Result<OffsetDateTime, RecordError> {
    let ts = ts.ok_or(RecordError::Missing(field))?;
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| RecordError::Invalid {
        field,
        message: e.to_string(),
    })
}

/// The wire form of an event.
pub fn event_to_proto(event: &Event) -> v1::DomainEvent {
    v1::DomainEvent {
        id: event.id.clone(),
        event_name: event.name.clone(),
        tenant_id: event.tenant_id.clone(),
        occurred_at: Some(timestamp(event.occurred_at)),
        entity: Some(v1::EntityRef {
            r#type: event.entity.kind.clone(),
            id: event.entity.id.clone(),
        }),
        attributes: event
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        callback_url: event.callback_url.clone().unwrap_or_default(),
        payload: event.payload.clone(),
        payload_content_type: String::new(),
    }
}

/// The domain form of an event record, checked against the catalog.
///
/// Upstream producers write these records directly, so every field is
/// checked here: an invalid record must go to the dead-letter topic, not
/// reach a subscriber.
pub fn event_from_proto(e: v1::DomainEvent, catalog: &Catalog) -> Result<Event, RecordError> {
    if e.id.is_empty() {
        return Err(RecordError::Missing("id"));
    }
    if e.tenant_id.is_empty() {
        return Err(RecordError::Missing("tenant_id"));
    }
    if catalog.get(&e.event_name).is_none() {
        return Err(RecordError::Invalid {
            field: "event_name",
            message: format!("`{}` is not in the event catalog", e.event_name),
        });
    }
    let occurred_at = from_timestamp(e.occurred_at.as_ref(), "occurred_at")?;
    let entity = e.entity.unwrap_or_default();
    let entity = EntityRef {
        kind: entity.r#type,
        id: if entity.id.is_empty() {
            e.id.clone()
        } else {
            entity.id
        },
    };
    Ok(Event {
        id: e.id,
        tenant_id: e.tenant_id,
        name: e.event_name,
        occurred_at,
        entity,
        attributes: e.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        callback_url: (!e.callback_url.is_empty()).then_some(e.callback_url),
        payload: e.payload,
    })
}

/// The wire form of a subscription, with its signing secret sealed and
/// bound to the subscription id.
pub fn subscription_to_proto(s: &Subscription, keys: &Keyring) -> v1::Subscription {
    let sealed = keys.seal(s.signing_secret.as_bytes(), s.id.as_bytes());
    v1::Subscription {
        id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        name: s.name.clone(),
        url: s.url.clone(),
        method: match s.method {
            Method::Post => v1::HttpMethod::Post,
            Method::Put => v1::HttpMethod::Put,
        } as i32,
        event_types: s.event_types.iter().map(ToString::to_string).collect(),
        enabled: s.enabled,
        status: match s.status {
            Status::Active => v1::SubscriptionStatus::Active,
            Status::Disabled => v1::SubscriptionStatus::Disabled,
            Status::Failing => v1::SubscriptionStatus::Failing,
        } as i32,
        disabled_reason: s.disabled_reason.clone().unwrap_or_default(),
        headers: s
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metadata: s
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signing_secret: Some(v1::SealedSecret {
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        }),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        created_by: s.created_by.clone(),
        updated_by: s.updated_by.clone(),
        revision: s.revision,
    }
}

/// The domain form of a subscription record, with its secret opened.
pub fn subscription_from_proto(
    p: v1::Subscription,
    keys: &Keyring,
) -> Result<Subscription, RecordError> {
    if p.id.is_empty() {
        return Err(RecordError::Missing("id"));
    }
    if p.tenant_id.is_empty() {
        return Err(RecordError::Missing("tenant_id"));
    }
    let sealed = p
        .signing_secret
        .ok_or(RecordError::Missing("signing_secret"))?;
    let secret = keys.open(
        &Sealed {
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        },
        p.id.as_bytes(),
    )?;
    let signing_secret = SigningSecret::from_bytes(secret).map_err(|e| RecordError::Invalid {
        field: "signing_secret",
        message: e.to_string(),
    })?;
    let method = match v1::HttpMethod::try_from(p.method) {
        Ok(v1::HttpMethod::Put) => Method::Put,
        Ok(v1::HttpMethod::Post | v1::HttpMethod::Unspecified) => Method::Post,
        Err(_) => {
            return Err(RecordError::Invalid {
                field: "method",
                message: format!("unknown value {}", p.method),
            });
        }
    };
    let status = match v1::SubscriptionStatus::try_from(p.status) {
        Ok(v1::SubscriptionStatus::Disabled) => Status::Disabled,
        Ok(v1::SubscriptionStatus::Failing) => Status::Failing,
        Ok(v1::SubscriptionStatus::Active | v1::SubscriptionStatus::Unspecified) => Status::Active,
        Err(_) => {
            return Err(RecordError::Invalid {
                field: "status",
                message: format!("unknown value {}", p.status),
            });
        }
    };
    let event_types = p
        .event_types
        .iter()
        .map(|s| EventTypePattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RecordError::Invalid {
            field: "event_types",
            message: e.to_string(),
        })?;
    Ok(Subscription {
        created_at: from_timestamp(p.created_at.as_ref(), "created_at")?,
        updated_at: from_timestamp(p.updated_at.as_ref(), "updated_at")?,
        id: p.id,
        tenant_id: p.tenant_id,
        name: p.name,
        url: p.url,
        method,
        event_types,
        enabled: p.enabled,
        status,
        disabled_reason: (!p.disabled_reason.is_empty()).then_some(p.disabled_reason),
        headers: p.headers.into_iter().collect(),
        metadata: p.metadata.into_iter().collect(),
        signing_secret,
        created_by: p.created_by,
        updated_by: p.updated_by,
        revision: p.revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use time::macros::datetime;

    fn keyring() -> Keyring {
        let keys = [("k1".to_owned(), Keyring::generate_key())]
            .into_iter()
            .collect();
        Keyring::new("k1", &keys).unwrap()
    }

    fn subscription() -> Subscription {
        Subscription {
            id: "sub_1".into(),
            tenant_id: "t1".into(),
            name: "n".into(),
            url: "https://example.com/h".into(),
            method: Method::Put,
            event_types: vec![EventTypePattern::parse("freights.*").unwrap()],
            enabled: true,
            status: Status::Failing,
            disabled_reason: None,
            headers: [("X-A".to_owned(), "b".to_owned())].into_iter().collect(),
            metadata: Default::default(),
            signing_secret: SigningSecret::generate(),
            created_at: datetime!(2026-11-23 10:00:00.123456789 UTC),
            updated_at: datetime!(2026-11-23 10:00 UTC),
            created_by: "key_1".into(),
            updated_by: "key_1".into(),
            revision: 3,
        }
    }

    #[test]
    fn subscription_round_trip_seals_the_secret() {
        let keys = keyring();
        let s = subscription();
        let wire = subscription_to_proto(&s, &keys).encode_to_vec();
        let secret = s.signing_secret.expose();
        assert!(!String::from_utf8_lossy(&wire).contains(&secret[6..]));
        let back = subscription_from_proto(v1::Subscription::decode(&wire[..]).unwrap(), &keys);
        assert_eq!(back.unwrap(), s);
        // Another deployment's key cannot open it.
        let other =
            subscription_from_proto(v1::Subscription::decode(&wire[..]).unwrap(), &keyring());
        assert!(matches!(other, Err(RecordError::Seal(_))));
    }

    #[test]
    fn event_round_trip_and_validation() {
        let catalog = Catalog::builtin();
        let e = Event {
            id: "e1".into(),
            tenant_id: "t1".into(),
            name: "freights.freight.create".into(),
            occurred_at: datetime!(1969-12-31 23:59:59.5 UTC),
            entity: EntityRef {
                kind: "freight".into(),
                id: "f1".into(),
            },
            attributes: [("dc_id".to_owned(), "7".to_owned())].into_iter().collect(),
            callback_url: None,
            payload: b"{}".to_vec(),
        };
        let wire = event_to_proto(&e).encode_to_vec();
        let back = event_from_proto(v1::DomainEvent::decode(&wire[..]).unwrap(), &catalog).unwrap();
        assert_eq!(back, e);

        let mut bad = event_to_proto(&e);
        bad.event_name = "nope".into();
        assert!(
            event_from_proto(bad, &catalog)
                .unwrap_err()
                .to_string()
                .contains("catalog")
        );
        let mut bad = event_to_proto(&e);
        bad.tenant_id.clear();
        assert!(matches!(
            event_from_proto(bad, &catalog),
            Err(RecordError::Missing("tenant_id"))
        ));
        assert!(v1::DomainEvent::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
