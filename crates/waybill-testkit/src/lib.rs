//! Test support shared by the crates' tests and the end-to-end tests under
//! `tests/`; never linked into the shipped binary (the receiver that
//! `waybill listen` runs is `waybill-receiver`, re-exported here).
//!
//! # Layout
//!
//! - [`api`]: a client of the HTTP API returning status and JSON.
//! - [`cluster`]: Apache Kafka and the three services as processes that
//!   can be killed and restarted.
//! - [`jaeger`]: Jaeger (built from its Go module) as a trace backend to
//!   export to and read traces back from.
//! - [`kafka`]: Apache Kafka KRaft nodes (one, or three) as child processes.
//! - [`otlp`]: an OTLP/HTTP trace collector that keeps the spans it receives.
//! - [`receiver`], [`serve`]: `waybill-receiver`'s recording webhook
//!   receiver and background serving.
//! - [`schema`]: checks JSON values against the OpenAPI document's schemas.
//! - [`tls`]: a test certificate authority and TLS serving.
//! - [`topic`]: a topic's raw records, to look behind the API.
//! - [`wait`]: polling helpers with deadlines.
#![forbid(unsafe_code)]

pub mod api;
pub mod browser;
pub mod cluster;
pub mod jaeger;
pub mod kafka;
pub mod otlp;
pub mod schema;
pub mod tls;
pub mod topic;
pub mod wait;

pub use waybill_receiver::{Received, Receiver, receiver, serve};
