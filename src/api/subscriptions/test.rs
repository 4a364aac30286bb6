//! Test webhooks: send a catalog example to a subscription's endpoint now.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::find_usable;
use crate::api::audit::{self, RequestMeta};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::ApiPath;
use crate::api::{ApiJson, AppState};
use crate::attempts::AttemptRecord;
use crate::record::DeliveryHeaders;
use crate::subscriptions::new_id;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// A catalog type; its example is sent with id `evt_test_…`.
    event_type: String,
}

/// The request that went out, as the endpoint got it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentRequest {
    pub url: String,
    /// Name and value, sorted by name; the values of the endpoint's own
    /// headers (custom headers, an OAuth2 token) are redacted. Empty when no
    /// request left (a refused destination).
    pub headers: Vec<(String, String)>,
    /// The JSON body, exactly as signed.
    pub body: String,
}

/// The attempt (as the delivery log keeps it) and the request that was sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestAttempt {
    #[serde(flatten)]
    pub attempt: AttemptRecord,
    pub request: SentRequest,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = TestRequest,
    responses(
        (status = 200, description = "The attempt, whatever the endpoint answered", body = TestAttempt),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Unknown event type", body = ErrorBody),
    ))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<Json<TestAttempt>, ApiError> {
    let sub = find_usable(&state, &caller, &id).await?;
    let Some(kind) = state.shared.catalog.get(&body.event_type) else {
        return Err(ApiError::invalid(
            "invalid_event_types",
            format!("event type {:?} is not in the catalog", body.event_type),
        ));
    };
    let event = kind.example_event(format!("evt_test_{}", &new_id()[4..]));
    let live = state
        .shared
        .store
        .get(&sub.id)
        .ok_or_else(|| ApiError::not_found("subscription"))?;
    let headers = DeliveryHeaders::fresh(&event);
    let (result, attempt) = state
        .deliverer
        .attempt(&live, &headers, &bytes::Bytes::from(event.body.clone()))
        .await;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.test",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(Json(TestAttempt {
        attempt,
        request: SentRequest {
            url: live.sub.url.clone(),
            headers: result.sent_headers,
            body: String::from_utf8_lossy(&event.body).into_owned(),
        },
    }))
}
