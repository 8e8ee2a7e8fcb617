//! The webhook request (pure): method, URL, headers and body of one attempt.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;
use waybill_core::auth::CallbackAuth;
use waybill_core::event::Event;
use waybill_core::subscription::{Subscription, is_reserved};
use waybill_core::trace::TraceParent;

/// `user-agent` of every webhook request.
pub const USER_AGENT: &str = concat!("Waybill/", env!("CARGO_PKG_VERSION"));

/// One request, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    /// `POST` or `PUT`.
    pub method: &'static str,
    /// Target.
    pub url: String,
    /// Headers in sending order; Waybill's own come last and win.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Builds the request delivering `event` to `subscription` as delivery
/// `delivery_id`, signed at `timestamp` (unix seconds) with every secret
/// still valid then (the previous one too during a rotation's overlap).
/// `oauth2_token` is the access token when the subscription uses OAuth2.
pub fn build(
    subscription: &Subscription,
    event: &Event,
    delivery_id: &str,
    timestamp: i64,
    trace: &TraceParent,
    oauth2_token: Option<&str>,
) -> WebhookRequest {
    let body = event.webhook_body();
    let at = OffsetDateTime::from_unix_timestamp(timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let signature = subscription
        .signing_secrets(at)
        .iter()
        .map(|secret| secret.sign(delivery_id, timestamp, &body))
        .collect::<Vec<_>>()
        .join(" ");
    let spec = &subscription.spec;
    let auth = auth_header(&spec.auth, oauth2_token);
    let auth_name = auth.as_ref().map(|(name, _)| name.to_ascii_lowercase());
    let mut headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            let ours = is_reserved(&lower) && !(lower == "authorization" && auth_name.is_none());
            !ours && auth_name.as_deref() != Some(lower.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend(auth);
    headers.extend([
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ("webhook-id".to_owned(), delivery_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
        ("traceparent".to_owned(), trace.to_string()),
    ]);
    if let Some(state) = &trace.state {
        headers.push(("tracestate".to_owned(), state.to_string()));
    }
    WebhookRequest {
        method: spec.method.as_str(),
        url: spec.url.clone(),
        headers,
        body,
    }
}

/// The authentication header of a request, if the subscription has one.
pub fn auth_header(auth: &CallbackAuth, oauth2_token: Option<&str>) -> Option<(String, String)> {
    match auth {
        CallbackAuth::None => None,
        CallbackAuth::Basic { username, password } => Some((
            "authorization".to_owned(),
            format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            ),
        )),
        CallbackAuth::ApiKey {
            header_name,
            header_value,
        } => Some((header_name.clone(), header_value.clone())),
        CallbackAuth::Bearer { token } => {
            Some(("authorization".to_owned(), format!("Bearer {token}")))
        }
        CallbackAuth::OAuth2(_) => {
            oauth2_token.map(|t| ("authorization".to_owned(), format!("Bearer {t}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;
    use waybill_core::event::EntityRef;
    use waybill_core::pattern::EventTypePattern;
    use waybill_core::subscription::{Method, Spec};

    #[test]
    fn signed_request_with_reserved_headers_winning() {
        let mut spec = Spec::new("https://hooks.example.com/w", vec![EventTypePattern::All]);
        spec.method = Method::Put;
        spec.headers = [
            ("X-Team".to_owned(), "ops".to_owned()),
            ("Webhook-Id".to_owned(), "forged".to_owned()),
            ("X-Key".to_owned(), "from headers".to_owned()),
        ]
        .into_iter()
        .collect::<BTreeMap<_, _>>();
        spec.auth = CallbackAuth::ApiKey {
            header_name: "X-Key".into(),
            header_value: "k1".into(),
        };
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut subscription = Subscription::new("sub_1".into(), "t".into(), spec, "key", now);
        let old = subscription.signing_secret.clone();
        subscription.rotate_secret(now, std::time::Duration::from_secs(10));
        let secret = subscription.signing_secret.clone();
        let event = Event {
            id: "e1".into(),
            tenant_id: "t".into(),
            name: "freights.freight.create".into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef {
                kind: "freight".into(),
                id: "f1".into(),
            },
            attributes: BTreeMap::new(),
            callback_url: None,
            payload: br#"{"price":1}"#.to_vec(),
        };
        let trace = TraceParent::new_root();
        let r = build(&subscription, &event, "msg_1", 1_700_000_000, &trace, None);
        assert_eq!(r.method, "PUT");
        let header = |n: &str| {
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            header("webhook-id"),
            ["msg_1"],
            "a custom header cannot forge it"
        );
        assert_eq!(header("x-team"), ["ops"]);
        assert_eq!(header("traceparent"), [trace.to_string().as_str()]);
        assert!(header("tracestate").is_empty(), "none came with the event");
        assert!(header("user-agent")[0].starts_with("Waybill/"));
        assert_eq!(header("x-key"), ["k1"], "auth wins over a custom header");
        let signatures = header("webhook-signature")[0];
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
        assert!(secret.verify(signatures, "msg_1", 1_700_000_000, &r.body));
        assert!(old.verify(signatures, "msg_1", 1_700_000_000, &r.body));
        let traced = trace.clone().with_state(Some("vendor=v1"));
        let with_state = build(&subscription, &event, "msg_1", 1_700_000_000, &traced, None);
        assert!(
            with_state
                .headers
                .iter()
                .any(|(k, v)| k == "tracestate" && v == "vendor=v1")
        );
        // After the overlap only the new secret signs.
        let later = build(&subscription, &event, "msg_1", 1_700_000_010, &trace, None);
        let sig = later
            .headers
            .iter()
            .find(|(k, _)| k == "webhook-signature")
            .unwrap();
        assert!(!sig.1.contains(' '));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["data"]["price"], 1);
    }

    #[test]
    fn auth_headers() {
        let basic = CallbackAuth::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(
            auth_header(&basic, None).unwrap().1,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let bearer = CallbackAuth::Bearer { token: "t".into() };
        assert_eq!(auth_header(&bearer, None).unwrap().1, "Bearer t");
        assert_eq!(auth_header(&CallbackAuth::None, None), None);
    }
}
