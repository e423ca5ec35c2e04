//! Probing from inside the swarm: a one-shot service on the probed service's network runs a
//! probe command (seatrial's image: `seatrial probe …`), wherever the swarm places it. On a
//! multi-node swarm this host cannot reach a task on another node, nor — behind a remote
//! `DOCKER_HOST` — any task; a task on the stack's own network can.
//!
//! One-shot means one replica that is never restarted, not Swarm's `replicated-job` mode: a
//! removed job service leaves its task behind for good (moby/moby#44312, seen on Engine
//! 20.10), still attached to the stack's network — which then cannot be removed — with its
//! container on its node. A replicated service's tasks go with it.
//!
//! The job carries the stack's namespace and the probed service's `io.seatrial.*` labels, so a
//! teardown or the janitor removes it with the stack should this process die before it does;
//! it is removed, and waited for until its task is gone, on every way out of here — also when
//! the caller stops waiting (a drop guard removes it then).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecPlacement, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use futures_util::StreamExt;
use seatrial_recipe::{Finding, Severity};
use tokio::time::Instant;

use super::{SwarmEngine, is_not_found};
use crate::labels::{ROLE, ROLE_PROBE, STACK_NAMESPACE};
use crate::{EngineError, ProbeJob, ProbeJobOutcome, Result};

/// How long scheduling the job, (trying to) pull its image and starting it may take on top of
/// the probe's own deadline.
const START_MARGIN: Duration = Duration::from_secs(60);
/// How long the removed job's task may take to leave the manager's task list.
const REMOVAL_WAIT: Duration = Duration::from_secs(60);
/// How much of the job's output is kept.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// Removes the job's service when dropped before [`JobGuard::removed`] — when the caller
/// stops waiting (a cancelled stage) or an error leaves early.
struct JobGuard {
    docker: Docker,
    id: Option<String>,
}

impl JobGuard {
    fn removed(mut self) {
        self.id = None;
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let docker = self.docker.clone();
                runtime.spawn(async move {
                    if let Err(e) = docker.delete_service(&id).await
                        && !is_not_found(&e)
                    {
                        tracing::warn!(service = %id, error = %e, "cannot remove the probe job; the stack's teardown or the janitor will");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(service = %id, "probe job left behind; the stack's teardown or the janitor removes it");
            }
        }
    }
}

/// A name for the job, unique on this engine: `<stack>_seatrial-probe-<n>`.
fn job_name(stack: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20))
        .wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed))
        & 0xff_ffff;
    let mut name = format!("{stack}_seatrial-probe-{n:06x}");
    // Service names have at most 63 characters; the stack's part gives way.
    if name.len() > 63 {
        name = format!(
            "{}_seatrial-probe-{n:06x}",
            &stack[..stack.len() - (name.len() - 63)]
        );
    }
    name
}

fn ended(state: Option<&TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::COMPLETE
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::SHUTDOWN
                | TaskState::ORPHANED
                | TaskState::REMOVE
        )
    )
}

impl SwarmEngine {
    pub(super) async fn probe_job(&self, job: &ProbeJob) -> Result<ProbeJobOutcome> {
        let probed = self
            .docker
            .inspect_service(&job.service, None)
            .await
            .map_err(EngineError::api(format!(
                "inspecting service `{}` for its network",
                job.service
            )))?;
        let spec = probed.spec.unwrap_or_default();
        let target = spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.as_ref())
            .and_then(|n| n.first())
            .and_then(|n| n.target.clone());
        let Some(network_id) = target else {
            let short = job
                .service
                .strip_prefix(&format!("{}_", job.stack))
                .unwrap_or(&job.service);
            return Err(EngineError::Invalid {
                stack: job.stack.clone(),
                findings: vec![Finding {
                    severity: Severity::Error,
                    at: format!("services.{short}.networks"),
                    message: format!(
                        "service `{}` joins no network, so a probe job inside the swarm cannot reach it",
                        job.service
                    ),
                    hint: "attach it to a network, or probe through the reverse proxy (probe.strategy = \"url\" with probe.url)".to_owned(),
                }],
            });
        };
        let network = self
            .docker
            .inspect_network(&network_id, None)
            .await
            .ok()
            .and_then(|n| n.name)
            .unwrap_or_else(|| network_id.clone());
        let mut labels: HashMap<String, String> = spec
            .labels
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with("io.seatrial."))
            .collect();
        labels.insert(STACK_NAMESPACE.to_owned(), job.stack.clone());
        labels.insert(ROLE.to_owned(), ROLE_PROBE.to_owned());
        let name = job_name(&job.stack);
        let job_spec = ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(job.image.clone()),
                    command: Some(job.command.clone()),
                    labels: Some(labels),
                    // seatrial's image has a HEALTHCHECK (its server's): a job has nothing
                    // to be healthy about.
                    health_check: Some(HealthConfig {
                        test: Some(vec!["NONE".to_owned()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(network_id),
                    ..Default::default()
                }]),
                // On the manager's own node: the overlay network reaches the probed tasks
                // wherever they run, the image need only be on this node (seatrial's own, in
                // a swarm without a registry), and the job's container is one this engine
                // sees, stops and waits for (on another node it would outlive its task).
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={}", self.node_id())]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // One task, run once (restart condition none): see the module's notes on jobs.
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            // Nobody connects to the job: no virtual IP (which needs IPVS) for it.
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created =
            self.docker
                .create_service(job_spec, None)
                .await
                .map_err(EngineError::api(format!(
                    "creating the probe job `{name}` (image {})",
                    job.image
                )))?;
        let id = created.id.unwrap_or_else(|| name.clone());
        let guard = JobGuard {
            docker: self.docker.clone(),
            id: Some(id.clone()),
        };
        let waited = self.wait_for_job(&id, job.deadline + START_MARGIN).await;
        let outcome = match waited {
            Ok((task, timed_out)) => Ok(self.job_outcome(task, timed_out, network).await),
            Err(e) => Err(e),
        };
        let removed = self.remove_job(&id, &name).await;
        guard.removed();
        let outcome = outcome?;
        removed?;
        Ok(outcome)
    }

    /// Waits until the job's task has ended, or `within` passed (`true`: timed out); the task
    /// as last seen (`None`: the swarm made none).
    async fn wait_for_job(&self, id: &str, within: Duration) -> Result<(Option<Task>, bool)> {
        let deadline = Instant::now() + within;
        let mut wait = Duration::from_millis(100);
        loop {
            let tasks = self
                .docker
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(HashMap::from([("service".to_owned(), vec![id.to_owned()])])),
                }))
                .await
                .map_err(EngineError::api("listing the probe job's tasks"))?;
            let task = tasks.into_iter().max_by_key(|t| {
                t.status
                    .as_ref()
                    .and_then(|s| s.timestamp.clone())
                    .unwrap_or_default()
            });
            let state = task
                .as_ref()
                .and_then(|t| t.status.as_ref())
                .and_then(|s| s.state.as_ref());
            if ended(state) {
                return Ok((task, false));
            }
            if Instant::now() >= deadline {
                return Ok((task, true));
            }
            tokio::time::sleep(wait.min(deadline - Instant::now())).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// What the job's task says: its exit code, state, output and node.
    async fn job_outcome(
        &self,
        task: Option<Task>,
        timed_out: bool,
        network: String,
    ) -> ProbeJobOutcome {
        let Some(task) = task else {
            return ProbeJobOutcome {
                exit_code: None,
                state: "pending".to_owned(),
                error: Some("the swarm did not create a task for the job".to_owned()),
                timed_out,
                output: String::new(),
                node: String::new(),
                network,
            };
        };
        let status = task.status.clone().unwrap_or_default();
        let state = status
            .state
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let exit_code = if timed_out
            || !matches!(status.state, Some(TaskState::COMPLETE | TaskState::FAILED))
        {
            None
        } else {
            status.container_status.as_ref().and_then(|c| c.exit_code)
        };
        let error = status.err.clone().filter(|e| !e.is_empty()).or_else(|| {
            status
                .message
                .clone()
                .filter(|m| !m.is_empty() && state != "complete")
        });
        let node = match task.node_id.as_deref() {
            Some(node) => self
                .docker
                .inspect_node(node)
                .await
                .ok()
                .and_then(|n| n.description)
                .and_then(|d| d.hostname)
                .unwrap_or_else(|| node.to_owned()),
            None => String::new(),
        };
        let output = match (&task.id, &node) {
            (Some(id), node) if !node.is_empty() => self.job_output(id).await,
            _ => String::new(),
        };
        ProbeJobOutcome {
            exit_code,
            state,
            error,
            timed_out,
            output,
            node,
            network,
        }
    }

    /// The job's output, through the manager (its task may run on any node).
    async fn job_output(&self, task: &str) -> String {
        let mut stream = self.docker.task_logs(
            task,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "all".to_owned(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                if text.len() < OUTPUT_LIMIT {
                    text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        };
        // The output explains a verdict the exit code already gave: never let it hang one.
        if tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .is_err()
        {
            text.push_str("\n(output cut: reading it took more than 10s)");
        }
        text
    }

    /// Removes the job's service and waits until the manager lists no task of it.
    async fn remove_job(&self, id: &str, name: &str) -> Result<()> {
        if let Err(e) = self.docker.delete_service(id).await
            && !is_not_found(&e)
        {
            return Err(EngineError::api(format!("removing the probe job `{name}`"))(e));
        }
        let deadline = Instant::now() + REMOVAL_WAIT;
        let mut wait = Duration::from_millis(100);
        loop {
            // A removed service's tasks cannot be filtered by the service any more: look for
            // its ID among all tasks.
            let tasks = self
                .docker
                .list_tasks(None::<ListTasksOptions>)
                .await
                .map_err(EngineError::api(format!(
                    "waiting for the probe job `{name}` to be gone"
                )))?;
            if !tasks.iter().any(|t| t.service_id.as_deref() == Some(id)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EngineError::api(format!(
                    "waiting for the probe job `{name}` to be gone: its task is still listed after {}",
                    crate::fmt_duration(REMOVAL_WAIT)
                ))(
                    bollard::errors::Error::RequestTimeoutError
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// The hostnames of the nodes running tasks of `service`.
    pub(super) async fn nodes_of(&self, service: &str) -> Result<Vec<String>> {
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([
                    ("service".to_owned(), vec![service.to_owned()]),
                    ("desired-state".to_owned(), vec!["running".to_owned()]),
                ])),
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing the tasks of service `{service}`"
            )))?;
        let mut nodes = Vec::new();
        for node in tasks.iter().filter_map(|t| t.node_id.as_deref()) {
            let name = self
                .docker
                .inspect_node(node)
                .await
                .ok()
                .and_then(|n| n.description)
                .and_then(|d| d.hostname)
                .unwrap_or_else(|| node.to_owned());
            if !nodes.contains(&name) {
                nodes.push(name);
            }
        }
        nodes.sort();
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::job_name;

    #[test]
    fn job_names_are_unique_and_fit_the_engine() {
        let a = job_name("tpj-123456");
        let b = job_name("tpj-123456");
        assert_ne!(a, b);
        assert!(a.starts_with("tpj-123456_seatrial-probe-"), "{a}");
        let long = job_name(&"s".repeat(60));
        assert_eq!(long.len(), 63, "{long}");
    }
}
