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

/// The portal in headless Chromium, from the session URL a real
/// `waybill dev` stack gives: every page, through the forms and buttons a
/// user would use, with a screenshot of each under the test's output
/// folder (`<target>/tmp/portal/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_a_browser() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use waybill_testkit::browser::Browser;
    use waybill_testkit::receiver::{Options, Receiver};

    waybill_testkit::wait::watchdog(Duration::from_secs(300));
    let config = waybill::load(dev::base_config(0), None, vec![]).expect("dev config");
    let stack = dev::start(config, KEY).await.expect("dev stack starts");
    let api = Api::new(stack.api_url(), KEY);
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    let receiver = Receiver::with(Options {
        answer: Some(Arc::new(move |_| {
            fail.load(Ordering::SeqCst).then_some(500)
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let url = stack.portal_url().await.expect("a portal session");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal");
    let b = Browser::start(&out, 1280, 900)
        .await
        .expect("headless Chromium");
    let wait = Duration::from_secs(30);

    // The list, empty.
    b.goto(&url).await.unwrap();
    b.wait_for_text("No subscription yet.", wait).await.unwrap();
    let token_in_url = b.execute("return location.hash").await.unwrap();
    assert_eq!(
        token_in_url, "#/subscriptions",
        "the token leaves the address bar"
    );
    b.screenshot("01-subscriptions-empty").await.unwrap();

    // Create through the form: a bad URL is refused next to the field.
    b.click_text("New subscription").await.unwrap();
    b.fill("#f-name", "carrier TMS").await.unwrap();
    b.fill("#f-url", "not a url").await.unwrap();
    b.fill("#f-event_types", "freights.publication.*")
        .await
        .unwrap();
    b.click_text("Create").await.unwrap();
    let message = b.wait_for_text_in("#f-url-error", "", wait).await.unwrap();
    assert!(!message.is_empty(), "a message next to the URL field");
    let invalid = b
        .execute("return document.getElementById('f-url').getAttribute('aria-invalid')")
        .await
        .unwrap();
    assert_eq!(invalid, "true");
    b.screenshot("02-validation").await.unwrap();
    b.fill("#f-url", &receiver.url("/hook")).await.unwrap();
    b.click_text("Create").await.unwrap();
    b.wait_for_text("Signing secret", wait).await.unwrap();
    b.wait_for_text("active", wait).await.unwrap();
    let (_, list) = api.get("/v1/subscriptions").await;
    let sub = list["subscriptions"][0].clone();
    assert_eq!(sub["name"], "carrier TMS", "{list}");
    let id = sub["id"].as_str().unwrap().to_owned();

    // Edit: the same validation next to the fields, then saved.
    b.click_text("Edit").await.unwrap();
    b.fill("#f-max_in_flight", "99").await.unwrap();
    b.click_text("Save").await.unwrap();
    let message = b
        .wait_for_text_in("#f-max_in_flight-error", "between 1 and 64", wait)
        .await
        .unwrap();
    assert!(message.contains("64"), "{message}");
    b.fill("#f-max_in_flight", "4").await.unwrap();
    b.fill("#f-name", "carrier TMS").await.unwrap();
    b.click_text("Save").await.unwrap();
    b.wait_for_text("at most 4 in flight", wait).await.unwrap();

    // A test event, delivered.
    b.click_text("Send test event").await.unwrap();
    b.wait_for_text_in("#test-result", "succeeded", wait)
        .await
        .unwrap();
    assert_eq!(receiver.received().len(), 1);
    b.screenshot("03-subscription").await.unwrap();

    // The receiver fails: the delivery shows its attempt; retried by hand
    // once it answers again.
    failing.store(true, Ordering::SeqCst);
    b.click_text("Send test event").await.unwrap();
    b.wait_for_text_in("#test-result", "failed", wait)
        .await
        .unwrap();
    b.click_text("details").await.unwrap();
    b.wait_for_text("Attempts", wait).await.unwrap();
    b.wait_for_text("500", wait).await.unwrap();
    b.wait_for_text("HTTP 500", wait).await.unwrap();
    b.screenshot("04-delivery-failed").await.unwrap();
    failing.store(false, Ordering::SeqCst);
    b.click_text("Retry").await.unwrap();
    b.wait_for_text("Retry queued.", wait).await.unwrap();
    b.wait_for_text("succeeded", wait).await.unwrap();
    b.screenshot("05-delivery-retried").await.unwrap();

    // Search by entity id.
    for entity in ["12345", "67890"] {
        let (status, answer) = api
            .post(
                "/v1/events",
                json!({"event_name": "freights.publication.created",
                       "entity": {"type": "freight", "id": entity}, "data": {}}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    b.click_text("Deliveries").await.unwrap();
    b.fill("#q-entity", "12345").await.unwrap();
    b.click_text("Search").await.unwrap();
    b.wait_for_text("freights.publication.created", wait)
        .await
        .unwrap();
    let rows = b
        .execute("return document.querySelectorAll('#results tbody tr').length")
        .await
        .unwrap();
    assert_eq!(rows, 1, "only shipment 12345's delivery");
    b.screenshot("06-search-by-entity").await.unwrap();
    // Filtered by status: the failed-then-retried test delivery is not
    // among the failed ones any more; every one listed succeeded.
    b.fill("#q-entity", "").await.unwrap();
    b.execute("document.getElementById('q-status').value = 'succeeded'; return true")
        .await
        .unwrap();
    b.click_text("Search").await.unwrap();
    b.wait_for_text("waybill.test", wait).await.unwrap();
    let statuses = b
        .execute(
            "return [...document.querySelectorAll('#results tbody .badge')].map(e => e.textContent)",
        )
        .await
        .unwrap();
    let statuses: Vec<&str> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        statuses.len() >= 3 && statuses.iter().all(|s| *s == "succeeded"),
        "{statuses:?}"
    );
    // By event name, and by time (nothing since tomorrow).
    b.execute("document.getElementById('q-status').value = ''; return true")
        .await
        .unwrap();
    b.fill("#q-event", "freights.publication.created")
        .await
        .unwrap();
    b.click_text("Search").await.unwrap();
    b.wait_for_text("freights.publication.created", wait)
        .await
        .unwrap();
    let rows = b
        .execute("return document.querySelectorAll('#results tbody tr').length")
        .await
        .unwrap();
    assert_eq!(rows, 2, "the two domain events' deliveries");
    b.execute(
        "const d = new Date(Date.now() + 86400e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
         document.getElementById('q-since').value = d.toISOString().slice(0, 16); return true",
    )
    .await
    .unwrap();
    b.click_text("Search").await.unwrap();
    b.wait_for_text("No delivery matches.", wait).await.unwrap();

    // The secret: revealed, rotated.
    b.goto(&format!("{}/portal#/subscriptions/{id}", stack.api_url()))
        .await
        .unwrap();
    b.click_text("Reveal").await.unwrap();
    let first = b.wait_for_text_in("#secret", "whsec_", wait).await.unwrap();
    b.click_text("Rotate").await.unwrap();
    b.accept_dialog().await.unwrap();
    b.wait_for_text("Secret rotated", wait).await.unwrap();
    let rotated = b.text("#secret").await.unwrap();
    assert!(
        rotated.starts_with("whsec_") && rotated != first,
        "{rotated}"
    );

    // Pause and resume.
    b.click_text("Pause").await.unwrap();
    b.wait_for_text("paused", wait).await.unwrap();
    b.find_xpath("//button[normalize-space(.)='Resume']")
        .await
        .unwrap();
    b.screenshot("07-paused").await.unwrap();
    b.click_text("Resume").await.unwrap();
    b.find_xpath("//button[normalize-space(.)='Pause']")
        .await
        .unwrap();
    let (_, s) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(s["status"], "active", "{s}");

    // Replay the last hour: its progress shows until it is done, and the
    // two domain events go out again.
    let before = receiver.received().len();
    b.execute(
        "const d = new Date(Date.now() - 3600e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
         document.getElementById('replay-since').value = d.toISOString().slice(0, 16); return true",
    )
    .await
    .unwrap();
    b.click_text("Replay").await.unwrap();
    let progress = b
        .wait_for_text_in("#replay-progress", "Replay done", wait)
        .await
        .unwrap();
    assert!(progress.contains("2 deliveries queued"), "{progress}");
    receiver
        .wait_for(before + 2, Duration::from_secs(30))
        .await
        .unwrap();
    b.screenshot("08-replayed").await.unwrap();

    // Disable and enable.
    b.click_text("Disable").await.unwrap();
    b.find_xpath("//button[normalize-space(.)='Enable']")
        .await
        .unwrap();
    b.wait_for_text("disabled", wait).await.unwrap();
    b.click_text("Enable").await.unwrap();
    b.find_xpath("//button[normalize-space(.)='Disable']")
        .await
        .unwrap();

    // The catalog by domain; the list on a phone-width screen.
    b.click_text("Event catalog").await.unwrap();
    b.wait_for_text("freights.publication.created", wait)
        .await
        .unwrap();
    b.screenshot("09-catalog").await.unwrap();
    b.resize(390, 844).await.unwrap();
    b.click_text("Subscriptions").await.unwrap();
    b.wait_for_text("carrier TMS", wait).await.unwrap();
    b.screenshot("10-phone").await.unwrap();
    b.resize(1280, 900).await.unwrap();

    // A read-only session: it shows, and a change is refused visibly.
    let (status, reader) = api
        .post("/v1/portal/sessions", json!({"read_only": true}))
        .await;
    assert_eq!(status, 201, "{reader}");
    b.goto(reader["url"].as_str().unwrap()).await.unwrap();
    b.wait_for_text("carrier TMS", wait).await.unwrap();
    b.goto(&format!("{}/portal#/subscriptions/{id}", stack.api_url()))
        .await
        .unwrap();
    b.click_text("Pause").await.unwrap();
    b.wait_for_text_in("#status", "read-only", wait)
        .await
        .unwrap();

    // Delete, after confirming (with the full session again).
    b.goto(&url).await.unwrap();
    b.goto(&format!("{}/portal#/subscriptions/{id}", stack.api_url()))
        .await
        .unwrap();
    b.click_text("Delete").await.unwrap();
    b.accept_dialog().await.unwrap();
    b.wait_for_text("No subscription yet.", wait).await.unwrap();
    let (status, _) = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 404, "deleted");
    b.quit().await;
    stack.stop().await.unwrap();
}
