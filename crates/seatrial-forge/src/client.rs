//! The Gitea/Forgejo API client (one implementation: they share the API) behind the [`Forge`]
//! trait that a GitHub client can implement later. Token auth held in [`Token`]; RFC 5988
//! paging; `ETag` conditional requests with a bounded cache; timeouts; retries with jittered
//! backoff that honour `Retry-After` and never repeat a request whose repetition would show (see
//! [`Replay`]); redirects never followed (a membership check that redirects is a denial).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use serde::Deserialize;

/// The forge API token. `Debug`/`Display` never show it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(t: impl Into<String>) -> Self {
        Self(t.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl std::str::FromStr for RepoName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok(Self {
                owner: o.to_owned(),
                name: n.to_owned(),
            }),
            _ => Err(format!("{s:?} is not a repository name: write owner/name")),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: i64,
    pub body: String,
    pub user: String,
    /// The PR (or issue) number the comment belongs to.
    pub number: Option<i64>,
    /// True when it was made on a pull request.
    pub on_pull: bool,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: i64,
    pub open: bool,
    /// Merged (a merged pull request is also closed).
    pub merged: bool,
    pub head_sha: String,
    /// Clone URL of the **head** repository (a fork for PRs from forks), as the forge gives it.
    pub head_clone_url: String,
    pub head_ref: String,
}

/// A push to a pull request's head, as the forge recorded it on the PR's timeline (Gitea's
/// `pull_push` event): when the forge recorded it, and the commits it brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The forge's own timestamp of the record (RFC 3339), not a commit date (those are chosen by
    /// whoever made the commit).
    pub recorded_at: String,
    /// Force push: `[old head, new head]`; else the new commits, oldest first. The last is the
    /// head after the push either way.
    pub commit_ids: Vec<String>,
    pub force: bool,
}

impl Push {
    /// The head of the pull request right after this push.
    pub fn new_head(&self) -> Option<&str> {
        self.commit_ids.last().map(String::as_str)
    }
}

/// A commit status state, as Gitea names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{what}: cannot reach the forge: {message}")]
    Unreachable { what: String, message: String },
    #[error("{what}: the forge answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: unexpected answer: {message}")]
    Decode { what: String, message: String },
}

impl ForgeError {
    /// Worth trying again later (network trouble, 5xx, 429).
    pub fn transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Decode { .. } => false,
        }
    }
}

/// Why a membership check denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    Member,
    /// Not a member, or the check could not say so (redirect, error, timeout): fail closed.
    Denied(String),
}

/// What seatrial asks of a forge.
#[async_trait::async_trait]
pub trait Forge: Send + Sync {
    /// The account seatrial acts as (its own comments are ignored).
    async fn me(&self) -> Result<String, ForgeError>;
    /// Every comment of the repository updated since `since` (RFC 3339), all pages, oldest first.
    async fn comments_since(
        &self,
        repo: &RepoName,
        since: Option<&str>,
    ) -> Result<Vec<Comment>, ForgeError>;
    async fn pull(&self, repo: &RepoName, number: i64) -> Result<PullRequest, ForgeError>;
    /// The pushes recorded on the pull request's timeline, oldest first.
    async fn pushes(&self, repo: &RepoName, number: i64) -> Result<Vec<Push>, ForgeError>;
    /// The comments of one pull request (or issue), oldest first.
    async fn pull_comments(&self, repo: &RepoName, number: i64)
    -> Result<Vec<Comment>, ForgeError>;
    /// Member iff the forge answers 204; anything else denies.
    async fn membership(&self, org: &str, user: &str) -> Membership;
    async fn set_status(
        &self,
        repo: &RepoName,
        sha: &str,
        state: StatusState,
        target_url: &str,
        description: &str,
        context: &str,
    ) -> Result<(), ForgeError>;
    /// Posts a comment; returns its id. Never sent twice by the client: after an error the
    /// comment may or may not exist (look for it before posting again).
    async fn comment(&self, repo: &RepoName, number: i64, body: &str) -> Result<i64, ForgeError>;
    async fn edit_comment(&self, repo: &RepoName, id: i64, body: &str) -> Result<(), ForgeError>;
}

/// Gitea and Forgejo.
pub struct Gitea {
    base: String,
    token: Token,
    http: reqwest::Client,
    /// URL → (ETag, body) of recent 200 answers, for `If-None-Match`; bounded.
    etags: Mutex<EtagCache>,
    /// How many HTTP requests were sent (for the poll benchmark and tests).
    requests: std::sync::atomic::AtomicU64,
    /// Retries after the first attempt, for requests that may be retried.
    retries: usize,
    /// The first backoff delay (doubling, jittered, at most [`MAX_BACKOFF`]).
    backoff: Duration,
}

/// The longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest `Retry-After` the client waits out inside one call. A forge asking for longer
/// gets the error back instead; the callers try again on their next cycle (poll, report pass).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a request may be sent again after it failed: the rule that keeps a retry from
/// becoming a visible duplicate.
///
/// - [`Replay::Safe`]: sending it twice has the effect of sending it once — every GET, the PATCH
///   that sets a comment's body, the POST that sets a commit status (the latest status per
///   context wins). Retried on network errors, timeouts, 5xx and 429.
/// - [`Replay::Once`]: the POST that creates a comment. A second copy would be a second comment
///   on the pull request. After a network error or a timeout the request may have reached the
///   forge and been processed, so it is **not** retried; nor after 500, 502 or 504 (the forge or
///   its proxy may have created the comment before failing). It is retried only when the request
///   provably did not create anything: the connection could not be opened at all, or the answer
///   was 429 or 503 (refused before processing: rate limit, maintenance, overload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Safe,
    Once,
}

/// One failed attempt: the error, and what it says about trying again.
struct Attempt {
    error: ForgeError,
    /// The request may have been processed (a network error after connecting, or a 5xx).
    maybe_processed: bool,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn may_retry(&self, replay: Replay) -> bool {
        self.transient && (replay == Replay::Safe || !self.maybe_processed)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), as a wait from `now`.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt: what the forge asked for (with a little jitter, so clients
/// told the same time do not return at once), else the backoff's own (jittered) delay. `None`:
/// stop trying (retries used up, or the forge asked for longer than [`MAX_RETRY_AFTER`]).
fn next_wait(asked: Option<Duration>, backoff: Option<Duration>) -> Option<Duration> {
    let backoff = backoff?;
    match asked {
        None => Some(backoff),
        Some(a) if a > MAX_RETRY_AFTER => None,
        Some(a) => {
            let spread = (a / 10).max(Duration::from_millis(50));
            let jitter = spread.mul_f64(fastrand::f64());
            Some(a + jitter)
        }
    }
}

/// A least-recently-used cache of (ETag, body) by URL, bounded in entries and in bytes, so a
/// server polling many repositories for months holds a fixed amount of memory.
pub struct EtagCache {
    entries: lru::LruCache<String, (String, String)>,
    bytes: usize,
    max_bytes: usize,
}

impl EtagCache {
    pub fn new(max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            entries: lru::LruCache::new(max_entries),
            bytes: 0,
            max_bytes,
        }
    }

    fn size(url: &str, etag: &str, body: &str) -> usize {
        url.len() + etag.len() + body.len()
    }

    fn etag(&mut self, url: &str) -> Option<String> {
        self.entries.get(url).map(|(e, _)| e.clone())
    }

    fn body(&mut self, url: &str) -> Option<String> {
        self.entries.get(url).map(|(_, b)| b.clone())
    }

    fn insert(&mut self, url: &str, etag: &str, body: &str) {
        let size = Self::size(url, etag, body);
        if let Some((e, b)) = self.entries.pop(url) {
            self.bytes -= Self::size(url, &e, &b);
        }
        if size > self.max_bytes {
            return;
        }
        if let Some((old_url, (e, b))) = self
            .entries
            .push(url.to_owned(), (etag.to_owned(), body.to_owned()))
        {
            self.bytes -= Self::size(&old_url, &e, &b);
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((u, (e, b))) => self.bytes -= Self::size(&u, &e, &b),
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (URLs, ETags, bodies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct RawComment {
    id: i64,
    #[serde(default)]
    body: String,
    user: Option<User>,
    #[serde(default)]
    pull_request_url: String,
    #[serde(default)]
    issue_url: String,
    #[serde(default)]
    updated_at: String,
}

#[derive(Deserialize)]
struct RawRepo {
    clone_url: Option<String>,
}

#[derive(Deserialize)]
struct RawBranch {
    #[serde(rename = "ref", default)]
    reference: String,
    sha: String,
    repo: Option<RawRepo>,
}

#[derive(Deserialize)]
struct RawTimelineEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    created_at: String,
}

/// The body of a `pull_push` timeline event (Gitea's `PushActionContent`).
#[derive(Deserialize)]
struct RawPushContent {
    #[serde(default)]
    is_force_push: bool,
    #[serde(default)]
    commit_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawPull {
    number: i64,
    state: String,
    #[serde(default)]
    merged: bool,
    head: RawBranch,
    base: Option<RawBranch>,
}

/// The `rel="next"` target of an RFC 5988 `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

fn number_from(url: &str) -> Option<i64> {
    url.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

impl Gitea {
    /// `base` is the forge's address (`https://git.example.org`); the API is under `/api/v1`.
    pub fn new(base: &str, token: Token, timeout: Duration) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("seatrial/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ForgeError::Unreachable {
                what: "building the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: format!("{}/api/v1", base.trim_end_matches('/')),
            token,
            http,
            etags: Mutex::new(EtagCache::new(
                NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
                32 * 1024 * 1024,
            )),
            requests: std::sync::atomic::AtomicU64::new(0),
            retries: 3,
            backoff: Duration::from_millis(200),
        })
    }

    /// Bounds the `ETag` cache (default 1024 answers, 32 MiB).
    pub fn with_etag_cache(self, max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            etags: Mutex::new(EtagCache::new(max_entries, max_bytes)),
            ..self
        }
    }

    /// Sets how many times a failed request that may be retried is retried (default 3), and the
    /// first backoff delay (default 200 ms; doubling, jittered, at most 5 s).
    pub fn with_retries(self, retries: usize, first_backoff: Duration) -> Self {
        Self {
            retries,
            backoff: first_backoff,
            ..self
        }
    }

    /// (entries, bytes) held by the `ETag` cache.
    pub fn etag_cache_size(&self) -> (usize, usize) {
        self.etags
            .lock()
            .map(|c| (c.len(), c.bytes()))
            .unwrap_or_default()
    }

    /// A link as the forge gave it, made absolute against the forge's address.
    fn absolute(&self, link: &str) -> String {
        if link.starts_with('/') {
            let origin = self
                .base
                .find("://")
                .and_then(|i| {
                    self.base[i + 3..]
                        .find('/')
                        .map(|j| &self.base[..i + 3 + j])
                })
                .unwrap_or(&self.base);
            format!("{origin}{link}")
        } else {
            link.to_owned()
        }
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One request, retried as [`Replay`] allows; returns status, headers and body.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        conditional: bool,
        replay: Replay,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), ForgeError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.backoff)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(self.retries)
            .with_jitter();
        let attempt = || self.attempt(what, method.clone(), url, body, conditional);
        attempt
            .retry(backoff.build())
            .when(|a: &Attempt| a.may_retry(replay))
            .adjust(|a: &Attempt, wait| next_wait(a.retry_after, wait))
            .notify(|a: &Attempt, wait| {
                tracing::warn!(what, error = %a.error, wait_ms = wait.as_millis() as u64, "forge request failed; retrying");
            })
            .await
            .map_err(|a| a.error)
    }

    /// One attempt of a request.
    async fn attempt(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        conditional: bool,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), Attempt> {
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", format!("token {}", self.token.expose()))
            .header("Accept", "application/json");
        if conditional && let Some(etag) = self.etags.lock().ok().and_then(|mut m| m.etag(url)) {
            request = request.header("If-None-Match", etag);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 || status == 429 {
                    Err(Attempt {
                        error: ForgeError::Status {
                            what: what.to_owned(),
                            status,
                            body: text.chars().take(300).collect(),
                        },
                        maybe_processed: !matches!(status, 429 | 503),
                        transient: true,
                        retry_after: headers
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| retry_after(v, std::time::SystemTime::now())),
                    })
                } else {
                    Ok((status, headers, text))
                }
            }
            Err(e) => Err(Attempt {
                // Only a failed connect proves the forge never saw the request.
                maybe_processed: !e.is_connect(),
                transient: true,
                retry_after: None,
                error: ForgeError::Unreachable {
                    what: what.to_owned(),
                    // reqwest errors name the URL, never the headers: the token stays out.
                    message: e.to_string(),
                },
            }),
        }
    }

    /// GET with ETag reuse; a 304 gives the cached body.
    async fn get_json(
        &self,
        what: &str,
        url: &str,
    ) -> Result<(String, Option<String>), ForgeError> {
        let (mut status, mut headers, mut text) = self
            .send(what, reqwest::Method::GET, url, None, true, Replay::Safe)
            .await?;
        if status == 304 {
            match self.etags.lock().ok().and_then(|mut m| m.body(url)) {
                Some(cached) => return Ok((cached, None)),
                // Evicted between the request and its answer: ask again without the ETag.
                None => {
                    (status, headers, text) = self
                        .send(what, reqwest::Method::GET, url, None, false, Replay::Safe)
                        .await?;
                }
            }
        }
        let link = headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            200 => {
                if let Some(etag) = headers.get("etag").and_then(|v| v.to_str().ok())
                    && let Ok(mut m) = self.etags.lock()
                {
                    m.insert(url, etag, &text);
                }
                Ok((text, link))
            }
            other => Err(ForgeError::Status {
                what: what.to_owned(),
                status: other,
                body: text.chars().take(300).collect(),
            }),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, ForgeError> {
        serde_json::from_str(text).map_err(|e| ForgeError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    async fn write(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: &serde_json::Value,
        ok: &[u16],
        replay: Replay,
    ) -> Result<String, ForgeError> {
        let (status, _, text) = self
            .send(what, method, url, Some(body), false, replay)
            .await?;
        if ok.contains(&status) {
            Ok(text)
        } else {
            Err(ForgeError::Status {
                what: what.to_owned(),
                status,
                body: text.chars().take(300).collect(),
            })
        }
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

#[async_trait::async_trait]
impl Forge for Gitea {
    async fn me(&self) -> Result<String, ForgeError> {
        let what = "reading seatrial's own forge account";
        let (text, _) = self.get_json(what, &format!("{}/user", self.base)).await?;
        Ok(Self::decode::<User>(what, &text)?.login)
    }

    async fn comments_since(
        &self,
        repo: &RepoName,
        since: Option<&str>,
    ) -> Result<Vec<Comment>, ForgeError> {
        let what = format!("listing the comments of {repo}");
        let mut url = format!(
            "{}/repos/{}/{}/issues/comments?limit=50",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        if let Some(s) = since {
            url.push_str(&format!("&since={}", enc(s)));
        }
        let mut out = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            let (text, link) = self.get_json(&what, &url).await?;
            let page: Vec<RawComment> = Self::decode(&what, &text)?;
            out.extend(page.into_iter().map(|c| Comment {
                id: c.id,
                body: c.body,
                user: c.user.map(|u| u.login).unwrap_or_default(),
                on_pull: !c.pull_request_url.is_empty(),
                number: number_from(if c.pull_request_url.is_empty() {
                    &c.issue_url
                } else {
                    &c.pull_request_url
                }),
                updated_at: c.updated_at,
            }));
            next = link
                .as_deref()
                .and_then(next_link)
                .map(|n| self.absolute(&n));
        }
        Ok(out)
    }

    async fn pull(&self, repo: &RepoName, number: i64) -> Result<PullRequest, ForgeError> {
        let what = format!("reading pull request {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/pulls/{number}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let (text, _) = self.get_json(&what, &url).await?;
        let raw: RawPull = Self::decode(&what, &text)?;
        let head_clone_url = raw
            .head
            .repo
            .as_ref()
            .and_then(|r| r.clone_url.clone())
            .or_else(|| raw.base.as_ref()?.repo.as_ref()?.clone_url.clone())
            .ok_or_else(|| ForgeError::Decode {
                what: what.clone(),
                message: "the pull request names no head repository clone URL".into(),
            })?;
        Ok(PullRequest {
            number: raw.number,
            open: raw.state == "open" && !raw.merged,
            merged: raw.merged,
            head_sha: raw.head.sha,
            head_clone_url,
            head_ref: raw.head.reference,
        })
    }

    async fn pushes(&self, repo: &RepoName, number: i64) -> Result<Vec<Push>, ForgeError> {
        let what = format!("reading the timeline of {repo}#{number}");
        // Gitea pages the timeline with `page`/`limit` and no `Link` header: read pages until
        // one comes back short.
        const LIMIT: usize = 50;
        let mut out = Vec::new();
        for page in 1.. {
            let url = format!(
                "{}/repos/{}/{}/issues/{number}/timeline?limit={LIMIT}&page={page}",
                self.base,
                enc(&repo.owner),
                enc(&repo.name)
            );
            let (text, _) = self.get_json(&what, &url).await?;
            let events: Vec<RawTimelineEvent> = Self::decode(&what, &text)?;
            let n = events.len();
            for e in events.into_iter().filter(|e| e.kind == "pull_push") {
                let content: RawPushContent = Self::decode(&what, &e.body)?;
                out.push(Push {
                    recorded_at: e.created_at,
                    commit_ids: content.commit_ids,
                    force: content.is_force_push,
                });
            }
            if n < LIMIT || page >= 200 {
                break;
            }
        }
        Ok(out)
    }

    async fn pull_comments(
        &self,
        repo: &RepoName,
        number: i64,
    ) -> Result<Vec<Comment>, ForgeError> {
        let what = format!("listing the comments of {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/issues/{number}/comments",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let (text, _) = self.get_json(&what, &url).await?;
        let raw: Vec<RawComment> = Self::decode(&what, &text)?;
        Ok(raw
            .into_iter()
            .map(|c| Comment {
                id: c.id,
                body: c.body,
                user: c.user.map(|u| u.login).unwrap_or_default(),
                number: Some(number),
                on_pull: !c.pull_request_url.is_empty(),
                updated_at: c.updated_at,
            })
            .collect())
    }

    async fn membership(&self, org: &str, user: &str) -> Membership {
        let url = format!("{}/orgs/{}/members/{}", self.base, enc(org), enc(user));
        match self
            .send(
                "checking organisation membership",
                reqwest::Method::GET,
                &url,
                None,
                false,
                Replay::Safe,
            )
            .await
        {
            Ok((204, _, _)) => Membership::Member,
            Ok((status, _, _)) => Membership::Denied(format!(
                "{user} is not a member of {org} (the forge answered {status})"
            )),
            Err(e) => Membership::Denied(format!("the membership check failed: {e}")),
        }
    }

    async fn set_status(
        &self,
        repo: &RepoName,
        sha: &str,
        state: StatusState,
        target_url: &str,
        description: &str,
        context: &str,
    ) -> Result<(), ForgeError> {
        let url = format!(
            "{}/repos/{}/{}/statuses/{}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name),
            enc(sha)
        );
        let body = serde_json::json!({
            "state": state.as_str(),
            "target_url": target_url,
            "description": description.chars().take(140).collect::<String>(),
            "context": context,
        });
        self.write(
            &format!("setting the commit status of {repo}@{sha}"),
            reqwest::Method::POST,
            &url,
            &body,
            &[200, 201],
            Replay::Safe,
        )
        .await
        .map(|_| ())
    }

    async fn comment(&self, repo: &RepoName, number: i64, body: &str) -> Result<i64, ForgeError> {
        let what = format!("commenting on {repo}#{number}");
        let url = format!(
            "{}/repos/{}/{}/issues/{number}/comments",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        let text = self
            .write(
                &what,
                reqwest::Method::POST,
                &url,
                &serde_json::json!({ "body": body }),
                &[200, 201],
                Replay::Once,
            )
            .await?;
        #[derive(Deserialize)]
        struct Created {
            id: i64,
        }
        Ok(Self::decode::<Created>(&what, &text)?.id)
    }

    async fn edit_comment(&self, repo: &RepoName, id: i64, body: &str) -> Result<(), ForgeError> {
        let url = format!(
            "{}/repos/{}/{}/issues/comments/{id}",
            self.base,
            enc(&repo.owner),
            enc(&repo.name)
        );
        self.write(
            &format!("editing comment {id} on {repo}"),
            reqwest::Method::PATCH,
            &url,
            &serde_json::json!({ "body": body }),
            &[200, 201],
            Replay::Safe,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_and_names() {
        let link = "<https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=2>; rel=\"next\", <https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=4>; rel=\"last\"";
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://git.example.org/api/v1/repos/o/r/issues/comments?limit=50&page=2")
        );
        assert_eq!(next_link("<x>; rel=\"prev\""), None);
        assert_eq!(number_from("https://g/o/r/pulls/12"), Some(12));
        assert!("owner/name".parse::<RepoName>().is_ok());
        assert!("owner".parse::<RepoName>().is_err());
        assert!("a/b/c".parse::<RepoName>().is_err());
        assert_eq!(format!("{:?}", Token::new("s3cret")), "Token(***)");
    }
}
