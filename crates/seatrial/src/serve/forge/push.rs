//! A push to a repository enrolled with `gate = true` becomes a queued gate run (mode `gate`,
//! trigger `push`) of the pushed commit; every other push is acknowledged and ignored with the
//! reason, which the webhook's answer carries.

use seatrial_forge::PushEvent;
use seatrial_store::{Mode, NewRun, Run, Trigger};

use super::ForgeLink;
use crate::serve::state::Shared;

/// What became of a push delivery.
pub enum PushOutcome {
    Queued(Box<Run>),
    /// Nothing was queued, and why (answered to the forge).
    Ignored(String),
}

/// Queues the gate run a push asks for, or says why none. `Err`: the store refused the run.
pub async fn on_push(
    shared: &Shared,
    link: &ForgeLink,
    push: &PushEvent,
    request_id: &str,
) -> Result<PushOutcome, String> {
    let repo = push.repo.to_string();
    let Some(enrolled) = link.config.repos.iter().find(|r| r.name == push.repo) else {
        return Ok(PushOutcome::Ignored(format!(
            "{repo} is not enrolled on this server (no [[repos]] entry)"
        )));
    };
    if !enrolled.gate {
        return Ok(PushOutcome::Ignored(format!(
            "{repo} is enrolled without `gate = true`: pushes to it run no gate"
        )));
    }
    let Some(branch) = push.branch() else {
        return Ok(PushOutcome::Ignored(format!(
            "{} is not a branch: the gate runs on pushes to branches only",
            push.git_ref
        )));
    };
    if push.deleted() {
        return Ok(PushOutcome::Ignored(format!(
            "the push deleted branch {branch}: nothing to gate"
        )));
    }
    if push.after.len() < 7 || !push.after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(PushOutcome::Ignored(format!(
            "the push's `after` ({:?}) is not a commit id",
            push.after
        )));
    }
    // The forge's own clone URL for the repository (public repositories: cloned without
    // credentials, like a trial's).
    let clone_url = push
        .clone_url
        .clone()
        .unwrap_or_else(|| format!("{}/{repo}.git", link.config.url.trim_end_matches('/')));
    let settings = shared.config.settings_for(&clone_url, Some(enrolled), None);
    let pusher = (!push.pusher.is_empty()).then(|| push.pusher.clone());
    let run = shared
        .enqueue(&NewRun {
            reference: Some(branch.to_owned()),
            repo: Some(repo.clone()),
            commit_sha: Some(push.after.clone()),
            requested_by: pusher.clone(),
            timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
            recipe_path: enrolled
                .gate_config
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            note: Some(format!(
                "queued by a push{} to {repo} branch {branch} at {} (webhook, request {request_id})",
                pusher.map(|p| format!(" of @{p}")).unwrap_or_default(),
                push.after.get(..10).unwrap_or(&push.after)
            )),
            ..NewRun::new(clone_url, Mode::Gate, Trigger::Push)
        })
        .await
        .map_err(|e| format!("cannot queue the gate run: {e}"))?;
    tracing::info!(run = run.id.0, repo = %repo, branch, commit = %push.after, "gate queued from a push");
    Ok(PushOutcome::Queued(Box::new(run)))
}
