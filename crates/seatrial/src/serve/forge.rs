//! `!testme` from pull requests: polling (the primary trigger), the optional signed webhook,
//! fail-closed authorization, the commit a comment approves (`seatrial_forge::approval`: never
//! one pushed after it), and results reported back as a commit status and one PR comment edited
//! as the run goes (never posted twice).

use std::sync::Arc;
use std::time::Duration;

use seatrial_forge::approval::{Approval, approved_commit};
use seatrial_forge::command::{Command, usage};
use seatrial_forge::{Comment, Forge, Gitea, Membership, RepoName, StatusState};
use seatrial_store::{NewRun, Run, RunState};

use super::config::ForgeConfig;
use super::worker::Shared;

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
}

/// A webhook's `issue_comment` payload, as far as seatrial reads it.
pub fn comment_from_hook(payload: &serde_json::Value) -> Option<(RepoName, Comment)> {
    if !matches!(payload["action"].as_str(), Some("created" | "edited")) {
        return None;
    }
    let repo = payload["repository"]["full_name"].as_str()?.parse().ok()?;
    let c = &payload["comment"];
    let comment = Comment {
        id: c["id"].as_i64()?,
        body: c["body"].as_str().unwrap_or_default().to_owned(),
        user: c["user"]["login"].as_str().unwrap_or_default().to_owned(),
        number: payload["issue"]["number"].as_i64(),
        on_pull: payload["is_pull"].as_bool().unwrap_or(false)
            || !payload["issue"]["pull_request"].is_null(),
        updated_at: c["updated_at"]
            .as_str()
            .filter(|t| !t.is_empty())
            .or_else(|| c["created_at"].as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    Some((repo, comment))
}

/// Repositories polled at once.
const POLL_PARALLELISM: usize = 32;

/// Polls every enrolled repository once per interval: one request per repository while nothing
/// is new (ETag), more pages only when there are new comments.
pub async fn poll_loop(shared: Arc<Shared>, link: Arc<ForgeLink>) {
    use futures_util::StreamExt;
    loop {
        let started = std::time::Instant::now();
        // Repositories are polled side by side (bounded), so a slow forge costs one round trip
        // per cycle, not one per repository.
        futures_util::stream::iter(&link.config.repos)
            .for_each_concurrent(POLL_PARALLELISM, |enrolled| {
                let repo = &enrolled.name;
                let (shared, link) = (&shared, &link);
                async move {
                    if let Err(e) = poll_repo(shared, link, repo).await {
                        tracing::warn!(repo = %repo, error = %e, "polling failed; trying again next cycle");
                    }
                }
            })
            .await;
        tracing::debug!(
            repos = link.config.repos.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "poll cycle done"
        );
        tokio::select! {
            () = tokio::time::sleep(link.config.poll_interval) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

pub async fn poll_repo(shared: &Shared, link: &ForgeLink, repo: &RepoName) -> Result<(), String> {
    let name = repo.to_string();
    let cursor = shared
        .store
        .forge_cursor(&name)
        .await
        .map_err(|e| e.to_string())?;
    let comments = link
        .client
        .comments_since(repo, cursor.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let newest = comments
        .iter()
        .map(|c| c.updated_at.clone())
        .max()
        .or_else(|| {
            // Enrolled with no comments at all: any later comment is new.
            cursor.is_none().then(|| "1970-01-01T00:00:00Z".to_owned())
        });
    if cursor.is_none() {
        // A newly enrolled repository: what was asked before enrolment is not run now.
        for c in &comments {
            if seatrial_forge::parse_comment(&c.body, &link.config.command).is_some() {
                let _ = shared.store.mark_comment_seen(&link.key(), c.id).await;
            }
        }
        tracing::info!(repo = %repo, old = comments.len(), "enrolled: existing comments marked as seen");
    } else {
        for c in &comments {
            handle(shared, link, repo, c).await;
        }
    }
    if let Some(newest) = newest.filter(|n| cursor.as_ref().is_none_or(|c| n > c)) {
        shared
            .store
            .set_forge_cursor(&name, &newest)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One comment, from a poll or the webhook. A comment id fires at most once, ever.
pub async fn handle(shared: &Shared, link: &ForgeLink, repo: &RepoName, c: &Comment) {
    let Some(parsed) = seatrial_forge::parse_comment(&c.body, &link.config.command) else {
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
    let Some(number) = c.number.filter(|_| c.on_pull) else {
        return;
    };
    let prefix = &link.config.command;
    let reply = |body: String| async move {
        if let Err(e) = link.client.comment(repo, number, &body).await {
            tracing::warn!(repo = %repo, pr = number, error = %e, "cannot reply on the pull request");
        }
    };
    let (quick, asked) = match parsed {
        Err(e) => {
            reply(format!("@{}: {e}.\n\n{}", c.user, usage(prefix))).await;
            return;
        }
        Ok(Command::Help) => {
            reply(usage(prefix)).await;
            return;
        }
        Ok(Command::Test { quick, commit }) => (quick, commit),
    };
    // Authorization, fail-closed: the allowlist, or membership of the repository's owner org.
    let allowed = if link.config.allow.iter().any(|a| a == &c.user) {
        true
    } else {
        match link.client.membership(&repo.owner, &c.user).await {
            Membership::Member => true,
            Membership::Denied(why) => {
                tracing::info!(repo = %repo, user = %c.user, why = %why, "!testme denied");
                false
            }
        }
    };
    if !allowed {
        reply(format!(
            "@{}: only members of {} (or allowed users) can start seatrial trials; nothing was queued.",
            c.user, repo.owner
        ))
        .await;
        return;
    }
    // The pull request first, then its pushes: a push between the two reads shows as a push
    // after the comment (refused), never as an unrecorded head that runs.
    let looked_up = async {
        let pull = link.client.pull(repo, number).await?;
        let pushes = if pull.open && asked.is_none() {
            link.client.pushes(repo, number).await?
        } else {
            Vec::new()
        };
        Ok::<_, seatrial_forge::ForgeError>((pull, pushes))
    };
    let (pull, pushes) = match looked_up.await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the pull request");
            reply(format!(
                "@{}: seatrial could not read this pull request ({e}); nothing was queued. Comment `{prefix}` again later.",
                c.user
            ))
            .await;
            return;
        }
    };
    let sha = match approved_commit(&c.updated_at, asked.as_deref(), &pull, &pushes) {
        Approval::Run(sha) => sha,
        Approval::Refuse(why) => {
            tracing::info!(repo = %repo, pr = number, user = %c.user, why = ?why, "!testme not run");
            reply(format!("@{}: {}", c.user, why.explain(prefix))).await;
            return;
        }
    };
    if quick {
        let key = seatrial_trial::warm::recipe_key(&pull.head_clone_url);
        let warm = seatrial_trial::warm::Warm::new(&shared.config.data_dir);
        if !matches!(warm.load(&key), Ok(Some(_))) {
            reply(format!(
                "@{}: `{prefix} --quick` needs a warm canonical of `{key}` on this server, and there is none; nothing was queued. An operator makes one with `seatrial warm seed <recipe repository>`; `{prefix}` runs a full cold trial.",
                c.user
            ))
            .await;
            return;
        }
    }
    let enrolled = shared.config.enrolled(&repo.to_string());
    let settings = shared
        .config
        .settings_for(&pull.head_clone_url, enrolled, None);
    let run = shared
        .enqueue(&NewRun {
            recipe: pull.head_clone_url.clone(),
            reference: Some(sha.clone()),
            repo: Some(repo.to_string()),
            pr_number: Some(number),
            commit_sha: Some(sha.clone()),
            mode: if quick { "quick" } else { "cold" }.into(),
            trigger: "comment".into(),
            requested_by: Some(c.user.clone()),
            timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
            recipe_path: settings.recipe_path,
            probe: Some(settings.probe.to_json()),
        })
        .await;
    match run {
        Ok(run) => {
            tracing::info!(run = run.id, repo = %repo, pr = number, user = %c.user, commit = %sha, "queued from a comment");
            if let Err(e) = shared
                .store
                .add_forge_report(run.id, &repo.to_string(), number, &sha)
                .await
            {
                tracing::error!(error = %e, "cannot record where the run reports");
            }
            report_once(shared, link).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot queue the run"),
    }
}

/// Keeps each PR's status and comment in step with its run.
pub async fn report_loop(shared: Arc<Shared>, link: Arc<ForgeLink>) {
    let mut changes = shared.changes.subscribe();
    loop {
        report_once(&shared, &link).await;
        tokio::select! {
            _ = changes.recv() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

fn status_of(state: RunState) -> (StatusState, &'static str) {
    match state {
        RunState::Queued => (StatusState::Pending, "queued"),
        RunState::Running => (StatusState::Pending, "running"),
        RunState::Passed => (StatusState::Success, "passed"),
        RunState::Failed => (StatusState::Failure, "failed"),
        RunState::Errored => (StatusState::Error, "errored"),
        RunState::Cancelled => (StatusState::Error, "cancelled"),
        RunState::TimedOut => (StatusState::Error, "timed out"),
    }
}

async fn comment_body(shared: &Shared, run: &Run, link_url: &str) -> String {
    let mode = if run.mode == "quick" {
        "quick (lower confidence: a warm copy, not a fresh install)"
    } else {
        "cold (full trial: previous release installed, upgraded to this change)"
    };
    let commit = run
        .commit_sha
        .as_deref()
        .map(|c| format!(" — commit `{}`", c.get(..10).unwrap_or(c)))
        .unwrap_or_default();
    let mut body = format!(
        "{}\n**seatrial** run [{}]({link_url}){commit} — mode: {mode}\n\n",
        marker(link_url),
        run.id
    );
    match run.state {
        RunState::Queued => {
            let pos = shared
                .store
                .queue()
                .await
                .ok()
                .and_then(|q| q.iter().position(|r| r.id == run.id))
                .map_or(String::new(), |p| format!(" (position {})", p + 1));
            body.push_str(&format!("⏳ queued{pos}\n"));
        }
        RunState::Running => body.push_str("🚢 running…\n"),
        state => {
            let (_, word) = status_of(state);
            body.push_str(&format!("**{word}**"));
            if let Some(reason) = &run.reason {
                body.push_str(&format!(": {reason}"));
            }
            body.push_str("\n\n| stage | result | time |\n|---|---|---|\n");
            for s in shared.store.stages(run.id).await.unwrap_or_default() {
                body.push_str(&format!(
                    "| {} | {} | {} |\n",
                    s.name,
                    s.result,
                    seatrial_engine::fmt_duration(Duration::from_millis(
                        u64::try_from(s.duration_ms).unwrap_or(0)
                    ))
                ));
            }
        }
    }
    body
}

/// The hidden line that identifies a run's comment on the PR (its dashboard URL is unique to
/// this deployment and run), so a comment whose creation was never confirmed is found, not
/// posted again.
fn marker(run_url: &str) -> String {
    format!("<!-- seatrial-run {run_url} -->")
}

/// The id of this run's comment if seatrial already posted it (an earlier post whose answer
/// was lost). `Err`: the PR's comments could not be read — post nothing this pass.
async fn find_posted(
    link: &ForgeLink,
    repo: &RepoName,
    pr: i64,
    run_url: &str,
) -> Result<Option<i64>, String> {
    let me = link
        .me()
        .await
        .ok_or("seatrial's own forge account is unknown")?;
    let needle = marker(run_url);
    let comments = link
        .client
        .pull_comments(repo, pr)
        .await
        .map_err(|e| e.to_string())?;
    Ok(comments
        .iter()
        .find(|c| c.user == me && c.body.contains(&needle))
        .map(|c| c.id))
}

/// One pass over runs whose PR does not show their current state yet. Forge errors are logged
/// and retried on the next pass; they never fail a run.
pub async fn report_once(shared: &Shared, link: &ForgeLink) {
    let _one = link.reporting.lock().await;
    let pending = match shared.store.pending_forge_reports().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read pending forge reports");
            return;
        }
    };
    for (run, repo, pr, sha, comment_id) in pending {
        let Ok(repo_name) = repo.parse::<RepoName>() else {
            continue;
        };
        let url = format!(
            "{}/runs/{}",
            shared
                .config
                .public_url
                .as_deref()
                .unwrap_or(&format!("http://{}", shared.config.listen))
                .trim_end_matches('/'),
            run.id
        );
        let (state, word) = status_of(run.state);
        let context = format!("seatrial/{}", run.mode);
        if let Err(e) = link
            .client
            .set_status(
                &repo_name,
                &sha,
                state,
                &url,
                &format!("seatrial {} trial {word}", run.mode),
                &context,
            )
            .await
        {
            tracing::warn!(run = run.id, error = %e, "cannot set the commit status; will retry");
            continue;
        }
        let body = comment_body(shared, &run, &url).await;
        // The run's comment: edited once it exists; before posting it, look for it (a post whose
        // answer was lost may have created it — posting again would show twice).
        let comment_id = match comment_id {
            Some(id) => Some(id),
            None => match find_posted(link, &repo_name, pr, &url).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(run = run.id, error = %e, "cannot look for the run's comment; will retry");
                    continue;
                }
            },
        };
        let posted = match comment_id {
            Some(id) => link
                .client
                .edit_comment(&repo_name, id, &body)
                .await
                .map(|()| id),
            None => link.client.comment(&repo_name, pr, &body).await,
        };
        match posted {
            Ok(id) => {
                let _ = shared
                    .store
                    .mark_forge_reported(run.id, run.state, Some(id))
                    .await;
            }
            Err(e) => {
                tracing::warn!(run = run.id, error = %e, "cannot update the PR comment; will retry")
            }
        }
    }
}
