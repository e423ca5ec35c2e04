//! The Docker Swarm backend: deploys stacks through the engine API the way `docker stack deploy`
//! does on the client side, and removes them completely.
//!
//! - [`deploy`]: check what can be checked, then create or update networks, secrets, configs
//!   and services (and remove what a failed first deploy created);
//! - [`converge`]: wait until every service runs its current spec, healthy and stable;
//! - [`remove`]: undeploy, and wait until everything of the stack is really gone;
//! - [`inspect`]: engine facts, task addresses, image ports, exec, deployed labels;
//! - [`inventory`]: list (and remove) a stack's objects of each kind, by label or name;
//! - [`placement`]: volumes are node-local, so services with volumes are pinned to the
//!   manager's node on a multi-node swarm (or refused when they cannot run there);
//! - [`probe_job`]: probe a service from inside the swarm with a one-shot job;
//! - [`pulse`]: wake up on the engine's events of a stack, with a bounded polling fallback.

mod converge;
mod deploy;
mod inspect;
mod inventory;
mod placement;
mod probe_job;
mod pulse;
mod remove;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::LocalNodeState;

use crate::{
    ConvergeOptions, ConvergeReport, DeployOptions, DeployOutcome, Engine, EngineError, EngineInfo,
    LabelledStack, ProbeJob, ProbeJobOutcome, ProgressObserver, Result, ServiceStatus, StackPlan,
    TaskAddress, UndeployOptions, UndeployReport,
};

/// A Docker Swarm manager reached through the Docker API.
#[derive(Clone)]
pub struct SwarmEngine {
    docker: Docker,
    host: String,
    /// Whether an image defines a HEALTHCHECK, by image reference (asked once per image).
    image_health: std::sync::Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// Whether snapshots may read a plain local volume from its mountpoint (see
    /// [`SwarmEngine::with_local_snapshots`]).
    local_snapshots: bool,
    /// The swarm node ID of this engine: its own tasks' containers are the only ones it can
    /// inspect, stop or read from; tasks elsewhere are seen through the manager's task list.
    node_id: String,
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The label the swarm puts on a task's container, naming its service.
const SWARM_SERVICE_NAME: &str = "com.docker.swarm.service.name";

/// How long connecting and negotiating the API version may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `Some("Podman <version>")` when the engine's `/version` answer is Podman's: a component named
/// "Podman Engine", or a platform name with Podman in it.
fn podman_engine(version: &bollard::models::SystemVersion) -> Option<String> {
    let is_podman = |name: &str| name.to_ascii_lowercase().contains("podman");
    let component = version
        .components
        .iter()
        .flatten()
        .find(|c| is_podman(&c.name));
    let platform = version
        .platform
        .as_ref()
        .is_some_and(|p| is_podman(&p.name));
    match (component, platform) {
        (Some(c), _) => Some(format!("Podman {}", c.version)),
        (None, true) => Some(match &version.version {
            Some(v) => format!("Podman {v}"),
            None => "Podman".to_owned(),
        }),
        (None, false) => None,
    }
}

/// Why connecting failed, with the causes bollard's message leaves out ("client error
/// (Connect)" alone says nothing), and what to do when the socket refused this user.
fn why(e: &BollardError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut denied = false;
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        denied |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
        source = s.source();
    }
    if denied {
        message.push_str(
            " (this user may not use the engine's socket: run as a member of its group — in a container, `--group-add $(stat -c %g /var/run/docker.sock)`)",
        );
    }
    message
}

impl SwarmEngine {
    /// Connects to the engine named by `DOCKER_HOST` (or the local socket), negotiates the API
    /// version, and checks that it is a swarm manager.
    pub async fn connect() -> Result<Self> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |message: String| EngineError::Unreachable {
            host: host.clone(),
            message,
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(why(&e)))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(why(&e)))?;
        let engine = Self {
            docker,
            host: host.clone(),
            image_health: std::sync::Arc::default(),
            local_snapshots: true,
            node_id: String::new(),
        };
        // Podman answers the Docker API, and its `info` says "swarm inactive": name it before
        // the swarm check would tell the user to `docker swarm init` (Podman has no swarm).
        if let Ok(version) = engine.docker.version().await
            && let Some(podman) = podman_engine(&version)
        {
            return Err(EngineError::Podman {
                host: engine.host,
                engine: podman,
            });
        }
        let info = engine
            .docker
            .info()
            .await
            .map_err(|e| unreachable(why(&e)))?;
        let swarm = info.swarm.unwrap_or_default();
        let node_id = swarm.node_id.clone().unwrap_or_default();
        let active = swarm.local_node_state == Some(LocalNodeState::ACTIVE);
        if !active || swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map_or("unknown".to_owned(), |s| s.to_string());
            let state = if active {
                format!("{state}, worker")
            } else {
                state
            };
            return Err(EngineError::NotSwarmManager {
                host: engine.host,
                state,
            });
        }
        Ok(Self { node_id, ..engine })
    }

    /// What [`Engine::check_plan`] checks for a swarm, without reaching an engine: whether
    /// the plan converts into specs (names, sources, mounts). Lets the CLI report bad input as
    /// such before it connects, also when no engine answers.
    pub fn check_plan_unconnected(plan: &StackPlan) -> Result<()> {
        crate::convert::convert(plan).map(drop)
    }

    /// The underlying client, for the snapshot code of this crate.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Whether a snapshot may read a volume straight from its mountpoint when the engine is on
    /// this host (a unix socket) and the volume is a plain `local` one (no driver options) whose
    /// mountpoint this process can read: faster than the archive API (BENCHMARKS.md), and the
    /// tar restores the same way.
    /// On by default; off, every volume streams through the archive API.
    pub fn with_local_snapshots(mut self, allowed: bool) -> Self {
        self.local_snapshots = allowed;
        self
    }

    pub(crate) fn local_snapshots(&self) -> bool {
        self.local_snapshots && self.host.starts_with("unix://")
    }

    /// The swarm node ID of the engine this talks to.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether a task on `node` has its container on the engine this talks to (where it can be
    /// inspected, stopped and read).
    pub(crate) fn is_local(&self, node: Option<&str>) -> bool {
        node.is_some_and(|n| n == self.node_id)
    }

    /// The engine's address (`DOCKER_HOST`, or the local socket).
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// Each operation lives in the module named after it; this is the table of contents.
#[async_trait]
impl Engine for SwarmEngine {
    async fn info(&self) -> Result<EngineInfo> {
        self.engine_info().await
    }

    fn check_plan(&self, plan: &StackPlan) -> Result<()> {
        Self::check_plan_unconnected(plan)
    }

    async fn deploy(&self, plan: &StackPlan, options: &DeployOptions) -> Result<DeployOutcome> {
        self.deploy_plan(plan, options).await
    }

    async fn converge(
        &self,
        stack: &str,
        options: &ConvergeOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<ConvergeReport> {
        self.converge_stack(stack, options, observer).await
    }

    async fn undeploy(
        &self,
        stack: &str,
        options: &UndeployOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<UndeployReport> {
        self.undeploy_stack(stack, options, observer).await
    }

    async fn ps(&self, stack: &str) -> Result<Vec<ServiceStatus>> {
        // What runs now: an update whose tasks all run the new spec is not "unconverged".
        Ok(self.snapshot(stack, usize::MAX, true).await?.services)
    }

    async fn task_addresses(&self, stack: &str) -> Result<Vec<TaskAddress>> {
        self.gateway_addresses(stack).await
    }

    async fn image_ports(&self, image: &str) -> Result<Vec<u16>> {
        self.exposed_tcp_ports(image).await
    }

    async fn exec(&self, container: &str, command: &[String]) -> Result<(i64, String)> {
        self.exec_in(container, command).await
    }

    async fn labelled_stacks(&self) -> Result<Vec<LabelledStack>> {
        self.seatrial_stacks().await
    }

    async fn service_labels(&self, service: &str) -> Result<HashMap<String, String>> {
        self.deployed_labels(service).await
    }

    async fn run_probe_job(&self, job: &ProbeJob) -> Result<ProbeJobOutcome> {
        self.probe_job(job).await
    }

    async fn service_nodes(&self, service: &str) -> Result<Vec<String>> {
        self.nodes_of(service).await
    }
}

#[cfg(test)]
mod podman_tests {
    use super::podman_engine;

    fn version(json: &str) -> bollard::models::SystemVersion {
        serde_json::from_str(json).expect("a /version answer")
    }

    #[test]
    fn podmans_version_answer_is_recognised() {
        // Recorded from `podman system service` (Debian 12, podman 4.3.1).
        let recorded = include_str!("../../tests/fixtures/podman-4.3.1-version.json");
        assert_eq!(
            podman_engine(&version(recorded)).as_deref(),
            Some("Podman 4.3.1")
        );
        assert_eq!(
            podman_engine(&version(
                r#"{"Platform":{"Name":"Podman Engine"},"Version":"5.2.0"}"#
            ))
            .as_deref(),
            Some("Podman 5.2.0"),
            "a platform name alone is enough"
        );
    }

    #[test]
    fn docker_engines_are_not_taken_for_podman() {
        // Recorded from Debian 12's docker.io (the engine the tests run on).
        let docker = include_str!("../../tests/fixtures/docker-20.10-version.json");
        assert_eq!(podman_engine(&version(docker)), None);
        let community = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"26.1.5"}],"Version":"26.1.5"}"#;
        assert_eq!(podman_engine(&version(community)), None);
        assert_eq!(podman_engine(&version("{}")), None);
    }
}
