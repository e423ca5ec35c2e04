//! An authorized `!testme` becomes a queued run: the pull request and its pushes are read, the
//! commit the comment approves is chosen (never one pushed after the comment), and the run is
//! queued with the settings fixed now and recorded as reporting to that pull request.

use seatrial_forge::approval::{Approval, approved_commit};
use seatrial_store::{Mode, NewRun, Run, Trigger};

use super::Thread;
use crate::serve::metrics::ForgeOperation;
use crate::serve::state::Shared;

/// Queues the run a comment made at `approved_at` asks for (`asked`: the commit it names;
/// `quick`: on the recipe's warm canonical). `None`: nothing was queued (the reason was
/// answered on the PR or logged).
pub async fn enqueue(
    shared: &Shared,
    thread: &Thread<'_>,
    approved_at: &str,
    asked: Option<&str>,
    quick: bool,
) -> Option<Run> {
    let Thread {
        shared: _,
        link,
        repo,
        pr,
        user,
        delivery,
    } = *thread;
    let prefix = &link.config.command;
    // The pull request first, then its pushes: a push between the two reads shows as a push
    // after the comment (refused), never as an unrecorded head that runs.
    let looked_up = async {
        let pull = link.client.pull(repo, pr).await?;
        let pushes = if pull.open && asked.is_none() {
            link.client.pushes(repo, pr).await?
        } else {
            Vec::new()
        };
        Ok::<_, seatrial_forge::ForgeError>((pull, pushes))
    };
    let (pull, pushes) = match looked_up.await {
        Ok(p) => p,
        Err(e) => {
            shared.metrics.forge_error(ForgeOperation::ReadPull);
            tracing::warn!(error = %e, "cannot read the pull request");
            thread
                .tell(&format!(
                    "seatrial could not read this pull request ({e}); nothing was queued. Comment `{prefix}` again later."
                ))
                .await;
            return None;
        }
    };
    let sha = match approved_commit(approved_at, asked, &pull, &pushes) {
        Approval::Run(sha) => sha,
        Approval::Refuse(why) => {
            tracing::info!(repo = %repo, pr, user = %user, why = ?why, "!testme not run");
            thread.tell(&why.explain(prefix)).await;
            return None;
        }
    };
    if quick {
        let key = seatrial_trial::warm::recipe_key(&pull.head_clone_url);
        let warm = seatrial_trial::warm::Warm::new(&shared.config.data_dir);
        if !matches!(warm.load(&key), Ok(Some(_))) {
            thread
                .tell(&format!(
                    "`{prefix} --quick` needs a warm canonical of `{key}` on this server, and there is none; nothing was queued. An operator makes one with `seatrial warm seed <recipe repository>`; `{prefix}` runs a full cold trial."
                ))
                .await;
            return None;
        }
    }
    let enrolled = shared.config.enrolled(&repo.to_string());
    let settings = shared
        .config
        .settings_for(&pull.head_clone_url, enrolled, None);
    let run = shared
        .enqueue(&NewRun {
            reference: Some(sha.clone()),
            repo: Some(repo.to_string()),
            pr_number: Some(pr),
            commit_sha: Some(sha.clone()),
            requested_by: Some(user.to_owned()),
            timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
            recipe_path: settings.recipe_path,
            probe: Some(settings.probe.to_json()),
            note: Some(format!(
                "queued by `{prefix}` of @{user} on {repo}#{pr} ({delivery})"
            )),
            ..NewRun::new(
                pull.head_clone_url.clone(),
                if quick { Mode::Quick } else { Mode::Cold },
                Trigger::Comment,
            )
        })
        .await;
    match run {
        Ok(run) => {
            tracing::info!(run = run.id.0, repo = %repo, pr, user = %user, commit = %sha, "queued from a comment");
            if let Err(e) = shared
                .store
                .add_forge_report(run.id, &repo.to_string(), pr, &sha)
                .await
            {
                tracing::error!(error = %e, "cannot record where the run reports");
            }
            Some(run)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot queue the run");
            None
        }
    }
}
