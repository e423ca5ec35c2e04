//! The forge client: what seatrial asks of a forge (the [`Forge`] trait, which a GitHub client
//! can implement later) and the types it answers in. One implementation, [`Gitea`], serves Gitea
//! and Forgejo (they share the API):
//!
//! - `gitea`: the transport — token auth, timeouts, redirects never followed (a membership check
//!   that redirects is a denial), `ETag` conditional GETs, retries.
//! - `retry`: when a failed request may be sent again ([`Replay`]) and how long to wait
//!   (jittered backoff that honours `Retry-After`).
//! - `etag`: the bounded cache of `ETag`s and bodies.
//! - `endpoints`: the API calls, Gitea's JSON shapes, RFC 5988 paging.

mod endpoints;
mod etag;
mod gitea;
mod retry;

use std::fmt;

pub use endpoints::next_link;
pub use etag::EtagCache;
pub use gitea::Gitea;
pub use retry::{MAX_RETRY_AFTER, Replay, retry_after};

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
