//! The dashboard's pages (server-rendered HTML, drawn by `serve::dashboard`): runs, the queue,
//! one run, the infra apps and the nightly job.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use seatrial_store::{RunFilter, RunId, RunState};

use super::ApiError;
use super::api::{load_run, queue_position};
use crate::serve::state::Shared;
use crate::serve::view::{ListQuery, filter_of};
use crate::serve::{dashboard, infra_view};

fn html_error(e: ApiError) -> Response {
    let ApiError(status, message) = e;
    (
        status,
        Html(dashboard::error_page(status.as_u16(), &message)),
    )
        .into_response()
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> Response {
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
    let schedule = infra_view::schedule_view(&shared);
    Html(dashboard::list_page(
        &runs,
        &positions,
        &q,
        filter.limit,
        schedule.as_ref(),
    ))
    .into_response()
}

pub(super) async fn infra(State(shared): State<Arc<Shared>>) -> Response {
    let view = infra_view::gather(&shared).await;
    Html(dashboard::infra_page(&view)).into_response()
}

pub(super) async fn queue(State(shared): State<Arc<Shared>>) -> Response {
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
                &super::warm_summaries(&shared.config.data_dir),
                shared
                    .nightly_holds()
                    .then(|| {
                        shared
                            .nightly_now()
                            .phase
                            .unwrap_or_else(|| "starting".into())
                    })
                    .as_deref(),
            ))
            .into_response()
        }
        Err(e) => html_error(e.into()),
    }
}

pub(super) async fn run(State(shared): State<Arc<Shared>>, Path(id): Path<RunId>) -> Response {
    let run = match load_run(&shared, id).await {
        Ok(r) => r,
        Err(e) => return html_error(e),
    };
    let stages = shared.store.stages(id).await.unwrap_or_default();
    let position = queue_position(&shared, &run).await.ok().flatten();
    Html(dashboard::run_page(&run, &stages, position)).into_response()
}
