//! A Waybill deployment as separate processes: Apache Kafka (one KRaft node,
//! or three with replication 3, see [`crate::kafka`]) and the
//! `waybill ingest`, `waybill matcher` and `waybill delivery` services, each
//! of which can be killed, stopped and restarted (the end-to-end and chaos
//! tests).

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::KafkaCluster;

/// The tenant API key of the cluster's tenant.
pub const KEY: &str = "wb_e2e_key_0123456789abcdef012345";
/// The cluster's tenant.
pub const TENANT: &str = "ten_e2e";
/// The operator token.
pub const OPERATOR: &str = "wbop_e2e_operator_token_0123456789";

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// One process of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Every Kafka node at once (see [`Cluster::kafka_mut`] for one).
    Broker,
    /// `waybill ingest`.
    Ingest,
    /// `waybill matcher`.
    Matcher,
    /// `waybill delivery`.
    Delivery,
}

impl Role {
    /// Every role, broker first.
    pub const ALL: [Role; 4] = [Role::Broker, Role::Ingest, Role::Matcher, Role::Delivery];

    /// The name of the role (and of its subcommand for services).
    pub fn name(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Ingest => "ingest",
            Role::Matcher => "matcher",
            Role::Delivery => "delivery",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `waybill` binary.
    pub waybill: PathBuf,
    /// Kafka nodes: 1, or 3 (replication factor 3, `min.insync.replicas` 2).
    pub kafka_nodes: u32,
    /// Partitions of the domain topics and `deliveries`.
    pub partitions: u32,
    /// More TOML appended to the configuration.
    pub extra_config: String,
    /// `RUST_LOG` of the services.
    pub log: String,
    /// More environment of every service process (e.g. `OTEL_*`).
    pub env: Vec<(String, String)>,
}

impl Options {
    /// Defaults: one Kafka node, 3 partitions.
    pub fn new(waybill: impl Into<PathBuf>) -> Self {
        Self {
            waybill: waybill.into(),
            kafka_nodes: 1,
            partitions: 3,
            extra_config: String::new(),
            log: "info".into(),
            env: Vec::new(),
        }
    }
}

/// The running processes; every one is killed when this is dropped.
pub struct Cluster {
    options: Options,
    dir: PathBuf,
    config: PathBuf,
    ports: [u16; 4],
    procs: Vec<(Role, Child)>,
    /// More `waybill ingest` and `waybill delivery` processes, with their
    /// admin ports.
    replicas: Vec<(u16, Child)>,
    kafka: Option<KafkaCluster>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The services first, so none logs the broker's disappearance.
        for child in self
            .procs
            .iter_mut()
            .map(|(_, c)| c)
            .chain(self.replicas.iter_mut().map(|(_, c)| c))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.keep_logs();
        }
    }
}

impl Cluster {
    /// A failing test's logs outlive its temporary directory: every `*.log`
    /// of the cluster (the services', each Kafka node's) is copied to
    /// `$WAYBILL_TEST_LOGS` (default: the system's temp dir) under
    /// `waybill-failed-<pid>-<n>/`, whose path is printed.
    fn keep_logs(&self) {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base =
            std::env::var_os("WAYBILL_TEST_LOGS").map_or_else(std::env::temp_dir, PathBuf::from);
        let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kept = base.join(format!("waybill-failed-{}-{n}", std::process::id()));
        if std::fs::create_dir_all(&kept).is_err() {
            return;
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "log" || e == "toml" || e == "properties")
            {
                let _ = std::fs::copy(&path, kept.join(entry.file_name()));
            }
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "the cluster's logs (services and Kafka nodes) are kept in {}",
                kept.display()
            );
        }
    }
}

impl Cluster {
    /// Starts Kafka, creates the topics (`waybill create-topics`, as the
    /// Helm chart's Job does), and starts the three services, waiting until
    /// each is ready. Logs go to `<dir>/<role>.log` and
    /// `<dir>/kafka-<node>.log`.
    pub async fn start(dir: &Path, options: Options) -> Self {
        let kafka = KafkaCluster::start(dir, options.kafka_nodes).await;
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let config = dir.join("waybill.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{brokers}"
partitions = {partitions}
retry_tiers = ["100ms", "1s", "10s"]
subscriptions_partitions = 1
create_topics = false
replication_factor = {replication}

[kafka.properties]
# A killed member's partitions move after 6 s, not librdkafka's 45 s.
"session.timeout.ms" = "6000"
{debug}

[secrets]
current_key_id = "k1"
keys = {{ k1 = "{key}" }}

[url_policy]
allow_http = true
allow_private_networks = true
allow_any_port = true

[ingest]
listen = "127.0.0.1:{api}"
admin_listen = "127.0.0.1:{ingest_admin}"
api_keys = [{{ id = "key_e2e", key = "{KEY}", tenant_id = "{TENANT}" }}]
operator_token = "{OPERATOR}"
# A killed ingest's replays are taken over after 3 s, not 15 s.
replay_lease = "3s"

[matcher]
listen = "127.0.0.1:{matcher}"

[delivery]
listen = "127.0.0.1:{delivery}"
{extra}
"#,
                brokers = kafka.bootstrap(),
                replication = options.kafka_nodes.min(3),
                partitions = options.partitions,
                key = waybill_core::sealing::Keyring::generate_key(),
                api = ports[0],
                matcher = ports[1],
                delivery = ports[2],
                ingest_admin = ports[3],
                extra = options.extra_config,
                // librdkafka's debug contexts (e.g. `cgrp`) into the logs.
                debug = std::env::var("TESTKIT_KAFKA_DEBUG")
                    .map(|d| format!("debug = \"{d}\""))
                    .unwrap_or_default(),
            ),
        )
        .expect("config written");
        let mut cluster = Self {
            options,
            dir: dir.to_owned(),
            config,
            ports,
            procs: Vec::new(),
            replicas: Vec::new(),
            kafka: Some(kafka),
        };
        // Twice: it is idempotent.
        for _ in 0..2 {
            let out = cluster
                .command("create-topics")
                .output()
                .expect("create-topics runs");
            assert!(
                out.status.success(),
                "create-topics: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for role in [Role::Ingest, Role::Matcher, Role::Delivery] {
            cluster.restart(role).await;
        }
        cluster
    }

    /// `http://127.0.0.1:<port>` of the ingest API.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// Starts one more ingest replica (same configuration, its own port,
    /// log `ingest-<n>.log`) and returns its API's URL once it is ready.
    pub async fn start_ingest_replica(&mut self) -> String {
        let port = free_port();
        let admin_port = free_port();
        let env = [
            ("WAYBILL_INGEST__LISTEN", format!("127.0.0.1:{port}")),
            (
                "WAYBILL_INGEST__ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            ),
        ];
        self.start_replica("ingest", &env, admin_port).await;
        format!("http://127.0.0.1:{port}")
    }

    /// Starts one more delivery process (same configuration and group,
    /// its own admin port, log `delivery-<n>.log`) and returns its admin
    /// URL (`/metrics`) once it is ready.
    pub async fn start_delivery_replica(&mut self) -> String {
        let admin_port = free_port();
        let env = [(
            "WAYBILL_DELIVERY__LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )];
        self.start_replica("delivery", &env, admin_port).await;
        format!("http://127.0.0.1:{admin_port}")
    }

    async fn start_replica(&mut self, subcommand: &str, env: &[(&str, String)], admin_port: u16) {
        let n = self.replicas.len() + 2;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{subcommand}-{n}.log")))
            .expect("log file");
        let mut command = self.command(subcommand);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {subcommand} replica: {e}"));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{admin_port}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline,
                "{subcommand} replica {n} not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.replicas.push((admin_port, child));
    }

    /// `http://127.0.0.1:<port>` of a service's admin port (`/healthz`,
    /// `/readyz`, `/metrics`); `None` for the broker.
    pub fn health_url(&self, role: Role) -> Option<String> {
        let port = match role {
            Role::Broker => return None,
            Role::Ingest => self.ports[3],
            Role::Matcher => self.ports[1],
            Role::Delivery => self.ports[2],
        };
        Some(format!("http://127.0.0.1:{port}"))
    }

    /// The bootstrap servers of the Kafka cluster.
    pub fn brokers(&self) -> String {
        self.kafka().bootstrap()
    }

    /// The Kafka nodes.
    pub fn kafka(&self) -> &KafkaCluster {
        self.kafka.as_ref().expect("the Kafka cluster")
    }

    /// The Kafka nodes, to kill, stop or restart one of them.
    pub fn kafka_mut(&mut self) -> &mut KafkaCluster {
        self.kafka.as_mut().expect("the Kafka cluster")
    }

    /// The configuration file every process reads (edit it, then
    /// [`restart`](Self::restart) the roles, to roll a change out).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The directory of the logs (and of the Kafka nodes' data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `waybill <subcommand> --config <file>` command.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(&self.options.waybill);
        c.args([subcommand, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", &self.options.log)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn log_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{role}.log"))
    }

    /// The last lines of a role's log.
    pub fn log_tail(&self, role: Role, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(role)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last lines of every log.
    pub fn logs(&self) -> String {
        let mut out: Vec<String> = Role::ALL[1..]
            .iter()
            .map(|r| format!("--- {r}\n{}", self.log_tail(*r, 40)))
            .collect();
        for node in self.kafka().nodes() {
            out.push(format!(
                "--- kafka node {node}\n{}",
                self.kafka().log_tail(node, 20)
            ));
        }
        out.join("\n")
    }

    /// Whether the role has a running process.
    fn is_running(&mut self, role: Role) -> bool {
        self.procs
            .iter_mut()
            .any(|(r, child)| *r == role && matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: the process dies at once, without draining or committing
    /// (every Kafka node for [`Role::Broker`]).
    pub fn kill(&mut self, role: Role) {
        if role == Role::Broker {
            for node in self.kafka().nodes() {
                self.kafka_mut().kill(node);
            }
            return;
        }
        if let Some(i) = self.procs.iter().position(|(r, _)| *r == role) {
            let (_, mut child) = self.procs.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (status 0).
    pub fn terminate(&mut self, role: Role, grace: Duration) -> Result<(), String> {
        if role == Role::Broker {
            for node in self.kafka().nodes() {
                self.kafka_mut().stop(node, grace)?;
            }
            return Ok(());
        }
        let Some(i) = self.procs.iter().position(|(r, _)| *r == role) else {
            return Ok(());
        };
        let (_, mut child) = self.procs.remove(i);
        match crate::kafka::terminate(&mut child, grace) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!(
                "{role} exited with {status}\n{}",
                self.log_tail(role, 40)
            )),
            None => Err(format!(
                "{role} did not exit within {grace:?}\n{}",
                self.log_tail(role, 40)
            )),
        }
    }

    /// Starts the role (killing a running process of it first) and waits
    /// until it is ready: every Kafka node serves, a service answers
    /// `/readyz`.
    pub async fn restart(&mut self, role: Role) {
        if role == Role::Broker {
            let kafka = self.kafka_mut();
            for node in kafka.nodes() {
                kafka.kill(node);
            }
            for node in kafka.nodes() {
                kafka.restart(node).await;
            }
            return;
        }
        self.kill(role);
        let log_path = self.log_path(role);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = self
            .command(role.name())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {role}: {e}"));
        self.procs.push((role, child));
        self.wait_ready(role, Duration::from_secs(60)).await;
    }

    /// Waits until the role is ready; panics with the logs if it exits or
    /// the wait runs out.
    pub async fn wait_ready(&mut self, role: Role, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        loop {
            let ready = match self.health_url(role) {
                None => {
                    let kafka = self.kafka_mut();
                    for node in kafka.nodes() {
                        kafka.wait_serving(node).await;
                    }
                    true
                }
                Some(base) => client
                    .get(format!("{base}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            };
            if ready {
                return;
            }
            if !self.is_running(role) {
                panic!("{role} exited early:\n{}", self.log_tail(role, 60));
            }
            assert!(
                Instant::now() < deadline,
                "{role} not ready within {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
