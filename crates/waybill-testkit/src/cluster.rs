//! A Waybill deployment as separate processes: a tansu broker and the
//! `waybill ingest`, `waybill matcher` and `waybill delivery` services, each
//! of which can be killed, stopped and restarted (the end-to-end and chaos
//! tests).
//!
//! tansu is found through `WAYBILL_TANSU_BIN`, else at
//! `$HOME/.cache/waybill/tansu-0.6.0/bin/tansu` (`scripts/ensure-tansu.sh`
//! installs it there).

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tenant API key of the cluster's tenant.
pub const KEY: &str = "wb_e2e_key_0123456789";
/// The cluster's tenant.
pub const TENANT: &str = "ten_e2e";
/// The operator token.
pub const OPERATOR: &str = "wbop_e2e_operator_token_0123456789";

/// The tansu binary (see the module docs).
pub fn tansu_bin() -> PathBuf {
    if let Ok(path) = std::env::var("WAYBILL_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = Path::new(&home).join(".cache/waybill/tansu-0.6.0/bin/tansu");
    assert!(
        path.exists(),
        "tansu 0.6.0 not found at {}; run `scripts/ensure-tansu.sh` (or `make test`), or set WAYBILL_TANSU_BIN",
        path.display()
    );
    path
}

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
    /// The tansu broker.
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

/// Where tansu keeps its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory: lost when the broker stops.
    Memory,
    /// A SQLite file (`tansu.db`) in this directory: survives a broker
    /// restart. (On a tmpfs such as `/dev/shm`, its fsyncs cost nothing:
    /// on a disk, tansu 0.6.0 writes a few dozen records per second.)
    Sqlite(PathBuf),
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `waybill` binary.
    pub waybill: PathBuf,
    /// tansu's storage.
    pub storage: Storage,
    /// Partitions of the domain topics and `deliveries`.
    pub partitions: u32,
    /// More TOML appended to the configuration.
    pub extra_config: String,
    /// `RUST_LOG` of the services.
    pub log: String,
}

impl Options {
    /// Defaults: in-memory broker, 3 partitions.
    pub fn new(waybill: impl Into<PathBuf>) -> Self {
        Self {
            waybill: waybill.into(),
            storage: Storage::Memory,
            partitions: 3,
            extra_config: String::new(),
            log: "info".into(),
        }
    }
}

/// The running processes; every one is killed when this is dropped.
pub struct Cluster {
    options: Options,
    dir: PathBuf,
    config: PathBuf,
    broker_port: u16,
    ports: [u16; 3],
    procs: Vec<(Role, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Starts the broker, creates the topics (`waybill create-topics`, as the
    /// Helm chart's Job does), and starts the three services, waiting until
    /// each is ready. Logs go to `<dir>/<role>.log`.
    pub async fn start(dir: &Path, options: Options) -> Self {
        let broker_port = free_port();
        let ports = [free_port(), free_port(), free_port()];
        let config = dir.join("waybill.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "127.0.0.1:{broker_port}"
partitions = {partitions}
retry_tiers = ["100ms", "1s", "10s"]
subscriptions_partitions = 1
create_topics = false
replication_factor = 1

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

[ingest]
listen = "127.0.0.1:{api}"
api_keys = [{{ id = "key_e2e", key = "{KEY}", tenant_id = "{TENANT}" }}]
operator_token = "{OPERATOR}"

[matcher]
listen = "127.0.0.1:{matcher}"

[delivery]
listen = "127.0.0.1:{delivery}"
{extra}
"#,
                partitions = options.partitions,
                key = waybill_core::sealing::Keyring::generate_key(),
                api = ports[0],
                matcher = ports[1],
                delivery = ports[2],
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
            broker_port,
            ports,
            procs: Vec::new(),
        };
        cluster.restart(Role::Broker).await;
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

    /// The health port of a service.
    fn health_url(&self, role: Role) -> Option<String> {
        let port = match role {
            Role::Broker => return None,
            Role::Ingest => self.ports[0],
            Role::Matcher => self.ports[1],
            Role::Delivery => self.ports[2],
        };
        Some(format!("http://127.0.0.1:{port}"))
    }

    /// `127.0.0.1:<port>` of the broker.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    /// A `waybill <subcommand> --config <file>` command.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(&self.options.waybill);
        c.args([subcommand, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", &self.options.log);
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
        Role::ALL
            .iter()
            .map(|r| format!("--- {r}\n{}", self.log_tail(*r, 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the role has a running process.
    fn is_running(&mut self, role: Role) -> bool {
        self.procs
            .iter_mut()
            .any(|(r, child)| *r == role && matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: the process dies at once, without draining or committing.
    pub fn kill(&mut self, role: Role) {
        if let Some(i) = self.procs.iter().position(|(r, _)| *r == role) {
            let (_, mut child) = self.procs.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (status 0).
    pub fn terminate(&mut self, role: Role, grace: Duration) -> Result<(), String> {
        let Some(i) = self.procs.iter().position(|(r, _)| *r == role) else {
            return Ok(());
        };
        let (_, mut child) = self.procs.remove(i);
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("kill -TERM {role} failed"));
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{role} exited with {status}\n{}",
                        self.log_tail(role, 40)
                    ))
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{role} did not exit within {grace:?}\n{}",
                    self.log_tail(role, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the role (killing a running process of it first) and waits
    /// until it is ready: the broker listens, a service answers `/readyz`.
    pub async fn restart(&mut self, role: Role) {
        self.kill(role);
        let log_path = self.log_path(role);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut command = match role {
            Role::Broker => {
                let url = format!("tcp://127.0.0.1:{}", self.broker_port);
                let (storage, workdir) = match &self.options.storage {
                    Storage::Memory => ("memory://tansu/".to_owned(), self.dir.clone()),
                    // Relative to the broker's working directory (tansu
                    // reads `sqlite:///tmp/x` as `tmp/x`).
                    Storage::Sqlite(dir) => ("sqlite://tansu.db".to_owned(), dir.clone()),
                };
                let mut c = Command::new(tansu_bin());
                c.current_dir(workdir).args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    &storage,
                ]);
                c
            }
            service => self.command(service.name()),
        };
        let child = command
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
                None => tokio::net::TcpStream::connect(self.brokers()).await.is_ok(),
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
