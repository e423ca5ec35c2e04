//! What the fake engine holds — services with their scripted timeline, networks, secrets,
//! configs and volumes — and how a stack looks at a given moment.

use std::collections::{BTreeMap, HashMap};

use seatrial_recipe::compose::PortMode;
use seatrial_recipe::naming::{resource_name, scoped};
use tokio::time::Instant;

use super::{Behaviour, FakeVolume};
use crate::error::FailureReason;
use crate::labels::STACK_NAMESPACE;
use crate::{ServiceStatus, StackPlan, UndeployRemaining};

/// A network, secret or config: its name and labels.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub(super) name: String,
    pub(super) labels: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub(super) struct Service {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) mode: &'static str,
    pub(super) desired: u64,
    pub(super) labels: HashMap<String, String>,
    /// The labels of the spec before the last update: what a rollback goes back to.
    pub(super) previous_labels: Option<HashMap<String, String>>,
    pub(super) healthcheck: bool,
    pub(super) ports: Vec<String>,
    /// Named volumes its tasks mount (not yet created until its container is).
    pub(super) volumes: Vec<FakeVolume>,
    pub(super) behaviour: Behaviour,
    /// When the current spec was deployed.
    pub(super) since: Instant,
    /// The current spec came from an update (not a create).
    pub(super) update: bool,
    /// When it was removed: gone `behaviour.removal` later.
    pub(super) removed_at: Option<Instant>,
}

/// What one service looks like at a moment.
pub(super) struct Look {
    pub(super) status: ServiceStatus,
    /// The failing task's error, for a failure report.
    pub(super) task_error: Option<String>,
    pub(super) rolled_back: bool,
    /// Its task's container exists.
    pub(super) container: bool,
}

impl Service {
    pub(super) fn look(&self, now: Instant) -> Look {
        let b = &self.behaviour;
        let age = now.saturating_duration_since(self.since);
        let mut failed = 0usize;
        let mut update_state = self.update.then(|| "updating".to_owned());
        let mut update_message = None;
        let mut rolled_back = false;
        let running = if self.update && b.rolls_back_on_update {
            // The new task fails once; Swarm then puts the previous spec back, which runs.
            if age >= b.fails_every {
                failed = 1;
                rolled_back = true;
                update_state = Some("rollback_completed".to_owned());
                update_message = Some(format!(
                    "update rolled back due to failure or early termination of task {}",
                    self.task_id()
                ));
            }
            self.desired
        } else {
            match b.healthy_after {
                None => {
                    failed = (age.as_nanos() / b.fails_every.as_nanos()) as usize;
                    0
                }
                Some(up) => {
                    let mut running = if age >= up { self.desired } else { 0 };
                    if let Some(after) = b.fails_after_converged {
                        let failed_at = up + after;
                        if age >= failed_at {
                            failed = 1;
                            // The replacement comes up as the first task did.
                            running = if age >= failed_at + up {
                                self.desired
                            } else {
                                0
                            };
                        }
                    }
                    if age >= up && self.update {
                        update_state = Some("completed".to_owned());
                    }
                    running
                }
            }
        };
        let settled = matches!(update_state.as_deref(), None | Some("completed"));
        let task_error = (failed > 0).then(|| {
            if self.healthcheck && b.healthy_after.is_none() {
                "task: non-zero exit (137): dockerexec: unhealthy container".to_owned()
            } else {
                "task: non-zero exit (1)".to_owned()
            }
        });
        Look {
            status: ServiceStatus {
                name: self.name.clone(),
                image: self.image.clone(),
                mode: self.mode.to_owned(),
                running,
                desired: self.desired,
                update_state,
                update_message,
                ports: self.ports.clone(),
                last_error: task_error.clone(),
                failed_tasks: failed,
                converged: settled && running >= self.desired,
                healthcheck: self.healthcheck,
            },
            task_error,
            rolled_back,
            container: age >= b.container_after,
        }
    }

    /// The next moment its look may change, after `now`.
    pub(super) fn next_change(&self, now: Instant) -> Option<Instant> {
        let b = &self.behaviour;
        let mut at = vec![b.container_after, b.fails_every];
        if let Some(up) = b.healthy_after {
            at.push(up);
            if let Some(after) = b.fails_after_converged {
                at.extend([up + after, up + after + up]);
            }
        } else {
            // The next task failure.
            let age = now.saturating_duration_since(self.since);
            let n = age.as_nanos() / b.fails_every.as_nanos() + 1;
            at.push(b.fails_every * u32::try_from(n).unwrap_or(u32::MAX));
        }
        at.into_iter()
            .map(|d| self.since + d)
            .filter(|t| *t > now)
            .min()
    }

    /// The labels as deployed now: a rolled-back update has its previous spec back.
    pub(super) fn labels_at(&self, now: Instant) -> &HashMap<String, String> {
        match &self.previous_labels {
            Some(previous) if self.look(now).rolled_back => previous,
            _ => &self.labels,
        }
    }

    pub(super) fn task_id(&self) -> String {
        format!("{}.1", self.name)
    }

    /// When a removed service is gone (its containers with it).
    pub(super) fn gone_at(&self) -> Option<Instant> {
        Some(self.removed_at? + self.behaviour.removal)
    }

    /// When its task's container is (or was) created.
    pub(super) fn container_at(&self) -> Instant {
        self.since + self.behaviour.container_after
    }

    pub(super) fn gone(&self, now: Instant) -> bool {
        self.gone_at().is_some_and(|at| now >= at)
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) scripts: HashMap<String, Behaviour>,
    pub(super) image_ports: HashMap<String, Vec<u16>>,
    pub(super) image_health: HashMap<String, bool>,
    /// By stack, then service name; removed services stay until gone.
    pub(super) services: BTreeMap<String, Vec<Service>>,
    pub(super) networks: Vec<Object>,
    pub(super) secrets: Vec<Object>,
    pub(super) configs: Vec<Object>,
    pub(super) volumes: BTreeMap<String, FakeVolume>,
    /// Volumes an agent will still create for the container of a task that was starting when
    /// its service went: nothing on the engine shows them before they exist.
    pub(super) pending_volumes: Vec<(Instant, FakeVolume)>,
    /// How many nodes the swarm has (0: not set, one).
    pub(super) nodes: u64,
    /// How the next probe jobs end (`None`: they pass).
    pub(super) probe_job: Option<super::FakeProbeJob>,
    /// The probe jobs run so far.
    pub(super) probe_jobs: Vec<crate::ProbeJob>,
}

impl State {
    /// Creates the volumes of containers that exist by now, and drops services that are gone.
    pub(super) fn advance(&mut self, now: Instant) {
        for services in self.services.values_mut() {
            for s in services.iter() {
                let at = s.container_at();
                if s.gone(now) && at > now {
                    let later = s.volumes.iter().map(|v| (at, v.clone()));
                    self.pending_volumes.extend(later);
                } else if at <= now {
                    for v in &s.volumes {
                        self.volumes
                            .entry(v.name.clone())
                            .or_insert_with(|| v.clone());
                    }
                }
            }
            services.retain(|s| !s.gone(now));
        }
        self.services.retain(|_, s| !s.is_empty());
        let (due, later) = std::mem::take(&mut self.pending_volumes)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending_volumes = later;
        for (_, v) in due {
            self.volumes.entry(v.name.clone()).or_insert(v);
        }
    }

    pub(super) fn live(&self, stack: &str) -> impl Iterator<Item = &Service> {
        self.services
            .get(stack)
            .into_iter()
            .flatten()
            .filter(|s| s.removed_at.is_none())
    }

    pub(super) fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .values()
            .flatten()
            .find(|s| s.name == name && s.removed_at.is_none())
    }

    pub(super) fn remaining(&self, stack: &str, now: Instant, data: bool) -> UndeployRemaining {
        let mine = |labels: &HashMap<String, String>| {
            labels.get(STACK_NAMESPACE).map(String::as_str) == Some(stack)
        };
        let services = self.services.get(stack).map_or(&[][..], Vec::as_slice);
        let count = |objects: &[Object]| objects.iter().filter(|o| mine(&o.labels)).count();
        UndeployRemaining {
            services: services.len(),
            containers: services.iter().filter(|s| s.look(now).container).count(),
            remote_tasks: 0,
            networks: count(&self.networks),
            volumes: if data {
                self.volumes_of(stack).len()
            } else {
                0
            },
            secrets: if data { count(&self.secrets) } else { 0 },
            configs: if data { count(&self.configs) } else { 0 },
        }
    }

    pub(super) fn volumes_of(&self, stack: &str) -> Vec<String> {
        self.volumes
            .values()
            .filter(|v| v.labels.get(STACK_NAMESPACE).map(String::as_str) == Some(stack))
            .map(|v| v.name.clone())
            .collect()
    }

    /// Containers (`name (state)`) that mount `volume`.
    pub(super) fn users_of(&self, volume: &str, now: Instant) -> Vec<String> {
        self.services
            .values()
            .flatten()
            .filter(|s| s.volumes.iter().any(|v| v.name == volume) && s.look(now).container)
            .map(|s| format!("{} (running)", s.task_id()))
            .collect()
    }
}

pub(super) fn sorted(map: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// The objects a deploy creates, read from the compose model as `docker stack deploy` names them.
pub(super) fn plan_objects(plan: &StackPlan) -> (Vec<Object>, Vec<Object>, Vec<Object>) {
    let c = &plan.compose;
    let stack = plan.stack.as_str();
    let base = plan.labels.for_stack(stack);
    let labelled = |own: &indexmap::IndexMap<String, String>| {
        let mut labels: HashMap<String, String> = own.clone().into_iter().collect();
        labels.extend(base.clone());
        labels
    };
    let mut networks: Vec<Object> = c
        .networks
        .iter()
        .filter(|(_, n)| !n.external.external)
        .map(|(key, n)| Object {
            name: resource_name(stack, key, n.name.as_deref()),
            labels: labelled(&n.labels),
        })
        .collect();
    let uses_default = c
        .services
        .values()
        .any(|s| s.networks.is_empty() || s.networks.contains_key("default"));
    if uses_default && !c.networks.contains_key("default") {
        networks.push(Object {
            name: scoped(stack, "default"),
            labels: base.clone(),
        });
    }
    let secrets = c
        .secrets
        .iter()
        .filter_map(|(key, s)| {
            let name = if s.external.external {
                let name = (s.external.name.clone().or(s.name.clone())).unwrap_or(key.clone());
                // An external secret is created only when the app owns its value.
                plan.secret_values.contains_key(&name).then_some(name)?
            } else {
                resource_name(stack, key, s.name.as_deref())
            };
            Some(Object {
                name,
                labels: labelled(&s.labels),
            })
        })
        .collect();
    let configs = c
        .configs
        .iter()
        .filter(|(_, cfg)| !cfg.external.external)
        .map(|(key, cfg)| Object {
            name: resource_name(stack, key, cfg.name.as_deref()),
            labels: labelled(&cfg.labels),
        })
        .collect();
    (networks, secrets, configs)
}

/// Ports as the Swarm engine shows them: `8080->80/tcp (host)`.
pub(super) fn port_text(p: &seatrial_recipe::compose::Port) -> String {
    let proto = format!("{:?}", p.protocol).to_lowercase();
    let mode = if p.mode == PortMode::Host {
        " (host)"
    } else {
        ""
    };
    match p.published {
        Some(published) => format!("{published}->{}/{proto}{mode}", p.target),
        None => format!("{}/{proto}{mode}", p.target),
    }
}

/// Why a service counts as failed — the Swarm engine's convergence rules.
pub(super) fn failure_reason(s: &ServiceStatus, max_failures: usize) -> Option<FailureReason> {
    match s.update_state.as_deref() {
        Some("paused") => Some(FailureReason::UpdatePaused),
        Some("rollback_started" | "rollback_paused" | "rollback_completed") => {
            Some(FailureReason::RolledBack)
        }
        _ if s.converged => None,
        _ if s.failed_tasks >= max_failures => Some(FailureReason::TasksFailing {
            failures: s.failed_tasks,
        }),
        _ => None,
    }
}
