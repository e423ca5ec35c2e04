//! Reporting back: each run that reports to a pull request gets a commit status and one comment,
//! edited as the run goes. Forge errors are logged and retried on the next pass; they never fail
//! a run.

use std::sync::Arc;
use std::time::Duration;

use seatrial_forge::{RepoName, StatusState};
use seatrial_store::{ForgeReport, Mode, Run, RunState};

use super::ForgeLink;
use crate::serve::metrics::ForgeOperation;
use crate::serve::state::Shared;

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
    let mode = match run.mode {
        Mode::Quick => "quick (lower confidence: a warm copy, not a fresh install)",
        Mode::Cold => "cold (full trial: previous release installed, upgraded to this change)",
        Mode::Gate => "gate (the app's push gate: checks, migrations, deploy)",
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

/// The context of a gate run's commit status.
pub const GATE_CONTEXT: &str = "seatrial/gate";

/// Sets a gate run's commit status (`pending` while it runs, then its verdict), linking to its
/// dashboard page. A forge error is logged (the client already retried it); it never fails the
/// run.
pub async fn gate_status(shared: &Shared, link: &ForgeLink, run: &Run, state: RunState) {
    let (Some(repo), Some(sha)) = (
        run.repo.as_deref().and_then(|r| r.parse::<RepoName>().ok()),
        run.commit_sha.as_deref(),
    ) else {
        return;
    };
    let url = shared
        .config
        .run_url(run.id, &format!("http://{}", shared.config.listen));
    let (status, word) = status_of(state);
    let description = format!(
        "seatrial gate {word} on {}",
        run.reference.as_deref().unwrap_or("(no branch)")
    );
    if let Err(e) = link
        .client
        .set_status(&repo, sha, status, &url, &description, GATE_CONTEXT)
        .await
    {
        shared.metrics.forge_error(ForgeOperation::Status);
        tracing::warn!(run = run.id.0, error = %e, "cannot set the gate's commit status");
    }
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

/// One pass over runs whose PR does not show their current state yet.
pub async fn report_once(shared: &Shared, link: &ForgeLink) {
    let _one = link.reporting.lock().await;
    let pending = match shared.store.pending_forge_reports().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read pending forge reports");
            return;
        }
    };
    for report in pending {
        report_run(shared, link, report).await;
    }
}

/// Sets the run's commit status, then posts or edits its comment; the store remembers what was
/// reported only once both went through.
async fn report_run(shared: &Shared, link: &ForgeLink, report: ForgeReport) {
    let ForgeReport {
        run,
        repo,
        pr_number: pr,
        sha,
        comment_id,
    } = report;
    let Ok(repo) = repo.parse::<RepoName>() else {
        return;
    };
    // The forge needs an absolute link: this listener's when no public URL is configured.
    let url = shared
        .config
        .run_url(run.id, &format!("http://{}", shared.config.listen));
    let (state, word) = status_of(run.state);
    let context = format!("seatrial/{}", run.mode);
    if let Err(e) = link
        .client
        .set_status(
            &repo,
            &sha,
            state,
            &url,
            &format!("seatrial {} trial {word}", run.mode),
            &context,
        )
        .await
    {
        shared.metrics.forge_error(ForgeOperation::Status);
        tracing::warn!(run = run.id.0, error = %e, "cannot set the commit status; will retry");
        return;
    }
    let body = comment_body(shared, &run, &url).await;
    // The run's comment: edited once it exists; before posting it, look for it (a post whose
    // answer was lost may have created it — posting again would show twice).
    let comment_id = match comment_id {
        Some(id) => Some(id),
        None => match find_posted(link, &repo, pr, &url).await {
            Ok(found) => found,
            Err(e) => {
                shared.metrics.forge_error(ForgeOperation::Comment);
                tracing::warn!(run = run.id.0, error = %e, "cannot look for the run's comment; will retry");
                return;
            }
        },
    };
    let posted = match comment_id {
        Some(id) => link
            .client
            .edit_comment(&repo, id, &body)
            .await
            .map(|()| id),
        None => link.client.comment(&repo, pr, &body).await,
    };
    match posted {
        Ok(id) => {
            let _ = shared
                .store
                .mark_forge_reported(run.id, run.state, Some(id))
                .await;
        }
        Err(e) => {
            shared.metrics.forge_error(ForgeOperation::Comment);
            tracing::warn!(run = run.id.0, error = %e, "cannot update the PR comment; will retry");
        }
    }
}
