//! Compose model → Swarm API specs, the way `docker stack deploy` converts them (client side).
//! Pure apart from reading `file:` sources. The specs are the Docker client's types, so this
//! module stays inside the crate: callers check a plan with [`crate::Engine::check_plan`].
//!
//! - [`objects`]: the stack's networks, secrets and configs (and where their data comes from);
//! - [`service`]: one service's spec (container, mode, ports, resources, update policy);
//! - [`mounts`]: a service's volumes, bind mounts and tmpfs.

mod mounts;
mod objects;
mod service;

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ConfigSpec, NetworkCreateRequest, SecretSpec, ServiceSpec};
use indexmap::IndexMap;
use seatrial_recipe::compose::External;
use seatrial_recipe::naming::scoped;
use seatrial_recipe::{Finding, Severity};

use crate::{EngineError, Result, StackPlan};

/// A network, secret or config the stack uses: created by the deploy, or external (must exist).
#[derive(Debug, Clone)]
pub(crate) struct ObjectPlan<S> {
    pub key: String,
    pub name: String,
    /// `None` for external objects.
    pub spec: Option<S>,
}

#[derive(Debug, Clone)]
pub(crate) struct ServicePlan {
    pub name: String,
    pub spec: ServiceSpec,
}

/// Everything the engine will create or update for a stack, in creation order.
#[derive(Debug, Clone)]
pub(crate) struct StackSpecs {
    pub networks: Vec<ObjectPlan<NetworkCreateRequest>>,
    pub secrets: Vec<ObjectPlan<SecretSpec>>,
    pub configs: Vec<ObjectPlan<ConfigSpec>>,
    pub services: Vec<ServicePlan>,
}

impl StackSpecs {
    /// The engine name of the stack's network `key` (scoped to the stack when undeclared).
    fn network_name(&self, stack: &str, key: &str) -> String {
        self.networks
            .iter()
            .find(|n| n.key == key)
            .map_or_else(|| scoped(stack, key), |n| n.name.clone())
    }

    fn secret_name(&self, key: &str) -> Option<String> {
        name_of(&self.secrets, key)
    }

    fn config_name(&self, key: &str) -> Option<String> {
        name_of(&self.configs, key)
    }
}

fn name_of<S>(objects: &[ObjectPlan<S>], key: &str) -> Option<String> {
    objects
        .iter()
        .find(|o| o.key == key)
        .map(|o| o.name.clone())
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn map(labels: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    labels.into_iter().collect()
}

/// The engine name of an external object: its `external.name`, else its `name`, else its key.
fn external_name(external: &External, name: Option<&String>, key: &str) -> String {
    external
        .name
        .clone()
        .or(name.cloned())
        .unwrap_or_else(|| key.to_owned())
}

/// An object's own labels with the run's labels over them.
fn labelled(
    own: &IndexMap<String, String>,
    base: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut labels = map(own.clone());
    labels.extend(base.clone());
    labels
}

/// A finding that stops the deploy.
pub(crate) fn error_finding(
    at: impl Into<String>,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> Finding {
    Finding {
        severity: Severity::Error,
        at: at.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

/// Converts a plan into engine specs. Every problem found is reported at once, as
/// [`EngineError::Invalid`].
pub(crate) fn convert(plan: &StackPlan) -> Result<StackSpecs> {
    let mut problems = seatrial_recipe::naming::guard_names(&plan.compose, &plan.stack);
    if let Err(message) = seatrial_recipe::naming::check_stack_name(&plan.stack) {
        problems.push(error_finding(
            "stack name",
            message,
            "choose another --name",
        ));
    }
    let base = plan.labels.for_stack(&plan.stack);
    let mut specs = StackSpecs {
        networks: objects::networks(plan, &base),
        secrets: objects::secrets(plan, &base, &mut problems),
        configs: objects::configs(plan, &base, &mut problems),
        services: Vec::new(),
    };
    specs.services = plan
        .compose
        .services
        .iter()
        .map(|(key, svc)| service::service(plan, key, svc, &base, &specs, &mut problems))
        .collect();
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(EngineError::Invalid {
            stack: plan.stack.clone(),
            findings: problems,
        })
    }
}
