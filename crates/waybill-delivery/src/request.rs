//! The webhook request (pure): method, URL, headers and body of one attempt.

use waybill_core::event::Event;
use waybill_core::subscription::{RESERVED_HEADERS, Subscription};
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
/// `delivery_id`, signed at `timestamp` (unix seconds).
pub fn build(
    subscription: &Subscription,
    event: &Event,
    delivery_id: &str,
    timestamp: i64,
    trace: &TraceParent,
) -> WebhookRequest {
    let body = event.webhook_body();
    let signature = subscription
        .signing_secret
        .sign(delivery_id, timestamp, &body);
    let mut headers: Vec<(String, String)> = subscription
        .headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            !RESERVED_HEADERS.contains(&lower.as_str()) && !lower.starts_with("webhook-")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend([
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ("webhook-id".to_owned(), delivery_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
        ("traceparent".to_owned(), trace.to_string()),
    ]);
    WebhookRequest {
        method: subscription.method.as_str(),
        url: subscription.url.clone(),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;
    use waybill_core::event::EntityRef;
    use waybill_core::pattern::EventTypePattern;
    use waybill_core::signing::SigningSecret;
    use waybill_core::subscription::{Method, Status};

    #[test]
    fn signed_request_with_reserved_headers_winning() {
        let secret = SigningSecret::generate();
        let subscription = Subscription {
            id: "sub_1".into(),
            tenant_id: "t".into(),
            name: String::new(),
            url: "https://hooks.example.com/w".into(),
            method: Method::Put,
            event_types: vec![EventTypePattern::All],
            enabled: true,
            status: Status::Active,
            disabled_reason: None,
            headers: [
                ("X-Team".to_owned(), "ops".to_owned()),
                ("Webhook-Id".to_owned(), "forged".to_owned()),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
            metadata: BTreeMap::new(),
            signing_secret: secret.clone(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            created_by: String::new(),
            updated_by: String::new(),
            revision: 1,
        };
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
        let r = build(&subscription, &event, "msg_1", 1_700_000_000, &trace);
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
        assert!(header("user-agent")[0].starts_with("Waybill/"));
        assert!(secret.verify(
            header("webhook-signature")[0],
            "msg_1",
            1_700_000_000,
            &r.body
        ));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["data"]["price"], 1);
    }
}
