//! The subscriber portal: sessions (`POST /v1/portal/sessions`) and the
//! page (`GET /portal`, its script and style), served by this service
//! alone. A session's token goes after `#` in the URL, so it never reaches
//! a server log; the page sends it as `Authorization: Bearer` on the API
//! calls it makes, which [`waybill_core::portal::scope`] bounds.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use waybill_core::event::format_rfc3339;
use waybill_core::fields::Fields;
use waybill_core::portal::{DEFAULT_LIFETIME, MAX_LIFETIME, Session};

use crate::AppState;
use crate::auth::Principal;
use crate::body::read_json;
use crate::error::ApiError;

const MAX_BODY_BYTES: usize = 4 * 1024;

/// `POST /v1/portal/sessions {"expires_in"?, "read_only"?}` (a tenant API
/// key) → `201 {"url", "token", "expires_at"}`.
pub(crate) async fn create_session(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if principal.session.is_some() {
        return Err(ApiError::forbidden(
            "a portal session cannot open sessions; use one of the tenant's API keys",
        ));
    }
    let body = read_json(&headers, body, MAX_BODY_BYTES).await?;
    let mut f = Fields::parse(&body).map_err(|e| ApiError::validation(vec![e]))?;
    let lifetime = match f.optional::<String>("expires_in", "a duration such as \"1h\"") {
        None => DEFAULT_LIFETIME,
        Some(text) => match waybill_core::duration::parse(&text) {
            Ok(d) if d >= std::time::Duration::from_secs(60) && d <= MAX_LIFETIME => d,
            Ok(_) => {
                f.error("expires_in", "must be from 1m to 24h (default 1h)");
                DEFAULT_LIFETIME
            }
            Err(message) => {
                f.error("expires_in", message);
                DEFAULT_LIFETIME
            }
        },
    };
    let read_only: bool = f.optional("read_only", "a boolean").unwrap_or(false);
    let errors = f.finish(&["expires_in", "read_only"]);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let session = Session::new(
        &principal.tenant_id,
        read_only,
        lifetime,
        OffsetDateTime::now_utc(),
    );
    let token = session.token(&state.keys);
    let url = format!("{}#token={token}", portal_url(&state, &headers));
    tracing::info!(tenant_id = %session.tenant_id, session_id = %session.id, read_only, expires_at = %format_rfc3339(session.expires()), "portal session opened");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "url": url,
            "token": token,
            "expires_at": format_rfc3339(session.expires()),
        })),
    ))
}

/// Where the portal is: `ingest.portal_url`, or this service's `/portal`
/// at the host the request named.
fn portal_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.portal_url {
        return url.trim_end_matches('#').to_owned();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/portal")
}

/// The page's files, compiled in: nothing is fetched from elsewhere.
const PAGE: &str = include_str!("portal/index.html");
const SCRIPT: &str = include_str!("portal/app.js");
const STYLE: &str = include_str!("portal/app.css");

/// `GET /portal`.
pub(crate) async fn page(State(state): State<Arc<AppState>>) -> Response {
    asset(&state, "text/html; charset=utf-8", PAGE)
}

/// `GET /portal/app.js`.
pub(crate) async fn script(State(state): State<Arc<AppState>>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /portal/app.css`.
pub(crate) async fn style(State(state): State<Arc<AppState>>) -> Response {
    asset(&state, "text/css; charset=utf-8", STYLE)
}

fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(
        &state.config.portal_frame_ancestors,
    )) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Its own origin only, for everything; framed by `frame_ancestors` (and
/// itself).
pub(crate) fn content_security_policy(frame_ancestors: &[String]) -> String {
    let mut ancestors = vec!["'self'".to_owned()];
    ancestors.extend(frame_ancestors.iter().filter(|a| *a != "'self'").cloned());
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors {}",
        ancestors.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_allows_only_its_own_origin_and_the_configured_frames() {
        let csp = content_security_policy(&[]);
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.ends_with("frame-ancestors 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let csp = content_security_policy(&["https://app.example.com".into()]);
        assert!(
            csp.ends_with("frame-ancestors 'self' https://app.example.com"),
            "{csp}"
        );
    }
}
