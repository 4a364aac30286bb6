//! The admin API: subscriptions, dead letters, the event catalog, the
//! OpenAPI document, health, readiness and metrics over HTTP.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod dead_letters;
pub mod error;
mod idempotency;
pub mod ops;
pub mod owners;
pub mod pages;
mod pagination;
pub mod portal;
pub mod recoveries;
pub mod subscriptions;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::context::Shared;
use crate::delivery::Deliverer;
use auth::Auth;
use error::ApiError;

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// No request runs longer than this (a test webhook takes at most
/// `delivery.timeout`, a write at most `api.write_timeout`).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn request_timeout(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; try again",
        )
        .into_response(),
    }
}

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub auth: Arc<Auth>,
    /// Sends test webhooks through the real signing and HTTP path.
    pub deliverer: Arc<Deliverer>,
}

/// `Json` whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                match rejection.status() {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
                    _ => "bad_request",
                },
                rejection.body_text(),
            )),
        }
    }
}

/// `Query` whose rejections use the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// `Path` whose rejections (a segment that is not UTF-8, say) use the API's
/// error shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| ApiPath(p))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 description of the API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rewardhooks admin API",
        description = "Subscriptions, secrets, test webhooks, delivery log, dead letters and the event catalog. Every call needs `Authorization: Bearer <token>`."
    ),
    paths(
        subscriptions::create,
        subscriptions::list,
        subscriptions::get,
        subscriptions::update,
        subscriptions::delete,
        subscriptions::secret::secret,
        subscriptions::secret::rotate_secret,
        subscriptions::test::test,
        subscriptions::attempts::attempts,
        subscriptions::stats::stats,
        dead_letters::list,
        dead_letters::replay,
        recoveries::recover,
        recoveries::get,
        recoveries::cancel,
        recoveries::resend,
        catalog::list,
        catalog::filter_check,
        catalog::egress_ips,
        ops::openapi,
        ops::metrics,
        ops::healthz,
        ops::readyz,
        owners::create,
        owners::list,
        owners::get,
        owners::update,
        owners::delete,
        owners::create_key,
        owners::list_keys,
        owners::revoke_key,
        owners::create_session,
        owners::revoke_sessions,
        owners::me,
        audit::list,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    let portal = portal::router(&state.shared.settings.api.portal_frame_ancestors);
    Router::new()
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/v1/subscriptions/{id}/secret",
            get(subscriptions::secret::secret),
        )
        .route(
            "/v1/subscriptions/{id}/secret/rotate",
            post(subscriptions::secret::rotate_secret),
        )
        .route(
            "/v1/subscriptions/{id}/test",
            post(subscriptions::test::test),
        )
        .route(
            "/v1/subscriptions/{id}/attempts",
            get(subscriptions::attempts::attempts),
        )
        .route("/v1/subscriptions/{id}/recover", post(recoveries::recover))
        .route("/v1/subscriptions/{id}/resend", post(recoveries::resend))
        .route(
            "/v1/recoveries/{id}",
            get(recoveries::get).delete(recoveries::cancel),
        )
        .route(
            "/v1/subscriptions/{id}/stats",
            get(subscriptions::stats::stats),
        )
        .route("/v1/event-types/filter-check", post(catalog::filter_check))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/replay", post(dead_letters::replay))
        // Owners as data (admin), the caller's own record, the audit trail.
        .route("/v1/owners", get(owners::list).post(owners::create))
        .route(
            "/v1/owners/{id}",
            get(owners::get)
                .patch(owners::update)
                .delete(owners::delete),
        )
        .route(
            "/v1/owners/{id}/keys",
            get(owners::list_keys).post(owners::create_key),
        )
        .route(
            "/v1/owners/{id}/keys/{key_id}",
            axum::routing::delete(owners::revoke_key),
        )
        .route(
            "/v1/owners/{id}/portal-sessions",
            post(owners::create_session).delete(owners::revoke_sessions),
        )
        .route("/v1/me", get(owners::me))
        .route("/v1/audit", get(audit::list))
        .route("/v1/event-types", get(catalog::list))
        .route("/v1/egress-ips", get(catalog::egress_ips))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_timeout))
        .with_state(state.clone())
        .merge(ops::router(state.shared))
        .merge(pages::router())
        .merge(portal)
}

/// Serves the API until `cancel` fires, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState {
        auth: Arc::new(Auth::new(&shared.settings.api)),
        deliverer: Arc::new(Deliverer::new(shared.clone())?),
        shared,
    };
    // The peer address is recorded in the audit trail.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy (`src/api/openapi.json`, for readers and client
    /// generators) is what the server serves. Regenerate it with
    /// `make openapi` after changing the API.
    #[test]
    fn committed_openapi_document_matches_the_generated_one() {
        let generated: serde_json::Value =
            serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).expect("committed document parses");
        assert_eq!(
            generated, committed,
            "src/api/openapi.json is stale: run `make openapi`"
        );
        assert!(generated["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
