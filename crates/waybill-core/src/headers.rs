//! Custom headers of a subscription: which names Waybill keeps for itself
//! or refuses, which values are secrets (masked in answers, `***` keeping
//! the stored value), and their validation.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::CallbackAuth;
use crate::fields::Fields;
use crate::subscription::{MAX_HEADERS, Spec};

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

/// Hop-by-hop and proxy headers: they steer the connection, not the
/// request, and are refused as custom headers.
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Header names whose values are always masked in answers (they carry
/// credentials); a subscription adds others in `secret_headers`.
pub const ALWAYS_SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization"];

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether Waybill sets this (lower-case) header itself on every request.
pub fn is_reserved(lower: &str) -> bool {
    RESERVED_HEADERS.contains(&lower)
        || HOP_BY_HOP_HEADERS.contains(&lower)
        || lower.starts_with("webhook-")
}

/// Reads `secret_headers`: valid header names, stored lower-case.
pub(crate) fn parse_secret_headers(f: &mut Fields, names: &[String]) -> BTreeSet<String> {
    if names.len() > MAX_HEADERS {
        f.error("secret_headers", format!("at most {MAX_HEADERS} names"));
    }
    let mut out = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if !is_header_name(name) {
            f.error(
                &format!("secret_headers[{i}]"),
                "is not a valid HTTP header name",
            );
        } else if !out.insert(name.to_ascii_lowercase()) {
            f.error(
                &format!("secret_headers[{i}]"),
                format!("`{name}` is listed twice (names are case-insensitive)"),
            );
        }
    }
    out
}

/// Custom headers with every [`MASK`] of a secret header replaced by its
/// stored value, which is kept only while the URL's origin stays the same.
pub(crate) fn unmask_headers(
    f: &mut Fields,
    given: BTreeMap<String, String>,
    base: Option<&Spec>,
    origin_changed: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in given {
        if value != crate::auth::MASK {
            out.insert(name, value);
            continue;
        }
        let stored = base
            .filter(|b| b.is_secret_header(&name))
            .and_then(|b| {
                b.headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            })
            .map(|(_, v)| v.as_str());
        let kept = match stored {
            Some(v) => crate::auth::keep(v, origin_changed, None),
            None => crate::auth::Keep::Nothing,
        };
        let key = format!("headers.{name}");
        if let Some(v) = crate::auth::unmask(f, &key, kept, "value") {
            out.insert(name, v);
        }
    }
    out
}

pub(crate) fn check_headers(
    f: &mut Fields,
    headers: &BTreeMap<String, String>,
    auth: &CallbackAuth,
) {
    if headers.len() > MAX_HEADERS {
        f.error("headers", format!("at most {MAX_HEADERS} headers"));
    }
    let auth_header = auth.header_name();
    for (name, value) in headers {
        let key = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if !is_header_name(name) {
            f.error(&key, "is not a valid HTTP header name");
        } else if HOP_BY_HOP_HEADERS.contains(&lower.as_str()) {
            f.error(
                &key,
                format!("`{name}` is a hop-by-hop or proxy header and cannot be set"),
            );
        } else if lower == "authorization" && auth_header.is_none() {
            // Without `auth`, a custom Authorization header is the user's own.
        } else if is_reserved(&lower) {
            f.error(
                &key,
                format!("`{name}` is set by Waybill itself and cannot be overridden"),
            );
        } else if auth_header.as_deref() == Some(lower.as_str()) {
            f.error(
                &key,
                format!("`{name}` is set by `auth`; remove it from headers or change auth"),
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
