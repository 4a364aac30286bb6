//! A subscription's signing secret: read it, rotate it with a grace period.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::{find, find_usable};
use crate::api::audit::{self, RequestMeta};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::{ApiPath, AppState};
use crate::subscriptions::Secret;

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    secret: String,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/secret", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SecretView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn secret(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SecretView>, ApiError> {
    let sub = find_usable(&state, &caller, &id).await?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.secret.read",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(Json(SecretView {
        secret: sub.secret.expose().to_string(),
    }))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/secret/rotate", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The new secret; the old one keeps signing for delivery.rotation_grace", body = SecretView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SecretView>, ApiError> {
    let sub = find(&state, &caller, &id).await?;
    let grace = chrono::Duration::from_std(state.shared.settings.delivery.rotation_grace)
        .unwrap_or_else(|_| chrono::Duration::days(1));
    // Rotated on the latest version; the answer is the secret that won, so
    // the secret returned is the one that signs.
    let written = state
        .shared
        .store
        .update(&sub.id, None, |sub| {
            let now = Utc::now();
            sub.previous_secret = Some(std::mem::replace(&mut sub.secret, Secret::generate()));
            sub.previous_secret_expires_at = Some(now + grace);
            sub.updated_at = now;
            true
        })
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .map_err(|r| super::rejected(r, false))?;
    tracing::info!(subscription_id = %sub.id, "Secret rotated.");
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.secret.rotate",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(Json(SecretView {
        secret: written.sub.secret.expose().to_string(),
    }))
}
