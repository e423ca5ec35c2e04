//! The Docker Swarm backend: deploys stacks through the engine API the way `docker stack deploy`
//! does on the client side, and removes them completely.

mod converge;
mod pulse;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{LocalNodeState, ServiceSpec, TaskState};
use bollard::query_parameters::{
    CreateImageOptions, ListConfigsOptions, ListContainersOptions, ListNetworksOptions,
    ListSecretsOptions, ListServicesOptions, ListTasksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions, UpdateServiceOptions,
};
use futures_util::StreamExt;
use seatrial_recipe::{Finding, Severity};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::convert::{self, StackSpecs};
use crate::labels::{CREATED, STACK_NAMESPACE};
use crate::{
    ConvergeOptions, ConvergeReport, DeployMode, DeployOptions, DeployOutcome, Engine, EngineError,
    EngineInfo, LabelledStack, ProgressObserver, PullPolicy, Result, ServiceStatus, StackPlan,
    TaskAddress, UndeployOptions, UndeployRemaining, UndeployReport,
};
use pulse::Pulse;

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
}

pub(crate) fn stack_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{STACK_NAMESPACE}={stack}")],
    )])
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
/// The bridge through which a single node reaches its swarm tasks.
const GATEWAY_BRIDGE: &str = "docker_gwbridge";
/// How long nothing of a removed stack may reappear before it counts as gone, when an agent was
/// still starting one of its tasks at removal (see [`SwarmEngine::remove`]).
const SETTLE: Duration = Duration::from_secs(2);
/// Swarm's stop grace period when a service sets none.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long connecting and negotiating the API version may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let engine = Self {
            docker,
            host: host.clone(),
            image_health: std::sync::Arc::default(),
            local_snapshots: true,
        };
        let info = engine
            .docker
            .info()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let swarm = info.swarm.unwrap_or_default();
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
        Ok(engine)
    }

    /// The underlying client, for tests and tools that need a raw call.
    pub fn docker(&self) -> &Docker {
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

    /// The engine's address (`DOCKER_HOST`, or the local socket).
    pub fn host(&self) -> &str {
        &self.host
    }

    async fn stack_services(&self, stack: &str) -> Result<Vec<bollard::models::Service>> {
        self.docker
            .list_services(Some(ListServicesOptions {
                filters: Some(stack_filter(stack)),
                status: None,
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing services of stack `{stack}`"
            )))
    }

    async fn stack_containers(&self, stack: &str) -> Result<Vec<String>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(stack_filter(stack)),
                ..Default::default()
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing containers of stack `{stack}`"
            )))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    async fn stack_networks(&self, stack: &str) -> Result<Vec<(String, String)>> {
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(stack_filter(stack)),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing networks of stack `{stack}`"
            )))?;
        Ok(list
            .into_iter()
            .map(|n| (n.id.unwrap_or_default(), n.name.unwrap_or_default()))
            .collect())
    }

    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>> {
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(stack_filter(stack)),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing volumes of stack `{stack}`"
            )))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    async fn stack_secrets(&self, stack: &str) -> Result<Vec<(String, String)>> {
        let list = self
            .docker
            .list_secrets(Some(ListSecretsOptions {
                filters: Some(stack_filter(stack)),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing secrets of stack `{stack}`"
            )))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let name = s.spec.and_then(|s| s.name).unwrap_or_default();
                (s.id.unwrap_or_default(), name)
            })
            .collect())
    }

    async fn stack_configs(&self, stack: &str) -> Result<Vec<(String, String)>> {
        let list = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(stack_filter(stack)),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing configs of stack `{stack}`"
            )))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let name = s.spec.and_then(|s| s.name).unwrap_or_default();
                (s.id.unwrap_or_default(), name)
            })
            .collect())
    }

    /// Secret name → id for the given names (any owner).
    async fn secret_ids(&self, names: &[String]) -> Result<HashMap<String, String>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let list = self
            .docker
            .list_secrets(Some(ListSecretsOptions {
                filters: Some(HashMap::from([("name".to_owned(), names.to_vec())])),
            }))
            .await
            .map_err(EngineError::api("listing secrets"))?;
        Ok(list
            .into_iter()
            .filter_map(|s| Some((s.spec?.name?, s.id?)))
            .filter(|(n, _)| names.contains(n))
            .collect())
    }

    async fn config_ids(&self, names: &[String]) -> Result<HashMap<String, String>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let list = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(HashMap::from([("name".to_owned(), names.to_vec())])),
            }))
            .await
            .map_err(EngineError::api("listing configs"))?;
        Ok(list
            .into_iter()
            .filter_map(|s| Some((s.spec?.name?, s.id?)))
            .filter(|(n, _)| names.contains(n))
            .collect())
    }

    /// Checks everything that can be checked before creating anything.
    async fn preflight(
        &self,
        plan: &StackPlan,
        specs: &StackSpecs,
        options: &DeployOptions,
        existing: &[bollard::models::Service],
    ) -> Result<()> {
        let stack = &plan.stack;
        let mut problems: Vec<Finding> = Vec::new();
        let problem = |at: String, message: String, hint: &str| Finding {
            severity: Severity::Error,
            at,
            message,
            hint: hint.to_owned(),
        };
        match options.mode {
            DeployMode::Create if !existing.is_empty() => {
                let names: Vec<String> = existing
                    .iter()
                    .filter_map(|s| s.spec.as_ref()?.name.clone())
                    .collect();
                return Err(EngineError::StackTaken {
                    stack: stack.clone(),
                    detail: format!("{} service(s): {}", names.len(), names.join(", ")),
                });
            }
            DeployMode::Update if existing.is_empty() => {
                return Err(EngineError::StackNotFound {
                    stack: stack.clone(),
                });
            }
            _ => {}
        }
        // A service of the same name outside this stack would be clobbered: refuse.
        for svc in &specs.services {
            match self.docker.inspect_service(&svc.name, None).await {
                Ok(found) => {
                    let ns = found
                        .spec
                        .as_ref()
                        .and_then(|s| s.labels.as_ref())
                        .and_then(|l| l.get(STACK_NAMESPACE));
                    if ns.map(String::as_str) != Some(stack.as_str()) {
                        return Err(EngineError::StackTaken {
                            stack: stack.clone(),
                            detail: format!(
                                "a service named `{}` exists and is not part of stack `{stack}`",
                                svc.name
                            ),
                        });
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(EngineError::api(format!(
                        "inspecting service `{}`",
                        svc.name
                    ))(e));
                }
            }
        }
        for net in &specs.networks {
            let found = self.docker.inspect_network(&net.name, None).await;
            match (&net.spec, found) {
                (None, Err(e)) if is_not_found(&e) => problems.push(problem(
                    format!("networks.{}", net.key),
                    format!("external network `{}` does not exist", net.name),
                    "create it first (docker network create --driver overlay --attachable NAME)",
                )),
                (Some(_), Ok(n)) => {
                    let ns = n.labels.as_ref().and_then(|l| l.get(STACK_NAMESPACE));
                    if ns.map(String::as_str) != Some(stack.as_str()) {
                        problems.push(problem(
                            format!("networks.{}", net.key),
                            format!(
                                "a network named `{}` exists and is not part of stack `{stack}`",
                                net.name
                            ),
                            "remove it, or declare it `external: true`",
                        ));
                    }
                }
                (_, Err(e)) if !is_not_found(&e) => {
                    return Err(EngineError::api(format!(
                        "inspecting network `{}`",
                        net.name
                    ))(e));
                }
                _ => {}
            }
        }
        let external_secrets: Vec<String> = specs
            .secrets
            .iter()
            .filter(|s| s.spec.is_none())
            .map(|s| s.name.clone())
            .collect();
        let found = self.secret_ids(&external_secrets).await?;
        for s in specs.secrets.iter().filter(|s| s.spec.is_none()) {
            if !found.contains_key(&s.name) {
                problems.push(problem(
                    format!("secrets.{}", s.key),
                    format!("external secret `{}` does not exist", s.name),
                    "create it first (docker secret create NAME FILE)",
                ));
            }
        }
        let external_configs: Vec<String> = specs
            .configs
            .iter()
            .filter(|s| s.spec.is_none())
            .map(|s| s.name.clone())
            .collect();
        let found = self.config_ids(&external_configs).await?;
        for c in specs.configs.iter().filter(|c| c.spec.is_none()) {
            if !found.contains_key(&c.name) {
                problems.push(problem(
                    format!("configs.{}", c.key),
                    format!("external config `{}` does not exist", c.name),
                    "create it first (docker config create NAME FILE)",
                ));
            }
        }
        // Images: a missing image would leave tasks rejected forever; find out now.
        let mut seen = HashSet::new();
        for (key, svc) in &plan.compose.services {
            let Some(image) = svc.image.clone() else {
                continue;
            };
            if !seen.insert(image.clone()) {
                continue;
            }
            if let Err(message) = self.ensure_image(&image, options).await {
                problems.push(problem(
                    format!("services.{key}.image"),
                    format!("image `{image}` of service `{key}` {message}"),
                    "build or load the image on the engine, or fix the tag",
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Invalid {
                stack: stack.clone(),
                findings: problems,
            })
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        options: &DeployOptions,
    ) -> std::result::Result<(), String> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(format!("could not be inspected: {e}")),
        }
        if options.pull == PullPolicy::Never {
            return Err("is not on the engine (pulling is disabled)".into());
        }
        info!(image, "pulling missing image");
        let pull = async {
            let mut stream = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(image.to_owned()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = stream.next().await {
                item.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(options.pull_timeout, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("is not on the engine and pulling it failed: {e}")),
            Err(_) => Err(format!(
                "is not on the engine and pulling it took longer than {}",
                crate::fmt_duration(options.pull_timeout)
            )),
        }
    }

    async fn apply(
        &self,
        plan: &StackPlan,
        mut specs: StackSpecs,
        existing: &[bollard::models::Service],
        outcome: &mut DeployOutcome,
    ) -> Result<()> {
        let stack = &plan.stack;
        for net in &specs.networks {
            let Some(spec) = &net.spec else { continue };
            match self.docker.inspect_network(&net.name, None).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    self.docker
                        .create_network(spec.clone())
                        .await
                        .map_err(EngineError::api(format!("creating network `{}`", net.name)))?;
                    outcome.created_networks.push(net.name.clone());
                }
                Err(e) => {
                    return Err(EngineError::api(format!(
                        "inspecting network `{}`",
                        net.name
                    ))(e));
                }
            }
        }
        let names: Vec<String> = specs.secrets.iter().map(|s| s.name.clone()).collect();
        let mut secret_ids = self.secret_ids(&names).await?;
        for s in &specs.secrets {
            let Some(spec) = &s.spec else { continue };
            if secret_ids.contains_key(&s.name) {
                // Secrets are immutable; a versioned name that exists holds this version.
                continue;
            }
            let id = self
                .docker
                .create_secret(spec.clone())
                .await
                .map_err(EngineError::api(format!("creating secret `{}`", s.name)))?
                .id;
            secret_ids.insert(s.name.clone(), id);
            outcome.created_secrets.push(s.name.clone());
        }
        let names: Vec<String> = specs.configs.iter().map(|s| s.name.clone()).collect();
        let mut config_ids = self.config_ids(&names).await?;
        for c in &specs.configs {
            let Some(spec) = &c.spec else { continue };
            if config_ids.contains_key(&c.name) {
                continue;
            }
            let id = self
                .docker
                .create_config(spec.clone())
                .await
                .map_err(EngineError::api(format!("creating config `{}`", c.name)))?
                .id;
            config_ids.insert(c.name.clone(), id);
            outcome.created_configs.push(c.name.clone());
        }
        let by_name: HashMap<String, &bollard::models::Service> = existing
            .iter()
            .filter_map(|s| Some((s.spec.as_ref()?.name.clone()?, s)))
            .collect();
        for svc in &mut specs.services {
            let container = svc
                .spec
                .task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut());
            if let Some(container) = container {
                for r in container.secrets.iter_mut().flatten() {
                    r.secret_id = r
                        .secret_name
                        .as_ref()
                        .and_then(|n| secret_ids.get(n).cloned());
                }
                for r in container.configs.iter_mut().flatten() {
                    r.config_id = r
                        .config_name
                        .as_ref()
                        .and_then(|n| config_ids.get(n).cloned());
                }
            }
            match by_name.get(&svc.name) {
                Some(current) => {
                    let version = current
                        .version
                        .as_ref()
                        .and_then(|v| v.index)
                        .unwrap_or_default();
                    let mut spec: ServiceSpec = svc.spec.clone();
                    // Keep the original creation time: the janitor ages apps, not updates.
                    if let Some(created) = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.labels.as_ref())
                        .and_then(|l| l.get(CREATED))
                        && let Some(labels) = spec.labels.as_mut()
                    {
                        labels.insert(CREATED.to_owned(), created.clone());
                    }
                    let response = self
                        .docker
                        .update_service(
                            &svc.name,
                            spec,
                            UpdateServiceOptions {
                                version: i32::try_from(version).unwrap_or(i32::MAX),
                                ..Default::default()
                            },
                            None,
                        )
                        .await
                        .map_err(EngineError::api(format!("updating service `{}`", svc.name)))?;
                    for w in response.warnings.unwrap_or_default() {
                        debug!(service = %svc.name, warning = %w, "engine warning on update");
                    }
                    outcome.updated_services.push(svc.name.clone());
                }
                None => {
                    self.docker
                        .create_service(svc.spec.clone(), None)
                        .await
                        .map_err(EngineError::api(format!("creating service `{}`", svc.name)))?;
                    outcome.created_services.push(svc.name.clone());
                }
            }
        }
        // Services the new version no longer has are removed (the change under test drops them).
        let planned: HashSet<&str> = specs.services.iter().map(|s| s.name.as_str()).collect();
        for name in by_name.keys().filter(|n| !planned.contains(n.as_str())) {
            match self.docker.delete_service(name).await {
                Ok(()) => outcome.removed_services.push(name.clone()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(EngineError::api(format!("removing service `{name}`"))(e)),
            }
        }
        info!(%stack, created = outcome.created_services.len(), updated = outcome.updated_services.len(), "stack deployed");
        Ok(())
    }

    async fn remaining(&self, stack: &str, targets: &Targets) -> Result<UndeployRemaining> {
        let services = self.stack_services(stack).await?.len();
        let containers = self.stack_containers(stack).await?.len();
        let networks = self
            .stack_networks(stack)
            .await?
            .into_iter()
            .filter(|(_, name)| targets.network(name))
            .count();
        let any = |named: &HashSet<String>| targets.data() || !named.is_empty();
        let volumes = if any(&targets.volumes) {
            let list = self.stack_volumes(stack).await?;
            list.iter().filter(|v| targets.volume(v)).count()
        } else {
            0
        };
        let secrets = if any(&targets.secrets) {
            let list = self.stack_secrets(stack).await?;
            list.iter().filter(|(_, n)| targets.secret(n)).count()
        } else {
            0
        };
        let configs = if any(&targets.configs) {
            let list = self.stack_configs(stack).await?;
            list.iter().filter(|(_, n)| targets.config(n)).count()
        } else {
            0
        };
        Ok(UndeployRemaining {
            services,
            containers,
            networks,
            volumes,
            secrets,
            configs,
        })
    }

    /// Deletes the named services (remembering their stop grace periods for
    /// [`Self::stop_orphans`]); `true` when an agent may still create a container for one of
    /// them (see [`Self::containers_in_flight`]).
    async fn delete_services(
        &self,
        stack: &str,
        names: &[String],
        grace: &mut HashMap<String, Duration>,
        report: &mut UndeployReport,
    ) -> Result<bool> {
        let mut removing = Vec::new();
        for name in names {
            if let Ok(svc) = self.docker.inspect_service(name, None).await {
                let period = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.task_template.as_ref())
                    .and_then(|t| t.container_spec.as_ref())
                    .and_then(|c| c.stop_grace_period)
                    .and_then(|n| u64::try_from(n).ok())
                    .map_or(DEFAULT_STOP_GRACE, Duration::from_nanos);
                grace.insert(name.clone(), period);
                removing.push(svc);
            }
        }
        // Asked before the services go: afterwards their tasks are no longer listed.
        let in_flight = match self.containers_in_flight(&removing).await {
            Ok(b) => b,
            Err(e) => {
                debug!(%stack, error = %e, "cannot tell whether tasks are starting; assuming so");
                true
            }
        };
        for name in names {
            match self.docker.delete_service(name).await {
                Ok(()) => report.removed_services.push(name.clone()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(EngineError::api(format!("removing service `{name}`"))(e)),
            }
        }
        Ok(in_flight)
    }

    /// Whether an agent may still create a container (and with it the task's volumes) for one
    /// of `services`: a task that should run but has no container yet, or a service whose
    /// orchestrator has not made its tasks yet.
    async fn containers_in_flight(&self, services: &[bollard::models::Service]) -> Result<bool> {
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        if ids.is_empty() {
            return Ok(false);
        }
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_owned(), ids)])),
            }))
            .await
            .map_err(EngineError::api(
                "listing the tasks of the services to remove",
            ))?;
        let before_container = |t: &bollard::models::Task| {
            t.desired_state == Some(TaskState::RUNNING)
                && matches!(
                    t.status.as_ref().and_then(|s| s.state),
                    Some(
                        TaskState::NEW
                            | TaskState::ALLOCATED
                            | TaskState::PENDING
                            | TaskState::ASSIGNED
                            | TaskState::ACCEPTED
                            | TaskState::PREPARING
                    )
                )
        };
        if tasks.iter().any(before_container) {
            return Ok(true);
        }
        // A service that wants tasks but has none yet: its orchestrator is about to make them.
        Ok(services.iter().any(|s| {
            let wants = s
                .spec
                .as_ref()
                .and_then(|spec| spec.mode.as_ref())
                .and_then(|m| m.replicated.as_ref())
                .is_none_or(|r| r.replicas != Some(0));
            wants && !tasks.iter().any(|t| t.service_id == s.id)
        }))
    }

    /// Removes services, then — once their containers are gone — networks, secrets, configs
    /// and volumes, and waits until all of it is really gone. When an agent may still be
    /// creating a container of a removed service (its task was starting), "gone" must also hold
    /// for a quiet moment: what appears meanwhile (a container, its volume) is removed too.
    async fn remove(
        &self,
        stack: &str,
        targets: Targets,
        timeout: Duration,
        settle: bool,
        observer: &dyn ProgressObserver,
    ) -> Result<UndeployReport> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut pulse = Pulse::start(&self.docker, stack);
        let mut report = UndeployReport::default();
        let mut grace = HashMap::new();
        let names = match targets.whole_stack {
            Some(_) => self
                .stack_services(stack)
                .await?
                .into_iter()
                .filter_map(|s| s.spec?.name)
                .collect(),
            None => targets.services.clone(),
        };
        let mut in_flight = self
            .delete_services(stack, &names, &mut grace, &mut report)
            .await?
            || settle;
        let mut stopped = HashSet::new();
        self.stop_orphans(stack, &grace, &mut stopped).await?;
        loop {
            let left = self.remaining(stack, &targets).await?;
            observer.undeploy(&left);
            if left.is_empty() {
                // Nothing new for a moment (no event of the stack's containers or volumes and
                // still nothing listed): now it is really all gone.
                if !in_flight
                    || (pulse.quiet_for(SETTLE, deadline).await
                        && self.remaining(stack, &targets).await?.is_empty())
                {
                    break;
                }
                debug!(%stack, "something of the stack appeared after it looked gone; removing it too");
                continue;
            }
            if Instant::now() >= deadline {
                return Err(EngineError::api(format!(
                    "waiting for stack `{stack}` to be removed: still there after {}: {left:?}",
                    crate::fmt_duration(timeout)
                ))(BollardError::RequestTimeoutError));
            }
            if left.services > 0 && targets.whole_stack.is_some() {
                // A service whose creation was still under way when the removal started.
                let late: Vec<String> = self
                    .stack_services(stack)
                    .await?
                    .into_iter()
                    .filter_map(|s| s.spec?.name)
                    .filter(|n| !report.removed_services.contains(n))
                    .collect();
                if !late.is_empty() {
                    self.delete_services(stack, &late, &mut grace, &mut report)
                        .await?;
                    // Its tasks were just being made: containers may follow.
                    in_flight = true;
                }
            }
            if left.services == 0 && left.containers > 0 {
                // Containers an agent created after the first pass.
                self.stop_orphans(stack, &grace, &mut stopped).await?;
            }
            if left.services == 0 && left.containers == 0 {
                // Networks, volumes, secrets and configs go once nothing uses them.
                self.remove_unused(stack, &targets, &mut report).await?;
                if self.remaining(stack, &targets).await?.is_empty() {
                    continue;
                }
            }
            pulse.wait(deadline).await;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Stops and removes the containers of just-deleted services, the way the swarm agent
    /// would (the container's stop signal, then SIGKILL after the service's grace period), but
    /// without waiting for the agent's next pass: on a single node that saves seconds per
    /// undeploy. Containers on other nodes are left to their agents; `remove` still waits until
    /// the stack's networks are gone, which needs every task everywhere to be gone.
    async fn stop_orphans(
        &self,
        stack: &str,
        grace: &HashMap<String, Duration>,
        stopped: &mut HashSet<String>,
    ) -> Result<()> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(stack_filter(stack)),
                ..Default::default()
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing containers of stack `{stack}`"
            )))?;
        let jobs = containers.into_iter().filter_map(|c| {
            let service = c.labels.as_ref()?.get(SWARM_SERVICE_NAME)?.clone();
            let period = *grace.get(&service)?;
            let id = c.id?;
            if !stopped.insert(id.clone()) {
                return None;
            }
            Some(async move {
                let t = i32::try_from(period.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
                let stop = self
                    .docker
                    .stop_container(
                        &id,
                        Some(StopContainerOptions {
                            t: Some(t),
                            signal: None,
                        }),
                    )
                    .await;
                if let Err(e) = stop {
                    debug!(container = %id, error = %e, "stop (the agent may have been first)");
                }
                let remove = self
                    .docker
                    .remove_container(&id, None::<RemoveContainerOptions>)
                    .await;
                if let Err(e) = remove {
                    debug!(container = %id, error = %e, "remove (the agent may have been first)");
                }
            })
        });
        futures_util::future::join_all(jobs).await;
        Ok(())
    }

    async fn remove_unused(
        &self,
        stack: &str,
        targets: &Targets,
        report: &mut UndeployReport,
    ) -> Result<()> {
        // Errors here are mostly "still in use" races with the engine's cleanup: retried by
        // the caller's loop until the deadline, so only logged.
        for (id, name) in self.stack_networks(stack).await? {
            if targets.network(&name) {
                match self.docker.remove_network(&id).await {
                    Ok(()) => report.removed_networks.push(name),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => debug!(network = %name, error = %e, "network not removed yet"),
                }
            }
        }
        for (id, name) in self.stack_secrets(stack).await? {
            if targets.secret(&name) {
                match self.docker.delete_secret(&id).await {
                    Ok(()) => report.removed_secrets.push(name),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => debug!(secret = %name, error = %e, "secret not removed yet"),
                }
            }
        }
        for (id, name) in self.stack_configs(stack).await? {
            if targets.config(&name) {
                match self.docker.delete_config(&id).await {
                    Ok(()) => report.removed_configs.push(name),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => debug!(config = %name, error = %e, "config not removed yet"),
                }
            }
        }
        if targets.data() || !targets.volumes.is_empty() {
            for name in self.stack_volumes(stack).await? {
                if targets.volume(&name) {
                    match self
                        .docker
                        .remove_volume(&name, None::<RemoveVolumeOptions>)
                        .await
                    {
                        Ok(()) => report.removed_volumes.push(name),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => debug!(volume = %name, error = %e, "volume not removed yet"),
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a removal deletes: exactly the named objects (the cleanup of a failed deploy), or the
/// whole stack as listed at each look (undeploy) — an agent creates a task's volume when it
/// creates its container, and an interrupted deploy's last request may still be completing, so
/// what belongs to the stack can appear after the removal started.
#[derive(Debug, Default)]
struct Targets {
    services: Vec<String>,
    networks: HashSet<String>,
    volumes: HashSet<String>,
    secrets: HashSet<String>,
    configs: HashSet<String>,
    /// `Some(with_data)`: everything of the stack; volumes, secrets and configs too when
    /// `with_data`.
    whole_stack: Option<bool>,
}

impl Targets {
    fn network(&self, name: &str) -> bool {
        self.whole_stack.is_some() || self.networks.contains(name)
    }
    fn data(&self) -> bool {
        self.whole_stack == Some(true)
    }
    fn volume(&self, name: &str) -> bool {
        self.data() || self.volumes.contains(name)
    }
    fn secret(&self, name: &str) -> bool {
        self.data() || self.secrets.contains(name)
    }
    fn config(&self, name: &str) -> bool {
        self.data() || self.configs.contains(name)
    }
}

#[async_trait]
impl Engine for SwarmEngine {
    async fn info(&self) -> Result<EngineInfo> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable {
                host: self.host.clone(),
                message: e.to_string(),
            })?;
        Ok(EngineInfo {
            host: self.host.clone(),
            server_version: version.version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
        })
    }

    async fn deploy(&self, plan: &StackPlan, options: &DeployOptions) -> Result<DeployOutcome> {
        let specs = convert::convert(plan).map_err(|findings| EngineError::Invalid {
            stack: plan.stack.clone(),
            findings,
        })?;
        let existing = self.stack_services(&plan.stack).await?;
        self.preflight(plan, &specs, options, &existing).await?;
        let volumes_before: HashSet<String> =
            self.stack_volumes(&plan.stack).await?.into_iter().collect();
        let mut outcome = DeployOutcome::default();
        match self.apply(plan, specs, &existing, &mut outcome).await {
            Ok(()) => Ok(outcome),
            Err(e) => {
                warn!(stack = %plan.stack, error = %e, "deploy failed midway; removing what it created");
                // Remove exactly what this deploy created; never volumes that were there before.
                let volumes_after = self.stack_volumes(&plan.stack).await.unwrap_or_default();
                let targets = Targets {
                    services: outcome.created_services.clone(),
                    networks: outcome.created_networks.iter().cloned().collect(),
                    volumes: volumes_after
                        .into_iter()
                        .filter(|v| !volumes_before.contains(v))
                        .collect(),
                    secrets: outcome.created_secrets.iter().cloned().collect(),
                    configs: outcome.created_configs.iter().cloned().collect(),
                    whole_stack: None,
                };
                if let Err(cleanup) = self
                    .remove(
                        &plan.stack,
                        targets,
                        Duration::from_secs(120),
                        false,
                        &crate::NoProgress,
                    )
                    .await
                {
                    warn!(stack = %plan.stack, error = %cleanup, "cleaning up a failed deploy failed");
                }
                Err(e)
            }
        }
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
        let targets = Targets {
            whole_stack: Some(options.remove_data),
            ..Default::default()
        };
        // With `settle`, an interrupted deploy may still be creating something: look after a
        // quiet moment instead of answering "not found" at once.
        if !options.settle && self.remaining(stack, &targets).await?.is_empty() {
            return Err(EngineError::StackNotFound {
                stack: stack.to_owned(),
            });
        }
        self.remove(stack, targets, options.timeout, options.settle, observer)
            .await
    }

    async fn ps(&self, stack: &str) -> Result<Vec<ServiceStatus>> {
        Ok(self.snapshot(stack, usize::MAX).await?.services)
    }

    async fn task_addresses(&self, stack: &str) -> Result<Vec<TaskAddress>> {
        let mut filters = stack_filter(stack);
        filters.insert("status".to_owned(), vec!["running".to_owned()]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing containers of stack `{stack}`"
            )))?;
        let gateway = self
            .docker
            .inspect_network(GATEWAY_BRIDGE, None)
            .await
            .map_err(EngineError::api(format!(
                "inspecting network `{GATEWAY_BRIDGE}`"
            )))?;
        let endpoints = gateway.containers.unwrap_or_default();
        let mut out = Vec::new();
        for c in containers {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(service) = labels.get(SWARM_SERVICE_NAME) else {
                continue;
            };
            let ip = endpoints
                .get(&id)
                .and_then(|e| e.ipv4_address.as_deref())
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok());
            if let Some(ip) = ip {
                out.push(TaskAddress {
                    service: service.clone(),
                    container: id,
                    ip,
                });
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service).then(a.ip.cmp(&b.ip)));
        Ok(out)
    }

    async fn image_ports(&self, image: &str) -> Result<Vec<u16>> {
        let inspect = self
            .docker
            .inspect_image(image)
            .await
            .map_err(EngineError::api(format!("inspecting image `{image}`")))?;
        let mut ports: Vec<u16> = inspect
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                (proto == "tcp").then(|| port.parse().ok()).flatten()
            })
            .collect();
        ports.sort_unstable();
        Ok(ports)
    }

    async fn exec(&self, container: &str, command: &[String]) -> Result<(i64, String)> {
        use bollard::exec::StartExecResults;
        let api = || EngineError::api(format!("running {command:?} in container {container}"));
        let created = self
            .docker
            .create_exec(
                container,
                bollard::models::ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(api())?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(api())?
        {
            while let Some(Ok(chunk)) = stream.next().await {
                if output.len() < 64 * 1024 {
                    output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        let inspect = self.docker.inspect_exec(&created.id).await.map_err(api())?;
        Ok((inspect.exit_code.unwrap_or(-1), output))
    }

    async fn labelled_stacks(&self) -> Result<Vec<LabelledStack>> {
        let filter = || {
            Some(HashMap::from([(
                "label".to_owned(),
                vec![crate::labels::RUN.to_owned()],
            )]))
        };
        let d = &self.docker;
        let api = |what: &str| EngineError::api(format!("listing seatrial-labelled {what}"));
        let mut all: Vec<HashMap<String, String>> = Vec::new();
        for s in d
            .list_services(Some(ListServicesOptions {
                filters: filter(),
                status: None,
            }))
            .await
            .map_err(api("services"))?
        {
            all.push(s.spec.and_then(|s| s.labels).unwrap_or_default());
        }
        for c in d
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: filter(),
                ..Default::default()
            }))
            .await
            .map_err(api("containers"))?
        {
            all.push(c.labels.unwrap_or_default());
        }
        for n in d
            .list_networks(Some(ListNetworksOptions { filters: filter() }))
            .await
            .map_err(api("networks"))?
        {
            all.push(n.labels.unwrap_or_default());
        }
        for v in d
            .list_volumes(Some(ListVolumesOptions { filters: filter() }))
            .await
            .map_err(api("volumes"))?
            .volumes
            .unwrap_or_default()
        {
            all.push(v.labels);
        }
        for s in d
            .list_secrets(Some(ListSecretsOptions { filters: filter() }))
            .await
            .map_err(api("secrets"))?
        {
            all.push(s.spec.and_then(|s| s.labels).unwrap_or_default());
        }
        for c in d
            .list_configs(Some(ListConfigsOptions { filters: filter() }))
            .await
            .map_err(api("configs"))?
        {
            all.push(c.spec.and_then(|s| s.labels).unwrap_or_default());
        }
        Ok(crate::labels::group_by_stack(all))
    }

    async fn service_labels(&self, service: &str) -> Result<HashMap<String, String>> {
        let found = self
            .docker
            .inspect_service(service, None)
            .await
            .map_err(EngineError::api(format!("inspecting service `{service}`")))?;
        Ok(found.spec.and_then(|s| s.labels).unwrap_or_default())
    }
}
