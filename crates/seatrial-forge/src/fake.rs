//! A fake Gitea for tests and benchmarks: an in-process HTTP server with Gitea's JSON shapes and
//! quirks — token auth, `since` = updated since (edited comments come back), RFC 5988 paging with
//! `X-Total-Count` (max 50 a page), `ETag`/304, a 303 redirect for membership when the caller is
//! not an org member, commit statuses answered with `status` (not `state`), the PR timeline with
//! `pull_push` events (Gitea's `PushActionContent` JSON as their `body`, paged by `page`/`limit`
//! without a `Link` header), closed and merged pull requests — and in-memory state that tests
//! drive: `post_comment`, `push`, then `statuses(sha)`. Failures on demand: statuses with
//! `Retry-After`, and a comment created whose answer never arrives in time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct FakeComment {
    pub id: i64,
    pub repo: String,
    pub number: i64,
    pub user: String,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A pull request of the fake.
#[derive(Debug, Clone)]
struct FakePull {
    head: String,
    clone_url: String,
    /// `open`, `closed`
    state: String,
    merged: bool,
}

/// A `pull_push` timeline event.
#[derive(Debug, Clone)]
struct FakePush {
    repo: String,
    number: i64,
    at: String,
    commit_ids: Vec<String>,
    force: bool,
}

#[derive(Debug, Clone)]
pub struct FakeStatus {
    pub state: String,
    pub target_url: String,
    pub description: String,
    pub context: String,
}

#[derive(Default)]
struct Inner {
    token: String,
    /// Its own address: Gitea's paging links are absolute.
    url: String,
    me: String,
    /// repo → pulls by number
    pulls: HashMap<String, BTreeMap<i64, FakePull>>,
    comments: Vec<FakeComment>,
    pushes: Vec<FakePush>,
    members: HashSet<(String, String)>,
    /// Orgs where seatrial's account is not a member: membership answers 303.
    redirect_orgs: HashSet<String>,
    /// Orgs whose membership check never answers in time.
    slow_orgs: HashSet<String>,
    statuses: Vec<(String, FakeStatus)>,
    next_id: i64,
    clock: u64,
    latency: Duration,
    /// (status, Retry-After) of the next answers, last first.
    fail_next: Vec<(u16, Option<String>)>,
    /// New comments whose body contains the text: created, then answered only after this long.
    stall_comment_creation: Option<(String, Duration)>,
    requests: u64,
    unauthorized: u64,
}

/// The running fake; stops when dropped.
pub struct FakeForge {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// `2026-11-24T00:00:05Z` for tick 5: a clock tests control (one tick per change).
fn stamp(tick: u64) -> String {
    format!(
        "2026-11-24T{:02}:{:02}:{:02}Z",
        (tick / 3600) % 24,
        (tick / 60) % 60,
        tick % 60
    )
}

impl FakeForge {
    /// Starts on a free local port; `token` is the one API token it accepts.
    pub async fn start(token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            me: "seatrial-bot".into(),
            next_id: 1000,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/api/v1/user", get(me))
            .route("/api/v1/repos/{o}/{r}/issues/comments", get(list_comments))
            .route("/api/v1/repos/{o}/{r}/issues/comments/{id}", patch(edit))
            .route(
                "/api/v1/repos/{o}/{r}/issues/{n}/comments",
                post(create).get(pull_comments),
            )
            .route("/api/v1/repos/{o}/{r}/issues/{n}/timeline", get(timeline))
            .route("/api/v1/repos/{o}/{r}/pulls/{n}", get(pull))
            .route("/api/v1/repos/{o}/{r}/statuses/{sha}", post(status))
            .route("/api/v1/orgs/{org}/members/{user}", get(member))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake forge");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the fake forge's address")
        );
        lock(&inner).url.clone_from(&url);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    pub fn open_pull(&self, repo: &str, number: i64, head_sha: &str, head_clone_url: &str) {
        lock(&self.inner)
            .pulls
            .entry(repo.to_owned())
            .or_default()
            .insert(
                number,
                FakePull {
                    head: head_sha.to_owned(),
                    clone_url: head_clone_url.to_owned(),
                    state: "open".into(),
                    merged: false,
                },
            );
    }

    fn with_pull(&self, repo: &str, number: i64, f: impl FnOnce(&mut FakePull, String)) {
        let mut s = lock(&self.inner);
        s.clock += 1;
        let now = stamp(s.clock);
        if let Some(p) = s.pulls.get_mut(repo).and_then(|p| p.get_mut(&number)) {
            f(p, now);
        }
    }

    /// Someone pushes `commits` (oldest first) to the PR's head branch: the head moves to the
    /// last, and the forge records a `pull_push` event (one clock tick later than anything
    /// before it).
    pub fn push(&self, repo: &str, number: i64, commits: &[&str]) {
        self.record_push(repo, number, commits, false);
    }

    /// A force push to `new_head`: recorded as `[old head, new head]`.
    pub fn force_push(&self, repo: &str, number: i64, new_head: &str) {
        self.record_push(repo, number, &[new_head], true);
    }

    fn record_push(&self, repo: &str, number: i64, commits: &[&str], force: bool) {
        let Some(new_head) = commits.last() else {
            return;
        };
        let mut old = None;
        self.with_pull(repo, number, |p, _| {
            old = Some(std::mem::replace(&mut p.head, (*new_head).to_owned()));
        });
        let mut s = lock(&self.inner);
        let at = stamp(s.clock);
        let commit_ids = match (force, old) {
            (true, Some(old)) => vec![old, (*new_head).to_owned()],
            _ => commits.iter().map(|c| (*c).to_owned()).collect(),
        };
        s.pushes.push(FakePush {
            repo: repo.to_owned(),
            number,
            at,
            commit_ids,
            force,
        });
    }

    /// The head branch moves without the push being on the timeline yet (Gitea records pushes a
    /// moment after the branch moved, from a queue).
    pub fn move_head_unrecorded(&self, repo: &str, number: i64, new_head: &str) {
        self.with_pull(repo, number, |p, _| new_head.clone_into(&mut p.head));
    }

    pub fn close_pull(&self, repo: &str, number: i64) {
        self.with_pull(repo, number, |p, _| p.state = "closed".into());
    }

    pub fn merge_pull(&self, repo: &str, number: i64) {
        self.with_pull(repo, number, |p, _| {
            p.state = "closed".into();
            p.merged = true;
        });
    }

    pub fn add_member(&self, org: &str, user: &str) {
        lock(&self.inner)
            .members
            .insert((org.to_owned(), user.to_owned()));
    }

    /// Membership checks in `org` answer 303 (seatrial's account is not a member there).
    pub fn redirect_membership(&self, org: &str) {
        lock(&self.inner).redirect_orgs.insert(org.to_owned());
    }

    /// Membership checks in `org` take 30 s.
    pub fn stall_membership(&self, org: &str) {
        lock(&self.inner).slow_orgs.insert(org.to_owned());
    }

    /// A user comments on a PR; returns the comment id.
    pub fn post_comment(&self, repo: &str, number: i64, user: &str, body: &str) -> i64 {
        let mut s = lock(&self.inner);
        s.next_id += 1;
        s.clock += 1;
        let c = FakeComment {
            id: s.next_id,
            repo: repo.to_owned(),
            number,
            user: user.to_owned(),
            body: body.to_owned(),
            created_at: stamp(s.clock),
            updated_at: stamp(s.clock),
        };
        s.comments.push(c);
        s.next_id
    }

    /// A user edits a comment (it comes back with `since`).
    pub fn edit_comment(&self, id: i64, body: &str) {
        let mut s = lock(&self.inner);
        s.clock += 1;
        let now = stamp(s.clock);
        if let Some(c) = s.comments.iter_mut().find(|c| c.id == id) {
            c.body = body.to_owned();
            c.updated_at = now;
        }
    }

    pub fn comments(&self, repo: &str, number: i64) -> Vec<FakeComment> {
        lock(&self.inner)
            .comments
            .iter()
            .filter(|c| c.repo == repo && c.number == number)
            .cloned()
            .collect()
    }

    /// Statuses set on `sha`, oldest first.
    pub fn statuses(&self, sha: &str) -> Vec<FakeStatus> {
        lock(&self.inner)
            .statuses
            .iter()
            .filter(|(s, _)| s == sha)
            .map(|(_, st)| st.clone())
            .collect()
    }

    /// Every answer waits this long first.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.inner).latency = d;
    }

    /// The next requests answer these statuses (e.g. 502, 429) before normal service resumes.
    pub fn fail_next(&self, statuses: &[u16]) {
        lock(&self.inner).fail_next = statuses.iter().rev().map(|s| (*s, None)).collect();
    }

    /// The next request answers `status` with this `Retry-After` (seconds or an HTTP date).
    pub fn fail_next_with_retry_after(&self, status: u16, retry_after: &str) {
        lock(&self.inner).fail_next = vec![(status, Some(retry_after.to_owned()))];
    }

    /// From now on, a new comment whose body contains `needle` (`""`: any) is created at once but
    /// answered only after `d` — a client that gives up before sees a network error although the
    /// comment exists.
    pub fn stall_comment_creation(&self, needle: &str, d: Duration) {
        lock(&self.inner).stall_comment_creation = Some((needle.to_owned(), d));
    }

    pub fn stop_stalling(&self) {
        lock(&self.inner).stall_comment_creation = None;
    }

    /// Requests received (authorized or not).
    pub fn requests(&self) -> u64 {
        lock(&self.inner).requests
    }

    pub fn unauthorized(&self) -> u64 {
        lock(&self.inner).unauthorized
    }

    /// The login seatrial's token belongs to.
    pub fn me(&self) -> String {
        lock(&self.inner).me.clone()
    }
}

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

async fn me(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = gate(&s, &h).await {
        return r;
    }
    let me = lock(&s).me.clone();
    axum::Json(user_json(&me)).into_response()
}

async fn list_comments(
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
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 50);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
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

async fn pull(
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

async fn member(
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

async fn status(
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

async fn create(
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
async fn pull_comments(
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
async fn timeline(
    State(s): State<Shared>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = gate(&s, &h).await {
        return resp;
    }
    let repo = format!("{o}/{r}");
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 50);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
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

async fn edit(
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
