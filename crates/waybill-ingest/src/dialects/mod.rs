//! Dialects: the seed platforms' own webhook APIs, served on the same
//! subscriptions as `/v1` (`ingest.dialects`). Each module translates its
//! seed's requests and answers to and from the `/v1` subscription model;
//! nothing of a dialect is stored outside the subscription record.

pub mod logistics_2023_07;
pub mod route_planner;
pub mod spotgo;
pub mod spotnana;

/// Every dialect this build serves, by its `ingest.dialects` name.
pub const KNOWN: [&str; 4] = [
    route_planner::NAME,
    logistics_2023_07::NAME,
    spotgo::NAME,
    spotnana::NAME,
];
