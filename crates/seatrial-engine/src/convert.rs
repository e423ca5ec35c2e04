//! Compose model → Swarm API specs, the way `docker stack deploy` converts them (client side).
//! Pure apart from reading `file:` sources; unit-tested without an engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bollard::models::{
    ConfigSpec, Driver, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit,
    Mount, MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    NetworkAttachmentConfig, NetworkCreateRequest, ResourceObject, SecretSpec, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use seatrial_recipe::compose::{
    self, ComposeFile, DeployMode, EndpointMode, FailureAction, MountKind, PortMode, Protocol,
    RestartCondition, UpdateConfig, UpdateOrder,
};
use seatrial_recipe::naming::{resource_name, scoped};
use seatrial_recipe::{Finding, SecretValue, Severity};

use crate::labels::RunLabels;

/// What to deploy: a stack name, its compose model, and the labels of this run.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub stack: String,
    pub compose: ComposeFile,
    /// Directory that relative `file:` sources and bind mounts resolve against.
    pub base_dir: PathBuf,
    pub labels: RunLabels,
    /// Values for `environment:`-sourced secrets/configs and for `KEY:` entries without a value.
    pub env: HashMap<String, String>,
    /// Values of secrets the app owns, by engine name. A secret the compose file declares
    /// `external` (as Co-op Cloud recipes do) is created from here when it is listed.
    pub secret_values: HashMap<String, SecretValue>,
}

/// A network, secret or config the stack uses: created by the deploy, or external (must exist).
#[derive(Debug, Clone)]
pub struct ObjectPlan<S> {
    pub key: String,
    pub name: String,
    /// `None` for external objects.
    pub spec: Option<S>,
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub key: String,
    pub name: String,
    pub spec: ServiceSpec,
}

/// Everything the engine will create or update for a stack, in creation order.
#[derive(Debug, Clone)]
pub struct StackSpecs {
    pub networks: Vec<ObjectPlan<NetworkCreateRequest>>,
    pub secrets: Vec<ObjectPlan<SecretSpec>>,
    pub configs: Vec<ObjectPlan<ConfigSpec>>,
    pub services: Vec<ServicePlan>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn map(labels: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    labels.into_iter().collect()
}

/// Converts a plan into engine specs. Every problem found is reported at once.
pub fn convert(plan: &StackPlan) -> Result<StackSpecs, Vec<Finding>> {
    let mut problems = seatrial_recipe::naming::guard_names(&plan.compose, &plan.stack);
    if let Err(message) = seatrial_recipe::naming::check_stack_name(&plan.stack) {
        problems.push(Finding {
            severity: Severity::Error,
            at: "stack name".into(),
            message,
            hint: "choose another --name".into(),
        });
    }
    let c = &plan.compose;
    let stack = plan.stack.as_str();
    let base = plan.labels.for_stack(stack);

    let mut networks = Vec::new();
    let uses_default = c
        .services
        .values()
        .any(|s| s.networks.is_empty() || s.networks.contains_key("default"));
    let mut network_keys: Vec<(String, compose::Network)> = c
        .networks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if uses_default && !c.networks.contains_key("default") {
        network_keys.push(("default".into(), compose::Network::default()));
    }
    for (key, net) in &network_keys {
        if net.external.external {
            let name = net
                .external
                .name
                .clone()
                .or(net.name.clone())
                .unwrap_or(key.clone());
            networks.push(ObjectPlan {
                key: key.clone(),
                name,
                spec: None,
            });
            continue;
        }
        let name = resource_name(stack, key, net.name.as_deref());
        let mut labels = map(net.labels.clone());
        labels.extend(base.clone());
        networks.push(ObjectPlan {
            key: key.clone(),
            name: name.clone(),
            spec: Some(NetworkCreateRequest {
                name,
                driver: Some(net.driver.clone().unwrap_or_else(|| "overlay".into())),
                scope: Some("swarm".into()),
                attachable: net.attachable,
                internal: net.internal,
                options: (!net.driver_opts.is_empty()).then(|| map(net.driver_opts.clone())),
                labels: Some(labels),
                ..Default::default()
            }),
        });
    }

    let mut secrets = Vec::new();
    for (key, s) in &c.secrets {
        let at = format!("secrets.{key}");
        if s.external.external {
            let name = s
                .external
                .name
                .clone()
                .or(s.name.clone())
                .unwrap_or(key.clone());
            let spec = plan.secret_values.get(&name).map(|value| {
                let mut labels = map(s.labels.clone());
                labels.extend(base.clone());
                SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(labels),
                    data: Some(base64::engine::general_purpose::STANDARD.encode(value.expose())),
                    ..Default::default()
                }
            });
            secrets.push(ObjectPlan {
                key: key.clone(),
                name,
                spec,
            });
            continue;
        }
        let name = resource_name(stack, key, s.name.as_deref());
        let data = match read_source(plan, &at, s.file.as_deref(), None, s.environment.as_deref()) {
            Ok(d) => d,
            Err(f) => {
                problems.push(f);
                continue;
            }
        };
        let mut labels = map(s.labels.clone());
        labels.extend(base.clone());
        secrets.push(ObjectPlan {
            key: key.clone(),
            name: name.clone(),
            spec: Some(SecretSpec {
                name: Some(name),
                labels: Some(labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
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

    let mut configs = Vec::new();
    for (key, cfg) in &c.configs {
        let at = format!("configs.{key}");
        if cfg.external.external {
            let name = cfg
                .external
                .name
                .clone()
                .or(cfg.name.clone())
                .unwrap_or(key.clone());
            configs.push(ObjectPlan {
                key: key.clone(),
                name,
                spec: None,
            });
            continue;
        }
        let name = resource_name(stack, key, cfg.name.as_deref());
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
        let mut labels = map(cfg.labels.clone());
        labels.extend(base.clone());
        configs.push(ObjectPlan {
            key: key.clone(),
            name: name.clone(),
            spec: Some(ConfigSpec {
                name: Some(name),
                labels: Some(labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
                templating: cfg.template_driver.clone().map(|t| Driver {
                    name: t,
                    options: None,
                }),
            }),
        });
    }

    let network_name = |key: &str| {
        networks
            .iter()
            .find(|n| n.key == key)
            .map_or_else(|| scoped(stack, key), |n| n.name.clone())
    };
    let secret_name = |key: &str| {
        secrets
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.name.clone())
    };
    let config_name = |key: &str| {
        configs
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.name.clone())
    };

    let mut services = Vec::new();
    for (key, svc) in &c.services {
        let name = scoped(stack, key);
        let mut service_labels = map(svc
            .deploy
            .as_ref()
            .map(|d| d.labels.clone())
            .unwrap_or_default());
        service_labels.extend(base.clone());
        let mut container_labels = map(svc.labels.clone());
        container_labels.insert(crate::labels::STACK_NAMESPACE.into(), stack.into());

        let mut env: Vec<String> = svc
            .environment
            .iter()
            .filter_map(|(k, v)| match v {
                Some(v) => Some(format!("{k}={v}")),
                None => plan.env.get(k).map(|v| format!("{k}={v}")),
            })
            .collect();
        env.sort();

        let mut mounts = Vec::new();
        for (i, vol) in svc.volumes.iter().enumerate() {
            let at = format!("services.{key}.volumes[{i}]");
            match mount(plan, vol, &base) {
                Ok(m) => mounts.push(m),
                Err(message) => problems.push(Finding {
                    severity: Severity::Error,
                    at,
                    message,
                    hint: String::new(),
                }),
            }
        }

        let mut networks_attach: Vec<NetworkAttachmentConfig> = if svc.networks.is_empty() {
            vec![NetworkAttachmentConfig {
                target: Some(network_name("default")),
                aliases: Some(vec![key.clone()]),
                ..Default::default()
            }]
        } else {
            svc.networks
                .iter()
                .map(|(net, cfg)| {
                    let mut aliases = vec![key.clone()];
                    aliases.extend(cfg.aliases.iter().cloned());
                    NetworkAttachmentConfig {
                        target: Some(network_name(net)),
                        aliases: Some(aliases),
                        ..Default::default()
                    }
                })
                .collect()
        };
        networks_attach.sort_by(|a, b| a.target.cmp(&b.target));

        let secret_refs = svc
            .secrets
            .iter()
            .map(|r| TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(r.target.clone().unwrap_or_else(|| r.source.clone())),
                    uid: Some(r.uid.clone().unwrap_or_else(|| "0".into())),
                    gid: Some(r.gid.clone().unwrap_or_else(|| "0".into())),
                    mode: Some(r.mode.unwrap_or(0o444)),
                }),
                secret_id: None,
                secret_name: secret_name(&r.source),
            })
            .collect::<Vec<_>>();
        let config_refs = svc
            .configs
            .iter()
            .map(|r| TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(r.target.clone().unwrap_or_else(|| format!("/{}", r.source))),
                    uid: Some(r.uid.clone().unwrap_or_else(|| "0".into())),
                    gid: Some(r.gid.clone().unwrap_or_else(|| "0".into())),
                    mode: Some(r.mode.unwrap_or(0o444)),
                }),
                config_id: None,
                config_name: config_name(&r.source),
                runtime: None,
            })
            .collect::<Vec<_>>();

        let health_check = svc.healthcheck.as_ref().map(|h| HealthConfig {
            test: if h.disables() {
                Some(vec!["NONE".into()])
            } else {
                h.test.clone()
            },
            interval: h.interval.map(nanos),
            timeout: h.timeout.map(nanos),
            retries: h.retries.map(|r| r as i64),
            start_period: h.start_period.map(nanos),
            start_interval: h.start_interval.map(nanos),
        });

        let deploy = svc.deploy.clone().unwrap_or_default();
        let container = TaskSpecContainerSpec {
            image: svc.image.clone(),
            labels: Some(container_labels),
            command: svc.entrypoint.clone(),
            args: svc.command.clone(),
            hostname: svc.hostname.clone(),
            env: (!env.is_empty()).then_some(env),
            dir: svc.working_dir.clone(),
            user: svc.user.clone(),
            tty: svc.tty,
            open_stdin: svc.stdin_open,
            read_only: svc.read_only,
            mounts: (!mounts.is_empty()).then_some(mounts),
            stop_signal: svc.stop_signal.clone(),
            stop_grace_period: svc.stop_grace_period.map(nanos),
            health_check,
            hosts: (!svc.extra_hosts.is_empty()).then(|| {
                svc.extra_hosts
                    .iter()
                    .map(|h| match h.split_once([':', '=']) {
                        Some((host, ip)) => format!("{ip} {host}"),
                        None => h.clone(),
                    })
                    .collect()
            }),
            secrets: (!secret_refs.is_empty()).then_some(secret_refs),
            configs: (!config_refs.is_empty()).then_some(config_refs),
            init: svc.init,
            sysctls: (!svc.sysctls.is_empty()).then(|| map(svc.sysctls.clone())),
            capability_add: (!svc.cap_add.is_empty()).then(|| svc.cap_add.clone()),
            capability_drop: (!svc.cap_drop.is_empty()).then(|| svc.cap_drop.clone()),
            ..Default::default()
        };

        let mode = match deploy.mode.unwrap_or(DeployMode::Replicated) {
            DeployMode::Replicated => ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(deploy.replicas.unwrap_or(1) as i64),
                }),
                ..Default::default()
            },
            DeployMode::Global => ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            },
            DeployMode::ReplicatedJob => ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(deploy.replicas.unwrap_or(1) as i64),
                }),
                ..Default::default()
            },
            DeployMode::GlobalJob => ServiceSpecMode {
                global_job: Some(HashMap::new()),
                ..Default::default()
            },
        };

        let ports: Vec<EndpointPortConfig> = svc
            .ports
            .iter()
            .map(|p| EndpointPortConfig {
                protocol: Some(match p.protocol {
                    Protocol::Tcp => EndpointPortConfigProtocolEnum::TCP,
                    Protocol::Udp => EndpointPortConfigProtocolEnum::UDP,
                    Protocol::Sctp => EndpointPortConfigProtocolEnum::SCTP,
                }),
                target_port: Some(i64::from(p.target)),
                published_port: p.published.map(i64::from),
                publish_mode: Some(match p.mode {
                    PortMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                    PortMode::Host => EndpointPortConfigPublishModeEnum::HOST,
                }),
                ..Default::default()
            })
            .collect();
        let endpoint_spec = Some(EndpointSpec {
            mode: Some(match deploy.endpoint_mode {
                Some(EndpointMode::Dnsrr) => EndpointSpecModeEnum::DNSRR,
                _ => EndpointSpecModeEnum::VIP,
            }),
            ports: (!ports.is_empty()).then_some(ports),
        });

        let resources = deploy.resources.as_ref().map(|r| TaskSpecResources {
            limits: r.limits.as_ref().map(|l| Limit {
                nano_cpus: l.cpus.map(|c| (c * 1e9) as i64),
                memory_bytes: l.memory,
                pids: l.pids.map(|p| p as i64),
            }),
            reservations: r.reservations.as_ref().map(|l| ResourceObject {
                nano_cpus: l.cpus.map(|c| (c * 1e9) as i64),
                memory_bytes: l.memory,
                generic_resources: None,
            }),
            ..Default::default()
        });
        let restart_policy = deploy
            .restart_policy
            .as_ref()
            .map(|r| TaskSpecRestartPolicy {
                condition: r.condition.map(|c| match c {
                    RestartCondition::None => TaskSpecRestartPolicyConditionEnum::NONE,
                    RestartCondition::OnFailure => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
                    RestartCondition::Any => TaskSpecRestartPolicyConditionEnum::ANY,
                }),
                delay: r.delay.map(nanos),
                max_attempts: r.max_attempts.map(|m| m as i64),
                window: r.window.map(nanos),
            });
        let placement = deploy.placement.as_ref().map(|p| TaskSpecPlacement {
            constraints: (!p.constraints.is_empty()).then(|| p.constraints.clone()),
            preferences: (!p.preferences.is_empty()).then(|| {
                p.preferences
                    .iter()
                    .map(|pref| TaskSpecPlacementPreferences {
                        spread: Some(TaskSpecPlacementSpread {
                            spread_descriptor: Some(pref.spread.clone()),
                        }),
                    })
                    .collect()
            }),
            max_replicas: p.max_replicas_per_node.map(|m| m as i64),
            platforms: None,
        });
        let log_driver = svc.logging.as_ref().and_then(|l| {
            l.driver.clone().map(|name| TaskSpecLogDriver {
                name: Some(name),
                options: Some(map(l.options.clone())),
            })
        });

        services.push(ServicePlan {
            key: key.clone(),
            name: name.clone(),
            spec: ServiceSpec {
                name: Some(name),
                labels: Some(service_labels),
                task_template: Some(TaskSpec {
                    container_spec: Some(container),
                    resources,
                    restart_policy,
                    placement,
                    networks: Some(networks_attach),
                    log_driver,
                    ..Default::default()
                }),
                mode: Some(mode),
                update_config: deploy.update_config.as_ref().map(update_config),
                rollback_config: deploy.rollback_config.as_ref().map(rollback_config),
                endpoint_spec,
                ..Default::default()
            },
        });
    }

    if problems.is_empty() {
        Ok(StackSpecs {
            networks,
            secrets,
            configs,
            services,
        })
    } else {
        Err(problems)
    }
}

fn update_config(u: &UpdateConfig) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(u.parallelism.unwrap_or(1) as i64),
        delay: u.delay.map(nanos),
        failure_action: u.failure_action.map(|a| match a {
            FailureAction::Continue => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
            FailureAction::Pause => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
            FailureAction::Rollback => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
        }),
        monitor: u.monitor.map(nanos),
        max_failure_ratio: u.max_failure_ratio,
        order: u.order.map(|o| match o {
            UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
        }),
    }
}

fn rollback_config(u: &UpdateConfig) -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(u.parallelism.unwrap_or(1) as i64),
        delay: u.delay.map(nanos),
        failure_action: u.failure_action.and_then(|a| match a {
            FailureAction::Continue => Some(ServiceSpecRollbackConfigFailureActionEnum::CONTINUE),
            FailureAction::Pause => Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            // A rollback cannot roll back; Swarm has no such action.
            FailureAction::Rollback => None,
        }),
        monitor: u.monitor.map(nanos),
        max_failure_ratio: u.max_failure_ratio,
        order: u.order.map(|o| match o {
            UpdateOrder::StopFirst => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
            UpdateOrder::StartFirst => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        }),
    }
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
    let problem = |message: String, hint: &str| Finding {
        severity: Severity::Error,
        at: at.to_owned(),
        message,
        hint: hint.to_owned(),
    };
    if let Some(content) = content {
        return Ok(content.as_bytes().to_vec());
    }
    if let Some(var) = environment {
        return plan
            .env
            .get(var)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| {
                problem(
                    format!("environment variable `{var}` is not set"),
                    "set it in the app env",
                )
            });
    }
    let Some(file) = file else {
        return Err(problem(
            "no value source".into(),
            "set `file:`, `content:` or `environment:`",
        ));
    };
    let path =
        inside(&plan.base_dir, file).map_err(|m| problem(m, "keep sources inside the recipe"))?;
    std::fs::read(&path).map_err(|e| {
        problem(
            format!("cannot read {}: {e}", path.display()),
            "create the file or fix the path",
        )
    })
}

fn mount(
    plan: &StackPlan,
    vol: &compose::ServiceVolume,
    base_labels: &HashMap<String, String>,
) -> Result<Mount, String> {
    let stack = plan.stack.as_str();
    Ok(match vol.kind {
        MountKind::Volume => {
            let (source, driver, labels) = match &vol.source {
                Some(key) => {
                    let def = plan.compose.volumes.get(key).cloned().unwrap_or_default();
                    let name = if def.external.external {
                        def.external
                            .name
                            .clone()
                            .or(def.name.clone())
                            .unwrap_or(key.clone())
                    } else {
                        resource_name(stack, key, def.name.as_deref())
                    };
                    let mut labels = map(def.labels.clone());
                    labels.extend(base_labels.clone());
                    let driver = (def.driver.is_some() || !def.driver_opts.is_empty()).then(|| {
                        MountVolumeOptionsDriverConfig {
                            name: def.driver.clone(),
                            options: Some(map(def.driver_opts.clone())),
                        }
                    });
                    (Some(name), driver, labels)
                }
                None => (None, None, base_labels.clone()),
            };
            Mount {
                target: Some(vol.target.clone()),
                source,
                typ: Some(MountType::VOLUME),
                read_only: Some(vol.read_only),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(vol.no_copy),
                    labels: Some(labels),
                    driver_config: driver,
                    subpath: vol.subpath.clone(),
                }),
                ..Default::default()
            }
        }
        MountKind::Bind => {
            let src = vol.source.as_deref().unwrap_or_default();
            // A bind mount is the engine's business (e.g. the docker socket for a proxy): host
            // paths are allowed; relative ones resolve against the recipe.
            let path = if Path::new(src).is_absolute() {
                PathBuf::from(src)
            } else {
                plan.base_dir.join(src)
            };
            Mount {
                target: Some(vol.target.clone()),
                source: Some(path.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(vol.read_only),
                ..Default::default()
            }
        }
        MountKind::Tmpfs => Mount {
            target: Some(vol.target.clone()),
            typ: Some(MountType::TMPFS),
            read_only: Some(vol.read_only),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: vol.tmpfs_size,
                mode: vol.tmpfs_mode,
                options: None,
            }),
            ..Default::default()
        },
    })
}
