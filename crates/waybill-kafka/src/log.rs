//! Reading the retained log directly: one record by its place, or every
//! record of a topic within a time window.
//!
//! These readers join no consumer group and commit nothing: they serve API
//! calls (retry one delivery, replay a subscription) without disturbing the
//! services' own consumers. Both block; call them from `spawn_blocking`.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::set_default;
use crate::{Error, KafkaConfig, Result};

/// How long one broker call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn reader(config: &KafkaConfig, topic: &str) -> Result<BaseConsumer> {
    let mut client = config.client_config(crate::config::ClientRole::Consumer);
    client
        .set("group.id", format!("waybill-log-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    set_default(&mut client, "fetch.wait.max.ms", "100");
    Ok(client.create()?)
}

/// The record at `offset` of `topic`/`partition`; `None` if the log no
/// longer (or not yet) holds it.
pub fn read_at(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>> {
    let consumer = reader(config, topic)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
    if offset < low || offset >= high {
        return Ok(None);
    }
    match first_from(&consumer, topic, partition, offset)? {
        Some(m) if m.offset() == offset => Ok(Some(m)),
        // A compacted-away offset: the next record came instead.
        Some(_) => Ok(None),
        None => Err(Error::Timeout(format!(
            "{topic}/{partition} offset {offset}"
        ))),
    }
}

/// The first record of `partition` at or after `offset` (`None`: none came
/// within the call timeout). Records fetched for a previous assignment of
/// the same consumer are ignored.
fn first_from(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                return Ok(Some(m.detach()));
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A window of log time, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Records written at or after this time.
    pub since_ms: i64,
    /// Records written at or before this time; `None` = up to now.
    pub until_ms: Option<i64>,
}

impl Window {
    /// Whether a record written at `ms` is in the window.
    pub fn contains(&self, ms: i64) -> bool {
        ms >= self.since_ms && self.until_ms.is_none_or(|until| ms <= until)
    }
}

/// What [`scan`] read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Records read, in the window or not.
    pub read: u64,
    /// Records in the window, handed to the visitor.
    pub visited: u64,
    /// Partitions whose start came from a full scan because the broker
    /// could not look offsets up by time.
    pub scanned_from_start: u32,
}

/// Hands every record of `topic` written within `window` (by the record
/// timestamp) to `visit`, partition by partition, up to the high watermark
/// seen when the scan started. The start of each partition is looked up by
/// time (`ListOffsets`); a broker that cannot answer that is read from the
/// beginning instead. `visit` returning `false` stops the scan.
pub fn scan(
    config: &KafkaConfig,
    topic: &str,
    window: Window,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Result<Scanned> {
    let consumer = reader(config, topic)?;
    let mut scanned = Scanned::default();
    for partition in partitions_of(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
        if high <= low {
            continue;
        }
        let start = match start_by_time(&consumer, topic, partition, window.since_ms, low, high)? {
            Start::At(o) => o,
            Start::Nothing => continue,
            Start::Unknown => {
                scanned.scanned_from_start += 1;
                low
            }
        };
        if start >= high {
            continue;
        }
        let mut stopped = false;
        read_partition(&consumer, topic, partition, start, high, |m| {
            scanned.read += 1;
            let at = m.timestamp().to_millis().unwrap_or(0);
            if window.until_ms.is_some_and(|until| at > until) {
                return false;
            }
            if window.contains(at) {
                scanned.visited += 1;
                if !visit(m) {
                    stopped = true;
                    return false;
                }
            }
            true
        })?;
        if stopped {
            return Ok(scanned);
        }
    }
    Ok(scanned)
}

/// Reads one partition from `start` up to, not including, `end`, handing
/// each record to `on` until it returns `false`; fails when the broker
/// returns nothing for [`CALL_TIMEOUT`].
fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    mut on: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&assignment)?;
    let mut idle_since = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            // A record fetched for a previous assignment.
            Some(Ok(m)) if m.partition() != partition => {}
            Some(Ok(m)) => {
                idle_since = Instant::now();
                if m.offset() >= end || !on(&m) || m.offset() + 1 >= end {
                    return Ok(());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if idle_since.elapsed() > CALL_TIMEOUT => {
                return Err(Error::Timeout(format!(
                    "{topic}/{partition} to return records up to offset {end}"
                )));
            }
            None => {}
        }
    }
}

/// Where a read of `topic` from `since_ms` starts and ends, per partition:
/// the first offset written at or after `since_ms` (the log start if the
/// broker cannot look it up by time), and the high watermark now.
/// Partitions with nothing to read are left out.
pub fn plan(config: &KafkaConfig, topic: &str, since_ms: i64) -> Result<Vec<(i32, i64, i64)>> {
    let consumer = reader(config, topic)?;
    let mut out = Vec::new();
    for partition in partitions_of(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
        if high <= low {
            continue;
        }
        let start = match start_by_time(&consumer, topic, partition, since_ms, low, high)? {
            Start::At(o) => o,
            Start::Nothing => continue,
            Start::Unknown => low,
        };
        if start < high {
            out.push((partition, start, high));
        }
    }
    Ok(out)
}

/// The partitions of `topic`.
fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Where a read by time starts in a partition holding `low..high`.
enum Start {
    /// At this offset (at least `low`).
    At(i64),
    /// Nothing was written at or after that time.
    Nothing,
    /// The broker cannot look offsets up by time: read from `low`.
    Unknown,
}

fn start_by_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    since_ms: i64,
    low: i64,
    high: i64,
) -> Result<Start> {
    Ok(match start_offset(consumer, topic, partition, since_ms) {
        Some(Offset::Offset(o)) => Start::At(o.max(low)),
        // "Nothing at or after that time": believed only if the last record
        // is indeed older (some brokers answer this to every lookup by time
        // they do not implement).
        Some(Offset::End)
            if high > low
                && timestamp_at(consumer, topic, partition, high - 1)?
                    .is_some_and(|last| last < since_ms) =>
        {
            Start::Nothing
        }
        _ => Start::Unknown,
    })
}

/// Hands every record of one partition from offset `from` (or the log
/// start, or the first record written at or after `since_ms`, if later) up
/// to, not including, `until` (or the high watermark, if lower) to `visit`,
/// in offset order.
pub fn scan_range(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
    since_ms: i64,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64> {
    let consumer = reader(config, topic)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
    // A broker that cannot look up by time leaves the offsets to bound the
    // read.
    let since = match start_by_time(&consumer, topic, partition, since_ms, low, high)? {
        Start::At(o) => o,
        Start::Nothing => high,
        Start::Unknown => low,
    };
    let (start, end) = (from.max(low).max(since), until.min(high));
    if start >= end {
        return Ok(0);
    }
    let mut read = 0;
    read_partition(&consumer, topic, partition, start, end, |m| {
        read += 1;
        visit(m);
        true
    })?;
    Ok(read)
}

/// The timestamp of the record at `offset` (`None`: no such record).
pub(crate) fn timestamp_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>> {
    Ok(first_from(consumer, topic, partition, offset)?.and_then(|m| m.timestamp().to_millis()))
}

/// The first offset of a partition at or after `since_ms`, asked of the
/// broker; `None` if it could not answer.
fn start_offset(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    since_ms: i64,
) -> Option<Offset> {
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, partition, Offset::Offset(since_ms))
        .ok()?;
    let answer = consumer.offsets_for_times(query, CALL_TIMEOUT).ok()?;
    let element = answer.find_partition(topic, partition)?;
    if element.error().is_err() {
        return None;
    }
    match element.offset() {
        Offset::Offset(o) if o >= 0 => Some(Offset::Offset(o)),
        Offset::End => Some(Offset::End),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_are_inclusive() {
        let w = Window {
            since_ms: 10,
            until_ms: Some(20),
        };
        assert!(!w.contains(9) && w.contains(10) && w.contains(20) && !w.contains(21));
        let open = Window {
            since_ms: 10,
            until_ms: None,
        };
        assert!(open.contains(i64::MAX));
    }
}
