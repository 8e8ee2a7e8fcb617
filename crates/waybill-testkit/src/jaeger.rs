//! Jaeger (v2, built from its Go module by `scripts/ensure-go-tools.sh`)
//! as a child process: OTLP/HTTP in, traces kept in memory, read back
//! through Jaeger's own query API. A trace backend nobody here wrote.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::free_port;

/// A running Jaeger; killed when dropped.
pub struct Jaeger {
    child: Child,
    otlp: u16,
    query: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// One span as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct JaegerSpan {
    /// The operation (span) name.
    pub name: String,
    /// The service that sent it (`service.name`).
    pub service: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Its tags (attributes), values as strings.
    pub tags: Vec<(String, String)>,
}

impl Jaeger {
    /// The binary, from `WAYBILL_JAEGER` (`make test` sets it to what
    /// `scripts/ensure-go-tools.sh` built).
    pub fn binary() -> Result<PathBuf, String> {
        let path = std::env::var_os("WAYBILL_JAEGER").map(PathBuf::from);
        match path {
            Some(path) if path.is_file() => Ok(path),
            _ => Err(format!(
                "Jaeger not found (WAYBILL_JAEGER={:?}); run `make test`, or set WAYBILL_JAEGER to \
                 \"$(scripts/ensure-go-tools.sh)/jaeger\"",
                std::env::var_os("WAYBILL_JAEGER")
            )),
        }
    }

    /// Starts Jaeger on free loopback ports and waits for its query API.
    pub async fn start() -> Self {
        let binary = Self::binary().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("a temp dir");
        let (otlp, query, query_grpc) = (free_port(), free_port(), free_port());
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
            ),
        )
        .expect("the Jaeger config is written");
        let log = dir.path().join("jaeger.log");
        let out = std::fs::File::create(&log).expect("the Jaeger log");
        let child = Command::new(&binary)
            .arg(format!("--config=file:{}", config.display()))
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let jaeger = Self {
            child,
            otlp,
            query,
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client
                .get(format!("http://127.0.0.1:{query}/api/services"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return jaeger;
            }
            assert!(
                Instant::now() < deadline,
                "Jaeger's query API did not come up; its log:\n{}",
                jaeger.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The OTLP/HTTP endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp)
    }

    /// Jaeger's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The traces Jaeger's query API answers for `trace_id`: each as its
    /// spans (an unknown trace: none).
    pub async fn traces(&self, trace_id: &str) -> Vec<Vec<JaegerSpan>> {
        let url = format!("http://127.0.0.1:{}/api/traces/{trace_id}", self.query);
        let Ok(answer) = reqwest::get(&url).await else {
            return Vec::new();
        };
        let Ok(body) = answer.bytes().await else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return Vec::new();
        };
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|trace| {
                let processes = &trace["processes"];
                trace["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|span| JaegerSpan {
                        name: span["operationName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        service:
                            processes[span["processID"].as_str().unwrap_or_default()]["serviceName"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        trace_id: span["traceID"].as_str().unwrap_or_default().to_owned(),
                        tags: span["tags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| {
                                let value = match &t["value"] {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                (t["key"].as_str().unwrap_or_default().to_owned(), value)
                            })
                            .collect(),
                    })
                    .collect()
            })
            .collect()
    }
}
