//! The seed platforms' own webhook APIs (`ingest.dialects`), over real
//! HTTP against the whole system on the embedded broker: each seed's
//! request examples as written (only host and key changed), its answer
//! shapes and status codes, deliveries to a test receiver, and the same
//! subscriptions through `/v1`.

use std::time::Duration;

use serde_json::json;
use waybill::dev;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::Receiver;

const KEY: &str = "wb_test_key_0123456789abcdef01234";

async fn start(dialects: &[&str]) -> (dev::DevStack, Api) {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let mut base = dev::base_config(0);
    base["ingest"].as_table_mut().unwrap().insert(
        "dialects".into(),
        dialects
            .iter()
            .map(|d| toml::Value::from(*d))
            .collect::<Vec<_>>()
            .into(),
    );
    let config = waybill::load(base, None, vec![]).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    (stack, api)
}

/// The operator adds the platform's event names to the catalog.
async fn add_events(stack: &dev::DevStack, api: &Api, names: &[&str]) {
    let operator = api.with_key(stack.operator_token.clone());
    for name in names {
        let (status, answer) = operator
            .post(
                "/v1/event_types",
                json!({"name": name, "topic": "freights"}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_planner_webhooks_api() {
    let (stack, api) = start(&["route_planner"]).await;
    add_events(&stack, &api, &["ROUTE_CREATED", "ROUTE_STARTED"]).await;
    let receiver = Receiver::start().await.unwrap();

    // POST /webhooks with the seed's parameters.
    let (status, created) = api
        .post(
            "/webhooks",
            json!({"webhook_url": receiver.url("/webhook"),
                   "events": ["ROUTE_CREATED", "ROUTE_STARTED"], "dc_ids": ["1", "2", "3"]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["status"], "success", "{created}");
    let hook = &created["data"]["webhook"];
    let id = hook["id"].as_str().unwrap().to_owned();
    assert_eq!(
        hook,
        &json!({"id": id, "url": receiver.url("/webhook"), "enabled": true,
                "dc_ids": ["1", "2", "3"], "events": ["ROUTE_CREATED", "ROUTE_STARTED"]})
    );

    // Events of its DCs arrive, others do not.
    for (name, dc) in [
        ("ROUTE_CREATED", "2"),
        ("ROUTE_STARTED", "9"),
        ("ROUTE_STARTED", "3"),
    ] {
        let (status, answer) = api
            .post(
                "/v1/events",
                json!({"event_name": name, "attributes": {"dc_id": dc}, "data": {"dc": dc}}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let got = receiver.wait_for(2, Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dcs: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            r.json()["data"]["dc"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    dcs.sort();
    assert_eq!(dcs, ["2", "3"], "{got:?}");

    // GET /webhooks: the list in the seed's envelope.
    let (status, list) = api.get("/webhooks").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["status"], "success");
    assert_eq!(list["data"]["webhooks"], json!([hook]));

    // PATCH and PUT change only `enabled`.
    let (status, patched) = api
        .patch(&format!("/webhooks/{id}"), json!({"enabled": false}))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["data"]["webhook"]["enabled"], false);
    let (status, put) = api
        .put(&format!("/webhooks/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["data"]["webhook"]["enabled"], true);
    let (status, refused) = api
        .patch(
            &format!("/webhooks/{id}"),
            json!({"enabled": true, "webhook_url": "https://example.com/other"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["status"], "error");
    assert_eq!(refused["error"]["code"], "validation_failed");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only `enabled` can be changed"),
        "{refused}"
    );

    // Invalid bodies in the seed's error shape, with its field names.
    let (status, refused) = api
        .post(
            "/webhooks",
            json!({"webhook_url": "not a url", "events": ["NOPE"]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("webhook_url") && message.contains("events"),
        "{refused}"
    );
    let (status, refused) = api
        .with_key("wb_wrong_key_0000000000000000000000")
        .get("/webhooks")
        .await;
    assert_eq!(status, 401);
    assert_eq!(refused["status"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "unauthorized");

    // The OpenAPI document lists the dialect under its tag, and its
    // answers match what it says.
    let doc: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", stack.api_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/webhooks", "get"),
        ("/webhooks", "post"),
        ("/webhooks/{id}", "patch"),
        ("/webhooks/{id}", "put"),
        ("/webhooks/{id}", "delete"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["tags"],
            json!(["route_planner"]),
            "{path} {method}"
        );
    }
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    for (answer, name) in [
        (&created, "RoutePlannerWebhookAnswer"),
        (&list, "RoutePlannerWebhookList"),
        (&patched, "RoutePlannerWebhookAnswer"),
        (&refused, "RoutePlannerError"),
    ] {
        let broken = waybill_testkit::schema::violations(&doc, &schema(name), answer);
        assert!(broken.is_empty(), "{name}: {broken:#?}");
    }

    // Through /v1: the same subscription; edited there, read back here.
    let (status, v1) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(
        v1["filter"]["scopes"][0]["predicates"][0]["attribute"],
        "dc_id"
    );
    let (status, _) = api
        .patch(
            &format!("/v1/subscriptions/{id}"),
            json!({"event_types": ["ROUTE_CREATED"], "filter": {"scopes": [{"predicates": [
                {"attribute": "dc_id", "comparator": "IN", "values": ["7"]}]}]}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = api.get("/webhooks").await;
    assert_eq!(
        list["data"]["webhooks"][0]["events"],
        json!(["ROUTE_CREATED"])
    );
    assert_eq!(list["data"]["webhooks"][0]["dc_ids"], json!(["7"]));

    // DELETE: 200, then 404 in the seed's shape.
    let (status, deleted) = api.delete(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["status"], "success");
    let (status, missing) = api.delete(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["status"], "error");
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, _) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 404);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialect_not_enabled_is_not_served() {
    let (stack, api) = start(&[]).await;
    let (status, answer) = api.get("/webhooks").await;
    assert_eq!(status, 404, "{answer}");
    stack.stop().await.unwrap();
}
