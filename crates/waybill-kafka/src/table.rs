//! Following a compacted topic into in-memory state.
//!
//! A [`Table`] reads every partition of a topic from the beginning (no
//! consumer group: every instance holds the whole state) and folds each
//! record into a user-supplied [`Fold`]. It then keeps following the topic.
//!
//! Two barriers make the state safe to use:
//!
//! - [`Table::wait_applied`]: the record this process just produced (known
//!   partition and offset) is applied. Gives read-your-writes to the API.
//! - [`Table::wait_fresh`]: the state includes every record appended before
//!   a point in time. The freshness task stamps the clock, asks the broker
//!   for the high watermarks, and waits until they are applied; the stamp is
//!   then a time before which nothing is missing. A service consuming other
//!   topics waits for the state to be fresh as of a record's timestamp, so a
//!   subscription acknowledged before an event was produced is always seen
//!   by the matcher (and by delivery) for that event. At start-up,
//!   `wait_fresh(now)` is "loaded up to the high watermark".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::set_default;
use crate::{Error, KafkaConfig, Result};

/// Folds records of a compacted topic into state.
pub trait Fold: Send + Sync + 'static {
    /// Applies one record; `value: None` is a tombstone. An `Err` means the
    /// record is unusable: it is logged (without its value) and skipped.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> std::result::Result<(), String>;
}

/// Next offset to apply, per partition.
type Progress = BTreeMap<i32, i64>;

/// In-memory state folded from a compacted topic, kept up to date.
pub struct Table<S> {
    topic: String,
    state: Arc<RwLock<S>>,
    progress: watch::Receiver<Progress>,
    fresh_as_of: watch::Receiver<u64>,
    demand: Arc<Notify>,
    waiters: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
}

impl<S> Clone for Table<S> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            state: self.state.clone(),
            progress: self.progress.clone(),
            fresh_as_of: self.fresh_as_of.clone(),
            demand: self.demand.clone(),
            waiters: self.waiters.clone(),
            skipped: self.skipped.clone(),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<S: Fold> Table<S> {
    /// Starts following `topic` into `state`. Returns at once; the table
    /// fills in the background until `shutdown` is cancelled.
    pub async fn follow(
        config: &KafkaConfig,
        topic: &str,
        state: S,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let mut client = config.client_config(crate::config::ClientRole::Consumer);
        // librdkafka wants a group id even for manual assignment. This member
        // never joins the group nor commits, so instances do not interfere.
        client
            .set("group.id", format!("waybill-table-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        set_default(&mut client, "fetch.wait.max.ms", "100");
        // A table is read once from the start, then follows a trickle: a
        // quarter of librdkafka's 64 MiB of prefetched records, so the
        // buffers freed after the load do not stay behind as holes between
        // the state's allocations (at a million subscriptions: about 100
        // MiB of resident memory), refilled 10 ms after the fold makes room
        // rather than librdkafka's 1 s (which made the load half again as
        // long).
        set_default(&mut client, "queued.max.messages.kbytes", "16384");
        set_default(&mut client, "fetch.queue.backoff.ms", "10");
        let consumer: Arc<StreamConsumer> = Arc::new(client.create()?);
        // The freshness lookups (ListOffsets) go through a client of their
        // own: a broker answers one connection's requests in order, so on
        // the follower's connection a lookup would wait behind its long-poll
        // fetch of an idle topic (up to fetch.wait.max.ms, 100 ms, on
        // Apache Kafka at every event).
        let lookups: Arc<StreamConsumer> = Arc::new(client.create()?);

        let partitions = partitions_of(&consumer, topic).await?;
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let lows = watermarks(&consumer, topic, &partitions).await?;
        let initial: Progress = lows.iter().map(|(p, (low, _))| (*p, *low)).collect();

        let (progress_tx, progress) = watch::channel(initial);
        let (fresh_tx, fresh_as_of) = watch::channel(0u64);
        let table = Self {
            topic: topic.to_owned(),
            state: Arc::new(RwLock::new(state)),
            progress,
            fresh_as_of,
            demand: Arc::new(Notify::new()),
            waiters: Arc::new(AtomicUsize::new(0)),
            skipped: Arc::new(AtomicU64::new(0)),
        };

        tokio::spawn(apply_loop(
            consumer.clone(),
            table.state.clone(),
            progress_tx,
            table.skipped.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(freshness_loop(
            lookups,
            topic.to_owned(),
            partitions,
            table.progress.clone(),
            fresh_tx,
            table.demand.clone(),
            table.waiters.clone(),
            shutdown,
        ));
        Ok(table)
    }

    /// Reads the state. Hold the guard briefly and never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the record at `partition`/`offset` is applied.
    pub async fn wait_applied(&self, partition: i32, offset: i64, timeout: Duration) -> Result<()> {
        let mut progress = self.progress.clone();
        let wait = progress.wait_for(|p| p.get(&partition).is_some_and(|next| *next > offset));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Task("table follower stopped".into())),
            Err(_) => Err(Error::Timeout(format!(
                "{} to apply offset {offset} of partition {partition}",
                self.topic
            ))),
        }
    }

    /// Waits until the state includes every record appended before `as_of`.
    pub async fn wait_fresh(&self, as_of: SystemTime, timeout: Duration) -> Result<()> {
        let target = unix_ms(as_of);
        if *self.fresh_as_of.borrow() >= target {
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.demand.notify_one();
        let mut fresh = self.fresh_as_of.clone();
        let result = tokio::time::timeout(timeout, fresh.wait_for(|t| *t >= target)).await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Task("table follower stopped".into())),
            Err(_) => Err(Error::Timeout(format!("{} to catch up", self.topic))),
        }
    }

    /// The topic this table follows.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records the fold refused (logged and skipped) since the start: a
    /// counter to export.
    pub fn skipped(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }

    /// The time (ms since the epoch) up to which the state is known complete.
    pub fn fresh_as_of_ms(&self) -> u64 {
        *self.fresh_as_of.borrow()
    }
}

async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = retrying(&topic, "metadata", || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))
        })?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| Error::Topic {
                topic: topic.clone(),
                message: "missing from metadata".into(),
            })?;
        if let Some(err) = t.error() {
            return Err(Error::Topic {
                topic: topic.clone(),
                message: format!("metadata error {err:?}; does the topic exist?"),
            });
        }
        let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if partitions.is_empty() {
            return Err(Error::Topic {
                topic,
                message: "has no partitions; does the topic exist?".into(),
            });
        }
        Ok(partitions)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

async fn watermarks(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        partitions
            .iter()
            .map(|p| Ok((*p, watermarks_of(&consumer, &topic, *p)?)))
            .collect()
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// How long a metadata or watermark lookup is retried: a topic created a
/// moment ago has no leader yet (`NotLeaderForPartition`,
/// `LeaderNotAvailable`), a leader moves during a broker restart, a broker
/// is unreachable for a moment; none of them must stop a service.
const LOOKUP_RETRY: Duration = Duration::from_secs(20);

/// The low and high watermarks of one partition, retried (see [`retrying`]).
fn watermarks_of(consumer: &StreamConsumer, topic: &str, partition: i32) -> Result<(i64, i64)> {
    retrying(topic, "watermarks", || {
        consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
    })
}

/// Runs a blocking lookup until it succeeds, pausing 50 ms to 1 s between
/// tries, for up to [`LOOKUP_RETRY`]; then returns its last error.
fn retrying<T>(
    topic: &str,
    what: &str,
    mut lookup: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + LOOKUP_RETRY;
    let mut pause = Duration::from_millis(50);
    loop {
        match lookup() {
            Ok(found) => return Ok(found),
            Err(e) if std::time::Instant::now() + pause < deadline => {
                tracing::debug!(topic, what, error = %e, "lookup failed; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn apply_loop<S: Fold>(
    consumer: Arc<StreamConsumer>,
    state: Arc<RwLock<S>>,
    progress: watch::Sender<Progress>,
    skipped: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = stream.next() => m,
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "table consumer error");
                continue;
            }
            None => return,
        };
        let key = message.key().unwrap_or_default();
        let result = state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(key, message.payload());
        if let Err(reason) = result {
            skipped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                key = %String::from_utf8_lossy(key),
                reason,
                "unusable record skipped"
            );
        }
        let (partition, next) = (message.partition(), message.offset() + 1);
        progress.send_modify(|p| {
            p.insert(partition, next);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn freshness_loop(
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
    mut progress: watch::Receiver<Progress>,
    fresh: watch::Sender<u64>,
    demand: Arc<Notify>,
    waiters: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    loop {
        if waiters.load(Ordering::SeqCst) == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = demand.notified() => {}
            }
        }
        let stamp = unix_ms(SystemTime::now());
        let highs = tokio::select! {
            _ = shutdown.cancelled() => return,
            w = watermarks(&consumer, &topic, &partitions) => w,
        };
        let highs = match highs {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot read high watermarks; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let caught_up = progress.wait_for(|applied| {
            highs
                .iter()
                .all(|(p, (_, high))| applied.get(p).is_some_and(|next| next >= high))
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = caught_up => if r.is_err() { return },
        }
        fresh.send_modify(|t| *t = (*t).max(stamp));
    }
}
