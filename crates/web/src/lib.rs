#![forbid(unsafe_code)]
//! Rapport's HTTP front ends: health and readiness, the REST API under `/api/v1` with its
//! OpenAPI document, bearer-token auth with roles and rate limits, and request metrics.

mod api;
mod auth;
mod error;
mod fhir_api;
mod json;
mod metrics;
mod openapi;
mod webhooks;

pub use auth::{RateLimit, hash_secret, new_secret};
pub use error::ApiError;
pub use openapi::openapi_json;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use domain::Clock;
use engine::Engine;
use std::sync::Arc;
use store::AppStore;

/// Settings the web layer needs; the binary fills them from its configuration.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    pub rate_limit: RateLimit,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            rate_limit: RateLimit::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn AppStore>,
    pub engine: Arc<Engine>,
    pub clock: Arc<dyn Clock>,
    /// The URL providers reach us at: webhook signatures are checked against it.
    pub public_url: String,
    pub(crate) limiter: Arc<auth::Limiter>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: &WebConfig) -> Self {
        Self {
            store: engine.store.clone(),
            clock: engine.clock.clone(),
            public_url: engine.config.public_url.clone(),
            engine,
            limiter: Arc::new(auth::Limiter::new(config.rate_limit)),
        }
    }
}

/// Every route Rapport serves over HTTP (metrics have their own listener).
pub fn router(state: AppState, config: &WebConfig) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api::routes())
        .nest("/fhir/R4", fhir_api::routes())
        .route(
            "/webhooks/twilio/{channel_id}/inbound",
            axum::routing::post(webhooks::inbound),
        )
        .route(
            "/webhooks/twilio/{channel_id}/status",
            axum::routing::post(webhooks::status),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ready().await {
        // Every HL7 message is answered AR until the journal can be used (the log says
        // why); an interface engine's load balancer should send them elsewhere.
        Ok(true) if state.engine.hl7_refusing() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "status": "HL7 messages refused: the HL7 journal cannot be used" }),
            ),
        ),
        Ok(true) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        ),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "migrations pending" })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "database unavailable" })),
        ),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
