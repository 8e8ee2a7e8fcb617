//! The ingest service: Waybill's HTTP API.
//!
//! # Layout
//!
//! - [`config`]: the `[ingest]` section (listen address, API keys, limits).
//! - [`error`]: the one error type of the HTTP boundary, rendered as
//!   `{"error": {"code", "message", "field", "details"}}`.
//! - [`auth`]: API keys (`Authorization: Bearer` or `X-Api-Key`) → tenant.
//! - [`body`]: JSON request bodies: content type, size limit.
//! - [`subscriptions`]: `/v1/subscriptions` — publishes full subscription
//!   state to the compacted topic and answers from this service's own
//!   projection, after it applied the write (read-your-writes).
//! - [`tenants`]: `/v1/tenants` — tenants and API keys (operator token),
//!   event-sourced on the compacted `tenants` topic.
//! - [`idempotency`]: `Idempotency-Key` answers remembered for 24 h.
//! - [`reseal`]: `waybill reseal`, every subscription written again under
//!   the current sealing key (key rotation).
//! - [`quotas`]: per-tenant quotas (calls per second, Idempotency-Keys,
//!   running replays) answered with `429 rate_limited`.
//! - [`events`]: `/v1/events` — validates and publishes `DomainEvent`s,
//!   keyed by entity id.
//! - [`history`]: the delivery history, folded from `delivery_attempts`.
//! - [`deliveries`]: `/v1/deliveries` and a subscription's deliveries —
//!   history, retry of one delivery, replay from the domain topics' log.
//! - [`openapi`]: the operation table the router is built from, and the
//!   OpenAPI document served at `/v1/openapi.json`.
//!
//! The service keeps no state of its own: everything it serves is folded
//! from Kafka, so any number of instances can run side by side.
#![forbid(unsafe_code)]
// The OpenAPI schemas are written as large `json!` literals.
#![recursion_limit = "256"]

pub mod auth;
pub mod body;
pub mod config;
pub mod deliveries;
pub mod dialects;
pub mod error;
pub mod events;
pub mod history;
pub mod idempotency;
pub mod openapi;
pub mod portal;
pub mod quotas;
pub mod replays;
pub mod reseal;
pub mod revisions;
pub mod subscriptions;
pub mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use openapi::Op;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_core::catalog::Catalog;
use waybill_core::sealing::Keyring;
use waybill_core::url_policy::UrlPolicy;
use waybill_kafka::table::Table;
use waybill_kafka::{KafkaConfig, Producer, Topics};
use waybill_runtime::admin::{self, Readiness};
use waybill_runtime::projection::{self, AllSubscriptions};

pub use config::IngestConfig;

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] waybill_kafka::Error),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// The `[ingest]` section.
    pub ingest: IngestConfig,
    /// Keys sealing secrets on topics.
    pub keys: Keyring,
    /// Callback URL rules.
    pub url_policy: UrlPolicy,
    /// Known event types.
    pub catalog: Catalog,
    /// The process's metrics.
    pub metrics: waybill_runtime::metrics::Metrics,
}

/// State shared by the request handlers.
pub(crate) struct AppState {
    pub producer: Producer,
    pub topics: Topics,
    pub catalog: Table<waybill_runtime::catalog::Catalogue>,
    pub keys: Keyring,
    pub url_policy: UrlPolicy,
    /// Resolves callback hosts for the URL policy.
    pub dns: waybill_runtime::dns::Dns,
    pub api_keys: auth::ApiKeys,
    pub subscriptions: Table<AllSubscriptions>,
    pub tenants: Table<tenants::Tenants>,
    pub history: Table<history::History>,
    pub kafka: KafkaConfig,
    pub metrics: waybill_runtime::metrics::Metrics,
    pub operator_token: Option<[u8; 32]>,
    pub idempotency: idempotency::Store,
    /// Per-tenant quotas.
    pub quotas: quotas::Quotas,
    /// Client event ids seen within the dedup window → the first answer.
    pub event_ids: events::SeenIds,
    pub write_locks: Vec<tokio::sync::Mutex<()>>,
    pub config: IngestConfig,
    /// Answers under an `Idempotency-Key`, shared by every replica.
    pub answers: Table<idempotency::Answers>,
    /// Replay jobs (the `replays` topic).
    pub replays: Table<replays::Jobs>,
    /// The jobs this process runs now.
    pub running_replays: std::sync::Mutex<std::collections::HashSet<String>>,
    /// This process, as the owner of the replays it runs.
    pub instance_id: String,
    /// The service's shutdown (long-running jobs stop at it).
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Publishes one record; a refusal by Kafka is a `503` the client may retry.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        record: Option<&[u8]>,
    ) -> Result<waybill_kafka::producer::Acked, error::ApiError> {
        // The record continues the trace of the request that wrote it.
        let trace = waybill_runtime::telemetry::propagate(&tracing::Span::current(), None);
        self.producer
            .send(
                topic,
                key,
                record,
                waybill_kafka::headers::standard(waybill_proto::SCHEMA_VERSION, Some(&trace)),
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, topic, "cannot publish");
                error::ApiError::unavailable("Kafka did not accept the write; retry shortly")
            })
    }

    /// Publishes one record of a compacted topic this service follows into
    /// `table`, and returns once `table` applied it (read-your-writes; a
    /// bounded wait, then `503`).
    pub async fn write_through<S: waybill_kafka::table::Fold>(
        &self,
        table: &Table<S>,
        topic: &str,
        key: &[u8],
        record: Option<&[u8]>,
    ) -> Result<(), error::ApiError> {
        let acked = self.send(topic, key, record).await?;
        table
            .wait_applied(acked.partition, acked.offset, self.config.write_timeout)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, topic, "write accepted by Kafka but not yet visible");
                error::ApiError::unavailable(
                    "the change was written but is not visible yet (Kafka is lagging); GET it again shortly",
                )
            })
    }

    /// Waits until `table` holds every record other replicas wrote before
    /// now; `what` names it in the `503` when Kafka lags.
    pub async fn wait_current<S: waybill_kafka::table::Fold>(
        &self,
        table: &Table<S>,
        what: &str,
    ) -> Result<(), error::ApiError> {
        table
            .wait_fresh(std::time::SystemTime::now(), self.config.write_timeout)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, table = what, "table lagging");
                error::ApiError::unavailable(format!(
                    "the {what} are not up to date (Kafka is lagging); retry shortly"
                ))
            })
    }

    /// Serialises read-modify-write changes of one object within this
    /// instance (striped by id), so concurrent updates do not lose each other.
    pub async fn write_lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = id.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.write_locks[stripe % self.write_locks.len()]
            .lock()
            .await
    }
}

/// Runs the ingest API on `listener` until `shutdown` is cancelled.
/// How often the projection's age is sampled.
const PROJECTION_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut settings = settings;
    settings.kafka = settings.kafka.for_process("waybill-ingest");
    let topics = waybill_kafka::topics::prepare(&settings.kafka).await?;
    let producer = Producer::new(&settings.kafka, Duration::from_secs(5))?;
    let subscriptions = projection::follow(
        &settings.kafka,
        &topics,
        projection::Log::writer(
            settings.keys.clone(),
            projection::SealedSubscriptions::with_tenant_index(settings.keys.clone()),
        ),
        shutdown.clone(),
    )
    .await?;
    let tenants = Table::follow(
        &settings.kafka,
        &topics.tenants(),
        tenants::Tenants::default(),
        shutdown.clone(),
    )
    .await?;
    let catalog = waybill_runtime::catalog::follow(
        &settings.kafka,
        &topics,
        settings.catalog,
        shutdown.clone(),
    )
    .await?;
    let history = Table::follow(
        &settings.kafka,
        &topics.delivery_attempts(),
        history::History::new(
            settings.ingest.history_per_subscription,
            settings.ingest.history_retention,
        ),
        shutdown.clone(),
    )
    .await?;
    let answers = Table::follow(
        &settings.kafka,
        &topics.idempotency(),
        idempotency::Answers::default(),
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&answers);
    let replays = Table::follow(
        &settings.kafka,
        &topics.replays(),
        replays::Jobs::default(),
        shutdown.clone(),
    )
    .await?;
    settings.metrics.watch_skipped(&subscriptions);
    settings.metrics.watch_skipped(&replays);
    settings.metrics.watch_skipped(&tenants);
    settings.metrics.watch_skipped(&catalog);
    settings.metrics.watch_skipped(&history);
    let readiness = Readiness::default();
    tokio::spawn(waybill_runtime::metrics::sample_projection_age(
        settings.metrics.clone(),
        subscriptions.clone(),
        PROJECTION_SAMPLE_INTERVAL,
        readiness.clone(),
        shutdown.clone(),
    ));
    let settings_metrics = settings.metrics.clone();
    let state = Arc::new(AppState {
        producer: producer.clone(),
        topics,
        catalog,
        keys: settings.keys,
        url_policy: settings.url_policy,
        dns: waybill_runtime::dns::Dns::system(),
        api_keys: auth::ApiKeys::new(&settings.ingest.api_keys),
        subscriptions: subscriptions.clone(),
        tenants: tenants.clone(),
        history,
        kafka: settings.kafka.clone(),
        metrics: settings.metrics.clone(),
        operator_token: settings
            .ingest
            .operator_token
            .as_ref()
            .map(|t| auth::digest(t.expose())),
        idempotency: idempotency::Store::new(
            settings.ingest.idempotency_window,
            settings.ingest.idempotency_capacity,
        ),
        quotas: quotas::Quotas::new(settings.ingest.quotas.clone(), settings.metrics.clone()),
        event_ids: events::seen_ids(
            settings.ingest.event_dedup_window,
            settings.ingest.event_dedup_capacity,
        ),
        write_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        config: settings.ingest,
        replays: replays.clone(),
        answers,
        running_replays: Default::default(),
        instance_id: format!(
            "ingest-{}-{}",
            std::process::id(),
            &waybill_core::ids::new_write_id()[2..10]
        ),
        shutdown: shutdown.clone(),
    });

    // Ready once the projection holds everything written before start-up.
    let ready = readiness.clone();
    let loading = shutdown.clone();
    let repairing = state.clone();
    tokio::spawn(async move {
        let started = std::time::SystemTime::now();
        if projection::wait_loaded(&subscriptions, &loading).await
            && tenants
                .wait_fresh(started, Duration::from_secs(300))
                .await
                .is_ok()
        {
            ready.set(true);
            // Replays whose process died are resumed here once the jobs
            // are loaded.
            if replays
                .wait_fresh(started, Duration::from_secs(300))
                .await
                .is_ok()
            {
                tokio::spawn(replays::supervise(repairing.clone(), loading.clone()));
            }
            // Keys whose last record does not count are repaired once the
            // projection holds the winners (see `revisions`).
            revisions::repair_loop(repairing, loading).await;
        }
    });

    // `/metrics`, `/healthz` and `/readyz` are on their own listener, so
    // that only the API (`/v1`) is exposed where tenants reach it.
    tracing::info!(addr = %admin_listener.local_addr()?, "ingest admin listening");
    let admin_server = tokio::spawn(admin::serve(
        admin_listener,
        admin::router(readiness, settings_metrics),
        shutdown.clone(),
    ));
    tracing::info!(addr = %listener.local_addr()?, "ingest API listening");
    admin::serve(listener, router(state), shutdown).await?;
    if let Ok(Err(e)) = admin_server.await {
        tracing::warn!(error = %e, "ingest admin server failed");
    }
    producer.flush(Duration::from_secs(5))?;
    tracing::info!("ingest stopped");
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for op in Op::ALL {
        let spec = op.spec();
        let method = match spec.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => unreachable!("operation {} has method {other}", spec.id),
        };
        router = router.route(spec.path, handler(op, method));
    }
    for dialect in &state.config.dialects {
        if dialect == dialects::route_planner::NAME {
            router = router.merge(dialects::route_planner::routes());
        } else if dialect == dialects::logistics_2023_07::NAME {
            router = router.merge(dialects::logistics_2023_07::routes());
        } else if dialect == dialects::spotgo::NAME {
            router = router.merge(dialects::spotgo::routes());
        } else if dialect == dialects::spotnana::NAME {
            router = router.merge(dialects::spotnana::routes());
        }
    }
    router
        .route("/portal", axum::routing::get(portal::page))
        .route("/portal/app.js", axum::routing::get(portal::script))
        .route("/portal/app.css", axum::routing::get(portal::style))
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_request,
        ))
        .with_state(state)
}

/// Counts every answer by route template (bounded) and status, and times
/// it (to the answer's head; a streamed body is not waited for).
async fn count_request(
    axum::extract::State(metrics): axum::extract::State<waybill_runtime::metrics::Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let path = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let route = match &path {
        Some(path) => format!("{} {path}", request.method()),
        None => "unmatched".to_owned(),
    };
    // API calls are traced (continuing the caller's `traceparent`), probes
    // and unknown paths are not.
    let response = match path.as_deref() {
        Some(path) if path.starts_with("/v1/") => {
            // An HTTP server span by the semantic conventions.
            let span = tracing::info_span!(
                "ingest.request",
                otel.name = %route,
                otel.kind = "server",
                http.request.method = %request.method(),
                http.route = path,
                url.path = request.uri().path(),
                url.scheme = request.uri().scheme_str().unwrap_or("http"),
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let parent = trace_parent(request.headers());
            waybill_runtime::telemetry::adopt(&span, parent.as_ref());
            let response = next.run(request).instrument(span.clone()).await;
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("error.type", status.as_str());
                span.record("otel.status_code", "error");
            }
            let trace = waybill_runtime::telemetry::propagate(&span, parent.as_ref());
            error::with_trace(response, &trace).await
        }
        _ => next.run(request).await,
    };
    metrics
        .get()
        .http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The handler of each operation of the document.
fn handler(op: Op, method: MethodFilter) -> MethodRouter<Arc<AppState>> {
    match op {
        Op::CreateEvent => on(method, events::create),
        Op::CreateEvents => on(method, events::create_batch),
        Op::ListEventTypes => on(method, events::list_types),
        Op::AddEventType => on(method, events::add_type),
        Op::DeleteEventType => on(method, events::delete_type),
        Op::GetCallbackSecret => on(method, subscriptions::callbacks_secret),
        Op::CreateSubscription => on(method, subscriptions::create),
        Op::ListSubscriptions => on(method, subscriptions::list),
        Op::GetSubscription => on(method, subscriptions::get),
        Op::UpdateSubscription => on(method, subscriptions::patch),
        Op::ReplaceSubscription => on(method, subscriptions::replace),
        Op::DeleteSubscription => on(method, subscriptions::delete),
        Op::ResetSubscription => on(method, subscriptions::reset),
        Op::PauseSubscription => on(method, subscriptions::pause),
        Op::ResumeSubscription => on(method, subscriptions::resume),
        Op::TestSubscription => on(method, subscriptions::test),
        Op::GetSigningSecret => on(method, subscriptions::secret),
        Op::RotateSigningSecret => on(method, subscriptions::rotate_secret),
        Op::ListDeliveries => on(method, deliveries::list),
        Op::GetReplay => on(method, deliveries::get_replay),
        Op::SearchDeliveries => on(method, deliveries::search),
        Op::GetDelivery => on(method, deliveries::get),
        Op::RetryDelivery => on(method, deliveries::retry),
        Op::ReplaySubscription => on(method, deliveries::replay),
        Op::CreatePortalSession => on(method, portal::create_session),
        Op::CreateTenant => on(method, tenants::create),
        Op::ListTenants => on(method, tenants::list),
        Op::GetTenant => on(method, tenants::get),
        Op::CreateApiKey => on(method, tenants::create_key),
        Op::DeleteApiKey => on(method, tenants::delete_key),
        // The document lists the event names of the catalog as it is now.
        Op::OpenApi => on(
            method,
            |axum::extract::State(state): axum::extract::State<Arc<AppState>>| async move {
                Json(openapi::with_dialects(
                    openapi::document(state.catalog.read().catalog()),
                    &state.config.dialects,
                ))
            },
        ),
    }
}

/// The caller's W3C trace context (`traceparent` with its `tracestate`).
fn trace_parent(headers: &axum::http::HeaderMap) -> Option<waybill_core::trace::TraceParent> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parent = waybill_core::trace::TraceParent::parse(header("traceparent")?)?;
    Some(parent.with_state(header("tracestate")))
}
