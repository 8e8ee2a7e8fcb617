//! Configuration sections shared by several services.

use std::collections::BTreeMap;

use serde::Deserialize;
use waybill_core::sealing::Keyring;
use waybill_core::url_policy::UrlPolicy;

/// Keys that seal secrets on Kafka topics (`[secrets]`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct SecretsConfig {
    /// Id of the key that seals new records.
    pub current_key_id: String,
    /// Key id → base64 of 32 random bytes (`openssl rand -base64 32`).
    /// Keep old keys here until no record sealed with them remains.
    pub keys: BTreeMap<String, waybill_core::redacted::Redacted>,
}

impl SecretsConfig {
    /// The keyring, or every problem.
    pub fn keyring(&self) -> Result<Keyring, String> {
        if self.keys.is_empty() {
            return Err(
                "secrets.keys: at least one encryption key is required (base64 of 32 bytes, e.g. `openssl rand -base64 32`)"
                    .into(),
            );
        }
        Keyring::new(&self.current_key_id, &self.keys).map_err(|e| format!("secrets: {e}"))
    }
}

/// Outbound URL rules (`[url_policy]`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct UrlPolicyConfig {
    /// Allow `http://` callback URLs (default false: https only).
    pub allow_http: bool,
    /// Allow loopback, private and link-local targets (default false).
    pub allow_private_networks: bool,
    /// Destination ports allowed (default 443 and 8443, plus 80 when http
    /// is allowed).
    pub allowed_ports: Vec<u16>,
    /// Allow every destination port (default false; development only).
    pub allow_any_port: bool,
}

impl From<&UrlPolicyConfig> for UrlPolicy {
    fn from(c: &UrlPolicyConfig) -> Self {
        UrlPolicy {
            allow_http: c.allow_http,
            allow_private_networks: c.allow_private_networks,
            allowed_ports: c.allowed_ports.clone(),
            allow_any_port: c.allow_any_port,
        }
    }
}

/// Event types added to the built-in catalog (`[catalog]`):
///
/// ```toml
/// [catalog]
/// event_types = [
///   { name = "Shipment.Created", topic = "freights", description = "A shipment was created." },
///   { name = "ROUTE_CREATED", topic = "orders", domain = "routes" },
/// ]
/// ```
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct CatalogConfig {
    /// The added event types.
    pub event_types: Vec<waybill_core::catalog::ExtraEventType>,
}

impl CatalogConfig {
    /// The built-in catalog plus the added types, or every problem.
    pub fn catalog(&self) -> Result<waybill_core::catalog::Catalog, Vec<String>> {
        waybill_core::catalog::Catalog::builtin().with_extra(&self.event_types)
    }
}
