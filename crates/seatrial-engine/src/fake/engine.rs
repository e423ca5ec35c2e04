//! [`Engine`] on the fake: deploy builds the model from the compose file; converge, undeploy
//! and ps read the scripted timeline with the Swarm engine's rules and error kinds.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use seatrial_recipe::compose::{DeployMode as ComposeMode, MountKind};
use seatrial_recipe::naming::{resource_name, scoped};
use tokio::time::Instant;

use super::model::{Look, Object, Service, failure_reason, plan_objects, port_text, sorted};
use super::{DEFAULT_SETTLE, FakeEngine, FakeVolume, missing};
use crate::error::{AppFailure, EngineError, FailureReason};
use crate::labels::{CREATED, STACK_NAMESPACE};
use crate::stability::{Stability, Step};
use crate::{
    ConvergeOptions, ConvergeReport, DeployMode, DeployOptions, DeployOutcome, Engine, EngineInfo,
    LabelledStack, ProbeJob, ProbeJobOutcome, ProgressObserver, Result, ServiceStatus, StackPlan,
    TaskAddress, UndeployOptions, UndeployReport,
};

impl FakeEngine {
    /// The stack's services now, sorted by name — the failing one first when one fails.
    fn look(&self, stack: &str, max_failures: usize) -> (Vec<Look>, Option<FailureReason>) {
        let now = Instant::now();
        let mut looks: Vec<Look> = self.state().live(stack).map(|s| s.look(now)).collect();
        looks.sort_by(|a, b| a.status.name.cmp(&b.status.name));
        let failing = looks
            .iter()
            .enumerate()
            .find_map(|(i, l)| Some((i, failure_reason(&l.status, max_failures)?)));
        let Some((i, reason)) = failing else {
            return (looks, None);
        };
        let l = looks.remove(i);
        looks.insert(0, l);
        (looks, Some(reason))
    }

    /// The failure report for `looks[0]` (the failing service).
    fn failure(
        &self,
        stack: &str,
        reason: FailureReason,
        looks: &[Look],
        options: &ConvergeOptions,
    ) -> EngineError {
        let failing = &looks[0];
        let state = self.state();
        let service = state.live(stack).find(|s| s.name == failing.status.name);
        let b = service.map(|s| s.behaviour.clone()).unwrap_or_default();
        let mut task_error = failing.task_error.clone().map(|e| {
            let exit = if failing.status.healthcheck && b.healthy_after.is_none() {
                "container failed its healthcheck and was stopped; exit code 137"
            } else {
                "container exited with code 1"
            };
            format!("{e} ({exit})")
        });
        if let (FailureReason::RolledBack, Some(msg)) = (&reason, &failing.status.update_message) {
            task_error = Some(match task_error {
                Some(t) => format!("{msg}; failing task: {t}"),
                None => msg.clone(),
            });
        }
        let unhealthy =
            failing.status.healthcheck && b.healthy_after.is_none() && failing.task_error.is_some();
        let skip = b.logs.len().saturating_sub(options.log_lines);
        EngineError::Failed(Box::new(AppFailure {
            stack: stack.to_owned(),
            service: failing.status.name.clone(),
            reason,
            task_error,
            health_output: unhealthy.then(|| b.health_output.clone()),
            logs: b.logs.iter().skip(skip).cloned().collect(),
            others: looks[1..]
                .iter()
                .filter(|l| !l.status.converged)
                .map(|l| l.status.name.clone())
                .collect(),
        }))
    }

    /// The next moment anything of the engine may change (after now).
    fn next_change(&self) -> Option<Instant> {
        let now = Instant::now();
        let state = self.state();
        let services = state.services.values().flatten();
        let changes = services.flat_map(|s| [s.next_change(now), s.gone_at()]);
        let pending = state.pending_volumes.iter().map(|(at, _)| *at);
        changes.flatten().chain(pending).filter(|t| *t > now).min()
    }

    /// Sleeps until the next change, or `until`, whichever comes first.
    async fn wait(&self, until: Instant) {
        let at = self.next_change().map_or(until, |t| t.min(until));
        tokio::time::sleep_until(at).await;
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn info(&self) -> Result<EngineInfo> {
        Ok(EngineInfo {
            host: "fake".to_owned(),
            server_version: "fake".to_owned(),
            api_version: "fake".to_owned(),
            node_id: "fake-node".to_owned(),
            nodes: self.state().nodes.max(1),
        })
    }

    /// The Swarm engine's own check: the fake refuses exactly what a real deploy would.
    fn check_plan(&self, plan: &StackPlan) -> Result<()> {
        crate::convert::convert(plan).map(drop)
    }

    async fn deploy(&self, plan: &StackPlan, options: &DeployOptions) -> Result<DeployOutcome> {
        self.check_plan(plan)?;
        let stack = plan.stack.as_str();
        let now = Instant::now();
        let mut guard = self.state();
        let state = &mut *guard;
        let exists = state.live(stack).next().is_some();
        match (options.mode, exists) {
            (DeployMode::Create, true) => {
                let names: Vec<String> = state.live(stack).map(|s| s.name.clone()).collect();
                return Err(EngineError::StackTaken {
                    stack: stack.to_owned(),
                    detail: format!("services {}", names.join(", ")),
                });
            }
            (DeployMode::Update, false) => {
                return Err(EngineError::StackNotFound {
                    stack: stack.to_owned(),
                });
            }
            _ => {}
        }
        let mut outcome = DeployOutcome::default();
        let (networks, secrets, configs) = plan_objects(plan);
        for (objects, have, created) in [
            (networks, &mut state.networks, &mut outcome.created_networks),
            (secrets, &mut state.secrets, &mut outcome.created_secrets),
            (configs, &mut state.configs, &mut outcome.created_configs),
        ] {
            for o in objects {
                if !have.iter().any(|h| h.name == o.name) {
                    created.push(o.name.clone());
                    have.push(o);
                }
            }
        }
        let base = plan.labels.for_stack(stack);
        let mut planned = Vec::new();
        for (key, svc) in &plan.compose.services {
            let name = scoped(stack, key);
            let image = svc.image.clone().unwrap_or_default();
            let mut labels: HashMap<String, String> = svc
                .deploy
                .as_ref()
                .map(|d| d.labels.clone().into_iter().collect())
                .unwrap_or_default();
            labels.extend(base.clone());
            let healthcheck = match &svc.healthcheck {
                Some(h) if h.disables() => false,
                Some(h) if h.test.is_some() => true,
                _ => state.image_health.get(&image).copied().unwrap_or(false),
            };
            let volumes = svc
                .volumes
                .iter()
                .filter(|v| v.kind == MountKind::Volume)
                .filter_map(|v| {
                    let key = v.source.as_ref()?;
                    let def = plan.compose.volumes.get(key).cloned().unwrap_or_default();
                    if def.external.external {
                        return None;
                    }
                    let mut labels = sorted(def.labels.clone());
                    labels.extend(base.clone());
                    Some(FakeVolume {
                        name: resource_name(stack, key, def.name.as_deref()),
                        driver: def.driver.clone().unwrap_or_else(|| "local".to_owned()),
                        options: sorted(def.driver_opts.clone()),
                        labels,
                        files: BTreeMap::new(),
                        created_at: FakeVolume::creation_stamp(),
                    })
                })
                .collect();
            let (mode, desired) = match svc.deploy.as_ref().and_then(|d| d.mode) {
                Some(ComposeMode::Global) => ("global", 1),
                Some(ComposeMode::GlobalJob) => ("global-job", 1),
                Some(ComposeMode::ReplicatedJob) => ("replicated-job", svc.replicas().unwrap_or(1)),
                _ => ("replicated", svc.replicas().unwrap_or(1)),
            };
            let behaviour = state
                .scripts
                .get(&image)
                .or_else(|| state.scripts.get(key))
                .cloned()
                .unwrap_or_default();
            let fresh = Service {
                name: name.clone(),
                image,
                mode,
                desired,
                labels,
                previous_labels: None,
                healthcheck,
                ports: svc.ports.iter().map(port_text).collect(),
                volumes,
                behaviour,
                since: now,
                update: false,
                removed_at: None,
            };
            let services = state.services.entry(stack.to_owned()).or_default();
            match services
                .iter_mut()
                .find(|s| s.name == name && s.removed_at.is_none())
            {
                Some(current) => {
                    // Keep the original creation time: the janitor ages apps, not updates.
                    let mut fresh = fresh;
                    if let Some(created) = current.labels.get(CREATED) {
                        fresh.labels.insert(CREATED.to_owned(), created.clone());
                    }
                    fresh.previous_labels = Some(current.labels_at(now).clone());
                    fresh.update = true;
                    *current = fresh;
                    outcome.updated_services.push(name.clone());
                }
                None => {
                    services.push(fresh);
                    outcome.created_services.push(name.clone());
                }
            }
            planned.push(name);
        }
        // Services the new version no longer has are removed.
        for s in state.services.entry(stack.to_owned()).or_default() {
            if s.removed_at.is_none() && !planned.contains(&s.name) {
                s.removed_at = Some(now);
                outcome.removed_services.push(s.name.clone());
            }
        }
        Ok(outcome)
    }

    async fn converge(
        &self,
        stack: &str,
        options: &ConvergeOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<ConvergeReport> {
        let mut stability = Stability::start(options);
        loop {
            let (mut looks, failure) = self.look(stack, options.max_task_failures);
            if looks.is_empty() {
                return Err(EngineError::StackNotFound {
                    stack: stack.to_owned(),
                });
            }
            if let Some(reason) = failure {
                return Err(self.failure(stack, reason, &looks, options));
            }
            let services = looks.iter().map(|l| l.status.clone()).collect();
            match stability.step(services, observer) {
                Step::Done(report) => return Ok(report),
                Step::WaitUntil(at) => self.wait(at).await,
                Step::TimedOut => {
                    // The failure report names the first service not converged.
                    if let Some(i) = looks.iter().position(|l| !l.status.converged) {
                        let l = looks.remove(i);
                        looks.insert(0, l);
                    }
                    let reason = FailureReason::Timeout {
                        after: options.timeout,
                    };
                    return Err(self.failure(stack, reason, &looks, options));
                }
            }
        }
    }

    async fn undeploy(
        &self,
        stack: &str,
        options: &UndeployOptions,
        observer: &dyn ProgressObserver,
    ) -> Result<UndeployReport> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        let data = options.remove_data;
        let settle = self.settle.unwrap_or(DEFAULT_SETTLE);
        let mut report = UndeployReport::default();
        let mut in_flight = options.settle;
        {
            let mut state = self.state();
            if !options.settle && state.remaining(stack, started, data).is_empty() {
                return Err(EngineError::StackNotFound {
                    stack: stack.to_owned(),
                });
            }
            for s in state.services.get_mut(stack).into_iter().flatten() {
                if s.removed_at.is_none() {
                    // A task whose container is still to be made: the agent makes it anyway.
                    in_flight |= !s.look(started).container;
                    s.removed_at = Some(started);
                    report.removed_services.push(s.name.clone());
                }
            }
        }
        let mut quiet_since: Option<Instant> = None;
        let mut removed_before = 0;
        loop {
            let now = Instant::now();
            let left = {
                let mut state = self.state();
                let left = state.remaining(stack, now, data);
                if left.services == 0 && left.containers == 0 && !left.is_empty() {
                    // Networks, volumes, secrets and configs go once nothing uses them.
                    let mine = |o: &Object| {
                        o.labels.get(STACK_NAMESPACE).map(String::as_str) == Some(stack)
                    };
                    let drop_objects = |objects: &mut Vec<Object>, removed: &mut Vec<String>| {
                        objects.retain(|o| {
                            let go = mine(o);
                            if go {
                                removed.push(o.name.clone());
                            }
                            !go
                        });
                    };
                    drop_objects(&mut state.networks, &mut report.removed_networks);
                    if data {
                        drop_objects(&mut state.secrets, &mut report.removed_secrets);
                        drop_objects(&mut state.configs, &mut report.removed_configs);
                        for name in state.volumes_of(stack) {
                            state.volumes.remove(&name);
                            report.removed_volumes.push(name);
                        }
                    }
                    state.remaining(stack, now, data)
                } else {
                    left
                }
            };
            observer.undeploy(&left);
            let removed = report.removed_volumes.len()
                + report.removed_networks.len()
                + report.removed_secrets.len()
                + report.removed_configs.len();
            if removed != removed_before {
                // Something was there to remove: the quiet moment starts again.
                removed_before = removed;
                quiet_since = None;
            }
            if left.is_empty() {
                // Something may still appear (a task was starting): gone only after a quiet while.
                let since = *quiet_since.get_or_insert(now);
                if !in_flight || now >= since + settle {
                    break;
                }
                self.wait((since + settle).min(deadline)).await;
                continue;
            }
            quiet_since = None;
            if now >= deadline {
                return Err(EngineError::api(format!(
                    "waiting for stack `{stack}` to be removed: still there after {}: {left:?}",
                    crate::fmt_duration(options.timeout)
                ))(
                    bollard::errors::Error::RequestTimeoutError
                ));
            }
            self.wait(deadline).await;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn ps(&self, stack: &str) -> Result<Vec<ServiceStatus>> {
        let (looks, _) = self.look(stack, usize::MAX);
        let mut services: Vec<ServiceStatus> = looks.into_iter().map(|l| l.status).collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(services)
    }

    async fn task_addresses(&self, stack: &str) -> Result<Vec<TaskAddress>> {
        let now = Instant::now();
        let state = self.state();
        let mut out: Vec<TaskAddress> = state
            .live(stack)
            .filter(|s| s.look(now).status.running > 0)
            .map(|s| TaskAddress {
                service: s.name.clone(),
                container: s.task_id(),
                ip: s.behaviour.address,
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service).then(a.ip.cmp(&b.ip)));
        Ok(out)
    }

    async fn image_ports(&self, image: &str) -> Result<Vec<u16>> {
        let mut ports = self
            .state()
            .image_ports
            .get(image)
            .cloned()
            .ok_or_else(|| missing(format!("inspecting image `{image}`"), "image"))?;
        ports.sort_unstable();
        Ok(ports)
    }

    async fn exec(&self, container: &str, command: &[String]) -> Result<(i64, String)> {
        let now = Instant::now();
        let state = self.state();
        let service = state
            .services
            .values()
            .flatten()
            .find(|s| s.task_id() == container && s.look(now).status.running > 0)
            .ok_or_else(|| {
                missing(
                    format!("running {command:?} in container {container}"),
                    "container",
                )
            })?;
        Ok(service.behaviour.exec.clone())
    }

    async fn labelled_stacks(&self) -> Result<Vec<LabelledStack>> {
        let now = Instant::now();
        let state = self.state();
        let run = |labels: &HashMap<String, String>| labels.contains_key(crate::labels::RUN);
        let mut all: Vec<HashMap<String, String>> = Vec::new();
        for s in state.services.values().flatten() {
            all.push(s.labels_at(now).clone());
            if s.look(now).container {
                // The container carries the stack namespace and the run's labels too.
                all.push(s.labels_at(now).clone());
            }
        }
        let objects = state
            .networks
            .iter()
            .chain(&state.secrets)
            .chain(&state.configs);
        all.extend(objects.map(|o| o.labels.clone()));
        all.extend(
            state
                .volumes
                .values()
                .map(|v| v.labels.clone().into_iter().collect()),
        );
        all.retain(run);
        Ok(crate::labels::group_by_stack(all))
    }

    async fn service_labels(&self, service: &str) -> Result<HashMap<String, String>> {
        let state = self.state();
        let found = state
            .service(service)
            .ok_or_else(|| missing(format!("inspecting service `{service}`"), "service"))?;
        Ok(found.labels_at(Instant::now()).clone())
    }

    /// Records the job and answers as scripted; the job is gone when this returns, as on the
    /// Swarm engine. The network is the stack's first.
    async fn run_probe_job(&self, job: &ProbeJob) -> Result<ProbeJobOutcome> {
        let mut state = self.state();
        if state.service(&job.service).is_none() {
            return Err(missing(
                format!("inspecting service `{}` for its network", job.service),
                "service",
            ));
        }
        state.probe_jobs.push(job.clone());
        let network = state
            .networks
            .iter()
            .find(|o| o.labels.get(STACK_NAMESPACE).map(String::as_str) == Some(&job.stack))
            .map_or_else(|| format!("{}_default", job.stack), |o| o.name.clone());
        let scripted = state
            .probe_job
            .clone()
            .unwrap_or_else(|| super::FakeProbeJob::exited(0, "200", "fake-node"));
        Ok(ProbeJobOutcome {
            exit_code: scripted.exit_code,
            state: scripted.state,
            error: scripted.error,
            timed_out: scripted.timed_out,
            output: scripted.output,
            node: scripted.node,
            network,
        })
    }

    async fn service_nodes(&self, service: &str) -> Result<Vec<String>> {
        let now = Instant::now();
        let state = self.state();
        let found = state.service(service).ok_or_else(|| {
            missing(
                format!("listing the tasks of service `{service}`"),
                "service",
            )
        })?;
        Ok(if found.look(now).status.running > 0 {
            vec!["fake-node".to_owned()]
        } else {
            Vec::new()
        })
    }
}
