//! Volumes are node-local: a task's volume (and a bind mount's host path) lives on the node the
//! task runs on, and seatrial reaches — inspects, snapshots, restores, removes — only the
//! volumes of the manager it talks to. So on a swarm of more than one node, every service that
//! mounts a volume or a host path is pinned to the manager's node (`node.id==<id>`, and the
//! label [`PINNED`] saying why); a service whose own placement cannot hold on that node is
//! refused before anything is created. On a single-node swarm nothing changes. A `global`
//! service with a volume is pinned too: it then runs on the manager only.
//!
//! The constraint evaluator follows swarmkit's (`manager/constraint/constraint.go`): `==` or
//! `!=`, keys case-insensitive, values compared case-insensitively, a label that is not set
//! reads as the empty string.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{MountType, Node, Service, ServiceSpec, TaskSpecPlacement};
use seatrial_recipe::Finding;
use tracing::info;

use super::SwarmEngine;
use crate::convert::{ServicePlan, StackSpecs, error_finding};
use crate::labels::PINNED;
use crate::{EngineError, Result, StackPlan};

/// Where to read the rule.
const DOCS: &str = "docs/cluster.md, \"Volumes\"";

/// What a constraint can be evaluated against: the node's facts as the swarm reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeFacts {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub availability: String,
    pub os: String,
    pub arch: String,
    pub addr: String,
    pub labels: HashMap<String, String>,
    pub engine_labels: HashMap<String, String>,
}

impl NodeFacts {
    pub(crate) fn from_node(node: &Node) -> Self {
        let spec = node.spec.clone().unwrap_or_default();
        let description = node.description.clone().unwrap_or_default();
        let platform = description.platform.unwrap_or_default();
        Self {
            id: node.id.clone().unwrap_or_default(),
            hostname: description.hostname.unwrap_or_default(),
            role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
            availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
            os: platform.os.unwrap_or_default(),
            arch: platform.architecture.unwrap_or_default(),
            addr: node
                .status
                .as_ref()
                .and_then(|s| s.addr.clone())
                .unwrap_or_default(),
            labels: spec.labels.unwrap_or_default(),
            engine_labels: description
                .engine
                .and_then(|e| e.labels)
                .unwrap_or_default(),
        }
    }

    /// `` `c1` (node id oxde…) ``: how a message names the node.
    fn named(&self) -> String {
        format!("`{}` (node id {})", self.hostname, self.id)
    }
}

/// The constraint that keeps a service on `node_id`.
pub(crate) fn pin_constraint(node_id: &str) -> String {
    format!("node.id=={node_id}")
}

/// Whether `constraint` holds on `node`; `Err` says why seatrial cannot tell.
pub(crate) fn holds(constraint: &str, node: &NodeFacts) -> std::result::Result<bool, String> {
    // swarmkit tries `==` before `!=`.
    let (key, equal, value) = if let Some((k, v)) = constraint.split_once("==") {
        (k, true, v)
    } else if let Some((k, v)) = constraint.split_once("!=") {
        (k, false, v)
    } else {
        return Err("it has neither `==` nor `!=`".to_owned());
    };
    let (key, value) = (key.trim(), value.trim());
    let lower = key.to_ascii_lowercase();
    let label = |prefix: &str, labels: &HashMap<String, String>| {
        // The label's own name is case-sensitive; a label that is not set reads as "".
        labels
            .get(&key[prefix.len()..])
            .cloned()
            .unwrap_or_default()
    };
    let actual = match lower.as_str() {
        "node.id" => node.id.clone(),
        "node.hostname" => node.hostname.clone(),
        "node.role" => node.role.clone(),
        "node.platform.os" => node.os.clone(),
        "node.platform.arch" => node.arch.clone(),
        "node.ip" => return ip_matches(value, &node.addr).map(|m| m == equal),
        k if k.len() > "node.labels.".len() && k.starts_with("node.labels.") => {
            label("node.labels.", &node.labels)
        }
        k if k.len() > "engine.labels.".len() && k.starts_with("engine.labels.") => {
            label("engine.labels.", &node.engine_labels)
        }
        _ => {
            return Err(format!(
                "`{key}` is not a key seatrial knows (node.id, node.hostname, node.role, node.ip, node.platform.os, node.platform.arch, node.labels.<name>, engine.labels.<name>)"
            ));
        }
    };
    Ok(actual.eq_ignore_ascii_case(value) == equal)
}

/// `node.ip` takes an address or a CIDR network.
fn ip_matches(value: &str, addr: &str) -> std::result::Result<bool, String> {
    let node: IpAddr = addr
        .parse()
        .map_err(|_| format!("the node's address `{addr}` is not an IP address"))?;
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(ip == node);
    }
    let bad = || format!("`{value}` is neither an IP address nor a CIDR network");
    let (net, bits) = value.split_once('/').ok_or_else(bad)?;
    let net: IpAddr = net.parse().map_err(|_| bad())?;
    let bits: u32 = bits.parse().map_err(|_| bad())?;
    // The top `bits` bits of an address `width` bits wide.
    let prefix = |a: u128, width: u32| a.checked_shr(width - bits).unwrap_or(0);
    match (net, node) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            Ok(prefix(u32::from(n).into(), 32) == prefix(u32::from(a).into(), 32))
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            Ok(prefix(n.into(), 128) == prefix(a.into(), 128))
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Err(bad()),
        // An IPv4 network never holds an IPv6 address, nor the other way round.
        _ => Ok(false),
    }
}

/// What of a service's data lives on the node it runs on: each volume and bind mount, named
/// for a message (`` volume `app_db` ``).
pub(crate) fn node_local_mounts(spec: &ServiceSpec) -> Vec<String> {
    let mounts = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.mounts.as_ref());
    mounts
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let source = m.source.as_deref().unwrap_or_default();
            let target = m.target.as_deref().unwrap_or_default();
            match m.typ {
                Some(MountType::VOLUME) if source.is_empty() => {
                    Some(format!("an anonymous volume at `{target}`"))
                }
                Some(MountType::VOLUME) => Some(format!("volume `{source}`")),
                Some(MountType::BIND) => Some(format!("host path `{source}`")),
                _ => None,
            }
        })
        .collect()
}

/// Pins one service (compose key `key`) to `node` when it mounts a volume or host path: checks
/// that its own placement can hold there (a finding for each reason it cannot), then adds the
/// constraint and the [`PINNED`] label. A service without such mounts is left as it is.
pub(crate) fn pin(key: &str, svc: &mut ServicePlan, node: &NodeFacts) -> Vec<Finding> {
    let mounts = node_local_mounts(&svc.spec);
    if mounts.is_empty() {
        return Vec::new();
    }
    let what = mounts.join(", ");
    let service = &svc.name;
    let why = format!(
        "service `{service}` keeps {what} on the node it runs on, and seatrial reaches only the data of node `{}`, the node of the manager it talks to (node id {})",
        node.hostname, node.id
    );
    let elsewhere = format!(
        "or run seatrial against a manager on the node that should hold the data (DOCKER_HOST); see {DOCS}"
    );
    let mut problems = Vec::new();
    let at = |rest: &str| format!("services.{key}.deploy.placement.{rest}");
    let placement = svc
        .spec
        .task_template
        .as_ref()
        .and_then(|t| t.placement.clone())
        .unwrap_or_default();
    for (i, constraint) in placement.constraints.iter().flatten().enumerate() {
        match holds(constraint, node) {
            Ok(true) => {}
            Ok(false) => problems.push(error_finding(
                at(&format!("constraints[{i}]")),
                format!("{why}: its constraint `{constraint}` does not hold on `{}`", node.hostname),
                format!("drop or change the constraint so the service can run on `{}`, {elsewhere}", node.hostname),
            )),
            Err(reason) => problems.push(error_finding(
                at(&format!("constraints[{i}]")),
                format!("{why}: seatrial cannot tell whether its constraint `{constraint}` holds on `{}`: {reason}", node.hostname),
                format!("use a constraint seatrial can check, or drop it, {elsewhere}"),
            )),
        }
    }
    let replicas = svc
        .spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0);
    if let Some(max) = placement.max_replicas.filter(|m| *m > 0 && *m < replicas) {
        problems.push(error_finding(
            at("max_replicas_per_node"),
            format!(
                "{why}, so all {replicas} replicas run there: max_replicas_per_node {max} would leave {} of them unscheduled",
                replicas - max
            ),
            format!("raise max_replicas_per_node to {replicas} or drop it, run fewer replicas, {elsewhere}"),
        ));
    }
    if !matches!(node.availability.as_str(), "" | "active") {
        problems.push(error_finding(
            format!("services.{key}.volumes"),
            format!(
                "{why}, but that node's availability is `{}`: no task can start there",
                node.availability
            ),
            format!(
                "make it active (docker node update --availability active {}), {elsewhere}",
                node.hostname
            ),
        ));
    }
    if !problems.is_empty() {
        return problems;
    }
    let constraint = pin_constraint(&node.id);
    let template = svc.spec.task_template.get_or_insert_with(Default::default);
    let placement = template
        .placement
        .get_or_insert_with(TaskSpecPlacement::default);
    let constraints = placement.constraints.get_or_insert_with(Vec::new);
    if !constraints.contains(&constraint) {
        constraints.push(constraint.clone());
    }
    let global = svc
        .spec
        .mode
        .as_ref()
        .is_some_and(|m| m.global.is_some() || m.global_job.is_some());
    let reason = format!(
        "{constraint}: {what} live(s) on the node the task runs on; seatrial reaches the data of node `{}` only{} ({DOCS})",
        node.hostname,
        if global {
            " (a global service runs there alone)"
        } else {
            ""
        }
    );
    svc.spec
        .labels
        .get_or_insert_with(HashMap::new)
        .insert(PINNED.to_owned(), reason);
    Vec::new()
}

/// The node an existing service of the stack was pinned to, when it was.
fn pinned_node(service: &Service) -> Option<String> {
    let spec = service.spec.as_ref()?;
    spec.labels.as_ref()?.get(PINNED)?;
    spec.task_template
        .as_ref()?
        .placement
        .as_ref()?
        .constraints
        .iter()
        .flatten()
        .find_map(|c| {
            let (key, value) = c.split_once("==")?;
            key.trim()
                .eq_ignore_ascii_case("node.id")
                .then(|| value.trim().to_owned())
        })
}

/// A finding for each existing service pinned to another node than `node`: its data is there,
/// and updating it from here would move it away from its data.
pub(crate) fn moved(existing: &[Service], node: &NodeFacts) -> Vec<Finding> {
    existing
        .iter()
        .filter_map(|s| {
            let name = s.spec.as_ref()?.name.clone().unwrap_or_default();
            let there = pinned_node(s).filter(|id| *id != node.id)?;
            Some(error_finding(
                format!("service {name}"),
                format!(
                    "service `{name}` is pinned to node {there}, which holds its data, but seatrial now talks to the manager on node {}: an update from here would start it without its data",
                    node.named()
                ),
                format!("run seatrial against a manager on node {there} (DOCKER_HOST); see {DOCS}"),
            ))
        })
        .collect()
}

impl SwarmEngine {
    /// On a swarm of more than one node, pins every service of `specs` that mounts a volume or
    /// host path to this manager's node, or refuses the deploy ([`EngineError::Invalid`]) when
    /// that cannot hold. Nothing is created either way.
    pub(super) async fn pin_node_local(
        &self,
        plan: &StackPlan,
        specs: &mut StackSpecs,
        existing: &[Service],
    ) -> Result<()> {
        let any_mounts = specs
            .services
            .iter()
            .any(|s| !node_local_mounts(&s.spec).is_empty());
        if !any_mounts && existing.iter().all(|s| pinned_node(s).is_none()) {
            return Ok(());
        }
        if self.node_count().await? < 2 {
            return Ok(());
        }
        let node = self
            .docker
            .inspect_node(&self.node_id)
            .await
            .map_err(EngineError::api(format!(
                "inspecting this manager's own node `{}`",
                self.node_id
            )))?;
        let node = NodeFacts::from_node(&node);
        let mut problems = moved(existing, &node);
        // `convert` builds the services in the compose file's order.
        for (key, svc) in plan.compose.services.keys().zip(specs.services.iter_mut()) {
            problems.extend(pin(key, svc, &node));
        }
        if !problems.is_empty() {
            return Err(EngineError::Invalid {
                stack: plan.stack.clone(),
                findings: problems,
            });
        }
        let pinned: Vec<&str> = specs
            .services
            .iter()
            .filter(|s| {
                s.spec
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(PINNED))
            })
            .map(|s| s.name.as_str())
            .collect();
        if !pinned.is_empty() {
            info!(stack = %plan.stack, node = %node.hostname, services = ?pinned, "services with volumes pinned to the manager's node");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        Mount, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    };

    use super::*;

    fn c1() -> NodeFacts {
        NodeFacts {
            id: "oxde88o23rz2".into(),
            hostname: "c1".into(),
            role: "manager".into(),
            availability: "active".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            addr: "10.77.0.1".into(),
            labels: HashMap::from([("tier".into(), "Data".into())]),
            engine_labels: HashMap::from([("disk".into(), "ssd".into())]),
        }
    }

    fn service(
        mounts: Vec<Mount>,
        constraints: &[&str],
        replicas: i64,
        max: Option<i64>,
    ) -> ServicePlan {
        ServicePlan {
            name: "pv_db".into(),
            spec: ServiceSpec {
                name: Some("pv_db".into()),
                task_template: Some(TaskSpec {
                    container_spec: Some(TaskSpecContainerSpec {
                        mounts: Some(mounts),
                        ..Default::default()
                    }),
                    placement: Some(TaskSpecPlacement {
                        constraints: Some(constraints.iter().map(|c| (*c).to_owned()).collect()),
                        max_replicas: max,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mode: Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated {
                        replicas: Some(replicas),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn volume(source: &str) -> Mount {
        Mount {
            source: Some(source.into()),
            target: Some("/data".into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }
    }

    fn constraints(svc: &ServicePlan) -> Vec<String> {
        svc.spec
            .task_template
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default()
    }

    #[test]
    fn constraints_are_evaluated_as_swarm_does() {
        let n = c1();
        for (c, want) in [
            ("node.id==oxde88o23rz2", true),
            ("node.id != oxde88o23rz2", false),
            ("node.hostname==c1", true),
            ("node.hostname == C1", true),
            ("node.hostname==c2", false),
            ("node.hostname!=c2", true),
            ("NODE.ROLE==manager", true),
            ("node.role==worker", false),
            ("node.role!=worker", true),
            ("node.platform.os==linux", true),
            ("node.platform.arch==aarch64", false),
            ("node.labels.tier==data", true),
            ("node.labels.Tier==data", false),
            ("node.labels.missing==", true),
            ("node.labels.missing!=x", true),
            ("engine.labels.disk==ssd", true),
            ("engine.labels.disk!=ssd", false),
            ("node.ip==10.77.0.1", true),
            ("node.ip==10.77.0.2", false),
            ("node.ip==10.77.0.0/24", true),
            ("node.ip!=10.0.0.0/8", false),
            ("node.ip==192.168.0.0/16", false),
            ("node.ip==0.0.0.0/0", true),
        ] {
            assert_eq!(holds(c, &n), Ok(want), "{c}");
        }
        for c in [
            "node.name==c1",
            "node.labels.==x",
            "node.hostname=c1",
            "node.ip==c1",
        ] {
            assert!(holds(c, &n).is_err(), "{c} cannot be evaluated");
        }
    }

    #[test]
    fn a_volume_service_is_pinned_and_says_why() {
        let mut svc = service(vec![volume("pv_data")], &["node.role==manager"], 2, None);
        assert!(pin("db", &mut svc, &c1()).is_empty());
        assert_eq!(
            constraints(&svc),
            ["node.role==manager", "node.id==oxde88o23rz2"]
        );
        let label = &svc.spec.labels.as_ref().expect("labels")[PINNED];
        assert!(
            label.starts_with("node.id==oxde88o23rz2: volume `pv_data`"),
            "{label}"
        );
        // Pinning again (an update) keeps one constraint.
        assert!(pin("db", &mut svc, &c1()).is_empty());
        assert_eq!(constraints(&svc).len(), 2);
    }

    #[test]
    fn bind_mounts_are_pinned_and_stateless_services_are_not() {
        let bind = Mount {
            source: Some("/srv/app".into()),
            target: Some("/app".into()),
            typ: Some(MountType::BIND),
            ..Default::default()
        };
        let mut svc = service(vec![bind], &[], 1, None);
        assert!(pin("db", &mut svc, &c1()).is_empty());
        assert_eq!(constraints(&svc), ["node.id==oxde88o23rz2"]);

        let tmpfs = Mount {
            target: Some("/tmp".into()),
            typ: Some(MountType::TMPFS),
            ..Default::default()
        };
        let mut svc = service(vec![tmpfs], &["node.hostname==c2"], 1, None);
        assert!(pin("web", &mut svc, &c1()).is_empty());
        assert_eq!(constraints(&svc), ["node.hostname==c2"], "left alone");
        assert!(svc.spec.labels.is_none());
    }

    #[test]
    fn a_global_service_with_a_volume_is_pinned_to_run_there_alone() {
        let mut svc = service(vec![volume("pv_data")], &[], 1, None);
        svc.spec.mode = Some(ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        });
        assert!(pin("agent", &mut svc, &c1()).is_empty());
        assert_eq!(constraints(&svc), ["node.id==oxde88o23rz2"]);
        let label = &svc.spec.labels.as_ref().expect("labels")[PINNED];
        assert!(label.contains("global service runs there alone"), "{label}");
    }

    #[test]
    fn a_constraint_for_another_node_is_refused_naming_everything() {
        let mut svc = service(vec![volume("pv_data")], &["node.hostname==c2"], 1, None);
        let problems = pin("db", &mut svc, &c1());
        assert_eq!(problems.len(), 1);
        let text = problems[0].to_string();
        for part in [
            "services.db.deploy.placement.constraints[0]",
            "service `pv_db`",
            "volume `pv_data`",
            "`node.hostname==c2`",
            "node `c1`, the node of the manager it talks to (node id oxde88o23rz2)",
            "drop or change the constraint",
            "DOCKER_HOST",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert_eq!(
            constraints(&svc),
            ["node.hostname==c2"],
            "nothing added when refused"
        );
    }

    #[test]
    fn unknown_constraints_and_too_few_replicas_per_node_are_refused() {
        let mut svc = service(vec![volume("pv_data")], &["node.name==c1"], 3, Some(1));
        let problems: Vec<String> = pin("db", &mut svc, &c1())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("cannot tell whether its constraint `node.name==c1`"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("max_replicas_per_node 1 would leave 2 of them unscheduled"),
            "{}",
            problems[1]
        );
        // Enough per node: fine.
        let mut svc = service(vec![volume("pv_data")], &[], 2, Some(2));
        assert!(pin("db", &mut svc, &c1()).is_empty());
    }

    #[test]
    fn a_drained_manager_cannot_hold_pinned_tasks() {
        let mut node = c1();
        node.availability = "drain".into();
        let mut svc = service(vec![volume("pv_data")], &[], 1, None);
        let problems = pin("db", &mut svc, &node);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("availability is `drain`"));
    }

    #[test]
    fn a_stack_pinned_to_another_node_is_not_updated_from_here() {
        let mut svc = service(vec![volume("pv_data")], &[], 1, None);
        let mut elsewhere = c1();
        elsewhere.id = "lyo5v4gwltt4".into();
        elsewhere.hostname = "c2".into();
        assert!(pin("db", &mut svc, &elsewhere).is_empty());
        let deployed = Service {
            spec: Some(svc.spec.clone()),
            ..Default::default()
        };
        assert!(moved(std::slice::from_ref(&deployed), &elsewhere).is_empty());
        let problems = moved(&[deployed], &c1());
        assert_eq!(problems.len(), 1);
        let text = problems[0].to_string();
        assert!(
            text.contains("service `pv_db` is pinned to node lyo5v4gwltt4")
                && text.contains("`c1`"),
            "{text}"
        );
    }
}
