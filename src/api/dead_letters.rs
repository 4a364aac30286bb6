//! `/v1/dead-letters` handlers: list and replay.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::audit::RequestMeta;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::pagination::{page_limit, Page};
use super::subscriptions::find;
use super::{ApiJson, ApiQuery, AppState};
use crate::deadletter::{DeadLetter, Receipt};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    subscription_id: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Whether the caller may see dead letters of `subscription_id`: its own
/// subscriptions; the admin also those of deleted subscriptions.
fn visible(state: &AppState, caller: &Caller, subscription_id: &str) -> bool {
    match caller {
        Caller::Admin => true,
        Caller::Owner(owner) => state
            .shared
            .store
            .get(subscription_id)
            .is_some_and(|l| &l.sub.owner == owner),
    }
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters",
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first", body = Page<DeadLetter>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such subscription, or another owner's", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    let limit = page_limit(q.limit)?;
    if let Some(id) = &q.subscription_id {
        if !visible(&state, &caller, id) {
            return Err(ApiError::not_found("subscription"));
        }
    }
    let all = state.shared.dead_letters.list(|d| {
        q.subscription_id
            .as_ref()
            .is_none_or(|id| &d.subscription_id == id)
            && visible(&state, &caller, &d.subscription_id)
    });
    let start = match &q.cursor {
        Some(c) => all
            .iter()
            .position(|d| &d.id == c)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let data: Vec<DeadLetter> = all.iter().skip(start).take(limit).cloned().collect();
    let next_cursor = (start + data.len() < all.len())
        .then(|| data.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    subscription_id: String,
    /// Dead letters to replay (even if replayed before); without it, every
    /// dead letter of the subscription not replayed yet.
    ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    replayed: usize,
}

#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead-letters",
    request_body = ReplayRequest,
    responses(
        (status = 200, body = ReplayResult),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Unknown dead letter ids, or too many", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<ReplayResult>, ApiError> {
    // Replaying needs the subscription to exist: deliveries go to it.
    let sub = find(&state, &caller, &body.subscription_id).await?;
    let dead_letters = &state.shared.dead_letters;
    // Idempotency-Key: the same replay asked again answers the first result.
    let owner = caller.owner_scope().unwrap_or("admin").to_string();
    let canonical = serde_json::json!({"subscription_id": body.subscription_id, "ids": body.ids});
    let idempotency = match super::idempotency::key_and_hash(&headers, &canonical)? {
        None => None,
        Some((key, hash)) => {
            // Read the dead-letter topic to its end first: a receipt written
            // through another instance is seen.
            dead_letters
                .fence()
                .await
                .map_err(|e| ApiError::unavailable(&e))?;
            match dead_letters.receipt(&owner, &key, &hash) {
                Some(Receipt::Same(replayed)) => return Ok(Json(ReplayResult { replayed })),
                Some(Receipt::Reused) => return Err(super::idempotency::reused()),
                None => Some((key, hash)),
            }
        }
    };
    let letters = match &body.ids {
        Some(ids) => {
            if ids.len() > 1000 {
                return Err(ApiError::invalid(
                    "too_many_ids",
                    "at most 1000 ids per call",
                ));
            }
            // A repeated id is one id.
            let mut unique: Vec<String> = Vec::with_capacity(ids.len());
            for id in ids {
                if !unique.contains(id) {
                    unique.push(id.clone());
                }
            }
            let (found, missing) = dead_letters.by_ids(&body.subscription_id, &unique);
            if !missing.is_empty() {
                return Err(ApiError::invalid(
                    "unknown_dead_letters",
                    format!(
                        "no dead letters {} for this subscription",
                        missing.join(", ")
                    ),
                ));
            }
            found
        }
        None => dead_letters
            .list(|d| d.subscription_id == body.subscription_id && d.replayed_at.is_none()),
    };
    let replayed = dead_letters
        .replay(&letters)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    if let Some((key, hash)) = idempotency {
        dead_letters
            .write_receipt(&owner, &key, &hash, replayed)
            .await
            .map_err(|e| ApiError::unavailable(&e))?;
    }
    crate::api::audit::record(
        &state.shared,
        &caller,
        &meta,
        "dead_letters.replay",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(Json(ReplayResult { replayed }))
}
