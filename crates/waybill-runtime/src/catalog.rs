//! The event catalog every service uses: the built-in one plus the
//! configuration's `[catalog]` types (the base), plus the types operators
//! added through `POST /v1/event_types`, folded from the compacted
//! `event_types` topic.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use waybill_core::catalog::{Catalog, ExtraEventType};
use waybill_kafka::table::{Fold, Table};
use waybill_kafka::{KafkaConfig, Topics};
use waybill_proto::Message as _;
use waybill_proto::v1;

/// The base catalog with the added types applied.
pub struct Catalogue {
    base: Catalog,
    current: Catalog,
    added: std::collections::BTreeMap<String, ExtraEventType>,
}

impl Catalogue {
    /// The base catalog, nothing added yet.
    pub fn new(base: Catalog) -> Self {
        Self {
            current: base.clone(),
            base,
            added: Default::default(),
        }
    }

    /// The catalog as it is now.
    pub fn catalog(&self) -> &Catalog {
        &self.current
    }

    /// Whether `name` was added through the API (and so may be removed).
    pub fn is_added(&self, name: &str) -> bool {
        self.added.contains_key(name)
    }

    fn rebuild(&mut self) {
        let added: Vec<ExtraEventType> = self.added.values().cloned().collect();
        // Each record was validated when written; one that no longer fits
        // (say, the configuration now defines the same name) is left out.
        self.current = added.iter().fold(self.base.clone(), |catalog, e| {
            catalog
                .clone()
                .with_extra(std::slice::from_ref(e))
                .unwrap_or(catalog)
        });
    }
}

/// The record of an added event type.
pub fn record(e: &ExtraEventType) -> v1::EventTypeRecord {
    v1::EventTypeRecord {
        name: e.name.clone(),
        topic: e.topic.clone(),
        description: e.description.clone(),
        domain: e.domain.clone().unwrap_or_default(),
    }
}

impl Fold for Catalogue {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let name = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
        match value {
            None => {
                self.added.remove(name);
            }
            Some(value) => {
                let r = v1::EventTypeRecord::decode(value).map_err(|e| e.to_string())?;
                if r.name != name {
                    return Err(format!("record name `{}` differs from its key", r.name));
                }
                self.added.insert(
                    r.name.clone(),
                    ExtraEventType {
                        name: r.name,
                        topic: r.topic,
                        description: r.description,
                        domain: (!r.domain.is_empty()).then_some(r.domain),
                    },
                );
            }
        }
        self.rebuild();
        Ok(())
    }
}

/// Starts following `event_types` on top of `base`.
pub async fn follow(
    kafka: &KafkaConfig,
    topics: &Topics,
    base: Catalog,
    shutdown: CancellationToken,
) -> waybill_kafka::Result<Table<Catalogue>> {
    Table::follow(kafka, &topics.event_types(), Catalogue::new(base), shutdown).await
}

/// The event of a `DomainEvent` record written at `as_of`, checked against
/// the catalog; a type added a moment before is waited for (see [`knows`]).
pub async fn event_from_record(
    table: &Table<Catalogue>,
    record: v1::DomainEvent,
    as_of: SystemTime,
    timeout: Duration,
) -> Result<waybill_core::event::Event, waybill_proto::convert::RecordError> {
    knows(table, &record.event_name, as_of, timeout).await;
    let catalog = table.read();
    waybill_proto::convert::event_from_proto(record, catalog.catalog())
}

/// Whether `name` is in the catalog, waiting (up to `timeout`) for the
/// catalog to hold every type added before `as_of` when it is not yet: a
/// record of a type added a moment ago is not refused for lag.
pub async fn knows(
    table: &Table<Catalogue>,
    name: &str,
    as_of: SystemTime,
    timeout: Duration,
) -> bool {
    if table.read().catalog().get(name).is_some() {
        return true;
    }
    let _ = table.wait_fresh(as_of, timeout).await;
    table.read().catalog().get(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_types_come_and_go() {
        let mut c = Catalogue::new(Catalog::builtin());
        let e = ExtraEventType {
            name: "Shipment.Created".into(),
            topic: "freights".into(),
            description: "d".into(),
            domain: None,
        };
        c.apply(e.name.as_bytes(), Some(&record(&e).encode_to_vec()))
            .unwrap();
        assert!(c.catalog().get("Shipment.Created").is_some());
        assert!(c.is_added("Shipment.Created"));
        assert!(c.catalog().get("freights.freight.create").is_some());
        c.apply(b"Shipment.Created", None).unwrap();
        assert!(c.catalog().get("Shipment.Created").is_none());
        assert!(
            c.apply(b"Other", Some(&record(&e).encode_to_vec()))
                .is_err()
        );
    }
}
