//! The `Idempotency-Key` request header, shared by the calls that take it
//! (creating a subscription, replaying dead letters): the key, and a hash of
//! what the request asks for, so the same key with another body is told
//! apart.

use axum::http::HeaderMap;
use serde_json::Value;

use super::error::ApiError;

/// The request's key and the hex sha256 of `canonical` (what it asks for),
/// or `None` without the header.
pub(super) fn key_and_hash(
    headers: &HeaderMap,
    canonical: &Value,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters")
        })?;
    use sha2::Digest;
    let hash = sha2::Sha256::digest(canonical.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some((key.to_string(), hash)))
}

/// The error for a key used before with another request body.
pub(super) fn reused() -> ApiError {
    ApiError::invalid(
        "idempotency_key_reused",
        "this Idempotency-Key was used in the last 24 h with a different request body",
    )
}
