//! Waybill's load tool, driven by `waybill bench`.
//!
//! Against a deployment's API (or `waybill dev`, which the command starts),
//! with its own [`receiver`]: first the raw HTTP ceiling (the same client
//! machinery posting straight to the receiver), then each workload creates
//! its subscriptions, posts events (at a concurrency, or at a rate) with
//! client ids, waits until every delivery arrived, and reports accepted
//! events/s, delivered/s, duplicates, lost deliveries and POST→arrival
//! latency percentiles, each rate also as a share of the ceiling.
//!
//! # Layout
//!
//! - [`receiver`]: the counting webhook receiver.
//! - [`workloads`]: what each workload posts, and to how many
//!   subscriptions.
//! - [`population`]: the million-subscription mode (a population of
//!   background subscriptions) and R1's subscription writes.

pub mod population;
pub mod receiver;
pub mod workloads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::receiver::BenchReceiver;
pub use crate::workloads::{
    Workload, all, latency_and_scale, ordering_modes, slow_receivers, standard,
};

/// Where the API is.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub api: String,
    /// A tenant API key.
    pub key: String,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// From samples (any order).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1000.0
        };
        Self {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: at(1.0),
        }
    }
}

/// What one workload measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `W1` ...
    pub workload: String,
    /// Its description.
    pub about: String,
    /// Events posted and accepted (202).
    pub events: usize,
    /// Subscriptions per event.
    pub subscriptions: usize,
    /// Requests in flight while posting.
    pub concurrency: usize,
    /// Accepted events per second, while posting.
    pub accepted_per_s: f64,
    /// Distinct deliveries per second, first post to last arrival.
    pub delivered_per_s: f64,
    /// `delivered_per_s` / the raw HTTP ceiling.
    pub ceiling_ratio: f64,
    /// Distinct deliveries that arrived (2xx).
    pub delivered: usize,
    /// Expected but never arrived within the wait.
    pub lost: usize,
    /// 2xx-answered requests beyond the first of a delivery.
    pub duplicates: usize,
    /// Requests answered 500 on purpose (W4).
    pub failed_on_purpose: usize,
    /// Deliveries whose first 2xx came after that of a later event of
    /// the same entity (what `ordering` prevents).
    #[serde(default)]
    pub out_of_order: usize,
    /// POST sent → first 2xx arrival, per delivery (R1: write sent →
    /// answered, per write).
    pub latency: Latency,
    /// The longest time between two successive 2xx arrivals while
    /// deliveries were still due, ms: the pause of a rebalance when a
    /// delivery process joins or leaves during the run.
    #[serde(default)]
    pub longest_gap_ms: f64,
    /// `waybill delivery` processes of the deployment (as the caller
    /// said: `--delivery-replicas`).
    #[serde(default = "one")]
    pub delivery_replicas: usize,
    /// Wall time of the workload.
    pub seconds: f64,
}

fn one() -> usize {
    1
}

/// The longest time between two successive instants of `at` (any order).
pub fn longest_gap(mut at: Vec<Instant>) -> Duration {
    at.sort_unstable();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// The raw HTTP ceiling: `requests` posts of an event-sized body straight
/// to the receiver with the same client and concurrency; requests/s.
pub async fn ceiling(
    client: &reqwest::Client,
    receiver: &BenchReceiver,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let url = receiver.url("/ceiling");
    let body = serde_json::to_vec(&json!({
        "id": "evt_ceiling", "event_name": "freights.publication.created",
        "occurred_at": "2026-12-01T00:00:00Z", "entity": {"type": "freight", "id": "F-1"},
        "data": {"i": 0},
    }))?;
    let started = Instant::now();
    let results: Vec<bool> = futures::stream::iter(0..requests)
        .map(|i| {
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", format!("msg_ceiling_{i}"))
                .body(body.clone());
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    if results.iter().any(|ok| !ok) {
        bail!("the receiver refused requests of the ceiling run");
    }
    receiver.clear();
    Ok(requests as f64 / elapsed)
}

/// Runs one workload against `target`; the receiver must be reachable by
/// the deployment's delivery workers.
pub async fn run(
    client: &reqwest::Client,
    target: &Target,
    receiver: &BenchReceiver,
    workload: &Workload,
    concurrency: usize,
    ceiling_per_s: f64,
) -> anyhow::Result<Report> {
    if workload.kind == workloads::Kind::Writes {
        let writes = population::read_your_writes(client, target, workload.events / 2).await?;
        return Ok(writes.report(workload));
    }
    receiver.clear();
    // Unique per run: the API deduplicates event ids (client ids) for 24 h,
    // so a second run against the same deployment needs new ones.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run_id = format!(
        "{}-{}-{}-{}",
        workload.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let started = Instant::now();

    let mut subscriptions = Vec::new();
    for k in 0..workload.subscriptions {
        let mut body = json!({
            "name": format!("bench {run_id} #{k}"),
            "url": receiver.url(&format!("/{run_id}/{k}")),
            "event_types": ["freights.publication.created"],
            "retry_policy": {"delays": ["100ms", "200ms", "500ms", "1s", "2s"]},
        });
        if let Some(ordering) = workload.ordering {
            body["ordering"] = json!(ordering);
        }
        if let Some(max) = workload.max_in_flight {
            body["max_in_flight"] = json!(max);
        }
        let response = client
            .post(format!("{}/v1/subscriptions", target.api))
            .bearer_auth(&target.key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("cannot create a subscription ({status}): {body}");
        }
        subscriptions.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    warm_up(client, target, receiver, &run_id, workload.subscriptions).await?;
    receiver.clear();

    // Post, remembering when each event was sent.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let entities = workload.entities.max(1);
    // Where each event was written: one entity's events are on one
    // partition, in the order their offsets say.
    let written: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let post = |i: usize| {
        let id = format!("bench-{run_id}-{i}");
        let request = client
            .post(format!("{}/v1/events", target.api))
            .bearer_auth(&target.key)
            .json(&json!({
                "id": id, "event_name": "freights.publication.created",
                "entity": {"type": "freight", "id": format!("F-{}", i % entities)},
                "attributes": {"dc_id": (i % 7).to_string()},
                "data": {"i": i, "price": 1000, "currency": "EUR"},
            }));
        let (sent, written) = (sent.clone(), written.clone());
        async move {
            sent.lock().unwrap().insert(id.clone(), Instant::now());
            match request.send().await {
                Ok(r) if r.status().as_u16() == 202 => {
                    let answer: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(offset) = answer["offset"].as_i64() {
                        written.lock().unwrap().insert(id, offset);
                    }
                    Ok(())
                }
                Ok(r) => Err(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let posting = Instant::now();
    let outcomes: Vec<Result<(), String>> = match workload.rate {
        None => {
            futures::stream::iter(0..workload.events)
                .map(post)
                .buffer_unordered(concurrency)
                .collect()
                .await
        }
        Some(rate) => {
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut running = tokio::task::JoinSet::new();
            for i in 0..workload.events {
                ticker.tick().await;
                let fut = post(i);
                running.spawn(fut);
            }
            let mut out = Vec::new();
            while let Some(r) = running.join_next().await {
                out.push(r.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        }
    };
    let posted_in = posting.elapsed().as_secs_f64();
    if let Some(Err(e)) = outcomes.iter().find(|r| r.is_err()) {
        bail!(
            "{} of {} events refused; first: {e}",
            outcomes.iter().filter(|r| r.is_err()).count(),
            outcomes.len()
        );
    }

    // Wait for every delivery (bounded: a lost one shows as lost).
    let expected = workload.events * workload.subscriptions;
    let deadline = Instant::now() + Duration::from_secs(60 + (expected / 500) as u64);
    let mut last_progress = (0usize, Instant::now());
    loop {
        let accepted = receiver.accepted();
        if accepted >= expected || Instant::now() > deadline {
            break;
        }
        if accepted != last_progress.0 {
            last_progress = (accepted, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(30) {
            break; // nothing new for 30 s
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stragglers (duplicates) a little longer.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let arrivals = receiver.arrivals();
    let sent = sent.lock().unwrap().clone();
    let mut first: HashMap<(String, String), Instant> = HashMap::new();
    let mut accepted_requests = 0usize;
    let mut failed_on_purpose = 0usize;
    let mut last_arrival = posting;
    for a in &arrivals {
        if !a.accepted {
            failed_on_purpose += 1;
            continue;
        }
        accepted_requests += 1;
        last_arrival = last_arrival.max(a.at);
        first
            .entry((a.event_id.clone(), a.path.clone()))
            .and_modify(|t| *t = (*t).min(a.at))
            .or_insert(a.at);
    }
    let latencies: Vec<Duration> = first
        .iter()
        .filter_map(|((event, _), at)| sent.get(event).map(|s| at.saturating_duration_since(*s)))
        .collect();
    let delivered = first.len();
    let longest_gap_ms = longest_gap(first.values().copied().collect()).as_secs_f64() * 1000.0;
    let out_of_order = out_of_order(
        &first,
        &written.lock().unwrap(),
        &format!("bench-{run_id}-"),
        entities,
    );
    let delivered_per_s = delivered as f64 / (last_arrival - posting).as_secs_f64().max(1e-9);

    for id in subscriptions {
        let _ = client
            .delete(format!("{}/v1/subscriptions/{id}", target.api))
            .bearer_auth(&target.key)
            .send()
            .await;
    }
    Ok(Report {
        workload: workload.name.to_owned(),
        about: workload.about.to_owned(),
        events: workload.events,
        subscriptions: workload.subscriptions,
        concurrency,
        accepted_per_s: workload.events as f64 / posted_in,
        delivered_per_s,
        ceiling_ratio: delivered_per_s / ceiling_per_s,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates: accepted_requests - delivered,
        failed_on_purpose,
        out_of_order,
        latency: Latency::of(latencies),
        longest_gap_ms,
        delivery_replicas: 1,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How many deliveries arrived (first 2xx) after the delivery of a later
/// event of their entity, per subscription. Event ids are `<prefix><i>`,
/// about entity `i % entities`; "later" is by where the event was written
/// (`written`: its offset; posted concurrently, events are not written in
/// the order of `i`).
fn out_of_order(
    first: &HashMap<(String, String), Instant>,
    written: &HashMap<String, i64>,
    prefix: &str,
    entities: usize,
) -> usize {
    let mut arrivals: Vec<(&str, usize, i64, Instant)> = first
        .iter()
        .filter_map(|((event, path), at)| {
            let i: usize = event.strip_prefix(prefix)?.parse().ok()?;
            Some((path.as_str(), i % entities, *written.get(event)?, *at))
        })
        .collect();
    arrivals.sort_by_key(|&(_, _, offset, at)| (at, offset));
    let mut latest: HashMap<(&str, usize), i64> = HashMap::new();
    let mut late = 0;
    for (path, entity, offset, _) in arrivals {
        let seen = latest.entry((path, entity)).or_insert(offset);
        if offset < *seen {
            late += 1;
        } else {
            *seen = offset;
        }
    }
    late
}

/// What [`run_all`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    /// The raw HTTP ceiling of this run, requests per second.
    pub ceiling_requests_per_s: f64,
    /// Requests in flight while posting.
    pub concurrency: usize,
    /// One report per workload.
    pub workloads: Vec<Report>,
}

/// Posts a few events and waits until each subscription received them, so
/// that the measurement starts with consumers assigned and connections
/// open (a fresh deployment's first consumer-group join takes seconds).
async fn warm_up(
    client: &reqwest::Client,
    target: &Target,
    receiver: &BenchReceiver,
    run_id: &str,
    subscriptions: usize,
) -> anyhow::Result<()> {
    const EVENTS: usize = 20;
    for i in 0..EVENTS {
        let response = client
            .post(format!("{}/v1/events", target.api))
            .bearer_auth(&target.key)
            .json(&json!({
                "id": format!("warm-{run_id}-{i}"), "event_name": "freights.publication.created",
                "entity": {"type": "freight", "id": format!("W-{i}")}, "data": {},
            }))
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!("warm-up event refused: {}", response.status());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.accepted() < EVENTS * subscriptions {
        if Instant::now() > deadline {
            bail!(
                "warm-up: {} of {} deliveries arrived within 60 s",
                receiver.accepted(),
                EVENTS * subscriptions
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs the ceiling then `workloads`, logging each result as it comes.
pub async fn run_all(
    target: &Target,
    workloads: &[Workload],
    concurrency: usize,
) -> anyhow::Result<RunResults> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("HTTP client")?;
    let receiver = BenchReceiver::start(0).await?;
    let ceiling_per_s = ceiling(&client, &receiver, 20_000, concurrency).await?;
    tracing::info!(requests_per_s = ceiling_per_s.round(), "raw HTTP ceiling");
    let mut reports = Vec::new();
    for w in workloads {
        tracing::info!(workload = w.name, about = w.about, "running");
        receiver.set_fail_percent(w.fail_percent);
        receiver.set_answer_after_ms(w.answer_after_ms);
        let report = run(&client, target, &receiver, w, concurrency, ceiling_per_s).await?;
        tracing::info!(
            workload = w.name,
            delivered_per_s = report.delivered_per_s.round(),
            ceiling_ratio = format!("{:.2}", report.ceiling_ratio),
            p99_ms = format!("{:.1}", report.latency.p99_ms),
            lost = report.lost,
            duplicates = report.duplicates,
            "done"
        );
        reports.push(report);
    }
    Ok(RunResults {
        ceiling_requests_per_s: ceiling_per_s,
        concurrency,
        workloads: reports,
    })
}

/// Median, smallest and largest of a measure over several runs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of `values` (any order); zeros when empty.
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }
}

/// One workload over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `W1` ...
    pub workload: String,
    /// `waybill delivery` processes.
    pub delivery_replicas: usize,
    /// Runs summarised.
    pub runs: usize,
    /// Accepted events per second.
    pub accepted_per_s: Spread,
    /// Distinct deliveries per second.
    pub delivered_per_s: Spread,
    /// Delivered per second over the same run's ceiling.
    pub ceiling_ratio: Spread,
    /// POST→arrival median, ms.
    pub p50_ms: Spread,
    /// POST→arrival 99th percentile, ms.
    pub p99_ms: Spread,
    /// POST→arrival 99.9th percentile, ms.
    pub p999_ms: Spread,
    /// Distinct deliveries over all runs.
    pub delivered: usize,
    /// Lost deliveries over all runs.
    pub lost: usize,
    /// Duplicates over all runs.
    pub duplicates: usize,
    /// Deliveries out of their entity's order over all runs.
    pub out_of_order: usize,
    /// The longest pause between arrivals, ms.
    pub longest_gap_ms: Spread,
}

/// Groups `reports` by workload and delivery replicas (in order of first
/// appearance).
pub fn summarize(reports: &[Report]) -> Vec<Summary> {
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for r in reports {
        let key = (r.workload.as_str(), r.delivery_replicas);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(name, replicas)| {
            let runs: Vec<&Report> = reports
                .iter()
                .filter(|r| r.workload == name && r.delivery_replicas == replicas)
                .collect();
            let spread = |f: fn(&Report) -> f64| Spread::of(runs.iter().map(|r| f(r)).collect());
            Summary {
                workload: name.to_owned(),
                delivery_replicas: replicas,
                runs: runs.len(),
                accepted_per_s: spread(|r| r.accepted_per_s),
                delivered_per_s: spread(|r| r.delivered_per_s),
                ceiling_ratio: spread(|r| r.ceiling_ratio),
                p50_ms: spread(|r| r.latency.p50_ms),
                p99_ms: spread(|r| r.latency.p99_ms),
                p999_ms: spread(|r| r.latency.p999_ms),
                delivered: runs.iter().map(|r| r.delivered).sum(),
                lost: runs.iter().map(|r| r.lost).sum(),
                duplicates: runs.iter().map(|r| r.duplicates).sum(),
                out_of_order: runs.iter().map(|r| r.out_of_order).sum(),
                longest_gap_ms: spread(|r| r.longest_gap_ms),
            }
        })
        .collect()
}

/// A Markdown table of `summaries` (median, then min–max).
pub fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| workload | delivery processes | runs | accepted/s | delivered/s | of ceiling | p50 | p99 | p99.9 | longest pause | lost | duplicates | out of order |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let rate = |s: &Spread| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max);
    let ratio = |s: &Spread| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max);
    let ms = |s: &Spread| {
        // Below 10 ms a tenth of a millisecond matters.
        let digits = if s.max < 10.0 { 1 } else { 0 };
        format!(
            "{:.*} ms ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        )
    };
    for s in summaries {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.workload,
            s.delivery_replicas,
            s.runs,
            rate(&s.accepted_per_s),
            rate(&s.delivered_per_s),
            ratio(&s.ceiling_ratio),
            ms(&s.p50_ms),
            ms(&s.p99_ms),
            ms(&s.p999_ms),
            ms(&s.longest_gap_ms),
            s.lost,
            s.duplicates,
            s.out_of_order,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_after_a_later_event_of_its_entity_is_out_of_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let first: HashMap<(String, String), Instant> = [
            // Entity 0: events 0, 2, 4 — 2 arrives after 4.
            (("p-0", "/a"), at(1)),
            (("p-4", "/a"), at(2)),
            (("p-2", "/a"), at(3)),
            // Entity 1 in order; the other subscription's own order.
            (("p-1", "/a"), at(1)),
            (("p-3", "/a"), at(4)),
            (("p-2", "/b"), at(1)),
            (("p-4", "/b"), at(2)),
        ]
        .into_iter()
        .map(|((e, p), t)| ((e.to_owned(), p.to_owned()), t))
        .collect();
        // Written in the order of i, except 4 before 2 (posted at once).
        let written: HashMap<String, i64> = (0..5).map(|i| (format!("p-{i}"), i)).collect();
        assert_eq!(out_of_order(&first, &written, "p-", 2), 1);
        let mut swapped = written.clone();
        swapped.insert("p-4".into(), 1);
        swapped.insert("p-2".into(), 4);
        assert_eq!(out_of_order(&first, &swapped, "p-", 2), 1, "/b now");
    }

    #[test]
    fn spreads_and_summaries() {
        assert_eq!(
            Spread::of(vec![3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(vec![4.0, 1.0]).median, 2.5);
        let report = |name: &str, rate: f64, lost: usize| Report {
            workload: name.to_owned(),
            about: String::new(),
            events: 10,
            subscriptions: 1,
            concurrency: 1,
            accepted_per_s: rate,
            delivered_per_s: rate,
            ceiling_ratio: rate / 100.0,
            delivered: 10 - lost,
            lost,
            duplicates: 1,
            failed_on_purpose: 0,
            out_of_order: 0,
            latency: Latency::default(),
            longest_gap_ms: rate,
            delivery_replicas: 1,
            seconds: 1.0,
        };
        let mut two = report("W1", 50.0, 0);
        two.delivery_replicas = 2;
        let all = [
            report("W1", 10.0, 0),
            report("W2", 5.0, 1),
            report("W1", 30.0, 0),
            two,
            report("W1", 20.0, 2),
        ];
        let summaries = summarize(&all);
        assert_eq!(summaries.len(), 3, "W1 on one and on two processes apart");
        assert_eq!(
            (
                summaries[2].workload.as_str(),
                summaries[2].delivery_replicas
            ),
            ("W1", 2)
        );
        assert_eq!(summaries[0].workload, "W1");
        assert_eq!(summaries[0].runs, 3);
        assert_eq!(summaries[0].delivered_per_s.median, 20.0);
        assert_eq!((summaries[0].lost, summaries[0].duplicates), (2, 3));
        let table = markdown(&summaries);
        assert!(
            table.contains("| W1 | 1 | 3 | 20 (10–30) | 20 (10–30) | 0.20 (0.10–0.30) |"),
            "{table}"
        );
    }

    #[test]
    fn the_longest_pause_between_arrivals() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            longest_gap(vec![at(30), at(0), at(10), at(250), at(260)]),
            Duration::from_millis(220)
        );
        assert_eq!(longest_gap(vec![at(5)]), Duration::ZERO);
    }

    #[test]
    fn percentiles() {
        let l = Latency::of((1..=1000).map(Duration::from_millis).collect());
        assert_eq!(
            (l.p50_ms.round(), l.p99_ms.round(), l.max_ms),
            (501.0, 990.0, 1000.0)
        );
        assert_eq!(Latency::of(Vec::new()).p50_ms, 0.0);
    }

    #[tokio::test]
    async fn the_receiver_can_reset_connections_instead_of_answering() {
        let receiver = BenchReceiver::start_with(30, crate::receiver::FailWith::Reset)
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let mut outcomes = Vec::new();
        for round in 0..2 {
            for i in 0..100 {
                let sent = client
                    .post(receiver.url("/r"))
                    .header("webhook-id", format!("msg_{i}"))
                    .body(format!("{{\"id\": \"evt_{i}\"}}"))
                    .send()
                    .await;
                outcomes.push((round, sent.map(|r| r.status().as_u16())));
            }
        }
        let reset = outcomes
            .iter()
            .filter(|(round, r)| *round == 0 && r.is_err())
            .count();
        assert!((10..=50).contains(&reset), "about 30 % reset: {reset}");
        assert!(
            outcomes
                .iter()
                .all(|(round, r)| r.is_err() || r.as_ref().ok() == Some(&200) && *round <= 1),
            "no status other than 200"
        );
        assert!(
            outcomes
                .iter()
                .filter(|(round, _)| *round == 1)
                .all(|(_, r)| r.is_ok())
        );
        assert_eq!(receiver.failed(), reset);
        assert_eq!(receiver.accepted(), 200 - reset);
    }

    #[tokio::test]
    async fn the_receiver_fails_a_share_of_first_attempts_only() {
        let receiver = BenchReceiver::start(30).await.unwrap();
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for round in 0..2 {
            for i in 0..200 {
                let status = client
                    .post(receiver.url("/r"))
                    .header("webhook-id", format!("msg_{i}"))
                    .body(format!("{{\"id\": \"evt_{i}\"}}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                statuses.push((round, status.as_u16()));
            }
        }
        let failed = |r| {
            statuses
                .iter()
                .filter(|(round, s)| *round == r && *s == 500)
                .count()
        };
        assert!((30..=90).contains(&failed(0)), "about 30 %: {}", failed(0));
        assert_eq!(failed(1), 0, "retries succeed");
        assert_eq!(receiver.accepted(), 400 - failed(0));
        assert_eq!(receiver.arrivals()[0].event_id, "evt_0");
    }
}
