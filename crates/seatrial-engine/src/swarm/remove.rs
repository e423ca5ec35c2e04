//! Removing a stack (undeploy, or the cleanup of a failed deploy) and waiting until it is really
//! gone: services first, their containers stopped the way the agent would, then — once nothing
//! uses them — networks, secrets, configs and volumes. When an agent may still be creating a
//! task's container, "gone" must also hold for a quiet moment.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    Config, ContainerSummary, Network, Secret, Service, Task, TaskState, Volume,
};
use bollard::query_parameters::{ListTasksOptions, RemoveContainerOptions, StopContainerOptions};
use tokio::time::Instant;
use tracing::debug;

use super::inventory::{Kind, Listed, Removable};
use super::pulse::{Pulse, REMOTE_POLL};
use super::{SWARM_SERVICE_NAME, SwarmEngine, is_not_found};
use crate::{
    EngineError, ProgressObserver, Result, UndeployOptions, UndeployRemaining, UndeployReport,
};

/// How long nothing of a removed stack may reappear before it counts as gone, when an agent was
/// still starting one of its tasks at removal (see [`SwarmEngine::remove`]).
const SETTLE: Duration = Duration::from_secs(2);
/// Swarm's stop grace period when a service sets none.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long after the manager stops listing a task on another node its container may still
/// exist there: the node's agent reports the task shut down, then deletes the container only
/// after waiting 2 s for the service's DNS entries to leave the gossip (Docker's
/// `defaultGossipConvergeDelay`, applied again on removal). Measured: 2.2 s after the task went.
/// The manager cannot see another node's containers, so this is waited for (with a margin for a
/// loaded node), not observed.
const REMOTE_CONTAINER_REMOVAL: Duration = Duration::from_millis(3500);

/// What a removal deletes: exactly the named objects (the cleanup of a failed deploy), or the
/// whole stack as listed at each look (undeploy) — an agent creates a task's volume when it
/// creates its container, and an interrupted deploy's last request may still be completing, so
/// what belongs to the stack can appear after the removal started.
#[derive(Debug, Default)]
pub(super) struct Targets {
    pub services: Vec<String>,
    pub networks: HashSet<String>,
    pub volumes: HashSet<String>,
    pub secrets: HashSet<String>,
    pub configs: HashSet<String>,
    /// `Some(with_data)`: everything of the stack; volumes, secrets and configs too when
    /// `with_data`.
    pub whole_stack: Option<bool>,
}

impl Targets {
    /// Whether every object of `kind` in the stack goes, whatever its name.
    fn all_of(&self, kind: Kind) -> bool {
        match kind {
            Kind::Network => self.whole_stack.is_some(),
            _ => self.whole_stack == Some(true),
        }
    }

    fn named(&self, kind: Kind) -> Option<&HashSet<String>> {
        match kind {
            Kind::Network => Some(&self.networks),
            Kind::Volume => Some(&self.volumes),
            Kind::Secret => Some(&self.secrets),
            Kind::Config => Some(&self.configs),
            Kind::Service | Kind::Container => None,
        }
    }

    /// Whether some object of `kind` may go (else there is no need to list them).
    fn any(&self, kind: Kind) -> bool {
        self.all_of(kind) || self.named(kind).is_some_and(|n| !n.is_empty())
    }

    fn wants(&self, kind: Kind, name: &str) -> bool {
        self.all_of(kind) || self.named(kind).is_some_and(|n| n.contains(name))
    }
}

/// What deleting services left to wait for.
#[derive(Debug, Default)]
struct Deleted {
    /// An agent may still create a container for one of them.
    in_flight: bool,
    /// One had a task (of any state) on another node: its container is there until its agent
    /// deletes it.
    remote: bool,
}

impl SwarmEngine {
    /// Removes the stack; see [`crate::Engine::undeploy`].
    pub(super) async fn undeploy_stack(
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

    /// The stack's objects of one kind that the removal targets.
    async fn targeted<T: Listed>(&self, stack: &str, targets: &Targets) -> Result<Vec<T>> {
        if !targets.any(T::KIND) {
            return Ok(Vec::new());
        }
        let mut list = self.in_stack::<T>(stack).await?;
        list.retain(|o| targets.wants(T::KIND, o.name().unwrap_or_default()));
        Ok(list)
    }

    async fn remaining(&self, stack: &str, targets: &Targets) -> Result<UndeployRemaining> {
        Ok(UndeployRemaining {
            services: self.in_stack::<Service>(stack).await?.len(),
            containers: self.in_stack::<ContainerSummary>(stack).await?.len(),
            remote_tasks: self.remote_tasks(stack).await?,
            networks: self.targeted::<Network>(stack, targets).await?.len(),
            volumes: self.targeted::<Volume>(stack, targets).await?.len(),
            secrets: self.targeted::<Secret>(stack, targets).await?.len(),
            configs: self.targeted::<Config>(stack, targets).await?.len(),
        })
    }

    /// Tasks of the stack on other nodes that the manager still lists: until it forgets them,
    /// their agents have not stopped their containers (and those may hold the stack's
    /// networks). Tasks on this node are covered by its containers, which are stopped here.
    async fn remote_tasks(&self, stack: &str) -> Result<usize> {
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(super::inventory::stack_filter(stack)),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing the tasks of stack `{stack}`"
            )))?;
        Ok(tasks
            .iter()
            .filter(|t| t.node_id.as_deref().is_some_and(|n| !n.is_empty()))
            .filter(|t| !self.is_local(t.node_id.as_deref()))
            .count())
    }

    /// Deletes the named services (remembering their stop grace periods for
    /// [`Self::stop_orphans`]). Says whether an agent may still create a container for one of
    /// them (see [`Self::containers_in_flight`]) and whether one had a task on another node.
    async fn delete_services(
        &self,
        stack: &str,
        names: &[String],
        grace: &mut HashMap<String, Duration>,
        report: &mut UndeployReport,
    ) -> Result<Deleted> {
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
        let deleted = match self.containers_in_flight(&removing).await {
            Ok(d) => d,
            Err(e) => {
                debug!(%stack, error = %e, "cannot tell whether tasks are starting; assuming so");
                Deleted {
                    in_flight: true,
                    remote: true,
                }
            }
        };
        for name in names {
            match self.docker.delete_service(name).await {
                Ok(()) => report.removed_services.push(name.clone()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(EngineError::api(format!("removing service `{name}`"))(e)),
            }
        }
        Ok(deleted)
    }

    /// Whether an agent may still create a container (and with it the task's volumes) for one
    /// of `services`: a task that should run but has no container yet, or a service whose
    /// orchestrator has not made its tasks yet.
    async fn containers_in_flight(&self, services: &[Service]) -> Result<Deleted> {
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        if ids.is_empty() {
            return Ok(Deleted::default());
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
        let before_container = |t: &Task| {
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
        // Failed and finished tasks too: their containers stay on their node until the task
        // is deleted, which happens as soon as the service goes.
        let remote = tasks.iter().any(|t| {
            t.node_id.as_deref().is_some_and(|n| !n.is_empty())
                && !self.is_local(t.node_id.as_deref())
        });
        if tasks.iter().any(before_container) {
            return Ok(Deleted {
                in_flight: true,
                remote,
            });
        }
        // A service that wants tasks but has none yet: its orchestrator is about to make them.
        let in_flight = services.iter().any(|s| {
            let wants = s
                .spec
                .as_ref()
                .and_then(|spec| spec.mode.as_ref())
                .and_then(|m| m.replicated.as_ref())
                .is_none_or(|r| r.replicas != Some(0));
            wants && !tasks.iter().any(|t| t.service_id == s.id)
        });
        Ok(Deleted { in_flight, remote })
    }

    /// Removes services, then — once their containers are gone — networks, secrets, configs
    /// and volumes, and waits until all of it is really gone. When an agent may still be
    /// creating a container of a removed service (its task was starting), "gone" must also hold
    /// for a quiet moment: what appears meanwhile (a container, its volume) is removed too.
    pub(super) async fn remove(
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
            Some(_) => self.service_names(stack).await?,
            None => targets.services.clone(),
        };
        let deleted = self
            .delete_services(stack, &names, &mut grace, &mut report)
            .await?;
        let mut in_flight = deleted.in_flight || settle;
        let mut stopped = HashSet::new();
        self.stop_orphans(stack, &grace, &mut stopped).await?;
        // When a task on another node was last listed: its container outlives it briefly.
        let mut remote_seen = deleted.remote.then(Instant::now);
        loop {
            let left = self.remaining(stack, &targets).await?;
            observer.undeploy(&left);
            if left.remote_tasks > 0 {
                remote_seen = Some(Instant::now());
                pulse.poll_at_most(REMOTE_POLL);
            }
            if left.is_empty() {
                if let Some(seen) = remote_seen.take() {
                    // The last containers on other nodes are deleted by their agents shortly
                    // after the manager forgets their tasks; then look once more.
                    tokio::time::sleep_until((seen + REMOTE_CONTAINER_REMOVAL).min(deadline)).await;
                    continue;
                }
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
                let mut late = self.service_names(stack).await?;
                late.retain(|n| !report.removed_services.contains(n));
                if !late.is_empty() {
                    let late = self
                        .delete_services(stack, &late, &mut grace, &mut report)
                        .await?;
                    if late.remote {
                        remote_seen = Some(Instant::now());
                    }
                    // Its tasks were just being made: containers may follow.
                    in_flight = true;
                }
            }
            if left.services == 0 && left.containers > 0 {
                // Containers an agent created after the first pass.
                self.stop_orphans(stack, &grace, &mut stopped).await?;
            }
            if left.services == 0 && left.containers == 0 && left.remote_tasks == 0 {
                // Networks, volumes, secrets and configs go once nothing uses them on any
                // node: the manager would remove a network a task elsewhere still uses.
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

    async fn service_names(&self, stack: &str) -> Result<Vec<String>> {
        let services = self.in_stack::<Service>(stack).await?;
        Ok(services
            .iter()
            .filter_map(|s| Some(s.name()?.to_owned()))
            .collect())
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
        let containers = self.in_stack::<ContainerSummary>(stack).await?;
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
        self.remove_targeted::<Network>(stack, targets, &mut report.removed_networks)
            .await?;
        self.remove_targeted::<Secret>(stack, targets, &mut report.removed_secrets)
            .await?;
        self.remove_targeted::<Config>(stack, targets, &mut report.removed_configs)
            .await?;
        self.remove_targeted::<Volume>(stack, targets, &mut report.removed_volumes)
            .await
    }

    /// Removes the stack's targeted objects of one kind; `removed` collects their names.
    async fn remove_targeted<T: Removable>(
        &self,
        stack: &str,
        targets: &Targets,
        removed: &mut Vec<String>,
    ) -> Result<()> {
        for object in self.targeted::<T>(stack, targets).await? {
            let name = object.name().unwrap_or_default().to_owned();
            match object.remove(&self.docker).await {
                Ok(()) => removed.push(name),
                Err(e) if is_not_found(&e) => {}
                // Mostly "still in use" races with the engine's cleanup: retried by the
                // caller's loop until the deadline, so only logged.
                Err(e) => debug!(kind = T::KIND.one(), %name, error = %e, "not removed yet"),
            }
        }
        Ok(())
    }
}
