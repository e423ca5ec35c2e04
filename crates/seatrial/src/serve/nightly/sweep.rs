//! The cold sweep: for each enrolled repository (`[[repos]]`), a cold trial of the recipe's
//! latest release that promotes its data to the recipe's warm canonical when it passes — what
//! `seatrial warm seed` does by hand. Each is a run in the store (trigger `schedule`, requested
//! by `nightly`), started at once under this server's lease: the job holds the capacity, so the
//! runs never wait in the queue. Up to `capacity` run side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use seatrial_engine::Engine;
use seatrial_recipe::git;
use seatrial_store::{Mode, NewRun, Trigger};

use crate::serve::config::EnrolledRepo;
use crate::serve::schedule::SweepResult;
use crate::serve::state::Shared;

/// Who the sweep's runs say asked for them.
pub const REQUESTED_BY: &str = "nightly";

/// Sweeps every enrolled repository; one result each, in the config's order.
pub async fn run(
    shared: &Arc<Shared>,
    engine: &Arc<dyn Engine>,
    phase: &(dyn Fn(&str) + Send + Sync),
) -> Vec<SweepResult> {
    let Some(forge) = shared.config.forge.as_ref() else {
        return Vec::new();
    };
    let repos = &forge.repos;
    if repos.is_empty() {
        return Vec::new();
    }
    // Git stops when the server does.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, shutdown) = (stop.clone(), shared.shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = repos.len();
    phase(&format!("cold sweep: 0 of {total} recipes"));
    let base = forge.url.trim_end_matches('/');
    let results = futures_util::stream::iter(repos.clone())
        .map(|repo| {
            let stop = stop.clone();
            let done = &done;
            async move {
                let url = format!("{base}/{}.git", repo.name);
                let result = one(shared, engine, &repo, &url, stop).await;
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                phase(&format!("cold sweep: {n} of {total} recipes"));
                result
            }
        })
        .buffered(shared.config.capacity.max(1))
        .collect()
        .await;
    watcher.abort();
    results
}

/// The sweep of one enrolled repository at `url`.
async fn one(
    shared: &Arc<Shared>,
    engine: &Arc<dyn Engine>,
    repo: &EnrolledRepo,
    url: &str,
    stop: Arc<AtomicBool>,
) -> SweepResult {
    let name = repo.name.to_string();
    let result =
        |release: Option<String>, run: Option<i64>, state: &str, reason: Option<String>| {
            SweepResult {
                repo: name.clone(),
                release,
                run,
                state: state.to_owned(),
                reason,
            }
        };
    if shared.shutdown.is_cancelled() {
        return result(None, None, "skipped", Some("the server shut down".into()));
    }
    if let Some(dir) = &repo.recipe {
        return result(
            None,
            None,
            "skipped",
            Some(format!(
                "the recipe is in {} inside the repository: releases are the repository's tags, so it has no canonical to refresh",
                dir.display()
            )),
        );
    }
    let mirror = mirror_path(&shared.config.data_dir, &name);
    let latest = {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || latest_release(&url, &mirror, stop))
            .await
            .unwrap_or_else(|e| Err(format!("the release lookup panicked: {e}")))
    };
    let (tag, commit) = match latest {
        Ok(Some(latest)) => latest,
        Ok(None) => {
            return result(
                None,
                None,
                "skipped",
                Some("the repository has no release tags (like 1.0.0+1.2.3)".into()),
            );
        }
        Err(e) => {
            tracing::warn!(repo = %name, error = %e, "cold sweep: cannot read the repository's releases");
            return result(None, None, "errored", Some(e));
        }
    };
    let settings = shared.config.settings_for(url, Some(repo), None);
    let new = NewRun {
        reference: Some(tag.clone()),
        repo: Some(name.clone()),
        commit_sha: Some(commit),
        requested_by: Some(REQUESTED_BY.into()),
        timeout_secs: Some(i64::try_from(settings.timeout.as_secs()).unwrap_or(i64::MAX)),
        recipe_path: settings.recipe_path,
        probe: Some(settings.probe.to_json()),
        promote: true,
        ..NewRun::new(url, Mode::Cold, Trigger::Schedule)
    };
    let run = match shared
        .store
        .start(&new, &shared.owner, shared.config.lease)
        .await
    {
        Ok(run) => run,
        Err(e) => {
            tracing::error!(repo = %name, error = %e, "cold sweep: cannot record the run");
            return result(Some(tag), None, "errored", Some(e.to_string()));
        }
    };
    let id = run.id;
    tracing::info!(run = id.0, repo = %name, release = %tag, "cold sweep: trial starts");
    shared.changed(id);
    crate::serve::worker::run_trial(shared, engine, run).await;
    match shared.store.get(id).await {
        Ok(Some(run)) => result(
            Some(tag),
            Some(id.0),
            run.state.as_str(),
            run.reason.clone(),
        ),
        Ok(None) => result(
            Some(tag),
            Some(id.0),
            "errored",
            Some("the run is gone".into()),
        ),
        Err(e) => result(Some(tag), Some(id.0), "errored", Some(e.to_string())),
    }
}

/// seatrial's mirror of an enrolled repository, for its tags: `<data dir>/sweep/<owner>+<name>.git`.
fn mirror_path(data_dir: &std::path::Path, repo: &str) -> PathBuf {
    let safe: String = repo
        .chars()
        .map(|c| match c {
            '/' => '+',
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
            _ => '_',
        })
        .collect();
    data_dir.join("sweep").join(format!("{safe}.git"))
}

/// The newest release (tag, commit) of the repository at `url`, read from a mirror kept up to
/// date under the data directory; `None` when it has no release tags.
fn latest_release(
    url: &str,
    mirror: &std::path::Path,
    stop: Arc<AtomicBool>,
) -> Result<Option<(String, String)>, String> {
    let stop = git::Stop {
        cancel: Some(stop),
        ..git::Stop::default()
    };
    git::mirror(url, mirror, &stop).map_err(|e| e.to_string())?;
    let versions = git::versions(mirror).map_err(|e| e.to_string())?;
    Ok(versions.latest().map(|v| (v.tag.clone(), v.commit.clone())))
}
