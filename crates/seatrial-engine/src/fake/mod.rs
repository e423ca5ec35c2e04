//! A fake engine beside [`Engine`]: stacks, services, tasks, networks, volumes, secrets and
//! configs held in memory, built from a [`StackPlan`]'s compose model — with scripted behaviours
//! per service, so that what runs on an engine (a trial, the janitor, warm data) is tested in
//! milliseconds. It fails the way [`crate::SwarmEngine`] fails: the same [`EngineError`] variants
//! and [`FailureReason`]s for a never-healthy service, a rolled-back update or failing tasks.
//!
//! Time is tokio's: under `tokio::time::pause()` a scripted "healthy after 30 s" takes no time.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use seatrial_engine::fake::{Behaviour, FakeEngine};
//! let engine = FakeEngine::new();
//! // Every service `app` (of any stack) is healthy 200 ms after each deploy, and an update of
//! // it fails and is rolled back.
//! engine.script("app", Behaviour::healthy_after(Duration::from_millis(200)).rolls_back_on_update());
//! # }
//! ```

mod behaviour;
mod engine;
mod model;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub use behaviour::Behaviour;
use model::State;

use crate::error::EngineError;
use crate::{Result, UndeployRemaining};

/// How long nothing of a removed stack may reappear before it counts as gone, when a task was
/// still starting at removal (the Swarm engine waits as long).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// A volume on the fake engine: what `docker volume inspect` says, and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVolume {
    pub name: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Path inside the volume → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// When it was created: differs for every creation, as Docker's `CreatedAt` does for a
    /// volume removed and created again (see [`FakeVolume::creation_stamp`]).
    pub created_at: Option<String>,
}

impl FakeVolume {
    /// A fresh creation time, distinct from every other one of this process.
    pub fn creation_stamp() -> Option<String> {
        static CREATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CREATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(format!("{} #{n}", crate::labels::now_rfc3339()))
    }
}

/// How a probe job ends on the fake engine ([`FakeEngine::script_probe_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProbeJob {
    /// `None`: the job never ran (its task was rejected) or did not end in time.
    pub exit_code: Option<i64>,
    /// The task's state: `complete`, `failed`, `rejected`, ...
    pub state: String,
    pub error: Option<String>,
    pub timed_out: bool,
    pub output: String,
    pub node: String,
}

impl FakeProbeJob {
    /// A job that ran on `node` and exited with `code`, printing `output`.
    pub fn exited(code: i64, output: &str, node: &str) -> Self {
        Self {
            exit_code: Some(code),
            state: if code == 0 { "complete" } else { "failed" }.to_owned(),
            error: (code != 0).then(|| format!("task: non-zero exit ({code})")),
            timed_out: false,
            output: output.to_owned(),
            node: node.to_owned(),
        }
    }

    /// A job whose task the swarm rejected on `node` with `error` (it never ran).
    pub fn rejected(error: &str, node: &str) -> Self {
        Self {
            exit_code: None,
            state: "rejected".to_owned(),
            error: Some(error.to_owned()),
            timed_out: false,
            output: String::new(),
            node: node.to_owned(),
        }
    }
}

/// The fake engine. Clones share one state.
#[derive(Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
    settle: Option<Duration>,
}

/// An engine answer for something that does not exist, as Docker gives it (404).
fn missing(context: String, what: &str) -> EngineError {
    EngineError::api(context)(bollard::errors::Error::DockerResponseServerError {
        status_code: 404,
        message: format!("{what} not found"),
    })
}

impl FakeEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long an undeploy that found a task starting waits for quiet before calling the
    /// stack gone (default [`DEFAULT_SETTLE`], as the Swarm engine).
    pub fn with_settle(mut self, quiet: Duration) -> Self {
        self.settle = Some(quiet);
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state still reads.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.advance(Instant::now());
        state
    }

    /// Scripts every service `key` (its compose key, in any stack; or its image reference as
    /// written, which wins — one release's image can behave unlike the next) from its next
    /// deploy on. Unscripted services are healthy at once.
    pub fn script(&self, key: &str, behaviour: Behaviour) {
        self.state().scripts.insert(key.to_owned(), behaviour);
    }

    /// The TCP ports `image` declares with EXPOSE (an unknown image is not found).
    pub fn set_image_ports(&self, image: &str, ports: &[u16]) {
        self.state()
            .image_ports
            .insert(image.to_owned(), ports.to_vec());
    }

    /// Whether `image` defines a HEALTHCHECK (default: no).
    pub fn set_image_healthcheck(&self, image: &str, has: bool) {
        self.state().image_health.insert(image.to_owned(), has);
    }

    /// How many nodes the swarm claims to have (default one): more than one makes it a cluster,
    /// where a trial probes from inside the swarm by default.
    pub fn set_nodes(&self, nodes: u64) {
        self.state().nodes = nodes;
    }

    /// How the next probe jobs end (default: exit 0 on node `fake-node`, printing `200`).
    pub fn script_probe_job(&self, outcome: FakeProbeJob) {
        self.state().probe_job = Some(outcome);
    }

    /// The probe jobs run so far, oldest first.
    pub fn probe_jobs(&self) -> Vec<crate::ProbeJob> {
        self.state().probe_jobs.clone()
    }

    /// Names of the services of `stack` (removed ones too, until they are gone).
    pub fn services(&self, stack: &str) -> Vec<String> {
        let state = self.state();
        let list = state.services.get(stack).into_iter().flatten();
        list.map(|s| s.name.clone()).collect()
    }

    /// Names of the volumes labelled as `stack`'s.
    pub fn volume_names(&self, stack: &str) -> Vec<String> {
        self.state().volumes_of(stack)
    }

    /// Everything of `stack` still on the engine, volumes, secrets and configs included.
    pub fn leftovers(&self, stack: &str) -> UndeployRemaining {
        self.state().remaining(stack, Instant::now(), true)
    }

    /// A volume as the engine has it now.
    pub fn volume(&self, name: &str) -> Option<FakeVolume> {
        self.state().volumes.get(name).cloned()
    }

    /// Creates (or replaces) a volume, e.g. one an app left.
    pub fn put_volume(&self, volume: FakeVolume) {
        self.state().volumes.insert(volume.name.clone(), volume);
    }

    /// Writes a file into a volume, as the app would.
    pub fn write_file(&self, volume: &str, path: &str, contents: &[u8]) -> Result<()> {
        let mut state = self.state();
        let v = state
            .volumes
            .get_mut(volume)
            .ok_or_else(|| EngineError::VolumeNotFound {
                volume: volume.to_owned(),
            })?;
        v.files.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }
}
