//! What every Waybill service shares at run time.
//!
//! # Layout
//!
//! - [`config`]: layered configuration (defaults → TOML file → `WAYBILL_*`
//!   environment), with every unknown key and invalid value reported at once.
//! - [`sections`]: configuration sections used by more than one service.
//! - [`telemetry`]: logs (human or JSON, `RUST_LOG` filter) and traces (OTLP).
//! - [`admin`]: `/healthz` and `/readyz`.
//! - [`shutdown`]: SIGTERM/SIGINT turned into a cancellation token.
//! - [`projection`]: the subscription state folded from the `subscriptions` topic.
//! - [`catalog`]: the event catalog, with the types added through the API.
//! - [`metrics`]: the Prometheus registry and the backlog samplers.
#![forbid(unsafe_code)]

pub mod admin;
pub mod catalog;
pub mod config;
pub mod dns;
pub mod metrics;
pub mod projection;
pub mod sections;
pub mod shutdown;
pub mod telemetry;
