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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logistics_2023_07_webhooks_api() {
    // The seed takes https:// URLs only and the test receiver is plain
    // HTTP: the delivery is checked on the same subscription pointed at
    // the receiver through /v1.
    let (stack, api) = start(&["logistics_2023_07"]).await;
    add_events(&stack, &api, &["Shipment.Created", "Order.Shipped"]).await;
    let base = "/logistics/api/2023-07/webhooks";

    // The seed's request sample, as written but for real values.
    let (status, created) = api
        .post(
            base,
            json!({"type": "Shipment.Created", "url": "https://hooks.example.com/shipments",
                   "method": "POST", "authMethod": "TOKEN", "token": "s3cret-token",
                   "tokenHeader": "X-Webhook-Token"}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_u64().expect("a numeric id");
    assert_eq!(
        created,
        json!({"type": "Shipment.Created", "url": "https://hooks.example.com/shipments",
               "method": "POST", "authMethod": "TOKEN", "token": "***",
               "tokenHeader": "X-Webhook-Token", "id": id})
    );
    let (status, again) = api
        .post(
            base,
            json!({"type": "Shipment.Created", "url": "https://hooks.example.com/shipments", "method": "POST"}),
        )
        .await;
    assert_eq!(status, 409, "{again}");

    // Basic auth; list and get.
    let (status, basic) = api
        .post(
            base,
            json!({"type": "Order.Shipped", "url": "https://hooks.example.com/orders", "method": "PUT",
                   "authMethod": "BASIC_AUTH", "username": "acme", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 202, "{basic}");
    assert_eq!(basic["password"], "***");
    let (status, list) = api.get(base).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (status, one) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one, created);

    // Through /v1: the same subscription, with the token as api_key auth.
    let (_, v1) = api.get("/v1/subscriptions").await;
    let sub = v1["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["event_types"] == json!(["Shipment.Created"]))
        .unwrap()
        .clone();
    assert_eq!(sub["auth"]["type"], "api_key", "{sub}");
    assert_eq!(sub["auth"]["header_name"], "X-Webhook-Token");

    // Deliveries carry the token in its header: point it at a receiver
    // through /v1 (the seed accepts https only) and send an event.
    let receiver = Receiver::start().await.unwrap();
    let sub_path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let (status, edited) = api
        .patch(
            &sub_path,
            json!({"url": receiver.url("/shipments"), "auth": {"type": "api_key",
                   "header_name": "X-Webhook-Token", "header_value": "s3cret-token"}}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "Shipment.Created", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got[0].header("x-webhook-token"), Some("s3cret-token"));
    let (_, read_back) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(
        read_back["url"],
        receiver.url("/shipments"),
        "a /v1 edit reads back"
    );

    // Errors in the seed's shape: http:// and a bad method are refused
    // (400), an unknown type is unprocessable (422), a missing id 404.
    let (status, refused) = api
        .post(
            base,
            json!({"type": "Shipment.Created", "url": "http://hooks.example.com", "method": "GET"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    for key in [
        "status", "type", "title", "detail", "instance", "code", "message",
    ] {
        assert!(refused.get(key).is_some(), "{key} in {refused}");
    }
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["code"], 400);
    assert_eq!(refused["instance"], base);
    assert!(
        refused["detail"].as_str().unwrap().contains("https://"),
        "{refused}"
    );
    let (status, refused) = api
        .post(
            base,
            json!({"type": "Nope.Nothing", "url": "https://hooks.example.com/x", "method": "POST"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, refused) = api.get(&format!("{base}/12345")).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["status"], 404);
    let (status, refused) = api
        .with_key("wb_wrong_key_0000000000000000000000")
        .get(base)
        .await;
    assert_eq!(
        (status, &refused["status"]),
        (401, &json!(401)),
        "{refused}"
    );

    // The document lists the dialect under its tag.
    let doc: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", stack.api_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"][base]["post"]["tags"],
        json!(["logistics_2023_07"])
    );
    let broken = waybill_testkit::schema::violations(
        &doc,
        &json!({"$ref": "#/components/schemas/Logistics202307Webhook"}),
        &created,
    );
    assert!(broken.is_empty(), "{broken:#?}");

    // DELETE: 204, then 404.
    let (status, _) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!(status, 404);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spotgo_webhooks_api() {
    let (stack, api) = start(&["spotgo"]).await;
    let receiver = Receiver::start().await.unwrap();
    let base = "/api/v1/webhooks";

    // The seed's request example: `All`, every auth block sent, `type`
    // says which counts; answered `200 {}`.
    let (status, created) = api
        .post(
            base,
            json!({"eventType": "All", "callbackUrl": receiver.url("/spotgo"),
                   "callbackAuth": {"type": "ApiKey",
                       "basic": {"username": "string", "password": "string"},
                       "apiKey": {"headerName": "X-Api-Key", "headerValue": "tms-key"},
                       "oauth2": {"tokenUrl": "string", "properties": {"property1": "string", "property2": "string"}}}}),
        )
        .await;
    assert_eq!((status, &created), (200, &json!({})), "{created}");
    let (status, basic) = api
        .post(
            base,
            json!({"eventType": "freights.publication.created", "callbackUrl": receiver.url("/basic"),
                   "callbackAuth": {"type": "Basic", "basic": {"username": "acme", "password": "pw"}}}),
        )
        .await;
    assert_eq!(status, 200, "{basic}");

    // GET: the subscriptions, credentials masked.
    let (status, list) = api.get(base).await;
    assert_eq!(status, 200, "{list}");
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let all = items.iter().find(|i| i["eventType"] == "All").unwrap();
    assert_eq!(
        all["callbackAuth"],
        json!({"type": "ApiKey", "apiKey": {"headerName": "X-Api-Key", "headerValue": "***"}})
    );
    let id = all["subscriptionId"].as_str().unwrap().to_owned();
    let basic = items.iter().find(|i| i["eventType"] != "All").unwrap();
    assert_eq!(basic["callbackAuth"]["basic"]["password"], "***");

    // Events reach both with their auth; `All` is the domain events.
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.publication.created", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(2, Duration::from_secs(30)).await.unwrap();
    let to_all = got.iter().find(|r| r.path == "/spotgo").unwrap();
    assert_eq!(to_all.header("x-api-key"), Some("tms-key"));
    let to_basic = got.iter().find(|r| r.path == "/basic").unwrap();
    assert!(
        to_basic
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );

    // notify sends a test event to that one only; reset answers 200 {}.
    let (status, notified) = api.put(&format!("{base}/{id}/notify"), json!({})).await;
    assert_eq!((status, &notified), (200, &json!({})), "{notified}");
    let got = receiver.wait_for(3, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got[2].path, "/spotgo");
    assert_eq!(got[2].json()["event_name"], "waybill.test");
    let (status, reset) = api.put(&format!("{base}/{id}/reset"), json!({})).await;
    assert_eq!((status, &reset), (200, &json!({})), "{reset}");

    // Invalid bodies are ProblemDetails with the seed's field names.
    let (status, problem) = api
        .post(
            base,
            json!({"eventType": "Nope", "callbackUrl": "not a url",
                   "callbackAuth": {"type": "ApiKey", "apiKey": {"headerName": "X-Key"}}}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["instance"], base);
    for field in [
        "eventType",
        "callbackUrl",
        "callbackAuth.apiKey.headerValue",
    ] {
        assert!(
            problem["errors"].get(field).is_some(),
            "{field} in {problem}"
        );
    }
    let (status, problem) = api
        .post(
            base,
            json!({"eventType": "All", "callbackUrl": "https://x.example",
                           "callbackAuth": {"type": "Digest"}}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"].get("callbackAuth.type").is_some(),
        "{problem}"
    );

    // Through /v1: `All` is `*`; edited there, read back here.
    let path = format!("/v1/subscriptions/{id}");
    let (_, v1) = api.get(&path).await;
    assert_eq!(v1["event_types"], json!(["*"]), "{v1}");
    let (status, _) = api
        .patch(
            &path,
            json!({"event_types": ["freights.publication.accepted"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = api.get(base).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["subscriptionId"] == id.as_str()
                && i["eventType"] == "freights.publication.accepted"),
        "{list}"
    );

    // The document lists the dialect; DELETE answers 200 {}, then 404.
    let doc: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", stack.api_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["paths"][base]["post"]["tags"], json!(["spotgo"]));
    let broken = waybill_testkit::schema::violations(
        &doc,
        &json!({"type": "array", "items": {"$ref": "#/components/schemas/SpotGoWebhookItem"}}),
        &list,
    );
    assert!(broken.is_empty(), "{broken:#?}");
    let (status, deleted) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!((status, &deleted), (200, &json!({})));
    let (status, problem) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["status"], 404);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spotnana_webhook_subscription_api() {
    let (stack, api) = start(&["spotnana"]).await;
    add_events(&stack, &api, &["TRAVELER_V2", "PNR_V3"]).await;
    let receiver = Receiver::start().await.unwrap();
    let base = "/v3/webhooks/subscriptions";
    let subscriber = "96d0a1b8-7f77-4d5c-847e-2afd90ed23b3";
    let company = "497f6eca-6276-4993-bfeb-53cbbbba6f08";
    let doc: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", stack.api_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conforms = |schema: &str, value: &serde_json::Value| {
        let broken = waybill_testkit::schema::violations(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            value,
        );
        assert!(broken.is_empty(), "{schema}: {broken:#?} in {value}");
    };

    // The seed's create example as written (only the URL's host changed).
    let (status, created) = api
        .post(
            base,
            json!({"subscriberId": subscriber,
                   "eventSource": {"scopes": [{"predicates": [
                       {"type": "COMPANY", "values": [company], "comparator": "IN"}]}]},
                   "name": "string", "eventTypes": ["TRAVELER_V2"], "url": receiver.url("/spotnana"),
                   "isActive": true,
                   "customHeaders": {"X-Custom-Header": "my-value", "Authorization-Extra": "token123"}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    conforms("SpotnanaCreateWebhookSubscriptionResponse", &created);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret =
        waybill_core::signing::SigningSecret::parse(created["hmacSigningSecret"].as_str().unwrap())
            .unwrap();
    assert!(
        created["createdAt"]["iso8601"]
            .as_str()
            .unwrap()
            .starts_with("20"),
        "{created}"
    );

    // Events of its company arrive, signed with `hmacSigningSecret` and
    // carrying the custom headers; another company's do not.
    for (n, who) in [(1, company), (2, "another-company"), (3, company)] {
        let (status, answer) = api
            .post(
                "/v1/events",
                json!({"event_name": "TRAVELER_V2", "attributes": {"company_id": who}, "data": {"n": n}}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let got = receiver.wait_for(2, Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: Vec<i64> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, [1, 3], "{got:?}");
    assert!(got[0].signature_valid(&secret));
    assert_eq!(got[0].header("x-custom-header"), Some("my-value"));
    assert_eq!(got[0].header("authorization-extra"), Some("token123"));

    // GET: the seed's shape.
    let (status, one) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(status, 200, "{one}");
    conforms("SpotnanaWebhookSubscription", &one);
    assert_eq!(one["subscriberId"], subscriber);
    assert_eq!(
        one["eventSource"],
        json!({"scopes": [{"predicates": [{"type": "COMPANY", "values": [company], "comparator": "IN"}]}]})
    );
    assert_eq!(one["eventTypes"], json!(["TRAVELER_V2"]));
    assert_eq!(one["isActive"], true);
    assert_eq!(one["name"], "string");
    assert_eq!(one["createdAt"], created["createdAt"]);
    assert!(one.get("hmacSigningSecret").is_none(), "{one}");

    // Two more: one of the same subscriber (comparator left out: IN), one
    // of another; the list is per subscriber, paged, with totalCount.
    let (status, second) = api
        .post(
            base,
            json!({"subscriberId": subscriber, "eventTypes": ["PNR_V3"], "url": receiver.url("/second"),
                   "eventSource": {"scopes": [{"predicates": [{"type": "LEGAL_ENTITY", "values": ["le-1"]}]}]}}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let (status, other) = api
        .post(
            base,
            json!({"subscriberId": "someone-else", "eventTypes": ["PNR_V3"], "url": receiver.url("/other")}),
        )
        .await;
    assert_eq!(status, 200, "{other}");
    let list_path = format!("{base}/subscriber/{subscriber}/list");
    let (status, list) = api.get(&format!("{list_path}?limit=50&offset=0")).await;
    assert_eq!(status, 200, "{list}");
    conforms("SpotnanaListWebhookSubscriptionsResponse", &list);
    assert_eq!(list["totalCount"], 2, "{list}");
    let items = list["subscriptions"].as_array().unwrap();
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[1]["id"], second["id"]);
    assert_eq!(
        items[1]["eventSource"]["scopes"][0]["predicates"][0],
        json!({"type": "LEGAL_ENTITY", "values": ["le-1"], "comparator": "IN"})
    );
    let (_, page) = api.get(&format!("{list_path}?limit=1&offset=1")).await;
    assert_eq!(page["totalCount"], 2, "{page}");
    assert_eq!(page["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(page["subscriptions"][0]["id"], second["id"]);
    let (_, theirs) = api
        .get(&format!("{base}/subscriber/someone-else/list"))
        .await;
    assert_eq!(theirs["totalCount"], 1, "{theirs}");
    assert_eq!(theirs["subscriptions"][0]["id"], other["id"]);

    // PATCH with the seed's example (customHeaders as a flat map, as every
    // other call has it): present fields replace, absent ones stay.
    let (status, patched) = api
        .patch(
            &format!("{base}/{id}"),
            json!({"eventSource": {"scopes": [{"predicates": [
                       {"type": "COMPANY", "values": [company], "comparator": "IN"}]}]},
                   "name": "renamed", "eventTypes": ["TRAVELER_V2", "PNR_V3"], "isActive": true,
                   "url": receiver.url("/spotnana"),
                   "customHeaders": {"X-Custom-Header": "my-value", "Authorization-Extra": "token123"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    conforms("SpotnanaWebhookSubscription", &patched);
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["eventTypes"], json!(["TRAVELER_V2", "PNR_V3"]));
    let (status, patched) = api
        .patch(
            &format!("{base}/{id}"),
            json!({"isActive": false, "customHeaders": {}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["isActive"], false);
    assert_eq!(patched["customHeaders"], json!({}));
    assert_eq!(patched["name"], "renamed", "absent fields stay");
    assert_eq!(patched["subscriberId"], subscriber);

    // The same subscription through /v1, edited there, read back here.
    let v1_path = format!("/v1/subscriptions/{id}");
    let (_, v1) = api.get(&v1_path).await;
    assert_eq!(v1["metadata"]["spotnana.subscriber_id"], subscriber, "{v1}");
    assert_eq!(
        v1["filter"]["scopes"][0]["predicates"][0]["attribute"],
        "company_id"
    );
    assert_eq!(v1["enabled"], false);
    let (status, _) = api
        .patch(
            &v1_path,
            json!({"enabled": true, "filter": {"scopes": [{"predicates": [
                {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["9"]}]}]}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, one) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(one["isActive"], true, "{one}");
    assert_eq!(
        one["eventSource"],
        json!({"scopes": [{"predicates": [{"type": "DC", "values": ["9"], "comparator": "NOT_IN"}]}]})
    );

    // Invalid bodies as Spotnana's ErrorResponse, with the seed's names.
    let fields_of = |refused: &serde_json::Value| -> Vec<String> {
        refused["errorMessages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["errorParameters"][0]["value"].as_str().map(String::from))
            .collect()
    };
    let (status, refused) = api
        .post(
            base,
            json!({"eventTypes": [], "url": 5, "isActive": "yes",
                   "eventSource": {"scopes": [{"predicates": [{"type": "company", "values": ["c"]}]}]}}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    conforms("SpotnanaErrorResponse", &refused);
    assert!(
        refused["debugIdentifier"]
            .as_str()
            .unwrap()
            .starts_with("dbg_")
    );
    let fields = fields_of(&refused);
    for field in [
        "subscriberId",
        "eventTypes",
        "url",
        "isActive",
        "eventSource.scopes[0].predicates[0].type",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {refused}");
    }
    let (status, refused) = api
        .post(
            base,
            json!({"subscriberId": subscriber, "eventTypes": ["NOT_IN_CATALOG"], "url": receiver.url("/x")}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(fields_of(&refused), ["eventTypes[0]"], "{refused}");
    assert_eq!(
        refused["errorMessages"][0]["errorCode"],
        "validation_failed"
    );
    let (status, refused) = api
        .patch(
            &format!("{base}/{id}"),
            json!({"customHeaders": {"headerName1": {"X-Custom-Header": "my-value"}}}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(fields_of(&refused), ["customHeaders.headerName1"]);
    let (status, refused) = api.get(&format!("{base}/sub_nothing")).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["errorMessages"][0]["errorCode"], "not_found");
    let (status, refused) = api
        .with_key("wb_wrong_key_0000000000000000000000")
        .get(&list_path)
        .await;
    assert_eq!(status, 401, "{refused}");
    conforms("SpotnanaErrorResponse", &refused);

    // The document lists the dialect under its tag; there is no DELETE.
    assert_eq!(doc["paths"][base]["post"]["tags"], json!(["spotnana"]));
    let (status, _) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!(status, 405);
    stack.stop().await.unwrap();
}
