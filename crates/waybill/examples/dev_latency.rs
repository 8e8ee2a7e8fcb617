//! Measures, in the same stack `waybill dev` runs (embedded broker, the
//! three services in one process): how long one event takes from
//! `POST /v1/events` to its arrival at a receiver, one event at a time; and
//! how long `POST /v1/subscriptions` takes (a write acknowledged by Kafka and
//! applied by the service's projection before it answers).
//!
//! `cargo run -p waybill --example dev_latency -- [events] [output.json]`
//! (default 100 events after 10 warm-up events, output `target/latency.json`).

#![allow(clippy::print_stdout)] // a measuring tool: its output is the result

use std::time::{Duration, Instant};

use serde_json::json;
use waybill::dev;
use waybill_testkit::receiver::Receiver;

const KEY: &str = "wb_latency_0123456789abcdef012345";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let output = args.next().unwrap_or_else(|| "target/latency.json".into());

    let config = waybill::load(dev::base_config(0), None, std::env::vars().collect())?;
    let stack = dev::start(config, KEY).await?;
    let receiver = Receiver::start().await?;
    let http = reqwest::Client::new();
    let api = stack.api_url();
    let response = http
        .post(format!("{api}/v1/subscriptions"))
        .bearer_auth(KEY)
        .json(&json!({"url": receiver.url("/hook"), "event_types": ["*"]}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "subscription: {}",
        response.text().await?
    );

    let mut creates = Vec::with_capacity(200);
    for i in 0..220 {
        let started = Instant::now();
        let response = http
            .post(format!("{api}/v1/subscriptions"))
            .bearer_auth(KEY)
            .json(&json!({"url": receiver.url(&format!("/s{i}")),
                          "event_types": ["loads_monitoring.*"],
                          "auth": {"type": "bearer", "token": "t"},
                          "headers": {"X-Team": "ops"}}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "{}", response.text().await?);
        if i >= 20 {
            creates.push(started.elapsed());
        }
    }

    let warmup = 10;
    let mut latencies = Vec::with_capacity(events);
    for i in 0..warmup + events {
        let started = Instant::now();
        let response = http
            .post(format!("{api}/v1/events"))
            .bearer_auth(KEY)
            .json(&json!({"event_name": "freights.publication.accepted",
                          "entity": {"type": "freight", "id": format!("F-{i}")},
                          "data": {"i": i}}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "event: {}",
            response.text().await?
        );
        let got = receiver
            .wait_for(i + 1, Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        if i >= warmup {
            latencies.push(got[i].at.duration_since(started));
        }
    }
    stack.stop().await?;

    latencies.sort();
    creates.sort();
    let pct = |v: &[Duration], p: f64| {
        let index = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[index].as_secs_f64() * 1000.0
    };
    let result = json!({
        "what": "POST /v1/events → arrival at the receiver, waybill dev stack, one event at a time",
        "events": latencies.len(),
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "median_ms": pct(&latencies, 0.5),
        "p90_ms": pct(&latencies, 0.9),
        "p99_ms": pct(&latencies, 0.99),
        "max_ms": pct(&latencies, 1.0),
        "min_ms": pct(&latencies, 0.0),
        "subscription_create": {
            "what": "POST /v1/subscriptions → 201 (Kafka ack + own projection applied), one at a time",
            "requests": creates.len(),
            "median_ms": pct(&creates, 0.5),
            "p99_ms": pct(&creates, 0.99),
            "max_ms": pct(&creates, 1.0),
        },
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(dir) = std::path::Path::new(&output).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&output, serde_json::to_vec_pretty(&result)?)?;
    eprintln!("written to {output}");
    Ok(())
}
