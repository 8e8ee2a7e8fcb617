//! Waybill's domain rules, free of I/O.
//!
//! # Layout
//!
//! - [`catalog`]: the built-in event catalog and the domain topic of each event.
//! - [`pattern`]: event-type patterns of a subscription (`exact`, `prefix.*`, `*`).
//! - [`event`]: the domain event model and the webhook body rendered from it.
//! - [`subscription`]: the subscription model and the validation of create, replace and patch bodies.
//! - [`ledger`]: which records of the subscription log count (revisions, deletions, health).
//! - [`headers`]: custom headers: reserved and hop-by-hop names, secret values, validation.
//! - [`auth`]: callback authentication (none, basic, api_key, bearer, oauth2).
//! - [`redacted`]: configuration secrets whose `Debug` prints `***`.
//! - [`filter`]: attribute filters (scopes OR'ed, predicates AND'ed).
//! - [`retry`]: retry policies (explicit delays or exponential).
//! - [`outcome`]: after an attempt: success, retry (when, in which tier), disable, dead.
//! - [`matching`]: does an event go to a subscription?
//! - [`index`]: which subscriptions an event goes to, by lookup (the matcher's index).
//! - [`signing`]: Standard Webhooks secrets and signatures.
//! - [`sealing`]: encryption of secrets stored on Kafka topics.
//! - [`url_policy`]: which callback URLs and addresses may be called.
//! - [`trace`]: W3C trace context (`traceparent`) parsing and propagation.
//! - [`ids`]: identifiers (subscriptions, events, deliveries).
//! - [`duration`]: durations written as strings (`"500ms"`, `"5m"`).
//! - [`fields`]: reading request bodies while collecting every field error.
//!
//! Services move bytes between Kafka and HTTP; every decision they take is a
//! function of this crate so that it can be unit-tested without a broker.
#![forbid(unsafe_code)]

pub mod auth;
pub mod catalog;
pub mod duration;
pub mod error;
pub mod event;
pub mod fields;
pub mod filter;
pub mod headers;
pub mod health;
pub mod hold;
pub mod ids;
pub mod index;
pub mod ledger;
pub mod matching;
pub mod outcome;
pub mod pattern;
pub mod portal;
pub mod redacted;
pub mod retry;
pub mod sealing;
pub mod signing;
pub mod subscription;
pub mod top;
pub mod trace;
pub mod url_policy;

pub use error::FieldError;
