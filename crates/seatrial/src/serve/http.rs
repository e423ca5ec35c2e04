//! The HTTP edge: the JSON API, the dashboard, live logs (server-sent events), health, readiness
//! and metrics. Every request gets an `X-Request-Id` (generated or propagated) that is recorded
//! in each log line of the request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use seatrial_store::{NewRun, Run, RunFilter, RunState, StageRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::dashboard;
use super::metrics::StoreFigures;
use super::worker::Shared;

const REQUEST_ID: &str = "x-request-id";

type AppState = Arc<Shared>;

#[derive(Clone, Default)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&seatrial_trial::new_run_id())
            .ok()
            .map(RequestId::new)
    }
}

pub fn router(shared: AppState) -> Router {
    let timeout = shared.config.request_timeout;
    let body_limit = shared.config.body_limit;
    let id_header = header::HeaderName::from_static(REQUEST_ID);
    Router::new()
        .route("/", get(dashboard_list))
        .route("/queue", get(dashboard_queue))
        .route("/runs/{id}", get(dashboard_run))
        .route("/runs/{id}/events", get(run_events))
        .route("/api/runs", get(api_list).post(api_create))
        .route("/api/runs/{id}", get(api_get))
        .route("/api/runs/{id}/cancel", post(api_cancel))
        .route("/api/runs/{id}/log", get(api_log))
        .route("/api/openapi.yaml", get(openapi))
        .route("/hooks/gitea", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(PropagateRequestIdLayer::new(id_header.clone()))
        .layer(SetRequestIdLayer::new(id_header, MakeId))
        .with_state(shared)
}

/// Logs each request inside a span carrying its request id, and counts it by route.
async fn observe(State(shared): State<AppState>, request: Request, next: Next) -> Response {
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
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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

/// An API error: a status and a message that says what to do.
struct ApiError(StatusCode, String);

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
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
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

pub fn ms_rfc3339(ms: i64) -> String {
    seatrial_engine::labels::rfc3339(u64::try_from(ms / 1000).unwrap_or(0))
}

fn link(shared: &Shared, id: i64) -> String {
    format!(
        "{}/runs/{id}",
        shared
            .config
            .public_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
    )
}

/// The API's view of a run.
pub fn run_json(
    shared: &Shared,
    run: &Run,
    stages: Option<&[StageRecord]>,
    position: Option<usize>,
) -> Value {
    let mut v = json!({
        "id": run.id,
        "state": run.state.as_str(),
        "mode": run.mode,
        "recipe": run.recipe,
        "ref": run.reference,
        "repo": run.repo,
        "pr": run.pr_number,
        "commit": run.commit_sha,
        "trigger": run.trigger,
        "requested_by": run.requested_by,
        "attempt": run.attempt,
        "created_at": ms_rfc3339(run.created_at_ms),
        "started_at": run.started_at_ms.map(ms_rfc3339),
        "finished_at": run.finished_at_ms.map(ms_rfc3339),
        "duration_ms": match (run.started_at_ms, run.finished_at_ms) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        },
        "stack": run.stack,
        "reason": run.reason,
        "recipe_path": run.recipe_path,
        "probe": run.probe.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
        "timeout_secs": run.timeout_secs,
        "cancel_requested": run.cancel_requested,
        "queue_position": position,
        "url": link(shared, run.id),
    });
    if let Some(stages) = stages {
        v["stages"] = json!(
            stages
                .iter()
                .map(|s| json!({
                    "name": s.name,
                    "result": s.result,
                    "started_at": s.started_at,
                    "duration_ms": s.duration_ms,
                    "detail": s.detail,
                }))
                .collect::<Vec<_>>()
        );
    }
    v
}

async fn queue_position(shared: &Shared, run: &Run) -> Result<Option<usize>, ApiError> {
    if run.state != RunState::Queued {
        return Ok(None);
    }
    let positions = shared
        .store
        .queue_positions(std::slice::from_ref(run))
        .await?;
    Ok(positions.get(&run.id).copied())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    recipe: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    mode: Option<String>,
    requested_by: Option<String>,
    timeout: Option<String>,
}

async fn api_create(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers)?;
    let req: CreateRun = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {{\"recipe\": \"<path or git URL>\", \"ref\": \"<optional>\", \"mode\": \"cold\"}}: {e}"),
        )
    })?;
    if req.recipe.trim().is_empty() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`recipe` is empty: give a recipe directory on the server or a git URL".into(),
        ));
    }
    let mode = req.mode.unwrap_or_else(|| "cold".into());
    match mode.as_str() {
        "cold" => {}
        "quick" => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quick mode is not available yet; use \"mode\": \"cold\"".into(),
            ));
        }
        other => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown mode {other:?}: use \"cold\""),
            ));
        }
    }
    let timeout_secs = match &req.timeout {
        None => None,
        Some(t) => Some(
            seatrial_recipe::parse_duration(t)
                .map_err(|e| {
                    ApiError(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("timeout {t:?}: {e}"),
                    )
                })?
                .as_secs() as i64,
        ),
    };
    // Fixed now: whichever server claims the run runs it with these.
    let settings = shared.config.settings_for(
        &req.recipe,
        None,
        timeout_secs.map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))),
    );
    let run = shared
        .enqueue(&NewRun {
            recipe: req.recipe,
            reference: req.reference.filter(|r| !r.is_empty()),
            repo: None,
            pr_number: None,
            commit_sha: None,
            mode,
            trigger: "api".into(),
            requested_by: req.requested_by,
            timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
            recipe_path: settings.recipe_path,
            probe: Some(settings.probe.to_json()),
        })
        .await?;
    tracing::info!(run = run.id, recipe = %run.recipe, "queued");
    let position = queue_position(&shared, &run).await?;
    let body = run_json(&shared, &run, Some(&[]), position);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/runs/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn load_run(shared: &Shared, id: i64) -> Result<Run, ApiError> {
    shared
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))
}

async fn api_get(
    State(shared): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let run = load_run(&shared, id).await?;
    let stages = shared.store.stages(id).await?;
    let position = queue_position(&shared, &run).await?;
    Ok(Json(run_json(&shared, &run, Some(&stages), position)))
}

async fn api_cancel(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers)?;
    let run = shared
        .store
        .request_cancel(id, None)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    shared.cancel_local(id);
    shared.changed(id);
    tracing::info!(run = id, state = run.state.as_str(), "cancel requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(run_json(&shared, &run, None, None)),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    pub recipe: Option<String>,
    pub state: Option<String>,
    pub mode: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

pub fn filter_of(q: &ListQuery) -> Result<RunFilter, String> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            format!("unknown state {s:?}: use queued, running, passed, failed, errored, cancelled or timed_out")
        })?),
    };
    Ok(RunFilter {
        recipe: q.recipe.clone().filter(|s| !s.is_empty()),
        state,
        mode: q.mode.clone().filter(|s| !s.is_empty()),
        before_id: q.before,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    })
}

async fn api_list(
    State(shared): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter_of(&q).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let runs = shared.store.list(&filter).await?;
    let positions = shared.store.queue_positions(&runs).await?;
    let next = (runs.len() as i64 == filter.limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = runs
        .iter()
        .map(|r| run_json(&shared, r, None, positions.get(&r.id).copied()))
        .collect();
    Ok(Json(json!({ "runs": items, "next_before": next })))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogQuery {
    after: i64,
    limit: Option<i64>,
}

async fn api_log(
    State(shared): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    load_run(&shared, id).await?;
    let chunks = shared
        .store
        .logs_since(id, q.after, q.limit.unwrap_or(1000).clamp(1, 10_000))
        .await?;
    Ok(Json(json!({ "log": chunks })))
}

/// The live log: every line after `Last-Event-ID` (or from the start), then new lines as they
/// come; an `end` event once the run is over and everything was sent.
async fn run_events(
    State(shared): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    load_run(&shared, id).await?;
    let mut after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut changes = shared.changes.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            let chunks = match shared.store.logs_since(id, after, 500).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(run = id, error = %e, "live log: cannot read");
                    Vec::new()
                }
            };
            let got = chunks.len();
            for c in chunks {
                after = c.seq;
                let event = Event::default()
                    .id(c.seq.to_string())
                    .event("log")
                    .data(c.text);
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if got == 500 {
                continue;
            }
            let run = shared.store.get(id).await.ok().flatten();
            if let Some(run) = run {
                let state = Event::default().event("state").data(run.state.as_str());
                if tx.send(Ok(state)).await.is_err() {
                    return;
                }
                if run.state.is_terminal() {
                    // Lines written just before the verdict were read above.
                    let _ = tx.send(Ok(Event::default().event("end").data(""))).await;
                    return;
                }
            }
            // Woken by this process's writers; other servers' lines show within a second.
            let wait = async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed == id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                () = wait => {},
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a producer task through a small channel.
fn async_stream<F, Fut, T>(producer: F) -> impl Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `POST /hooks/gitea`: a signed webhook delivery (Gitea or Forgejo). A bad or missing
/// signature is answered 401 before anything else is looked at; events other than
/// `issue_comment` are answered 204.
async fn webhook(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(link) = shared.forge.get().cloned() else {
        return ApiError(
            StatusCode::NOT_FOUND,
            "no forge is configured on this server".into(),
        )
        .into_response();
    };
    let Some(secret) = &link.config.webhook_secret else {
        return ApiError(
            StatusCode::NOT_FOUND,
            "the webhook is disabled: set SEATRIAL_WEBHOOK_SECRET (or forge.webhook_secret)".into(),
        )
        .into_response();
    };
    if let Err(e) = seatrial_forge::verify_signature(secret.bytes(), &body, |name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    }) {
        tracing::warn!(error = %e, "webhook refused");
        return ApiError(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let event = ["x-gitea-event", "x-forgejo-event", "x-gogs-event"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    if event != "issue_comment" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return ApiError(StatusCode::BAD_REQUEST, "the payload is not JSON".into()).into_response();
    };
    let Some((repo, comment)) = super::forge::comment_from_hook(&payload) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if !link.config.repos.iter().any(|r| r.name == repo) {
        return StatusCode::NO_CONTENT.into_response();
    }
    tokio::spawn(async move {
        super::forge::handle(&shared, &link, &repo, &comment).await;
    });
    StatusCode::ACCEPTED.into_response()
}

async fn readyz(State(shared): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let db = async {
        match tokio::time::timeout(limit, shared.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2s".to_owned()),
        }
    };
    let engine = async {
        let ping = async {
            let engine = shared.engine().await.map_err(|e| e.to_string())?;
            engine.info().await.map(|_| ()).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(limit, ping).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 2s".to_owned()),
        }
    };
    let (db, engine) = tokio::join!(db, engine);
    let word = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let status = if db.is_ok() && engine.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "database": word(&db), "engine": word(&engine) })),
    )
        .into_response()
}

async fn metrics(State(shared): State<AppState>) -> Result<Response, ApiError> {
    let stats = shared.stats().await?;
    let text = shared.metrics.render(&StoreFigures {
        queued: stats.queued,
        running: stats.running,
        active_leases: stats.active_leases,
        by_state_and_mode: stats.by_state_and_mode,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../../../docs/openapi.yaml"),
    )
}

// The dashboard: server-rendered HTML.

fn html_error(e: ApiError) -> Response {
    let ApiError(status, message) = e;
    (
        status,
        Html(dashboard::error_page(status.as_u16(), &message)),
    )
        .into_response()
}

async fn dashboard_list(State(shared): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match filter_of(&q) {
        Ok(f) => f,
        Err(e) => return html_error(ApiError(StatusCode::BAD_REQUEST, e)),
    };
    let runs = match shared.store.list(&filter).await {
        Ok(r) => r,
        Err(e) => return html_error(e.into()),
    };
    let positions = shared
        .store
        .queue_positions(&runs)
        .await
        .unwrap_or_default();
    Html(dashboard::list_page(&runs, &positions, &q, filter.limit)).into_response()
}

async fn dashboard_queue(State(shared): State<AppState>) -> Response {
    match shared.store.queue().await {
        Ok(queue) => {
            let running = shared
                .store
                .list(&RunFilter {
                    state: Some(RunState::Running),
                    limit: 500,
                    ..RunFilter::default()
                })
                .await
                .unwrap_or_default();
            Html(dashboard::queue_page(
                &queue,
                &running,
                shared.config.capacity,
            ))
            .into_response()
        }
        Err(e) => html_error(e.into()),
    }
}

async fn dashboard_run(State(shared): State<AppState>, Path(id): Path<i64>) -> Response {
    let run = match load_run(&shared, id).await {
        Ok(r) => r,
        Err(e) => return html_error(e),
    };
    let stages = shared.store.stages(id).await.unwrap_or_default();
    let position = queue_position(&shared, &run).await.ok().flatten();
    Html(dashboard::run_page(&run, &stages, position)).into_response()
}
