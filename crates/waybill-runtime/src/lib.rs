//! What every Waybill service shares at run time.
//!
//! # Layout
//!
//! - [`config`]: layered configuration (defaults → TOML file → `WAYBILL_*`
//!   environment), with every unknown key and invalid value reported at once.
//! - [`sections`]: configuration sections used by more than one service.
//! - [`telemetry`]: logging (human or JSON, `RUST_LOG` filter).
//! - [`admin`]: `/healthz` and `/readyz`.
//! - [`shutdown`]: SIGTERM/SIGINT turned into a cancellation token.
//! - [`projection`]: the subscription state folded from the `subscriptions` topic.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod projection;
pub mod sections;
pub mod shutdown;
pub mod telemetry;
