//! The HTTP edge: the JSON API (`api`), the dashboard (`pages`), live logs as server-sent events
//! (`live`), the forge's webhook (`webhook`), and health, readiness, metrics and the OpenAPI
//! document (`ops`). Every request gets an `X-Request-Id` (generated or propagated) that is
//! recorded in each log line of the request.

mod api;
mod live;
mod ops;
mod pages;
mod webhook;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::forge::ForgeLink;
use super::state::Shared;

const REQUEST_ID: &str = "x-request-id";

/// What the handlers get: the shared state, and the forge when one is configured (the webhook
/// alone needs it).
#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    forge: Option<Arc<ForgeLink>>,
}

impl FromRef<AppState> for Arc<Shared> {
    fn from_ref(state: &AppState) -> Self {
        state.shared.clone()
    }
}

#[derive(Clone, Default)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&seatrial_trial::new_run_id())
            .ok()
            .map(RequestId::new)
    }
}

pub fn router(shared: Arc<Shared>, forge: Option<Arc<ForgeLink>>) -> Router {
    let timeout = shared.config.request_timeout;
    let body_limit = shared.config.body_limit;
    let id_header = header::HeaderName::from_static(REQUEST_ID);
    Router::new()
        .route("/", get(pages::list))
        .route("/queue", get(pages::queue))
        .route("/infra", get(pages::infra))
        .route("/api/infra", get(api::infra))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/events", get(live::run_events))
        .route("/api/runs", get(api::list).post(api::create))
        .route("/api/runs/{id}", get(api::get))
        .route("/api/runs/{id}/cancel", post(api::cancel))
        .route("/api/runs/{id}/log", get(api::log))
        .route("/api/openapi.yaml", get(ops::openapi))
        .route("/hooks/gitea", post(webhook::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(PropagateRequestIdLayer::new(id_header.clone()))
        .layer(SetRequestIdLayer::new(id_header, MakeId))
        .with_state(AppState { shared, forge })
}

/// Logs each request inside a span carrying its request id, and counts it by route.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Metric labels come only from known values: a client inventing methods must not grow
    // the metrics without bound (routes are the router's own, or `unmatched`).
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let id = request_id(request.headers()).to_owned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    shared.metrics.http(&method, &route, status, took);
    span.in_scope(|| {
        tracing::info!(status, took_ms = took.as_secs_f64() * 1000.0, "answered");
    });
    response
}

/// The request's id (the caller's `X-Request-Id`, or the one [`MakeId`] gave it), for the log
/// lines of the runs a request queues or cancels: they name it as `request <id>`.
pub(crate) fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// An API error: a status and a message that says what to do.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"seatrial\""),
            );
        }
        r
    }
}

impl From<seatrial_store::StoreError> for ApiError {
    fn from(e: seatrial_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store failed: {e}"),
        )
    }
}

/// Writes need a bearer token; with none configured, writes are refused (fail closed).
pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    if shared.config.api_tokens.is_empty() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this server has no API token configured, so it accepts no writes; set SEATRIAL_API_TOKEN (or api_tokens in the config) and send `Authorization: Bearer <token>`".into(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if shared.config.api_tokens.iter().any(|k| k.matches(t)) => Ok(()),
        Some(_) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not valid here".into(),
        )),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <token>` (a token from SEATRIAL_API_TOKEN)".into(),
        )),
    }
}

/// The warm canonicals recorded in the data directory (unreadable records left out), for the
/// queue page and `/metrics`.
fn warm_summaries(data_dir: &std::path::Path) -> Vec<seatrial_trial::warm::Summary> {
    let warm = seatrial_trial::warm::Warm::new(data_dir);
    warm.list()
        .into_iter()
        .filter_map(Result::ok)
        .map(|c| warm.summary(&c))
        .collect()
}
