//! The queue runner: claims runs with a lease (bounded by `capacity`), keeps the lease alive
//! with heartbeats, runs the trial exactly as `seatrial test` does, records stages and log lines
//! in the store, and enforces timeouts, cancellation and graceful shutdown. A reaper re-queues
//! (once) or errors the runs of servers that died, after removing what they left on the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatrial_engine::{
    ConvergeProgress, Engine, EngineError, ProgressObserver, SwarmEngine, UndeployOptions,
    fmt_duration,
};
use seatrial_store::{NewRun, Reaped, Run, RunState, StageRecord, Store};
use seatrial_trial::janitor::{Liveness, RunLiveness, RunRegistry};
use seatrial_trial::settings::Overrides;
use seatrial_trial::{StageReport, StageResult, TrialConfig, TrialObserver, TrialResult};
use tokio::sync::{Notify, OnceCell, Semaphore, broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::ServeConfig;
use super::metrics::Metrics;

/// A run is tried at most this many times (a crash of its server re-queues it once).
pub const MAX_ATTEMPTS: i64 = 2;

/// Why a trial was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
    Shutdown,
    LeaseLost,
}

/// A trial running here: how to stop it, and why it was stopped.
type Running = (CancellationToken, Arc<Mutex<Option<Stop>>>);

/// What the HTTP side and the queue runner share.
pub struct Shared {
    pub store: Store,
    pub config: ServeConfig,
    pub metrics: Metrics,
    /// This process, as lease owner: `<host>:<pid>:<random>`.
    pub owner: String,
    engine: OnceCell<Arc<dyn Engine>>,
    /// Wakes the queue runner when this process queued something.
    pub wake: Notify,
    /// Run ids whose log, stages or state changed (live views listen).
    pub changes: broadcast::Sender<i64>,
    /// Cancellation of the trials running here, by run id.
    running: Mutex<HashMap<i64, Running>>,
    pub shutdown: CancellationToken,
    /// The forge integration, when configured.
    pub forge: std::sync::OnceLock<Arc<super::forge::ForgeLink>>,
    /// The store's counts, reused for a second: scrapes and dashboards never queue on them.
    stats: tokio::sync::Mutex<Option<(Instant, seatrial_store::Stats)>>,
    /// Whether the run behind a trial stack lives, for the janitor pass before each trial.
    pub liveness: seatrial_trial::janitor::SharedLiveness,
}

/// For a server, the store decides whether a trial stack's run is alive (its lease, by the
/// database's clock); stacks of no run of the store are command-line trials, which this
/// host's run registry knows about.
#[derive(Debug)]
pub struct StoreLiveness {
    store: Store,
    registry: RunRegistry,
}

#[async_trait::async_trait]
impl RunLiveness for StoreLiveness {
    async fn liveness(&self, stack: &str, run_id: &str) -> Liveness {
        match self.store.stack_alive(stack).await {
            Ok(Some(true)) => Liveness::Live,
            Ok(Some(false)) => Liveness::Dead,
            Ok(None) => self.registry.liveness(run_id),
            Err(e) => {
                // Unsure is alive: never reap what may be a healthy run.
                tracing::warn!(%stack, error = %e, "cannot ask the store whether a run is alive; keeping its stack");
                Liveness::Live
            }
        }
    }
    fn forget(&self, run_id: &str) {
        self.registry.forget(run_id);
    }
}

impl Shared {
    pub fn new(store: Store, config: ServeConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let (changes, _) = broadcast::channel(1024);
        Self {
            metrics: Metrics::default(),
            owner: format!(
                "{host}:{}:{}",
                std::process::id(),
                seatrial_trial::new_run_id()
            ),
            engine: OnceCell::new(),
            wake: Notify::new(),
            changes,
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            stats: tokio::sync::Mutex::new(None),
            forge: std::sync::OnceLock::new(),
            liveness: Arc::new(StoreLiveness {
                store: store.clone(),
                registry: RunRegistry::new(&config.data_dir),
            }),
            store,
            config,
        }
    }

    /// The engine, connected on first use (and retried while it is unreachable).
    pub async fn engine(&self) -> Result<Arc<dyn Engine>, EngineError> {
        self.engine
            .get_or_try_init(|| async {
                let engine: Arc<dyn Engine> = Arc::new(SwarmEngine::connect().await?);
                Ok(engine)
            })
            .await
            .cloned()
    }

    pub fn changed(&self, id: i64) {
        let _ = self.changes.send(id);
    }

    /// Asks the trial of run `id` to stop, when it runs in this process.
    pub fn cancel_local(&self, id: i64) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, why)) = running.get(&id) {
            why.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(Stop::Cancelled);
            token.cancel();
        }
    }

    /// Counts by state and mode, at most a second old.
    pub async fn stats(&self) -> Result<seatrial_store::Stats, seatrial_store::StoreError> {
        let mut cached = self.stats.lock().await;
        if let Some((at, stats)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(stats.clone());
        }
        let stats = self.store.stats().await?;
        *cached = Some((Instant::now(), stats.clone()));
        Ok(stats)
    }

    /// Cancels every trial running here because the server is going away (teardown still runs).
    pub fn cancel_all_running(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (token, why) in running.values() {
            why.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(Stop::Shutdown);
            token.cancel();
        }
    }

    pub async fn enqueue(&self, new: &NewRun) -> Result<Run, seatrial_store::StoreError> {
        let run = self.store.enqueue(new).await?;
        self.wake.notify_one();
        self.changed(run.id);
        Ok(run)
    }
}

/// Claims and runs trials until shutdown; then lets running trials finish within the grace
/// period, and cancels (with teardown) the ones still running after it.
pub async fn run_queue(shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.config.capacity));
    let mut trials = JoinSet::new();
    loop {
        while trials.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shared.shutdown.cancelled() => break,
        };
        let engine = match shared.engine().await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "the engine is unreachable; not claiming runs until it answers");
                drop(permit);
                pause(&shared, Duration::from_secs(5)).await;
                continue;
            }
        };
        match shared.store.claim(&shared.owner, shared.config.lease).await {
            Ok(Some(run)) => {
                tracing::info!(run = run.id, recipe = %run.recipe, attempt = run.attempt, "claimed");
                shared.changed(run.id);
                let shared = shared.clone();
                let span = tracing::info_span!("trial", run = run.id);
                trials.spawn(
                    async move {
                        trial(&shared, &engine, run).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Ok(None) => {
                drop(permit);
                pause(&shared, shared.config.poll_interval).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a run");
                drop(permit);
                pause(&shared, shared.config.poll_interval).await;
            }
        }
    }
    if trials.is_empty() {
        return;
    }
    tracing::info!(
        running = trials.len(),
        grace = %fmt_duration(shared.config.shutdown_grace),
        "shutting down: letting running trials finish"
    );
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = trials.join_next() => if next.is_none() { return },
            () = &mut grace => break,
        }
    }
    tracing::warn!(
        running = trials.len(),
        "grace period over: cancelling the running trials (with teardown)"
    );
    shared.cancel_all_running();
    while trials.join_next().await.is_some() {}
}

/// Waits for new work, a poll interval, or shutdown.
async fn pause(shared: &Shared, interval: Duration) {
    tokio::select! {
        () = shared.wake.notified() => {},
        () = tokio::time::sleep(interval) => {},
        () = shared.shutdown.cancelled() => {},
    }
}

/// Reaps runs whose lease expired (their server died): removes their stack, then re-queues
/// them once or marks them errored. Runs at start and then every half lease.
pub async fn reap_loop(shared: Arc<Shared>) {
    let every = (shared.config.lease / 2).max(Duration::from_secs(1));
    loop {
        reap_once(&shared).await;
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shared.shutdown.cancelled() => return,
        }
    }
}

pub async fn reap_once(shared: &Shared) {
    let reaped = match shared.store.reap_expired(MAX_ATTEMPTS).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot look for runs with expired leases");
            return;
        }
    };
    for (run, what) in reaped {
        let action = match what {
            Reaped::Requeued => "re-queued",
            Reaped::Errored => "errored",
            Reaped::Cancelled => "cancelled",
        };
        tracing::warn!(run = run.id, stack = ?run.stack, action, reason = ?run.reason, "reaped a run whose server stopped heartbeating");
        let _ = shared
            .store
            .append_log(
                run.id,
                &format!(
                    "{} ({action})",
                    run.reason.as_deref().unwrap_or("lease expired")
                ),
            )
            .await;
        if let Some(stack) = &run.stack {
            remove_leftovers(shared, run.id, stack).await;
        }
        shared.changed(run.id);
        if what == Reaped::Requeued {
            shared.wake.notify_one();
        }
    }
}

/// Removes what a dead server's trial left on the engine.
async fn remove_leftovers(shared: &Shared, id: i64, stack: &str) {
    let Ok(engine) = shared.engine().await else {
        tracing::error!(
            run = id,
            stack,
            "the engine is unreachable: the janitor will remove the stack later"
        );
        return;
    };
    let options = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    let line = match engine
        .undeploy(stack, &options, &seatrial_engine::NoProgress)
        .await
    {
        Ok(r) => format!(
            "removed what the interrupted attempt left: stack {stack}, {} service(s), {} volume(s)",
            r.removed_services.len(),
            r.removed_volumes.len()
        ),
        Err(EngineError::StackNotFound { .. }) => {
            format!("the interrupted attempt left nothing of stack {stack}")
        }
        Err(e) => format!("cannot remove stack {stack} of the interrupted attempt: {e}"),
    };
    let _ = shared.store.append_log(id, &line).await;
}

/// Events from the trial (sync observer calls) to the store writer.
enum Event {
    Log(String),
    Stage(StageReport),
}

struct Recorder {
    tx: mpsc::UnboundedSender<Event>,
    last_progress: Mutex<Option<(Instant, String)>>,
}

impl ProgressObserver for Recorder {
    fn converge(&self, p: &ConvergeProgress) {
        let line = match p.stabilizing {
            Some(left) => format!("converged; stable in {}", fmt_duration(left)),
            None => p
                .services
                .iter()
                .map(|s| format!("{} {}/{}", s.name, s.running, s.desired))
                .collect::<Vec<_>>()
                .join(", "),
        };
        // One line per change, at most one every 2 s while nothing changes.
        let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        let due = match &*last {
            Some((at, text)) => *text != line || at.elapsed() >= Duration::from_secs(2),
            None => true,
        };
        if due {
            let _ = self.tx.send(Event::Log(format!(
                "  waiting ({}): {line}",
                fmt_duration(p.elapsed)
            )));
            *last = Some((Instant::now(), line));
        }
    }
}

impl TrialObserver for Recorder {
    fn stage_started(&self, name: &'static str, what: &str) {
        let _ = self.tx.send(Event::Log(format!("▶ {name}: {what}")));
    }
    fn stage_finished(&self, stage: &StageReport) {
        let _ = self.tx.send(Event::Stage(stage.clone()));
    }
}

fn result_word(r: StageResult) -> &'static str {
    match r {
        StageResult::Pass => "pass",
        StageResult::Fail => "fail",
        StageResult::Error => "error",
        StageResult::Skipped => "skipped",
    }
}

/// Writes the trial's events to the store, in order, and tells live views.
async fn write_events(shared: &Shared, id: i64, mut rx: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = rx.recv().await {
        let written = match event {
            Event::Log(line) => shared.store.append_log(id, &line).await.map(|_| ()),
            Event::Stage(stage) => {
                shared.metrics.stage(
                    stage.name,
                    result_word(stage.result),
                    Duration::from_millis(stage.duration_ms),
                );
                let mut line = format!(
                    "{} {} {} ({}): {}",
                    match stage.result {
                        StageResult::Pass => "✓",
                        StageResult::Fail => "✗",
                        StageResult::Error => "!",
                        StageResult::Skipped => "-",
                    },
                    stage.name,
                    result_word(stage.result),
                    fmt_duration(Duration::from_millis(stage.duration_ms)),
                    stage.detail
                );
                for t in stage.tests.iter().filter(|t| !t.passed) {
                    line.push_str(&format!("\n--- {} ({}) ---", t.name, t.outcome));
                    if !t.stdout.is_empty() {
                        line.push_str(&format!("\nstdout:\n{}", t.stdout.trim_end()));
                    }
                    if !t.stderr.is_empty() {
                        line.push_str(&format!("\nstderr:\n{}", t.stderr.trim_end()));
                    }
                }
                let record = StageRecord {
                    name: stage.name.to_owned(),
                    result: result_word(stage.result).to_owned(),
                    started_at: stage.started_at.clone(),
                    duration_ms: i64::try_from(stage.duration_ms).unwrap_or(i64::MAX),
                    detail: stage.detail.clone(),
                };
                match shared.store.record_stage(id, &record).await {
                    Ok(()) => shared.store.append_log(id, &line).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = written {
            tracing::error!(run = id, error = %e, "cannot record trial progress");
        }
        shared.changed(id);
    }
}

/// Runs one claimed run to its end and records the verdict.
/// The recipe directory and probe settings a run is tried with.
fn run_settings(
    shared: &Shared,
    run: &Run,
) -> Result<(Option<std::path::PathBuf>, Overrides), String> {
    match &run.probe {
        Some(json) => Ok((
            run.recipe_path.as_ref().map(std::path::PathBuf::from),
            super::config::StoredProbe::from_json(json)?.to_overrides()?,
        )),
        None => {
            let enrolled = run.repo.as_deref().and_then(|r| shared.config.enrolled(r));
            let s = shared.config.settings_for(&run.recipe, enrolled, None);
            Ok((
                s.recipe_path.map(std::path::PathBuf::from),
                s.probe.to_overrides()?,
            ))
        }
    }
}

async fn trial(shared: &Arc<Shared>, engine: &Arc<dyn Engine>, run: Run) {
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
    let (run_id, stack) = seatrial_trial::identity(&run.recipe, reference.as_deref());
    tracing::info!(stack = %stack, "trial starts");
    if let Err(e) = shared.store.set_stack(id, &stack).await {
        tracing::error!(error = %e, "cannot record the run's stack");
    }
    let cancel = CancellationToken::new();
    let stop = Arc::new(Mutex::new(None));
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, (cancel.clone(), stop.clone()));

    let (tx, rx) = mpsc::unbounded_channel();
    let writer = {
        let shared = shared.clone();
        tokio::spawn(async move { write_events(&shared, id, rx).await })
    };
    let _ = tx.send(Event::Log(format!(
        "attempt {} on {}: {} {} as stack {stack} (trial {run_id})",
        run.attempt,
        shared.owner,
        run.recipe,
        reference.as_deref().unwrap_or("(as it is)")
    )));

    let timeout = shared.config.timeout_for(
        &run.recipe,
        run.timeout_secs
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
    );
    let guard = {
        let (shared, cancel, stop) = (shared.clone(), cancel.clone(), stop.clone());
        let every = (shared.config.lease / 3).max(Duration::from_millis(500));
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        stop.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(Stop::TimedOut);
                        cancel.cancel();
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
                        stop.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(Stop::LeaseLost);
                        cancel.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(run = id, error = %e, "heartbeat failed; retrying"),
                }
                // A cancel asked through another server shows in the store.
                if let Ok(Some(r)) = shared.store.get(id).await
                    && r.cancel_requested
                {
                    stop.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(Stop::Cancelled);
                    cancel.cancel();
                    return;
                }
            }
        })
    };

    let config = TrialConfig {
        recipe: run.recipe.clone(),
        subdir,
        reference,
        base_domain: shared.config.base_domain.clone(),
        overrides,
        keep: false,
        data_dir: shared.config.data_dir.clone(),
        janitor_max_age: shared.config.longest_run_timeout() + shared.config.lease,
        liveness: Some(shared.liveness.clone()),
        run_id,
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
    let recorder = Recorder {
        tx,
        last_progress: Mutex::new(None),
    };
    let report = seatrial_trial::run(engine.as_ref(), config, &recorder, cancel.clone()).await;
    drop(recorder);
    guard.abort();
    let _ = writer.await;
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);

    let stopped = *stop.lock().unwrap_or_else(|e| e.into_inner());
    let first_bad = report
        .stages
        .iter()
        .find(|s| matches!(s.result, StageResult::Fail | StageResult::Error))
        .map(|s| {
            format!(
                "{} {}: {}",
                s.name,
                result_word(s.result),
                s.detail.lines().next().unwrap_or_default()
            )
        });
    let (state, reason) = match stopped {
        Some(Stop::LeaseLost) => {
            tracing::error!(
                "lost the lease (another server reaped this run); not recording a verdict"
            );
            shared.changed(id);
            return;
        }
        Some(Stop::TimedOut) => (
            RunState::TimedOut,
            Some(format!(
                "run timeout of {} reached; the trial was cancelled and torn down",
                fmt_duration(timeout)
            )),
        ),
        Some(Stop::Cancelled) => (
            RunState::Cancelled,
            Some("cancelled while running; torn down".to_owned()),
        ),
        Some(Stop::Shutdown) => (
            RunState::Cancelled,
            Some("the server shut down before the trial ended; torn down".to_owned()),
        ),
        None => match report.result {
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
    shared.metrics.trial(&run.mode, state.as_str(), took);
    tracing::info!(state = state.as_str(), took = %fmt_duration(took), "trial ended");
    shared.changed(id);
}
