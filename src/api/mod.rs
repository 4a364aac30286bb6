//! The admin API: subscriptions, health, readiness and metrics over HTTP.

pub mod auth;
pub mod dead_letters;
pub mod error;
pub mod subscriptions;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::metrics::METRICS;
use auth::Auth;
use error::ApiError;

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub auth: Arc<Auth>,
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

pub fn router(shared: Arc<Shared>) -> Router {
    let state = AppState {
        auth: Arc::new(Auth::new(&shared.settings.api)),
        shared,
    };
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
        .route("/v1/subscriptions/{id}/secret", get(subscriptions::secret))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route(
            "/v1/dead-letters/replay",
            axum::routing::post(dead_letters::replay),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let loaded = state.shared.store.is_ready();
    let kafka = state.shared.kafka_reachable.load(Ordering::Relaxed);
    let body = serde_json::json!({"subscriptions_loaded": loaded, "kafka_reachable": kafka});
    let status = if loaded && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Serves the API until `cancel` fires, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}
