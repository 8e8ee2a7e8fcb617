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

pub mod receiver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::json;

use crate::receiver::BenchReceiver;

/// Where the API is.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub api: String,
    /// A tenant API key.
    pub key: String,
}

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
}

/// The workloads of the benchmark (issue W1..W4).
pub fn standard() -> Vec<Workload> {
    vec![
        Workload {
            name: "W1",
            about: "one subscription, 20,000 events",
            subscriptions: 1,
            events: 20_000,
            rate: None,
            fail_percent: 0,
        },
        Workload {
            name: "W2",
            about: "fan-out to 10 subscriptions, 5,000 events",
            subscriptions: 10,
            events: 5_000,
            rate: None,
            fail_percent: 0,
        },
        Workload {
            name: "W3",
            about: "1,000 events/s for 60 s (latency)",
            subscriptions: 1,
            events: 60_000,
            rate: Some(1_000),
            fail_percent: 0,
        },
        Workload {
            name: "W4",
            about: "W1 with 30 % of first attempts answered 500",
            subscriptions: 1,
            events: 20_000,
            rate: None,
            fail_percent: 30,
        },
    ]
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
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
#[derive(Debug, Clone, Serialize)]
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
    /// POST sent → first 2xx arrival, per delivery.
    pub latency: Latency,
    /// Wall time of the workload.
    pub seconds: f64,
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
    receiver.clear();
    let run_id = format!("{}-{}", workload.name, std::process::id());
    let started = Instant::now();

    let mut subscriptions = Vec::new();
    for k in 0..workload.subscriptions {
        let response = client
            .post(format!("{}/v1/subscriptions", target.api))
            .bearer_auth(&target.key)
            .json(&json!({
                "name": format!("bench {run_id} #{k}"),
                "url": receiver.url(&format!("/{run_id}/{k}")),
                "event_types": ["freights.publication.created"],
                "retry_policy": {"delays": ["100ms", "200ms", "500ms", "1s", "2s"]},
            }))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("cannot create a subscription ({status}): {body}");
        }
        subscriptions.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    receiver.clear();

    // Post, remembering when each event was sent.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let post = |i: usize| {
        let id = format!("bench-{run_id}-{i}");
        let request = client
            .post(format!("{}/v1/events", target.api))
            .bearer_auth(&target.key)
            .json(&json!({
                "id": id, "event_name": "freights.publication.created",
                "entity": {"type": "freight", "id": format!("F-{}", i % 1024)},
                "attributes": {"dc_id": (i % 7).to_string()},
                "data": {"i": i, "price": 1000, "currency": "EUR"},
            }));
        let sent = sent.clone();
        async move {
            sent.lock().unwrap().insert(id, Instant::now());
            match request.send().await {
                Ok(r) if r.status().as_u16() == 202 => Ok(()),
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
        latency: Latency::of(latencies),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs the ceiling then `workloads`, printing each result as it comes;
/// returns the whole report (JSON-ready).
pub async fn run_all(
    target: &Target,
    workloads: &[Workload],
    concurrency: usize,
) -> anyhow::Result<serde_json::Value> {
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
    Ok(json!({
        "ceiling_requests_per_s": ceiling_per_s,
        "concurrency": concurrency,
        "workloads": reports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
