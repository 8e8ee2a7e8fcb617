//! The webhook receiver that ships in the `waybill` binary: `waybill
//! listen` runs it for a developer, `waybill bench` serves its counting
//! receiver with [`serve`], and the tests record deliveries with it.
//! What only tests need (Apache Kafka processes, the OTLP collector, the
//! browser) lives in `waybill-testkit`, which the shipped binary does not
//! link.
//!
//! - [`receiver`]: an HTTP server that records every webhook it receives,
//!   answers with a configurable status, and checks signatures.
//! - [`serve`]: a router served in the background until cancelled.
#![forbid(unsafe_code)]

pub mod receiver;
pub mod serve;

pub use receiver::{Options, Received, Receiver};
