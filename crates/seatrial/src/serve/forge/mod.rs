//! `!testme` from pull requests, in four steps, one module each:
//!
//! 1. [`poll`]: new comments of every enrolled repository (polling is the primary trigger; the
//!    signed webhook, read by the forge crate, only lowers latency) — each comment id fires at
//!    most once, ever.
//! 2. [`authorize`]: fail-closed — the allowlist, or membership of the repository's owner org.
//! 3. [`enqueue`]: the commit the comment approves (`seatrial_forge::approval`: never one pushed
//!    after it), queued with the settings fixed now.
//! 4. [`report`]: a commit status and one PR comment edited as the run goes (never posted
//!    twice).
//!
//! [`on_comment`] reads as those steps. Pushes to repositories enrolled with `gate = true`
//! queue gate runs ([`push`]); their commit status is set by the worker as the gate runs
//! ([`report::gate_status`]).

pub mod authorize;
pub mod enqueue;
pub mod poll;
pub mod push;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use seatrial_forge::command::{Command, usage};
use seatrial_forge::{Comment, Forge, Gitea, RepoName};

use super::config::ForgeConfig;
use super::metrics::ForgeOperation;
use super::state::Shared;

pub use poll::poll_loop;
pub use report::{report_loop, report_once};

/// The forge side of a server.
pub struct ForgeLink {
    pub config: ForgeConfig,
    pub client: Arc<dyn Forge>,
    /// seatrial's own login (its comments are ignored).
    me: tokio::sync::OnceCell<String>,
    /// One reporting pass at a time, so a run never gets two comments.
    reporting: tokio::sync::Mutex<()>,
}

impl ForgeLink {
    pub fn new(config: ForgeConfig) -> Result<Self, String> {
        let client = Gitea::new(&config.url, config.token.clone(), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            client: Arc::new(client),
            me: tokio::sync::OnceCell::new(),
            reporting: tokio::sync::Mutex::new(()),
        })
    }

    /// The forge's name in the seen-comments table.
    fn key(&self) -> String {
        format!("{}:{}", self.config.kind, self.config.url)
    }

    async fn me(&self) -> Option<String> {
        self.me
            .get_or_try_init(|| self.client.me())
            .await
            .map_err(|e| tracing::warn!(error = %e, "cannot read seatrial's forge account"))
            .ok()
            .cloned()
    }

    /// Whether the webhook may act for `repo` (only enrolled repositories are polled or
    /// answered).
    pub fn enrolled(&self, repo: &RepoName) -> bool {
        self.config.repos.iter().any(|r| &r.name == repo)
    }
}

/// How a comment reached this server; the log line of the run it queues says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Found by [`poll`].
    Polled,
    /// Delivered by the forge's webhook, in the HTTP request with this `X-Request-Id`.
    Webhook { request_id: String },
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Polled => f.write_str("seen by polling"),
            Self::Webhook { request_id } => write!(f, "webhook, request {request_id}"),
        }
    }
}

/// Where answers to one comment go: its pull request, addressed to its author.
pub struct Thread<'a> {
    shared: &'a Shared,
    link: &'a ForgeLink,
    repo: &'a RepoName,
    pr: i64,
    user: &'a str,
    delivery: &'a Delivery,
}

impl Thread<'_> {
    /// Posts `body` on the pull request; a failure is logged (the comment was already seen).
    async fn say(&self, body: String) {
        if let Err(e) = self.link.client.comment(self.repo, self.pr, &body).await {
            self.shared.metrics.forge_error(ForgeOperation::Reply);
            tracing::warn!(repo = %self.repo, pr = self.pr, error = %e, "cannot reply on the pull request");
        }
    }

    /// Posts `message` addressed to the comment's author.
    async fn tell(&self, message: &str) {
        self.say(format!("@{}: {message}", self.user)).await;
    }
}

/// One comment, from a poll or the webhook: the command it holds, then authorize, enqueue and
/// report. A comment id fires at most once, ever; every refusal is answered on the PR.
pub async fn on_comment(
    shared: &Shared,
    link: &ForgeLink,
    repo: &RepoName,
    c: &Comment,
    delivery: &Delivery,
) {
    let prefix = &link.config.command;
    let Some(parsed) = seatrial_forge::parse_comment(&c.body, prefix) else {
        return;
    };
    if link.me().await.as_deref() == Some(c.user.as_str()) {
        return;
    }
    match shared.store.mark_comment_seen(&link.key(), c.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot record a seen comment; not acting on it");
            return;
        }
    }
    let Some(pr) = c.number.filter(|_| c.on_pull) else {
        return;
    };
    let thread = Thread {
        shared,
        link,
        repo,
        pr,
        user: &c.user,
        delivery,
    };
    let (quick, asked) = match parsed {
        Err(e) => {
            thread.tell(&format!("{e}.\n\n{}", usage(prefix))).await;
            return;
        }
        Ok(Command::Help) => {
            thread.say(usage(prefix)).await;
            return;
        }
        Ok(Command::Test { quick, commit }) => (quick, commit),
    };
    if let Err(denied) = authorize::authorize(link, repo, &c.user).await {
        thread.tell(&denied).await;
        return;
    }
    if enqueue::enqueue(shared, &thread, &c.updated_at, asked.as_deref(), quick)
        .await
        .is_some()
    {
        report_once(shared, link).await;
    }
}
