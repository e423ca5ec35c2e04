//! `POST /hooks/gitea`: the forge's webhook, verified and read by the forge crate; a comment is
//! handled like a polled one, a push to a `gate = true` repository queues a gate run.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use seatrial_forge::webhook::EVENT_HEADERS;
use seatrial_forge::{comment_event, push_event, verify_signature};

use super::{ApiError, AppState, request_id};
use crate::serve::forge::push::{PushOutcome, on_push};
use crate::serve::forge::{Delivery, ForgeLink, on_comment};
use crate::serve::state::Shared;

/// `POST /hooks/gitea`: a signed webhook delivery (Gitea or Forgejo). A bad or missing
/// signature is answered 401 before anything else is looked at; a `push` queues a gate run
/// (202 with its id) or is ignored (200 with the reason); events other than `issue_comment` and
/// `push` are answered 204.
pub(super) async fn receive(
    State(AppState { shared, forge }): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(link) = forge else {
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
    if let Err(e) = verify_signature(secret.bytes(), &body, |name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    }) {
        tracing::warn!(error = %e, "webhook refused");
        return ApiError(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let event = EVENT_HEADERS
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    if event == "push" {
        return push(&shared, &link, &headers, &body).await;
    }
    if event != "issue_comment" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let (repo, comment) = match comment_event(&body) {
        Ok(Some(event)) => event,
        Ok(None) => return StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            return ApiError(StatusCode::BAD_REQUEST, "the payload is not JSON".into())
                .into_response();
        }
    };
    if !link.enrolled(&repo) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let delivery = Delivery::Webhook {
        request_id: request_id(&headers).to_owned(),
    };
    // Answered now, handled after: in the request's span, so its log lines keep `request_id`.
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        on_comment(&shared, &link, &repo, &comment, &delivery).await;
    }));
    StatusCode::ACCEPTED.into_response()
}

/// A verified `push` delivery: a gate run queued, or the reason none was.
async fn push(shared: &Shared, link: &ForgeLink, headers: &HeaderMap, body: &[u8]) -> Response {
    let event = match push_event(body) {
        Ok(Some(event)) => event,
        Ok(None) => {
            return ignored("the push names no repository (repository.full_name) or no ref".into());
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            return ApiError(StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    match on_push(shared, link, &event, request_id(headers)).await {
        Ok(PushOutcome::Queued(run)) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "queued": run.id, "mode": run.mode, "ref": run.reference, "commit": run.commit_sha,
            })),
        )
            .into_response(),
        Ok(PushOutcome::Ignored(why)) => {
            tracing::info!(repo = %event.repo, git_ref = %event.git_ref, why = %why, "push ignored");
            ignored(why)
        }
        Err(e) => {
            tracing::error!(error = %e, "push not queued");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// 200: the delivery was received and nothing is done with it, for this reason.
fn ignored(why: String) -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "ignored": why })),
    )
        .into_response()
}
