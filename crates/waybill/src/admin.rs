//! `waybill admin`: operators' commands against a deployment's API (the
//! operator token for tenants and keys, a tenant's API key for its
//! subscriptions and deliveries) and, for `topics`, its Kafka cluster.
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
    #[arg(long, env = "WAYBILL_API_URL", global = true)]
    pub api: Option<String>,
    /// The operator token (`ingest.operator_token`): tenants, keys, check.
    #[arg(
        long,
        env = "WAYBILL_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// A tenant's API key: its subscriptions, deliveries, retries, replays.
    #[arg(long, env = "WAYBILL_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
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
    /// List the tenants, or create one (operator token).
    Tenants {
        /// Create a tenant of this name instead of listing.
        #[arg(long, value_name = "NAME")]
        create: Option<String>,
    },
    /// Create an API key of a tenant (shown once), or delete one (operator token).
    Keys {
        /// The tenant.
        tenant: String,
        /// Delete this key instead of creating one.
        #[arg(long, value_name = "KEY_ID")]
        delete: Option<String>,
    },
    /// A subscription's state, health and revision (tenant key).
    Subscription {
        /// Subscription id.
        id: String,
    },
    /// A subscription's deliveries, newest first (tenant key).
    Deliveries {
        /// Subscription id.
        subscription: String,
        /// Only these: succeeded, failed, pending, dead.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Deliver one again now, also from the dead letters (tenant key).
    Retry {
        /// Delivery id.
        delivery: String,
    },
    /// Re-deliver a subscription's events of a time window and follow the
    /// job (tenant key): a progress line on a terminal, plain lines otherwise.
    Replay(ReplayArgs),
    /// Kafka's view: each topic's partitions and each consumer group's lag
    /// on it (reads `--config`'s `[kafka]`, not the API).
    Topics,
}

/// Options of `waybill admin replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Subscription id.
    pub subscription: String,
    /// Start of the window (RFC 3339).
    #[arg(long)]
    pub since: String,
    /// End of the window (RFC 3339; default now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only what did not succeed.
    #[arg(long)]
    pub only_failed: bool,
    /// Start the job and return (print its id) without following it.
    #[arg(long)]
    pub no_follow: bool,
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

/// Runs `waybill admin`; `topics` reads the Kafka settings of `config`.
pub async fn run(
    args: AdminArgs,
    config: Option<&std::path::Path>,
    env: Vec<(String, String)>,
) -> anyhow::Result<()> {
    if let AdminCommand::Topics = args.command {
        return topics(config, env).await;
    }
    let api = Api::new(
        args.api
            .as_deref()
            .context("--api (or WAYBILL_API_URL) is needed")?,
    )?;
    let token = || {
        args.token
            .as_deref()
            .context("--token (or WAYBILL_OPERATOR_TOKEN), the operator token, is needed")
    };
    let key = || {
        args.key
            .as_deref()
            .context("--key (or WAYBILL_API_KEY), a tenant's API key, is needed")
    };
    match &args.command {
        AdminCommand::Check(check) => self::check(&api, token()?, check).await,
        AdminCommand::Tenants { create: None } => {
            let tenants = api.call(token()?, Method::GET, "/v1/tenants", None).await?;
            for t in tenants["tenants"].as_array().into_iter().flatten() {
                say(&format!(
                    "{}  {}  created {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or(""),
                    t["created_at"].as_str().unwrap_or("?")
                ));
            }
            Ok(())
        }
        AdminCommand::Tenants { create: Some(name) } => {
            let t = api
                .call(
                    token()?,
                    Method::POST,
                    "/v1/tenants",
                    Some(json!({"name": name})),
                )
                .await?;
            say(&format!("created tenant {} ({name})", text(&t, "id")?));
            Ok(())
        }
        AdminCommand::Keys {
            tenant,
            delete: None,
        } => {
            let k = api
                .call(
                    token()?,
                    Method::POST,
                    &format!("/v1/tenants/{tenant}/api_keys"),
                    Some(json!({})),
                )
                .await?;
            say(&format!("key id: {}", text(&k, "id")?));
            say(&format!("key: {}", text(&k, "key")?));
            say("(shown once: store it now)");
            Ok(())
        }
        AdminCommand::Keys {
            tenant,
            delete: Some(id),
        } => {
            api.call(
                token()?,
                Method::DELETE,
                &format!("/v1/tenants/{tenant}/api_keys/{id}"),
                None,
            )
            .await?;
            say(&format!("deleted key {id} of {tenant}"));
            Ok(())
        }
        AdminCommand::Subscription { id } => {
            let s = api
                .call(
                    key()?,
                    Method::GET,
                    &format!("/v1/subscriptions/{id}"),
                    None,
                )
                .await?;
            say(&serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        AdminCommand::Deliveries {
            subscription,
            status,
            limit,
        } => {
            let mut path = format!("/v1/subscriptions/{subscription}/deliveries?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let list = api.call(key()?, Method::GET, &path, None).await?;
            for d in list["deliveries"].as_array().into_iter().flatten() {
                say(&delivery_line(d));
            }
            Ok(())
        }
        AdminCommand::Retry { delivery } => {
            api.call(
                key()?,
                Method::POST,
                &format!("/v1/deliveries/{delivery}/retry"),
                None,
            )
            .await?;
            say(&format!("retry queued: {delivery}"));
            Ok(())
        }
        AdminCommand::Replay(replay) => self::replay(&api, key()?, replay).await,
        AdminCommand::Topics => unreachable!("handled above"),
    }
}

/// One delivery of a list (a `DeliverySummary`), on one line.
fn delivery_line(d: &Value) -> String {
    let last = match d["last_status_code"].as_u64() {
        Some(code) => code.to_string(),
        None => "-".to_owned(),
    };
    format!(
        "{}  {:<9}  {}  attempts {}  last {last}",
        d["id"].as_str().unwrap_or("?"),
        d["status"].as_str().unwrap_or("?"),
        d["event_name"].as_str().unwrap_or("?"),
        d["attempt_count"].as_u64().unwrap_or(0),
    )
}

/// Starts a replay job and follows it until it is done (or failed).
async fn replay(api: &Api, key: &str, args: &ReplayArgs) -> anyhow::Result<()> {
    let mut body = json!({"since": args.since, "only_failed": args.only_failed});
    if let Some(until) = &args.until {
        body["until"] = json!(until);
    }
    let started = api
        .call(
            key,
            Method::POST,
            &format!("/v1/subscriptions/{}/replay", args.subscription),
            Some(body),
        )
        .await?;
    let id = text(&started, "replay_id")?;
    say(&format!("replay {id} started"));
    if args.no_follow {
        return Ok(());
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last = String::new();
    loop {
        let job = api
            .call(key, Method::GET, &format!("/v1/replays/{id}"), None)
            .await?;
        let status = job["status"].as_str().unwrap_or("running");
        let line = format!(
            "{status}: {} scanned, {} queued",
            job["scanned"].as_u64().unwrap_or(0),
            job["queued"].as_u64().unwrap_or(0)
        );
        if line != last {
            progress(&line, terminal, status != "running");
            last = line;
        }
        match status {
            "done" => return Ok(()),
            "failed" => bail!(
                "replay {id} failed: {}",
                job["error"].as_str().unwrap_or("no reason given")
            ),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A progress line: rewritten in place on a terminal, one line per change
/// otherwise (logs, pipes).
#[allow(clippy::print_stdout)]
fn progress(line: &str, terminal: bool, last: bool) {
    use std::io::Write as _;
    if terminal {
        print!("\r\x1b[2K{line}");
        if last {
            println!();
        }
        drop(std::io::stdout().flush());
    } else {
        println!("{line}");
    }
}

/// Each topic's partitions and each group's lag on it, from Kafka.
async fn topics(
    config: Option<&std::path::Path>,
    env: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let crate::config::TopicsConfig(config) =
        waybill_runtime::config::load(toml::Table::new(), config, env)?;
    let kafka = config.kafka.clone();
    let topics = waybill_kafka::Topics::of(&kafka);
    let mut delivery_topics = vec![topics.deliveries()];
    delivery_topics.extend(topics.retries());
    let groups = [
        (kafka.group_id(&config.matcher.group_id), topics.domains()),
        (kafka.group_id(&config.delivery.group_id), delivery_topics),
    ];
    let report = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for (group, names) in &groups {
            let lags = waybill_kafka::lag::group_lag(&kafka, group, names)?;
            for name in names {
                let of_topic: Vec<_> = lags.iter().filter(|l| &l.topic == name).collect();
                let lag: i64 = of_topic.iter().map(|l| l.lag).sum();
                lines.push(format!(
                    "{name:<40} partitions {:>3}  {group} lag {lag}",
                    of_topic.len()
                ));
            }
        }
        Ok::<_, waybill_kafka::Error>(lines)
    })
    .await??;
    for line in report {
        say(&line);
    }
    Ok(())
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
