//! JSON request bodies: content type and size limit, with API errors.

use axum::body::Body;
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// Checks the content type and reads at most `limit` bytes of the body.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::unsupported_media_type(
            if content_type.is_empty() {
                "send the body as JSON with `Content-Type: application/json`".to_owned()
            } else {
                format!("`{content_type}` is not accepted; send `Content-Type: application/json`")
            },
        ));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::payload_too_large(format!(
                    "the body is larger than the limit of {limit} bytes"
                )))
            } else {
                Err(ApiError::validation(vec![waybill_core::FieldError::new(
                    "body",
                    format!("cannot read the body: {e}"),
                )]))
            }
        }
    }
}
