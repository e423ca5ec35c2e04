//! Convergence, as `docker stack deploy --detach=false` computes it — but strict: per slot (or
//! node) an up-to-date task must be running (which, with a HEALTHCHECK, means healthy); an update
//! that Swarm paused or rolled back is a failure; tasks that keep failing are a failure. A service
//! with a healthcheck counts once healthy; when some service has none ("running" proves little
//! there), the whole stack must stay converged for a stability window before it counts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{
    EndpointPortConfigPublishModeEnum, Service, ServiceUpdateStatusStateEnum, Task, TaskState,
};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions, LogsOptions};
use futures_util::StreamExt;

use super::SwarmEngine;
use super::inventory::stack_filter;
use crate::error::{AppFailure, EngineError, FailureReason};
use crate::stability::{Stability, Step};
use crate::swarm::pulse::{Pulse, REMOTE_POLL};
use crate::{ConvergeOptions, ConvergeReport, ProgressObserver, ServiceStatus};

#[derive(Default)]
struct ContainerExit {
    description: Option<String>,
    health_output: Option<String>,
}

/// One look at a stack: each service's status, and the first failure seen, if any.
pub(crate) struct Snapshot {
    pub services: Vec<ServiceStatus>,
    pub failure: Option<(String, FailureReason)>,
    /// Whether some task runs (or is placed) on another node than the engine's own.
    pub remote: bool,
}

fn update_state_name(s: &ServiceUpdateStatusStateEnum) -> Option<&'static str> {
    Some(match s {
        ServiceUpdateStatusStateEnum::EMPTY => return None,
        ServiceUpdateStatusStateEnum::UPDATING => "updating",
        ServiceUpdateStatusStateEnum::PAUSED => "paused",
        ServiceUpdateStatusStateEnum::COMPLETED => "completed",
        ServiceUpdateStatusStateEnum::ROLLBACK_STARTED => "rollback_started",
        ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED => "rollback_paused",
        ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED => "rollback_completed",
    })
}

/// A task that ended badly. For a service (not a job) ending at all is bad, even with exit
/// code 0: apps commonly exit 0 on the SIGTERM Swarm sends to an unhealthy container.
fn is_failed(t: &Task, job: bool) -> bool {
    match t.status.as_ref().and_then(|s| s.state.as_ref()) {
        Some(TaskState::FAILED | TaskState::REJECTED) => true,
        Some(TaskState::COMPLETE) => !job,
        _ => false,
    }
}

fn desired_to_run(t: &Task) -> bool {
    matches!(
        t.desired_state,
        Some(TaskState::RUNNING | TaskState::READY | TaskState::COMPLETE)
    )
}

fn task_time(t: &Task) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.timestamp.clone())
        .or_else(|| t.updated_at.clone())
        .unwrap_or_default()
}

fn task_error(t: &Task) -> Option<String> {
    let status = t.status.as_ref()?;
    match (&status.err, &status.message) {
        (Some(e), _) if !e.is_empty() => Some(e.clone()),
        (_, Some(m)) if !m.is_empty() => Some(m.clone()),
        _ => None,
    }
}

fn mode_name(service: &Service) -> &'static str {
    let mode = service.spec.as_ref().and_then(|s| s.mode.as_ref());
    match mode {
        Some(m) if m.global.is_some() => "global",
        Some(m) if m.replicated_job.is_some() => "replicated-job",
        Some(m) if m.global_job.is_some() => "global-job",
        _ => "replicated",
    }
}

fn ports(service: &Service) -> Vec<String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.endpoint_spec.as_ref())
        .and_then(|e| e.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p
                .protocol
                .as_ref()
                .map_or("tcp".to_owned(), |p| p.to_string());
            let mode = match p.publish_mode {
                Some(EndpointPortConfigPublishModeEnum::HOST) => " (host)",
                _ => "",
            };
            match p.published_port {
                Some(pp) => format!("{pp}->{}/{proto}{mode}", p.target_port.unwrap_or(0)),
                None => format!("{}/{proto}{mode}", p.target_port.unwrap_or(0)),
            }
        })
        .collect()
}

impl SwarmEngine {
    /// Inspects every service of the stack and its up-to-date tasks (two API calls).
    /// `updating_counts`: an update whose every slot runs the new spec counts as converged
    /// before Swarm marks it `completed`.
    pub(crate) async fn snapshot(
        &self,
        stack: &str,
        max_failures: usize,
        updating_counts: bool,
    ) -> crate::Result<Snapshot> {
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(stack_filter(stack)),
                status: Some(true),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing the services of stack `{stack}`"
            )))?;
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let tasks = if ids.is_empty() {
            Vec::new()
        } else {
            self.docker
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(HashMap::from([
                        ("service".to_owned(), ids),
                        ("_up-to-date".to_owned(), vec!["true".to_owned()]),
                    ])),
                }))
                .await
                .map_err(EngineError::api(format!(
                    "listing the tasks of stack `{stack}`"
                )))?
        };
        let mut failure = None;
        let mut out = Vec::new();
        for service in &services {
            let id = service.id.clone().unwrap_or_default();
            let spec = service.spec.clone().unwrap_or_default();
            let healthcheck = self.has_healthcheck(&spec).await;
            let name = spec.name.clone().unwrap_or_else(|| id.clone());
            let mode = mode_name(service);
            let job = mode.ends_with("-job");
            let mine: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.service_id.as_deref() == Some(&id))
                .collect();
            let status = service.service_status.clone().unwrap_or_default();
            let desired = match mode {
                "replicated" => spec
                    .mode
                    .as_ref()
                    .and_then(|m| m.replicated.as_ref())
                    .and_then(|r| r.replicas)
                    .unwrap_or(1) as u64,
                _ => status.desired_tasks.unwrap_or(0),
            };
            // One running task per slot (replicated) or per node (global) counts.
            let mut slots = HashSet::new();
            for t in &mine {
                let done = if job {
                    t.status.as_ref().and_then(|s| s.state.as_ref()) == Some(&TaskState::COMPLETE)
                } else {
                    desired_to_run(t)
                        && t.status.as_ref().and_then(|s| s.state.as_ref())
                            == Some(&TaskState::RUNNING)
                        // With a healthcheck, a task counts only while its container is
                        // healthy: Swarm has been seen to report a never-healthy task as
                        // running for a moment, and a healthy task is what counts at once.
                        // A task on another node has no container this engine can inspect;
                        // its agent reports it running only once its healthcheck passed
                        // (`starting` until then), and the task list comes from the manager.
                        && (!healthcheck
                            || !self.is_local(t.node_id.as_deref())
                            || self.container_healthy(t).await)
                };
                if done {
                    let slot = match t.slot {
                        Some(s) if s > 0 && !job => s.to_string(),
                        _ => {
                            t.node_id.clone().unwrap_or_default()
                                + &t.id.clone().unwrap_or_default()
                        }
                    };
                    slots.insert(slot);
                }
            }
            let running = if job {
                status.completed_tasks.unwrap_or(slots.len() as u64)
            } else {
                slots.len() as u64
            };
            let failed: Vec<&&Task> = mine.iter().filter(|t| is_failed(t, job)).collect();
            let last_error = failed
                .iter()
                .max_by_key(|t| task_time(t))
                .and_then(|t| task_error(t));
            let update = service.update_status.as_ref();
            let update_state = update
                .and_then(|u| u.state.as_ref())
                .and_then(update_state_name)
                .map(str::to_owned);
            let update_message = update.and_then(|u| u.message.clone());
            // With `updating_counts`, an update counts once every slot runs a task of the new
            // spec (healthy, where a healthcheck exists), not only when Swarm marks it
            // `completed`: that comes after the update's monitor period (5 s by default). A
            // rollback started afterwards is then caught the way a task failing after
            // convergence is: the trial checks again after serving and after its tests.
            let settled = match update_state.as_deref() {
                None | Some("completed") => true,
                Some("updating") => updating_counts,
                Some(_) => false,
            };
            let converged = settled && running >= desired;
            if failure.is_none() {
                let reason = match update_state.as_deref() {
                    Some("paused") => Some(FailureReason::UpdatePaused),
                    Some("rollback_started" | "rollback_paused" | "rollback_completed") => {
                        Some(FailureReason::RolledBack)
                    }
                    _ if converged => None,
                    _ if failed.len() >= max_failures => Some(FailureReason::TasksFailing {
                        failures: failed.len(),
                    }),
                    // Restart policy exhausted: failures, and nothing left that wants to run.
                    _ if !failed.is_empty() && !mine.iter().any(|t| desired_to_run(t)) => {
                        Some(FailureReason::RestartsExhausted)
                    }
                    _ => None,
                };
                if let Some(reason) = reason {
                    failure = Some((name.clone(), reason));
                }
            }
            out.push(ServiceStatus {
                name,
                image: spec
                    .task_template
                    .as_ref()
                    .and_then(|t| t.container_spec.as_ref())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                mode: mode.to_owned(),
                running,
                desired,
                update_state,
                update_message,
                ports: ports(service),
                last_error,
                failed_tasks: failed.len(),
                converged,
                healthcheck,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let remote = tasks.iter().any(|t| {
            t.node_id.as_deref().is_some_and(|n| !n.is_empty())
                && !self.is_local(t.node_id.as_deref())
        });
        Ok(Snapshot {
            services: out,
            failure,
            remote,
        })
    }

    /// Whether the task's container reports `healthy` right now.
    async fn container_healthy(&self, t: &Task) -> bool {
        let Some(id) = t
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
        else {
            return false;
        };
        self.docker
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|st| st.health)
            .and_then(|h| h.status)
            == Some(bollard::models::HealthStatusEnum::HEALTHY)
    }

    /// Whether the service's tasks run a healthcheck: the spec's own, else the image's.
    async fn has_healthcheck(&self, spec: &bollard::models::ServiceSpec) -> bool {
        let container = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref());
        let test = container
            .and_then(|c| c.health_check.as_ref())
            .and_then(|h| h.test.clone())
            .unwrap_or_default();
        if let Some(first) = test.first() {
            return first != "NONE";
        }
        let Some(image) = container.and_then(|c| c.image.clone()) else {
            return false;
        };
        if let Some(known) = self
            .image_health
            .lock()
            .ok()
            .and_then(|m| m.get(&image).copied())
        {
            return known;
        }
        let mut found = None;
        // Images built locally have no repo digest: try the reference as deployed, then bare.
        for reference in [image.as_str(), image.split('@').next().unwrap_or(&image)] {
            if let Ok(inspect) = self.docker.inspect_image(reference).await {
                let test = inspect
                    .config
                    .and_then(|c| c.healthcheck)
                    .and_then(|h| h.test)
                    .unwrap_or_default();
                found = Some(test.first().is_some_and(|t| t != "NONE"));
                break;
            }
        }
        // Unknown counts as "no healthcheck": the stability window then applies.
        let has = found.unwrap_or(false);
        if found.is_some()
            && let Ok(mut m) = self.image_health.lock()
        {
            m.insert(image, has);
        }
        has
    }

    pub(crate) async fn converge_stack(
        &self,
        stack: &str,
        options: &ConvergeOptions,
        observer: &dyn ProgressObserver,
    ) -> crate::Result<ConvergeReport> {
        let mut stability = Stability::start(options);
        let mut pulse = Pulse::start(&self.docker, stack);
        loop {
            let snap = self
                .snapshot(
                    stack,
                    options.max_task_failures,
                    !options.until_update_completed,
                )
                .await?;
            if snap.remote {
                pulse.poll_at_most(REMOTE_POLL);
            }
            if snap.services.is_empty() {
                return Err(EngineError::StackNotFound {
                    stack: stack.to_owned(),
                });
            }
            if let Some((service, reason)) = snap.failure {
                return Err(self
                    .failure(stack, &service, reason, &snap.services, options)
                    .await);
            }
            match stability.step(snap.services.clone(), observer) {
                Step::Done(report) => return Ok(report),
                Step::WaitUntil(at) => pulse.wait(at).await,
                Step::TimedOut => {
                    let first = snap
                        .services
                        .iter()
                        .find(|s| !s.converged)
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    let reason = FailureReason::Timeout {
                        after: options.timeout,
                    };
                    return Err(self
                        .failure(stack, &first, reason, &snap.services, options)
                        .await);
                }
            }
        }
    }

    /// Builds the failure report: the task error, the healthcheck output and the last log lines
    /// of the most recent failed (or, on timeout, most recent) task of the service.
    async fn failure(
        &self,
        stack: &str,
        service: &str,
        reason: FailureReason,
        services: &[ServiceStatus],
        options: &ConvergeOptions,
    ) -> EngineError {
        let status = services.iter().find(|s| s.name == service);
        let others = services
            .iter()
            .filter(|s| s.name != service && !s.converged)
            .map(|s| s.name.clone())
            .collect();
        // All tasks, not just up-to-date ones: after a rollback the failing task belongs to
        // the spec that was rolled back.
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([(
                    "service".to_owned(),
                    vec![service.to_owned()],
                )])),
            }))
            .await
            .unwrap_or_default();
        let job = status.is_some_and(|s| s.mode.ends_with("-job"));
        let task = tasks
            .iter()
            .filter(|t| is_failed(t, job))
            .max_by_key(|t| task_time(t))
            .or_else(|| tasks.iter().max_by_key(|t| task_time(t)));
        let mut task_error_text = task.and_then(task_error);
        if matches!(
            reason,
            FailureReason::RolledBack | FailureReason::UpdatePaused
        ) && let Some(msg) = status.and_then(|s| s.update_message.clone())
        {
            task_error_text = Some(match task_error_text {
                Some(t) => format!("{msg}; failing task: {t}"),
                None => msg,
            });
        }
        let container = task
            .and_then(|t| t.status.as_ref())
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone());
        let node = task.and_then(|t| t.node_id.clone());
        if let Some(node) = node.as_deref().filter(|n| !self.is_local(Some(n))) {
            // Its container is on another node: what the manager knows (the task's error and
            // its logs, which the manager fetches from that node's agent), and where it ran.
            let name = self.node_name(node).await;
            task_error_text = Some(match task_error_text {
                Some(t) => format!("{t} (on node {name})"),
                None => format!("on node {name}"),
            });
            let logs = match task.and_then(|t| t.id.as_deref()) {
                Some(id) => self.tail_task_logs(id, options.log_lines).await,
                None => Vec::new(),
            };
            return EngineError::Failed(Box::new(AppFailure {
                stack: stack.to_owned(),
                service: service.to_owned(),
                reason,
                task_error: task_error_text,
                health_output: None,
                logs,
                others,
            }));
        }
        let (health_output, logs) = match container {
            Some(id) => {
                let exit = self.container_exit(&id).await;
                if let Some(exit) = exit.description {
                    task_error_text = Some(match task_error_text {
                        Some(t) if t != "finished" => format!("{t} ({exit})"),
                        _ => exit,
                    });
                }
                (
                    exit.health_output,
                    self.tail_logs(&id, options.log_lines).await,
                )
            }
            None => (None, Vec::new()),
        };
        EngineError::Failed(Box::new(AppFailure {
            stack: stack.to_owned(),
            service: service.to_owned(),
            reason,
            task_error: task_error_text,
            health_output,
            logs,
            others,
        }))
    }

    /// How a task's container ended: exit code, health state, last failing healthcheck output.
    async fn container_exit(&self, container: &str) -> ContainerExit {
        let Ok(inspect) = self.docker.inspect_container(container, None).await else {
            return ContainerExit::default();
        };
        let Some(state) = inspect.state else {
            return ContainerExit::default();
        };
        let health = state.health.as_ref();
        let unhealthy = health
            .and_then(|h| h.status.as_ref())
            .is_some_and(|s| s.to_string() == "unhealthy");
        let health_output = health
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.iter().rev().find(|r| r.exit_code != Some(0)))
            .and_then(|r| r.output.clone())
            .filter(|o| !o.trim().is_empty());
        let running = state.running == Some(true);
        let description = match (running, unhealthy, state.exit_code) {
            (true, true, _) => Some("container is running but unhealthy".to_owned()),
            (true, false, _) => None,
            (false, true, Some(code)) => Some(format!(
                "container failed its healthcheck and was stopped; exit code {code}"
            )),
            (false, false, Some(code)) => Some(format!("container exited with code {code}")),
            (false, _, None) => None,
        };
        ContainerExit {
            description,
            health_output,
        }
    }

    /// A node's hostname (its ID when it cannot be inspected).
    async fn node_name(&self, node: &str) -> String {
        self.docker
            .inspect_node(node)
            .await
            .ok()
            .and_then(|n| n.description)
            .and_then(|d| d.hostname)
            .unwrap_or_else(|| node.to_owned())
    }

    pub(crate) async fn tail_logs(&self, container: &str, lines: usize) -> Vec<String> {
        let stream = self.docker.logs(container, Some(Self::log_options(lines)));
        Self::last_lines(stream, lines).await
    }

    /// The last log lines of a task, through the manager (for a task on another node).
    async fn tail_task_logs(&self, task: &str, lines: usize) -> Vec<String> {
        let stream = self.docker.task_logs(task, Some(Self::log_options(lines)));
        Self::last_lines(stream, lines).await
    }

    fn log_options(lines: usize) -> LogsOptions {
        LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        }
    }

    async fn last_lines(
        mut stream: impl futures_util::Stream<
            Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
        > + Unpin,
        lines: usize,
    ) -> Vec<String> {
        let mut text = String::new();
        let fetch = async {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        };
        // Logs are a courtesy in an error report: never let them hang it.
        let _ = tokio::time::timeout(Duration::from_secs(5), fetch).await;
        let lines_vec: Vec<String> = text.lines().map(str::to_owned).collect();
        let skip = lines_vec.len().saturating_sub(lines);
        lines_vec.into_iter().skip(skip).collect()
    }
}
