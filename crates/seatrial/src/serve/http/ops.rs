//! What operators and orchestrators ask: readiness (database and engine), Prometheus metrics,
//! and the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use crate::serve::metrics::StoreFigures;
use crate::serve::state::Shared;

pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
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

pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let stats = shared.stats().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let oldest_queued = stats
        .oldest_queued_at_ms
        .and_then(|at| u64::try_from(now_ms.saturating_sub(at)).ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let mut text = shared.metrics.render(&StoreFigures {
        queued: stats.queued,
        oldest_queued,
        failing_in_a_row: stats.failing_in_a_row,
        running: stats.running,
        active_leases: stats.active_leases,
        by_state_and_mode: stats.by_state_and_mode,
    });
    if shared.config.schedule.is_some() {
        crate::serve::metrics::render_nightly(&mut text, &shared.nightly_now());
    }
    crate::serve::metrics::render_warm(
        &mut text,
        &super::warm_summaries(&shared.config.data_dir),
        shared.config.warm_budget,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub(super) async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../../../../docs/openapi.yaml"),
    )
}
