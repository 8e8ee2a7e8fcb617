//! How many deliveries wait on `deliveries.parked` (strict lanes behind
//! their blocker, paused subscriptions): `waybill_deliveries_kept`.
//!
//! Kept deliveries are shown `pending` in the history; this gauge shows
//! them to an SRE, since they no longer count in the consumer lag of
//! `deliveries`. Exact counting would need a write per parked delivery;
//! the gauge is instead the records of each partition of the parking topic
//! from the oldest delivery still kept there (an upper bound: records of
//! other subscriptions released meanwhile count too), 0 when nothing is
//! kept. Sampled like the backlog, from the two projections this process
//! holds anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use waybill_core::hold::{PAUSED, Parked, PauseGate, pause_gate, paused_key, release_start};

use crate::strict::Holds;
use crate::worker::Worker;

/// Where each partition of the parking topic has its oldest kept delivery
/// (at or after this offset).
/// `kept` gives each subscription with deliveries kept: its id, whether
/// it is paused, and since where its deliveries are kept.
pub fn oldest_kept<'a>(
    holds: &Holds,
    kept: impl Iterator<Item = (&'a str, bool, Parked)>,
) -> BTreeMap<i32, i64> {
    let mut oldest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut note = |partition: i32, from: i64| {
        let at = oldest.entry(partition).or_insert(from);
        *at = (*at).min(from);
    };
    for (_, hold) in holds.iter() {
        if hold.blocked_by.as_deref() != Some(PAUSED)
            && let Some(parked) = hold.parked
        {
            note(parked.partition, parked.from);
        }
    }
    for (id, paused, kept_from) in kept {
        let hold = holds.get(&paused_key(id));
        if pause_gate(paused, Some(kept_from), hold) == PauseGate::Park {
            let start = release_start(kept_from, hold);
            note(start.partition, start.from);
        }
    }
    oldest
}

/// The gauge's value: records from each oldest kept one to the end.
pub fn kept_records(oldest: &BTreeMap<i32, i64>, high: &[(i32, i64)]) -> i64 {
    high.iter()
        .filter_map(|(p, high)| oldest.get(p).map(|from| (high - from).max(0)))
        .sum()
}

/// Samples `waybill_deliveries_kept` every `every`, until `shutdown`.
pub async fn sample(
    worker: Arc<Worker>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let oldest = {
            let holds = worker.holds.read();
            let subscriptions = worker.subscriptions.read();
            oldest_kept(&holds, subscriptions.kept())
        };
        let value = if oldest.is_empty() {
            Some(0)
        } else {
            let (kafka, topic) = (worker.kafka.clone(), worker.topics.deliveries_parked());
            match tokio::task::spawn_blocking(move || {
                waybill_kafka::lag::high_watermarks(&kafka, &topic)
            })
            .await
            {
                Ok(Ok(high)) => Some(kept_records(&oldest, &high)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "kept deliveries not sampled");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, "kept deliveries sampler failed");
                    None
                }
            }
        };
        if let Some(value) = value {
            worker.metrics.get().deliveries_kept.set(value);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waybill_core::hold::Hold;
    use waybill_core::subscription::Subscription;
    use waybill_kafka::table::Fold;
    use waybill_proto::Message as _;

    fn hold_record(h: &Hold) -> Vec<u8> {
        crate::strict::to_record(h, "", "").encode_to_vec()
    }

    fn paused(id: &str, paused: bool, from: i64) -> Subscription {
        let spec = waybill_core::subscription::Spec::new("https://a.example", Vec::new());
        let mut s = Subscription::new(
            id.into(),
            "t".into(),
            spec,
            "k",
            time::OffsetDateTime::now_utc(),
        );
        s.paused = paused;
        s.kept_from = Some(Parked { partition: 1, from });
        s
    }

    #[test]
    fn the_oldest_kept_delivery_of_each_partition_counts() {
        let mut holds = Holds::default();
        let lane = Hold {
            blocked_by: Some("d1".into()),
            parked: Some(Parked {
                partition: 0,
                from: 40,
            }),
            ..Hold::default()
        };
        holds.apply(b"s1\0e1", Some(&hold_record(&lane))).unwrap();
        // s2 paused since 100; s3 resumed and released; s4 resumed, its
        // release under way at 130.
        let released = Hold {
            blocked_by: Some(PAUSED.into()),
            parked: Some(Parked {
                partition: 1,
                from: 150,
            }),
            generation: 20,
            released: true,
        };
        holds
            .apply(paused_key("s3").as_bytes(), Some(&hold_record(&released)))
            .unwrap();
        let releasing = Hold {
            released: false,
            generation: 120,
            parked: Some(Parked {
                partition: 1,
                from: 130,
            }),
            ..released.clone()
        };
        holds
            .apply(paused_key("s4").as_bytes(), Some(&hold_record(&releasing)))
            .unwrap();
        let subs = [
            paused("s2", true, 100),
            paused("s3", false, 20),
            paused("s4", false, 120),
        ];
        let kept = |subs: &[Subscription]| -> Vec<(String, bool, Parked)> {
            subs.iter()
                .filter_map(|s| Some((s.id.clone(), s.paused, s.kept_from?)))
                .collect()
        };
        let subs = kept(&subs);
        let oldest = oldest_kept(&holds, subs.iter().map(|(id, p, k)| (id.as_str(), *p, *k)));
        assert_eq!(oldest, BTreeMap::from([(0, 40), (1, 100)]));
        assert_eq!(kept_records(&oldest, &[(0, 50), (1, 160), (2, 9)]), 70);
        let s3 = kept(&[paused("s3", false, 20)]);
        let none = oldest_kept(
            &Holds::default(),
            s3.iter().map(|(id, p, k)| (id.as_str(), *p, *k)),
        );
        assert_eq!(none.len(), 1, "resumed, not released yet: still kept");
    }
}
