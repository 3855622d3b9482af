//! Operational endpoints: liveness, readiness and Prometheus metrics, served on their
//! own listener (`--ops-listen`), apart from the public API.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, extract::State};
use serde_json::json;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

#[derive(Clone)]
pub struct OpsState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

pub fn routes(state: OpsState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let failures = state.readiness.failures().await;
    if failures.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let failing: serde_json::Map<String, serde_json::Value> = failures
            .into_iter()
            .map(|(name, reason)| (name.to_string(), json!(reason)))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": "not_ready", "failing": failing })),
        )
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
