//! `GET /v1/event-types`: the event catalog.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::pagination::Page;
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    #[serde(rename = "type")]
    pub name: String,
    pub description: String,
    /// JSON Schema of `data`.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// A complete structured-mode CloudEvent of this type.
    #[schema(value_type = Object)]
    pub example: Value,
}

#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    responses(
        (status = 200, body = Page<EventTypeView>),
        (status = 401, body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Page<EventTypeView>>, ApiError> {
    let data = state
        .shared
        .catalog
        .iter()
        .map(|t| EventTypeView {
            name: t.name.clone(),
            description: t.description.clone(),
            schema: t.schema.clone(),
            example: t.example.clone(),
        })
        .collect();
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EgressIps {
    /// Public addresses webhooks leave from (`delivery.egress_ips`).
    pub data: Vec<String>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/egress-ips", tag = "event-types",
    responses(
        (status = 200, description = "Addresses receivers can allow-list", body = EgressIps),
        (status = 401, body = ErrorBody),
    ))]
pub async fn egress_ips(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<EgressIps>, ApiError> {
    Ok(Json(EgressIps {
        data: state.shared.settings.delivery.egress_ips.clone(),
        next_cursor: None,
    }))
}
