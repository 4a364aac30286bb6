//! Recovering a time window (`POST /v1/subscriptions/{id}/recover`,
//! `GET`/`DELETE /v1/recoveries/{id}`) and resending one event
//! (`POST /v1/subscriptions/{id}/resend`). The jobs themselves run in
//! `crate::recovery`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::{self, RequestMeta};
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::subscriptions::find_live;
use super::{ApiJson, ApiPath, AppState};
use crate::record::SourcePosition;
use crate::recovery::{self, IdempotencyStamp, Recovery, RecoveryError, RecoveryStatus};

const MAX_EVENT_TYPES: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Start of the window (RFC 3339), inclusive: events whose Kafka
    /// record timestamp is at or after it.
    pub since: DateTime<Utc>,
    /// End of the window, exclusive; default: now, when the job is created.
    pub until: Option<DateTime<Utc>>,
    /// Only these types (exact or `tier.*`), within the subscription's own.
    pub event_types: Option<Vec<String>>,
}

/// A recovery job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryView {
    pub id: String,
    pub subscription_id: String,
    /// running, finished, failed or cancelled.
    pub status: RecoveryStatus,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// Input records read so far.
    pub scanned: u64,
    /// Of those, events in the window that match the subscription.
    pub matched: u64,
    /// Deliveries written (acknowledged by Kafka).
    pub written: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&Recovery> for RecoveryView {
    fn from(j: &Recovery) -> Self {
        RecoveryView {
            id: j.id.clone(),
            subscription_id: j.subscription_id.clone(),
            status: j.status,
            since: j.since,
            until: j.until,
            event_types: j.event_types.clone(),
            scanned: j.scanned,
            matched: j.matched,
            written: j.written,
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
            error: j.error.clone(),
        }
    }
}

fn accepted(job: &Recovery) -> axum::response::Response {
    (StatusCode::ACCEPTED, Json(RecoveryView::from(job))).into_response()
}

fn kafka_unavailable(e: &dyn std::error::Error) -> ApiError {
    tracing::error!(error = %e, "Recovery request failed.");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Kafka is unavailable; try again",
    )
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/recover", tag = "recoveries",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = RecoverRequest,
    responses(
        (status = 202, description = "The job, running", body = RecoveryView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such subscription, or another owner's", body = ErrorBody),
        (status = 422, description = "`invalid_window`, `invalid_event_types`, `idempotency_key_reused`, or `window_outside_retention` (the message names the earliest time still held)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RecoverRequest>,
) -> Result<axum::response::Response, ApiError> {
    let live = find_live(&state, &caller, &id).await?;
    let now = Utc::now();
    let until = body.until.map(|u| u.min(now));
    if body.since >= until.unwrap_or(now) {
        return Err(ApiError::invalid(
            "invalid_window",
            "since must be before until (and before now)",
        ));
    }
    if let Some(types) = &body.event_types {
        if types.is_empty()
            || types.len() > MAX_EVENT_TYPES
            || types.iter().any(|t| t.trim().is_empty())
        {
            return Err(ApiError::invalid(
                "invalid_event_types",
                format!("event_types needs 1 to {MAX_EVENT_TYPES} non-empty entries"),
            ));
        }
    }
    let recoveries = &state.shared.recoveries;
    let caller_name = caller.owner_scope().unwrap_or("admin").to_string();
    let canonical = serde_json::json!({
        "subscription_id": id, "since": body.since, "until": body.until,
        "event_types": body.event_types,
    });
    let idempotency = match super::idempotency::key_and_hash(&headers, &canonical)? {
        None => None,
        Some((key, hash)) => {
            // A job created through another instance is seen.
            recoveries
                .fence()
                .await
                .map_err(|e| kafka_unavailable(&e))?;
            match recoveries.by_idempotency_key(&caller_name, &key) {
                Some(job) if job.idempotency.as_ref().is_some_and(|s| s.hash == hash) => {
                    return Ok(accepted(&job));
                }
                Some(_) => return Err(super::idempotency::reused()),
                None => Some(IdempotencyStamp {
                    caller: caller_name,
                    key,
                    hash,
                }),
            }
        }
    };
    let (until, partitions) = match recovery::plan(&state.shared, body.since, until).await {
        Ok(plan) => plan,
        Err(RecoveryError::OutsideRetention { earliest }) => {
            return Err(ApiError::invalid(
                "window_outside_retention",
                format!(
                    "the window starts before the earliest event still held in the input topics: {}",
                    earliest.to_rfc3339_opts(SecondsFormat::Millis, true)
                ),
            ));
        }
        Err(e) => return Err(kafka_unavailable(&e)),
    };
    let job = Recovery {
        id: format!("rec_{}", &crate::subscriptions::new_id()[4..]),
        owner: live.sub.owner.clone(),
        subscription_id: id,
        status: RecoveryStatus::Running,
        since: body.since,
        until,
        event_types: body.event_types,
        scanned: 0,
        matched: 0,
        written: 0,
        created_at: now,
        updated_at: now,
        finished_at: None,
        error: None,
        partitions,
        deliveries_from: Default::default(),
        idempotency,
    };
    recoveries
        .write(&job)
        .await
        .map_err(|e| kafka_unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "recovery.create",
        &job.id,
        Some(&job.owner),
    )
    .await;
    tracing::info!(recovery_id = %job.id, subscription_id = %job.subscription_id, since = %job.since, until = %job.until, "Recovery job created.");
    Ok(accepted(&job))
}

/// The job, if the caller may see it (its subscription's owner, or the
/// admin); another owner's id is 404.
async fn find_job(state: &AppState, caller: &Caller, id: &str) -> Result<Recovery, ApiError> {
    let recoveries = &state.shared.recoveries;
    let job = match recoveries.get(id) {
        Some(job) => Some(job),
        None => {
            recoveries
                .fence()
                .await
                .map_err(|e| kafka_unavailable(&e))?;
            recoveries.get(id)
        }
    };
    job.filter(|j| caller.may_see(&j.owner))
        .ok_or_else(|| ApiError::not_found("recovery"))
}

#[utoipa::path(get, path = "/v1/recoveries/{id}", tag = "recoveries",
    params(("id" = String, Path, description = "Recovery id")),
    responses(
        (status = 200, body = RecoveryView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecoveryView>, ApiError> {
    let job = find_job(&state, &caller, &id).await?;
    Ok(Json(RecoveryView::from(&job)))
}

#[utoipa::path(delete, path = "/v1/recoveries/{id}", tag = "recoveries",
    params(("id" = String, Path, description = "Recovery id")),
    responses(
        (status = 200, description = "The job, cancelled (or as it ended, if it had)", body = RecoveryView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecoveryView>, ApiError> {
    let mut job = find_job(&state, &caller, &id).await?;
    if job.status == RecoveryStatus::Running {
        job.status = RecoveryStatus::Cancelled;
        job.updated_at = Utc::now();
        state
            .shared
            .recoveries
            .write(&job)
            .await
            .map_err(|e| kafka_unavailable(&e))?;
        audit::record(
            &state.shared,
            &caller,
            &meta,
            "recovery.cancel",
            &job.id,
            Some(&job.owner),
        )
        .await;
    }
    Ok(Json(RecoveryView::from(&job)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    pub event_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResendResult {
    pub subscription_id: String,
    pub event_id: String,
    /// The input record the event was read from.
    pub source: SourcePosition,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resend", tag = "recoveries",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = ResendRequest,
    responses(
        (status = 202, description = "A fresh delivery of the event is written", body = ResendResult),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such subscription, or `event_not_found`: the event is not in its attempt history", body = ErrorBody),
        (status = 410, description = "`event_expired`: the event's record is past the input topic's retention", body = ErrorBody),
        (status = 422, description = "`outside_scope`: the owner's scope no longer lets the event through", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResendRequest>,
) -> Result<axum::response::Response, ApiError> {
    let live = find_live(&state, &caller, &id).await?;
    let not_found = |why: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "event_not_found",
            format!("event {} {why}", body.event_id),
        )
    };
    let source = match state.shared.attempt_log.source_of(&id, &body.event_id) {
        None => return Err(not_found("is not in this subscription's attempt history")),
        Some(None) => {
            return Err(not_found(
                "has no recorded input position (attempted before positions were kept, or a test webhook)",
            ))
        }
        Some(Some(source)) => source,
    };
    let msg = match recovery::read_at(&state.shared, &source).await {
        Ok(msg) => msg,
        Err(RecoveryError::Expired) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "event_expired",
                format!(
                    "event {} is past the retention of {}",
                    body.event_id, source.topic
                ),
            ))
        }
        Err(RecoveryError::NotFound) => return Err(not_found("is no longer in its topic")),
        Err(e) => return Err(kafka_unavailable(&e)),
    };
    let event = recovery::decode_record(&state.shared, &msg)
        .filter(|e| e.id == body.event_id)
        .ok_or_else(|| not_found("is not at its recorded position"))?;
    // The owner's scope as it is now, as for every fresh delivery.
    if !state.shared.owners.allows(&live.sub.owner, &event) {
        return Err(ApiError::invalid(
            "outside_scope",
            format!("event {} is outside the owner's scope", event.id),
        ));
    }
    recovery::delivery_record(&state.shared, &live.sub.id, &event, source.clone(), None)
        .produce_durably(&state.shared.producer)
        .await
        .map_err(|e| kafka_unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.resend",
        &id,
        Some(&live.sub.owner),
    )
    .await;
    tracing::info!(subscription_id = %id, event_id = %event.id, "Event resent.");
    let result = ResendResult {
        subscription_id: id,
        event_id: event.id,
        source,
    };
    Ok((StatusCode::ACCEPTED, Json(result)).into_response())
}
