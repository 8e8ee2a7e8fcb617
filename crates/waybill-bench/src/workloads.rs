//! The workloads `waybill bench` runs, by name: W1..W4 (throughput and
//! latency), O1..O8 (what each `ordering` mode costs), L1/L2 (open-loop
//! latency), S1 (scale-out against slow receivers) and R1 (read-your-writes
//! latency of subscription writes).

/// One workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `W1` ...
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// Subscriptions every event goes to.
    pub subscriptions: usize,
    /// Events posted (at a rate: per second, times the duration).
    pub events: usize,
    /// Events per second, or as fast as the concurrency allows.
    pub rate: Option<u32>,
    /// Percentage of deliveries whose first attempt the receiver fails.
    pub fail_percent: u64,
    /// Entities the events are spread over (event `i` is about entity
    /// `i % entities`).
    pub entities: usize,
    /// The subscriptions' `ordering` (`None`: the default, `entity`).
    pub ordering: Option<&'static str>,
    /// The subscriptions' `max_in_flight` (`None`: the default, 8).
    pub max_in_flight: Option<u32>,
    /// How long the receiver takes to answer, ms (0: at once).
    pub answer_after_ms: u64,
    /// Events posted, or subscription writes made (R1).
    pub kind: Kind,
}

/// What a workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Posts events and waits for their deliveries.
    Events,
    /// Makes `events` subscription writes one at a time, each read back at
    /// once ([`crate::population::read_your_writes`]).
    Writes,
}

impl Workload {
    fn plain(name: &'static str, about: &'static str, subscriptions: usize, events: usize) -> Self {
        Self {
            name,
            about,
            subscriptions,
            events,
            rate: None,
            fail_percent: 0,
            entities: 1024,
            ordering: None,
            max_in_flight: None,
            answer_after_ms: 0,
            kind: Kind::Events,
        }
    }

    /// One subscription, 5,000 events over 10 entities, `max_in_flight`
    /// 64, in `ordering` mode.
    fn ordered(
        name: &'static str,
        about: &'static str,
        ordering: &'static str,
        fail_percent: u64,
    ) -> Self {
        Self {
            fail_percent,
            entities: 10,
            ordering: Some(ordering),
            max_in_flight: Some(64),
            ..Self::plain(name, about, 1, 5_000)
        }
    }
}

/// The workloads of the benchmark (issue W1..W4).
pub fn standard() -> Vec<Workload> {
    vec![
        Workload::plain("W1", "one subscription, 20,000 events", 1, 20_000),
        Workload::plain("W2", "fan-out to 10 subscriptions, 5,000 events", 10, 5_000),
        Workload {
            rate: Some(1_000),
            ..Workload::plain("W3", "1,000 events/s for 60 s (latency)", 1, 60_000)
        },
        Workload {
            fail_percent: 30,
            ..Workload::plain(
                "W4",
                "W1 with 30 % of first attempts answered 500",
                1,
                20_000,
            )
        },
    ]
}

/// Open-loop latency at a rate both Waybill and its peers carry (L1, L2),
/// scale-out against slow receivers (S1) and read-your-writes (R1); not run
/// unless named.
pub fn latency_and_scale() -> Vec<Workload> {
    vec![
        Workload {
            rate: Some(400),
            ..Workload::plain("L1", "W1 at 400 events/s for 30 s (latency)", 1, 12_000)
        },
        Workload {
            rate: Some(150),
            ..Workload::plain("L2", "W2 at 150 events/s for 30 s (latency)", 10, 4_500)
        },
        slow_receivers(),
        Workload {
            kind: Kind::Writes,
            ..Workload::plain(
                "R1",
                "200 subscription writes (100 creates, 100 PATCHes), each read back at once",
                0,
                200,
            )
        },
    ]
}

/// S1: 200 subscriptions whose receivers answer after 50 ms, 100 events
/// (20,000 deliveries): what bounds a delivery process is its requests in
/// flight (`delivery.max_in_flight_total`), not its CPU, so replicas add
/// capacity.
pub fn slow_receivers() -> Workload {
    Workload {
        answer_after_ms: 50,
        ..Workload::plain(
            "S1",
            "200 subscriptions, receivers answer after 50 ms, 100 events",
            200,
            100,
        )
    }
}

/// What each `ordering` mode costs: one subscription, 10 entities,
/// `max_in_flight` 64 (O1..O8; not run unless named): O1..O3 with a
/// receiver answering at once, O4/O5 with failures, O6..O8 with one
/// answering after 20 ms.
pub fn ordering_modes() -> Vec<Workload> {
    vec![
        Workload::ordered("O1", "ordering entity, 10 entities", "entity", 0),
        Workload::ordered("O2", "ordering strict, 10 entities", "strict", 0),
        Workload::ordered("O3", "ordering none, 10 entities", "none", 0),
        Workload::ordered(
            "O4",
            "O1 with 5 % of first attempts answered 500",
            "entity",
            5,
        ),
        Workload::ordered(
            "O5",
            "O2 with 5 % of first attempts answered 500",
            "strict",
            5,
        ),
        Workload {
            answer_after_ms: 20,
            events: 2_000,
            ..Workload::ordered("O6", "O1, the receiver answers after 20 ms", "entity", 0)
        },
        Workload {
            answer_after_ms: 20,
            events: 2_000,
            ..Workload::ordered("O7", "O2, the receiver answers after 20 ms", "strict", 0)
        },
        Workload {
            answer_after_ms: 20,
            events: 2_000,
            ..Workload::ordered("O8", "O3, the receiver answers after 20 ms", "none", 0)
        },
    ]
}

/// Every workload by name: [`standard`], [`ordering_modes`], then
/// [`latency_and_scale`].
pub fn all() -> Vec<Workload> {
    let mut all = standard();
    all.extend(ordering_modes());
    all.extend(latency_and_scale());
    all
}
