//! One claimed run, tried exactly as `seatrial test` tries a recipe: with the settings fixed
//! when it was queued, its lease kept alive by heartbeats, its timeout and cancellation
//! enforced, and its verdict recorded (unless another server took the run over).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatrial_engine::{Engine, fmt_duration};
use seatrial_store::{Run, RunId, RunState};
use seatrial_trial::settings::Overrides;
use seatrial_trial::{StageResult, TrialConfig, TrialResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::recorder::{Event, Recorder, stored_result, write_events};
use crate::serve::config::StoredProbe;
use crate::serve::state::{Shared, Stop, StopReason, stop_trial};

/// The recipe directory and probe settings a run is tried with.
fn run_settings(shared: &Shared, run: &Run) -> Result<(Option<PathBuf>, Overrides), String> {
    match &run.probe {
        Some(json) => Ok((
            run.recipe_path.as_ref().map(PathBuf::from),
            StoredProbe::from_json(json)?.to_overrides()?,
        )),
        None => {
            let enrolled = run.repo.as_deref().and_then(|r| shared.config.enrolled(r));
            let s = shared.config.settings_for(&run.recipe, enrolled, None);
            Ok((s.recipe_path.map(PathBuf::from), s.probe.to_overrides()?))
        }
    }
}

/// Keeps the lease alive every third of it, and stops the trial when its timeout is reached,
/// its lease was lost, or a cancel was asked through another server.
fn spawn_guard(
    shared: &Arc<Shared>,
    id: RunId,
    timeout: Duration,
    cancel: &CancellationToken,
    stop: &StopReason,
) -> tokio::task::JoinHandle<()> {
    let (shared, cancel, stop) = (shared.clone(), cancel.clone(), stop.clone());
    let every = (shared.config.lease / 3).max(Duration::from_millis(500));
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    stop_trial(&cancel, &stop, Stop::TimedOut);
                    return;
                }
                () = tokio::time::sleep(every) => {}
                () = cancel.cancelled() => return,
            }
            match shared
                .store
                .heartbeat(id, &shared.owner, shared.config.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    stop_trial(&cancel, &stop, Stop::LeaseLost);
                    return;
                }
                Err(e) => tracing::warn!(run = id.0, error = %e, "heartbeat failed; retrying"),
            }
            // A cancel asked through another server shows in the store.
            if let Ok(Some(r)) = shared.store.get(id).await
                && r.cancel_requested
            {
                stop_trial(&cancel, &stop, Stop::Cancelled);
                return;
            }
        }
    })
}

/// Runs one claimed run to its end and records the verdict.
pub async fn run(shared: &Arc<Shared>, engine: &Arc<dyn Engine>, run: Run) {
    let id = run.id;
    // The run's own settings, fixed when it was queued (runs queued before settings were stored
    // get this server's). Unreadable ones end the run: it never runs with other settings.
    let (subdir, overrides) = match run_settings(shared, &run) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "not running: its stored settings are unreadable");
            let _ = shared.store.append_log(id, &e).await;
            let _ = shared
                .store
                .finish(id, &shared.owner, RunState::Errored, Some(&e))
                .await;
            shared.changed(id);
            return;
        }
    };
    let started = Instant::now();
    let remote = run.recipe.contains("://") || run.recipe.starts_with("git@");
    let reference = run
        .reference
        .clone()
        .or_else(|| remote.then(|| "HEAD".to_owned()));
    // The trial's own run id (in stack names and labels), not the store's `RunId`.
    let (trial_run_id, mut stack) = seatrial_trial::identity(&run.recipe, reference.as_deref());
    let mode = match run.mode {
        seatrial_store::Mode::Quick => seatrial_trial::TrialMode::Quick,
        // Gate runs never come here (the queue runner hands them to `gate::run`).
        seatrial_store::Mode::Cold | seatrial_store::Mode::Gate => seatrial_trial::TrialMode::Cold,
    };
    if run.promote {
        // A promotion keeps the app as the recipe's canonical, under a canonical stack name.
        stack = seatrial_trial::warm::canonical_stack(
            &seatrial_trial::warm::recipe_key(&run.recipe),
            &trial_run_id,
        );
    }
    if mode == seatrial_trial::TrialMode::Quick {
        // A quick run uses the recipe's canonical stack; without one the trial's prepare says
        // so (the canonical may have been dropped since the run was queued).
        let warm = seatrial_trial::warm::Warm::new(&shared.config.data_dir);
        if let Ok(Some(c)) = warm.load(&seatrial_trial::warm::recipe_key(&run.recipe)) {
            stack = c.stack;
        }
    }
    tracing::info!(stack = %stack, "trial starts");
    if let Err(e) = shared.store.set_stack(id, &stack).await {
        tracing::error!(error = %e, "cannot record the run's stack");
    }
    let (running, recorder) = Running::start(
        shared,
        &run,
        format!(
            "attempt {} on {}: {} {} as stack {stack} (trial {trial_run_id}{})",
            run.attempt,
            shared.owner,
            run.recipe,
            reference.as_deref().unwrap_or("(as it is)"),
            if run.promote {
                "; promotes its data to the recipe's canonical when it passes"
            } else {
                ""
            }
        ),
    );

    let config = TrialConfig {
        recipe: run.recipe.clone(),
        subdir,
        reference,
        base_domain: shared.config.base_domain.clone(),
        overrides,
        keep: false,
        mode,
        promote: run.promote,
        data_dir: shared.config.data_dir.clone(),
        janitor_max_age: shared.config.longest_run_timeout() + shared.config.lease,
        liveness: Some(shared.liveness.clone()),
        run_id: trial_run_id,
        stack,
        // Forge and API runs are someone else's recipe: host access only as the config permits.
        // Unlike the run's settings, permits are this server's current word (read now, not at
        // enqueue), so an operator who revokes one is obeyed by runs already queued.
        trust: seatrial_trial::Trust::Untrusted {
            permit: match (
                run.repo.as_deref().and_then(|r| shared.config.enrolled(r)),
                &run.repo,
            ) {
                (Some(e), _) => e.permit.clone(),
                (None, Some(_)) => Vec::new(), // a repository no longer enrolled
                (None, None) => shared.config.api_permit.clone(),
            },
        },
    };
    let report =
        seatrial_trial::run(engine.as_ref(), config, &recorder, running.cancel.clone()).await;
    let (stop, timeout) = running.end(shared, recorder).await;
    conclude(
        shared,
        &run,
        &stop,
        report.result,
        &report.stages,
        timeout,
        started,
        "trial",
    )
    .await;
}

/// A claimed run while it runs: its cancel token and stop reason (tracked by the server), the
/// writer of its events to the store, and the guard keeping its lease and timeout.
pub(super) struct Running {
    id: RunId,
    pub cancel: CancellationToken,
    stop: StopReason,
    timeout: Duration,
    writer: tokio::task::JoinHandle<()>,
    guard: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts tracking `run`, writes `first_line` to its log and starts its guard; events sent
    /// to the returned recorder are stored in order.
    pub(super) fn start(shared: &Arc<Shared>, run: &Run, first_line: String) -> (Self, Recorder) {
        let id = run.id;
        let cancel = CancellationToken::new();
        let stop: StopReason = Arc::new(Mutex::new(None));
        shared.track_running(id, cancel.clone(), stop.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move { write_events(&shared, id, rx).await })
        };
        let _ = tx.send(Event::Log(first_line));
        let timeout = shared.config.timeout_for(
            &run.recipe,
            run.timeout_secs
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        );
        let guard = spawn_guard(shared, id, timeout, &cancel, &stop);
        let running = Self {
            id,
            cancel,
            stop,
            timeout,
            writer,
            guard,
        };
        (running, Recorder::new(tx))
    }

    /// Stops the guard, waits until every event of `recorder` is stored and stops tracking the
    /// run; returns why it was stopped (if it was) and its timeout, for [`conclude`].
    pub(super) async fn end(self, shared: &Shared, recorder: Recorder) -> (StopReason, Duration) {
        drop(recorder);
        self.guard.abort();
        let _ = self.writer.await;
        shared.untrack_running(self.id);
        (self.stop, self.timeout)
    }
}

/// Records how a run ended — from how it was stopped (timeout, cancel, shutdown; a lost lease
/// records nothing) or else its verdict and first bad stage — and returns the state recorded.
/// `what` names the work in reasons and logs (`trial`, `gate`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn conclude(
    shared: &Shared,
    run: &Run,
    stop: &StopReason,
    result: TrialResult,
    stages: &[seatrial_trial::StageReport],
    timeout: Duration,
    started: Instant,
    what: &str,
) -> Option<RunState> {
    let id = run.id;
    let stopped = *stop.lock().unwrap_or_else(|e| e.into_inner());
    let first_bad = stages
        .iter()
        .find(|s| matches!(s.result, StageResult::Fail | StageResult::Error))
        .map(|s| {
            format!(
                "{} {}: {}",
                s.name,
                stored_result(s.result),
                s.detail.lines().next().unwrap_or_default()
            )
        });
    // A trial's app is torn down; a gate stops its check and drops its scratch database.
    let cleanup = if what == "gate" {
        "stopped and cleaned up"
    } else {
        "torn down"
    };
    let (state, reason) = match stopped {
        Some(Stop::LeaseLost) => {
            tracing::error!(
                "lost the lease (another server reaped this run); not recording a verdict"
            );
            shared.changed(id);
            return None;
        }
        Some(Stop::TimedOut) => (
            RunState::TimedOut,
            Some(format!(
                "run timeout of {} reached; the {what} was cancelled and {cleanup}",
                fmt_duration(timeout),
            )),
        ),
        Some(Stop::Cancelled) => (
            RunState::Cancelled,
            Some(format!("cancelled while running; {cleanup}")),
        ),
        Some(Stop::Shutdown) => (
            RunState::Cancelled,
            Some(format!(
                "the server shut down before the {what} ended; {cleanup}"
            )),
        ),
        None => match result {
            TrialResult::Pass => (RunState::Passed, None),
            TrialResult::Fail => (RunState::Failed, first_bad),
            TrialResult::Error => (RunState::Errored, first_bad),
        },
    };
    let took = started.elapsed();
    let _ = shared
        .store
        .append_log(
            id,
            &format!(
                "{} after {}{}",
                state.as_str(),
                fmt_duration(took),
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        )
        .await;
    match shared
        .store
        .finish(id, &shared.owner, state, reason.as_deref())
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::error!("the run was no longer ours when it ended"),
        Err(e) => tracing::error!(error = %e, "cannot record the verdict"),
    }
    shared
        .metrics
        .trial(run.mode.as_str(), state.as_str(), took);
    tracing::info!(state = state.as_str(), took = %fmt_duration(took), what, "run ended");
    shared.changed(id);
    Some(state)
}
