//! A fake Gitea for tests and benchmarks: an in-process HTTP server with Gitea's JSON shapes and
//! quirks — token auth, `since` = updated since (edited comments come back), RFC 5988 paging with
//! `X-Total-Count` (max 50 a page), `ETag`/304, a 303 redirect for membership when the caller is
//! not an org member, commit statuses answered with `status` (not `state`), the PR timeline with
//! `pull_push` events (Gitea's `PushActionContent` JSON as their `body`, paged by `page`/`limit`
//! without a `Link` header), closed and merged pull requests — and in-memory state that tests
//! drive: `post_comment`, `push`, then `statuses(sha)`. Failures on demand: statuses with
//! `Retry-After`, and a comment created whose answer never arrives in time.

mod routes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, patch, post};

use routes::{create, edit, list_comments, me, member, pull, pull_comments, status, timeline};

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
    const START: i64 = 1_795_478_400; // 2026-11-24T00:00:00Z
    let at = i64::try_from(tick)
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(START.checked_add(t)?).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
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
