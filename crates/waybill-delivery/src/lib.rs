//! The delivery service.
//!
//! # Layout
//!
//! - [`config`]: the `[delivery]` section.
//! - [`oauth2`]: client-credentials tokens, cached and shared by every task.
//! - [`request`]: the pure part — the signed webhook request of one attempt.
//! - [`lanes`]: which deliveries of a partition may run now (one at a time
//!   per subscription and entity, a cap per subscription).
//! - [`limits`]: per-subscription rate limits.
//! - [`slots`]: the bound on the process's requests in flight
//!   (`max_in_flight_total`).
//! - [`sender`]: one HTTP attempt (auth, signing, `Retry-After`, excerpt),
//!   with name resolution that obeys the URL policy.
//! - [`takeover`]: what a partition's new owner reads before its first
//!   record: what its predecessor delivered after the last commit (not sent
//!   again), and whether the handed offset skips records with no recorded
//!   outcome (it goes back to them).
//! - [`worker`]: one task per assigned partition of `deliveries` and of the
//!   retry tiers: decode the task, wait until it is due, find its
//!   subscription in the projection, attempt, record the attempt on
//!   `delivery_attempts`, then retry through a tier topic, dead-letter,
//!   or disable on `410`. Offsets are stored only once the outcome is
//!   durable; nothing is dropped.
#![forbid(unsafe_code)]

pub mod config;
pub mod health;
pub mod kept;
pub mod lanes;
pub mod latency;
pub mod limits;
pub mod oauth2;
pub mod operational;
pub mod partition;
pub mod pause;
pub mod request;
pub mod sender;
pub mod slots;
pub mod strict;
pub mod takeover;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_core::catalog::Catalog;
use waybill_core::sealing::Keyring;
use waybill_core::url_policy::UrlPolicy;
use waybill_kafka::partitioned::{self, GroupOptions};
use waybill_kafka::{KafkaConfig, Producer};
use waybill_runtime::admin;
use waybill_runtime::projection;

pub use config::DeliveryConfig;

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] waybill_kafka::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
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
    /// The `[delivery]` section.
    pub delivery: DeliveryConfig,
    /// Keys opening secrets of subscription records.
    pub keys: Keyring,
    /// Callback URL rules, checked again at send time.
    pub url_policy: UrlPolicy,
    /// Known event types.
    pub catalog: Catalog,
    /// The process's metrics.
    pub metrics: waybill_runtime::metrics::Metrics,
}

/// Runs the delivery workers until `shutdown`; serves `/healthz` and
/// `/readyz` on `admin_listener`.
pub async fn run(
    settings: Settings,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut settings = settings;
    settings.kafka = settings.kafka.for_process("waybill-delivery");
    let topics = waybill_kafka::topics::prepare(&settings.kafka).await?;
    let (readiness, admin) =
        admin::spawn(admin_listener, settings.metrics.clone(), shutdown.clone());
    let subscriptions = projection::follow(
        &settings.kafka,
        &topics,
        projection::Log::new(
            settings.keys.clone(),
            projection::SealedSubscriptions::new(settings.keys.clone()),
        ),
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&subscriptions);
    tokio::spawn(waybill_runtime::metrics::sample_projection_age(
        settings.metrics.clone(),
        subscriptions.clone(),
        settings.delivery.backlog_sample_interval,
        readiness.clone(),
        shutdown.clone(),
    ));
    if !projection::wait_loaded(&subscriptions, &shutdown).await {
        return Ok(());
    }
    readiness.set(true);

    let sender = sender::Sender::new(&settings.delivery, settings.url_policy)?;
    let producer = Producer::new(&settings.kafka, Duration::from_secs(30))?;
    let catalog = waybill_runtime::catalog::follow(
        &settings.kafka,
        &topics,
        settings.catalog,
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&catalog);
    let holds = waybill_kafka::table::Table::follow(
        &settings.kafka,
        &topics.delivery_lanes(),
        strict::Holds::default(),
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&holds);
    if let Err(e) = holds
        .wait_fresh(std::time::SystemTime::now(), Duration::from_secs(60))
        .await
    {
        tracing::warn!(error = %e, "lane holds not loaded yet; going on");
    }
    let worker = Arc::new(worker::Worker {
        holds,
        sender,
        producer: producer.clone(),
        topics: topics.clone(),
        catalog,
        subscriptions,
        keys: settings.keys,
        config: settings.delivery.clone(),
        limits: limits::RateLimits::default(),
        slots: slots::RequestSlots::new(
            settings.delivery.max_in_flight_total,
            settings.metrics.get().requests_in_flight.clone(),
        ),
        health: health::HealthLocks::new(100_000),
        succeeded: worker::succeeded_cache(),
        kafka: settings.kafka.clone(),
        metrics: settings.metrics.clone(),
    });
    // `deliveries` and the retry tiers are consumed in two groups, so each
    // is balanced on its own across the processes.
    let deliveries_group = settings.kafka.group_id(&settings.delivery.group_id);
    let retries_group = settings
        .kafka
        .group_id(&settings.delivery.retries_group_id());
    let tiers = topics.retries();
    // A deployment from before the split read the tiers in the deliveries
    // group: the new group starts where that one stopped (once; a group
    // with offsets of its own keeps them).
    if let Err(e) =
        partitioned::adopt_offsets(&settings.kafka, &deliveries_group, &retries_group, &tiers).await
    {
        tracing::warn!(error = %e, group = %retries_group, "cannot adopt the retry tiers' offsets of the deliveries group; another process may have");
    }
    let sampled = [
        (
            deliveries_group.clone(),
            vec![topics.deliveries()],
            Some(topics.deliveries_dlq()),
        ),
        (retries_group.clone(), tiers.clone(), None),
    ];
    for (group, consumed, dlq) in sampled {
        tokio::spawn(waybill_runtime::metrics::sample_backlog(
            settings.metrics.clone(),
            settings.kafka.clone(),
            waybill_runtime::metrics::Backlog {
                group,
                topics: consumed
                    .iter()
                    .map(|t| (t.clone(), topics.tier_of(t).unwrap_or_default()))
                    .collect(),
                dlq,
                every: settings.delivery.backlog_sample_interval,
            },
            shutdown.clone(),
        ));
    }
    tokio::spawn(kept::sample(
        worker.clone(),
        settings.delivery.backlog_sample_interval,
        shutdown.clone(),
    ));
    let task: partitioned::PartitionTask =
        Arc::new(move |assigned| worker.clone().run_partition(assigned).boxed());
    let group = |group_id: String, topics: Vec<String>| GroupOptions {
        commits: settings.metrics.watch_commits(&group_id),
        group_id,
        topics,
        drain_timeout: settings.delivery.drain_timeout,
    };
    tokio::try_join!(
        partitioned::run(
            &settings.kafka,
            group(deliveries_group, vec![topics.deliveries()]),
            task.clone(),
            shutdown.clone(),
        ),
        partitioned::run(&settings.kafka, group(retries_group, tiers), task, shutdown,),
    )?;
    producer.flush(Duration::from_secs(5))?;
    admin.await.ok();
    tracing::info!("delivery stopped");
    Ok(())
}
