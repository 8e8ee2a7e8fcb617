//! Conversions between wire records and the domain model.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;
use waybill_core::auth::{CallbackAuth, OAuth2};
use waybill_core::catalog::Catalog;
use waybill_core::event::{EntityRef, Event};
use waybill_core::filter::{Comparator, Filter, Predicate, Scope};
use waybill_core::pattern::EventTypePattern;
use waybill_core::retry::RetryPolicy;
use waybill_core::sealing::{Keyring, SealError, Sealed};
use waybill_core::signing::SigningSecret;
use waybill_core::subscription::{
    DEFAULT_MAX_IN_FLIGHT, Health, MAX_IN_FLIGHT, Method, Ordering, PreviousSecret, Spec, Status,
    Subscription,
};

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
/// reach a subscriber. The reserved test event passes here (it travels in
/// delivery tasks); the matcher refuses it on domain topics.
pub fn event_from_proto(e: v1::DomainEvent, catalog: &Catalog) -> Result<Event, RecordError> {
    if e.id.is_empty() {
        return Err(RecordError::Missing("id"));
    }
    if e.tenant_id.is_empty() {
        return Err(RecordError::Missing("tenant_id"));
    }
    if catalog.get(&e.event_name).is_none() && e.event_name != waybill_core::catalog::TEST_EVENT {
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

/// The seal version this code writes: values bound to tenant, id and field.
pub const SEAL_VERSION: u32 = 2;

/// What a subscription's sealed values are bound to, by seal version: the
/// tenant and id (version 2) or the id alone (older records).
fn binding(tenant_id: &str, id: &str, version: u32) -> String {
    if version >= SEAL_VERSION {
        format!("{tenant_id}/{id}")
    } else {
        id.to_owned()
    }
}

/// How a subscription record is sealed: the ids of the keys of its sealed
/// values and its seal version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SealedWith {
    /// Every key id a value of the record is sealed with.
    pub key_ids: std::collections::BTreeSet<String>,
    /// `seal_version` of the record.
    pub version: u32,
}

impl SealedWith {
    /// How `p` is sealed.
    pub fn of(p: &v1::Subscription) -> Self {
        let mut key_ids = std::collections::BTreeSet::new();
        let mut add = |s: Option<&v1::SealedSecret>| {
            if let Some(s) = s {
                key_ids.insert(s.key_id.clone());
            }
        };
        add(p.signing_secret.as_ref());
        add(p.previous_signing_secret.as_ref());
        match p.auth.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(v1::callback_auth::Kind::Basic(b)) => add(b.password.as_ref()),
            Some(v1::callback_auth::Kind::ApiKey(k)) => add(k.header_value.as_ref()),
            Some(v1::callback_auth::Kind::Bearer(b)) => add(b.token.as_ref()),
            Some(v1::callback_auth::Kind::Oauth2(o)) => add(o.client_secret.as_ref()),
            None => {}
        }
        for sealed in p.sealed_headers.values() {
            add(Some(sealed));
        }
        Self {
            key_ids,
            version: p.seal_version,
        }
    }

    /// Whether the record is sealed the way this code seals with `keys`
    /// (only its current key, the current seal version): nothing to reseal.
    pub fn is_current(&self, keys: &Keyring) -> bool {
        self.version >= SEAL_VERSION && self.key_ids.iter().all(|k| k == keys.current_id())
    }
}

/// Seals one secret of a subscription, bound to `binding` (tenant and
/// subscription id) and to the field, so a sealed value cannot be moved to
/// another tenant, record or field.
fn seal(keys: &Keyring, binding: &str, field: &str, secret: &[u8]) -> v1::SealedSecret {
    let sealed = keys.seal(secret, format!("{binding}/{field}").as_bytes());
    v1::SealedSecret {
        key_id: sealed.key_id,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
    }
}

fn open(
    keys: &Keyring,
    id: &str,
    field: &'static str,
    sealed: Option<v1::SealedSecret>,
) -> Result<Vec<u8>, RecordError> {
    let sealed = sealed.ok_or(RecordError::Missing(field))?;
    Ok(keys.open(
        &Sealed {
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        },
        format!("{id}/{field}").as_bytes(),
    )?)
}

fn open_text(
    keys: &Keyring,
    id: &str,
    field: &'static str,
    sealed: Option<v1::SealedSecret>,
) -> Result<String, RecordError> {
    String::from_utf8(open(keys, id, field, sealed)?).map_err(|_| RecordError::Invalid {
        field,
        message: "not UTF-8".into(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wire form of a subscription, with every secret and credential sealed.
pub fn subscription_to_proto(s: &Subscription, keys: &Keyring) -> v1::Subscription {
    let bound = binding(&s.tenant_id, &s.id, SEAL_VERSION);
    let id = bound.as_str();
    let spec = &s.spec;
    let auth = match &spec.auth {
        CallbackAuth::None => None,
        CallbackAuth::Basic { username, password } => {
            Some(v1::callback_auth::Kind::Basic(v1::BasicAuth {
                username: username.clone(),
                password: Some(seal(keys, id, "auth.password", password.as_bytes())),
            }))
        }
        CallbackAuth::ApiKey {
            header_name,
            header_value,
        } => Some(v1::callback_auth::Kind::ApiKey(v1::ApiKeyAuth {
            header_name: header_name.clone(),
            header_value: Some(seal(keys, id, "auth.header_value", header_value.as_bytes())),
        })),
        CallbackAuth::Bearer { token } => Some(v1::callback_auth::Kind::Bearer(v1::BearerAuth {
            token: Some(seal(keys, id, "auth.token", token.as_bytes())),
        })),
        CallbackAuth::OAuth2(o) => Some(v1::callback_auth::Kind::Oauth2(v1::OAuth2Auth {
            token_url: o.token_url.clone(),
            client_id: o.client_id.clone(),
            client_secret: Some(seal(
                keys,
                id,
                "auth.client_secret",
                o.client_secret.as_bytes(),
            )),
            scope: o.scope.clone().unwrap_or_default(),
            extra_params: o.extra_params.clone().into_iter().collect(),
        })),
    };
    let filter = spec.filter.as_ref().map(|f| v1::Filter {
        scopes: f
            .scopes
            .iter()
            .map(|scope| v1::FilterScope {
                predicates: scope
                    .predicates
                    .iter()
                    .map(|p| v1::Predicate {
                        attribute: p.attribute.clone(),
                        comparator: match p.comparator {
                            Comparator::In => v1::Comparator::In,
                            Comparator::NotIn => v1::Comparator::NotIn,
                        } as i32,
                        values: p.values.clone(),
                    })
                    .collect(),
            })
            .collect(),
    });
    let retry_policy = spec.retry_policy.as_ref().map(|r| v1::RetryPolicy {
        kind: Some(match r {
            RetryPolicy::Delays(d) => v1::retry_policy::Kind::Delays(v1::ExplicitDelays {
                delays_ms: d.iter().map(|d| millis(*d)).collect(),
            }),
            RetryPolicy::Exponential {
                initial_delay,
                multiplier,
                max_delay,
                max_attempts,
            } => v1::retry_policy::Kind::Exponential(v1::ExponentialBackoff {
                initial_delay_ms: millis(*initial_delay),
                multiplier: *multiplier,
                max_delay_ms: millis(*max_delay),
                max_attempts: *max_attempts,
            }),
        }),
    });
    v1::Subscription {
        id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        name: spec.name.clone(),
        url: spec.url.clone(),
        method: match spec.method {
            Method::Post => v1::HttpMethod::Post,
            Method::Put => v1::HttpMethod::Put,
        } as i32,
        event_types: spec.event_types.iter().map(ToString::to_string).collect(),
        enabled: spec.enabled,
        // Health is not part of the user's state: it has its own record
        // (`health_to_proto`), written by the delivery service only.
        status: v1::SubscriptionStatus::Active as i32,
        disabled_reason: String::new(),
        headers: Default::default(),
        sealed_headers: spec
            .headers
            .iter()
            .map(|(name, value)| {
                let sealed = seal(keys, id, &format!("headers/{name}"), value.as_bytes());
                (name.clone(), sealed)
            })
            .collect(),
        secret_headers: spec.secret_headers.iter().cloned().collect(),
        seal_version: SEAL_VERSION,
        metadata: spec.metadata.clone().into_iter().collect(),
        signing_secret: Some(seal(
            keys,
            id,
            "signing_secret",
            s.signing_secret.as_bytes(),
        )),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        created_by: s.created_by.clone(),
        updated_by: s.updated_by.clone(),
        revision: s.revision,
        auth: auth.map(|kind| v1::CallbackAuth { kind: Some(kind) }),
        filter,
        retry_policy,
        rate_limit_per_second: spec.rate_limit_per_second,
        ordering: match spec.ordering {
            Ordering::Entity => v1::DeliveryOrdering::Entity,
            Ordering::Strict => v1::DeliveryOrdering::Strict,
            Ordering::None => v1::DeliveryOrdering::None,
        } as i32,
        max_in_flight: (spec.max_in_flight != DEFAULT_MAX_IN_FLIGHT).then_some(spec.max_in_flight),
        previous_signing_secret: s
            .previous_secret
            .as_ref()
            .map(|p| seal(keys, id, "previous_signing_secret", p.secret.as_bytes())),
        previous_secret_expires_at: s.previous_secret.as_ref().map(|p| timestamp(p.expires_at)),
        failing_since: None,
        write_id: s.write_id.clone(),
        health_reset_revision: s.health_reset_revision,
        paused: s.paused,
        kept: s.kept_from.is_some(),
        kept_partition: s.kept_from.map_or(0, |k| k.partition),
        kept_from: s.kept_from.map_or(0, |k| k.from),
        deleted: false,
    }
}

fn status_to_proto(status: Status) -> v1::SubscriptionStatus {
    match status {
        Status::Active => v1::SubscriptionStatus::Active,
        Status::Disabled => v1::SubscriptionStatus::Disabled,
        Status::Failing => v1::SubscriptionStatus::Failing,
    }
}

fn status_from_proto(status: i32) -> Result<Status, RecordError> {
    match v1::SubscriptionStatus::try_from(status) {
        Ok(v1::SubscriptionStatus::Disabled) => Ok(Status::Disabled),
        Ok(v1::SubscriptionStatus::Failing) => Ok(Status::Failing),
        Ok(v1::SubscriptionStatus::Active | v1::SubscriptionStatus::Unspecified) => {
            Ok(Status::Active)
        }
        Err(_) => Err(RecordError::Invalid {
            field: "status",
            message: format!("unknown value {status}"),
        }),
    }
}

/// The health record of subscription `id` of `tenant_id`.
pub fn health_to_proto(id: &str, tenant_id: &str, h: &Health) -> v1::SubscriptionHealth {
    v1::SubscriptionHealth {
        subscription_id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        status: status_to_proto(h.status) as i32,
        failing_since: h.failing_since.map(timestamp),
        disabled_reason: h.disabled_reason.clone().unwrap_or_default(),
        revision: h.revision,
        recorded_at: Some(timestamp(h.recorded_at)),
    }
}

/// The domain form of a health record.
pub fn health_from_proto(p: v1::SubscriptionHealth) -> Result<Health, RecordError> {
    if p.subscription_id.is_empty() {
        return Err(RecordError::Missing("subscription_id"));
    }
    Ok(Health {
        status: status_from_proto(p.status)?,
        failing_since: p
            .failing_since
            .as_ref()
            .map(|t| from_timestamp(Some(t), "failing_since"))
            .transpose()?,
        disabled_reason: (!p.disabled_reason.is_empty()).then_some(p.disabled_reason),
        revision: p.revision,
        recorded_at: from_timestamp(p.recorded_at.as_ref(), "recorded_at")?,
    })
}

/// The domain form of a subscription record, with its secrets opened.
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
    let bound = binding(&p.tenant_id, &p.id, p.seal_version);
    let id = bound.as_str();
    let signing_secret = secret_of(open(keys, id, "signing_secret", p.signing_secret)?)?;
    let mut headers: BTreeMap<String, String> = p.headers.into_iter().collect();
    for (name, sealed) in p.sealed_headers {
        let value = keys.open(
            &Sealed {
                key_id: sealed.key_id,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            },
            format!("{id}/headers/{name}").as_bytes(),
        )?;
        let value = String::from_utf8(value).map_err(|_| RecordError::Invalid {
            field: "sealed_headers",
            message: "not UTF-8".into(),
        })?;
        headers.insert(name, value);
    }
    let previous_secret = match p.previous_signing_secret {
        None => None,
        Some(sealed) => Some(PreviousSecret {
            secret: secret_of(open(keys, id, "previous_signing_secret", Some(sealed))?)?,
            expires_at: from_timestamp(
                p.previous_secret_expires_at.as_ref(),
                "previous_secret_expires_at",
            )?,
        }),
    };
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
    // Records written before health had its own key carry it here.
    let status = status_from_proto(p.status)?;
    let event_types = p
        .event_types
        .iter()
        .map(|s| EventTypePattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RecordError::Invalid {
            field: "event_types",
            message: e.to_string(),
        })?;
    let auth = match p.auth.and_then(|a| a.kind) {
        None => CallbackAuth::None,
        Some(v1::callback_auth::Kind::Basic(b)) => CallbackAuth::Basic {
            username: b.username,
            password: open_text(keys, id, "auth.password", b.password)?,
        },
        Some(v1::callback_auth::Kind::ApiKey(k)) => CallbackAuth::ApiKey {
            header_name: k.header_name,
            header_value: open_text(keys, id, "auth.header_value", k.header_value)?,
        },
        Some(v1::callback_auth::Kind::Bearer(b)) => CallbackAuth::Bearer {
            token: open_text(keys, id, "auth.token", b.token)?,
        },
        Some(v1::callback_auth::Kind::Oauth2(o)) => CallbackAuth::OAuth2(OAuth2 {
            token_url: o.token_url,
            client_id: o.client_id,
            client_secret: open_text(keys, id, "auth.client_secret", o.client_secret)?,
            scope: (!o.scope.is_empty()).then_some(o.scope),
            extra_params: o.extra_params.into_iter().collect(),
        }),
    };
    let filter = match p.filter {
        None => None,
        Some(f) => Some(Filter {
            scopes: f
                .scopes
                .into_iter()
                .map(|scope| {
                    let predicates = scope
                        .predicates
                        .into_iter()
                        .map(|p| {
                            let comparator = match v1::Comparator::try_from(p.comparator) {
                                Ok(v1::Comparator::In) => Comparator::In,
                                Ok(v1::Comparator::NotIn) => Comparator::NotIn,
                                _ => {
                                    return Err(RecordError::Invalid {
                                        field: "filter",
                                        message: format!("unknown comparator {}", p.comparator),
                                    });
                                }
                            };
                            let mut values = p.values;
                            values.sort();
                            values.dedup();
                            Ok(Predicate {
                                attribute: p.attribute,
                                comparator,
                                values,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Scope { predicates })
                })
                .collect::<Result<Vec<_>, RecordError>>()?,
        }),
    };
    let retry_policy = match p.retry_policy.and_then(|r| r.kind) {
        None => None,
        Some(v1::retry_policy::Kind::Delays(d)) => Some(RetryPolicy::Delays(
            d.delays_ms.into_iter().map(Duration::from_millis).collect(),
        )),
        Some(v1::retry_policy::Kind::Exponential(e)) => {
            if e.max_attempts == 0 || !(1.0..=10.0).contains(&e.multiplier) {
                return Err(RecordError::Invalid {
                    field: "retry_policy",
                    message: "max_attempts must be positive and multiplier within 1..=10".into(),
                });
            }
            Some(RetryPolicy::Exponential {
                initial_delay: Duration::from_millis(e.initial_delay_ms),
                multiplier: e.multiplier,
                max_delay: Duration::from_millis(e.max_delay_ms),
                max_attempts: e.max_attempts,
            })
        }
    };
    Ok(Subscription {
        created_at: from_timestamp(p.created_at.as_ref(), "created_at")?,
        updated_at: from_timestamp(p.updated_at.as_ref(), "updated_at")?,
        spec: Spec {
            name: p.name,
            url: p.url,
            method,
            event_types,
            filter,
            auth,
            headers,
            secret_headers: p.secret_headers.into_iter().collect(),
            enabled: p.enabled,
            rate_limit_per_second: p.rate_limit_per_second,
            retry_policy,
            // A value this build does not know keeps the default order.
            ordering: match v1::DeliveryOrdering::try_from(p.ordering) {
                Ok(v1::DeliveryOrdering::Strict) => Ordering::Strict,
                Ok(v1::DeliveryOrdering::None) => Ordering::None,
                _ => Ordering::Entity,
            },
            max_in_flight: p
                .max_in_flight
                .map_or(DEFAULT_MAX_IN_FLIGHT, |n| n.clamp(1, MAX_IN_FLIGHT)),
            metadata: p.metadata.into_iter().collect(),
        },
        id: p.id,
        tenant_id: p.tenant_id,
        status,
        disabled_reason: (!p.disabled_reason.is_empty()).then_some(p.disabled_reason),
        failing_since: p
            .failing_since
            .as_ref()
            .map(|t| from_timestamp(Some(t), "failing_since"))
            .transpose()?,
        signing_secret,
        previous_secret,
        created_by: p.created_by,
        updated_by: p.updated_by,
        revision: p.revision,
        write_id: p.write_id,
        health_reset_revision: p.health_reset_revision,
        paused: p.paused,
        kept_from: p.kept.then_some(waybill_core::hold::Parked {
            partition: p.kept_partition,
            from: p.kept_from,
        }),
    })
}

fn secret_of(bytes: Vec<u8>) -> Result<SigningSecret, RecordError> {
    SigningSecret::from_bytes(bytes).map_err(|e| RecordError::Invalid {
        field: "signing_secret",
        message: e.to_string(),
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
        let mut spec = Spec::new(
            "https://example.com/h",
            vec![EventTypePattern::parse("freights.*").unwrap()],
        );
        spec.name = "n".into();
        spec.method = Method::Put;
        spec.headers = [
            ("X-A".to_owned(), "b".to_owned()),
            ("X-Sig".to_owned(), "header-secret-value".to_owned()),
        ]
        .into_iter()
        .collect();
        spec.secret_headers = ["x-sig".to_owned()].into_iter().collect();
        spec.auth = CallbackAuth::OAuth2(OAuth2 {
            token_url: "https://idp.example.com/token".into(),
            client_id: "client".into(),
            client_secret: "oauth-client-secret-value".into(),
            scope: Some("webhooks".into()),
            extra_params: [("audience".to_owned(), "x".to_owned())]
                .into_iter()
                .collect(),
        });
        spec.filter = Some(Filter {
            scopes: vec![Scope {
                predicates: vec![Predicate {
                    attribute: "dc_id".into(),
                    comparator: Comparator::NotIn,
                    values: vec!["1".into(), "2".into()],
                }],
            }],
        });
        spec.retry_policy = Some(RetryPolicy::Exponential {
            initial_delay: Duration::from_millis(1500),
            multiplier: 2.5,
            max_delay: Duration::from_secs(60),
            max_attempts: 4,
        });
        spec.rate_limit_per_second = Some(50);
        spec.ordering = waybill_core::subscription::Ordering::Strict;
        spec.max_in_flight = 3;
        let mut s = Subscription::new(
            "sub_1".into(),
            "t1".into(),
            spec,
            "key_1",
            datetime!(2026-11-23 10:00:00.123456789 UTC),
        );
        s.rotate_secret(datetime!(2026-11-23 10:00 UTC), Duration::from_secs(3600));
        s.revision = 3;
        s
    }

    #[test]
    fn health_round_trips_and_is_not_part_of_the_state_record() {
        let mut s = subscription();
        let health = Health {
            status: Status::Disabled,
            failing_since: Some(datetime!(2026-11-23 10:00:00.5 UTC)),
            disabled_reason: Some("gone".into()),
            revision: 3,
            recorded_at: datetime!(2026-11-23 10:01 UTC),
        };
        let wire = health_to_proto(&s.id, &s.tenant_id, &health).encode_to_vec();
        let back = health_from_proto(v1::SubscriptionHealth::decode(&wire[..]).unwrap());
        assert_eq!(back.unwrap(), health);
        s.set_health(Some(&health));
        let state = subscription_to_proto(&s, &keyring());
        assert_eq!(state.status, v1::SubscriptionStatus::Active as i32);
        assert!(state.disabled_reason.is_empty() && state.failing_since.is_none());
    }

    #[test]
    fn every_auth_type_round_trips_sealed() {
        let keys = keyring();
        for auth in [
            CallbackAuth::None,
            CallbackAuth::Basic {
                username: "u".into(),
                password: "basic-password-value".into(),
            },
            CallbackAuth::ApiKey {
                header_name: "X-Key".into(),
                header_value: "api-key-header-value".into(),
            },
            CallbackAuth::Bearer {
                token: "bearer-token-value".into(),
            },
        ] {
            let mut s = subscription();
            s.spec.auth = auth.clone();
            let wire = subscription_to_proto(&s, &keys).encode_to_vec();
            for secret in auth.secrets() {
                assert!(!String::from_utf8_lossy(&wire).contains(secret));
            }
            let back = subscription_from_proto(v1::Subscription::decode(&wire[..]).unwrap(), &keys);
            assert_eq!(back.unwrap(), s);
        }
    }

    #[test]
    fn subscription_round_trip_seals_the_secret() {
        let keys = keyring();
        let s = subscription();
        let wire = subscription_to_proto(&s, &keys).encode_to_vec();
        let secret = s.signing_secret.expose();
        let text = String::from_utf8_lossy(&wire);
        assert!(!text.contains(&secret[6..]));
        assert!(!text.contains("oauth-client-secret-value"));
        assert!(
            !text.contains("header-secret-value"),
            "header values are sealed"
        );
        let back = subscription_from_proto(v1::Subscription::decode(&wire[..]).unwrap(), &keys);
        assert_eq!(back.unwrap(), s);
        // The sealed values are bound to the tenant: the same record under
        // another tenant does not open.
        let mut moved = v1::Subscription::decode(&wire[..]).unwrap();
        moved.tenant_id = "other_tenant".into();
        assert!(matches!(
            subscription_from_proto(moved, &keys),
            Err(RecordError::Seal(_))
        ));
        // A record of the older version (bound to the id alone, headers in
        // clear) still opens.
        let mut old = subscription_to_proto(&s, &keys);
        old.seal_version = 0;
        old.headers = s.spec.headers.clone().into_iter().collect();
        old.sealed_headers.clear();
        old.signing_secret = Some(seal(
            &keys,
            &s.id,
            "signing_secret",
            s.signing_secret.as_bytes(),
        ));
        if let Some(v1::callback_auth::Kind::Oauth2(o)) =
            old.auth.as_mut().and_then(|a| a.kind.as_mut())
        {
            o.client_secret = Some(seal(
                &keys,
                &s.id,
                "auth.client_secret",
                b"oauth-client-secret-value",
            ));
        }
        if let Some(previous) = &s.previous_secret {
            old.previous_signing_secret = Some(seal(
                &keys,
                &s.id,
                "previous_signing_secret",
                previous.secret.as_bytes(),
            ));
        }
        assert_eq!(subscription_from_proto(old, &keys).unwrap(), s);
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
