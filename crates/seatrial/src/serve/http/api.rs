//! The JSON API over runs: create (token required), read, list, cancel (token required), and a
//! run's log; and the infra apps with the nightly job (read only). Field names and values are
//! the API's contract (README, docs/openapi.yaml).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use seatrial_store::{Mode, NewRun, Run, RunId, RunState, StageRecord, Trigger};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, authorize, request_id};
use crate::serve::state::Shared;
use crate::serve::view::{ListQuery, filter_of, ms_rfc3339};

/// The API's view of a run.
fn run_json(
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
        "promote": run.promote,
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
        "url": shared.config.run_url(run.id, ""),
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

pub(super) async fn queue_position(shared: &Shared, run: &Run) -> Result<Option<usize>, ApiError> {
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
pub(super) struct CreateRun {
    recipe: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    mode: Option<String>,
    requested_by: Option<String>,
    timeout: Option<String>,
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
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
    let mode = req.mode.as_deref().unwrap_or(Mode::Cold.as_str());
    let mode = match mode.parse::<Mode>() {
        Ok(Mode::Cold) => Mode::Cold,
        Ok(Mode::Quick) => {
            let key = seatrial_trial::warm::recipe_key(&req.recipe);
            let warm = seatrial_trial::warm::Warm::new(&shared.config.data_dir);
            match warm.load(&key) {
                Ok(Some(_)) => Mode::Quick,
                Ok(None) => {
                    return Err(ApiError(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        seatrial_trial::warm::no_canonical_message(&key),
                    ));
                }
                Err(e) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e)),
            }
        }
        Ok(Mode::Gate) => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "mode \"gate\" runs are queued by a push to a repository enrolled with `gate = true` (the forge's push webhook), not through this API: use \"cold\" or \"quick\"".into(),
            ));
        }
        Err(_) => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown mode {mode:?}: use \"cold\" or \"quick\""),
            ));
        }
    };
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
            trigger: Trigger::Api,
            requested_by: req.requested_by,
            timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
            recipe_path: settings.recipe_path,
            probe: Some(settings.probe.to_json()),
            promote: false,
            note: Some(format!(
                "queued by POST /api/runs (request {})",
                request_id(&headers)
            )),
        })
        .await?;
    tracing::info!(run = run.id.0, recipe = %run.recipe, "queued");
    let position = queue_position(&shared, &run).await?;
    let body = run_json(&shared, &run, Some(&[]), position);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/runs/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

pub(super) async fn load_run(shared: &Shared, id: RunId) -> Result<Run, ApiError> {
    shared
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))
}

pub(super) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<RunId>,
) -> Result<Json<Value>, ApiError> {
    let run = load_run(&shared, id).await?;
    let stages = shared.store.stages(id).await?;
    let position = queue_position(&shared, &run).await?;
    Ok(Json(run_json(&shared, &run, Some(&stages), position)))
}

pub(super) async fn cancel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<RunId>,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers)?;
    let run = shared
        .store
        .request_cancel(
            id,
            None,
            Some(&format!(
                "cancel requested by POST /api/runs/{id}/cancel (request {})",
                request_id(&headers)
            )),
        )
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    shared.cancel_local(id);
    shared.changed(id);
    tracing::info!(run = id.0, state = run.state.as_str(), "cancel requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(run_json(&shared, &run, None, None)),
    )
        .into_response())
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
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
pub(super) struct LogQuery {
    after: i64,
    limit: Option<i64>,
}

pub(super) async fn log(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<RunId>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    load_run(&shared, id).await?;
    let chunks = shared
        .store
        .logs_since(id, q.after, q.limit.unwrap_or(1000).clamp(1, 10_000))
        .await?;
    Ok(Json(json!({ "log": chunks })))
}

/// `GET /api/infra`: the infra apps, the recent alerts and the nightly job (the infra page's
/// data).
pub(super) async fn infra(
    State(shared): State<Arc<Shared>>,
) -> Json<crate::serve::infra_view::InfraView> {
    Json(crate::serve::infra_view::gather(&shared).await)
}
