//! The Gitea/Forgejo API client (one implementation: they share the API) behind the [`Forge`]
//! trait that a GitHub client can implement later. Token auth held in [`Token`]; RFC 5988
//! paging; `ETag` conditional requests; timeouts; retries with backoff on 5xx and 429; redirects
//! never followed (a membership check that redirects is a denial).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

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
    pub head_sha: String,
    /// Clone URL of the **head** repository (a fork for PRs from forks), as the forge gives it.
    pub head_clone_url: String,
    pub head_ref: String,
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
    /// Posts a comment; returns its id.
    async fn comment(&self, repo: &RepoName, number: i64, body: &str) -> Result<i64, ForgeError>;
    async fn edit_comment(&self, repo: &RepoName, id: i64, body: &str) -> Result<(), ForgeError>;
}

/// Gitea and Forgejo.
pub struct Gitea {
    base: String,
    token: Token,
    http: reqwest::Client,
    /// URL → (ETag, body) of the last 200 answer, for `If-None-Match`.
    etags: Mutex<HashMap<String, (String, String)>>,
    /// How many HTTP requests were sent (for the poll benchmark and tests).
    requests: std::sync::atomic::AtomicU64,
    retries: u32,
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
struct RawPull {
    number: i64,
    state: String,
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
            etags: Mutex::new(HashMap::new()),
            requests: std::sync::atomic::AtomicU64::new(0),
            retries: 3,
        })
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

    /// One request with retries on transient failures; returns status, headers and body.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        conditional: bool,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), ForgeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url)
                .header("Authorization", format!("token {}", self.token.expose()))
                .header("Accept", "application/json");
            if conditional
                && let Some((etag, _)) = self.etags.lock().ok().and_then(|m| m.get(url).cloned())
            {
                request = request.header("If-None-Match", etag);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    if status >= 500 || status == 429 {
                        Err(ForgeError::Status {
                            what: what.to_owned(),
                            status,
                            body: text.chars().take(300).collect(),
                        })
                    } else {
                        Ok((status, headers, text))
                    }
                }
                Err(e) => Err(ForgeError::Unreachable {
                    what: what.to_owned(),
                    // reqwest errors name the URL, never the headers: the token stays out.
                    message: e.to_string(),
                }),
            };
            match outcome {
                Err(e) if e.transient() && attempt <= self.retries => {
                    let wait = Duration::from_millis(200 * (1 << (attempt - 1)));
                    tracing::warn!(what, attempt, error = %e, "forge request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// GET with ETag reuse; a 304 gives the cached body.
    async fn get_json(
        &self,
        what: &str,
        url: &str,
    ) -> Result<(String, Option<String>), ForgeError> {
        let (status, headers, text) = self
            .send(what, reqwest::Method::GET, url, None, true)
            .await?;
        let link = headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            304 => {
                let cached = self
                    .etags
                    .lock()
                    .ok()
                    .and_then(|m| m.get(url).map(|(_, b)| b.clone()))
                    .unwrap_or_default();
                Ok((cached, None))
            }
            200 => {
                if let Some(etag) = headers.get("etag").and_then(|v| v.to_str().ok())
                    && let Ok(mut m) = self.etags.lock()
                {
                    m.insert(url.to_owned(), (etag.to_owned(), text.clone()));
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
    ) -> Result<String, ForgeError> {
        let (status, _, text) = self.send(what, method, url, Some(body), false).await?;
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
            open: raw.state == "open",
            head_sha: raw.head.sha,
            head_clone_url,
            head_ref: raw.head.reference,
        })
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
