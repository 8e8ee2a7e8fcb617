//! End to end: a separate tansu broker process, the three services as three
//! separate `waybill` processes, a subscription pointing at a local
//! receiver, and one event of each domain that must arrive exactly once,
//! signed, with the right body. Then SIGTERM stops every service cleanly.
//!
//! tansu is found through `WAYBILL_TANSU_BIN`, else at
//! `$HOME/.cache/waybill/tansu-0.6.0/bin/tansu` (`scripts/ensure-tansu.sh`
//! installs it there; `make test` runs that script first).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_core::signing::SigningSecret;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::{Options, Receiver};

const KEY: &str = "wb_e2e_key_0123456789";
const OPERATOR: &str = "wbop_e2e_operator_token_0123456789";

fn tansu_bin() -> PathBuf {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped (if still running).
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then wait up to `grace` for a clean exit.
    fn terminate(&mut self, grace: Duration) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed", self.name));
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} exited with {status}\n{}",
                        self.name,
                        self.log_tail()
                    ))
                };
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not exit within {grace:?}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_http_ok(url: &str, procs: &mut [Proc], timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{} exited early ({status}):\n{}", p.name, p.log_tail());
            }
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {}\n{}", p.name, p.log_tail()))
                .collect();
            panic!("{url} not ready within {timeout:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_tcp(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_of_each_domain_arrives_once_through_three_processes_on_tansu() {
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let broker: SocketAddr = format!("127.0.0.1:{broker_port}").parse().unwrap();
    let mut tansu_cmd = Command::new(tansu_bin());
    tansu_cmd.args([
        "broker",
        "--listener-url",
        &format!("tcp://127.0.0.1:{broker_port}"),
        "--advertised-listener-url",
        &format!("tcp://127.0.0.1:{broker_port}"),
        "--storage-engine",
        "memory://tansu/",
    ]);
    let _tansu = Proc::spawn("tansu", tansu_cmd, dir.path());
    wait_tcp(broker, Duration::from_secs(30)).await;

    let (api_port, matcher_port, delivery_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("waybill.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "127.0.0.1:{broker_port}"
partitions = 3
retry_tiers = ["100ms", "1s", "10s"]
subscriptions_partitions = 1
create_topics = false
replication_factor = 1

[secrets]
current_key_id = "k1"
keys = {{ k1 = "{key}" }}

[url_policy]
allow_http = true
allow_private_networks = true

[ingest]
listen = "127.0.0.1:{api_port}"
api_keys = [{{ id = "key_e2e", key = "{KEY}", tenant_id = "ten_e2e" }}]
operator_token = "{OPERATOR}"

[matcher]
listen = "127.0.0.1:{matcher_port}"

[delivery]
listen = "127.0.0.1:{delivery_port}"
"#,
            key = waybill_core::sealing::Keyring::generate_key(),
        ),
    )
    .unwrap();

    let service = |name: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_waybill"));
        c.args([name, "--config"])
            .arg(&config)
            .env("RUST_LOG", "info");
        c
    };
    // The topics come from `waybill create-topics` (as the Helm chart's
    // Job does): the services do not create any. Twice: it is idempotent.
    for _ in 0..2 {
        let out = service("create-topics").output().unwrap();
        assert!(
            out.status.success(),
            "create-topics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut procs = vec![Proc::spawn("ingest", service("ingest"), dir.path())];
    let api = format!("http://127.0.0.1:{api_port}");
    wait_http_ok(
        &format!("{api}/readyz"),
        &mut procs,
        Duration::from_secs(60),
    )
    .await;
    procs.push(Proc::spawn("matcher", service("matcher"), dir.path()));
    procs.push(Proc::spawn("delivery", service("delivery"), dir.path()));
    for port in [matcher_port, delivery_port] {
        wait_http_ok(
            &format!("http://127.0.0.1:{port}/readyz"),
            &mut procs,
            Duration::from_secs(60),
        )
        .await;
    }

    let receiver = Receiver::start().await.unwrap();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{api}/v1/subscriptions"))
        .bearer_auth(KEY)
        .json(&json!({"name": "e2e", "url": receiver.url("/hook"), "event_types": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = SigningSecret::parse(created["signing_secret"].as_str().expect("secret")).unwrap();
    let subscription_id = created["id"].as_str().unwrap().to_owned();

    let events = [
        ("freights.publication.accepted", "freight", "F-100"),
        ("freight_orders.order.created", "order", "O-100"),
        (
            "time_slot_management.announcement.updated",
            "announcement",
            "A-100",
        ),
        (
            "loads_monitoring.monitoring.monitoring_completed",
            "monitoring",
            "M-100",
        ),
    ];
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let r = http
            .post(format!("{api}/v1/events"))
            .bearer_auth(KEY)
            .json(&json!({"id": format!("evt-e2e-{i}"), "event_name": name,
                          "entity": {"type": kind, "id": id}, "data": {"seq": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    let got = match receiver
        .wait_for(events.len(), Duration::from_secs(90))
        .await
    {
        Ok(got) => got,
        Err(e) => {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {}\n{}", p.name, p.log_tail()))
                .collect();
            panic!("{e}\n{}", logs.join("\n"));
        }
    };
    // Nothing more arrives (exactly once in the happy path).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), events.len(), "no duplicates");
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let event_id = format!("evt-e2e-{i}");
        let r = got
            .iter()
            .find(|r| r.json()["id"] == event_id.as_str())
            .unwrap_or_else(|| panic!("{event_id} did not arrive"));
        assert!(r.signature_valid(&secret), "{event_id}: signature");
        let body = r.json();
        assert_eq!(body["event_name"], *name);
        assert_eq!(body["entity"], json!({"type": kind, "id": id}));
        assert_eq!(body["data"], json!({"seq": i}));
        assert_eq!(
            r.header("webhook-id").unwrap(),
            waybill_core::ids::delivery_id("ten_e2e", &event_id, &subscription_id)
        );
    }

    // On tansu too: a failed attempt is retried through a retry tier, the
    // history shows both attempts, a retry through the API reads the task
    // back from the log, and a replay finds the event by time.
    let tenant_api = Api::new(api.clone(), KEY);
    let flaky = Receiver::with(Options {
        script: vec![500],
        ..Options::default()
    })
    .await
    .unwrap();
    let (status, sub) = tenant_api
        .post(
            "/v1/subscriptions",
            json!({"url": flaky.url("/flaky"), "event_types": ["freight_orders.order.created"],
                   "retry_policy": {"delays": ["100ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let since = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    let (status, _) = tenant_api
        .post(
            "/v1/events",
            json!({"id": "evt-e2e-retry", "event_name": "freight_orders.order.created",
                   "entity": {"type": "order", "id": "O-200"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = flaky.wait_for(2, Duration::from_secs(60)).await.unwrap();
    let delivery_id = got[0].header("webhook-id").unwrap().to_owned();
    assert_eq!(got[1].header("webhook-id"), Some(delivery_id.as_str()));
    assert!(got[1].at - got[0].at >= Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let (_, d) = tenant_api
            .get(&format!("/v1/deliveries/{delivery_id}"))
            .await;
        if d["status"] == "succeeded" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(200)]);
    let (status, queued) = tenant_api
        .post(&format!("/v1/deliveries/{delivery_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    flaky.wait_for(3, Duration::from_secs(60)).await.unwrap();
    let sub_id = sub["id"].as_str().unwrap();
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, replay) = tenant_api
        .post(
            &format!("/v1/subscriptions/{sub_id}/replay"),
            json!({"since": since}),
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    let got = flaky.wait_for(4, Duration::from_secs(60)).await.unwrap();
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == Some(delivery_id.as_str()))
    );

    // Tenants and subscriptions made through the API are rebuilt, equal,
    // from the topics by a restarted ingest process.
    let operator = Api::new(api.clone(), OPERATOR);
    let (status, tenant) = operator
        .post("/v1/tenants", json!({"name": "restart"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = operator
        .post(&format!("/v1/tenants/{tenant_id}/api_keys"), json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    let acme = Api::new(api.clone(), key["key"].as_str().unwrap());
    let mut made = Vec::new();
    for (i, extra) in [
        json!({"auth": {"type": "basic", "username": "u", "password": "p"}}),
        json!({"filter": {"scopes": [{"predicates": [
            {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["7"]}]}]},
            "retry_policy": {"initial_delay": "1s", "multiplier": 2, "max_delay": "1m", "max_attempts": 5}}),
        json!({"headers": {"X-A": "1"}, "rate_limit_per_second": 3, "method": "PUT"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"name": format!("s{i}"), "url": receiver.url("/r"), "event_types": ["freights.*"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, created) = acme.post("/v1/subscriptions", body).await;
        assert_eq!(status, 201, "{created}");
        made.push(created["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = acme
        .patch(
            &format!("/v1/subscriptions/{}", made[0]),
            json!({"enabled": false, "headers": {"X-B": "2"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme
        .post(
            &format!("/v1/subscriptions/{}/secret/rotate", made[1]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme.delete(&format!("/v1/subscriptions/{}", made[2])).await;
    assert_eq!(status, 204);
    let snapshot = |acme: Api, made: Vec<String>| async move {
        let (_, list) = acme.get("/v1/subscriptions").await;
        let mut secrets = Vec::new();
        for id in &made {
            secrets.push(acme.get(&format!("/v1/subscriptions/{id}/secret")).await);
        }
        (list, secrets)
    };
    let before = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(before.0["total_count"], 2);

    let ingest = procs.remove(0);
    let mut ingest = ingest;
    ingest.terminate(Duration::from_secs(30)).unwrap();
    drop(ingest);
    procs.insert(
        0,
        Proc::spawn("ingest-restarted", service("ingest"), dir.path()),
    );
    wait_http_ok(
        &format!("{api}/readyz"),
        &mut procs,
        Duration::from_secs(60),
    )
    .await;
    let after = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(
        after, before,
        "the rebuilt projection equals the state before"
    );

    // Graceful shutdown: every service exits 0 on SIGTERM within its grace.
    for p in procs.iter_mut().rev() {
        p.terminate(Duration::from_secs(30)).unwrap();
    }
}
