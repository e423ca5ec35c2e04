//! One service's spec: its container (image, command, env, mounts, healthcheck, secrets and
//! configs by name), mode and replicas, published ports, resources, restart, placement, logging,
//! and its update and rollback policies.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig,
    ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecModeReplicatedJob, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use seatrial_recipe::Finding;
use seatrial_recipe::compose::{
    DeployMode, EndpointMode, FailureAction, PortMode, Protocol, RestartCondition, Service,
    UpdateConfig, UpdateOrder,
};
use seatrial_recipe::naming::scoped;

use super::mounts::mount;
use super::{ServicePlan, StackSpecs, error_finding, map, nanos};
use crate::StackPlan;

/// The spec of the service `key`; problems with its mounts go to `problems`. Networks, secrets
/// and configs are referred to by their names in `specs`.
pub(super) fn service(
    plan: &StackPlan,
    key: &str,
    svc: &Service,
    base: &HashMap<String, String>,
    specs: &StackSpecs,
    problems: &mut Vec<Finding>,
) -> ServicePlan {
    let stack = plan.stack.as_str();
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
        match mount(plan, vol, base) {
            Ok(m) => mounts.push(m),
            Err(message) => problems.push(error_finding(at, message, "")),
        }
    }

    let mut networks_attach: Vec<NetworkAttachmentConfig> = if svc.networks.is_empty() {
        vec![NetworkAttachmentConfig {
            target: Some(specs.network_name(stack, "default")),
            aliases: Some(vec![key.to_owned()]),
            ..Default::default()
        }]
    } else {
        svc.networks
            .iter()
            .map(|(net, cfg)| {
                let mut aliases = vec![key.to_owned()];
                aliases.extend(cfg.aliases.iter().cloned());
                NetworkAttachmentConfig {
                    target: Some(specs.network_name(stack, net)),
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
            secret_name: specs.secret_name(&r.source),
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
            config_name: specs.config_name(&r.source),
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
    ServicePlan {
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
