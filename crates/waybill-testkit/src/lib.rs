//! Test and developer support shared by the crates' tests, the end-to-end
//! tests under `tests/`, and `waybill listen`.
//!
//! # Layout
//!
//! - [`api`]: a client of the HTTP API returning status and JSON.
//! - [`cluster`]: Apache Kafka and the three services as processes that
//!   can be killed and restarted.
//! - [`kafka`]: Apache Kafka KRaft nodes (one, or three) as child processes.
//! - [`otlp`]: an OTLP/HTTP trace collector that keeps the spans it receives.
//! - [`receiver`]: an HTTP server that records every webhook it receives,
//!   answers with a configurable status, and checks signatures.
//! - [`serve`]: a router served in the background until cancelled.
//! - [`schema`]: checks JSON values against the OpenAPI document's schemas.
//! - [`tls`]: a test certificate authority and TLS serving.
//! - [`topic`]: a topic's raw records, to look behind the API.
//! - [`wait`]: polling helpers with deadlines.
#![forbid(unsafe_code)]

pub mod api;
pub mod browser;
pub mod cluster;
pub mod kafka;
pub mod otlp;
pub mod receiver;
pub mod schema;
pub mod serve;
pub mod tls;
pub mod topic;
pub mod wait;

pub use receiver::{Received, Receiver};
