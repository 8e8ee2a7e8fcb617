//! `waybill admin check` (what the chart's `helm test` runs), as a
//! process against a running `waybill dev`: it finds every service ready,
//! sends a test delivery through the pipeline to a receiver, and leaves
//! neither its subscription nor its API key behind.

use std::process::Command;
use std::time::Duration;

use waybill::dev;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::{Options, Receiver};

const KEY: &str = "wb_admin_check_key_3c1d2e4f5a6b7c8d9e0f";

/// `waybill admin --api <api> --token <token> check <args>`.
async fn check(api: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = strings(&["--api", api, "--token", token, "check"]);
    all.extend(strings(args));
    admin_with(all, Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_proves_a_deployment_delivers_and_cleans_up() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let config = waybill::load(dev::base_config(0), None, Vec::new()).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let receiver = Receiver::start().await.unwrap();
    let admins: Vec<String> = stack.admin.iter().map(|a| format!("http://{a}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for url in &admins {
        args.extend(["--admin", url]);
    }
    let hook = receiver.url("/check");
    args.extend([
        "--receiver-url",
        &hook,
        "--expect-success",
        "--timeout",
        "30s",
    ]);
    let api_url = stack.api_url();
    let token = stack.operator_token.clone();

    // Twice: the second run reuses the check's tenant.
    for _ in 0..2 {
        let (ok, stdout, stderr) = check(&api_url, &token, &args).await;
        assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        for url in &admins {
            assert!(
                lines.contains(&format!("ready: {url}/readyz").as_str()),
                "{stdout}"
            );
        }
        assert!(stdout.contains("tenant: waybill-check (ten_"), "{stdout}");
        let delivered = lines.last().unwrap();
        assert!(
            delivered.starts_with("delivered: ") && delivered.contains("answered 200 (succeeded)"),
            "{stdout}"
        );
    }
    let got = receiver.wait_for(2, Duration::from_secs(10)).await.unwrap();
    assert!(
        got.iter()
            .all(|r| String::from_utf8_lossy(&r.body).contains("waybill.test")),
        "{got:?}"
    );

    // One tenant, no key and no subscription left behind.
    let operator = Api::new(api_url.clone(), &token);
    let (_, tenants) = operator.get("/v1/tenants").await;
    let checks: Vec<_> = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "waybill-check")
        .collect();
    assert_eq!(checks.len(), 1, "{tenants}");

    // A receiver that refuses: the attempt is reported; with
    // --expect-success the check fails and says why.
    let refusing = Receiver::with(Options {
        default_status: Some(503),
        ..Options::default()
    })
    .await
    .unwrap();
    let refusing_url = refusing.url("/down");
    let (ok, stdout, stderr) = check(
        &api_url,
        &token,
        &[
            "--receiver-url",
            &refusing_url,
            "--expect-success",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("answered 503"), "{stderr}");

    // A wrong token: a clear error, exit 1.
    let (ok, _, stderr) = check(&api_url, "wbop_wrong_token_0000000000", &[]).await;
    assert!(!ok);
    assert!(stderr.contains("GET /v1/tenants answered 401"), "{stderr}");
    stack.stop().await.unwrap();
}

/// Runs `waybill admin <args>` with `env`; (success, stdout, stderr).
async fn admin_with(args: Vec<String>, env: Vec<(String, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
            .arg("admin")
            .args(&args)
            .env_remove("WAYBILL_OPERATOR_TOKEN")
            .env_remove("WAYBILL_API_KEY")
            .envs(env)
            .output()
            .expect("waybill admin runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Tenants and keys with the operator token; a subscription's state, its
/// deliveries (the dead ones too), a retry and a followed replay with a
/// tenant key; the topics and each group's lag from Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_a_deployment_from_the_command_line() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let config = waybill::load(dev::base_config(0), None, Vec::new()).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api_url = stack.api_url();
    let operator = vec![
        ("WAYBILL_API_URL".to_owned(), api_url.clone()),
        (
            "WAYBILL_OPERATOR_TOKEN".to_owned(),
            stack.operator_token.clone(),
        ),
    ];

    // Tenants and keys.
    let (ok, out, err) = admin_with(
        strings(&["tenants", "--create", "acme-logistics"]),
        operator.clone(),
    )
    .await;
    assert!(ok, "{err}");
    let tenant = out
        .trim()
        .strip_prefix("created tenant ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let (ok, out, err) = admin_with(strings(&["tenants"]), operator.clone()).await;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{tenant}  acme-logistics  created "))),
        "{out}"
    );
    let (ok, out, err) = admin_with(strings(&["keys", &tenant]), operator.clone()).await;
    assert!(ok, "{err}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let key_id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .to_owned();
    let tenant_env = vec![
        ("WAYBILL_API_URL".to_owned(), api_url.clone()),
        ("WAYBILL_API_KEY".to_owned(), key.clone()),
    ];

    // A subscription whose receiver refuses: its delivery dies.
    let api = Api::new(api_url.clone(), &key);
    let receiver = Receiver::with(Options {
        default_status: Some(500),
        ..Options::default()
    })
    .await
    .unwrap();
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            serde_json::json!({"url": receiver.url("/flaky"), "event_types": ["freights.*"],
                               "retry_policy": {"delays": ["50ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let subscription = created["id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .post(
            "/v1/events",
            serde_json::json!({"event_name": "freights.publication.created",
                               "entity": {"type": "freight", "id": "F-ADMIN"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let (ok, out, err) = admin_with(
        strings(&["subscription", &subscription]),
        tenant_env.clone(),
    )
    .await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], subscription.as_str());
    assert_eq!(shown["revision"], 1);

    let dead = waybill_testkit::wait::until("the delivery to die", Duration::from_secs(30), || {
        let env = tenant_env.clone();
        let args = strings(&["deliveries", &subscription, "--status", "dead"]);
        async move {
            let (ok, out, _) = admin_with(args, env).await;
            let line = out.lines().next().map(str::to_owned);
            line.filter(|_| ok)
        }
    })
    .await
    .unwrap();
    assert!(
        dead.contains("  dead  ") && dead.contains("freights.publication.created"),
        "{dead}"
    );
    assert!(dead.ends_with("attempts 2  last 500"), "{dead}");
    let delivery = dead.split(' ').next().unwrap().to_owned();

    // Retry it once the receiver is fixed.
    receiver.set_status(200);
    let (ok, out, err) = admin_with(strings(&["retry", &delivery]), tenant_env.clone()).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("retry queued: {delivery}"));
    receiver
        .wait_for(3, Duration::from_secs(30))
        .await
        .expect("the retry arrives");

    // A replay of the last hour, followed to its end (plain lines: stdout
    // is not a terminal here).
    let since = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (ok, out, err) = admin_with(
        strings(&["replay", &subscription, "--since", &since]),
        tenant_env.clone(),
    )
    .await;
    assert!(ok, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("replay rpl_") && lines[0].ends_with(" started"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"done: 1 scanned, 1 queued"), "{out}");
    assert!(
        !out.contains('\r'),
        "no progress bar off a terminal: {out:?}"
    );
    receiver
        .wait_for(4, Duration::from_secs(30))
        .await
        .expect("the replay arrives");

    // The key goes; then it no longer works.
    let (ok, _, err) = admin_with(
        strings(&["keys", &tenant, "--delete", &key_id]),
        operator.clone(),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = admin_with(strings(&["subscription", &subscription]), tenant_env).await;
    assert!(!ok && err.contains("answered 401"), "{err}");
    // Without the credential it needs, a command says which.
    let (ok, _, err) = admin_with(
        strings(&["tenants"]),
        vec![("WAYBILL_API_URL".into(), api_url)],
    )
    .await;
    assert!(
        !ok && err.contains("--token (or WAYBILL_OPERATOR_TOKEN)"),
        "{err}"
    );

    // Kafka's view, from a configuration with only [kafka].
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waybill.toml");
    std::fs::write(
        &config,
        format!("[kafka]\nbrokers = \"{}\"\n", stack.brokers),
    )
    .unwrap();
    let (ok, out, err) = admin_with(
        vec![
            "--config".into(),
            config.to_str().unwrap().into(),
            "topics".into(),
        ],
        Vec::new(),
    )
    .await;
    assert!(ok, "{err}");
    let freights = out
        .lines()
        .find(|l| l.starts_with("freights "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        freights.contains("partitions   4  waybill-matcher lag 0"),
        "{freights}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("deliveries ") && l.contains("waybill-delivery lag")),
        "{out}"
    );
    stack.stop().await.unwrap();
}
