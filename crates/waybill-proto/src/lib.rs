//! Waybill's Kafka contracts.
//!
//! # Layout
//!
//! - [`v1`]: prost types generated from `proto/waybill/v1/` (package `waybill.v1`).
//! - [`convert`]: conversions between those records and the domain model of
//!   `waybill-core`, including sealing and opening of secrets.
//!
//! This crate does no I/O; it is the only place that knows the wire format.
#![forbid(unsafe_code)]

/// Generated types of package `waybill.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/waybill.v1.rs"));
}

pub mod convert;

pub use prost::Message;
pub use prost_types;

/// Schema version written in the `waybill-schema` header of every record.
pub const SCHEMA_VERSION: &str = "waybill.v1";
