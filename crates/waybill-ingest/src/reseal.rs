//! `waybill reseal`: every subscription written again under the current
//! sealing key, so that an old key can be removed from the configuration.
//!
//! Rotation, on a running deployment:
//!
//! 1. add the new key to `secrets.keys` next to the old one, make it
//!    `current_key_id` and roll every service (they open records of both
//!    keys and seal new ones with the new key);
//! 2. run `waybill reseal`: it follows the `subscriptions` topic like an
//!    ingest replica, and each subscription whose state is sealed with
//!    another key (or an older seal version) gets its next revision, the
//!    same content sealed under the current key. Writes follow the
//!    revision rule of `waybill_core::ledger`: one that loses to a
//!    concurrent change through the API is written again on the newer
//!    state, so neither is lost;
//! 3. when it reports nothing left to reseal and nothing unreadable, remove
//!    the old key and roll again. Superseded records still on the topic
//!    until compaction are skipped (counted in
//!    `waybill_state_records_skipped_total`), as they no longer count.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use waybill_core::ledger::Verdict;
use waybill_kafka::KafkaConfig;
use waybill_kafka::producer::Producer;
use waybill_kafka::table::Table;
use waybill_proto::Message as _;
use waybill_proto::convert::subscription_to_proto;
use waybill_runtime::projection::{self, AllSubscriptions, SealedSubscriptions};

/// How many times one subscription is written again after losing to a
/// concurrent change.
const ATTEMPTS: usize = 8;

/// What a run found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The key new records are sealed with.
    pub current_key_id: String,
    /// Subscriptions in the projection.
    pub subscriptions: usize,
    /// Those sealed with another key or an older seal version.
    pub stale: usize,
    /// Those written again under the current key.
    pub resealed: usize,
    /// Subscriptions whose latest record cannot be opened, with why (a key
    /// missing from the configuration): they cannot be resealed.
    pub unreadable: Vec<(String, String)>,
    /// Subscriptions that could not be written, with why.
    pub failed: Vec<(String, String)>,
    /// Stale subscriptions left after the run (0 unless it failed or was
    /// a dry run).
    pub left: usize,
}

impl Report {
    /// Whether the old keys may be removed now.
    pub fn clean(&self) -> bool {
        self.left == 0 && self.unreadable.is_empty() && self.failed.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "current key:     {}", self.current_key_id)?;
        writeln!(f, "subscriptions:   {}", self.subscriptions)?;
        writeln!(f, "to reseal:       {}", self.stale)?;
        writeln!(f, "resealed:        {}", self.resealed)?;
        writeln!(f, "left to reseal:  {}", self.left)?;
        writeln!(f, "unreadable:      {}", self.unreadable.len())?;
        for (id, why) in &self.unreadable {
            writeln!(f, "  {id}: {why}")?;
        }
        for (id, why) in &self.failed {
            writeln!(f, "failed:          {id}: {why}")?;
        }
        if self.clean() {
            write!(
                f,
                "every subscription is sealed with `{}`: keys other than it may be removed",
                self.current_key_id
            )
        } else {
            write!(
                f,
                "keep every key until a run reports nothing left and nothing unreadable"
            )
        }
    }
}

/// Reseals every subscription under the current key of `keys` (with
/// `dry_run`, only counts them).
pub async fn reseal(
    kafka: &KafkaConfig,
    keys: waybill_core::sealing::Keyring,
    write_timeout: Duration,
    dry_run: bool,
) -> crate::Result<Report> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let kafka = &kafka.for_process("waybill-reseal");
    let topics = waybill_kafka::topics::prepare(kafka).await?;
    let table = projection::follow(
        kafka,
        &topics,
        projection::Log::writer(keys.clone(), SealedSubscriptions::new(keys.clone())),
        shutdown.clone(),
    )
    .await?;
    // Nothing cancels `shutdown` before the end of this function.
    projection::wait_loaded(&table, &shutdown).await;
    let stale: Vec<String> = table.read().stale_seals().iter().cloned().collect();
    let mut report = Report {
        current_key_id: keys.current_id().to_owned(),
        subscriptions: table.read().len(),
        stale: stale.len(),
        unreadable: table
            .read()
            .unreadable()
            .iter()
            .map(|(id, why)| (id.clone(), why.clone()))
            .collect(),
        ..Report::default()
    };
    if !dry_run {
        let producer = Producer::new(kafka, Duration::from_secs(5))?;
        let writer = Writer {
            table: &table,
            producer: &producer,
            topic: topics.subscriptions(),
            keys: &keys,
            write_timeout,
        };
        for id in &stale {
            match writer.reseal_one(id).await {
                Ok(true) => report.resealed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(subscription_id = %id, error = %e, "not resealed");
                    report.failed.push((id.clone(), e));
                }
            }
        }
        producer.flush(write_timeout)?;
    }
    report.left = table.read().stale_seals().len();
    Ok(report)
}

struct Writer<'a> {
    table: &'a Table<AllSubscriptions>,
    producer: &'a Producer,
    topic: String,
    keys: &'a waybill_core::sealing::Keyring,
    write_timeout: Duration,
}

impl Writer<'_> {
    /// Writes `id` again under the current key; `false` if there was
    /// nothing to do (deleted, or resealed by a concurrent write).
    async fn reseal_one(&self, id: &str) -> Result<bool, String> {
        for attempt in 0..ATTEMPTS {
            let current = {
                let projection = self.table.read();
                if !projection.stale_seals().contains(id) {
                    return Ok(false);
                }
                projection.get(id)
            };
            let Some(mut next) = current else {
                return Ok(false);
            };
            // The same state, one revision on: `updated_at` and
            // `updated_by` stay those of the last change of its content.
            next.revision += 1;
            next.write_id = waybill_core::ids::new_write_id();
            let record = subscription_to_proto(&next, self.keys).encode_to_vec();
            self.write(id, &record).await?;
            // Read, then released: the next write waits for the fold.
            let verdict = self.table.read().verdict(&next.write_id);
            match verdict {
                Some(Verdict::Applied | Verdict::Restated) => {
                    tracing::info!(subscription_id = %id, revision = next.revision, "resealed");
                    return Ok(true);
                }
                Some(Verdict::Deleted) => return Ok(false),
                Some(Verdict::Stale { current }) => {
                    // A change through the API won; its record is sealed
                    // with the current key already if its ingest has it,
                    // else the next attempt writes it again. Our record
                    // must not stay last on the key either way.
                    tracing::info!(subscription_id = %id, current, attempt, "a concurrent write won; resealing its state");
                    let resealed = !self.table.read().stale_seals().contains(id);
                    if resealed {
                        self.restate(id).await?;
                        return Ok(false);
                    }
                }
                None => return Err("the write folded without a verdict".into()),
            }
        }
        Err(format!(
            "kept changing while it was resealed ({ATTEMPTS} attempts); run reseal again"
        ))
    }

    /// Writes the current state again at its own revision, so the key ends
    /// with a record that counts.
    async fn restate(&self, id: &str) -> Result<(), String> {
        let current = self.table.read().get(id);
        let Some(current) = current else {
            return Ok(());
        };
        let record = subscription_to_proto(&current, self.keys).encode_to_vec();
        self.write(id, &record).await
    }

    /// Writes one record of `id` and waits until the projection folded it.
    async fn write(&self, id: &str, record: &[u8]) -> Result<(), String> {
        let acked = self
            .producer
            .send(
                &self.topic,
                id.as_bytes(),
                Some(record),
                waybill_kafka::headers::standard(waybill_proto::SCHEMA_VERSION, None),
            )
            .await
            .map_err(|e| format!("Kafka did not accept the record: {e}"))?;
        self.table
            .wait_applied(acked.partition, acked.offset, self.write_timeout)
            .await
            .map_err(|e| format!("the record was written but not read back in time: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_clean_only_when_nothing_is_left_or_unreadable() {
        let mut r = Report {
            current_key_id: "k2".into(),
            subscriptions: 3,
            stale: 2,
            resealed: 2,
            ..Report::default()
        };
        assert!(r.clean());
        assert!(r.to_string().contains("keys other than it may be removed"));
        r.unreadable
            .push(("sub_1".into(), "sealed with unknown key id `k0`".into()));
        assert!(!r.clean());
        let text = r.to_string();
        assert!(
            text.contains("sub_1: sealed with unknown key id `k0`"),
            "{text}"
        );
        assert!(text.contains("keep every key"), "{text}");
        r.unreadable.clear();
        r.left = 1;
        assert!(!r.clean());
    }
}
