//! The axum routers and their tower layers.
//!
//! Which endpoint is reachable where (docs/policy-server.md, "Endpoints"):
//!
//! | | webhook port (HTTPS; client certificate required with `--client-ca-file`) | probe port (plain HTTP, never a client certificate) |
//! |---|---|---|
//! | `POST /validate/{id}`, `/audit/{id}`, `/validate_raw/{id}` | yes | no |
//! | `GET /readiness`, `/livez`, `/metrics` | no | yes |
//!
//! Admission clients (the API server, the audit scanner) get only the
//! admission endpoints; kubelet, Prometheus and the controller (which reads
//! `/readiness`) cannot present a client certificate, so the health and
//! metrics endpoints live on the probe port only.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::api_error::ApiError;
use super::handlers;
use crate::evaluation::AppState;

/// The webhook router: the admission endpoints only. The body limit is
/// applied by the handlers ([`super::body`]).
pub(crate) fn webhook_router(state: Arc<AppState>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/validate/{id}", post(handlers::validate))
        .route("/audit/{id}", post(handlers::audit))
        .route("/validate_raw/{id}", post(handlers::validate_raw))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(make_span))
                .layer(HandleErrorLayer::new(
                    move |error: tower::BoxError| async move {
                        timeout_response(error, request_timeout)
                    },
                ))
                .layer(TimeoutLayer::new(request_timeout)),
        )
        .with_state(state)
}

/// The plain-HTTP probe router of the readiness port: health and metrics.
pub(crate) fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/readiness", get(handlers::readiness))
        .route("/livez", get(handlers::livez))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

/// The per-request span: in the logs, and the span exported as a trace
/// (`--otlp-endpoint`). The handlers fill in the empty fields.
fn make_span<B>(request: &Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        policy_id = tracing::field::Empty,
        uid = tracing::field::Empty,
        allowed = tracing::field::Empty,
        mutated = tracing::field::Empty,
    );
    portcullis_telemetry::set_remote_parent(&span, request.headers());
    span
}

fn timeout_response(error: tower::BoxError, limit: Duration) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request did not complete within {limit:?}"),
        )
        .into_response()
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error}"),
        )
        .into_response()
    }
}
