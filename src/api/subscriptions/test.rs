//! Test webhooks: send a catalog example to a subscription's endpoint now.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
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

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = TestRequest,
    responses(
        (status = 200, description = "The attempt, whatever the endpoint answered", body = AttemptRecord),
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
) -> Result<Json<AttemptRecord>, ApiError> {
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
    let (_, attempt) = state.deliverer.attempt(&live, &headers, &event.body).await;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.test",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(Json(attempt))
}
