//! A subscription's delivery log, newest first.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::find;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::pagination::{page_limit, Page};
use crate::api::ApiPath;
use crate::api::{ApiQuery, AppState};
use crate::attempts::AttemptRecord;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// 1 to 250, default 50.
    limit: Option<usize>,
    /// Only attempts before this time (RFC 3339); `next_cursor` of the previous page.
    before: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/attempts", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), AttemptsQuery),
    responses(
        (status = 200, description = "Newest first", body = Page<AttemptRecord>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AttemptsQuery>,
) -> Result<Json<Page<AttemptRecord>>, ApiError> {
    let sub = find(&state, &caller, &id)?;
    let limit = page_limit(q.limit)?;
    let before = q
        .before
        .map(|b| {
            chrono::DateTime::parse_from_rfc3339(&b)
                .map(|t| t.to_utc())
                .map_err(|_| ApiError::bad_request("before must be an RFC 3339 time"))
        })
        .transpose()?;
    let data = state.shared.attempt_log.recent(&sub.id, before, limit + 1);
    let more = data.len() > limit;
    let data: Vec<AttemptRecord> = data.into_iter().take(limit).collect();
    let next_cursor = more
        .then(|| {
            data.last()
                .map(|a| a.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        })
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}
