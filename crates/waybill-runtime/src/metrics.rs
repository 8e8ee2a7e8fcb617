//! Prometheus metrics of a process, served at `/metrics` (text format).
//!
//! One [`Metrics`] per process: `waybill dev` shares it between its three
//! services. Labels are bounded: routes are templates, topics and tiers
//! come from configuration, outcomes and status classes are fixed sets;
//! never a URL, subscription id or tenant id. Names and units are listed
//! in `docs/metrics.md`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `route` (method and path template) and `status` of an API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// e.g. `POST /v1/subscriptions/{id}/test`.
    pub route: String,
    /// e.g. `202`.
    pub status: u16,
}

/// The topic a record went to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Full topic name (from configuration: bounded).
    pub topic: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `succeeded`, `retried`, `dead`, `disabled` (410) or `skipped`.
    pub outcome: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx` or `none` (no response).
    pub status_class: &'static str,
}

/// One partition of a topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic (from configuration: bounded).
    pub topic: String,
    /// Partition number (bounded by the partition count).
    pub partition: i32,
}

/// A consumer group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Group id (from configuration: bounded).
    pub group: String,
}

/// One partition a consumer group commits.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    /// Group id (from configuration: bounded).
    pub group: String,
    /// Topic (from configuration: bounded).
    pub topic: String,
    /// Partition number (bounded by the partition count).
    pub partition: i32,
}

/// A subscription health change.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// The new status: `failing`, `active` or `disabled`.
    pub status: &'static str,
}

/// A tenant quota (`requests`, `idempotency_keys`, `replays`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Which quota refused.
    pub quota: &'static str,
}

/// Why deliveries were parked on `deliveries.parked`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `strict` (behind a strict lane's blocker) or `paused`.
    pub reason: &'static str,
}

mod backlog;
mod kafka_stats;

pub use backlog::{Backlog, sample_backlog, sample_projection_age, stale_after};
pub use kafka_stats::{ClientBrokerLabels, ClientLabels, ClientPartitionLabels};

/// `route` and `status_class` of an API request's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClassLabels {
    /// e.g. `POST /v1/events`.
    pub route: String,
    /// `2xx` .. `5xx`.
    pub status_class: &'static str,
}

/// What is running.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version, e.g. `0.1.0`.
    pub version: &'static str,
}

/// An event domain (the first segment of its name: bounded by the catalog).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    /// e.g. `freights`.
    pub domain: String,
}

/// One of the top tenants (or `other`) and an attempt's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// A tenant id among the [`TOP_TENANTS`] busiest, or `other`.
    pub tenant: String,
    /// As in `waybill_deliveries_total`.
    pub outcome: &'static str,
}

/// How many tenants get a label of their own in
/// `waybill_tenant_deliveries_total`; the rest count as `other`.
pub const TOP_TENANTS: usize = 20;

/// A histogram family (each series made by a function).
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every metric of the process.
pub struct Families {
    /// `waybill_http_requests_total{route, status}`.
    pub http_requests: Family<RequestLabels, Counter>,
    /// `waybill_http_request_duration_seconds{route, status_class}`.
    pub http_duration: Histograms<RouteClassLabels>,
    /// `waybill_build_info{version}`: 1.
    pub build_info: Family<BuildLabels, Gauge>,
    /// `waybill_end_to_end_latency_seconds{domain}`.
    pub end_to_end: Histograms<DomainLabels>,
    /// `waybill_tenant_deliveries_total{tenant, outcome}`.
    pub tenant_deliveries: Family<TenantLabels, Counter>,
    top_tenants: std::sync::Mutex<waybill_core::top::TopN>,
    /// `waybill_kafka_broker_rtt_seconds{client, broker}`.
    pub kafka_broker_rtt: Family<ClientBrokerLabels, F64Gauge>,
    /// `waybill_kafka_broker_requests_in_flight{client, broker}`.
    pub kafka_broker_in_flight: Family<ClientBrokerLabels, Gauge>,
    /// `waybill_kafka_client_queue_messages{client}`.
    pub kafka_queue_messages: Family<ClientLabels, Gauge>,
    /// `waybill_kafka_client_queue_bytes{client}`.
    pub kafka_queue_bytes: Family<ClientLabels, Gauge>,
    /// `waybill_kafka_client_partition_lag_records{client, topic, partition}`.
    pub kafka_partition_lag: Family<ClientPartitionLabels, Gauge>,
    /// `waybill_events_published_total{topic}`.
    pub events_published: Family<TopicLabels, Counter>,
    /// `waybill_matcher_events_total`.
    pub matcher_events: Counter,
    /// `waybill_matcher_duplicate_events_total`.
    pub matcher_duplicates: Counter,
    /// `waybill_matcher_matches_per_event`.
    pub matches_per_event: Histogram,
    /// `waybill_deliveries_total{outcome, status_class}`.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// `waybill_delivery_attempt_duration_seconds`.
    pub attempt_duration: Histogram,
    /// `waybill_retries_scheduled_total{topic}`.
    pub retries_scheduled: Family<TopicLabels, Counter>,
    /// `waybill_rate_limit_waits_total`.
    pub rate_limit_waits: Counter,
    /// `waybill_rate_limit_wait_seconds_total`.
    pub rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `waybill_delivery_requests_in_flight`: webhook requests of the
    /// process in flight (bounded by `delivery.max_in_flight_total`).
    pub requests_in_flight: Gauge,
    /// `waybill_request_slot_waits_total`: attempts that waited for a slot
    /// under `delivery.max_in_flight_total`.
    pub request_slot_waits: Counter,
    /// `waybill_request_slot_wait_seconds_total`.
    pub request_slot_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `waybill_subscription_health_changes_total{status}`.
    pub health_changes: Family<HealthLabels, Counter>,
    /// `waybill_takeover_skipped_total`.
    pub takeover_skipped: Counter,
    /// `waybill_duplicate_tasks_skipped_total`.
    pub duplicate_tasks_skipped: Counter,
    /// `waybill_deliveries_parked_total{reason}`.
    pub deliveries_parked: Family<ReasonLabels, Counter>,
    /// `waybill_deliveries_kept`: deliveries on `deliveries.parked` not
    /// released yet, at most.
    pub deliveries_kept: Gauge,
    /// `waybill_dead_letters_total{topic}`: poison records set aside.
    pub poison_records: Family<TopicLabels, Counter>,
    /// `waybill_projection_subscriptions`.
    pub projection_subscriptions: Gauge,
    /// `waybill_consumer_lag_records{topic, partition}`.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// `waybill_backlog_oldest_age_seconds{topic}`.
    pub backlog_age: Family<TopicLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `waybill_backlog_overdue_seconds{topic}`.
    pub backlog_overdue: Family<TopicLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `waybill_projection_age_seconds`.
    pub projection_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `waybill_dlq_records`.
    pub dlq_records: Gauge,
    /// `waybill_state_records_skipped_total{topic}`.
    pub state_records_skipped: Family<TopicLabels, Counter>,
    /// `waybill_kafka_commit_failures_total{group}`.
    pub commit_failures: Family<GroupLabels, Counter>,
    /// `waybill_kafka_committed_offset{group, topic, partition}`.
    pub committed_offset: Family<GroupPartitionLabels, Gauge>,
    /// `waybill_takeover_rewinds_total{topic}`.
    pub takeover_rewinds: Family<TopicLabels, Counter>,
    /// `waybill_quota_refusals_total{quota}`.
    pub quota_refusals: Family<QuotaLabels, Counter>,
}

struct Inner {
    registry: Registry,
    families: Families,
    /// Counters kept elsewhere (a table's skipped records), by topic, with
    /// the value last exported.
    sources: std::sync::Mutex<Vec<(String, Arc<std::sync::atomic::AtomicU64>, u64)>>,
    /// Commit results of the process's group members, by group, with the
    /// failure count last exported.
    commits: std::sync::Mutex<Vec<(String, Arc<waybill_kafka::partitioned::CommitStats>, u64)>>,
}

/// The metrics of one process; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("waybill");
        let families = Families {
            http_requests: Family::default(),
            // 1 ms .. 16 s.
            http_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            build_info: Family::default(),
            // 5 ms .. 2.9 h: a first attempt, and retries hours later.
            end_to_end: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 22))
            }),
            tenant_deliveries: Family::default(),
            top_tenants: std::sync::Mutex::new(waybill_core::top::TopN::new(TOP_TENANTS)),
            kafka_broker_rtt: Family::default(),
            kafka_broker_in_flight: Family::default(),
            kafka_queue_messages: Family::default(),
            kafka_queue_bytes: Family::default(),
            kafka_partition_lag: Family::default(),
            events_published: Family::default(),
            matcher_events: Counter::default(),
            matcher_duplicates: Counter::default(),
            matches_per_event: Histogram::new([0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 1000.0]),
            deliveries: Family::default(),
            attempt_duration: Histogram::new(exponential_buckets(0.002, 2.0, 14)),
            retries_scheduled: Family::default(),
            rate_limit_waits: Counter::default(),
            rate_limit_wait_seconds: Counter::default(),
            requests_in_flight: Gauge::default(),
            request_slot_waits: Counter::default(),
            request_slot_wait_seconds: Counter::default(),
            health_changes: Family::default(),
            takeover_skipped: Counter::default(),
            duplicate_tasks_skipped: Counter::default(),
            deliveries_parked: Family::default(),
            deliveries_kept: Gauge::default(),
            poison_records: Family::default(),
            projection_subscriptions: Gauge::default(),
            consumer_lag: Family::default(),
            backlog_age: Family::default(),
            backlog_overdue: Family::default(),
            projection_age: Gauge::default(),
            dlq_records: Gauge::default(),
            state_records_skipped: Family::default(),
            commit_failures: Family::default(),
            committed_offset: Family::default(),
            takeover_rewinds: Family::default(),
            quota_refusals: Family::default(),
        };
        let f = &families;
        f.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version of the running binary",
            f.build_info.clone(),
        );
        registry.register(
            "http_requests",
            "API requests answered, by route template and status",
            f.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an API request (first byte of the answer), by route template and status class",
            Unit::Seconds,
            f.http_duration.clone(),
        );
        registry.register_with_unit(
            "end_to_end_latency",
            "From an event's record on its domain topic to its delivery's successful answer, by domain; deliveries a user asked for again (retry, replay, test) are left out",
            Unit::Seconds,
            f.end_to_end.clone(),
        );
        registry.register(
            "tenant_deliveries",
            "Delivery attempts by tenant (the 20 busiest of this process have a label of their own, the rest are `other`) and what followed",
            f.tenant_deliveries.clone(),
        );
        registry.register_with_unit(
            "kafka_broker_rtt",
            "Mean round-trip time of a librdkafka client's requests to a broker over its last statistics interval",
            Unit::Seconds,
            f.kafka_broker_rtt.clone(),
        );
        registry.register(
            "kafka_broker_requests_in_flight",
            "Requests of a librdkafka client waiting to be sent to a broker or for its answer",
            f.kafka_broker_in_flight.clone(),
        );
        registry.register(
            "kafka_client_queue_messages",
            "Records waiting in a librdkafka producer's queues (not acknowledged yet)",
            f.kafka_queue_messages.clone(),
        );
        registry.register(
            "kafka_client_queue_bytes",
            "Bytes of the records waiting in a librdkafka producer's queues",
            f.kafka_queue_bytes.clone(),
        );
        registry.register(
            "kafka_client_partition_lag_records",
            "Records between a consumed partition's committed offset and its end, as the consuming librdkafka client last reported",
            f.kafka_partition_lag.clone(),
        );
        registry.register(
            "events_published",
            "Domain events published by the ingest API, by topic",
            f.events_published.clone(),
        );
        registry.register(
            "matcher_events",
            "Domain events the matcher resolved",
            f.matcher_events.clone(),
        );
        registry.register(
            "matcher_duplicate_events",
            "Domain records repeating an event id of their partition within the dedup window (not matched again)",
            f.matcher_duplicates.clone(),
        );
        registry.register(
            "matcher_matches_per_event",
            "Delivery tasks emitted per domain event",
            f.matches_per_event.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by what followed (succeeded, retried, dead, disabled, skipped) and HTTP status class",
            f.deliveries.clone(),
        );
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Duration of one HTTP attempt, auth included",
            Unit::Seconds,
            f.attempt_duration.clone(),
        );
        registry.register(
            "retries_scheduled",
            "Tasks written to a retry tier topic (after a failure or a tier hop)",
            f.retries_scheduled.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Attempts that waited for their subscription's rate limit",
            f.rate_limit_waits.clone(),
        );
        registry.register_with_unit(
            "rate_limit_wait",
            "Time attempts spent waiting for rate limits",
            Unit::Seconds,
            f.rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "delivery_requests_in_flight",
            "Webhook requests of this process in flight (at most delivery.max_in_flight_total)",
            f.requests_in_flight.clone(),
        );
        registry.register(
            "request_slot_waits",
            "Attempts that waited for a request slot (delivery.max_in_flight_total)",
            f.request_slot_waits.clone(),
        );
        registry.register_with_unit(
            "request_slot_wait",
            "Time attempts spent waiting for a request slot",
            Unit::Seconds,
            f.request_slot_wait_seconds.clone(),
        );
        registry.register(
            "subscription_health_changes",
            "Subscription status changes made by the delivery service",
            f.health_changes.clone(),
        );
        registry.register(
            "takeover_skipped",
            "Records a partition's new owner did not send again: its predecessor delivered them before dying",
            f.takeover_skipped.clone(),
        );
        registry.register(
            "duplicate_tasks_skipped",
            "First-attempt tasks not sent because their delivery id succeeded recently (a restarted matcher re-emits tasks)",
            f.duplicate_tasks_skipped.clone(),
        );
        registry.register(
            "deliveries_parked",
            "Deliveries parked on deliveries.parked: behind a strict lane's delivery being retried (reason strict) or while their subscription is paused (reason paused)",
            f.deliveries_parked.clone(),
        );
        registry.register(
            "deliveries_kept",
            "Deliveries parked and not released yet (shown pending), at most: records of deliveries.parked from the oldest one still kept",
            f.deliveries_kept.clone(),
        );
        registry.register(
            "poison_records",
            "Undecodable or invalid records set aside on the dead_letters topic, by source topic",
            f.poison_records.clone(),
        );
        registry.register(
            "projection_subscriptions",
            "Subscriptions in this process's projection",
            f.projection_subscriptions.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Records of a consumed partition not yet committed by the service's group",
            f.consumer_lag.clone(),
        );
        registry.register_with_unit(
            "backlog_oldest_age",
            "Age of the oldest uncommitted record of a consumed topic (a retry tier's oldest waiting task)",
            Unit::Seconds,
            f.backlog_age.clone(),
        );
        registry.register_with_unit(
            "backlog_overdue",
            "How late the oldest uncommitted record of a consumed topic is: its age minus the topic's fixed delay (a retry tier's), at least 0",
            Unit::Seconds,
            f.backlog_overdue.clone(),
        );
        registry.register_with_unit(
            "projection_age",
            "How old the subscription projection may be: time since it was last known to hold every record written to subscriptions",
            Unit::Seconds,
            f.projection_age.clone(),
        );
        registry.register(
            "dlq_records",
            "Records retained on deliveries.dlq",
            f.dlq_records.clone(),
        );
        registry.register(
            "state_records_skipped",
            "Records of a state topic (subscriptions, tenants, event_types, delivery_attempts) this process could not use and skipped, e.g. sealed with a key it does not have; the record stays on its topic",
            f.state_records_skipped.clone(),
        );
        registry.register(
            "kafka_commit_failures",
            "Offset commits (auto, on revoke, final) that failed, and partitions a commit had refused, by consumer group",
            f.commit_failures.clone(),
        );
        registry.register(
            "kafka_committed_offset",
            "The offset a consumer group last committed for a partition (the next record it reads there), as this process committed it",
            f.committed_offset.clone(),
        );
        registry.register(
            "takeover_rewinds",
            "Partitions whose new owner was handed an offset past records with no recorded outcome, and went back to the first of them",
            f.takeover_rewinds.clone(),
        );
        registry.register(
            "quota_refusals",
            "API requests refused with 429 rate_limited because a tenant's quota was used up, by quota (requests, idempotency_keys, replays); the log names the tenant",
            f.quota_refusals.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            families,
            sources: std::sync::Mutex::default(),
            commits: std::sync::Mutex::default(),
        }))
    }

    /// The metrics, to update.
    pub fn get(&self) -> &Families {
        &self.0.families
    }

    /// Commit results of a consumer group member of this process, exported
    /// as `waybill_kafka_commit_failures_total{group}` and
    /// `waybill_kafka_committed_offset{group, topic, partition}` at each
    /// render. Pass the returned stats to the member's `GroupOptions`.
    pub fn watch_commits(&self, group: &str) -> Arc<waybill_kafka::partitioned::CommitStats> {
        let stats = Arc::<waybill_kafka::partitioned::CommitStats>::default();
        self.0
            .commits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((group.to_owned(), stats.clone(), 0));
        stats
    }

    /// Exports the skipped-record count of a state table as
    /// `waybill_state_records_skipped_total{topic}` (read at each render).
    pub fn watch_skipped<S: waybill_kafka::table::Fold>(
        &self,
        table: &waybill_kafka::table::Table<S>,
    ) {
        self.0
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((table.topic().to_owned(), table.skipped(), 0));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.0
            .families
            .record_kafka_stats(&waybill_kafka::stats::latest());
        for (topic, source, exported) in self
            .0
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
        {
            let now = source.load(std::sync::atomic::Ordering::Relaxed);
            Families::topic_counter_by(
                &self.0.families.state_records_skipped,
                topic,
                now.saturating_sub(*exported),
            );
            *exported = now;
        }
        for (group, stats, exported) in self
            .0
            .commits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
        {
            let now = stats.failures();
            self.0
                .families
                .commit_failures
                .get_or_create(&GroupLabels {
                    group: group.clone(),
                })
                .inc_by(now.saturating_sub(*exported));
            *exported = now;
            for ((topic, partition), offset) in stats.committed() {
                self.0
                    .families
                    .committed_offset
                    .get_or_create(&GroupPartitionLabels {
                        group: group.clone(),
                        topic,
                        partition,
                    })
                    .set(offset);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Families {
    /// Counts one API answer: by route and status, and its duration by
    /// route and status class.
    pub fn http_request(&self, route: &str, status: u16, duration: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteClassLabels {
                route: route.to_owned(),
                status_class: status_class(status),
            })
            .observe(duration.as_secs_f64());
    }

    /// A delivery of `event_name` succeeded `latency` after its event was
    /// written to Kafka.
    pub fn delivered_end_to_end(&self, event_name: &str, latency: Duration) {
        let domain = event_name.split('.').next().unwrap_or(event_name);
        self.end_to_end
            .get_or_create(&DomainLabels {
                domain: domain.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts an attempt's outcome for its tenant: by name if the tenant is
    /// among the busiest [`TOP_TENANTS`], else as `other`. A tenant that
    /// falls out of the tracked set loses its series.
    pub fn tenant_delivery(&self, tenant_id: &str, outcome: &'static str) {
        let counted = self
            .top_tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count(tenant_id);
        if let Some(gone) = counted.evicted {
            for outcome in OUTCOMES {
                self.tenant_deliveries.remove(&TenantLabels {
                    tenant: gone.clone(),
                    outcome,
                });
            }
        }
        let tenant = if counted.shown { tenant_id } else { "other" };
        self.tenant_deliveries
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts one attempt's outcome and duration.
    pub fn delivery(&self, outcome: &'static str, status: u16, duration: Duration) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome,
                status_class: status_class(status),
            })
            .inc();
        self.attempt_duration.observe(duration.as_secs_f64());
    }

    /// Counts a record written to `topic`.
    pub fn topic_counter(family: &Family<TopicLabels, Counter>, topic: &str) {
        Self::topic_counter_by(family, topic, 1);
    }

    /// Adds `n` to a counter labelled by topic (creating it at 0 first, so
    /// the series exists before anything is counted).
    pub fn topic_counter_by(family: &Family<TopicLabels, Counter>, topic: &str, n: u64) {
        family
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc_by(n);
    }
}

/// The outcomes of `waybill_deliveries_total`.
pub const OUTCOMES: [&str; 5] = ["succeeded", "retried", "dead", "disabled", "skipped"];

/// `2xx` .. `5xx`, or `none` without a response.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        100..=199 => "1xx",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_units_and_labels() {
        let m = Metrics::new();
        m.get()
            .delivery("succeeded", 204, Duration::from_millis(30));
        m.get().delivery("retried", 0, Duration::from_secs(2));
        Families::topic_counter(&m.get().events_published, "freights");
        let text = m.render();
        assert!(
            text.contains(r#"waybill_deliveries_total{outcome="succeeded",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"waybill_deliveries_total{outcome="retried",status_class="none"} 1"#)
        );
        assert!(text.contains("# UNIT waybill_delivery_attempt_duration_seconds seconds"));
        assert!(text.contains("waybill_delivery_attempt_duration_seconds_count 2"));
        assert!(text.contains(r#"waybill_events_published_total{topic="freights"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }
}
