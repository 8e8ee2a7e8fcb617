//! Domain events: the model, the HTTP request that creates one, and the
//! webhook body rendered from one.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::FieldError;
use crate::catalog::{Catalog, DomainTopic};
use crate::fields::{Fields, scalar_to_string};
use crate::ids;

/// Longest client-supplied id (event id, entity id).
pub const MAX_ID_LEN: usize = 256;
/// Most attributes per event.
pub const MAX_ATTRIBUTES: usize = 64;

/// The business object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityRef {
    /// Object kind, e.g. `freight`.
    pub kind: String,
    /// Object id; the Kafka partition key.
    pub id: String,
}

/// A domain event, as carried on the domain topics.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event id (client id or generated).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Catalog name.
    pub name: String,
    /// When it happened upstream.
    pub occurred_at: OffsetDateTime,
    /// The object it is about.
    pub entity: EntityRef,
    /// Filterable attributes.
    pub attributes: BTreeMap<String, String>,
    /// Optional per-object callback URL.
    pub callback_url: Option<String>,
    /// The `data` JSON, byte for byte as received.
    pub payload: Vec<u8>,
}

impl Event {
    /// The Kafka key: the entity id, so one entity's events stay in order.
    pub fn partition_key(&self) -> &str {
        &self.entity.id
    }

    /// The webhook body:
    /// `{"id","event_name","occurred_at","entity":{"type","id"},"data"}`.
    ///
    /// `data` is embedded byte for byte when it is valid JSON; an empty
    /// payload becomes `null`, and anything else (possible only from an
    /// upstream producer writing to Kafka directly) a JSON string.
    pub fn webhook_body(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Entity<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            id: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            id: &'a str,
            event_name: &'a str,
            occurred_at: String,
            entity: Entity<'a>,
            data: &'a RawValue,
        }
        let fallback;
        let data: &RawValue = if self.payload.is_empty() {
            fallback = RawValue::from_string("null".into()).expect("null is JSON");
            &fallback
        } else {
            match serde_json::from_slice::<&RawValue>(&self.payload) {
                Ok(raw) => raw,
                Err(_) => {
                    let text = String::from_utf8_lossy(&self.payload);
                    fallback = serde_json::value::to_raw_value(&text).expect("a string is JSON");
                    &fallback
                }
            }
        };
        let body = Body {
            id: &self.id,
            event_name: &self.name,
            occurred_at: format_rfc3339(self.occurred_at),
            entity: Entity {
                kind: &self.entity.kind,
                id: &self.entity.id,
            },
            data,
        };
        serde_json::to_vec(&body).expect("the webhook body serialises")
    }
}

/// RFC 3339 in UTC, e.g. `2026-11-22T10:00:00Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("every UTC time formats as RFC 3339")
}

/// An event accepted from the HTTP API, with the topic it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedEvent {
    /// The event.
    pub event: Event,
    /// Its domain topic.
    pub topic: DomainTopic,
    /// Whether the client chose the id (then a repeat is accepted once).
    pub client_id: bool,
}

/// Fields of `POST /v1/events`.
pub const EVENT_FIELDS: &[&str] = &[
    "event_name",
    "id",
    "occurred_at",
    "entity",
    "attributes",
    "data",
    "callback_url",
];

/// Validates one `POST /v1/events` body for `tenant_id`, reporting every
/// invalid field at once.
pub fn parse_event_request(
    body: &[u8],
    tenant_id: &str,
    catalog: &Catalog,
    now: OffsetDateTime,
) -> Result<AcceptedEvent, Vec<FieldError>> {
    let mut f = Fields::parse(body).map_err(|e| vec![e])?;

    let name: Option<String> = f.required("event_name", "a string, an event name of the catalog");
    let topic = name.as_deref().and_then(|name| match catalog.get(name) {
        Some(_) if crate::catalog::is_operational(name) => {
            f.error(
                "event_name",
                format!("`{name}` is one of Waybill's own operational events; only Waybill produces them"),
            );
            None
        }
        Some(event_type) => Some(event_type.topic),
        None => {
            f.error(
                "event_name",
                format!("unknown event `{name}`; GET /v1/event_types lists the catalog"),
            );
            None
        }
    });

    let id: Option<String> = f.optional("id", "a string");
    if let Some(id) = &id {
        check_id(&mut f, "id", id);
    }

    let occurred_at = match f.optional::<String>("occurred_at", "an RFC 3339 timestamp string") {
        None => now,
        Some(s) => OffsetDateTime::parse(&s, &Rfc3339).unwrap_or_else(|e| {
            f.error(
                "occurred_at",
                format!("must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z ({e})"),
            );
            now
        }),
    };

    let mut entity = EntityRef::default();
    if let Some(mut e) = f.object("entity") {
        entity.kind = e.optional("type", "a string").unwrap_or_default();
        entity.id = e.optional("id", "a string").unwrap_or_default();
        if entity.id.is_empty() && e.errors.is_empty() && e.has("id") {
            e.error("id", "must not be empty");
        }
        if entity.id.len() > MAX_ID_LEN || entity.kind.len() > MAX_ID_LEN {
            e.error("id", format!("must be at most {MAX_ID_LEN} bytes"));
        }
        e.reject_unknown(&["type", "id"]);
        f.absorb(e);
    }

    let mut attributes = BTreeMap::new();
    if let Some(raw) =
        f.optional::<BTreeMap<String, serde_json::Value>>("attributes", "an object of strings")
    {
        if raw.len() > MAX_ATTRIBUTES {
            f.error("attributes", format!("at most {MAX_ATTRIBUTES} attributes"));
        }
        for (key, value) in raw {
            let path = format!("attributes.{key}");
            if key.is_empty() || key.len() > 128 {
                f.errors
                    .push(FieldError::new(path, "names must be 1 to 128 characters"));
                continue;
            }
            match scalar_to_string(&value) {
                Some(v) => {
                    attributes.insert(key, v);
                }
                None => f
                    .errors
                    .push(FieldError::new(path, "must be a string, number or boolean")),
            }
        }
    }

    let payload = f
        .raw("data")
        .map(|raw| raw.get().as_bytes().to_vec())
        .unwrap_or_else(|| b"null".to_vec());

    // Checked against the deployment's URL policy by the service.
    let callback_url: Option<String> = f.optional("callback_url", "a string, an http(s) URL");
    if let Some(url) = &callback_url
        && (url.is_empty() || url.len() > crate::url_policy::MAX_URL_LEN)
    {
        f.error(
            "callback_url",
            format!("must be 1 to {} characters", crate::url_policy::MAX_URL_LEN),
        );
    }

    let errors = f.finish(EVENT_FIELDS);
    let (Some(name), Some(topic), true) = (name, topic, errors.is_empty()) else {
        return Err(errors);
    };
    let client_id = id.is_some();
    let id = id.unwrap_or_else(ids::new_event_id);
    if entity.id.is_empty() {
        entity.id = id.clone();
    }
    if entity.kind.is_empty() {
        // `freights.publication.accepted` is about a `publication`.
        entity.kind = name.split('.').nth(1).unwrap_or_default().to_owned();
    }
    Ok(AcceptedEvent {
        event: Event {
            id,
            tenant_id: tenant_id.to_owned(),
            name,
            occurred_at,
            entity,
            attributes,
            callback_url,
            payload,
        },
        topic,
        client_id,
    })
}

fn check_id(f: &mut Fields, key: &str, id: &str) {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        f.error(key, format!("must be 1 to {MAX_ID_LEN} bytes"));
    } else if id.chars().any(char::is_control) {
        f.error(key, "must not contain control characters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn parse(body: &str) -> Result<AcceptedEvent, Vec<FieldError>> {
        parse_event_request(
            body.as_bytes(),
            "t1",
            &Catalog::builtin(),
            datetime!(2026-11-23 10:00 UTC),
        )
    }

    #[test]
    fn full_event() {
        let a = parse(
            r#"{"event_name": "freights.publication.accepted", "id": "e1",
                "occurred_at": "2026-11-22T10:00:00+01:00",
                "entity": {"type": "freight", "id": "12345"},
                "attributes": {"company_id": "c-1", "dc_id": 7},
                "data": {"price": 1000.50, "big": 12345678901234567890}}"#,
        )
        .unwrap();
        assert_eq!(a.topic, DomainTopic::Freights);
        let e = a.event;
        assert_eq!(e.id, "e1");
        assert_eq!(e.partition_key(), "12345");
        assert_eq!(e.attributes["dc_id"], "7");
        assert_eq!(e.occurred_at, datetime!(2026-11-22 9:00 UTC));
        // data is kept byte for byte (no float or big-integer rewriting).
        assert_eq!(
            e.payload,
            br#"{"price": 1000.50, "big": 12345678901234567890}"#
        );
        let body: serde_json::Value = serde_json::from_slice(&e.webhook_body()).unwrap();
        assert_eq!(body["id"], "e1");
        assert_eq!(body["event_name"], "freights.publication.accepted");
        assert_eq!(body["occurred_at"], "2026-11-22T09:00:00Z");
        assert_eq!(
            body["entity"],
            serde_json::json!({"type": "freight", "id": "12345"})
        );
        assert!(
            String::from_utf8(e.webhook_body())
                .unwrap()
                .contains("12345678901234567890")
        );
    }

    #[test]
    fn defaults() {
        let e = parse(r#"{"event_name": "freight_orders.order.created"}"#)
            .unwrap()
            .event;
        assert!(e.id.starts_with("evt_"));
        assert_eq!(e.entity.id, e.id);
        assert_eq!(e.entity.kind, "order");
        assert_eq!(e.occurred_at, datetime!(2026-11-23 10:00 UTC));
        assert_eq!(e.payload, b"null");
    }

    #[test]
    fn reports_every_problem() {
        let errors = parse(
            r#"{"event_name": "freights.nope", "occurred_at": "yesterday",
                "entity": {"id": 5}, "attributes": {"a": [1]}, "colour": "red"}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "event_name",
                "occurred_at",
                "entity.id",
                "attributes.a",
                "colour"
            ]
        );
        assert!(errors[0].message.contains("GET /v1/event_types"));
    }

    #[test]
    fn missing_name_and_bad_json() {
        let errors = parse(r#"{}"#).unwrap_err();
        assert_eq!(errors[0].field, "event_name");
        let errors = parse(r#"{"event_name": "#).unwrap_err();
        assert_eq!(errors[0].field, "body");
        assert!(errors[0].message.contains("column"));
    }

    #[test]
    fn non_json_payload_becomes_a_string() {
        let mut e = parse(r#"{"event_name": "freight_orders.order.created"}"#)
            .unwrap()
            .event;
        e.payload = b"not json".to_vec();
        let body: serde_json::Value = serde_json::from_slice(&e.webhook_body()).unwrap();
        assert_eq!(body["data"], "not json");
        e.payload.clear();
        let body: serde_json::Value = serde_json::from_slice(&e.webhook_body()).unwrap();
        assert_eq!(body["data"], serde_json::Value::Null);
    }
}
