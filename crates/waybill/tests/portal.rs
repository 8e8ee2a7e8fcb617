//! Portal sessions over real HTTP against the whole system on the embedded
//! broker: what a session's token may call, and the page's headers.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use waybill::dev;
use waybill_core::portal::Session;
use waybill_testkit::api::Api;

const KEY: &str = "wb_test_key_0123456789abcdef01234";

fn token_of(url: &str) -> String {
    url.split_once("#token=")
        .expect("a token after #")
        .1
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_makes_only_the_portals_calls_of_its_tenant_until_it_expires() {
    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let config = waybill::load(dev::base_config(0), None, vec![]).expect("dev config");
    let keys = config.secrets.keyring().expect("dev keys");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);

    // Open a session: a URL to /portal with the token after `#`.
    let (status, session) = api.post("/v1/portal/sessions", json!({})).await;
    assert_eq!(status, 201, "{session}");
    let url = session["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/portal#token=wbps_", stack.api_url())),
        "{url}"
    );
    assert_eq!(token_of(url), session["token"].as_str().unwrap());
    let expires = OffsetDateTime::parse(
        session["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = expires - OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::minutes(59) && lifetime <= time::Duration::hours(1),
        "1 h by default: {lifetime}"
    );
    let (status, refused) = api
        .post("/v1/portal/sessions", json!({"expires_in": "25h"}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "expires_in");

    // The portal's calls work, as the tenant, authored by the session.
    let portal = api.with_key(session["token"].as_str().unwrap());
    let (status, created) = portal
        .post(
            "/v1/subscriptions",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["created_by"].as_str().unwrap().starts_with("ps_"),
        "{created}"
    );
    let sub = format!("/v1/subscriptions/{}", created["id"].as_str().unwrap());
    let (status, _) = api.get(&sub).await;
    assert_eq!(status, 200, "the tenant's key sees it");
    for path in ["/v1/subscriptions", "/v1/event_types", "/v1/deliveries"] {
        let (status, answer) = portal.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    // Not the portal's calls: publishing, opening sessions (403); the
    // operator's routes (401).
    let (status, refused) = portal
        .post(
            "/v1/events",
            json!({"event_name": "freights.publication.created", "data": {}}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden");
    let (status, refused) = portal.post("/v1/portal/sessions", json!({})).await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = portal.get("/v1/tenants").await;
    assert_eq!(status, 401, "{refused}");

    // Read-only: it looks, it does not change nor reveal the secret.
    let (status, session) = api
        .post(
            "/v1/portal/sessions",
            json!({"read_only": true, "expires_in": "10m"}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let reader = api.with_key(session["token"].as_str().unwrap());
    let (status, _) = reader.get(&sub).await;
    assert_eq!(status, 200);
    let (status, refused) = reader.patch(&sub, json!({"enabled": false})).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{refused}"
    );
    let (status, _) = reader.get(&format!("{sub}/secret")).await;
    assert_eq!(status, 403);

    // Another tenant's session sees nothing of this one.
    let operator = api.with_key(stack.operator_token.clone());
    let (status, other) = operator.post("/v1/tenants", json!({"name": "Other"})).await;
    assert_eq!(status, 201, "{other}");
    let other_id = other["id"].as_str().unwrap();
    let other_session = Session::new(
        other_id,
        false,
        Duration::from_secs(600),
        OffsetDateTime::now_utc(),
    );
    let stranger = api.with_key(other_session.token(&keys));
    let (status, _) = stranger.get(&sub).await;
    assert_eq!(status, 404, "another tenant's session");
    let (status, list) = stranger.get("/v1/subscriptions").await;
    assert_eq!((status, &list["total_count"]), (200, &json!(0)), "{list}");

    // Expired, or altered: refused.
    let past = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let expired = Session::new("ten_dev", false, Duration::from_secs(3600), past).token(&keys);
    let (status, refused) = api.with_key(expired).get("/v1/subscriptions").await;
    assert_eq!(status, 401, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refused}"
    );
    let mut altered = session["token"].as_str().unwrap().to_owned();
    altered.pop();
    altered.push(if altered.ends_with('A') { 'B' } else { 'A' });
    let (status, _) = api.with_key(altered).get("/v1/subscriptions").await;
    assert_eq!(status, 401);

    // The page: served by ingest alone, only its own origin.
    let page = reqwest::get(format!("{}/portal", stack.api_url()))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    assert!(
        page.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/portal/app.js"), "{html}");
    for asset in ["/portal/app.js", "/portal/app.css"] {
        let r = reqwest::get(format!("{}{asset}", stack.api_url()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    stack.stop().await.unwrap();
}
