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
        DomainTopic::ALL.iter().map(|t| self.domain(*t)).collect()
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

    /// Every topic of the deployment with its layout.
    pub fn specs(&self, config: &KafkaConfig) -> Vec<TopicSpec> {
        let spec = |name: String, partitions: i32, compacted: bool| TopicSpec {
            name,
            partitions,
            compacted,
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
        out.push(spec(self.deliveries(), config.partitions, false));
        for topic in self.retries() {
            out.push(spec(topic, config.partitions, false));
        }
        out.push(spec(self.deliveries_dlq(), config.partitions, false));
        out.push(spec(self.delivery_attempts(), config.partitions, false));
        out.push(spec(self.dead_letters(), config.partitions, false));
        out.push(spec(self.operational_events(), 1, false));
        out
    }
}

/// The deployment's topic names; creates the missing topics first when
/// `kafka.create_topics` is set.
pub async fn prepare(config: &KafkaConfig) -> Result<Topics> {
    let topics = Topics::of(config);
    if config.create_topics {
        ensure_topics(config, &topics.specs(config)).await?;
    }
    Ok(topics)
}

/// Creates the missing topics through the admin API. Topics that already
/// exist are left as they are (their partition count is never changed).
pub async fn ensure_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config(crate::config::ClientRole::Admin)
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let topic = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(config.replication_factor),
            );
            if s.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Topic {
                    topic,
                    message: format!("cannot create: {code}"),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ["prod.subscriptions", "prod.tenants", "prod.event_types"]
        );
        assert_eq!(specs.len(), 4 + 3 + 1 + 6 + 4);
    }
}
