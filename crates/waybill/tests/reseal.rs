//! `waybill reseal` racing changes through the API, on the embedded broker:
//! the API's ingest still seals with the old key (a replica not rolled
//! yet) while the reseal writes the same subscriptions under the new one.
//! Neither loses the other's write, and a last run leaves nothing behind.

use std::time::Duration;

use serde_json::json;
use waybill::dev;
use waybill_core::sealing::Keyring;
use waybill_testkit::api::Api;

const KEY: &str = "wb_test_key_0123456789abcdef01234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_racing_api_changes_loses_none_of_them() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let mut config = waybill::load(dev::base_config(0), None, vec![]).expect("dev config");
    let new_key = Keyring::generate_key();
    // The services open both keys and seal with the old one.
    config
        .secrets
        .keys
        .insert("new".into(), new_key.as_str().into());
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    let mut rotated = stack.config.secrets.clone();
    rotated.current_key_id = "new".into();
    let keys = rotated.keyring().unwrap();

    let mut ids = Vec::new();
    for n in 0..12 {
        let (status, created) = api
            .post(
                "/v1/subscriptions",
                json!({"name": "n0", "url": format!("http://127.0.0.1:9/{n}"),
                       "event_types": ["*"], "auth": {"type": "bearer", "token": format!("t-{n}")}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }

    // Renames, one after the other per subscription, while reseals run.
    let renames = ids.iter().map(|id| {
        let api = api.clone();
        let id = id.clone();
        async move {
            let mut last_ok = None;
            for round in 1..=8 {
                let (status, body) = api
                    .patch(
                        &format!("/v1/subscriptions/{id}"),
                        json!({"name": format!("n{round}")}),
                    )
                    .await;
                assert!(status == 200 || status == 409, "{status} {body}");
                if status == 200 {
                    last_ok = Some(format!("n{round}"));
                }
            }
            (id, last_ok)
        }
    });
    let reseals = async {
        let mut reports = Vec::new();
        for _ in 0..3 {
            let report = waybill_ingest::reseal::reseal(
                &stack.config.kafka,
                keys.clone(),
                Duration::from_secs(5),
                false,
            )
            .await
            .expect("reseal runs");
            assert!(report.failed.is_empty(), "{report}");
            assert!(report.unreadable.is_empty(), "{report}");
            reports.push(report);
        }
        reports
    };
    let (renamed, reports) = tokio::join!(futures::future::join_all(renames), reseals);
    let resealed: usize = reports.iter().map(|r| r.resealed).sum();
    assert!(resealed >= ids.len(), "{reports:?}");

    // Every rename answered 200 is in the state: the last one of each.
    for (id, last_ok) in &renamed {
        let (status, got) = api.get(&format!("/v1/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{got}");
        if let Some(name) = last_ok {
            assert_eq!(&got["name"], name, "{id} lost a rename");
        }
        assert_eq!(got["auth"]["token"], "***");
    }
    // Once the API is quiet, one more run leaves nothing under the old key.
    let last =
        waybill_ingest::reseal::reseal(&stack.config.kafka, keys, Duration::from_secs(5), false)
            .await
            .unwrap();
    assert!(last.clean(), "{last}");
    let check = waybill_ingest::reseal::reseal(
        &stack.config.kafka,
        rotated.keyring().unwrap(),
        Duration::from_secs(5),
        true,
    )
    .await
    .unwrap();
    assert_eq!((check.stale, check.left), (0, 0), "{check}");
    stack.stop().await.unwrap();
}
