//! The matcher service.
//!
//! # Layout
//!
//! - [`config`]: the `[matcher]` section.
//! - [`dedup`]: event ids seen per partition (an event posted twice is matched once).
//! - [`projection`]: the subscription index, folded from `subscriptions`.
//! - [`tasks`]: the pure part — one event and the index in, the delivery
//!   tasks out.
//! - [`worker`]: one task per assigned domain-topic partition: decode,
//!   wait for the projection, match, publish tasks, store offsets.
//!
//! The matcher never matches against a half-loaded projection: it loads the
//! whole `subscriptions` topic before joining the consumer group, and for
//! every event waits until the projection holds every subscription written
//! before the event was produced.
#![forbid(unsafe_code)]

pub mod config;
pub mod dedup;
pub mod projection;
pub mod tasks;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_core::catalog::Catalog;
use waybill_core::sealing::Keyring;
use waybill_kafka::partitioned::{self, GroupOptions};
use waybill_kafka::table::Table;
use waybill_kafka::{KafkaConfig, Producer};
use waybill_runtime::admin;

pub use config::MatcherConfig;

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] waybill_kafka::Error),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Http(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// The `[matcher]` section.
    pub matcher: MatcherConfig,
    /// Keys opening secrets of subscription records.
    pub keys: Keyring,
    /// Known event types (records of unknown types are dead-lettered).
    pub catalog: Catalog,
    /// The process's metrics.
    pub metrics: waybill_runtime::metrics::Metrics,
}

/// Runs the matcher until `shutdown`; serves `/healthz` and `/readyz` on
/// `admin_listener`.
pub async fn run(
    settings: Settings,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut settings = settings;
    settings.kafka = settings.kafka.for_process("waybill-matcher");
    let topics = waybill_kafka::topics::prepare(&settings.kafka).await?;
    let (readiness, admin) =
        admin::spawn(admin_listener, settings.metrics.clone(), shutdown.clone());
    let subscriptions = Table::follow(
        &settings.kafka,
        &topics.subscriptions(),
        crate::projection::new(settings.keys.clone()),
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&subscriptions);
    tokio::spawn(waybill_runtime::metrics::sample_projection_age(
        settings.metrics.clone(),
        subscriptions.clone(),
        settings.matcher.backlog_sample_interval,
        readiness.clone(),
        shutdown.clone(),
    ));
    if !waybill_runtime::projection::wait_loaded(&subscriptions, &shutdown).await {
        return Ok(());
    }
    readiness.set(true);

    let catalog = waybill_runtime::catalog::follow(
        &settings.kafka,
        &topics,
        settings.catalog,
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&catalog);
    let producer = Producer::new(&settings.kafka, Duration::from_secs(30))?;
    let worker = Arc::new(worker::Worker {
        producer: producer.clone(),
        topics: topics.clone(),
        catalog,
        subscriptions,
        config: settings.matcher.clone(),
        metrics: settings.metrics.clone(),
        kafka: settings.kafka.clone(),
    });
    tokio::spawn(waybill_runtime::metrics::sample_backlog(
        settings.metrics.clone(),
        settings.kafka.clone(),
        waybill_runtime::metrics::Backlog {
            group: settings.kafka.group_id(&settings.matcher.group_id),
            topics: topics
                .domains()
                .into_iter()
                .map(|t| (t, std::time::Duration::ZERO))
                .collect(),
            dlq: None,
            every: settings.matcher.backlog_sample_interval,
        },
        shutdown.clone(),
    ));
    let task: partitioned::PartitionTask =
        Arc::new(move |assigned| worker.clone().run_partition(assigned).boxed());
    partitioned::run(
        &settings.kafka,
        GroupOptions {
            group_id: settings.kafka.group_id(&settings.matcher.group_id),
            commits: settings
                .metrics
                .watch_commits(&settings.kafka.group_id(&settings.matcher.group_id)),
            topics: topics.domains(),
            drain_timeout: settings.matcher.drain_timeout,
        },
        task,
        shutdown,
    )
    .await?;
    producer.flush(Duration::from_secs(5))?;
    admin.await.ok();
    tracing::info!("matcher stopped");
    Ok(())
}
