//! The HTTP boundary's error type.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use waybill_core::FieldError;

/// The stable `code` of an error answer. The API document lists
/// [`ErrorCode::ALL`], so no code can be answered without being documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `unauthorized`.
    Unauthorized,
    /// `forbidden`.
    Forbidden,
    /// `not_found`.
    NotFound,
    /// `validation_failed`.
    ValidationFailed,
    /// `conflict`.
    Conflict,
    /// `precondition_failed`.
    PreconditionFailed,
    /// `payload_too_large`.
    PayloadTooLarge,
    /// `unsupported_media_type`.
    UnsupportedMediaType,
    /// `rate_limited`: a tenant quota is used up.
    RateLimited,
    /// `unavailable`.
    Unavailable,
    /// `internal`.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::ValidationFailed,
        ErrorCode::Conflict,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The word in the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An API error: a status, a stable code and a message that says what to fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    field: Option<String>,
    details: Vec<FieldError>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [FieldError],
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The seconds of the `Retry-After` header, if any.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after
    }

    /// The invalid fields of a `validation_failed`.
    pub fn details(&self) -> &[FieldError] {
        &self.details
    }

    /// The message, with every field error when there are several.
    pub fn message(&self) -> String {
        if self.details.len() > 1 {
            self.details
                .iter()
                .map(|d| format!("{}: {}", d.field, d.message))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            self.message.clone()
        }
    }

    /// 401: missing or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 404: no such object for this tenant.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 409: the request conflicts with the state (or another request).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    /// `412`: `If-Match` names a revision that is not the current one.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::PreconditionFailed,
            message,
        )
    }

    /// `403`: the caller may not make this change.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 403 is never used for objects (another tenant's object is a 404);
    /// an API key calling an operator route gets this 401.
    pub fn operator_only() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this call needs the operator token (`Authorization: Bearer <operator token>`)",
        )
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            message,
        )
    }

    /// 503: Kafka is unavailable, lagging or slower than the input; the
    /// client may retry after a second (`Retry-After: 1`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                message,
            )
        }
    }

    /// 429 `rate_limited`: a tenant quota is used up; the client may retry
    /// after `retry_after` seconds (`Retry-After`).
    pub fn rate_limited(message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                message,
            )
        }
    }

    /// 500: details go to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; it has been logged",
        )
    }

    /// 400 `validation_failed`: every invalid field in `details`. A body
    /// that is not JSON is reported on the field `body`, with the parser's
    /// line and column in the message.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let first = errors
            .first()
            .cloned()
            .unwrap_or_else(|| FieldError::new("body", "invalid"));
        let message = if errors.len() == 1 {
            first.to_string()
        } else {
            format!(
                "{} (and {} more problems, see details)",
                first,
                errors.len() - 1
            )
        };
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed,
            message,
        );
        error.field = Some(first.field);
        error.details = errors;
        error
    }
}

impl ApiError {
    fn body(&self) -> Body<'_> {
        Body {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
                field: self.field.as_deref(),
                details: &self.details,
            },
        }
    }

    /// The body alone (`{"error": {...}}`), for one item of a batch answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// `response` with the request's trace context in a `traceparent` header,
/// and, for an error answer in the `/v1` shape, its trace id as
/// `error.trace_id`, so a support ticket quoting either finds the trace.
pub async fn with_trace(response: Response, trace: &waybill_core::trace::TraceParent) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = axum::http::HeaderValue::from_str(&trace.to_string()) {
        parts.headers.insert("traceparent", value);
    }
    let json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !json {
        return Response::from_parts(parts, body);
    }
    // Error bodies are small (a message and the invalid fields).
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let Some(error) = value
        .get_mut("error")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    error.insert("trace_id".into(), trace.trace_id_hex().into());
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Fallback for a known path called with another method: `405`, with the
/// stable code `not_found` (the route does not exist for that method).
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::NotFound,
        format!("{} does not accept {method}", uri.path()),
    )
}

/// Fallback for unknown routes.
pub async fn not_found_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_says_when_to_retry() {
        let response = ApiError::unavailable("Kafka is slower than the input").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let other = ApiError::not_found("no such subscription").into_response();
        assert!(other.headers().get("retry-after").is_none());
    }

    #[test]
    fn batch_items_carry_the_error_body() {
        let e = ApiError::validation(vec![FieldError::new("event_name", "unknown event")]);
        let json = e.to_json();
        assert_eq!(json["error"]["code"], "validation_failed");
        assert_eq!(json["error"]["field"], "event_name");
        assert_eq!(json["error"]["details"][0]["message"], "unknown event");
    }
}
