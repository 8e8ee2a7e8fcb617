//! The configuration file: one section per part of Waybill.
//!
//! ```toml
//! [kafka]       # brokers, topic prefix, partitions, librdkafka properties
//! [secrets]     # keys sealing secrets on topics
//! [url_policy]  # allow_http, allow_private_networks
//! [ingest]      # listen, api_keys, limits
//! [matcher]     # listen, group_id
//! [delivery]    # listen, group_id, timeouts, retry backoff
//! ```

use serde::Deserialize;
use waybill_delivery::DeliveryConfig;
use waybill_ingest::IngestConfig;
use waybill_kafka::KafkaConfig;
use waybill_matcher::MatcherConfig;
use waybill_runtime::config::Validate;
use waybill_runtime::sections::{SecretsConfig, UrlPolicyConfig};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Kafka connection and topic layout.
    pub kafka: KafkaConfig,
    /// Keys sealing secrets on topics.
    pub secrets: SecretsConfig,
    /// Outbound URL rules.
    pub url_policy: UrlPolicyConfig,
    /// The ingest service.
    pub ingest: IngestConfig,
    /// The matcher.
    pub matcher: MatcherConfig,
    /// The delivery workers.
    pub delivery: DeliveryConfig,
}

/// A service the binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// HTTP API.
    Ingest,
    /// Event → tasks.
    Matcher,
    /// Tasks → webhooks.
    Delivery,
}

impl Validate for Config {
    /// Problems of the sections every service uses.
    fn problems(&self) -> Vec<String> {
        let mut out = self.kafka.problems();
        if let Err(e) = self.secrets.keyring() {
            out.push(e);
        }
        out
    }
}

impl Config {
    /// Problems of the sections `service` uses, beyond the shared ones.
    pub fn service_problems(&self, service: Service) -> Vec<String> {
        match service {
            Service::Ingest => self.ingest.problems(),
            Service::Matcher => self.matcher.problems(),
            Service::Delivery => self.delivery.problems(),
        }
    }
}
