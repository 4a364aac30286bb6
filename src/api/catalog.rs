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

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterCheckRequest {
    /// A subscription filter, as `filter` of a subscription takes it.
    #[schema(value_type = Object)]
    pub filter: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FilterCheck {
    #[serde(rename = "type")]
    pub name: String,
    /// Whether the filter matches this type's catalog example.
    pub matches: bool,
}

/// Whether a filter matches each catalog example, evaluated by the same
/// code as fan-out (the portal's filter editor shows it as you type).
#[utoipa::path(post, path = "/v1/event-types/filter-check", tag = "event-types",
    request_body = FilterCheckRequest,
    responses(
        (status = 200, body = Page<FilterCheck>),
        (status = 401, body = ErrorBody),
        (status = 422, description = "The filter does not compile (code invalid_filter)", body = ErrorBody),
    ))]
pub async fn filter_check(
    State(state): State<AppState>,
    _caller: Caller,
    super::ApiJson(body): super::ApiJson<FilterCheckRequest>,
) -> Result<Json<Page<FilterCheck>>, ApiError> {
    let filter = crate::events::filter::Filter::compile(&body.filter)
        .map_err(|e| ApiError::invalid("invalid_filter", e.to_string()))?;
    let data = state
        .shared
        .catalog
        .iter()
        .map(|t| FilterCheck {
            name: t.name.clone(),
            matches: filter.matches(&t.example_event(format!("evt_example_{}", t.name))),
        })
        .collect();
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}
