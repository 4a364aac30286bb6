//! The audit hook every changing handler calls after its change, the
//! request metadata it records, and `GET /v1/audit`.
//!
//! Calling it: take `meta: RequestMeta` as an extractor beside `caller:
//! Caller`, then after the change succeeds
//! `audit::record(&state.shared, &caller, &meta, "subscription.recover", &id, Some(&owner)).await`.
//! Pass ids only: never a body, a secret or a token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{bearer_token, require_admin, Caller};
use super::error::{ApiError, ErrorBody};
use super::pagination::{page_limit, Page};
use super::{ApiQuery, AppState};
use crate::audit::{Actor, AuditRecord};
use crate::context::Shared;

/// Header a client or proxy may set to name its request; echoed into the
/// audit record (at most 128 visible characters), generated when absent.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the audit trail records about a request besides the caller.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    /// The peer address of the connection.
    pub source: Option<String>,
    /// The API key or portal session the caller used, if any.
    pub key_id: Option<String>,
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(|| crate::owners::new_id("req_"));
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string());
        let key_id = bearer_token(parts)
            .and_then(|t| state.shared.owners.authenticate(t))
            .map(|c| c.id().to_string());
        Ok(RequestMeta {
            request_id,
            source,
            key_id,
        })
    }
}

/// Appends an audit record of a change the caller made: `action` (e.g.
/// `subscription.create`) on `target` (an id), belonging to `owner`. A
/// failure to append is logged, not returned: the change already happened.
pub async fn record(
    shared: &Shared,
    caller: &Caller,
    meta: &RequestMeta,
    action: &str,
    target: &str,
    owner: Option<&str>,
) {
    let actor = Actor {
        owner: match caller {
            Caller::Admin => "admin".to_string(),
            Caller::Owner(o) => o.clone(),
        },
        key_id: meta.key_id.clone(),
    };
    let record = AuditRecord {
        id: crate::owners::new_id("aud_"),
        at: Utc::now(),
        actor,
        action: action.to_string(),
        target: target.to_string(),
        owner: owner.map(str::to_string),
        request_id: Some(meta.request_id.clone()),
        source: meta.source.clone(),
    };
    if let Err(error) = shared.audit.append(&record).await {
        tracing::error!(%error, action, target, "An audit record could not be written.");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records about this owner's things.
    owner: Option<String>,
    /// Only records at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// 1 to 250, default 50.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "owners",
    params(AuditQuery),
    responses(
        (status = 200, description = "Newest first", body = Page<AuditRecord>),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    require_admin(&caller)?;
    let limit = page_limit(q.limit)?;
    let (data, more) =
        state
            .shared
            .audit
            .page(q.owner.as_deref(), q.since, q.cursor.as_deref(), limit);
    let next_cursor = more.then(|| data.last().map(|r| r.id.clone())).flatten();
    Ok(Json(Page { data, next_cursor }))
}
