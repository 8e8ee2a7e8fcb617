//! The `waybill` command.
//!
//! # Layout
//!
//! - [`admin`]: `waybill admin` — operators' commands against a
//!   deployment's API (`check`: what the chart's `helm test` runs).
//! - [`config`]: the configuration file, one section per part.
//! - [`dev`]: `waybill dev` — the three services in one process on an
//!   embedded broker, for trying Waybill and for in-process tests.
//! - [`listen`]: `waybill listen` — a local webhook receiver that prints
//!   what arrives and checks signatures.
//!
//! This crate only wires configuration to the services' `run` functions.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod dev;
pub mod listen;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_runtime::config::ConfigErrors;
use waybill_runtime::telemetry::{self, LogFormat};

pub use config::{Config, Service};

/// Kafka-native webhook delivery for logistics platforms.
#[derive(Debug, Parser)]
#[command(name = "waybill", version, about)]
pub struct Cli {
    /// TOML configuration file; `WAYBILL_<SECTION>__<KEY>` variables override it.
    #[arg(long, short, global = true, env = "WAYBILL_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (events and subscriptions in, records on Kafka out).
    Ingest,
    /// Run the matcher (domain events → delivery tasks).
    Matcher,
    /// Run the delivery workers (delivery tasks → signed webhook requests).
    Delivery,
    /// Run everything in one process on an embedded Kafka broker.
    Dev(dev::DevArgs),
    /// Run a local webhook receiver that prints what it receives.
    Listen(listen::ListenArgs),
    /// Check the configuration and print it as the services would read it
    /// (secrets and keys are not printed).
    CheckConfig(CheckConfigArgs),
    /// Create the missing topics (partitions, replication, compaction from
    /// the configuration) and exit; existing topics are left as they are.
    CreateTopics,
    /// Write every subscription again under the current sealing key
    /// (`secrets.current_key_id`), so that older keys can be removed; exits
    /// 1 while any record is left sealed with another key or unreadable.
    Reseal(ResealArgs),
    /// Measure a deployment (or `waybill dev`, started for the run): the raw
    /// HTTP ceiling, then workloads W1..W4; prints and writes JSON.
    Bench(BenchArgs),
    /// Operators' commands against a running deployment's API (operator
    /// token): `check` proves a deployment delivers.
    Admin(admin::AdminArgs),
}

/// Options of `waybill bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// API of a running deployment; without it, `waybill dev` runs in this
    /// process for the benchmark.
    #[arg(long)]
    pub api: Option<String>,
    /// Tenant API key for `--api`.
    #[arg(long, env = "WAYBILL_BENCH_KEY")]
    pub key: Option<String>,
    /// Workloads to run, comma-separated: W1..W4, O1..O8 (one
    /// subscription in each `ordering` mode), L1 and L2 (W1 at 400 and W2
    /// at 150 events/s, open loop: latency), S1 (200 subscriptions whose
    /// receivers answer after 50 ms: scale-out), R1 (subscription writes
    /// read back at once: read-your-writes latency).
    #[arg(long, default_value = "W1,W2,W3,W4", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Requests in flight while posting.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Scale every workload's event count (e.g. 0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Runs of each workload; the summary gives the median and min–max.
    /// Without `--api`, every run of a workload gets a fresh `waybill dev`
    /// (the embedded broker slows down as its log grows).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Measure nothing: summarise the runs of these results files (written
    /// by earlier `waybill bench` runs, e.g. one per fresh deployment).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub merge: Vec<PathBuf>,
    /// Where to write the results (JSON).
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
    /// `waybill delivery` processes of the `--api` deployment, recorded
    /// with each result (scripts/bench-kafka.sh starts them); summaries
    /// are per workload and replica count.
    #[arg(long, default_value_t = 1, requires = "api")]
    pub delivery_replicas: usize,
    /// The million-subscription mode's first step: create this many
    /// background subscriptions through `--api`, spread over `--tenants`
    /// tenants (made with `--operator-token`), and write what it measured
    /// to `--out` instead of running workloads.
    #[arg(long, requires_all = ["api", "operator_token"])]
    pub populate: Option<usize>,
    /// Tenants of the `--populate` subscriptions.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// The deployment's operator token (`--populate`).
    #[arg(long, env = "WAYBILL_OPERATOR_TOKEN")]
    pub operator_token: Option<String>,
}

/// Options of `waybill reseal`.
#[derive(Debug, clap::Args)]
pub struct ResealArgs {
    /// Only count what would be resealed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `waybill check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// Check only what this command needs (default: the three services).
    #[arg(long, value_enum)]
    pub service: Option<ServiceArg>,
}

/// A service, on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ServiceArg {
    /// The HTTP API.
    Ingest,
    /// The matcher.
    Matcher,
    /// The delivery workers.
    Delivery,
    /// `waybill create-topics`.
    CreateTopics,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format =
        match LogFormat::from_env_value(std::env::var("WAYBILL_LOG_FORMAT").ok().as_deref()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = std::env::var("RUST_LOG").ok();
    // Services export their spans when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let service_name = match &cli.command {
        Command::Ingest => Some("waybill-ingest"),
        Command::Matcher => Some("waybill-matcher"),
        Command::Delivery => Some("waybill-delivery"),
        Command::Dev(_) => Some("waybill-dev"),
        Command::Listen(_)
        | Command::CheckConfig(_)
        | Command::CreateTopics
        | Command::Reseal(_)
        | Command::Bench(_)
        | Command::Admin(_) => None,
    };
    let telemetry = match service_name {
        Some(name) => {
            let _entered = runtime.enter();
            let export = match telemetry::Export::from_env(|name| std::env::var(name).ok()) {
                Ok(export) => export,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match telemetry::init_with_export(format, filter.as_deref(), export.as_ref(), name) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        None => telemetry::init(format, filter.as_deref()),
    };
    let result = runtime.block_on(run(cli, std::env::vars().collect()));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigErrors>() {
                eprint!("error: {config}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs a parsed command line with the given environment.
pub async fn run(cli: Cli, env: Vec<(String, String)>) -> anyhow::Result<()> {
    match cli.command {
        Command::Ingest => serve(Service::Ingest, cli.config, env).await,
        Command::Matcher => serve(Service::Matcher, cli.config, env).await,
        Command::Delivery => serve(Service::Delivery, cli.config, env).await,
        Command::Dev(args) => dev::run(args, cli.config, env).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Admin(args) => admin::run(args, cli.config.as_deref(), env).await,
        Command::Bench(args) => bench(args, cli.config, env).await,
        Command::Reseal(args) => {
            let config: Config = load(toml::Table::new(), cli.config.as_deref(), env)?;
            let keys = config.secrets.keyring().map_err(anyhow::Error::msg)?;
            let report = waybill_ingest::reseal::reseal(
                &config.kafka,
                keys,
                config.ingest.write_timeout,
                args.dry_run,
            )
            .await?;
            // The report is the command's answer.
            #[allow(clippy::print_stdout)]
            {
                println!("{report}");
            }
            anyhow::ensure!(
                report.clean(),
                "{} subscriptions left to reseal, {} unreadable, {} failed",
                report.left,
                report.unreadable.len(),
                report.failed.len()
            );
            Ok(())
        }
        Command::CreateTopics => {
            let config::TopicsConfig(config) =
                waybill_runtime::config::load(toml::Table::new(), cli.config.as_deref(), env)?;
            let topics = waybill_kafka::Topics::of(&config.kafka);
            let specs = topics.specs(&config.kafka);
            let drifts = waybill_kafka::topics::ensure_topics(&config.kafka, &specs).await?;
            for drift in &drifts {
                tracing::warn!(topic = %drift.topic, "{drift}");
            }
            for spec in &specs {
                tracing::info!(
                    topic = %spec.name,
                    partitions = spec.partitions,
                    compacted = spec.compacted,
                    "topic present"
                );
            }
            Ok(())
        }
        Command::CheckConfig(args) => {
            let config = if matches!(args.service, Some(ServiceArg::CreateTopics)) {
                let config::TopicsConfig(config) =
                    waybill_runtime::config::load(toml::Table::new(), cli.config.as_deref(), env)?;
                config
            } else {
                load(toml::Table::new(), cli.config.as_deref(), env)?
            };
            let services = match args.service {
                Some(ServiceArg::Ingest) => vec![Service::Ingest],
                Some(ServiceArg::Matcher) => vec![Service::Matcher],
                Some(ServiceArg::Delivery) => vec![Service::Delivery],
                // `create-topics` needs only the shared sections.
                Some(ServiceArg::CreateTopics) => Vec::new(),
                None => vec![Service::Ingest, Service::Matcher, Service::Delivery],
            };
            let mut problems = Vec::new();
            for service in services {
                problems.extend(config.service_problems(service));
            }
            if !problems.is_empty() {
                return Err(ConfigErrors(problems).into());
            }
            #[allow(clippy::print_stdout)]
            {
                println!("configuration is valid");
                println!("kafka.brokers = {}", config.kafka.brokers);
                println!("kafka.topic_prefix = {:?}", config.kafka.topic_prefix);
                println!("ingest.listen = {}", config.ingest.listen);
                println!("ingest.admin_listen = {}", config.ingest.admin_listen);
                println!("matcher.listen = {}", config.matcher.listen);
                println!("delivery.listen = {}", config.delivery.listen);
            }
            Ok(())
        }
    }
}

async fn bench(
    args: BenchArgs,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
) -> anyhow::Result<()> {
    if let (Some(count), Some(api), Some(token)) = (args.populate, &args.api, &args.operator_token)
    {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let report = waybill_bench::population::populate(
            &client,
            api,
            token,
            count,
            args.tenants,
            args.concurrency,
        )
        .await?;
        tracing::info!(
            subscriptions = report.subscriptions,
            tenants = report.tenants,
            created_per_s = report.created_per_s.round(),
            create_p50_ms = format!("{:.1}", report.create_latency.p50_ms),
            create_p99_ms = format!("{:.1}", report.create_latency.p99_ms),
            "population created"
        );
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        return Ok(());
    }
    let runs = if args.merge.is_empty() {
        measure(&args, file, env).await?
    } else {
        let mut runs = Vec::new();
        for path in &args.merge {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let results: MergedFile = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a waybill bench results file", path.display())
            })?;
            runs.extend(results.runs);
        }
        runs
    };
    report(&runs, &args.out)
}

/// The part of a results file `--merge` reads.
#[derive(serde::Deserialize)]
struct MergedFile {
    runs: Vec<waybill_bench::RunResults>,
}

/// Runs the selected workloads `--runs` times.
async fn measure(
    args: &BenchArgs,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
) -> anyhow::Result<Vec<waybill_bench::RunResults>> {
    let workloads: Vec<waybill_bench::Workload> = waybill_bench::all()
        .into_iter()
        .filter(|w| {
            args.workloads
                .iter()
                .any(|n| n.eq_ignore_ascii_case(w.name))
        })
        .map(|mut w| {
            w.events = ((w.events as f64 * args.scale).round() as usize).max(1);
            w
        })
        .collect();
    if workloads.is_empty() {
        anyhow::bail!(
            "no workload selected; use --workloads W1,W2,W3,W4 (or O1..O8, the ordering modes; L1, L2, open-loop latency; S1, slow receivers; R1, read-your-writes)"
        );
    }
    let attached = match &args.api {
        Some(api) => {
            let key = args
                .key
                .clone()
                .context("--key (or WAYBILL_BENCH_KEY) is required with --api")?;
            Some(waybill_bench::Target {
                api: api.clone(),
                key,
            })
        }
        None => None,
    };
    let mut runs = Vec::new();
    for run in 1..=args.runs.max(1) {
        for workload in &workloads {
            tracing::info!(run, workload = workload.name, "starting");
            let results = match &attached {
                Some(target) => {
                    let mut results = waybill_bench::run_all(
                        target,
                        std::slice::from_ref(workload),
                        args.concurrency,
                    )
                    .await?;
                    for report in &mut results.workloads {
                        report.delivery_replicas = args.delivery_replicas;
                    }
                    results
                }
                None => {
                    let config = load(dev::bench_config(), file.as_deref(), env.clone())?;
                    let stack = dev::start(config, dev::DEV_API_KEY).await?;
                    let target = waybill_bench::Target {
                        api: stack.api_url(),
                        key: stack.api_key.clone(),
                    };
                    let results = waybill_bench::run_all(
                        &target,
                        std::slice::from_ref(workload),
                        args.concurrency,
                    )
                    .await;
                    stack.stop().await?;
                    results?
                }
            };
            runs.push(results);
        }
    }
    Ok(runs)
}

/// Prints the summary of `runs` and writes it, with every run, to `out`.
fn report(runs: &[waybill_bench::RunResults], out: &std::path::Path) -> anyhow::Result<()> {
    let reports: Vec<waybill_bench::Report> =
        runs.iter().flat_map(|r| r.workloads.clone()).collect();
    let summary = waybill_bench::summarize(&reports);
    let ceiling =
        waybill_bench::Spread::of(runs.iter().map(|r| r.ceiling_requests_per_s).collect());
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "machine": machine(),
        "ceiling_requests_per_s": ceiling,
        "summary": summary,
        "runs": runs,
    }))?;
    std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "raw HTTP ceiling: {:.0} requests/s ({:.0}–{:.0})\n\n{}\nresults: {}",
            ceiling.median,
            ceiling.min,
            ceiling.max,
            waybill_bench::markdown(&summary),
            out.display()
        );
    }
    Ok(())
}

/// Cores and memory of this machine, for the results file.
fn machine() -> serde_json::Value {
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    });
    serde_json::json!({
        "cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "memory_gib": memory_kib.map(|k| (k as f64 / 1024.0 / 1024.0).round()),
        "os": std::env::consts::OS,
    })
}

/// Loads the configuration from `base`, the file and the environment.
pub fn load(
    base: toml::Table,
    file: Option<&std::path::Path>,
    env: Vec<(String, String)>,
) -> Result<Config, ConfigErrors> {
    waybill_runtime::config::load(base, file, env)
}

async fn serve(
    service: Service,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let config = load(toml::Table::new(), file.as_deref(), env)?;
    let problems = config.service_problems(service);
    if !problems.is_empty() {
        return Err(ConfigErrors(problems).into());
    }
    let shutdown = waybill_runtime::shutdown::on_signal();
    start_service(service, &config, shutdown).await
}

/// Binds the service's listener and runs it until `shutdown`.
pub async fn start_service(
    service: Service,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = match service {
        Service::Ingest => config.ingest.listen,
        Service::Matcher => config.matcher.listen,
        Service::Delivery => config.delivery.listen,
    };
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let listener = bind(addr).await?;
    let admin = match service {
        Service::Ingest => Some(bind(config.ingest.admin_listen).await?),
        _ => None,
    };
    let metrics = waybill_runtime::metrics::Metrics::new();
    run_service(service, config, listener, admin, &metrics, shutdown).await
}

/// Runs one service on an already bound listener (its API for ingest, its
/// admin endpoints otherwise) until `shutdown`; ingest serves its admin
/// endpoints on `admin`.
pub async fn run_service(
    service: Service,
    config: &Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    metrics: &waybill_runtime::metrics::Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics.clone();
    let keys = config.secrets.keyring().map_err(anyhow::Error::msg)?;
    let catalog = config.catalog.catalog().map_err(ConfigErrors)?;
    let url_policy = (&config.url_policy).into();
    match service {
        Service::Ingest => {
            let settings = waybill_ingest::Settings {
                kafka: config.kafka.clone(),
                ingest: config.ingest.clone(),
                keys,
                url_policy,
                catalog,
                metrics,
            };
            let admin = admin.context("ingest needs its admin listener")?;
            Ok(waybill_ingest::run(settings, listener, admin, shutdown).await?)
        }
        Service::Matcher => {
            let settings = waybill_matcher::Settings {
                kafka: config.kafka.clone(),
                matcher: config.matcher.clone(),
                keys,
                catalog,
                metrics,
            };
            Ok(waybill_matcher::run(settings, listener, shutdown).await?)
        }
        Service::Delivery => {
            let settings = waybill_delivery::Settings {
                kafka: config.kafka.clone(),
                delivery: config.delivery.clone(),
                keys,
                url_policy,
                catalog,
                metrics,
            };
            Ok(waybill_delivery::run(settings, listener, shutdown).await?)
        }
    }
}
