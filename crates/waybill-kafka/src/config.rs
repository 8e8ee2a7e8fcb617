//! Connection settings.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// How to reach Kafka and how topics are laid out. `Debug` masks the
/// values of secret `properties` (passwords, keys, JAAS configuration).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Prefix added to every topic name (e.g. `prod.`), empty by default.
    pub topic_prefix: String,
    /// Create missing topics at start-up.
    pub create_topics: bool,
    /// Partitions of the domain topics and of `deliveries` when created.
    pub partitions: i32,
    /// Partitions of the compacted `subscriptions` topic when created.
    pub subscriptions_partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    /// `min.insync.replicas` of created topics: how many replicas must have
    /// a record before the broker acknowledges it to a producer with
    /// `acks=all` (every Waybill producer). Default `min(2,
    /// replication_factor)`: with 3 replicas, one broker may be down and no
    /// acknowledged record is lost when another one dies.
    pub min_insync_replicas: Option<i32>,
    /// `min.compaction.lag.ms` of the compacted state topics: how long every
    /// record stays uncompacted (and does not yet supersede older ones).
    /// A subscription record that lost to a concurrent write is repaired
    /// within seconds; until then the winner before it must survive
    /// compaction. Default 1 h.
    #[serde(deserialize_with = "duration")]
    pub state_min_compaction_lag: Duration,
    /// Delays of the retry tier topics (`deliveries.retry.<delay>`), shortest
    /// first. A retry waits in the longest tier not longer than its wait;
    /// longer waits hop tiers. Tests use millisecond tiers.
    #[serde(deserialize_with = "durations")]
    pub retry_tiers: Vec<Duration>,
    /// Extra librdkafka properties for every client (e.g. `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`). Numbers and
    /// booleans are accepted and passed on as strings.
    #[serde(deserialize_with = "scalar_map")]
    pub properties: BTreeMap<String, String>,
    /// The `client.id` every Kafka client of this process sends (not read
    /// from the file: each service sets it with [`KafkaConfig::for_process`]
    /// to `<service>@<host>`, so the broker's logs, request metrics and
    /// quotas tell services and replicas apart). `kafka.properties."client.id"`
    /// still wins when an operator sets it.
    #[serde(skip)]
    pub client_id: String,
}

/// Whether a librdkafka property holds a secret.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "sasl.oauthbearer.config",
        ".pem",
        "key",
    ]
    .iter()
    .any(|part| name.contains(part))
        && !name.ends_with(".location")
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be left out.
        let Self {
            brokers,
            topic_prefix,
            create_topics,
            partitions,
            subscriptions_partitions,
            replication_factor,
            min_insync_replicas,
            state_min_compaction_lag,
            retry_tiers,
            properties,
            client_id,
        } = self;
        let properties: BTreeMap<&str, &str> = properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) { "***" } else { v };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", brokers)
            .field("topic_prefix", topic_prefix)
            .field("create_topics", create_topics)
            .field("partitions", partitions)
            .field("subscriptions_partitions", subscriptions_partitions)
            .field("replication_factor", replication_factor)
            .field("min_insync_replicas", min_insync_replicas)
            .field("state_min_compaction_lag", state_min_compaction_lag)
            .field("retry_tiers", retry_tiers)
            .field("properties", &properties)
            .field("client_id", client_id)
            .finish()
    }
}

/// The default retry tiers: 1s, 5s, 1m, 5m, 30m, 2h.
pub fn default_retry_tiers() -> Vec<Duration> {
    [1, 5, 60, 300, 1800, 7200]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    waybill_core::duration::parse(&String::deserialize(deserializer)?)
        .map_err(serde::de::Error::custom)
}

fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|s| waybill_core::duration::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A map whose values may be strings, numbers or booleans, kept as strings.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Integer(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            create_topics: true,
            partitions: 12,
            subscriptions_partitions: 3,
            replication_factor: 1,
            min_insync_replicas: None,
            state_min_compaction_lag: Duration::from_secs(3600),
            retry_tiers: default_retry_tiers(),
            properties: BTreeMap::new(),
            client_id: "waybill".into(),
        }
    }
}

impl KafkaConfig {
    /// Every problem with these settings (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.brokers.trim().is_empty() {
            out.push("kafka.brokers: must list at least one host:port".into());
        }
        for (name, value) in [
            ("partitions", self.partitions),
            ("subscriptions_partitions", self.subscriptions_partitions),
            ("replication_factor", self.replication_factor),
        ] {
            if !(1..=10_000).contains(&value) {
                out.push(format!(
                    "kafka.{name}: must be between 1 and 10000, not {value}"
                ));
            }
        }
        if let Some(min) = self.min_insync_replicas
            && !(1..=self.replication_factor.max(1)).contains(&min)
        {
            out.push(format!(
                "kafka.min_insync_replicas: must be between 1 and kafka.replication_factor ({}), not {min}",
                self.replication_factor
            ));
        }
        if !self
            .topic_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            out.push("kafka.topic_prefix: may only use letters, digits, `.`, `_` and `-`".into());
        }
        if self.retry_tiers.is_empty()
            || self.retry_tiers.len() > 20
            || self.retry_tiers.windows(2).any(|w| w[0] >= w[1])
            || self.retry_tiers[0] < Duration::from_millis(1)
        {
            out.push(
                "kafka.retry_tiers: list 1 to 20 delays of at least 1ms, shortest first, each longer than the one before"
                    .into(),
            );
        }
        for key in self.properties.keys() {
            if key == "bootstrap.servers" {
                out.push("kafka.properties.bootstrap.servers: set kafka.brokers instead".into());
            }
        }
        out
    }

    /// This configuration for the clients of `service` in this process:
    /// `client.id` = `<service>@<host>` (the host name is the pod's name on
    /// Kubernetes; `HOSTNAME`, else the kernel's, else the service alone).
    pub fn for_process(&self, service: &str) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty());
        Self {
            client_id: client_id(service, host.as_deref()),
            ..self.clone()
        }
    }

    /// The consumer group id of a service's `group_id`: with the topic
    /// prefix in front, so two deployments sharing a cluster (`prod.`,
    /// `staging.`) never share a group, as they never share a topic.
    pub fn group_id(&self, base: &str) -> String {
        format!("{}{base}", self.topic_prefix)
    }

    /// `min.insync.replicas` of created topics (see the field).
    pub fn effective_min_insync_replicas(&self) -> i32 {
        self.min_insync_replicas
            .unwrap_or_else(|| self.replication_factor.min(2))
    }

    /// A librdkafka config for one kind of client, with the brokers and the
    /// extra properties that apply to it. `kafka.properties` is shared by
    /// every client, so a consumer-only property (e.g. `fetch.wait.max.ms`)
    /// is not given to producers, nor a producer-only one (e.g. `linger.ms`)
    /// to consumers: librdkafka would warn (CONFWARN) on every start.
    pub fn client_config(&self, role: ClientRole) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", &self.client_id);
        // Keep librdkafka's own logs at warning and above; ours go through tracing.
        config.set(
            "log_level",
            if self.properties.contains_key("debug") {
                "7"
            } else {
                "4"
            },
        );
        for (key, value) in &self.properties {
            // Statistics go only to the clients that keep them
            // ([`KafkaConfig::client_config_with_stats`]); librdkafka's
            // default context would log every report.
            if role.accepts(key) && key != STATISTICS_INTERVAL {
                config.set(key, value);
            }
        }
        config
    }

    /// [`KafkaConfig::client_config`] for a client whose context keeps
    /// librdkafka's statistics ([`crate::stats`]): reported every
    /// `kafka.properties."statistics.interval.ms"`, 15 s by default.
    pub fn client_config_with_stats(&self, role: ClientRole) -> ClientConfig {
        let mut config = self.client_config(role);
        let interval = self
            .properties
            .get(STATISTICS_INTERVAL)
            .cloned()
            .unwrap_or_else(|| crate::stats::INTERVAL.as_millis().to_string());
        config.set(STATISTICS_INTERVAL, interval);
        config
    }
}

/// `<service>@<host>`, with what Kafka's quota and metric names do not
/// take (anything but letters, digits, `.`, `_`, `-` and `@`) replaced by `_`.
pub fn client_id(service: &str, host: Option<&str>) -> String {
    let raw = match host {
        Some(host) => format!("{service}@{host}"),
        None => service.to_owned(),
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

/// The kind of librdkafka client a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// A producer.
    Producer,
    /// A consumer (group member or manual assignment).
    Consumer,
    /// An admin client (librdkafka makes it from a producer handle).
    Admin,
}

/// Properties librdkafka documents as consumer-only (`C` in its
/// CONFIGURATION.md) that operators plausibly set.
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// Properties librdkafka documents as producer-only (`P`).
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.timeout.ms",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

const STATISTICS_INTERVAL: &str = "statistics.interval.ms";

impl ClientRole {
    /// Whether a `kafka.properties` key is given to this kind of client.
    pub fn accepts(self, key: &str) -> bool {
        match self {
            ClientRole::Consumer => !PRODUCER_ONLY.contains(&key),
            ClientRole::Producer | ClientRole::Admin => !CONSUMER_ONLY.contains(&key),
        }
    }
}

/// Sets `key` unless the operator already set it in `kafka.properties`.
pub fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_secret_properties() {
        let c = KafkaConfig {
            properties: [
                ("sasl.password", "kafka-pass-value"),
                (
                    "sasl.jaas.config",
                    "org.x required password=\"jaas-value\";",
                ),
                ("ssl.key.password", "ssl-key-value"),
                ("ssl.keystore.location", "/etc/k.p12"),
                ("linger.ms", "5"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..KafkaConfig::default()
        };
        let printed = format!("{c:?}");
        for secret in ["kafka-pass-value", "jaas-value", "ssl-key-value"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("/etc/k.p12") && printed.contains("linger.ms"),
            "{printed}"
        );
    }
    use rdkafka::producer::BaseProducer;

    #[test]
    fn group_ids_take_the_topic_prefix() {
        let mut config = KafkaConfig::default();
        assert_eq!(config.group_id("waybill-delivery"), "waybill-delivery");
        config.topic_prefix = "staging.".into();
        assert_eq!(
            config.group_id("waybill-delivery"),
            "staging.waybill-delivery"
        );
    }

    /// Shared properties reach only the clients they apply to.
    #[test]
    fn properties_go_to_the_clients_they_apply_to() {
        let mut config = KafkaConfig::default();
        for (k, v) in [
            ("fetch.wait.max.ms", "10"),
            ("linger.ms", "5"),
            ("security.protocol", "SSL"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        let consumer = config.client_config(ClientRole::Consumer);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(consumer.get("linger.ms"), None);
        for role in [ClientRole::Producer, ClientRole::Admin] {
            let producer = config.client_config(role);
            assert_eq!(producer.get("fetch.wait.max.ms"), None);
            assert_eq!(producer.get("linger.ms"), Some("5"));
            assert_eq!(producer.get("security.protocol"), Some("SSL"));
        }
        assert_eq!(consumer.get("security.protocol"), Some("SSL"));
    }

    /// librdkafka is built with TLS and SASL: a client for a SASL_SSL
    /// cluster (SCRAM) can be made (it connects lazily), as the Helm
    /// chart's `kafka.tls`/`kafka.sasl` values configure it.
    #[test]
    fn tls_and_sasl_clients_can_be_made() {
        for (protocol, mechanism) in [
            ("SASL_SSL", "SCRAM-SHA-512"),
            ("SASL_SSL", "PLAIN"),
            ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
            ("SSL", ""),
        ] {
            let mut properties =
                BTreeMap::from([("security.protocol".to_owned(), protocol.to_owned())]);
            if !mechanism.is_empty() {
                properties.insert("sasl.mechanism".into(), mechanism.into());
                properties.insert("sasl.username".into(), "waybill".into());
                properties.insert("sasl.password".into(), "secret".into());
            }
            let config = KafkaConfig {
                brokers: "127.0.0.1:1".into(),
                properties,
                ..KafkaConfig::default()
            };
            let made: Result<BaseProducer, _> = config.client_config(ClientRole::Producer).create();
            assert!(made.is_ok(), "{protocol} {mechanism}: {:?}", made.err());
        }
    }

    #[test]
    fn every_client_names_its_service_and_host() {
        assert_eq!(
            client_id("waybill-delivery", Some("waybill-delivery-7c9f-x2k")),
            "waybill-delivery@waybill-delivery-7c9f-x2k"
        );
        assert_eq!(client_id("waybill-ingest", None), "waybill-ingest");
        assert_eq!(
            client_id("waybill-ingest", Some("a b/c")),
            "waybill-ingest@a_b_c"
        );
        let config = KafkaConfig::default().for_process("waybill-matcher");
        assert!(
            config.client_id.starts_with("waybill-matcher"),
            "{}",
            config.client_id
        );
        let client = config.client_config(ClientRole::Consumer);
        assert_eq!(client.get("client.id"), Some(config.client_id.as_str()));
        let mut own = config.clone();
        own.properties
            .insert("client.id".into(), "operator-chosen".into());
        assert_eq!(
            own.client_config(ClientRole::Producer).get("client.id"),
            Some("operator-chosen")
        );
    }
}
