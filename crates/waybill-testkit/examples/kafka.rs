//! Runs Apache Kafka KRaft nodes (as the tests do) until SIGTERM or Ctrl-C:
//! for scripts that measure a deployment of separate processes
//! (`scripts/bench-kafka.sh`).
//!
//! ```sh
//! cargo run -p waybill-testkit --example kafka -- <dir> [nodes]
//! ```
//!
//! Prints `bootstrap: 127.0.0.1:<port>,...` on stdout once every node
//! serves; logs and data stay in `<dir>`.
#![allow(clippy::print_stdout)]

use std::io::Write as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: kafka <dir> [nodes]"));
    let nodes: u32 = args.next().map_or(1, |n| n.parse().expect("nodes: 1 or 3"));
    std::fs::create_dir_all(&dir).expect("the directory");
    let cluster = waybill_testkit::kafka::KafkaCluster::start(&dir, nodes).await;
    println!("bootstrap: {}", cluster.bootstrap());
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cluster);
}
