//! `waybill admin`: operators' commands against a deployment's API.
//!
//! `check` is what the chart's `helm test` runs: every service answers
//! `/readyz`, and a test delivery goes through the whole pipeline (API →
//! Kafka → delivery → history) to a receiver, with a throwaway API key of
//! a tenant of its own (`waybill-check`), removed afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Options of `waybill admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Base URL of the deployment's API (e.g. http://waybill-ingest).
    #[arg(long, env = "WAYBILL_API_URL")]
    pub api: String,
    /// The operator token (`ingest.operator_token`).
    #[arg(long, env = "WAYBILL_OPERATOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `waybill admin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Check a deployment: each admin URL answers /readyz, and a test
    /// delivery reaches the receiver (or at least its attempt is recorded).
    Check(CheckArgs),
}

/// Options of `waybill admin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Admin base URLs whose /readyz must answer 200 (each service's admin port).
    #[arg(long = "admin", value_name = "URL")]
    pub admin: Vec<String>,
    /// Where the test delivery goes (the deployment's URL policy applies).
    #[arg(long, default_value = "https://example.com/waybill-check")]
    pub receiver_url: String,
    /// Fail unless the receiver answers 2xx (by default any recorded attempt
    /// shows the pipeline works; a receiver the cluster cannot reach is
    /// reported, not failed).
    #[arg(long)]
    pub expect_success: bool,
    /// How long the test delivery may take to be recorded.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs `waybill admin`.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    match args.command {
        AdminCommand::Check(check) => self::check(&api, &args.token, &check).await,
    }
}

/// The tenant the checks run as.
const CHECK_TENANT: &str = "waybill-check";

async fn check(api: &Api, token: &str, args: &CheckArgs) -> anyhow::Result<()> {
    for admin in &args.admin {
        let url = format!("{}/readyz", admin.trim_end_matches('/'));
        let answer = api
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("{url} does not answer"))?;
        let status = answer.status();
        if status != StatusCode::OK {
            let body = answer.text().await.unwrap_or_default();
            bail!("{url} answers {status}: {}", body.trim());
        }
        say(&format!("ready: {url}"));
    }
    let tenant = check_tenant(api, token).await?;
    let key = api
        .call(
            token,
            Method::POST,
            &format!("/v1/tenants/{tenant}/api_keys"),
            Some(json!({})),
        )
        .await
        .context("creating the check's API key")?;
    let (key_id, secret) = (text(&key, "id")?, text(&key, "key")?);
    let result = test_delivery(api, &secret, args).await;
    // The key goes whatever happened.
    let removed = api
        .call(
            token,
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/api_keys/{key_id}"),
            None,
        )
        .await;
    let outcome = result?;
    removed.context("removing the check's API key")?;
    say(&outcome);
    Ok(())
}

/// The id of the `waybill-check` tenant, created the first time.
async fn check_tenant(api: &Api, token: &str) -> anyhow::Result<String> {
    let tenants = api
        .call(token, Method::GET, "/v1/tenants", None)
        .await
        .context("listing tenants with the operator token")?;
    let existing = tenants["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == CHECK_TENANT);
    let tenant = match existing {
        Some(t) => t.clone(),
        None => api
            .call(
                token,
                Method::POST,
                "/v1/tenants",
                Some(json!({"name": CHECK_TENANT})),
            )
            .await
            .context("creating the check's tenant")?,
    };
    let id = text(&tenant, "id")?;
    say(&format!("tenant: {CHECK_TENANT} ({id})"));
    Ok(id)
}

/// Subscribes the receiver, sends it a test event, waits for the attempt
/// and unsubscribes; answers the line to print.
async fn test_delivery(api: &Api, key: &str, args: &CheckArgs) -> anyhow::Result<String> {
    let subscription = api
        .call(
            key,
            Method::POST,
            "/v1/subscriptions",
            Some(json!({
                "url": args.receiver_url,
                "event_types": ["waybill.*"],
                "name": "waybill admin check (removed after the check)",
            })),
        )
        .await
        .context("subscribing the receiver")?;
    let id = text(&subscription, "id")?;
    let delivered = async {
        let test = api
            .call(
                key,
                Method::POST,
                &format!("/v1/subscriptions/{id}/test"),
                None,
            )
            .await
            .context("sending the test event")?;
        let delivery = text(&test, "delivery_id")?;
        wait_for_attempt(api, key, &delivery, args).await
    }
    .await;
    let unsubscribed = api
        .call(
            key,
            Method::DELETE,
            &format!("/v1/subscriptions/{id}"),
            None,
        )
        .await;
    let line = delivered?;
    unsubscribed.context("removing the check's subscription")?;
    Ok(line)
}

async fn wait_for_attempt(
    api: &Api,
    key: &str,
    delivery: &str,
    args: &CheckArgs,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let found = api
            .call(
                key,
                Method::GET,
                &format!("/v1/deliveries/{delivery}"),
                None,
            )
            .await;
        if let Ok(found) = found
            && let Some(first) = found["attempts"].as_array().and_then(|a| a.first())
        {
            let status = found["status"].as_str().unwrap_or("unknown");
            let code = first["status_code"].as_u64();
            let line = match code {
                Some(code) => format!(
                    "delivered: {delivery} to {} answered {code} ({status}) after {} ms",
                    args.receiver_url,
                    started.elapsed().as_millis()
                ),
                None => format!(
                    "attempted: {delivery} to {} failed ({}); Waybill's pipeline works, the receiver was not reached",
                    args.receiver_url,
                    first["error"].as_str().unwrap_or("no answer")
                ),
            };
            let succeeded = code.is_some_and(|c| (200..300).contains(&c));
            if args.expect_success && !succeeded {
                bail!("{line}");
            }
            return Ok(line);
        }
        if started.elapsed() > args.timeout {
            bail!(
                "the test delivery {delivery} has no recorded attempt after {:?}: is the delivery service consuming?",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A string field of an API answer.
fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the answer has no `{field}`: {value}"))
}

/// What the command reports, one line at a time.
#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

/// The deployment's API.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// One call; a non-2xx answer is an error carrying the API's message.
    async fn call(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(bearer);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let answer = request
            .send()
            .await
            .with_context(|| format!("{method} {path}: {} does not answer", self.base))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or(text.trim());
            bail!("{method} {path} answered {status}: {message}");
        }
        Ok(value)
    }
}
