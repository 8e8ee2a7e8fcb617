//! Topic names and their creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use waybill_core::catalog::DomainTopic;

use crate::{Error, KafkaConfig, Result};

/// Topic names of one deployment (prefix applied), with its retry tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    tiers: Vec<Duration>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// `cleanup.policy=compact`.
    pub compacted: bool,
    /// Also deleted after this long (`cleanup.policy=compact,delete`,
    /// `retention.ms`).
    pub retention: Option<Duration>,
}

/// How long answers under an `Idempotency-Key` stay on their topic (the
/// window `ingest.idempotency_window` may not exceed it).
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long `deliveries.parked` keeps a record: longer than a lane is held
/// (a retry policy spans at most days, a pause `delivery.pause_retention`).
pub const PARKED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl TopicSpec {
    /// Its `cleanup.policy`.
    pub fn policy(&self) -> &'static str {
        match (self.compacted, self.retention.is_some()) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

impl Topics {
    /// Names with `prefix` in front, and the default retry tiers.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            tiers: crate::config::default_retry_tiers(),
        }
    }

    /// The topics `config` describes (prefix and retry tiers).
    pub fn of(config: &KafkaConfig) -> Self {
        Self {
            prefix: config.topic_prefix.clone(),
            tiers: config.retry_tiers.clone(),
        }
    }

    fn named(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// A domain topic.
    pub fn domain(&self, topic: DomainTopic) -> String {
        self.named(topic.name())
    }

    /// Every domain topic.
    pub fn domains(&self) -> Vec<String> {
        DomainTopic::CONSUMED
            .iter()
            .map(|t| self.domain(*t))
            .collect()
    }

    /// The compacted subscription state topic.
    pub fn subscriptions(&self) -> String {
        self.named("subscriptions")
    }

    /// The compacted tenant and API key topic.
    pub fn tenants(&self) -> String {
        self.named("tenants")
    }

    /// Delivery tasks.
    pub fn deliveries(&self) -> String {
        self.named("deliveries")
    }

    /// The retry tier delays, shortest first.
    pub fn retry_tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The retry tier topic of `delay` (`deliveries.retry.5m`).
    pub fn retry(&self, delay: Duration) -> String {
        self.named(&format!(
            "deliveries.retry.{}",
            waybill_core::duration::format(delay).replace(' ', "")
        ))
    }

    /// Every retry tier topic, shortest delay first.
    pub fn retries(&self) -> Vec<String> {
        self.tiers.iter().map(|t| self.retry(*t)).collect()
    }

    /// The tier delay of a retry tier topic; `None` for any other topic.
    pub fn tier_of(&self, topic: &str) -> Option<Duration> {
        self.tiers.iter().copied().find(|t| self.retry(*t) == topic)
    }

    /// Deliveries that exhausted their retry policy.
    pub fn deliveries_dlq(&self) -> String {
        self.named("deliveries.dlq")
    }

    /// One record per HTTP attempt.
    pub fn delivery_attempts(&self) -> String {
        self.named("delivery_attempts")
    }

    /// Holds on strict lanes: which delivery an entity's later deliveries
    /// wait for, and where they are parked (compacted).
    pub fn delivery_lanes(&self) -> String {
        self.named("delivery_lanes")
    }

    /// Deliveries parked behind a held lane, in order (key = subscription).
    pub fn deliveries_parked(&self) -> String {
        self.named("deliveries.parked")
    }

    /// Undecodable or invalid records of any input topic, with the reason.
    pub fn dead_letters(&self) -> String {
        self.named("dead_letters")
    }

    /// Event types operators added through the API (compacted).
    pub fn event_types(&self) -> String {
        self.named("event_types")
    }

    /// What Waybill did on its own (a subscription disabled, ...).
    pub fn operational_events(&self) -> String {
        self.named("operational_events")
    }

    /// Answers to POSTs under an `Idempotency-Key` (compacted, and deleted
    /// after a week).
    pub fn idempotency(&self) -> String {
        self.named("idempotency")
    }

    /// Replay jobs: request, progress, owner (compacted).
    pub fn replays(&self) -> String {
        self.named("replays")
    }

    /// Every topic of the deployment with its layout.
    pub fn specs(&self, config: &KafkaConfig) -> Vec<TopicSpec> {
        let spec = |name: String, partitions: i32, compacted: bool| TopicSpec {
            name,
            partitions,
            compacted,
            retention: None,
        };
        let mut out: Vec<TopicSpec> = self
            .domains()
            .into_iter()
            .map(|name| spec(name, config.partitions, false))
            .collect();
        out.push(spec(
            self.subscriptions(),
            config.subscriptions_partitions,
            true,
        ));
        out.push(spec(self.tenants(), 1, true));
        out.push(spec(self.event_types(), 1, true));
        out.push(spec(self.replays(), 1, true));
        out.push(TopicSpec {
            retention: Some(IDEMPOTENCY_RETENTION),
            ..spec(self.idempotency(), config.subscriptions_partitions, true)
        });
        out.push(spec(self.deliveries(), config.partitions, false));
        for topic in self.retries() {
            out.push(spec(topic, config.partitions, false));
        }
        out.push(spec(self.deliveries_dlq(), config.partitions, false));
        out.push(spec(
            self.delivery_lanes(),
            config.subscriptions_partitions,
            true,
        ));
        out.push(TopicSpec {
            retention: Some(PARKED_RETENTION),
            ..spec(self.deliveries_parked(), config.partitions, false)
        });
        out.push(spec(self.delivery_attempts(), config.partitions, false));
        out.push(spec(self.dead_letters(), config.partitions, false));
        out
    }
}

/// The deployment's topic names; creates the missing topics first when
/// `kafka.create_topics` is set, and warns about existing topics whose
/// layout differs from the configuration.
pub async fn prepare(config: &KafkaConfig) -> Result<Topics> {
    let topics = Topics::of(config);
    if config.create_topics {
        for drift in ensure_topics(config, &topics.specs(config)).await? {
            tracing::warn!(topic = %drift.topic, "{drift}");
        }
    }
    Ok(topics)
}

/// A setting of an existing topic that differs from what the configuration
/// would create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The topic.
    pub topic: String,
    /// The setting (`partitions`, `replication factor`, or a topic config
    /// such as `min.insync.replicas`).
    pub setting: &'static str,
    /// What the configuration asks for.
    pub configured: String,
    /// What the topic has.
    pub actual: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} exists with {} {}, the configuration says {} (left as it is: change the topic, or the configuration)",
            self.topic, self.setting, self.actual, self.configured
        )
    }
}

/// What an existing topic has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Partition count.
    pub partitions: i32,
    /// Replicas of its first partition.
    pub replication_factor: i32,
    /// Topic configs (`cleanup.policy`, `min.insync.replicas`), with the
    /// broker's defaults filled in.
    pub configs: std::collections::BTreeMap<String, String>,
}

/// How `existing` differs from `spec` under `config` (pure).
pub fn drift(config: &KafkaConfig, spec: &TopicSpec, existing: &Existing) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut check = |setting: &'static str, configured: String, actual: Option<&String>| {
        if let Some(actual) = actual
            && *actual != configured
        {
            out.push(Drift {
                topic: spec.name.clone(),
                setting,
                configured,
                actual: actual.clone(),
            });
        }
    };
    check(
        "partitions",
        spec.partitions.to_string(),
        Some(&existing.partitions.to_string()),
    );
    check(
        "replication factor",
        config.replication_factor.to_string(),
        Some(&existing.replication_factor.to_string()),
    );
    check(
        "cleanup.policy",
        spec.policy().to_owned(),
        existing.configs.get("cleanup.policy"),
    );
    if spec.compacted {
        check(
            "min.compaction.lag.ms",
            config.state_min_compaction_lag.as_millis().to_string(),
            existing.configs.get("min.compaction.lag.ms"),
        );
    }
    check(
        "min.insync.replicas",
        config.effective_min_insync_replicas().to_string(),
        existing.configs.get("min.insync.replicas"),
    );
    out
}

/// Creates the missing topics through the admin API (with the configured
/// replication factor, `min.insync.replicas`, and `cleanup.policy=compact`
/// for the state topics). Topics that already exist are left as they are
/// (their partition count is never changed); how each differs from the
/// configuration is returned.
pub async fn ensure_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<Vec<Drift>> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config(crate::config::ClientRole::Admin)
        .create()?;
    let min_insync = config.effective_min_insync_replicas().to_string();
    let compaction_lag = config.state_min_compaction_lag.as_millis().to_string();
    let retention: Vec<Option<String>> = specs
        .iter()
        .map(|s| s.retention.map(|r| r.as_millis().to_string()))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(s, retention)| {
            let mut topic = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
            .set("min.insync.replicas", &min_insync);
            if s.compacted {
                topic = topic
                    .set("cleanup.policy", s.policy())
                    .set("min.compaction.lag.ms", &compaction_lag);
            }
            if let Some(ms) = retention {
                topic = topic.set("retention.ms", ms);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut existing = Vec::new();
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(topic),
            Err((topic, code)) => {
                return Err(Error::Topic {
                    topic,
                    message: format!("cannot create: {code}"),
                });
            }
        }
    }
    if existing.is_empty() {
        return Ok(Vec::new());
    }
    let found = describe(config, &admin, &existing).await?;
    Ok(specs
        .iter()
        .filter_map(|spec| found.get(&spec.name).map(|e| drift(config, spec, e)))
        .flatten()
        .collect())
}

/// Partitions, replication and configs of existing topics.
async fn describe(
    config: &KafkaConfig,
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
) -> Result<std::collections::HashMap<String, Existing>> {
    use rdkafka::admin::ResourceSpecifier;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = config
        .client_config(crate::config::ClientRole::Consumer)
        .create()?;
    let metadata =
        tokio::task::spawn_blocking(move || client.fetch_metadata(None, Duration::from_secs(10)))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
    let mut out = std::collections::HashMap::new();
    for topic in metadata.topics() {
        if names.iter().any(|n| n == topic.name()) {
            out.insert(
                topic.name().to_owned(),
                Existing {
                    partitions: topic.partitions().len() as i32,
                    replication_factor: topic
                        .partitions()
                        .first()
                        .map_or(0, |p| p.replicas().len() as i32),
                    configs: Default::default(),
                },
            );
        }
    }
    let resources: Vec<ResourceSpecifier<'_>> =
        names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for resource in admin.describe_configs(&resources, &options).await? {
        let Ok(resource) = resource else { continue };
        let rdkafka::admin::OwnedResourceSpecifier::Topic(name) = &resource.specifier else {
            continue;
        };
        if let Some(e) = out.get_mut(name) {
            for key in [
                "cleanup.policy",
                "min.insync.replicas",
                "min.compaction.lag.ms",
            ] {
                if let Some(value) = resource.get(key).and_then(|c| c.value.clone()) {
                    e.configs.insert(key.to_owned(), value);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One naming style: lowercase words joined by `_`, and `.` only
    /// between a topic family and its variant (`deliveries.retry.5s`,
    /// `deliveries.dlq`). Kafka's metric names turn `.` into `_`, so no two
    /// names may differ only there.
    #[test]
    fn topic_names_follow_one_style_and_never_collide_in_metrics() {
        let config = KafkaConfig {
            topic_prefix: "prod.".into(),
            ..KafkaConfig::default()
        };
        let names: Vec<String> = Topics::new(&config.topic_prefix)
            .specs(&config)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(names.len() > 10, "{names:?}");
        let mut metric_names = std::collections::BTreeSet::new();
        for name in &names {
            let base = name.strip_prefix("prod.").expect("every topic is prefixed");
            let (family, variant) = base.split_once('.').unwrap_or((base, ""));
            assert!(
                family.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}: the family is lowercase words joined by _"
            );
            assert!(
                variant.is_empty() || family == "deliveries",
                "{name}: only the deliveries family has variants"
            );
            assert!(
                variant
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'),
                "{name}"
            );
            assert!(
                metric_names.insert(name.replace('.', "_")),
                "{name} collides with another topic in Kafka's metric names"
            );
        }
        assert_eq!(config.group_id("waybill-delivery"), "prod.waybill-delivery");
    }

    #[test]
    fn names_carry_the_prefix() {
        let t = Topics::new("prod.");
        assert_eq!(t.domain(DomainTopic::Orders), "prod.orders");
        assert_eq!(
            t.retry(Duration::from_secs(300)),
            "prod.deliveries.retry.5m"
        );
        assert_eq!(
            t.retry(Duration::from_millis(1500)),
            "prod.deliveries.retry.1s500ms"
        );
        assert_eq!(
            t.tier_of("prod.deliveries.retry.2h"),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(t.tier_of("prod.deliveries"), None);
        let specs = t.specs(&KafkaConfig::default());
        let compacted: Vec<&str> = specs
            .iter()
            .filter(|s| s.compacted)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            compacted,
            [
                "prod.subscriptions",
                "prod.tenants",
                "prod.event_types",
                "prod.replays",
                "prod.idempotency",
                "prod.delivery_lanes"
            ]
        );
        assert_eq!(specs.len(), 4 + 3 + 2 + 1 + 6 + 6);
        let idempotency = specs.iter().find(|s| s.name == "prod.idempotency").unwrap();
        assert_eq!(idempotency.policy(), "compact,delete");
    }

    #[test]
    fn drift_names_every_setting_that_differs() {
        let config = KafkaConfig {
            replication_factor: 3,
            ..KafkaConfig::default()
        };
        let spec = TopicSpec {
            name: "subscriptions".into(),
            partitions: 3,
            compacted: true,
            retention: None,
        };
        let same = Existing {
            partitions: 3,
            replication_factor: 3,
            configs: [
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("min.insync.replicas".to_owned(), "2".to_owned()),
            ]
            .into(),
        };
        assert_eq!(drift(&config, &spec, &same), []);
        let other = Existing {
            partitions: 1,
            replication_factor: 1,
            configs: [
                ("cleanup.policy".to_owned(), "delete".to_owned()),
                ("min.insync.replicas".to_owned(), "1".to_owned()),
            ]
            .into(),
        };
        let found: Vec<String> = drift(&config, &spec, &other)
            .iter()
            .map(|d| format!("{}={}/{}", d.setting, d.actual, d.configured))
            .collect();
        assert_eq!(
            found,
            [
                "partitions=1/3",
                "replication factor=1/3",
                "cleanup.policy=delete/compact",
                "min.insync.replicas=1/2"
            ]
        );
        // A config the broker did not describe is not a difference.
        let unknown = Existing {
            configs: Default::default(),
            ..same
        };
        assert_eq!(drift(&config, &spec, &unknown), []);
        assert!(
            drift(&config, &spec, &other)[0]
                .to_string()
                .contains("topic subscriptions exists with partitions 1, the configuration says 3")
        );
    }

    #[test]
    fn min_insync_replicas_defaults_to_two_at_most() {
        let mut config = KafkaConfig::default();
        assert_eq!(config.effective_min_insync_replicas(), 1);
        config.replication_factor = 3;
        assert_eq!(config.effective_min_insync_replicas(), 2);
        config.min_insync_replicas = Some(3);
        assert_eq!(config.effective_min_insync_replicas(), 3);
        assert!(config.problems().is_empty());
        config.min_insync_replicas = Some(4);
        assert!(config.problems()[0].contains("kafka.min_insync_replicas"));
    }
}
