//! The stack's networks, secrets and configs: named for the stack, labelled for the run, their
//! data read from the recipe (`file:`), the app env (`environment:`) or the compose file
//! (`content:`). External ones are only named: they must exist (or, for a secret the app owns,
//! are created from its value).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::models::{ConfigSpec, Driver, NetworkCreateRequest, SecretSpec};
use seatrial_recipe::Finding;
use seatrial_recipe::compose;
use seatrial_recipe::naming::resource_name;

use super::{ObjectPlan, error_finding, external_name, labelled, map};
use crate::StackPlan;

fn base64(data: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The declared networks, plus `default` when a service uses it without declaring it.
pub(super) fn networks(
    plan: &StackPlan,
    base: &HashMap<String, String>,
) -> Vec<ObjectPlan<NetworkCreateRequest>> {
    let c = &plan.compose;
    let uses_default = c
        .services
        .values()
        .any(|s| s.networks.is_empty() || s.networks.contains_key("default"));
    let mut declared: Vec<(String, compose::Network)> = c
        .networks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if uses_default && !c.networks.contains_key("default") {
        declared.push(("default".into(), compose::Network::default()));
    }
    declared
        .into_iter()
        .map(|(key, net)| {
            if net.external.external {
                let name = external_name(&net.external, net.name.as_ref(), &key);
                return ObjectPlan {
                    key,
                    name,
                    spec: None,
                };
            }
            let name = resource_name(&plan.stack, &key, net.name.as_deref());
            ObjectPlan {
                key,
                name: name.clone(),
                spec: Some(NetworkCreateRequest {
                    name,
                    driver: Some(net.driver.clone().unwrap_or_else(|| "overlay".into())),
                    scope: Some("swarm".into()),
                    attachable: net.attachable,
                    internal: net.internal,
                    options: (!net.driver_opts.is_empty()).then(|| map(net.driver_opts.clone())),
                    labels: Some(labelled(&net.labels, base)),
                    ..Default::default()
                }),
            }
        })
        .collect()
}

/// The declared secrets; an external one gets a spec only when the plan holds its value.
pub(super) fn secrets(
    plan: &StackPlan,
    base: &HashMap<String, String>,
    problems: &mut Vec<Finding>,
) -> Vec<ObjectPlan<SecretSpec>> {
    let mut secrets = Vec::new();
    for (key, s) in &plan.compose.secrets {
        let at = format!("secrets.{key}");
        if s.external.external {
            let name = external_name(&s.external, s.name.as_ref(), key);
            let spec = plan.secret_values.get(&name).map(|value| SecretSpec {
                name: Some(name.clone()),
                labels: Some(labelled(&s.labels, base)),
                data: Some(base64(value.expose())),
                ..Default::default()
            });
            secrets.push(ObjectPlan {
                key: key.clone(),
                name,
                spec,
            });
            continue;
        }
        let name = resource_name(&plan.stack, key, s.name.as_deref());
        let data = match read_source(plan, &at, s.file.as_deref(), None, s.environment.as_deref()) {
            Ok(d) => d,
            Err(f) => {
                problems.push(f);
                continue;
            }
        };
        secrets.push(ObjectPlan {
            key: key.clone(),
            name: name.clone(),
            spec: Some(SecretSpec {
                name: Some(name),
                labels: Some(labelled(&s.labels, base)),
                data: Some(base64(data)),
                driver: s.driver.clone().map(|d| Driver {
                    name: d,
                    options: Some(map(s.driver_opts.clone())),
                }),
                templating: s.template_driver.clone().map(|t| Driver {
                    name: t,
                    options: None,
                }),
            }),
        });
    }
    secrets
}

/// The declared configs.
pub(super) fn configs(
    plan: &StackPlan,
    base: &HashMap<String, String>,
    problems: &mut Vec<Finding>,
) -> Vec<ObjectPlan<ConfigSpec>> {
    let mut configs = Vec::new();
    for (key, cfg) in &plan.compose.configs {
        let at = format!("configs.{key}");
        if cfg.external.external {
            let name = external_name(&cfg.external, cfg.name.as_ref(), key);
            configs.push(ObjectPlan {
                key: key.clone(),
                name,
                spec: None,
            });
            continue;
        }
        let name = resource_name(&plan.stack, key, cfg.name.as_deref());
        let data = match read_source(
            plan,
            &at,
            cfg.file.as_deref(),
            cfg.content.as_deref(),
            cfg.environment.as_deref(),
        ) {
            Ok(d) => d,
            Err(f) => {
                problems.push(f);
                continue;
            }
        };
        configs.push(ObjectPlan {
            key: key.clone(),
            name: name.clone(),
            spec: Some(ConfigSpec {
                name: Some(name),
                labels: Some(labelled(&cfg.labels, base)),
                data: Some(base64(data)),
                templating: cfg.template_driver.clone().map(|t| Driver {
                    name: t,
                    options: None,
                }),
            }),
        });
    }
    configs
}

/// Resolves a relative path inside the recipe; refuses absolute paths, `..` and symlinks out.
fn inside(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let canonical_base = base
        .canonicalize()
        .map_err(|e| format!("cannot read the recipe directory {}: {e}", base.display()))?;
    seatrial_recipe::recipe::inside_recipe(&canonical_base, rel)
        .map_err(|reason| format!("{rel:?} {reason}"))
}

fn read_source(
    plan: &StackPlan,
    at: &str,
    file: Option<&str>,
    content: Option<&str>,
    environment: Option<&str>,
) -> Result<Vec<u8>, Finding> {
    if let Some(content) = content {
        return Ok(content.as_bytes().to_vec());
    }
    if let Some(var) = environment {
        return plan
            .env
            .get(var)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| {
                error_finding(
                    at,
                    format!("environment variable `{var}` is not set"),
                    "set it in the app env",
                )
            });
    }
    let Some(file) = file else {
        return Err(error_finding(
            at,
            "no value source",
            "set `file:`, `content:` or `environment:`",
        ));
    };
    let path = inside(&plan.base_dir, file)
        .map_err(|m| error_finding(at, m, "keep sources inside the recipe"))?;
    std::fs::read(&path).map_err(|e| {
        error_finding(
            at,
            format!("cannot read {}: {e}", path.display()),
            "create the file or fix the path",
        )
    })
}
