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

fn admin(api: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["admin", "--api", api, "--token", token, "check"])
        .args(args)
        .env_remove("WAYBILL_OPERATOR_TOKEN")
        .output()
        .expect("waybill admin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        let (api_url, token, args) = (api_url.clone(), token.clone(), args.clone());
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            admin(&api_url, &token, &args)
        })
        .await
        .unwrap();
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
    let (api_c, token_c) = (api_url.clone(), token.clone());
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        admin(
            &api_c,
            &token_c,
            &[
                "--receiver-url",
                &refusing_url,
                "--expect-success",
                "--timeout",
                "30s",
            ],
        )
    })
    .await
    .unwrap();
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("answered 503"), "{stderr}");

    // A wrong token: a clear error, exit 1.
    let (api_c, _) = (api_url.clone(), ());
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || admin(&api_c, "wbop_wrong_token_0000000000", &[]))
            .await
            .unwrap();
    assert!(!ok);
    assert!(stderr.contains("GET /v1/tenants answered 401"), "{stderr}");
    stack.stop().await.unwrap();
}
