//! The API's error type: a status, a stable code and a message, rendered as
//! `{"error":{"code":"…","message":"…"}}`. Causes are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid 'Authorization: Bearer <token>' header is required",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A failure on our side: the cause goes to the log, not to the caller.
    pub(crate) fn unavailable(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "API request failed.");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the subscription store is unavailable; try again",
        )
    }
}

/// The error body, for the API description.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: unauthorized, not_found, bad_request,
    /// invalid_url, invalid_event_types, invalid_filter, invalid_rate_limit,
    /// invalid_description, invalid_metadata, invalid_owner, invalid_status,
    /// invalid_headers, invalid_auth,
    /// invalid_body, limit_reached, unknown_dead_letters, too_many_ids,
    /// invalid_window, window_outside_retention, event_not_found,
    /// event_expired,
    /// unsupported_media_type, payload_too_large, method_not_allowed,
    /// unavailable.
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
