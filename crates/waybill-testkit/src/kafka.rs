//! Apache Kafka brokers as child processes: one KRaft node (broker and
//! controller in one process), or three on 127.0.0.1 with replication 3 and
//! `min.insync.replicas` 2, each of which can be killed (SIGKILL), stopped
//! (SIGTERM) and restarted on its own log directory.
//!
//! The broker is the `kafka_2.13` artifact and its dependencies from Maven
//! Central (`scripts/ensure-kafka.sh` collects them into one folder), run by
//! the machine's JDK as `java -cp '<libs>/*' kafka.Kafka <node>.properties`.
//! The folder is found through `WAYBILL_KAFKA_LIBS`, else at
//! `$HOME/.cache/waybill/kafka-4.1.1/libs`; `JAVA` names the `java` binary
//! (default: `java` on the `PATH`).
//!
//! Readiness is a TCP connect to the node's client port, which a broker opens
//! last in its start-up: never a sleep. Each node logs to
//! `<dir>/kafka-<node>.log`, beside the services' logs, so a failing run
//! keeps them (the chaos tests keep the whole directory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

/// The pinned Apache Kafka version (`scripts/ensure-kafka.sh`).
pub const VERSION: &str = "4.1.1";

/// The folder of the broker's jars (see the module docs).
pub fn libs() -> PathBuf {
    if let Ok(path) = std::env::var("WAYBILL_KAFKA_LIBS") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = Path::new(&home).join(format!(".cache/waybill/kafka-{VERSION}/libs"));
    assert!(
        path.join(format!("kafka_2.13-{VERSION}.jar")).exists(),
        "Apache Kafka {VERSION} jars not found in {}; run `scripts/ensure-kafka.sh` (or `make test`), or set WAYBILL_KAFKA_LIBS",
        path.display()
    );
    path
}

/// The `java` binary.
pub fn java() -> PathBuf {
    std::env::var_os("JAVA").map_or_else(|| PathBuf::from("java"), PathBuf::from)
}

/// The classpath argument of the broker's jars (`<libs>/*`: the JVM expands
/// the wildcard itself).
pub fn classpath() -> String {
    format!("{}/*", libs().display())
}

/// Runs a one-file Java program (`java <source> <args>`, JDK 11+ source
/// launch) with the broker's jars (kafka-clients among them) on the
/// classpath, and returns what it printed.
pub fn run_java(source: &Path, args: &[&str]) -> std::process::Output {
    Command::new(java())
        // The client's logs through log4j2, warnings only.
        .arg("-Dlog4j2.level=WARN")
        .args(["-cp", &classpath()])
        .arg(source)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run java ({}): {e}", java().display()))
}

/// One KRaft node.
struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    properties: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Running Kafka nodes; every process is killed when this is dropped.
pub struct KafkaCluster {
    nodes: Vec<Node>,
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// 16 random bytes, URL-safe base64 without padding: a KRaft cluster id
/// (never starting with `-`, which the storage tool would read as an
/// option, as Kafka's own `Uuid.randomUuid` avoids too).
fn cluster_id() -> String {
    loop {
        let id = random_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        // RandomState's keys are seeded from the OS's randomness per process
        // and per instance: enough for a test cluster's id.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    base64_url(&bytes)
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The broker's logging: warnings and errors, plus the lines that say what
/// a node did at start and stop (so a log tail tells a crash from a
/// shutdown).
const LOG4J2: &str = r#"Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger:
      - {name: kafka.server.KafkaRaftServer, level: INFO}
      - {name: kafka.server.BrokerServer, level: INFO}
"#;

impl KafkaCluster {
    /// Formats and starts `nodes` KRaft nodes (1 or 3) with their logs and
    /// data under `dir`, and waits until every one serves.
    pub async fn start(dir: &Path, nodes: u32) -> Self {
        assert!(nodes == 1 || nodes == 3, "1 or 3 Kafka nodes, not {nodes}");
        let log4j = dir.join("kafka-log4j2.yaml");
        std::fs::write(&log4j, LOG4J2).expect("log4j2 config written");
        let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let replication = nodes.min(3);
        let min_isr = replication.min(2);
        let mut cluster = Self { nodes: Vec::new() };
        for (i, (port, controller_port)) in ports.into_iter().enumerate() {
            let id = i as u32 + 1;
            let data = dir.join(format!("kafka-{id}-data"));
            let properties = dir.join(format!("kafka-{id}.properties"));
            std::fs::write(
                &properties,
                format!(
                    "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
# Topics come from `waybill create-topics` (or the services' start-up), as
# in production; a client asking for an unknown topic must not make one.
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
# A killed node is fenced (and leaves every ISR) after 3 s, not 9 s.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
# Two cores for every process of a test run: fewer threads, and no 128 MiB
# cleaner buffer allocated at start-up.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.dedupe.buffer.size=4194304
log.cleaner.threads=1
# The cleaner looks for work every second (15 s by default), so a test that
# makes a topic compact soon sees it happen.
log.cleaner.backoff.ms=1000
",
                    data = data.display(),
                ),
            )
            .expect("broker properties written");
            cluster.nodes.push(Node {
                id,
                port,
                controller_port,
                properties,
                log: dir.join(format!("kafka-{id}.log")),
                child: None,
            });
        }
        // Format every node's log directory with one cluster id (in
        // parallel: each is a JVM start).
        let id = cluster_id();
        let formats: Vec<(u32, Child)> = cluster
            .nodes
            .iter()
            .map(|node| {
                let log = node.open_log();
                let child = Command::new(java())
                    .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                    .args(["-cp", &classpath(), "kafka.tools.StorageTool", "format"])
                    .args(["-t", &id, "-c"])
                    .arg(&node.properties)
                    .stdout(Stdio::from(log.try_clone().expect("log file")))
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run java ({}): {e}", java().display()));
                (node.id, child)
            })
            .collect();
        for (node, mut child) in formats {
            let status = child.wait().expect("format finished");
            assert!(
                status.success(),
                "formatting Kafka node {node} failed:\n{}",
                cluster.log_tail(node, 30)
            );
        }
        for node in 1..=nodes {
            cluster.spawn(node, &log4j);
        }
        for node in 1..=nodes {
            cluster.wait_serving(node).await;
        }
        cluster
    }

    /// `127.0.0.1:<port>,...` of every node: the bootstrap servers.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node ids, 1-based.
    pub fn nodes(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The client port of a node.
    pub fn port(&self, node: u32) -> u16 {
        self.node(node).port
    }

    fn node(&self, id: u32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    fn spawn(&mut self, id: u32, log4j: &Path) {
        let node = self.node_mut(id);
        let log = node.open_log();
        let child = Command::new(java())
            .args([
                "-Xms256m",
                "-Xmx768m",
                // Kafka's own JVM settings (bin/kafka-run-class.sh).
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
            ])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args(["-cp", &classpath(), "kafka.Kafka"])
            .arg(&node.properties)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java ({}): {e}", java().display()));
        node.child = Some(child);
    }

    fn log4j(&self) -> PathBuf {
        self.node(self.nodes[0].id)
            .properties
            .with_file_name("kafka-log4j2.yaml")
    }

    /// Whether a node has a running process.
    pub fn is_running(&mut self, id: u32) -> bool {
        self.node_mut(id)
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until the node accepts connections on its client port; panics
    /// with its log if it exits or takes more than 120 s.
    pub async fn wait_serving(&mut self, id: u32) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = format!("127.0.0.1:{}", self.port(id));
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            assert!(
                self.is_running(id),
                "Kafka node {id} exited:\n{}",
                self.log_tail(id, 60)
            );
            assert!(
                Instant::now() < deadline,
                "Kafka node {id} not serving within 120 s:\n{}",
                self.log_tail(id, 60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the node dies at once (a crash: no controlled shutdown, no
    /// flush).
    pub fn kill(&mut self, id: u32) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the node to exit (a controlled shutdown
    /// moves its leaderships first); SIGKILL after `grace`. Returns how long
    /// it took, or an error when it had to be killed.
    pub fn stop(&mut self, id: u32, grace: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let Some(mut child) = self.node_mut(id).child.take() else {
            return Ok(Duration::ZERO);
        };
        match terminate(&mut child, grace) {
            Some(_) => Ok(started.elapsed()),
            None => Err(format!(
                "Kafka node {id} did not stop within {grace:?}; killed\n{}",
                self.log_tail(id, 30)
            )),
        }
    }

    /// Starts a node again on its log directory (killing a running process
    /// of it first) and waits until it serves.
    pub async fn restart(&mut self, id: u32) {
        self.kill(id);
        let log4j = self.log4j();
        self.spawn(id, &log4j);
        self.wait_serving(id).await;
    }

    /// Waits until every partition of every topic has all its replicas in
    /// sync (no under-replicated partition), as an operator waits between
    /// the nodes of a rolling restart.
    pub async fn wait_fully_replicated(&self, timeout: Duration) -> Result<(), String> {
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        let consumer: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", self.bootstrap())
                .create()
                .map_err(|e| e.to_string())?,
        );
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let c = consumer.clone();
            let lagging =
                tokio::task::spawn_blocking(move || c.fetch_metadata(None, Duration::from_secs(5)))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .flat_map(|t| {
                                t.partitions()
                                    .iter()
                                    .filter(|p| {
                                        p.isr().len() < p.replicas().len() || p.leader() < 0
                                    })
                                    .map(move |p| format!("{}/{}", t.name(), p.id()))
                            })
                            .collect::<Vec<_>>()
                    });
            match lagging {
                Ok(l) if l.is_empty() => return Ok(()),
                Ok(l) => {
                    last = format!(
                        "{} under-replicated, e.g. {:?}",
                        l.len(),
                        &l[..l.len().min(5)]
                    )
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(format!("not fully replicated within {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of a node's log.
    pub fn log_tail(&self, id: u32, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The controller port of a node (for tests of the quorum).
    pub fn controller_port(&self, id: u32) -> u16 {
        self.node(id).controller_port
    }
}

/// Sends SIGTERM and waits up to `grace` for the process to exit; kills it
/// after that. The exit status, or `None` when it had to be killed.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Node {
    fn open_log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("Kafka log file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let a = cluster_id();
        assert_eq!(a.len(), 22, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, cluster_id());
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
        assert_eq!(base64_url(b"Man"), "TWFu");
    }
}
