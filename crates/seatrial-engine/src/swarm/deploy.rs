//! Deploying a stack: check everything that can be checked before creating anything (stack
//! taken or missing, name clashes, external objects, images), then create or update networks,
//! secrets, configs and services in that order. When a deploy fails midway, exactly what it
//! created is removed again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{Config, IdResponse, Secret, Service, ServiceSpec, Volume};
use bollard::query_parameters::{CreateImageOptions, UpdateServiceOptions};
use futures_util::StreamExt;
use seatrial_recipe::Finding;
use tracing::{debug, info, warn};

use super::inventory::Listed;
use super::remove::Targets;
use super::{SwarmEngine, is_not_found};
use crate::convert::{self, ObjectPlan, StackSpecs, error_finding};
use crate::labels::{CREATED, STACK_NAMESPACE};
use crate::{DeployMode, DeployOptions, DeployOutcome, EngineError, PullPolicy, Result, StackPlan};

/// How long removing what a failed deploy created may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

impl SwarmEngine {
    /// Creates or updates the stack; see [`crate::Engine::deploy`].
    pub(super) async fn deploy_plan(
        &self,
        plan: &StackPlan,
        options: &DeployOptions,
    ) -> Result<DeployOutcome> {
        let mut specs = convert::convert(plan)?;
        let existing = self.in_stack::<Service>(&plan.stack).await?;
        // Volumes are node-local: pin what holds data to this manager's node, or refuse.
        self.pin_node_local(plan, &mut specs, &existing).await?;
        self.preflight(plan, &specs, options, &existing).await?;
        let volumes_before: HashSet<String> = self.volume_names(&plan.stack).await?;
        let mut outcome = DeployOutcome::default();
        match self.apply(plan, specs, &existing, &mut outcome).await {
            Ok(()) => Ok(outcome),
            Err(e) => {
                warn!(stack = %plan.stack, error = %e, "deploy failed midway; removing what it created");
                // Remove exactly what this deploy created; never volumes that were there before.
                let volumes_after = self.volume_names(&plan.stack).await.unwrap_or_default();
                let targets = Targets {
                    services: outcome.created_services.clone(),
                    networks: outcome.created_networks.iter().cloned().collect(),
                    volumes: &volumes_after - &volumes_before,
                    secrets: outcome.created_secrets.iter().cloned().collect(),
                    configs: outcome.created_configs.iter().cloned().collect(),
                    whole_stack: None,
                };
                if let Err(cleanup) = self
                    .remove(
                        &plan.stack,
                        targets,
                        CLEANUP_TIMEOUT,
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

    async fn volume_names(&self, stack: &str) -> Result<HashSet<String>> {
        let volumes = self.in_stack::<Volume>(stack).await?;
        Ok(volumes.into_iter().map(|v| v.name).collect())
    }

    /// Checks everything that can be checked before creating anything.
    async fn preflight(
        &self,
        plan: &StackPlan,
        specs: &StackSpecs,
        options: &DeployOptions,
        existing: &[Service],
    ) -> Result<()> {
        let stack = &plan.stack;
        let mut problems: Vec<Finding> = Vec::new();
        match options.mode {
            DeployMode::Create if !existing.is_empty() => {
                let names: Vec<&str> = existing.iter().filter_map(Listed::name).collect();
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
                    let ns = found.labels().and_then(|l| l.get(STACK_NAMESPACE));
                    if ns != Some(stack) {
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
                (None, Err(e)) if is_not_found(&e) => problems.push(error_finding(
                    format!("networks.{}", net.key),
                    format!("external network `{}` does not exist", net.name),
                    "create it first (docker network create --driver overlay --attachable NAME)",
                )),
                (Some(_), Ok(n)) => {
                    let ns = n.labels.as_ref().and_then(|l| l.get(STACK_NAMESPACE));
                    if ns != Some(stack) {
                        problems.push(error_finding(
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
        self.missing_externals::<Secret, _>(
            &specs.secrets,
            "create it first (docker secret create NAME FILE)",
            &mut problems,
        )
        .await?;
        self.missing_externals::<Config, _>(
            &specs.configs,
            "create it first (docker config create NAME FILE)",
            &mut problems,
        )
        .await?;
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
                problems.push(error_finding(
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

    /// A finding for each external secret or config (`T`) of the plan that does not exist.
    async fn missing_externals<T: Listed, S>(
        &self,
        objects: &[ObjectPlan<S>],
        hint: &str,
        problems: &mut Vec<Finding>,
    ) -> Result<()> {
        let external: Vec<String> = objects
            .iter()
            .filter(|o| o.spec.is_none())
            .map(|o| o.name.clone())
            .collect();
        let found = self.ids_by_name::<T>(&external).await?;
        for o in objects.iter().filter(|o| o.spec.is_none()) {
            if !found.contains_key(&o.name) {
                problems.push(error_finding(
                    format!("{}.{}", T::KIND.plural(), o.key),
                    format!("external {} `{}` does not exist", T::KIND.one(), o.name),
                    hint,
                ));
            }
        }
        Ok(())
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

    /// Creates the secrets or configs (`T`) of the plan that do not exist yet; returns the id
    /// of each by name, created or found. They are immutable: a versioned name that exists
    /// holds this version.
    async fn create_missing<T, S, F, Fut>(
        &self,
        objects: &[ObjectPlan<S>],
        create: F,
        created: &mut Vec<String>,
    ) -> Result<HashMap<String, String>>
    where
        T: Listed,
        S: Clone,
        F: Fn(S) -> Fut,
        Fut: Future<Output = std::result::Result<IdResponse, BollardError>>,
    {
        let names: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
        let mut ids = self.ids_by_name::<T>(&names).await?;
        for o in objects {
            let Some(spec) = &o.spec else { continue };
            if ids.contains_key(&o.name) {
                continue;
            }
            let id = create(spec.clone())
                .await
                .map_err(EngineError::api(format!(
                    "creating {} `{}`",
                    T::KIND.one(),
                    o.name
                )))?
                .id;
            ids.insert(o.name.clone(), id);
            created.push(o.name.clone());
        }
        Ok(ids)
    }

    async fn apply(
        &self,
        plan: &StackPlan,
        mut specs: StackSpecs,
        existing: &[Service],
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
        let docker = &self.docker;
        let secret_ids = self
            .create_missing::<Secret, _, _, _>(
                &specs.secrets,
                |spec| docker.create_secret(spec),
                &mut outcome.created_secrets,
            )
            .await?;
        let config_ids = self
            .create_missing::<Config, _, _, _>(
                &specs.configs,
                |spec| docker.create_config(spec),
                &mut outcome.created_configs,
            )
            .await?;
        let by_name: HashMap<String, &Service> = existing
            .iter()
            .filter_map(|s| Some((s.name()?.to_owned(), s)))
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
                    if let Some(created) = current.labels().and_then(|l| l.get(CREATED))
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
}
