//! The million-subscription mode: a population of background subscriptions
//! created through the API (tenants and their keys through the operator
//! token), and R1, the read-your-writes latency of a subscription write,
//! to compare at any population size.
//!
//! The population's subscriptions are realistic in size (a name, an https
//! URL, three event-type patterns, a filter, bearer auth, two headers, a
//! metadata entry) and belong to tenants of their own, so the workloads'
//! events (of the bench tenant) never go to them: what they add is the
//! size of every service's projection, and of the `subscriptions` topic
//! each service loads at start-up.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Latency, Report, Target, Workload};

/// What creating a population measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopulationReport {
    /// Subscriptions created.
    pub subscriptions: usize,
    /// Tenants they are spread over.
    pub tenants: usize,
    /// Requests in flight while creating.
    pub concurrency: usize,
    /// Creates per second.
    pub created_per_s: f64,
    /// One create (answered once the ingest's projection has it).
    pub create_latency: Latency,
    /// Wall time.
    pub seconds: f64,
}

/// The body of population subscription `i` (its receiver is never called:
/// no event of its tenant is posted).
pub fn background_subscription(i: usize) -> Value {
    json!({
        "name": format!("carrier TMS {i}"),
        // An address, not a host name: the API resolves a URL's host when
        // it is written, and a benchmark machine may have no DNS (the
        // deployment must allow private networks).
        "url": format!(
            "https://10.20.{}.{}/carrier-{}/waybill/{i}",
            i % 1000 / 256,
            i % 256,
            i % 1000
        ),
        "event_types": [
            "freights.publication.*",
            "freight_orders.order.created",
            "time_slot_management.*",
        ],
        "filter": {"scopes": [{"predicates": [
            {"attribute": "dc_id", "comparator": "IN", "values": ["1", "2", "3"]},
        ]}]},
        "auth": {"type": "bearer", "token": format!("token-{i:08}-abcdefghijklmnop")},
        "headers": {"X-Team": "ops", "X-Carrier": format!("c-{}", i % 1000)},
        "metadata": {"team": "ops"},
    })
}

/// Creates `tenants` tenants, a key for each, then `count` subscriptions
/// spread over them, `concurrency` requests at a time.
pub async fn populate(
    client: &reqwest::Client,
    api: &str,
    operator_token: &str,
    count: usize,
    tenants: usize,
    concurrency: usize,
) -> anyhow::Result<PopulationReport> {
    let started = Instant::now();
    let tenants = tenants.clamp(1, count.max(1));
    let mut keys = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let tenant = post_json(
            client,
            &format!("{api}/v1/tenants"),
            operator_token,
            &json!({"name": format!("population {t}")}),
        )
        .await?;
        let id = tenant["id"].as_str().context("a tenant without id")?;
        let key = post_json(
            client,
            &format!("{api}/v1/tenants/{id}/api_keys"),
            operator_token,
            &json!({}),
        )
        .await?;
        keys.push(key["key"].as_str().context("a key without key")?.to_owned());
    }
    let creating = Instant::now();
    let mut done = 0usize;
    let mut latencies = Vec::with_capacity(count);
    let mut creates = futures::stream::iter(0..count)
        .map(|i| {
            let (key, body) = (&keys[i % tenants], background_subscription(i));
            async move {
                let sent = Instant::now();
                post_json(client, &format!("{api}/v1/subscriptions"), key, &body).await?;
                anyhow::Ok(sent.elapsed())
            }
        })
        .buffer_unordered(concurrency);
    while let Some(took) = creates.next().await {
        latencies.push(took?);
        done += 1;
        if done % 50_000 == 0 {
            tracing::info!(
                created = done,
                per_s = (done as f64 / creating.elapsed().as_secs_f64()).round(),
                "population"
            );
        }
    }
    Ok(PopulationReport {
        subscriptions: count,
        tenants,
        concurrency,
        created_per_s: count as f64 / creating.elapsed().as_secs_f64(),
        create_latency: Latency::of(latencies),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What R1 measured: `writes` subscription writes one after another (a
/// create, then a PATCH), each read back at once by a GET that must show
/// it.
#[derive(Debug, Clone)]
pub struct Writes {
    /// Writes made (creates and patches).
    pub writes: usize,
    /// Write sent → answered (the answer waits until the write is in the
    /// ingest's projection: what makes the next read see it).
    pub latency: Latency,
    /// Wall time.
    pub seconds: f64,
}

impl Writes {
    /// The results row of `workload` (R1): writes per second in the
    /// accepted column, their latency in the latency columns.
    pub fn report(&self, workload: &Workload) -> Report {
        Report {
            workload: workload.name.to_owned(),
            about: workload.about.to_owned(),
            events: self.writes,
            subscriptions: 0,
            concurrency: 1,
            accepted_per_s: self.writes as f64 / self.seconds,
            delivered_per_s: 0.0,
            ceiling_ratio: 0.0,
            delivered: 0,
            lost: 0,
            duplicates: 0,
            failed_on_purpose: 0,
            out_of_order: 0,
            latency: self.latency.clone(),
            longest_gap_ms: 0.0,
            delivery_replicas: 1,
            seconds: self.seconds,
        }
    }
}

/// R1: `pairs` subscriptions created, read back, patched, read back and
/// deleted, one request at a time; fails if a read does not see its write.
pub async fn read_your_writes(
    client: &reqwest::Client,
    target: &Target,
    pairs: usize,
) -> anyhow::Result<Writes> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(pairs * 2);
    let url = |path: &str| format!("{}/v1/subscriptions{path}", target.api);
    for i in 0..pairs {
        let mut body = background_subscription(i);
        body["url"] = json!(format!("https://10.30.0.1/r1/{i}"));
        let sent = Instant::now();
        let created = post_json(client, &url(""), &target.key, &body).await?;
        latencies.push(sent.elapsed());
        let id = created["id"]
            .as_str()
            .context("a subscription without id")?;
        let read = get_json(client, &url(&format!("/{id}")), &target.key).await?;
        if read["url"] != body["url"] {
            bail!("a read right after its create did not see it: {read}");
        }
        let name = format!("renamed {i}");
        let sent = Instant::now();
        let response = client
            .patch(url(&format!("/{id}")))
            .bearer_auth(&target.key)
            .json(&json!({"name": name}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("PATCH answered {}", response.status());
        }
        latencies.push(sent.elapsed());
        let read = get_json(client, &url(&format!("/{id}")), &target.key).await?;
        if read["name"] != json!(name) {
            bail!("a read right after its PATCH did not see it: {read}");
        }
        let _ = client
            .delete(url(&format!("/{id}")))
            .bearer_auth(&target.key)
            .send()
            .await?;
    }
    Ok(Writes {
        writes: latencies.len(),
        latency: Latency::of(latencies),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    // A 429 or 503 is waited out (a deployment under load), anything else
    // other than a success stops the run.
    for _ in 0..20 {
        let response = client
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if status.as_u16() == 429 || status.as_u16() == 503 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let answer: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {url} answered {status}: {answer}");
        }
        return Ok(answer);
    }
    bail!("POST {url} kept answering 429/503")
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let response = client.get(url).bearer_auth(token).send().await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url} answered {status}: {answer}");
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_subscriptions_are_distinct_and_realistic_in_size() {
        let (a, b) = (background_subscription(1), background_subscription(2));
        assert_ne!(a["url"], b["url"]);
        assert_ne!(a["auth"]["token"], b["auth"]["token"]);
        // Realistic in size: about the projection example's subscription.
        let size = a.to_string().len();
        assert!((350..700).contains(&size), "{size} bytes");
    }
}
