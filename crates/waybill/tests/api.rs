//! The subscription and tenant API, driven over real HTTP against the whole
//! system on the embedded broker: every call of API.md's table, PATCH/PUT
//! semantics, pagination, tenant isolation, idempotency, secrets on topics.

use std::time::Duration;

use serde_json::{Value, json};
use waybill::dev::{self, DevStack};
use waybill_core::signing::SigningSecret;
use waybill_testkit::api::Api;
use waybill_testkit::receiver::{Options, Receiver};

const KEY: &str = "wb_test_key_0123456789abcdef01234";
const WAIT: Duration = Duration::from_secs(60);

async fn start_stack() -> (DevStack, Api) {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    waybill_runtime::telemetry::init(
        waybill_runtime::telemetry::LogFormat::Human,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let config = waybill::load(dev::base_config(0), None, vec![]).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    (stack, api)
}

fn sub_body(url: &str) -> Value {
    json!({"url": url, "event_types": ["*"]})
}

async fn create(api: &Api, body: Value) -> Value {
    let (status, created) = api.post("/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{created}");
    created
}

fn ids(list: &Value) -> Vec<String> {
    list["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every record value of a topic, read from the beginning.
fn raw_records(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    waybill_testkit::topic::read_all(brokers, topic)
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_patch_put_delete() {
    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();

    // Create with every field; the answer masks credentials.
    let full = json!({
        "name": "carrier TMS",
        "url": receiver.url("/tms"),
        "method": "PUT",
        "event_types": ["freights.publication.*", "freight_orders.order.created"],
        "filter": {"scopes": [{"predicates": [
            {"attribute": "company_id", "comparator": "IN", "values": ["c-1", "c-2"]}]}]},
        "auth": {"type": "oauth2", "token_url": receiver.url("/token"), "client_id": "a",
                 "client_secret": "s3cr3t-client", "scope": "webhooks",
                 "extra_params": {"audience": "x"}},
        "headers": {"X-Custom-Header": "my-value"},
        "enabled": true,
        "rate_limit_per_second": 50,
        "retry_policy": {"delays": ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]},
        "metadata": {"team": "ops"}
    });
    let created = create(&api, full.clone()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        created["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(created["auth"]["client_secret"], "***");
    assert_eq!(created["status"], "active");
    assert_eq!(created["created_by"], created["updated_by"]);
    assert!(created["created_by"].as_str().unwrap().starts_with("key_"));
    assert_eq!(created["retry_policy"]["delays"][3], "2h");

    let (status, got) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 200);
    assert!(got.get("signing_secret").is_none());
    for field in [
        "name",
        "url",
        "method",
        "event_types",
        "filter",
        "headers",
        "rate_limit_per_second",
        "metadata",
    ] {
        assert_eq!(got[field], full[field], "{field}");
    }
    assert!(!got.to_string().contains("s3cr3t-client"));

    // PATCH: present fields replace, absent stay, `{}` clears headers,
    // null resets, the masked secret keeps the stored one.
    let (status, patched) = api
        .patch(
            &format!("/v1/subscriptions/{id}"),
            json!({"name": "renamed", "headers": {}, "rate_limit_per_second": null,
                   "auth": created["auth"].clone()}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["headers"], json!({}));
    assert_eq!(patched["rate_limit_per_second"], Value::Null);
    assert_eq!(patched["url"], full["url"]);
    assert_eq!(patched["filter"], full["filter"]);
    assert_eq!(patched["metadata"], full["metadata"]);
    assert_ne!(patched["updated_at"], created["updated_at"]);

    let (status, err) = api
        .patch(&format!("/v1/subscriptions/{id}"), json!({"url": null}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "url");

    // PUT replaces everything: what is left out takes its default.
    let (status, replaced) = api
        .put(
            &format!("/v1/subscriptions/{id}"),
            json!({"url": receiver.url("/v2"), "event_types": ["orders_never.*"]}),
        )
        .await;
    assert_eq!(status, 400, "an invalid PUT changes nothing: {replaced}");
    let (status, replaced) = api
        .put(
            &format!("/v1/subscriptions/{id}"),
            json!({"url": receiver.url("/v2"), "event_types": ["freights.*"]}),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["name"], "");
    assert_eq!(replaced["method"], "POST");
    assert_eq!(replaced["auth"], json!({"type": "none"}));
    assert_eq!(replaced["filter"], Value::Null);
    assert_eq!(replaced["retry_policy"], Value::Null);
    assert_eq!(replaced["created_at"], created["created_at"]);

    // Pagination and filters over 5 subscriptions (the first one included).
    for i in 0..4 {
        let mut body = sub_body(&receiver.url(&format!("/p{i}")));
        if i % 2 == 1 {
            body["enabled"] = json!(false);
            body["event_types"] = json!(["loads_monitoring.*"]);
        }
        create(&api, body).await;
    }
    let (_, all) = api.get("/v1/subscriptions").await;
    assert_eq!(all["total_count"], 5);
    assert_eq!(all["limit"], 50);
    let all_ids = ids(&all);
    assert_eq!(all_ids[0], id, "oldest first");
    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let (status, page) = api
            .get(&format!("/v1/subscriptions?limit=2&offset={offset}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(page["total_count"], 5);
        assert_eq!(page["offset"], offset);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, all_ids);
    let (_, past_end) = api.get("/v1/subscriptions?offset=99").await;
    assert_eq!(ids(&past_end), Vec::<String>::new());
    assert_eq!(past_end["total_count"], 5);
    let (_, disabled) = api.get("/v1/subscriptions?enabled=false").await;
    assert_eq!(disabled["total_count"], 2);
    // A filtered list pages like the whole one: the same order, the same
    // count on every page.
    let (_, second) = api
        .get("/v1/subscriptions?enabled=false&limit=1&offset=1")
        .await;
    assert_eq!(second["total_count"], 2);
    assert_eq!(ids(&second), ids(&disabled)[1..].to_vec());
    let (_, by_type) = api
        .get("/v1/subscriptions?event_type=loads_monitoring.monitoring.device_added")
        .await;
    assert_eq!(
        by_type["total_count"], 4,
        "two `*` and two loads_monitoring.*"
    );
    let (_, by_type) = api
        .get("/v1/subscriptions?event_type=freights.freight.create&enabled=true")
        .await;
    assert_eq!(by_type["total_count"], 3);
    for bad in [
        "limit=0",
        "limit=1001",
        "offset=-1",
        "enabled=yes",
        "sort=id",
    ] {
        let (status, err) = api.get(&format!("/v1/subscriptions?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(err["error"]["code"], "validation_failed");
    }

    // DELETE: 204, then 404 everywhere; events no longer reach it.
    let (status, _) = api.delete(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = api.delete(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 404);
    let (_, all) = api.get("/v1/subscriptions").await;
    assert_eq!(all["total_count"], 4);
    let (status, _) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.freight.create", "entity": {"id": "F1"}}),
        )
        .await;
    assert_eq!(status, 202);
    // The `*` subscriptions at /p0 and /p2 get it; the deleted one never does.
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(got.len(), 2);
    assert!(!paths.contains(&"/v2".to_owned()), "{paths:?}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_and_isolation() {
    let (stack, api) = start_stack().await;
    let operator = api.with_key(stack.operator_token.clone());

    let (status, tenant) = operator
        .post("/v1/tenants", json!({"name": "Acme Logistics"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    assert!(tenant_id.starts_with("ten_"));
    assert!(tenant["created_at"].is_string());
    let (status, _) = operator
        .post("/v1/tenants", json!({"name": "again", "id": "ten_dev"}))
        .await;
    assert_eq!(status, 409);
    let (status, err) = operator.post("/v1/tenants", json!({"id": "a b"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["details"].as_array().unwrap().len(), 2);

    let (status, key) = operator
        .call(
            reqwest::Method::POST,
            &format!("/v1/tenants/{tenant_id}/api_keys"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().unwrap().to_owned();
    let acme = api.with_key(key["key"].as_str().unwrap());
    let (status, _) = operator
        .post("/v1/tenants/ten_missing/api_keys", json!({}))
        .await;
    assert_eq!(status, 404);

    // The operator token is not an API key, and API keys are not operators.
    let (status, err) = operator.get("/v1/subscriptions").await;
    assert_eq!(status, 401);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operator")
    );
    let (status, _) = api.post("/v1/tenants", json!({"name": "x"})).await;
    assert_eq!(status, 401);

    // Each tenant sees only its own subscriptions; another's answers 404.
    let dev_sub = create(&api, sub_body("https://hooks.example.com/dev")).await;
    let acme_sub = create(&acme, sub_body("https://hooks.example.com/acme")).await;
    assert_eq!(acme_sub["tenant_id"], tenant_id.as_str());
    assert_eq!(acme_sub["created_by"], key_id.as_str());
    let dev_id = dev_sub["id"].as_str().unwrap();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/subscriptions/{dev_id}")),
        (
            reqwest::Method::PATCH,
            format!("/v1/subscriptions/{dev_id}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/subscriptions/{dev_id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/subscriptions/{dev_id}/reset"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/subscriptions/{dev_id}/test"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/subscriptions/{dev_id}/secret"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/subscriptions/{dev_id}/secret/rotate"),
        ),
    ] {
        let body = (method == reqwest::Method::PATCH).then(|| json!({"name": "x"}));
        let (status, err) = acme.call(method.clone(), &path, body.as_ref()).await;
        assert_eq!(status, 404, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
    let (_, mine) = acme.get("/v1/subscriptions").await;
    assert_eq!(mine["total_count"], 1);
    let (_, listed) = operator.get(&format!("/v1/tenants/{tenant_id}")).await;
    assert_eq!(listed["api_keys"][0]["id"], key_id.as_str());
    assert!(!listed.to_string().contains(key["key"].as_str().unwrap()));

    // A deleted key stops working at once.
    let (status, _) = operator
        .delete(&format!("/v1/tenants/{tenant_id}/api_keys/{key_id}"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = acme.get("/v1/subscriptions").await;
    assert_eq!(status, 401);
    let (status, _) = operator
        .delete(&format!("/v1/tenants/{tenant_id}/api_keys/{key_id}"))
        .await;
    assert_eq!(status, 404);

    // No key is in clear on the tenants topic.
    let records = raw_records(&stack.brokers, "tenants");
    assert!(records.len() >= 4);
    for record in records {
        let text = String::from_utf8_lossy(&record);
        assert!(!text.contains(KEY) && !text.contains(key["key"].as_str().unwrap()));
    }
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rotate_reset_and_auth_headers() {
    let (stack, api) = start_stack().await;
    let token_endpoint = Receiver::with(Options {
        body: Some(r#"{"access_token": "tok-1", "expires_in": 3600}"#.into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await.unwrap();

    let mut body = sub_body(&receiver.url("/hook"));
    body["auth"] = json!({"type": "oauth2", "token_url": token_endpoint.url("/token"),
                          "client_id": "cid", "client_secret": "csecret", "scope": "hooks"});
    let created = create(&api, body).await;
    let id = created["id"].as_str().unwrap();
    let first = SigningSecret::parse(created["signing_secret"].as_str().unwrap()).unwrap();

    // A test notification goes to this subscription only, signed, with the
    // OAuth2 token fetched from the token endpoint.
    let other = create(&api, sub_body(&receiver.url("/other"))).await;
    let (status, accepted) = api
        .post(&format!("/v1/subscriptions/{id}/test"), json!({}))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let got = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(got[0].path, "/hook");
    assert_eq!(
        got[0].header("webhook-id"),
        accepted["delivery_id"].as_str()
    );
    assert_eq!(got[0].json()["event_name"], "waybill.test");
    assert!(got[0].signature_valid(&first));
    assert_eq!(got[0].header("authorization"), Some("Bearer tok-1"));
    let token_request = &token_endpoint.received()[0];
    let form = String::from_utf8_lossy(&token_request.body).into_owned();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("client_secret=csecret") && form.contains("scope=hooks"));

    // Rotation: the new secret is returned and signs; the old one signs too
    // during the overlap window.
    let (status, rotated) = api
        .post(&format!("/v1/subscriptions/{id}/secret/rotate"), json!({}))
        .await;
    assert_eq!(status, 200);
    let second = SigningSecret::parse(rotated["signing_secret"].as_str().unwrap()).unwrap();
    assert_ne!(second, first);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let (_, secret) = api.get(&format!("/v1/subscriptions/{id}/secret")).await;
    assert_eq!(secret["signing_secret"], rotated["signing_secret"]);
    let (status, _) = api
        .post(&format!("/v1/subscriptions/{id}/test"), json!({}))
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    assert!(got[1].signature_valid(&second) && got[1].signature_valid(&first));
    // An independent implementation (the `standardwebhooks` crate) accepts
    // both signatures of the overlap window.
    for secret in [&created["signing_secret"], &rotated["signing_secret"]] {
        standard_webhooks_verify(&got[1], secret.as_str().unwrap());
    }
    standard_webhooks_verify(&got[0], created["signing_secret"].as_str().unwrap());
    assert_eq!(got[1].method, "POST");
    // Many more deliveries, one token request in all.
    const MORE: usize = 10;
    for _ in 0..MORE {
        let (status, _) = api
            .post(&format!("/v1/subscriptions/{id}/test"), json!({}))
            .await;
        assert_eq!(status, 202);
    }
    let got = receiver.wait_for(2 + MORE, WAIT).await.unwrap();
    assert!(
        got.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-1"))
    );
    assert_eq!(
        token_endpoint.received().len(),
        1,
        "the token is cached across deliveries"
    );

    // The endpoint refuses the cached token once: a new one is fetched and
    // the same attempt is sent again with it.
    receiver.script(&[401]);
    let (status, _) = api
        .post(&format!("/v1/subscriptions/{id}/test"), json!({}))
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(4 + MORE, WAIT).await.unwrap();
    let (refused, again) = (&got[2 + MORE], &got[3 + MORE]);
    assert_eq!(refused.header("webhook-id"), again.header("webhook-id"));
    assert_eq!(again.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(
        token_endpoint.received().len(),
        2,
        "refreshed once after the 401"
    );

    // Disabled by the user, then reset: active again.
    let (_, off) = api
        .patch(
            &format!("/v1/subscriptions/{id}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(off["status"], "disabled");
    let (status, reset) = api
        .post(&format!("/v1/subscriptions/{id}/reset"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reset["status"], "active");
    assert_eq!(reset["enabled"], true);

    // Basic, api_key and bearer auth reach the receiver as headers.
    let other_id = other["id"].as_str().unwrap();
    for (auth, name, value) in [
        (
            json!({"type": "basic", "username": "u", "password": "p"}),
            "authorization",
            "Basic dTpw",
        ),
        (
            json!({"type": "api_key", "header_name": "X-Api-Key", "header_value": "k-1"}),
            "x-api-key",
            "k-1",
        ),
        (
            json!({"type": "bearer", "token": "b-1"}),
            "authorization",
            "Bearer b-1",
        ),
    ] {
        let (status, patched) = api
            .patch(
                &format!("/v1/subscriptions/{other_id}"),
                json!({"auth": auth}),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        let before = receiver.received().len();
        api.post(&format!("/v1/subscriptions/{other_id}/test"), json!({}))
            .await;
        let got = receiver.wait_for(before + 1, WAIT).await.unwrap();
        assert_eq!(got[before].header(name), Some(value));
    }

    // A PUT subscription is called with PUT.
    let (status, _) = api
        .patch(
            &format!("/v1/subscriptions/{other_id}"),
            json!({"method": "PUT"}),
        )
        .await;
    assert_eq!(status, 200);
    let before = receiver.received().len();
    api.post(&format!("/v1/subscriptions/{other_id}/test"), json!({}))
        .await;
    let got = receiver.wait_for(before + 1, WAIT).await.unwrap();
    assert_eq!(got[before].method, "PUT");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_secrets_on_the_topic() {
    let (stack, api) = start_stack().await;
    let body = sub_body("https://hooks.example.com/once");
    let post = |key: &'static str, body: Value| {
        let api = api.clone();
        async move {
            api.call_with(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(&body),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    let (s1, first) = post("k-1", body.clone()).await;
    let (s2, again) = post("k-1", body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, again, "a repeat answers the first result");
    let (status, err) = post("k-1", sub_body("https://hooks.example.com/other")).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "conflict");
    let (s3, third) = post("k-2", body.clone()).await;
    assert_eq!(s3, 201);
    assert_ne!(third["id"], first["id"]);
    let (_, all) = api.get("/v1/subscriptions").await;
    assert_eq!(all["total_count"], 2);

    // Every kind of credential, and the signing secrets, are sealed on the
    // topic: read its raw records.
    let mut secrets = vec![
        first["signing_secret"].as_str().unwrap()[6..].to_owned(),
        third["signing_secret"].as_str().unwrap()[6..].to_owned(),
    ];
    let mut raw_secrets = vec![
        SigningSecret::parse(first["signing_secret"].as_str().unwrap()).unwrap(),
        SigningSecret::parse(third["signing_secret"].as_str().unwrap()).unwrap(),
    ];
    for (auth, secret) in [
        (
            json!({"type": "basic", "username": "u", "password": "pw-in-clear-1"}),
            "pw-in-clear-1",
        ),
        (
            json!({"type": "api_key", "header_name": "X-K", "header_value": "hv-in-clear-2"}),
            "hv-in-clear-2",
        ),
        (
            json!({"type": "bearer", "token": "tok-in-clear-3"}),
            "tok-in-clear-3",
        ),
        (
            json!({"type": "oauth2", "token_url": "https://idp.example.com/t", "client_id": "c",
                   "client_secret": "cs-in-clear-4"}),
            "cs-in-clear-4",
        ),
    ] {
        let mut body = sub_body("https://hooks.example.com/auth");
        body["auth"] = auth;
        let created = create(&api, body).await;
        assert!(!created.to_string().contains(secret), "masked in answers");
        secrets.push(secret.to_owned());
        secrets.push(created["signing_secret"].as_str().unwrap()[6..].to_owned());
        raw_secrets
            .push(SigningSecret::parse(created["signing_secret"].as_str().unwrap()).unwrap());
    }
    let records = raw_records(&stack.brokers, "subscriptions");
    assert_eq!(records.len(), 6);
    for record in &records {
        let text = String::from_utf8_lossy(record);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret} in clear");
        }
        for secret in &raw_secrets {
            let bytes = secret.as_bytes();
            assert!(!record.windows(bytes.len()).any(|w| w == bytes));
        }
    }
    stack.stop().await.unwrap();
}

/// Each auth type's fields are validated over HTTP: every missing or wrong
/// field is named in one 400 answer, nothing is created, and a valid auth of
/// each type is accepted and answered masked; a masked credential sent back
/// keeps the stored one, while a change of type must bring its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_type_is_validated() {
    let (stack, api) = start_stack().await;
    let cases = [
        (json!({}), vec!["auth.type"]),
        (json!({"type": "digest", "realm": "x"}), vec!["auth.type"]),
        (json!({"type": "none", "token": "t"}), vec!["auth.token"]),
        (
            json!({"type": "basic"}),
            vec!["auth.username", "auth.password"],
        ),
        (
            json!({"type": "basic", "username": "a:b", "password": ""}),
            vec!["auth.password", "auth.username"],
        ),
        (
            json!({"type": "api_key"}),
            vec!["auth.header_name", "auth.header_value"],
        ),
        (
            json!({"type": "api_key", "header_name": "Webhook-Signature", "header_value": "v"}),
            vec!["auth.header_name"],
        ),
        (
            json!({"type": "api_key", "header_name": "bad name", "header_value": "v"}),
            vec!["auth.header_name"],
        ),
        (json!({"type": "bearer"}), vec!["auth.token"]),
        (
            json!({"type": "bearer", "token": "***"}),
            vec!["auth.token"],
        ),
        (
            json!({"type": "bearer", "token": "t", "scope": "x"}),
            vec!["auth.scope"],
        ),
        (
            json!({"type": "oauth2"}),
            vec!["auth.token_url", "auth.client_id", "auth.client_secret"],
        ),
        (
            json!({"type": "oauth2", "token_url": "ftp://idp.example.com/token", "client_id": "c",
                   "client_secret": "s", "extra_params": {"grant_type": "password"}}),
            vec!["auth.token_url", "auth.extra_params.grant_type"],
        ),
        (
            json!({"type": "oauth2", "token_url": "https://idp.example.com/token", "client_id": "c",
                   "client_secret": "s", "extra_params": {"audience": 7}}),
            vec!["auth.extra_params"],
        ),
    ];
    for (auth, fields) in cases {
        let mut body = sub_body("https://hooks.example.com/auth");
        body["auth"] = auth.clone();
        let (status, err) = api.post("/v1/subscriptions", body).await;
        assert_eq!(status, 400, "{auth}: {err}");
        assert_eq!(err["error"]["code"], "validation_failed", "{auth}: {err}");
        let mut got: Vec<&str> = match err["error"]["details"].as_array() {
            Some(details) => details
                .iter()
                .map(|d| d["field"].as_str().unwrap())
                .collect(),
            None => vec![err["error"]["field"].as_str().unwrap()],
        };
        got.sort_unstable();
        let mut want = fields.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{auth}: {err}");
        assert!(
            !err["error"]["message"].as_str().unwrap().is_empty(),
            "{err}"
        );
    }
    let (_, all) = api.get("/v1/subscriptions").await;
    assert_eq!(all["total_count"], 0, "nothing invalid was created");

    // A valid auth of each type is accepted and answered masked.
    let mut created = Vec::new();
    for (auth, masked) in [
        (json!({"type": "none"}), json!({"type": "none"})),
        (
            json!({"type": "basic", "username": "u", "password": "pw"}),
            json!({"type": "basic", "username": "u", "password": "***"}),
        ),
        (
            json!({"type": "api_key", "header_name": "X-Key", "header_value": "hv"}),
            json!({"type": "api_key", "header_name": "X-Key", "header_value": "***"}),
        ),
        (
            json!({"type": "bearer", "token": "tk"}),
            json!({"type": "bearer", "token": "***"}),
        ),
        (
            json!({"type": "oauth2", "token_url": "https://idp.example.com/token", "client_id": "c",
                   "client_secret": "cs", "scope": "hooks", "extra_params": {"audience": "x"}}),
            json!({"type": "oauth2", "token_url": "https://idp.example.com/token", "client_id": "c",
                   "client_secret": "***", "scope": "hooks", "extra_params": {"audience": "x"}}),
        ),
    ] {
        let mut body = sub_body("https://hooks.example.com/auth");
        body["auth"] = auth;
        let answer = create(&api, body).await;
        assert_eq!(answer["auth"], masked, "{answer}");
        created.push(answer);
    }

    // Sending the masked form back keeps the credential (a GET, edit, PUT
    // round trip); switching type with the masked form is refused.
    let basic = created[1]["id"].as_str().unwrap();
    let (status, patched) = api
        .patch(
            &format!("/v1/subscriptions/{basic}"),
            json!({"auth": {"type": "basic", "username": "u2", "password": "***"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["auth"]["username"], "u2");
    let (status, err) = api
        .patch(
            &format!("/v1/subscriptions/{basic}"),
            json!({"auth": {"type": "bearer", "token": "***"}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "auth.token");
    let (_, got) = api.get(&format!("/v1/subscriptions/{basic}")).await;
    assert_eq!(
        got["auth"]["type"], "basic",
        "a refused change changes nothing"
    );
    stack.stop().await.unwrap();
}

/// The served OpenAPI document and the server agree: every documented
/// operation answers its documented status with a body of its documented
/// schema, documented examples are accepted, undocumented methods answer
/// 405, and error bodies have the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_server() {
    let (stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    let operator = api.with_key(stack.operator_token.clone());

    // Served to anyone, without credentials.
    let response = reqwest::get(format!("{}/v1/openapi.json", api.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schema = |name: &str| doc["components"]["schemas"][name].clone();

    // Objects the path parameters stand for.
    let subscription = create(&api, sub_body(&receiver.url("/openapi"))).await;
    let (status, tenant) = operator
        .post("/v1/tenants", json!({"name": "openapi"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let (status, key) = operator
        .post(
            &format!("/v1/tenants/{}/api_keys", tenant["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{key}");

    // A delivery, once it is in the history.
    let sub_id = subscription["id"].as_str().unwrap();
    let (status, test) = api
        .post(&format!("/v1/subscriptions/{sub_id}/test"), json!({}))
        .await;
    assert_eq!(status, 202, "{test}");
    let delivery_id = test["delivery_id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, WAIT).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while api.get(&format!("/v1/deliveries/{delivery_id}")).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "delivery in the history"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, replay) = api
        .post(
            &format!(
                "/v1/subscriptions/{}/replay",
                subscription["id"].as_str().unwrap()
            ),
            json!({"since": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    let replay_id = replay["replay_id"].as_str().unwrap().to_owned();
    assert_eq!(replay["status_url"], format!("/v1/replays/{replay_id}"));

    // Deletes last, so the other calls still find their objects.
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    operations.sort_by_key(|(method, ..)| method == "DELETE");
    assert!(operations.len() >= 17, "{}", operations.len());

    for (method, path, op) in &operations {
        let concrete = path
            .replace(
                "/v1/subscriptions/{id}",
                &format!("/v1/subscriptions/{}", subscription["id"].as_str().unwrap()),
            )
            .replace(
                "/v1/deliveries/{id}",
                &format!("/v1/deliveries/{delivery_id}"),
            )
            .replace("/v1/replays/{id}", &format!("/v1/replays/{replay_id}"))
            .replace("{id}", tenant["id"].as_str().unwrap())
            .replace("{key_id}", key["id"].as_str().unwrap())
            // The type added by the example of `addEventType` (POSTs run
            // before DELETEs).
            .replace("{name}", "Shipment.Created");
        let caller = match op["security"].to_string().as_str() {
            s if s.contains("operatorToken") => operator.clone(),
            s if s.contains("apiKey") => api.clone(),
            _ => api.with_key(""),
        };
        let mut body = op["requestBody"]["content"]["application/json"]["schema"]
            .get("$ref")
            .map(|r| {
                let name = r.as_str().unwrap().rsplit('/').next().unwrap();
                let example = schema(name)["example"].clone();
                assert!(!example.is_null(), "{name} has an example");
                let broken = waybill_testkit::schema::violations(&doc, &schema(name), &example);
                assert!(broken.is_empty(), "{name} example: {broken:#?}");
                example
            });
        // The examples call hooks.example.com; the ones kept around call
        // the receiver instead.
        if method == "PUT"
            && let Some(b) = body.as_mut()
        {
            b["url"] = receiver.url("/openapi").into();
        }
        if op["operationId"] == "listSubscriptions" {
            let (status, _) = api
                .get("/v1/subscriptions?limit=1&offset=0&enabled=true&status=active&event_type=freights.publication.accepted")
                .await;
            assert_eq!(status, 200, "every documented query parameter is accepted");
        }

        let (status, answer) = caller
            .call(method.parse().unwrap(), &concrete, body.as_ref())
            .await;
        let responses = op["responses"].as_object().unwrap();
        let (expected, response) = responses
            .iter()
            .find(|(code, _)| code.starts_with('2'))
            .unwrap();
        assert_eq!(
            status.to_string(),
            *expected,
            "{method} {concrete}: {answer}"
        );
        if let Some(s) = response["content"]["application/json"].get("schema") {
            let broken = waybill_testkit::schema::violations(&doc, s, &answer);
            assert!(
                broken.is_empty(),
                "{method} {path} answer: {broken:#?}\n{answer}"
            );
        } else {
            assert!(answer.is_null(), "{method} {path} has no documented body");
        }
        if op["operationId"] == "createSubscription" {
            // Created from the example; not kept.
            let id = answer["id"].as_str().unwrap();
            let (status, _) = api.delete(&format!("/v1/subscriptions/{id}")).await;
            assert_eq!(status, 204);
        }

        // Methods the document does not list answer 405.
        for other in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if doc["paths"][path].get(other.to_lowercase()).is_none() {
                let (status, err) = caller.call(other.parse().unwrap(), &concrete, None).await;
                assert_eq!(status, 405, "{other} {concrete}: {err}");
            }
        }
    }

    // Error answers have the documented shape, with every problem listed.
    let (status, err) = api
        .post(
            "/v1/subscriptions",
            json!({"url": "ftp://x", "event_types": [], "method": "GET", "extra": 1}),
        )
        .await;
    assert_eq!(status, 400);
    let broken = waybill_testkit::schema::violations(&doc, &schema("Error"), &err);
    assert!(broken.is_empty(), "{broken:#?}\n{err}");
    assert_eq!(
        err["error"]["details"].as_array().unwrap().len(),
        4,
        "{err}"
    );
    let (status, err) = api.get("/v1/subscriptions/sub_nope").await;
    assert_eq!(status, 404);
    assert!(waybill_testkit::schema::violations(&doc, &schema("Error"), &err).is_empty());
    stack.stop().await.unwrap();
}

/// With the production URL policy, a host name that resolves into a private
/// or loopback network is refused at creation, naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_resolving_to_private_addresses_are_refused() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let strict = vec![
        (
            "WAYBILL_URL_POLICY__ALLOW_PRIVATE_NETWORKS".to_owned(),
            "false".to_owned(),
        ),
        (
            "WAYBILL_URL_POLICY__ALLOW_HTTP".to_owned(),
            "false".to_owned(),
        ),
        (
            "WAYBILL_URL_POLICY__ALLOW_ANY_PORT".to_owned(),
            "false".to_owned(),
        ),
    ];
    let config = waybill::load(dev::base_config(0), None, strict).expect("config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);

    // This machine's own name resolves (through /etc/hosts or
    // nss-myhostname) to its own addresses.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let addresses: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), 443))
        .await
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let (status, answer) = api
        .post(
            "/v1/subscriptions",
            json!({"url": format!("https://{host}/hook"), "event_types": ["*"]}),
        )
        .await;
    let private = addresses
        .iter()
        .any(|ip| waybill_core::url_policy::non_public_reason(*ip).is_some());
    if addresses.is_empty() || private {
        assert_eq!(status, 400, "{host} → {addresses:?}: {answer}");
        assert_eq!(answer["error"]["field"], "url");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("host `{host}`")),
            "names the host: {message}"
        );
    } else {
        assert_eq!(status, 201, "{host} → {addresses:?}: {answer}");
    }
    if private {
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("resolves to an address this deployment does not call"),
            "{answer}"
        );
        for ip in &addresses {
            assert!(
                !message.contains(&ip.to_string()),
                "the DNS answer is not shown: {message}"
            );
        }
    }

    // Literal private addresses, IPv6 forms carrying them, other special
    // ranges, ports not allowed and plain http are refused without DNS.
    for (url, expect) in [
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest", "link-local"),
        ("https://[64:ff9b::a9fe:a9fe]/latest", "link-local"),
        ("https://[::127.0.0.1]/", "loopback"),
        ("https://[2002:7f00:1::]/", "loopback"),
        ("https://[fec0::1]/", "site-local"),
        ("https://192.0.0.1/", "IETF protocol assignment"),
        ("https://[2001:0:a00:5::ffff:ffff]/", "private"),
        ("https://[64:ff9b:1::1]/", "local-use"),
        (
            "https://hooks.example.com:6379/",
            "allowed port (443, 8443)",
        ),
        ("http://hooks.example.com/x", "https"),
    ] {
        let (status, answer) = api
            .post(
                "/v1/subscriptions",
                json!({"url": url, "event_types": ["*"]}),
            )
            .await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{url}: {answer}"
        );
    }
    stack.stop().await.unwrap();
}

/// Verifies a request with the `standardwebhooks` crate, an implementation
/// of the specification independent of Waybill's.
fn standard_webhooks_verify(request: &waybill_testkit::receiver::Received, secret: &str) {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let webhook = standardwebhooks::Webhook::new(secret).expect("a Standard Webhooks secret");
    webhook
        .verify(&request.body, &headers)
        .unwrap_or_else(|e| panic!("standardwebhooks rejects the request: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_etags_and_if_match() {
    let (_stack, api) = start_stack().await;
    let receiver = Receiver::start().await.unwrap();
    let created = create(&api, sub_body(&receiver.url("/rev"))).await;
    assert_eq!(created["revision"], 1);
    let path = format!("/v1/subscriptions/{}", created["id"].as_str().unwrap());
    let etag = |h: &reqwest::header::HeaderMap| h["etag"].to_str().unwrap().to_owned();

    let (status, got, headers) = api.call_full(reqwest::Method::GET, &path, None, &[]).await;
    assert_eq!((status, got["revision"].as_u64()), (200, Some(1)));
    assert_eq!(etag(&headers), "\"1\"");

    // The current revision: applied, one more.
    let (status, patched, headers) = api
        .call_full(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({"name": "first"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["revision"], 2);
    assert_eq!(etag(&headers), "\"2\"");

    // A stale revision: 412, nothing changed.
    for (method, body) in [
        (reqwest::Method::PATCH, Some(json!({"name": "stale"}))),
        (
            reqwest::Method::PUT,
            Some(sub_body(&receiver.url("/stale"))),
        ),
        (reqwest::Method::DELETE, None),
    ] {
        let (status, answer) = api
            .call_with(
                method.clone(),
                &path,
                body.as_ref(),
                &[("if-match", "\"1\"")],
            )
            .await;
        assert_eq!(status, 412, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], "precondition_failed");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revision 2"),
            "{answer}"
        );
    }
    for action in ["reset", "secret/rotate"] {
        let (status, answer) = api
            .call_with(
                reqwest::Method::POST,
                &format!("{path}/{action}"),
                None,
                &[("if-match", "\"1\"")],
            )
            .await;
        assert_eq!(status, 412, "{action}: {answer}");
    }
    let (_, got) = api.get(&path).await;
    assert_eq!(
        (got["name"].as_str(), got["revision"].as_u64()),
        (Some("first"), Some(2))
    );

    // A malformed If-Match is a validation error naming the header.
    let (status, answer) = api
        .call_with(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({"name": "x"})),
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "If-Match");

    // Every user change adds one, with or without If-Match, `*` matches.
    let (status, _, headers) = api
        .call_full(
            reqwest::Method::POST,
            &format!("{path}/reset"),
            None,
            &[("if-match", "*")],
        )
        .await;
    assert_eq!((status, etag(&headers)), (200, "\"3\"".to_owned()));
    let (status, _, headers) = api
        .call_full(
            reqwest::Method::POST,
            &format!("{path}/secret/rotate"),
            None,
            &[],
        )
        .await;
    assert_eq!((status, etag(&headers)), (200, "\"4\"".to_owned()));
    let (status, _) = api.put(&path, sub_body(&receiver.url("/rev"))).await;
    assert_eq!(status, 200);

    // DELETE on the current revision, then the subscription is gone.
    let (status, _) = api
        .call_with(
            reqwest::Method::DELETE,
            &path,
            None,
            &[("if-match", "\"5\"")],
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&path).await;
    assert_eq!(status, 404);
    let (status, _) = api.patch(&path, json!({"name": "back"})).await;
    assert_eq!(status, 404);
}

/// Credentials go only where they went: a PATCH that moves the URL to
/// another origin must send `auth` and secret headers again (a masked one
/// is refused, naming the field), and nothing changes until it does. Custom
/// header values are sealed on the topic, secret ones masked in answers,
/// and the stored value is what the receiver gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_with_their_target_and_headers_are_sealed() {
    let (stack, api) = start_stack().await;
    let receiver = waybill_testkit::receiver::Receiver::start().await.unwrap();
    let created = create(
        &api,
        json!({"url": receiver.url("/hook"), "event_types": ["*"],
               "auth": {"type": "bearer", "token": "tok-in-clear-7"},
               "headers": {"X-Sig": "hdr-in-clear-5", "X-Team": "ops"},
               "secret_headers": ["X-Sig"]}),
    )
    .await;
    let own = create(
        &api,
        json!({"url": "https://hooks.example.com/own", "event_types": ["*"],
               "headers": {"Authorization": "Token in-clear-6"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["headers"], json!({"X-Sig": "***", "X-Team": "ops"}));
    assert_eq!(created["secret_headers"], json!(["x-sig"]));
    assert_eq!(own["headers"], json!({"Authorization": "***"}));
    for record in raw_records(&stack.brokers, "subscriptions") {
        let text = String::from_utf8_lossy(&record);
        for secret in ["hdr-in-clear-5", "in-clear-6", "tok-in-clear-7"] {
            assert!(!text.contains(secret), "{secret} in clear on the topic");
        }
    }

    let path = format!("/v1/subscriptions/{id}");
    let elsewhere = "https://elsewhere.example.com/hook";
    let (status, err) = api.patch(&path, json!({"url": elsewhere})).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "validation_failed");
    let fields: Vec<&str> = err["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["auth", "headers"], "{err}");
    let (status, err) = api
        .patch(
            &path,
            json!({"url": elsewhere, "auth": {"type": "bearer", "token": "***"},
                   "headers": {"X-Sig": "***", "X-Team": "ops"}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("auth.token"), "{message}");
    let (status, err) = api
        .put(
            &path,
            json!({"url": elsewhere, "event_types": ["*"],
                   "auth": {"type": "bearer", "token": "***"}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (_, now) = api.get(&path).await;
    assert_eq!(now["url"], receiver.url("/hook"), "nothing changed");
    assert_eq!(now["revision"], 1);

    // On the same origin the masks keep the stored values, which are what
    // the receiver gets.
    let (status, patched) = api
        .patch(
            &path,
            json!({"url": receiver.url("/v2"), "auth": {"type": "bearer", "token": "***"},
                   "headers": {"X-Sig": "***", "X-Team": "ops"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (status, _) = api.post(&format!("{path}/test"), json!({})).await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got[0].header("x-sig"), Some("hdr-in-clear-5"));
    assert_eq!(got[0].header("x-team"), Some("ops"));
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer tok-in-clear-7")
    );

    // Sent again, the move is accepted.
    let (status, moved) = api
        .patch(
            &path,
            json!({"url": elsewhere, "auth": {"type": "bearer", "token": "new-token"},
                   "headers": {"X-Team": "ops"}}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["url"], elsewhere);
    stack.stop().await.unwrap();
}

/// Every answer of the API carries the request's trace context; an error
/// body names its trace id, so a support request quoting it finds the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_its_trace() {
    let (stack, api) = start_stack().await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, refused, headers) = api
        .call_full(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&json!({"url": "not a url", "event_types": ["*"]})),
            &[("traceparent", caller)],
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let answered = headers["traceparent"].to_str().unwrap();
    let parsed = waybill_core::trace::TraceParent::parse(answered).expect("a W3C traceparent");
    assert_eq!(
        parsed.trace_id_hex(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace goes on"
    );
    assert_eq!(
        refused["error"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(refused["error"]["code"], "validation_failed");

    // Without a caller's context a trace starts; a success names it too.
    let (status, list, headers) = api
        .call_full(reqwest::Method::GET, "/v1/subscriptions", None, &[])
        .await;
    assert_eq!(status, 200, "{list}");
    let answered = headers["traceparent"].to_str().unwrap();
    assert!(
        waybill_core::trace::TraceParent::parse(answered).is_some(),
        "{answered}"
    );
    let (status, missing, headers) = api
        .call_full(
            reqwest::Method::GET,
            "/v1/subscriptions/sub_nothing",
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    let trace =
        waybill_core::trace::TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(missing["error"]["trace_id"], trace.trace_id_hex().as_str());
    stack.stop().await.unwrap();
}
