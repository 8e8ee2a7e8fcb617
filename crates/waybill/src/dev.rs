//! `waybill dev`: the whole system in one process on an embedded broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waybill_core::sealing::Keyring;
use waybill_kafka::Topics;
use waybill_kafka::embedded::EmbeddedBroker;
use waybill_runtime::config::ConfigErrors;

use crate::{Config, Service};

/// The API key `waybill dev` gives its tenant unless `--api-key` says
/// otherwise, so the README's walkthrough works as written. The dev API
/// listens on loopback only; never use this key elsewhere.
pub const DEV_API_KEY: &str = "wb_dev_0123456789abcdef0123456789";
/// The tenant `waybill dev` creates at start-up.
pub const DEV_TENANT: &str = "ten_dev";

/// Options of `waybill dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Port of the HTTP API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// API key of the dev tenant (at least 16 characters).
    #[arg(long, default_value = DEV_API_KEY)]
    pub api_key: String,
}

/// A running dev stack.
pub struct DevStack {
    /// Address of the HTTP API.
    pub api: SocketAddr,
    /// Addresses of the admin endpoints (`/metrics`, `/healthz`, `/readyz`):
    /// matcher, delivery, ingest.
    pub admin: Vec<SocketAddr>,
    /// The dev tenant's API key.
    pub api_key: String,
    /// The operator token (manages tenants).
    pub operator_token: String,
    /// The embedded broker's bootstrap address.
    pub brokers: String,
    /// The configuration the services run with.
    pub config: Config,
    shutdown: CancellationToken,
    services: Vec<(Service, JoinHandle<anyhow::Result<()>>)>,
    broker: EmbeddedBroker,
}

/// Dev defaults, beneath the user's file and environment.
pub fn base_config(port: u16) -> toml::Table {
    let text = format!(
        r#"
[kafka]
partitions = 4
subscriptions_partitions = 1

# The embedded (mock) broker answers a fetch only when fetch.wait.max.ms
# runs out, even when records arrive earlier (a real broker answers at once),
# so every hop would add the whole wait. 10 ms keeps an event's trip through
# the two hops around 30 ms for about 3 % more idle CPU than 100 ms.
[kafka.properties]
"fetch.wait.max.ms" = "10"

[secrets]
current_key_id = "dev"
keys = {{ dev = "{key}" }}

[url_policy]
allow_http = true
allow_private_networks = true
allow_any_port = true

[ingest]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
operator_token = "wbop_{operator}"

[matcher]
listen = "127.0.0.1:0"

[delivery]
listen = "127.0.0.1:0"
"#,
        key = Keyring::generate_key(),
        operator = &waybill_core::ids::new_api_key()[3..],
    );
    text.parse()
        .expect("the dev base configuration is valid TOML")
}

/// The dev defaults for `waybill bench`: the load tool is one tenant
/// calling as fast as the system answers, so its calls are not limited.
pub fn bench_config() -> toml::Table {
    let mut config = base_config(0);
    let ingest = config["ingest"]
        .as_table_mut()
        .expect("the dev configuration has [ingest]");
    let mut quotas = toml::Table::new();
    quotas.insert("requests_per_second".into(), 0.into());
    ingest.insert("quotas".into(), quotas.into());
    config
}

/// Starts the broker and the three services, then creates the dev tenant
/// with `api_key` through the tenant API; returns once all are ready.
pub async fn start(mut config: Config, api_key: &str) -> anyhow::Result<DevStack> {
    let broker = EmbeddedBroker::start().context("cannot start the embedded broker")?;
    config.kafka.brokers = broker.bootstrap_servers();
    config.kafka.create_topics = false;
    let topics = Topics::of(&config.kafka);
    broker.create_topics(&topics.specs(&config.kafka))?;
    tracing::info!(brokers = %config.kafka.brokers, "embedded broker started");

    let shutdown = CancellationToken::new();
    let api_listener = bind(config.ingest.listen).await?;
    let ingest_admin_listener = bind(config.ingest.admin_listen).await?;
    let matcher_listener = bind(config.matcher.listen).await?;
    let delivery_listener = bind(config.delivery.listen).await?;
    let api = api_listener.local_addr()?;
    let admin = vec![
        matcher_listener.local_addr()?,
        delivery_listener.local_addr()?,
        ingest_admin_listener.local_addr()?,
    ];

    // One registry for the process: each service's /metrics shows all three.
    let metrics = waybill_runtime::metrics::Metrics::new();
    let mut services = Vec::new();
    for (service, listener, admin) in [
        (Service::Ingest, api_listener, Some(ingest_admin_listener)),
        (Service::Matcher, matcher_listener, None),
        (Service::Delivery, delivery_listener, None),
    ] {
        let config = config.clone();
        let stop = shutdown.clone();
        let metrics = metrics.clone();
        services.push((
            service,
            tokio::spawn(async move {
                crate::run_service(service, &config, listener, admin, &metrics, stop).await
            }),
        ));
    }

    let stack = DevStack {
        api,
        admin,
        api_key: api_key.to_owned(),
        operator_token: config
            .ingest
            .operator_token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .context("the dev configuration needs ingest.operator_token")?,
        brokers: config.kafka.brokers.clone(),
        config,
        shutdown,
        services,
        broker,
    };
    stack.wait_ready(Duration::from_secs(60)).await?;
    stack.create_tenant().await?;
    Ok(stack)
}

impl DevStack {
    /// `http://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The embedded broker (for fault injection in tests).
    pub fn broker(&self) -> &EmbeddedBroker {
        &self.broker
    }

    /// Creates the dev tenant and its key, as an operator would.
    async fn create_tenant(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let post = |path: String, body: serde_json::Value| {
            client
                .post(format!("{}{path}", self.api_url()))
                .bearer_auth(&self.operator_token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        for (path, body) in [
            (
                "/v1/tenants".to_owned(),
                serde_json::json!({"id": DEV_TENANT, "name": "dev"}),
            ),
            (
                format!("/v1/tenants/{DEV_TENANT}/api_keys"),
                serde_json::json!({"key": self.api_key}),
            ),
        ] {
            let response = post(path.clone(), body).await?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                anyhow::bail!("creating the dev tenant: POST {path} answered {status}: {text}");
            }
        }
        tracing::info!(tenant_id = DEV_TENANT, "dev tenant created");
        Ok(())
    }

    /// A portal session URL for the dev tenant (24 h, the longest), opened
    /// through the API as a platform would.
    pub async fn portal_url(&self) -> anyhow::Result<String> {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?
            .post(format!("{}/v1/portal/sessions", self.api_url()))
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(serde_json::json!({"expires_in": "24h"}).to_string())
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match body["url"].as_str() {
            Some(url) if status.as_u16() == 201 => Ok(url.to_owned()),
            _ => anyhow::bail!("opening a portal session answered {status}: {body}"),
        }
    }

    /// Waits until every service's `/readyz` answers 200 (polled every
    /// 20 ms), or fails when one stops first or `timeout` passes.
    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        for addr in &self.admin {
            let url = format!("http://{addr}/readyz");
            loop {
                if self.services.iter().any(|(_, h)| h.is_finished()) {
                    anyhow::bail!("a service stopped during start-up");
                }
                let ready = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!("timed out after {timeout:?} waiting for {url} to answer 200");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Stops every service (draining in-flight work) and the broker.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (result, broker) = self.stop_services().await;
        drop(broker);
        result
    }

    /// Stops every service (draining in-flight work); the broker is handed
    /// back still running, for clients that background tasks drop later.
    async fn stop_services(self) -> (anyhow::Result<()>, EmbeddedBroker) {
        self.shutdown.cancel();
        let mut result = Ok(());
        for (service, handle) in self.services {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e.context(format!("{service:?} failed"))),
                Err(e) => result = Err(anyhow::anyhow!("{service:?} panicked: {e}")),
            }
        }
        (result, self.broker)
    }

    /// Waits until a service stops on its own (an error) or `shutdown` fires.
    async fn supervise(&mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            if let Some(i) = self.services.iter().position(|(_, h)| h.is_finished()) {
                let (service, handle) = self.services.remove(i);
                return match handle.await {
                    Ok(Ok(())) => Err(anyhow::anyhow!("{service:?} stopped unexpectedly")),
                    Ok(Err(e)) => Err(e.context(format!("{service:?} failed"))),
                    Err(e) => Err(anyhow::anyhow!("{service:?} panicked: {e}")),
                };
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; is another waybill running? (try --port)")
    })
}

/// `waybill dev`.
pub async fn run(
    args: DevArgs,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let config = crate::load(base_config(args.port), file.as_deref(), env)?;
    let mut problems = Vec::new();
    for service in [Service::Ingest, Service::Matcher, Service::Delivery] {
        problems.extend(config.service_problems(service));
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems).into());
    }
    let shutdown = waybill_runtime::shutdown::on_signal();
    let mut stack = start(config, &args.api_key).await?;
    let portal = stack.portal_url().await?;
    // The greeting; a closed stdout (`waybill dev | head`) is not an error.
    let greeting = format!(
        "\nWaybill dev is running (embedded Kafka broker, in memory; Ctrl-C stops it)\n\
         api: {}\n\
         api key: {}\n\
         portal: {portal}\n\
         tenant: {DEV_TENANT}\n\
         operator token: {}\n\
         kafka: {}\n\
         metrics: http://{}/metrics\n\
         receiver for trying it: waybill listen --port 9000\n\n",
        stack.api_url(),
        stack.api_key,
        stack.operator_token,
        stack.brokers,
        stack.admin[2],
    );
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        drop(
            out.write_all(greeting.as_bytes())
                .and_then(|()| out.flush()),
        );
    }
    let result = stack.supervise(shutdown).await;
    let (stopped, broker) = stack.stop_services().await;
    // The broker lives until the process exits: the Kafka clients of
    // background tasks (projection followers, samplers) close when the
    // runtime drops them, after this returns, and would log a broker that
    // vanished under them as errors.
    std::mem::forget(broker);
    result.and(stopped)
}
