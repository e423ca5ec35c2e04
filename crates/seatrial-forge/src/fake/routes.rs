//! The fake's HTTP side: Gitea's routes, answered from the in-memory state with Gitea's shapes
//! and quirks.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{FakeComment, FakePull, FakeStatus, Shared, lock, stamp};

/// Token check, latency and injected failures, shared by every route.
async fn gate(s: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let (latency, fail, ok) = {
        let mut st = lock(s);
        st.requests += 1;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("token "));
        let ok = given == Some(st.token.as_str());
        if !ok {
            st.unauthorized += 1;
        }
        (st.latency, st.fail_next.pop(), ok)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((code, retry_after)) = fail {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, "injected failure").into_response();
        if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(resp);
    }
    if !ok {
        return Err((
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "token is required"})),
        )
            .into_response());
    }
    Ok(())
}

fn user_json(login: &str) -> Value {
    json!({ "id": login.len(), "login": login, "full_name": "", "email": "" })
}

pub(super) async fn me(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = gate(&s, &h).await {
        return r;
    }
    let me = lock(&s).me.clone();
    axum::Json(user_json(&me)).into_response()
}

/// Gitea's `limit` (default 30, at most 50) and 1-based `page` query parameters.
fn paging(q: &HashMap<String, String>) -> (usize, usize) {
    let number = |key: &str| q.get(key).and_then(|v| v.parse::<usize>().ok());
    (
        number("limit").unwrap_or(30).clamp(1, 50),
        number("page").unwrap_or(1).max(1),
    )
}

pub(super) async fn list_comments(
    State(s): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let repo = format!("{o}/{r}");
    let since = q.get("since").cloned().unwrap_or_default();
    let (limit, page) = paging(&q);
    let all: Vec<FakeComment> = lock(&s)
        .comments
        .iter()
        .filter(|c| c.repo == repo && c.updated_at >= since)
        .cloned()
        .collect();
    let total = all.len();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|c| {
            json!({
                "id": c.id,
                "html_url": format!("/{repo}/pulls/{}#issuecomment-{}", c.number, c.id),
                "pull_request_url": format!("/{repo}/pulls/{}", c.number),
                "issue_url": format!("/{repo}/issues/{}", c.number),
                "user": user_json(&c.user),
                "body": c.body,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
            })
        })
        .collect();
    let body = Value::Array(items).to_string();
    let etag = format!("\"{:x}\"", fnv(&body));
    if h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut headers = vec![
        (header::ETAG, etag),
        (header::CONTENT_TYPE, "application/json".to_owned()),
        (
            header::HeaderName::from_static("x-total-count"),
            total.to_string(),
        ),
    ];
    let mut links = Vec::new();
    let origin = lock(&s).url.clone();
    let base = format!("{origin}/api/v1/repos/{repo}/issues/comments?limit={limit}&since={since}");
    if page * limit < total {
        links.push(format!("<{base}&page={}>; rel=\"next\"", page + 1));
        links.push(format!(
            "<{base}&page={}>; rel=\"last\"",
            total.div_ceil(limit)
        ));
    }
    if !links.is_empty() {
        headers.push((header::LINK, links.join(", ")));
    }
    let mut resp = body.into_response();
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) async fn pull(
    State(s): State<Shared>,
    Path((o, r, n)): Path<(String, String, i64)>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let repo = format!("{o}/{r}");
    let found = lock(&s).pulls.get(&repo).and_then(|p| p.get(&n).cloned());
    match found {
        Some(FakePull { head: sha, clone_url, state, merged }) => axum::Json(json!({
            "id": n, "number": n, "state": state, "merged": merged, "title": format!("PR {n}"),
            "head": { "ref": format!("pr-{n}"), "sha": sha, "repo": { "full_name": repo, "clone_url": clone_url } },
            "base": { "ref": "main", "sha": "0".repeat(40), "repo": { "full_name": repo, "clone_url": format!("/{repo}.git") } },
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "not found"}))).into_response(),
    }
}

pub(super) async fn member(
    State(s): State<Shared>,
    Path((org, user)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let (redirect, slow, is) = {
        let st = lock(&s);
        (
            st.redirect_orgs.contains(&org),
            st.slow_orgs.contains(&org),
            st.members.contains(&(org.clone(), user.clone())),
        )
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if redirect {
        return (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                format!("/api/v1/orgs/{org}/public_members/{user}"),
            )],
        )
            .into_response();
    }
    if is {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

pub(super) async fn status(
    State(s): State<Shared>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let st = FakeStatus {
        state: text("state"),
        target_url: text("target_url"),
        description: text("description"),
        context: text("context"),
    };
    if !["pending", "success", "error", "failure", "warning"].contains(&st.state.as_str()) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "invalid state"})),
        )
            .into_response();
    }
    let answer = json!({
        "id": 1, "status": st.state, "target_url": st.target_url,
        "description": st.description, "context": st.context,
    });
    lock(&s).statuses.push((sha, st));
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

pub(super) async fn create(
    State(s): State<Shared>,
    Path((o, r, n)): Path<(String, String, i64)>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let (answer, stall) = {
        let mut st = lock(&s);
        st.next_id += 1;
        st.clock += 1;
        let c = FakeComment {
            id: st.next_id,
            repo: format!("{o}/{r}"),
            number: n,
            user: st.me.clone(),
            body: body["body"].as_str().unwrap_or_default().to_owned(),
            created_at: stamp(st.clock),
            updated_at: stamp(st.clock),
        };
        let answer = json!({ "id": c.id, "body": c.body, "user": user_json(&c.user) });
        let stall = st
            .stall_comment_creation
            .as_ref()
            .filter(|(needle, _)| c.body.contains(needle.as_str()))
            .map(|(_, d)| *d);
        st.comments.push(c);
        (answer, stall)
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `GET /repos/{o}/{r}/issues/{n}/comments`: one PR's comments, no paging (as Gitea).
pub(super) async fn pull_comments(
    State(s): State<Shared>,
    Path((o, r, n)): Path<(String, String, i64)>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let repo = format!("{o}/{r}");
    let items: Vec<Value> = lock(&s)
        .comments
        .iter()
        .filter(|c| c.repo == repo && c.number == n)
        .map(|c| {
            json!({
                "id": c.id,
                "pull_request_url": format!("/{repo}/pulls/{n}"),
                "issue_url": format!("/{repo}/issues/{n}"),
                "user": user_json(&c.user),
                "body": c.body,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
            })
        })
        .collect();
    axum::Json(Value::Array(items)).into_response()
}

/// `GET /repos/{o}/{r}/issues/{n}/timeline`: comments and `pull_push` events, oldest first;
/// `page`/`limit` (max 50), `X-Total-Count` of the page, no `Link` header — as Gitea.
pub(super) async fn timeline(
    State(s): State<Shared>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let repo = format!("{o}/{r}");
    let (limit, page) = paging(&q);
    let mut events: Vec<(String, Value)> = {
        let st = lock(&s);
        let comments = st
            .comments
            .iter()
            .filter(|c| c.repo == repo && c.number == n)
            .map(|c| {
                (
                    c.created_at.clone(),
                    json!({
                        "id": c.id, "type": "comment", "body": c.body,
                        "user": user_json(&c.user),
                        "created_at": c.created_at, "updated_at": c.updated_at,
                    }),
                )
            });
        let pushes = st
            .pushes
            .iter()
            .filter(|p| p.repo == repo && p.number == n)
            .map(|p| {
                let content = json!({
                    "is_force_push": p.force,
                    "commit_ids": p.commit_ids,
                });
                (
                    p.at.clone(),
                    json!({
                        "id": 0, "type": "pull_push", "body": content.to_string(),
                        "user": user_json("pusher"),
                        "created_at": p.at, "updated_at": p.at,
                    }),
                )
            });
        comments.chain(pushes).collect()
    };
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Value> = events
        .into_iter()
        .map(|(_, v)| v)
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let count = items.len().to_string();
    let mut resp = axum::Json(Value::Array(items)).into_response();
    if let Ok(v) = count.parse() {
        resp.headers_mut()
            .insert(header::HeaderName::from_static("x-total-count"), v);
    }
    resp
}

pub(super) async fn edit(
    State(s): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, i64)>,
    h: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let mut st = lock(&s);
    st.clock += 1;
    let now = stamp(st.clock);
    match st.comments.iter_mut().find(|c| c.id == id) {
        Some(c) => {
            c.body = body["body"].as_str().unwrap_or_default().to_owned();
            c.updated_at = now;
            axum::Json(json!({ "id": c.id, "body": c.body })).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
