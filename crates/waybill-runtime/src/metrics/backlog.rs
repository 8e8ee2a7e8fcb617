//! The samplers: the consumer groups' backlog and the projection's age,
//! read from Kafka every interval and kept in gauges.

use std::time::Duration;

use super::{Families, Metrics, PartitionLabels, TopicLabels};

/// What a service's backlog sampler reads.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// The consumer group whose committed offsets count.
    pub group: String,
    /// The consumed topics, each with its fixed delay (a retry tier's; zero
    /// for topics whose records are due at once).
    pub topics: Vec<(String, Duration)>,
    /// The dead-letter topic whose size is reported, if any.
    pub dlq: Option<String>,
    /// How often.
    pub every: Duration,
}

/// Samples `backlog` every `backlog.every`, until `shutdown`.
pub async fn sample_backlog(
    metrics: Metrics,
    kafka: waybill_kafka::KafkaConfig,
    backlog: Backlog,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let names: Vec<String> = backlog.topics.iter().map(|(t, _)| t.clone()).collect();
    loop {
        let (kafka_c, group_c, topics_c, dlq_c) = (
            kafka.clone(),
            backlog.group.clone(),
            names.clone(),
            backlog.dlq.clone(),
        );
        let sampled = tokio::task::spawn_blocking(move || {
            let lags = waybill_kafka::lag::group_lag(&kafka_c, &group_c, &topics_c)?;
            let dlq = dlq_c
                .map(|t| waybill_kafka::lag::topic_size(&kafka_c, &t))
                .transpose()?;
            Ok::<_, waybill_kafka::Error>((lags, dlq))
        })
        .await;
        match sampled {
            Ok(Ok((lags, dlq))) => metrics.get().record_backlog(&lags, dlq, &backlog.topics),
            Ok(Err(e)) => tracing::debug!(error = %e, "backlog not sampled"),
            Err(e) => tracing::debug!(error = %e, "backlog sampler failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backlog.every) => {}
        }
    }
}

/// Every `every`, asks `table` to catch up with its topic and reports how
/// old its knowledge is (`waybill_projection_age_seconds`), until
/// `shutdown`. A projection older than [`stale_after`]`(every)` makes the
/// service not ready until it is current again.
pub async fn sample_projection_age<S: waybill_kafka::table::Fold>(
    metrics: Metrics,
    table: waybill_kafka::table::Table<S>,
    every: Duration,
    readiness: crate::admin::Readiness,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let stale = stale_after(every);
    loop {
        // Bounded by the interval: a lagging projection shows as a growing age.
        let _ = table.wait_fresh(std::time::SystemTime::now(), every).await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = now_ms.saturating_sub(table.fresh_as_of_ms()) as f64 / 1000.0;
        metrics.get().projection_age.set(age);
        // Before the first load completes, readiness waits for the load.
        if table.fresh_as_of_ms() > 0 {
            readiness.set_current(age <= stale.as_secs_f64());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How old the subscription projection may be before the service stops
/// being ready: three sampling intervals, at least 10 s.
pub fn stale_after(every: Duration) -> Duration {
    (every * 3).max(Duration::from_secs(10))
}

impl Families {
    /// Sets the backlog gauges from one sample.
    pub fn record_backlog(
        &self,
        lags: &[waybill_kafka::lag::PartitionLag],
        dlq: Option<i64>,
        delays: &[(String, Duration)],
    ) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut oldest: std::collections::BTreeMap<&str, f64> = Default::default();
        for lag in lags {
            self.consumer_lag
                .get_or_create(&PartitionLabels {
                    topic: lag.topic.clone(),
                    partition: lag.partition,
                })
                .set(lag.lag);
            let age = lag
                .oldest_ms
                .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
            let entry = oldest.entry(&lag.topic).or_default();
            *entry = entry.max(age);
        }
        for (topic, age) in oldest {
            let delay = delays
                .iter()
                .find(|(t, _)| t == topic)
                .map_or(0.0, |(_, d)| d.as_secs_f64());
            let labels = TopicLabels {
                topic: topic.to_owned(),
            };
            self.backlog_age.get_or_create(&labels).set(age);
            self.backlog_overdue
                .get_or_create(&labels)
                .set((age - delay).max(0.0));
        }
        if let Some(size) = dlq {
            self.dlq_records.set(size);
        }
    }
}
