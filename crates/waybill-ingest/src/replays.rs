//! Replays as jobs: `POST /v1/subscriptions/{id}/replay` writes a job to the
//! compacted `replays` topic and runs it; `GET /v1/replays/{id}` shows how
//! far it got. A job survives the process that ran it.
//!
//! - **Plan.** At the start the job fixes what it reads: for each domain
//!   topic of the subscription's event types, each partition from the first
//!   record written at `since` up to the end of the log at that moment.
//! - **Progress.** It reads a partition in chunks; once every task of a chunk
//!   is acknowledged by Kafka, it writes the job again with the chunk's end
//!   as the partition's next offset (and its counts). That record is also
//!   the heartbeat.
//! - **Take-over.** Every ingest replica follows the topic; a running job
//!   whose heartbeat is older than `ingest.replay_lease` is claimed by one
//!   of them (a claim is a write on the job's revision, so two claims cannot
//!   both win) and resumed from its last progress.
//! - **Nothing queued twice.** The tasks a job queues carry its id. A
//!   resumed job first reads `deliveries` from just before the last
//!   heartbeat and skips every delivery it already queued there (the tasks
//!   of a chunk whose progress was not written yet).
//!
//! A job's records follow the revision rule of subscription records
//! (`waybill_core::ledger`): the writer that lost stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::Message as _;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use waybill_core::event::format_rfc3339;
use waybill_core::ledger::{Ledger, RecentVerdicts};
use waybill_core::subscription::Subscription;
use waybill_kafka::log::{self, Window};
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::convert::{from_timestamp, timestamp};
use waybill_proto::v1;

use crate::AppState;
use crate::error::ApiError;

/// Domain records read per chunk (one progress record each).
const CHUNK: i64 = 2000;
/// Tasks of a chunk in flight to Kafka at once.
const IN_FLIGHT: usize = 64;
/// How far before the last heartbeat a resumed job looks for what it
/// queued (clocks of two processes, the producer's linger).
const RESUME_MARGIN_MS: i64 = 5_000;
/// Consecutive failures of one chunk before the job fails.
const MAX_FAILURES: u32 = 10;

/// The `replays` projection: every job's latest state that counts.
#[derive(Default)]
pub struct Jobs {
    ledger: Ledger,
    jobs: HashMap<String, v1::ReplayJob>,
    verdicts: RecentVerdicts<bool>,
}

impl Jobs {
    /// One job.
    pub fn get(&self, id: &str) -> Option<&v1::ReplayJob> {
        self.jobs.get(id)
    }

    /// Whether the write `write_id` counted (once folded).
    pub fn counted(&self, write_id: &str) -> Option<bool> {
        self.verdicts.get(write_id)
    }

    /// How many of `tenant`'s jobs are running.
    pub fn running_of(&self, tenant: &str) -> usize {
        self.jobs
            .values()
            .filter(|j| j.tenant_id == tenant && j.status == v1::ReplayStatus::Running as i32)
            .count()
    }

    /// Running jobs whose heartbeat is older than `lease` at `now`.
    pub fn abandoned(&self, now: OffsetDateTime, lease: Duration) -> Vec<v1::ReplayJob> {
        self.jobs
            .values()
            .filter(|j| j.status == v1::ReplayStatus::Running as i32)
            .filter(|j| {
                from_timestamp(j.heartbeat_at.as_ref(), "heartbeat_at")
                    .is_ok_and(|h| now - h > lease)
            })
            .cloned()
            .collect()
    }
}

impl Fold for Jobs {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let id = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
        let Some(value) = value else {
            self.jobs.remove(id);
            return Ok(());
        };
        let job = v1::ReplayJob::decode(value).map_err(|e| e.to_string())?;
        if job.id != id {
            return Err(format!("job `{}` under the key of `{id}`", job.id));
        }
        let counts = self
            .ledger
            .judge_write(id, job.revision, &job.write_id, 0)
            .counts();
        self.verdicts.remember(&job.write_id, counts);
        if counts {
            self.jobs.insert(job.id.clone(), job);
        }
        Ok(())
    }
}

/// A replay job as `GET /v1/replays/{id}` shows it.
#[derive(Debug, serde::Serialize)]
pub struct ReplayAnswer<'a> {
    id: &'a str,
    subscription_id: &'a str,
    since: Option<String>,
    until: Option<String>,
    only_failed: bool,
    status: &'static str,
    scanned: u64,
    queued: u64,
    started_at: Option<String>,
    finished_at: Option<String>,
    error: Option<&'a str>,
}

/// Every field of [`ReplayAnswer`].
pub const VIEW_FIELDS: &[&str] = &[
    "id",
    "subscription_id",
    "since",
    "until",
    "only_failed",
    "status",
    "scanned",
    "queued",
    "started_at",
    "finished_at",
    "error",
];

/// `GET /v1/replays/{id}`.
pub fn view(job: &v1::ReplayJob) -> Value {
    let time = |t: Option<&waybill_proto::prost_types::Timestamp>| {
        t.and_then(|t| from_timestamp(Some(t), "t").ok())
            .map(format_rfc3339)
    };
    let answer = ReplayAnswer {
        id: &job.id,
        subscription_id: &job.subscription_id,
        since: time(job.since.as_ref()),
        until: time(job.until.as_ref()),
        only_failed: job.only_failed,
        status: status_word(v1::ReplayStatus::try_from(job.status).unwrap_or_default()),
        scanned: job.scanned,
        queued: job.queued,
        started_at: time(job.started_at.as_ref()),
        finished_at: time(job.finished_at.as_ref()),
        error: (!job.error.is_empty()).then_some(job.error.as_str()),
    };
    serde_json::to_value(answer).expect("a replay serialises")
}

/// The API's word for a job's status.
pub fn status_word(status: v1::ReplayStatus) -> &'static str {
    match status {
        v1::ReplayStatus::Done => "done",
        v1::ReplayStatus::Failed => "failed",
        v1::ReplayStatus::Running | v1::ReplayStatus::Unspecified => "running",
    }
}

/// Every status a job can show.
pub const STATUSES: [v1::ReplayStatus; 3] = [
    v1::ReplayStatus::Running,
    v1::ReplayStatus::Done,
    v1::ReplayStatus::Failed,
];

/// The path of a job's status.
pub fn status_url(id: &str) -> String {
    format!("/v1/replays/{id}")
}

/// A new job for `subscription` reading `topics` from `since`.
pub(crate) async fn plan(
    state: &AppState,
    subscription: &Subscription,
    request: &crate::deliveries::ReplayRequest,
    topics: Vec<String>,
    failed_ids: Vec<String>,
) -> Result<v1::ReplayJob, ApiError> {
    let kafka = state.kafka.clone();
    let since_ms = millis(request.since);
    let ranges = tokio::task::spawn_blocking(move || {
        let mut ranges = Vec::new();
        for topic in topics {
            for (partition, next, end) in log::plan(&kafka, &topic, since_ms)? {
                ranges.push(v1::ReplayRange {
                    topic: topic.clone(),
                    partition,
                    next,
                    end,
                });
            }
        }
        Ok::<_, waybill_kafka::Error>(ranges)
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::warn!(error = %e, "replay plan failed");
        ApiError::unavailable("Kafka did not answer where the window starts; retry shortly")
    })?;
    let now = OffsetDateTime::now_utc();
    Ok(v1::ReplayJob {
        id: waybill_core::ids::new_replay_id(),
        tenant_id: subscription.tenant_id.clone(),
        subscription_id: subscription.id.clone(),
        since: Some(timestamp(request.since)),
        until: request.until.map(timestamp),
        only_failed: request.only_failed,
        status: v1::ReplayStatus::Running as i32,
        started_at: Some(timestamp(now)),
        owner: state.instance_id.clone(),
        ranges,
        revision: 0,
        failed_ids,
        ..Default::default()
    })
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Writes the job's next revision (its heartbeat) and answers whether it
/// counted: `false` means another process owns the job now.
pub(crate) async fn write(state: &AppState, job: &mut v1::ReplayJob) -> Result<bool, ApiError> {
    job.revision += 1;
    job.write_id = waybill_core::ids::new_write_id();
    job.heartbeat_at = Some(timestamp(OffsetDateTime::now_utc()));
    state
        .write_through(
            &state.replays,
            &state.topics.replays(),
            job.id.as_bytes(),
            Some(&job.encode_to_vec()),
        )
        .await?;
    Ok(state.replays.read().counted(&job.write_id) == Some(true))
}

/// Runs `job` to its end in this process (`resumed`: it ran elsewhere or
/// before a restart, and may have queued tasks past its last progress).
pub(crate) async fn run(state: Arc<AppState>, mut job: v1::ReplayJob, resumed: bool) {
    if !state
        .running_replays
        .lock()
        .expect("replays")
        .insert(job.id.clone())
    {
        return;
    }
    let id = job.id.clone();
    let outcome = drive(&state, &mut job, resumed).await;
    match outcome {
        Drive::Finished(error) => {
            job.status = if error.is_some() {
                v1::ReplayStatus::Failed
            } else {
                v1::ReplayStatus::Done
            } as i32;
            job.error = error.unwrap_or_default();
            job.finished_at = Some(timestamp(OffsetDateTime::now_utc()));
            match write(&state, &mut job).await {
                Ok(true) => tracing::info!(
                    replay_id = %id,
                    scanned = job.scanned,
                    queued = job.queued,
                    error = %job.error,
                    "replay finished"
                ),
                Ok(false) => {
                    tracing::warn!(replay_id = %id, "replay taken over before it finished")
                }
                // Another process resumes it from the last progress.
                Err(e) => {
                    tracing::warn!(replay_id = %id, error = e.message(), "replay end not written")
                }
            }
        }
        Drive::TakenOver => tracing::warn!(replay_id = %id, "replay taken over by another process"),
        Drive::Stopped => tracing::info!(replay_id = %id, "replay paused by shutdown"),
    }
    state.running_replays.lock().expect("replays").remove(&id);
}

enum Drive {
    /// Done (`None`) or failed (why).
    Finished(Option<String>),
    TakenOver,
    Stopped,
}

async fn drive(state: &Arc<AppState>, job: &mut v1::ReplayJob, resumed: bool) -> Drive {
    let mut skip = if resumed {
        match queued_before(state, job).await {
            Ok(skip) => skip,
            Err(e) => return Drive::Finished(Some(format!("cannot read what it queued: {e}"))),
        }
    } else {
        HashSet::new()
    };
    if resumed {
        tracing::info!(replay_id = %job.id, already_queued = skip.len(), "replay resumed");
    }
    let since_ms = job
        .since
        .as_ref()
        .and_then(|t| from_timestamp(Some(t), "since").ok())
        .map_or(0, millis);
    let until_ms = job
        .until
        .as_ref()
        .and_then(|t| from_timestamp(Some(t), "until").ok())
        .map(millis);
    let failed: Option<Arc<HashSet<String>>> = job
        .only_failed
        .then(|| Arc::new(job.failed_ids.iter().cloned().collect()));
    let mut failures = 0;
    for i in 0..job.ranges.len() {
        while job.ranges[i].next < job.ranges[i].end {
            if state.shutdown.is_cancelled() {
                return Drive::Stopped;
            }
            let Some(subscription) = state.subscriptions.read().get(&job.subscription_id) else {
                return Drive::Finished(Some("the subscription was deleted".into()));
            };
            let range = job.ranges[i].clone();
            let chunk_end = range.end.min(range.next + CHUNK);
            let read = read_chunk(
                state,
                &range,
                chunk_end,
                Window { since_ms, until_ms },
                subscription,
                failed.clone(),
            )
            .await;
            let (scanned, tasks) = match read {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(replay_id = %job.id, error = %e, failures, "replay read failed");
                    if failures >= MAX_FAILURES {
                        return Drive::Finished(Some(format!("reading {}: {e}", range.topic)));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Every matching task of the chunk counts once it is queued,
            // here or (before a take-over) by the previous owner.
            let matched = tasks.len() as u64;
            let tasks: Vec<v1::DeliveryTask> = tasks
                .into_iter()
                .filter(|t| !skip.contains(&t.delivery_id))
                .map(|mut t| {
                    t.replay_id = job.id.clone();
                    t
                })
                .collect();
            let results: Vec<(String, bool)> = futures::stream::iter(tasks)
                .map(|task| async move {
                    let ok = crate::deliveries::queue(state, &task, false).await.is_ok();
                    (task.delivery_id, ok)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            let mut all = true;
            for (delivery_id, ok) in results {
                if ok {
                    skip.insert(delivery_id);
                } else {
                    all = false;
                }
            }
            if !all {
                // The chunk again; what was queued of it is skipped.
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Drive::Finished(Some("Kafka did not accept the tasks".into()));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            failures = 0;
            job.scanned += scanned;
            job.queued += matched;
            job.ranges[i].next = chunk_end;
            match write(state, job).await {
                Ok(true) => {}
                Ok(false) => return Drive::TakenOver,
                Err(e) => {
                    // The progress is not known to be written: stop and
                    // let the lease hand the job to whoever resumes it.
                    tracing::warn!(replay_id = %job.id, error = e.message(), "replay progress not written");
                    return Drive::Stopped;
                }
            }
            // What is queued is recorded; the skip set only needs what
            // comes after.
            skip.clear();
        }
    }
    Drive::Finished(None)
}

/// Reads one chunk: the domain records of the window and the tasks for
/// those the subscription matches.
async fn read_chunk(
    state: &AppState,
    range: &v1::ReplayRange,
    chunk_end: i64,
    window: Window,
    subscription: Subscription,
    failed: Option<Arc<HashSet<String>>>,
) -> Result<(u64, Vec<v1::DeliveryTask>), waybill_kafka::Error> {
    let kafka = state.kafka.clone();
    let catalog = state.catalog.read().catalog().clone();
    let range = range.clone();
    tokio::task::spawn_blocking(move || {
        let mut scanned = 0;
        let mut tasks = Vec::new();
        log::scan_range(
            &kafka,
            &range.topic,
            range.partition,
            range.next,
            chunk_end,
            window.since_ms,
            |message| {
                let at = message.timestamp().to_millis().unwrap_or(0);
                if !window.contains(at) {
                    return;
                }
                scanned += 1;
                if let Some(task) = crate::deliveries::replay_task(
                    &subscription,
                    &catalog,
                    failed.as_deref(),
                    message,
                ) {
                    tasks.push(task);
                }
            },
        )?;
        Ok((scanned, tasks))
    })
    .await
    .map_err(|e| waybill_kafka::Error::Task(e.to_string()))?
}

/// The deliveries `job` queued since just before its last heartbeat.
async fn queued_before(
    state: &AppState,
    job: &v1::ReplayJob,
) -> Result<HashSet<String>, waybill_kafka::Error> {
    let since_ms = job
        .heartbeat_at
        .as_ref()
        .and_then(|t| from_timestamp(Some(t), "heartbeat_at").ok())
        .map_or(0, millis)
        - RESUME_MARGIN_MS;
    let kafka = state.kafka.clone();
    let topic = state.topics.deliveries();
    let id = job.id.clone();
    tokio::task::spawn_blocking(move || {
        let mut seen = HashSet::new();
        log::scan(
            &kafka,
            &topic,
            Window {
                since_ms,
                until_ms: None,
            },
            |message| {
                if let Some(task) = message
                    .payload()
                    .and_then(|p| v1::DeliveryTask::decode(p).ok())
                    && task.replay_id == id
                {
                    seen.insert(task.delivery_id);
                }
                true
            },
        )?;
        Ok(seen)
    })
    .await
    .map_err(|e| waybill_kafka::Error::Task(e.to_string()))?
}

/// Takes over, until `shutdown`, every running job nobody wrote progress
/// for within the lease (its process died), and resumes it here.
pub(crate) async fn supervise(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let abandoned = state
            .replays
            .read()
            .abandoned(OffsetDateTime::now_utc(), state.config.replay_lease);
        for mut job in abandoned {
            if state
                .running_replays
                .lock()
                .expect("replays")
                .contains(&job.id)
            {
                continue;
            }
            let previous = std::mem::replace(&mut job.owner, state.instance_id.clone());
            let heartbeat = job.heartbeat_at;
            match write(&state, &mut job).await {
                Ok(true) => {
                    tracing::info!(replay_id = %job.id, previous_owner = %previous, "replay taken over");
                    // Resume from what the last owner recorded.
                    job.heartbeat_at = heartbeat;
                    tokio::spawn(run(state.clone(), job, true));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(replay_id = %job.id, error = e.message(), "replay claim failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_has_exactly_its_documented_fields() {
        let v = view(&v1::ReplayJob::default());
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = VIEW_FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        assert_eq!(v["status"], "running");
    }

    #[test]
    fn a_write_counts_only_on_its_revision() {
        let mut jobs = Jobs::default();
        let job = |revision: u64, owner: &str| v1::ReplayJob {
            id: "rpl_1".into(),
            revision,
            owner: owner.into(),
            write_id: format!("w-{owner}-{revision}"),
            ..Default::default()
        };
        for (record, counts) in [
            (job(1, "a"), true),
            (job(2, "a"), true),
            // Two processes claim it on revision 2: the first one wins.
            (job(3, "b"), true),
            (job(3, "c"), false),
            (job(4, "b"), true),
        ] {
            jobs.apply(b"rpl_1", Some(&record.encode_to_vec())).unwrap();
            assert_eq!(jobs.counted(&record.write_id), Some(counts), "{record:?}");
        }
        assert_eq!(jobs.get("rpl_1").unwrap().owner, "b");
    }
}
