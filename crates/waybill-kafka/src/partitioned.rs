//! A consumer-group member that runs one task per assigned partition.
//!
//! Modelled on vector's Kafka source: in the rebalance callback each newly
//! assigned partition's queue is split from the consumer's main queue and
//! handed to its own task; on revoke the partition's task is told to stop,
//! the callback waits (bounded) for it to drain and store its offsets, and
//! the stored offsets are committed before the partition is given away.
//!
//! The main queue is polled by a dedicated thread (the "driver") because the
//! rebalance callback blocks while partitions drain; blocking a thread of
//! the service's runtime could starve the very tasks it waits for.
//!
//! Offsets are stored by the partition tasks, only when their outcome is
//! durable, and committed by librdkafka's auto-commit timer, on revoke, and
//! at shutdown. Every commit's result reaches [`GroupContext`]'s commit
//! callback (librdkafka posts it for auto and manual commits alike): a
//! refused commit, or a partition the broker refused in it, is logged at
//! WARN and counted in [`CommitStats`], and the offsets that were committed
//! are kept there per partition (the metrics export both).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::set_default;
use crate::{Error, KafkaConfig, Result};

/// The consumer type partition tasks receive.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// One assigned partition, handed to its task.
pub struct Assigned {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The partition's own message stream (`messages.stream()`).
    pub messages: StreamPartitionQueue<GroupContext>,
    /// Cancelled when the partition is revoked or the service shuts down:
    /// finish or abandon the current record, store offsets, return.
    pub stop: CancellationToken,
    consumer: Arc<GroupConsumer>,
}

impl Assigned {
    /// Marks every record up to and including `offset` as done; the next
    /// commit moves the group past it.
    pub fn store_offset(&self, offset: i64) {
        tracing::trace!(topic = %self.topic, partition = self.partition, offset, "offset stored");
        if let Err(e) = self
            .consumer
            .store_offset(&self.topic, self.partition, offset)
        {
            // Happens when the partition was revoked meanwhile: the new
            // owner re-reads the record (at-least-once).
            tracing::debug!(topic = %self.topic, partition = self.partition, offset, error = %e, "offset not stored");
        }
    }
}

impl Assigned {
    /// Makes the partition deliver again from `offset` (after a failure
    /// whose records must be processed again). Records already queued for
    /// this partition are discarded by the seek.
    pub fn rewind(&self, offset: i64) -> Result<()> {
        self.consumer
            .seek(
                &self.topic,
                self.partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(Error::Kafka)
    }
}

/// Commit results of one consumer group member, for metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    failures: AtomicU64,
    committed: Mutex<BTreeMap<(String, i32), i64>>,
}

impl CommitStats {
    /// Commits (or partitions of a commit) the broker refused or that
    /// failed, since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last offset committed per partition (the next record the group
    /// reads there).
    pub fn committed(&self) -> BTreeMap<(String, i32), i64> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Folds one commit result in (what the commit callback sees); returns
    /// the failures it counted. A commit with nothing to commit
    /// (`NoOffset`) is not a failure.
    pub fn record(
        &self,
        group: &str,
        result: &KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) -> u64 {
        let mut failed = 0;
        if let Err(e) = result {
            let benign = matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset));
            if !benign {
                failed += 1;
                tracing::warn!(group, error = %e, partitions = ?partition_list(offsets), "offset commit failed");
            }
        }
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for element in offsets.elements() {
            match (element.error(), element.offset()) {
                // Counted once per commit when the whole commit failed.
                (Err(e), offset) if result.is_ok() => {
                    failed += 1;
                    tracing::warn!(group, topic = element.topic(), partition = element.partition(), ?offset, error = %e, "offset commit refused for a partition");
                }
                (Ok(()), Offset::Offset(o)) if result.is_ok() => {
                    committed.insert((element.topic().to_owned(), element.partition()), o);
                }
                _ => {}
            }
        }
        self.failures.fetch_add(failed, Ordering::Relaxed);
        failed
    }
}

fn partition_list(offsets: &TopicPartitionList) -> Vec<String> {
    offsets
        .elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

/// What runs for each assigned partition.
pub type PartitionTask = Arc<dyn Fn(Assigned) -> BoxFuture<'static, ()> + Send + Sync>;

struct Running {
    stop: CancellationToken,
    done: std_mpsc::Receiver<()>,
}

/// Consumer context: splits partitions on assignment, drains on revoke.
pub struct GroupContext {
    consumer: OnceLock<Weak<GroupConsumer>>,
    task: PartitionTask,
    runtime: tokio::runtime::Handle,
    running: Mutex<HashMap<(String, i32), Running>>,
    drain_timeout: Duration,
    shutdown: CancellationToken,
    group: String,
    commits: Arc<CommitStats>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        crate::stats::record(&statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.commits.record(&self.group, &result, offsets);
    }

    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<(String, i32)> = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            tracing::info!(partitions = ?revoked, "partitions revoked; draining");
            self.stop_and_drain(&revoked);
            if let Err(e) = base.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit is the common case;
                // a real failure reaches the commit callback too (counted
                // and logged there).
                tracing::debug!(error = %e, "commit on revoke");
            }
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
                    return;
                };
                for element in list.elements() {
                    self.start(&consumer, element.topic(), element.partition());
                }
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl GroupContext {
    fn start(&self, consumer: &Arc<GroupConsumer>, topic: &str, partition: i32) {
        let Some(messages) = consumer.split_partition_queue(topic, partition) else {
            tracing::error!(topic, partition, "cannot split the partition queue");
            return;
        };
        let stop = self.shutdown.child_token();
        let (done_tx, done) = std_mpsc::channel();
        let assigned = Assigned {
            topic: topic.to_owned(),
            partition,
            messages,
            stop: stop.clone(),
            consumer: consumer.clone(),
        };
        let future = (self.task)(assigned);
        self.runtime.spawn(async move {
            // Signals the drain wait even if the task panics.
            struct Done(std_mpsc::Sender<()>);
            impl Drop for Done {
                fn drop(&mut self) {
                    let _ = self.0.send(());
                }
            }
            let _done = Done(done_tx);
            future.await;
        });
        tracing::info!(topic, partition, "partition assigned; task started");
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((topic.to_owned(), partition), Running { stop, done });
    }

    fn stop_and_drain(&self, partitions: &[(String, i32)]) {
        let stopping: Vec<((String, i32), Running)> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            partitions
                .iter()
                .filter_map(|key| running.remove(key).map(|r| (key.clone(), r)))
                .collect()
        };
        for (_, r) in &stopping {
            r.stop.cancel();
        }
        let deadline = std::time::Instant::now() + self.drain_timeout;
        for ((topic, partition), r) in stopping {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if r.done.recv_timeout(left).is_err() {
                tracing::warn!(topic, partition, "partition task did not drain in time");
            }
        }
    }

    fn stop_all(&self) {
        let all: Vec<(String, i32)> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        self.stop_and_drain(&all);
    }
}

/// Settings of a [`run`] call.
pub struct GroupOptions {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// How long a revoked partition may take to finish its current record.
    pub drain_timeout: Duration,
    /// Where commit results are counted (shared with the metrics).
    pub commits: Arc<CommitStats>,
}

/// Gives group `to` the committed offsets group `from` has on `topics`,
/// when `to` has none there yet: a consumer group split in two (the
/// delivery service's retry tiers moved to a group of their own) resumes
/// where the old group stopped instead of at `auto.offset.reset`. Returns
/// how many partitions' offsets were copied. Run before `to` is joined; if
/// another process joined it first, the commit is refused and that one
/// copied them already.
pub async fn adopt_offsets(
    config: &KafkaConfig,
    from: &str,
    to: &str,
    topics: &[String],
) -> Result<usize> {
    let consumer_for = |group: &str| -> Result<rdkafka::consumer::BaseConsumer> {
        let mut client = config.client_config(crate::config::ClientRole::Consumer);
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        Ok(client.create()?)
    };
    let (old, new) = (consumer_for(from)?, consumer_for(to)?);
    let topics = topics.to_vec();
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let mut all = TopicPartitionList::new();
        for topic in &topics {
            let metadata = new.fetch_metadata(Some(topic), timeout)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    all.add_partition(t.name(), p.id());
                }
            }
        }
        let has = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .any(|e| matches!(e.offset(), Offset::Offset(_)))
        };
        if has(&new.committed_offsets(all.clone(), timeout)?) {
            return Ok(0);
        }
        let mut copy = TopicPartitionList::new();
        for e in old.committed_offsets(all, timeout)?.elements() {
            if let Offset::Offset(n) = e.offset() {
                copy.add_partition_offset(e.topic(), e.partition(), Offset::Offset(n))?;
            }
        }
        if copy.count() == 0 {
            return Ok(0);
        }
        new.commit(&copy, rdkafka::consumer::CommitMode::Sync)?;
        tracing::info!(from = %from, to = %to, partitions = copy.count(), "consumer group offsets adopted");
        Ok(copy.count())
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Joins the group and runs `task` for every assigned partition until
/// `shutdown` is cancelled; then drains every partition, commits, and leaves
/// the group. Returns when all of that is done, or at most `drain_timeout`
/// plus 5 s after `shutdown` when the broker does not answer.
pub async fn run(
    config: &KafkaConfig,
    options: GroupOptions,
    task: PartitionTask,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut client = config.client_config_with_stats(crate::config::ClientRole::Consumer);
    client
        .set("group.id", &options.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    set_default(&mut client, "enable.auto.commit", "true");
    set_default(&mut client, "auto.commit.interval.ms", "200");
    set_default(&mut client, "auto.offset.reset", "earliest");
    set_default(
        &mut client,
        "partition.assignment.strategy",
        "cooperative-sticky",
    );
    set_default(&mut client, "fetch.wait.max.ms", "100");
    let context = GroupContext {
        consumer: OnceLock::new(),
        task,
        runtime: tokio::runtime::Handle::current(),
        running: Mutex::new(HashMap::new()),
        drain_timeout: options.drain_timeout,
        shutdown: shutdown.clone(),
        group: options.group_id.clone(),
        commits: options.commits.clone(),
    };
    let consumer: Arc<GroupConsumer> = Arc::new(client.create_with_context(context)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
    let driver_shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name(format!("kafka-{}", options.group_id))
        .spawn(move || {
            let result = drive(consumer, driver_shutdown);
            let _ = finished_tx.send(result);
        })
        .map_err(|e| Error::Task(e.to_string()))?;
    let mut finished = finished_rx;
    let died = |_| Error::Task("consumer driver thread died".into());
    tokio::select! {
        result = &mut finished => return result.map_err(died)?,
        () = shutdown.cancelled() => {}
    }
    // The drain is bounded per partition; the final commit and the group
    // leave wait on the broker, which may be gone. A stop must not outlast
    // the pod's grace period: past this, the process leaves without them
    // (the next owners resume from the last commit).
    match tokio::time::timeout(options.drain_timeout + LEAVE_TIMEOUT, finished).await {
        Ok(result) => result.map_err(died)?,
        Err(_) => {
            tracing::warn!(
                group = %options.group_id,
                "Kafka did not confirm the final commit and group leave in time; stopping without them"
            );
            Ok(())
        }
    }
}

/// How long the final commit and group leave may take after the drain.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls the main queue (serving rebalance callbacks) until shutdown.
fn drive(consumer: Arc<GroupConsumer>, shutdown: CancellationToken) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Task(e.to_string()))?;
    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = consumer.recv() => match message {
                    // Every assigned partition has its own queue, so a record
                    // here was fetched before its queue was split. Rewind the
                    // partition so that its task receives it, in order.
                    Ok(m) => {
                        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
                        drop(m);
                        tracing::warn!(topic, partition, offset, "record on the main queue; rewinding partition");
                        if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                            tracing::error!(topic, partition, offset, error = %e, "cannot rewind partition");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
            }
        }
    });
    // Drain every partition, commit what they stored, then leave the group.
    consumer.context().stop_all();
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Its result also reaches the commit callback while the consumer
        // closes (counted and logged there, when the broker answers).
        tracing::debug!(error = %e, "final commit");
    }
    consumer.unsubscribe();
    drop(consumer);
    Ok(())
}
