//! What the queue runner, the nightly job, the forge loops and the HTTP edge share: the store,
//! the config, the metrics, this process's lease owner name, the engine (connected on first
//! use), the capacity (trial slots), the trials running here and how to stop them, the nightly
//! job's status, and the channel that tells live views a run changed.
//! It depends on none of them, so none of them depends on another through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatrial_engine::{Engine, EngineError, SwarmEngine};
use seatrial_store::{NewRun, Run, RunId, Stats, Store, StoreError};
use seatrial_trial::janitor::{Liveness, RunLiveness, RunRegistry, SharedLiveness};
use tokio::sync::{Notify, OnceCell, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use super::config::ServeConfig;
use super::metrics::Metrics;
use super::schedule::NightlyRecord;

/// Why a trial was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    TimedOut,
    Shutdown,
    LeaseLost,
}

/// Why a running trial was stopped, once it was; the first reason given wins.
pub type StopReason = Arc<Mutex<Option<Stop>>>;

/// Records `why` (unless a reason is already recorded) and cancels the trial.
pub fn stop_trial(token: &CancellationToken, reason: &StopReason, why: Stop) {
    reason
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(why);
    token.cancel();
}

/// What the dashboard, the API and the metrics show of the nightly job.
#[derive(Debug, Clone, Default)]
pub struct NightlyStatus {
    /// The next nightly time (none without a schedule).
    pub next: Option<jiff::Timestamp>,
    /// What the nightly is doing now (`None`: it is not running).
    pub phase: Option<String>,
    /// What is remembered of the nightly jobs (`<data dir>/nightly.json`).
    pub record: NightlyRecord,
}

/// The server's shared state.
pub struct Shared {
    pub store: Store,
    pub config: ServeConfig,
    pub metrics: Metrics,
    /// This process, as lease owner: `<host>:<pid>:<random>`.
    pub owner: String,
    engine: OnceCell<Arc<dyn Engine>>,
    /// Wakes the queue runner when this process queued something.
    pub wake: Notify,
    /// Runs whose log, stages or state changed (live views listen).
    pub changes: broadcast::Sender<RunId>,
    /// Cancellation of the trials running here, by run.
    running: Mutex<HashMap<RunId, (CancellationToken, StopReason)>>,
    pub shutdown: CancellationToken,
    /// Cancelled when work running here must stop at once (the shutdown grace is over, or a
    /// second signal came); the trials in `running` are cancelled with it.
    pub stop_now: CancellationToken,
    /// The trials this server may run at once (`capacity` permits): the queue runner takes one
    /// per trial, the nightly job all of them.
    pub slots: Arc<Semaphore>,
    /// Set while a nightly job is due or running: the queue runner claims nothing meanwhile.
    nightly_holds: std::sync::atomic::AtomicBool,
    pub nightly: Mutex<NightlyStatus>,
    /// The store's counts, reused for a second: scrapes and dashboards never queue on them.
    stats: tokio::sync::Mutex<Option<(Instant, Stats)>>,
    /// Whether the run behind a trial stack lives, for the janitor pass before each trial.
    pub liveness: SharedLiveness,
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
    async fn liveness(&self, stack: &str, trial_run_id: &str) -> Liveness {
        match self.store.stack_alive(stack).await {
            Ok(Some(true)) => Liveness::Live,
            Ok(Some(false)) => Liveness::Dead,
            Ok(None) => self.registry.liveness(trial_run_id),
            Err(e) => {
                // Unsure is alive: never reap what may be a healthy run.
                tracing::warn!(%stack, error = %e, "cannot ask the store whether a run is alive; keeping its stack");
                Liveness::Live
            }
        }
    }
    fn forget(&self, trial_run_id: &str) {
        self.registry.forget(trial_run_id);
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
            stop_now: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(config.capacity)),
            nightly_holds: std::sync::atomic::AtomicBool::new(false),
            nightly: Mutex::new(NightlyStatus::default()),
            stats: tokio::sync::Mutex::new(None),
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

    /// Uses `engine` instead of connecting to Docker (tests on the fake engine).
    #[cfg(test)]
    pub fn use_engine(&self, engine: Arc<dyn Engine>) {
        let _ = self.engine.set(engine);
    }

    /// Whether a nightly job is due or running (the queue runner claims nothing then).
    pub fn nightly_holds(&self) -> bool {
        self.nightly_holds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks a nightly job as due or running (`true`), or done (`false`, which wakes the queue
    /// runner).
    pub fn set_nightly_holds(&self, holds: bool) {
        self.nightly_holds
            .store(holds, std::sync::atomic::Ordering::SeqCst);
        if !holds {
            self.wake.notify_one();
        }
    }

    /// Changes what is shown of the nightly job.
    pub fn nightly_status(&self, change: impl FnOnce(&mut NightlyStatus)) {
        change(&mut self.nightly.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What is shown of the nightly job now.
    pub fn nightly_now(&self) -> NightlyStatus {
        self.nightly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn changed(&self, id: RunId) {
        let _ = self.changes.send(id);
    }

    /// Registers a trial running here, so it can be cancelled by run.
    pub fn track_running(&self, id: RunId, token: CancellationToken, reason: StopReason) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (token, reason));
    }

    pub fn untrack_running(&self, id: RunId) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Asks the trial of run `id` to stop, when it runs in this process.
    pub fn cancel_local(&self, id: RunId) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, why)) = running.get(&id) {
            stop_trial(token, why, Stop::Cancelled);
        }
    }

    /// Cancels every trial running here because the server is going away (teardown still runs),
    /// and whatever else runs here (the nightly job).
    pub fn cancel_all_running(&self) {
        self.stop_now.cancel();
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (token, why) in running.values() {
            stop_trial(token, why, Stop::Shutdown);
        }
    }

    /// Counts by state and mode, at most a second old.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
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

    /// Queues a run and wakes the queue runner and live views.
    pub async fn enqueue(&self, new: &NewRun) -> Result<Run, StoreError> {
        let run = self.store.enqueue(new).await?;
        self.wake.notify_one();
        self.changed(run.id);
        Ok(run)
    }
}
