//! The subscription model and the validation of create requests.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::FieldError;
use crate::catalog::Catalog;
use crate::fields::Fields;
use crate::pattern::EventTypePattern;
use crate::signing::SigningSecret;
use crate::url_policy::UrlPolicy;

/// Most entries in `event_types`.
pub const MAX_EVENT_TYPES: usize = 100;
/// Most custom headers.
pub const MAX_HEADERS: usize = 50;
/// Most metadata entries.
pub const MAX_METADATA: usize = 50;
/// Longest subscription name.
pub const MAX_NAME_LEN: usize = 256;

/// Headers Waybill sets itself; a subscription may not set them.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
    "authorization",
    "connection",
    "transfer-encoding",
];

/// HTTP method of the webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `POST` (default).
    #[default]
    Post,
    /// `PUT`.
    Put,
}

impl Method {
    /// `POST` or `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// Delivery state of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Receiving deliveries.
    #[default]
    Active,
    /// Disabled by the user, by a `410 Gone`, or after failing too long.
    Disabled,
    /// Enabled, but recent deliveries failed.
    Failing,
}

impl Status {
    /// `active`, `disabled` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
            Status::Failing => "failing",
        }
    }
}

/// A webhook subscription: the full state, as folded from the
/// `subscriptions` topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Free-form name.
    pub name: String,
    /// Callback URL.
    pub url: String,
    /// POST or PUT.
    pub method: Method,
    /// Selected event types.
    pub event_types: Vec<EventTypePattern>,
    /// Switched on by the user.
    pub enabled: bool,
    /// Delivery state.
    pub status: Status,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// Custom headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Standard Webhooks signing secret.
    pub signing_secret: SigningSecret,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// API key id of the creator.
    pub created_by: String,
    /// API key id of the last writer.
    pub updated_by: String,
    /// Incremented by every change.
    pub revision: u64,
}

impl Subscription {
    /// Whether deliveries may start for it now.
    pub fn is_deliverable(&self) -> bool {
        self.enabled && self.status != Status::Disabled
    }
}

/// A validated create request (`POST /v1/subscriptions`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubscription {
    /// Free-form name.
    pub name: String,
    /// Callback URL.
    pub url: String,
    /// POST or PUT.
    pub method: Method,
    /// Selected event types.
    pub event_types: Vec<EventTypePattern>,
    /// Initially enabled (default true).
    pub enabled: bool,
    /// Custom headers.
    pub headers: BTreeMap<String, String>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Fields accepted by `POST /v1/subscriptions` in this version.
pub const SUBSCRIPTION_FIELDS: &[&str] = &[
    "name",
    "url",
    "method",
    "event_types",
    "enabled",
    "headers",
    "metadata",
];

/// Validates a create request, reporting every invalid field at once.
pub fn parse_new_subscription(
    body: &[u8],
    catalog: &Catalog,
    policy: &UrlPolicy,
) -> Result<NewSubscription, Vec<FieldError>> {
    let mut f = Fields::parse(body).map_err(|e| vec![e])?;

    let name: String = f.optional("name", "a string").unwrap_or_default();
    if name.chars().count() > MAX_NAME_LEN {
        f.error("name", format!("must be at most {MAX_NAME_LEN} characters"));
    }

    let url: Option<String> = f.required("url", "an https URL string");
    if let Some(url) = &url
        && let Err(message) = policy.check_url(url)
    {
        f.error("url", message);
    }

    let method = match f
        .optional::<String>("method", "\"POST\" or \"PUT\"")
        .as_deref()
    {
        None => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("post") => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("put") => Method::Put,
        Some(other) => {
            f.error(
                "method",
                format!("must be \"POST\" or \"PUT\", not {other:?}"),
            );
            Method::Post
        }
    };

    let raw_types: Vec<String> = f
        .required("event_types", "an array of event names or patterns")
        .unwrap_or_default();
    let event_types = parse_event_types(&mut f, &raw_types, catalog);

    let enabled = f.optional("enabled", "a boolean").unwrap_or(true);

    let headers: BTreeMap<String, String> = f
        .optional("headers", "an object of header names to string values")
        .unwrap_or_default();
    check_headers(&mut f, &headers);

    let metadata: BTreeMap<String, String> = f
        .optional("metadata", "an object of string values")
        .unwrap_or_default();
    if metadata.len() > MAX_METADATA {
        f.error("metadata", format!("at most {MAX_METADATA} entries"));
    }

    for later in ["auth", "filter", "retry_policy", "rate_limit_per_second"] {
        if f.has(later) {
            f.raw(later);
            f.error(later, "is not available in this version of the API yet");
        }
    }

    let errors = f.finish(SUBSCRIPTION_FIELDS);
    match url {
        Some(url) if errors.is_empty() => Ok(NewSubscription {
            name,
            url,
            method,
            event_types,
            enabled,
            headers,
            metadata,
        }),
        _ => Err(errors),
    }
}

fn parse_event_types(f: &mut Fields, raw: &[String], catalog: &Catalog) -> Vec<EventTypePattern> {
    if f.errors.iter().any(|e| e.field == f.path("event_types")) {
        return Vec::new();
    }
    if raw.is_empty() {
        f.error(
            "event_types",
            "must list at least one event type (or [\"*\"])",
        );
    }
    if raw.len() > MAX_EVENT_TYPES {
        f.error("event_types", format!("at most {MAX_EVENT_TYPES} entries"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let key = format!("event_types[{i}]");
        match EventTypePattern::parse(s) {
            Err(e) => f.error(&key, format!("`{s}` is not a valid pattern: {e}")),
            Ok(EventTypePattern::Exact(name)) if catalog.get(&name).is_none() => f.error(
                &key,
                format!("unknown event `{name}`; GET /v1/event_types lists the catalog"),
            ),
            Ok(EventTypePattern::Prefix(prefix)) if !catalog.has_prefix(&prefix) => f.error(
                &key,
                format!("`{s}` matches no event of the catalog; GET /v1/event_types lists it"),
            ),
            Ok(pattern) => {
                if !out.contains(&pattern) {
                    out.push(pattern);
                }
            }
        }
    }
    out
}

fn check_headers(f: &mut Fields, headers: &BTreeMap<String, String>) {
    if headers.len() > MAX_HEADERS {
        f.error("headers", format!("at most {MAX_HEADERS} headers"));
    }
    for (name, value) in headers {
        let key = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        let is_token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            f.error(&key, "is not a valid HTTP header name");
        } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            f.error(
                &key,
                format!("`{name}` is set by Waybill itself and cannot be overridden"),
            );
        } else if value.len() > 4096 || value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            f.error(
                &key,
                "value must be at most 4096 bytes without control characters",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, policy: &UrlPolicy) -> Result<NewSubscription, Vec<FieldError>> {
        parse_new_subscription(body.as_bytes(), &Catalog::builtin(), policy)
    }

    #[test]
    fn minimal_and_full() {
        let s = parse(
            r#"{"url": "https://hooks.example.com/w", "event_types": ["*"]}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        assert_eq!(s.method, Method::Post);
        assert!(s.enabled);
        assert_eq!(s.event_types, [EventTypePattern::All]);

        let s = parse(
            r#"{"name": "tms", "url": "http://127.0.0.1:9/w", "method": "PUT", "enabled": false,
                "event_types": ["freights.publication.*", "freight_orders.order.created",
                                "freights.publication.*"],
                "headers": {"X-Custom-Header": "v"}, "metadata": {"team": "ops"}}"#,
            &UrlPolicy::permissive(),
        )
        .unwrap();
        assert_eq!(s.method, Method::Put);
        assert!(!s.enabled);
        assert_eq!(s.event_types.len(), 2, "duplicates are folded");
        assert_eq!(s.headers["X-Custom-Header"], "v");
    }

    #[test]
    fn reports_every_invalid_field() {
        let errors = parse(
            r#"{"url": "http://hooks.example.com", "method": "GET",
                "event_types": ["freights.nope", "bad*", "shipments.*"],
                "headers": {"Content-Type": "x", "Webhook-Id": "y", "bad name": "z"},
                "auth": {"type": "basic"}, "extra": 1}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "url",
                "method",
                "event_types[0]",
                "event_types[1]",
                "event_types[2]",
                "headers.Content-Type",
                "headers.Webhook-Id",
                "headers.bad name",
                "auth",
                "extra"
            ]
        );
        assert!(errors[0].message.contains("https"));
        assert!(errors[5].message.contains("set by Waybill"));
    }

    #[test]
    fn required_fields() {
        let errors = parse("{}", &UrlPolicy::strict()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "event_types"]);
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": []}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert!(errors[0].message.contains("at least one"));
        let errors = parse(r#"{"url": 5, "event_types": "x"}"#, &UrlPolicy::strict()).unwrap_err();
        assert_eq!(errors.len(), 2);
    }
}
