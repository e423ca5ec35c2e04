//! seatrial-engine: the only crate that talks to Docker.
//!
//! Callers use the [`Engine`] trait (deploy a stack, wait until it has truly converged, undeploy
//! it and wait until it is gone); [`SwarmEngine`] implements it for Docker Swarm through bollard.
//! A second backend (plain containers, Podman's Docker-compatible socket) implements the same trait.
//! [`VolumeSnapshots`] snapshots an app's volumes and restores them byte for byte. With the `fake`
//! feature, `fake::FakeEngine` implements both in memory, with scripted behaviours, for tests.

mod convert;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod labels;
mod plan;
pub mod snapshot;
mod stability;
mod swarm;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use error::{ApiError, AppFailure, EngineError, ErrorKind, FailureReason};
pub use labels::RunLabels;
pub use plan::StackPlan;
pub use snapshot::{
    Manifest, RestoreReport, SnapshotMeta, VolumeRecord, VolumeSnapshots, VolumeState,
    read_manifest, unfinished_restore, verify_snapshot,
};
pub use swarm::SwarmEngine;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// How `deploy` treats a stack that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// Refuse when any service of the stack exists.
    Create,
    /// Upgrade an existing stack in place; refuse when it does not exist.
    Update,
    /// Create when absent, upgrade in place when present (what `docker stack deploy` does).
    CreateOrUpdate,
}

/// Whether images missing on the engine may be pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Use local images only; a missing image is an error before anything is created.
    Never,
    /// Pull images the engine does not have.
    Missing,
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub mode: DeployMode,
    pub pull: PullPolicy,
    /// How long a pull may take before the deploy gives up.
    pub pull_timeout: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            mode: DeployMode::Create,
            pull: PullPolicy::Missing,
            pull_timeout: Duration::from_secs(300),
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployOutcome {
    pub created_services: Vec<String>,
    pub updated_services: Vec<String>,
    pub removed_services: Vec<String>,
    pub created_networks: Vec<String>,
    pub created_secrets: Vec<String>,
    pub created_configs: Vec<String>,
}

/// How long and how strictly to wait for convergence.
#[derive(Debug, Clone)]
pub struct ConvergeOptions {
    /// Give up (and report a timeout failure) after this long.
    pub timeout: Duration,
    /// How long a service **without** a healthcheck must stay converged before it counts: for
    /// such a service "running" proves little. A service whose healthcheck passed counts at
    /// once — its healthcheck (interval × retries) is its stability evidence — and a trial checks
    /// again after serving and after its tests that nothing has failed since.
    pub stable_for: Duration,
    /// Failed or rejected tasks of a service's current spec before it counts as failing.
    pub max_task_failures: usize,
    /// Log lines of the failing container included in a failure.
    pub log_lines: usize,
    /// An update counts only once Swarm marks it `completed` (after its monitor period, 5 s by
    /// default). `false`: once every slot runs a task of the new spec (healthy, where a
    /// healthcheck exists) — for callers that verify afterwards that nothing failed or rolled
    /// back (a trial checks after serving and after its tests).
    pub until_update_completed: bool,
}

impl Default for ConvergeOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            stable_for: Duration::from_secs(3),
            max_task_failures: 3,
            log_lines: 50,
            until_update_completed: true,
        }
    }
}

/// The state of one service, as `seatrial app ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Full service name (`<stack>_<service>`).
    pub name: String,
    pub image: String,
    /// `replicated`, `global`, `replicated-job` or `global-job`.
    pub mode: String,
    /// Up-to-date tasks running (and healthy, where a healthcheck exists).
    pub running: u64,
    pub desired: u64,
    /// Swarm's update state (`updating`, `completed`, `paused`, `rollback_completed`, ...).
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    /// Published ports, e.g. `8080->80/tcp (host)`.
    pub ports: Vec<String>,
    /// The most recent task error of the current spec, if any.
    pub last_error: Option<String>,
    /// Failed or rejected tasks of the current spec.
    pub failed_tasks: usize,
    /// True when this service is converged (running == desired, update not failed or ongoing).
    pub converged: bool,
    /// Whether its tasks have a healthcheck (from the service spec, else the image).
    pub healthcheck: bool,
}

/// A moment in the convergence wait, for progress displays.
#[derive(Debug, Clone)]
pub struct ConvergeProgress {
    pub elapsed: Duration,
    pub services: Vec<ServiceStatus>,
    /// `Some(remaining)` while every service is converged and the stability window runs.
    pub stabilizing: Option<Duration>,
}

/// Receives progress while waiting; the CLI draws it, a server logs it.
pub trait ProgressObserver: Send + Sync {
    fn converge(&self, _progress: &ConvergeProgress) {}
    fn undeploy(&self, _remaining: &UndeployRemaining) {}
}

/// An observer that ignores progress.
pub struct NoProgress;
impl ProgressObserver for NoProgress {}

#[derive(Debug, Clone, Serialize)]
pub struct ConvergeReport {
    pub elapsed: Duration,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone)]
pub struct UndeployOptions {
    /// Also remove the stack's volumes, secrets and configs.
    pub remove_data: bool,
    /// Give up waiting for removal after this long.
    pub timeout: Duration,
    /// A deploy of the stack was interrupted and its last request may still be completing:
    /// call the stack gone only after a quiet moment in which nothing of it appeared.
    pub settle: bool,
}

impl Default for UndeployOptions {
    fn default() -> Self {
        Self {
            remove_data: false,
            timeout: Duration::from_secs(300),
            settle: false,
        }
    }
}

/// What still exists while an undeploy waits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UndeployRemaining {
    pub services: usize,
    /// Containers on the node seatrial talks to.
    pub containers: usize,
    /// Tasks on other nodes the manager still lists (their containers are there until then).
    pub remote_tasks: usize,
    pub networks: usize,
    pub volumes: usize,
    pub secrets: usize,
    pub configs: usize,
}

impl UndeployRemaining {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UndeployReport {
    pub removed_services: Vec<String>,
    pub removed_networks: Vec<String>,
    pub removed_volumes: Vec<String>,
    pub removed_secrets: Vec<String>,
    pub removed_configs: Vec<String>,
    pub elapsed: Duration,
}

/// Where a running task of a stack can be reached from this host: its container's address on
/// `docker_gwbridge` (no routing mesh or proxy needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskAddress {
    /// Full service name (`<stack>_<service>`).
    pub service: String,
    pub container: String,
    pub ip: std::net::IpAddr,
}

/// A one-shot job that probes a stack's service from inside the swarm: a service with one
/// task that is never restarted, on the service's network, so it reaches the service wherever
/// its tasks run — on a
/// multi-node swarm this host cannot reach tasks on other nodes (or, behind a remote
/// `DOCKER_HOST`, any task at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeJob {
    pub stack: String,
    /// Full name (`<stack>_<service>`) of the service probed: the job joins the first network
    /// of its task template and carries its `io.seatrial.*` labels.
    pub service: String,
    /// The image the job runs (seatrial's own, by default: it carries `seatrial probe`).
    pub image: String,
    /// The job's command, replacing the image's entrypoint (`["seatrial", "probe", ...]`).
    pub command: Vec<String>,
    /// How long the command may take once started; the engine waits this plus a margin for
    /// scheduling and starting the task before giving up on the job.
    pub deadline: Duration,
}

/// How a [`ProbeJob`] ended. The job is removed (and gone) when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeJobOutcome {
    /// The exit code of the job's command; `None` when it did not end (timed out) or never
    /// started (its task was rejected: an image missing on the node, say).
    pub exit_code: Option<i64>,
    /// The last state of the job's task (`complete`, `failed`, `rejected`, ...; `pending` when
    /// it had none), and the swarm's message for it.
    pub state: String,
    pub error: Option<String>,
    /// Whether the engine stopped waiting before the task ended.
    pub timed_out: bool,
    /// The job's output (stdout and stderr), read through the manager.
    pub output: String,
    /// The hostname of the node the job's task ran on (empty when it was never placed).
    pub node: String,
    /// The name of the network the job joined.
    pub network: String,
}

/// A stack that has seatrial-labelled objects on the engine (services, containers, networks,
/// volumes, secrets or configs — also orphans a killed run left without services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelledStack {
    pub stack: String,
    /// `io.seatrial.run` values seen on its objects.
    pub runs: Vec<String>,
    /// `io.seatrial.kind` values seen on its objects.
    pub kinds: Vec<String>,
    /// The oldest `io.seatrial.created` seen (RFC 3339).
    pub created: Option<String>,
    pub objects: usize,
}

/// Facts about the engine, for `seatrial` to show and check.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub host: String,
    pub server_version: String,
    pub api_version: String,
    /// The swarm node ID of the engine seatrial talks to (empty where there is no swarm).
    pub node_id: String,
    /// How many nodes the swarm has (1 on a single-node swarm). On more than one, tasks may run
    /// where this host cannot reach them: see the probe and volume rules in docs/cluster.md.
    pub nodes: u64,
}

/// A deploy target: deploy, converge, undeploy and inspect stacks — and snapshot and restore
/// their volumes ([`VolumeSnapshots`]), which warm canonicals and rollbacks need.
#[async_trait]
pub trait Engine: VolumeSnapshots + Send + Sync {
    /// Checks the engine answers and can deploy stacks.
    async fn info(&self) -> Result<EngineInfo>;

    /// Checks that a plan can be deployed to this engine as far as that can be told without
    /// looking at the engine's state (names, sources, mounts): every problem at once, as
    /// [`EngineError::Invalid`]. [`Engine::deploy`] checks the same (and more) itself.
    fn check_plan(&self, plan: &StackPlan) -> Result<()>;

    /// Creates or updates a stack. Everything is checked before anything is created; when
    /// creating a new stack fails midway, what was created is removed again.
    async fn deploy(&self, plan: &StackPlan, options: &DeployOptions) -> Result<DeployOutcome>;

    /// Waits until every service of the stack runs its current spec, healthy, stable for a
    /// window — or fails with the service, its task error and its last log lines.
    async fn converge(
        &self,
        stack: &str,
        options: &ConvergeOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<ConvergeReport>;

    /// Removes the stack and waits until its services, containers and networks are gone.
    async fn undeploy(
        &self,
        stack: &str,
        options: &UndeployOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<UndeployReport>;

    /// The state of each service of the stack (empty when the stack does not exist).
    async fn ps(&self, stack: &str) -> Result<Vec<ServiceStatus>>;

    /// Addresses of the stack's running task containers, reachable from this host.
    async fn task_addresses(&self, stack: &str) -> Result<Vec<TaskAddress>>;

    /// The TCP ports an image declares with EXPOSE.
    async fn image_ports(&self, image: &str) -> Result<Vec<u16>>;

    /// Runs `command` in a running container; returns its exit code and combined output.
    async fn exec(&self, container: &str, command: &[String]) -> Result<(i64, String)>;

    /// Every stack with objects carrying `io.seatrial.run`, grouped by stack namespace.
    async fn labelled_stacks(&self) -> Result<Vec<LabelledStack>>;

    /// The labels of a service of the stack (`<stack>_<service>`), as deployed.
    async fn service_labels(
        &self,
        service: &str,
    ) -> Result<std::collections::HashMap<String, String>>;

    /// Runs a one-shot probe job inside the swarm (see [`ProbeJob`]), waits until it ends, reads
    /// its output, and removes it — also when waiting fails, times out or is cancelled.
    async fn run_probe_job(&self, job: &ProbeJob) -> Result<ProbeJobOutcome>;

    /// The hostnames of the nodes the service's running tasks are on (`<stack>_<service>`).
    async fn service_nodes(&self, service: &str) -> Result<Vec<String>>;
}

/// Formats a duration for people: `850ms`, `12.3s`, `4m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
