//! Operations endpoints: health, readiness, metrics and the OpenAPI
//! document. Served by the API role on its port, and by every other role on
//! `ops.listen`, so a fan-out-only or deliver-only instance is probed and
//! scraped too.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::context::Shared;
use crate::metrics::METRICS;

/// The operations routes alone.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// Serves only the operations routes (roles without the API) until `cancel`.
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(super) async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(super) async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive", content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: Kafka answers and the subscription view has caught up; without the
/// API role, also every stage this instance runs consumes as a group member.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", content_type = "application/json"),
        (status = 503, description = "Not ready; the body says what is missing", content_type = "application/json"),
    ))]
pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Owners too: until their view is loaded, API keys would answer 401.
    let loaded = shared.store.is_ready() && shared.owners.is_ready();
    let kafka = shared.kafka_reachable.load(Ordering::Relaxed);
    let stuck = shared.stuck_partitions();
    let missing = shared
        .missing_inputs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut stages = serde_json::Map::new();
    let mut stages_ready = true;
    for (name, status) in [
        ("fanout", &shared.fanout_status),
        ("deliver", &shared.deliver_status),
    ] {
        if status.is_enabled() {
            stages.insert(name.to_string(), status.to_json());
            stages_ready &= status.is_ready();
        }
    }
    // Missing input topics are reported but do not make the instance
    // unready: the API works, and fan-out starts on them once they exist.
    let body = serde_json::json!({
        "subscriptions_loaded": loaded,
        "kafka_reachable": kafka,
        "stages": stages,
        "stuck_partitions": stuck,
        "missing_input_topics": missing,
        "unknown_secrets_keys": shared.store.unknown_keys(),
    });
    // A stuck partition is reported (and alerted on) but does not take the
    // instance out of service: its API and other partitions still work. An
    // instance with the API is ready when it can serve the API; one without
    // is ready when its stages consume (a standby beyond the partition count
    // is a member with no partitions, and ready).
    let ready = loaded && kafka && (shared.serves_api || stages_ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
