//! The configuration file: one section per part of Waybill.
//!
//! ```toml
//! [kafka]       # brokers, topic prefix, partitions, librdkafka properties
//! [secrets]     # keys sealing secrets on topics
//! [url_policy]  # allow_http, allow_private_networks
//! [catalog]     # event_types added to the built-in catalog
//! [ingest]      # listen, api_keys, limits
//! [matcher]     # listen, group_id
//! [delivery]    # listen, group_id, timeouts, drain time
//! ```

use serde::Deserialize;
use waybill_delivery::DeliveryConfig;
use waybill_ingest::IngestConfig;
use waybill_kafka::KafkaConfig;
use waybill_matcher::MatcherConfig;
use waybill_runtime::config::Validate;
use waybill_runtime::sections::{CatalogConfig, SecretsConfig, UrlPolicyConfig};

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
    /// Event types added to the built-in catalog.
    pub catalog: CatalogConfig,
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
    const SECTIONS: &'static [&'static str] = &[
        "kafka",
        "secrets",
        "url_policy",
        "catalog",
        "ingest",
        "matcher",
        "delivery",
    ];

    /// Problems of the sections every service uses.
    fn problems(&self) -> Vec<String> {
        let mut out = self.kafka.problems();
        if let Err(e) = self.secrets.keyring() {
            out.push(e);
        }
        if let Err(problems) = self.catalog.catalog() {
            out.extend(problems);
        }
        out
    }
}

/// What `waybill create-topics` reads: the whole file, so every key is
/// still checked, but only `[kafka]` must be valid. It needs no sealing key,
/// so the chart's topics Job (a pre-install hook) runs without the Secret
/// that Helm creates only after the hooks.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(transparent)]
pub struct TopicsConfig(pub Config);

impl Validate for TopicsConfig {
    const SECTIONS: &'static [&'static str] = Config::SECTIONS;

    fn problems(&self) -> Vec<String> {
        self.0.kafka.problems()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> toml::Table {
        crate::dev::base_config(0)
    }

    #[test]
    fn kafka_properties_accept_numbers_from_env_and_file() {
        let mut base = base();
        let file: toml::Table =
            "[kafka.properties]\n\"linger.ms\" = 5\n\"enable.idempotence\" = true"
                .parse()
                .unwrap();
        base.insert(
            "kafka".into(),
            toml::Value::Table(file["kafka"].as_table().unwrap().clone()),
        );
        let config: Config = waybill_runtime::config::load(
            base,
            None,
            env(&[
                ("WAYBILL_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "10"),
                ("WAYBILL_KAFKA__BROKERS", "k1:9092,k2:9092"),
            ]),
        )
        .unwrap();
        assert_eq!(config.kafka.properties["fetch.wait.max.ms"], "10");
        assert_eq!(config.kafka.properties["linger.ms"], "5");
        assert_eq!(config.kafka.properties["enable.idempotence"], "true");
        assert_eq!(config.kafka.brokers, "k1:9092,k2:9092");
    }

    #[test]
    fn every_problem_of_every_section_is_reported() {
        let err = waybill_runtime::config::load::<Config, _>(
            toml::Table::new(),
            None,
            env(&[
                ("WAYBILL_KAFKA__PARTITIONS", "0"),
                ("WAYBILL_INGEST__LISTN", "x"),
                ("WAYBILL_DELIVERY__TIMEOUT", "1s"),
                (
                    "WAYBILL_KAFKA_LIBS",
                    "/root/.cache/waybill/kafka-4.1.1/libs",
                ),
                ("WAYBILL_TANSU_BIN", "/usr/bin/tansu"),
                ("WAYBILL_INGEST_LISTEN", "0.0.0.0:1"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ingest.listn: unknown key"), "{text}");
        assert!(
            text.contains("did you mean WAYBILL_INGEST__LISTEN?"),
            "{text}"
        );
        assert!(!text.contains("TANSU"), "{text}");
        assert!(!text.contains("KAFKA_LIBS"), "{text}");
        assert!(text.contains("delivery.timeout: unknown key"), "{text}");
        assert!(
            text.contains("kafka.partitions: must be between 1 and 10000"),
            "{text}"
        );
        assert!(
            text.contains("secrets.keys: at least one encryption key"),
            "{text}"
        );
    }

    #[test]
    fn services_check_their_own_sections() {
        let config: Config = waybill_runtime::config::load(
            base(),
            None,
            env(&[("WAYBILL_DELIVERY__CONNECT_TIMEOUT", "1m")]),
        )
        .unwrap();
        assert!(config.service_problems(Service::Ingest).is_empty());
        let problems = config.service_problems(Service::Delivery);
        assert!(problems[0].contains("connect_timeout"), "{problems:?}");
        let mut no_keys = config.clone();
        no_keys.ingest.api_keys.clear();
        no_keys.ingest.operator_token = None;
        assert!(no_keys.service_problems(Service::Ingest)[0].contains("api_keys"));
        assert!(no_keys.service_problems(Service::Matcher).is_empty());
    }
}
