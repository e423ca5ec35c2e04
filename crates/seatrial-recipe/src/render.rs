//! What would be deployed, printed in the shape `docker stack config` prints: compose keys,
//! long syntax for ports, volumes, secrets and configs, Go-style durations, sizes in bytes,
//! relative bind sources made absolute. Keys are written in a fixed order (services by name).

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::compose::{
    ComposeFile, Config, Deploy, External, FileReference, Healthcheck, MountKind, Network, Port,
    ResourceSpec, Secret, Service, ServiceVolume, UpdateConfig, Volume,
};

/// The compose model as `docker stack config` prints it; `dir` is where relative bind
/// sources and `file:` paths are resolved (the recipe directory).
pub fn render(compose: &ComposeFile, dir: &Path) -> Value {
    let mut top = Map::new();
    if let Some(v) = &compose.version {
        top.insert("version".into(), v.clone().into());
    }
    let mut names: Vec<&String> = compose.services.keys().collect();
    names.sort();
    let services: Map<String, Value> = names
        .into_iter()
        .map(|name| (name.clone(), service(&compose.services[name], dir)))
        .collect();
    top.insert("services".into(), Value::Object(services));
    let section = |m: Map<String, Value>| (!m.is_empty()).then_some(Value::Object(m));
    let networks = compose
        .networks
        .iter()
        .map(|(k, n)| (k.clone(), network(k, n)))
        .collect();
    if let Some(v) = section(networks) {
        top.insert("networks".into(), v);
    }
    let volumes = compose
        .volumes
        .iter()
        .map(|(k, v)| (k.clone(), volume(k, v)))
        .collect();
    if let Some(v) = section(volumes) {
        top.insert("volumes".into(), v);
    }
    let secrets = compose
        .secrets
        .iter()
        .map(|(k, s)| (k.clone(), secret(k, s, dir)))
        .collect();
    if let Some(v) = section(secrets) {
        top.insert("secrets".into(), v);
    }
    let configs = compose
        .configs
        .iter()
        .map(|(k, c)| (k.clone(), config(k, c, dir)))
        .collect();
    if let Some(v) = section(configs) {
        top.insert("configs".into(), v);
    }
    for (k, v) in &compose.extensions {
        top.insert(k.clone(), v.clone());
    }
    Value::Object(top)
}

/// The rendered document as YAML text.
pub fn to_yaml(doc: &Value) -> Result<String, String> {
    serde_saphyr::to_string(doc).map_err(|e| e.to_string())
}

/// Builds a map, leaving out `None`s, empty lists and empty maps (Docker's `omitempty`).
struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Self(Map::new())
    }
    fn put(mut self, key: &str, v: impl Into<Option<Value>>) -> Self {
        if let Some(v) = v.into() {
            let empty = match &v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(m) => m.is_empty(),
                _ => false,
            };
            if !empty {
                self.0.insert(key.to_owned(), v);
            }
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref().map(|v| Value::String(v.clone()))
}

fn list(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn strings<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Object(
        m.into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn duration(d: &Option<Duration>) -> Option<Value> {
    d.map(|d| Value::String(go_duration(d)))
}

fn yes(b: Option<bool>) -> Option<Value> {
    b.map(Value::Bool)
}

fn service(svc: &Service, dir: &Path) -> Value {
    let environment: Map<String, Value> = svc
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let networks: Map<String, Value> = svc
        .networks
        .iter()
        .map(|(k, n)| {
            let v = if n.aliases.is_empty() {
                Value::Null
            } else {
                json!({ "aliases": n.aliases })
            };
            (k.clone(), v)
        })
        .collect();
    Obj::new()
        .put("cap_add", list(&svc.cap_add))
        .put("cap_drop", list(&svc.cap_drop))
        .put("command", svc.command.as_deref().map(list))
        .put(
            "configs",
            Value::Array(svc.configs.iter().map(file_reference).collect()),
        )
        .put("container_name", s(&svc.container_name))
        .put("depends_on", list(&svc.depends_on))
        .put("deploy", svc.deploy.as_ref().map(deploy))
        .put("entrypoint", svc.entrypoint.as_deref().map(list))
        .put("environment", Value::Object(environment))
        .put("extra_hosts", list(&svc.extra_hosts))
        .put("hostname", s(&svc.hostname))
        .put("healthcheck", svc.healthcheck.as_ref().map(healthcheck))
        .put("image", s(&svc.image))
        .put("init", yes(svc.init))
        .put("labels", strings(&svc.labels))
        .put(
            "logging",
            svc.logging.as_ref().map(|l| {
                Obj::new()
                    .put("driver", s(&l.driver))
                    .put("options", strings(&l.options))
                    .done()
            }),
        )
        .put("networks", Value::Object(networks))
        .put("ports", Value::Array(svc.ports.iter().map(port).collect()))
        .put("read_only", yes(svc.read_only))
        .put("restart", s(&svc.restart))
        .put(
            "secrets",
            Value::Array(svc.secrets.iter().map(file_reference).collect()),
        )
        .put("stdin_open", yes(svc.stdin_open))
        .put("stop_grace_period", duration(&svc.stop_grace_period))
        .put("stop_signal", s(&svc.stop_signal))
        .put("sysctls", strings(&svc.sysctls))
        .put("tty", yes(svc.tty))
        .put("user", s(&svc.user))
        .put(
            "volumes",
            Value::Array(svc.volumes.iter().map(|v| mount(v, dir)).collect()),
        )
        .put("working_dir", s(&svc.working_dir))
        .done()
}

fn port(p: &Port) -> Value {
    Obj::new()
        .put("mode", serde_json::to_value(p.mode).ok())
        .put("host_ip", s(&p.host_ip))
        .put("target", Value::from(p.target))
        .put("published", p.published.map(Value::from))
        .put("protocol", serde_json::to_value(p.protocol).ok())
        .done()
}

fn mount(v: &ServiceVolume, dir: &Path) -> Value {
    let source = v.source.as_ref().map(|src| match v.kind {
        MountKind::Bind => Value::String(absolute(src, dir)),
        _ => Value::String(src.clone()),
    });
    Obj::new()
        .put("type", serde_json::to_value(v.kind).ok())
        .put("source", source)
        .put("target", Value::String(v.target.clone()))
        .put("read_only", v.read_only.then_some(Value::Bool(true)))
        .put(
            "volume",
            (v.no_copy || v.subpath.is_some()).then(|| {
                Obj::new()
                    .put("nocopy", v.no_copy.then_some(Value::Bool(true)))
                    .put("subpath", s(&v.subpath))
                    .done()
            }),
        )
        .put(
            "tmpfs",
            (v.tmpfs_size.is_some() || v.tmpfs_mode.is_some()).then(|| {
                Obj::new()
                    .put("size", v.tmpfs_size.map(Value::from))
                    .put("mode", v.tmpfs_mode.map(Value::from))
                    .done()
            }),
        )
        .done()
}

/// A host path as Docker's loader resolves it: relative to the recipe directory.
fn absolute(path: &str, dir: &Path) -> String {
    if path.starts_with('/') || path.starts_with('~') {
        return path.to_owned();
    }
    let rel = path.strip_prefix("./").unwrap_or(path);
    let joined = if rel == "." {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    joined.display().to_string()
}

fn file_reference(r: &FileReference) -> Value {
    Obj::new()
        .put("source", Value::String(r.source.clone()))
        .put("target", s(&r.target))
        .put("uid", s(&r.uid))
        .put("gid", s(&r.gid))
        .put("mode", r.mode.map(Value::from))
        .done()
}

fn healthcheck(h: &Healthcheck) -> Value {
    Obj::new()
        .put("test", h.test.as_deref().map(list))
        .put("timeout", duration(&h.timeout))
        .put("interval", duration(&h.interval))
        .put("retries", h.retries.map(Value::from))
        .put("start_period", duration(&h.start_period))
        .put("start_interval", duration(&h.start_interval))
        .put("disable", yes(h.disable))
        .done()
}

fn deploy(d: &Deploy) -> Value {
    Obj::new()
        .put("mode", d.mode.and_then(|m| serde_json::to_value(m).ok()))
        .put("replicas", d.replicas.map(Value::from))
        .put("labels", strings(&d.labels))
        .put("update_config", d.update_config.as_ref().map(update_config))
        .put(
            "rollback_config",
            d.rollback_config.as_ref().map(update_config),
        )
        .put(
            "resources",
            d.resources.as_ref().map(|r| {
                Obj::new()
                    .put("limits", r.limits.as_ref().map(resource_spec))
                    .put("reservations", r.reservations.as_ref().map(resource_spec))
                    .done()
            }),
        )
        .put(
            "restart_policy",
            d.restart_policy.as_ref().map(|r| {
                Obj::new()
                    .put(
                        "condition",
                        r.condition.and_then(|c| serde_json::to_value(c).ok()),
                    )
                    .put("delay", duration(&r.delay))
                    .put("max_attempts", r.max_attempts.map(Value::from))
                    .put("window", duration(&r.window))
                    .done()
            }),
        )
        .put(
            "placement",
            d.placement.as_ref().map(|p| {
                Obj::new()
                    .put("constraints", list(&p.constraints))
                    .put(
                        "preferences",
                        Value::Array(
                            p.preferences
                                .iter()
                                .map(|x| json!({ "spread": x.spread }))
                                .collect(),
                        ),
                    )
                    .put(
                        "max_replicas_per_node",
                        p.max_replicas_per_node.map(Value::from),
                    )
                    .done()
            }),
        )
        .put(
            "endpoint_mode",
            d.endpoint_mode.and_then(|m| serde_json::to_value(m).ok()),
        )
        .done()
}

fn update_config(u: &UpdateConfig) -> Value {
    Obj::new()
        .put("parallelism", u.parallelism.map(Value::from))
        .put("delay", duration(&u.delay))
        .put(
            "failure_action",
            u.failure_action.and_then(|a| serde_json::to_value(a).ok()),
        )
        .put("monitor", duration(&u.monitor))
        .put("max_failure_ratio", u.max_failure_ratio.map(Value::from))
        .put("order", u.order.and_then(|o| serde_json::to_value(o).ok()))
        .done()
}

fn resource_spec(r: &ResourceSpec) -> Value {
    Obj::new()
        .put("cpus", r.cpus.map(|c| Value::String(c.to_string())))
        .put("memory", r.memory.map(|m| Value::String(m.to_string())))
        .put("pids", r.pids.map(Value::from))
        .done()
}

/// `name`: Docker's loader names an external object after its key when no name is given.
fn external_name(key: &str, name: &Option<String>, external: &External) -> Option<Value> {
    external
        .name
        .clone()
        .or_else(|| name.clone())
        .or_else(|| external.external.then(|| key.to_owned()))
        .map(Value::String)
}

fn network(key: &str, n: &Network) -> Value {
    Obj::new()
        .put("name", external_name(key, &n.name, &n.external))
        .put("driver", s(&n.driver))
        .put("driver_opts", strings(&n.driver_opts))
        .put("ipam", n.ipam.clone())
        .put("external", n.external.external.then_some(Value::Bool(true)))
        .put("internal", yes(n.internal.filter(|i| *i)))
        .put("attachable", yes(n.attachable.filter(|a| *a)))
        .put("labels", strings(&n.labels))
        .done()
}

fn volume(key: &str, v: &Volume) -> Value {
    Obj::new()
        .put("name", external_name(key, &v.name, &v.external))
        .put("driver", s(&v.driver))
        .put("driver_opts", strings(&v.driver_opts))
        .put("external", v.external.external.then_some(Value::Bool(true)))
        .put("labels", strings(&v.labels))
        .done()
}

fn secret(key: &str, x: &Secret, dir: &Path) -> Value {
    Obj::new()
        .put("name", external_name(key, &x.name, &x.external))
        .put(
            "file",
            x.file.as_ref().map(|f| Value::String(absolute(f, dir))),
        )
        .put("environment", s(&x.environment))
        .put("external", x.external.external.then_some(Value::Bool(true)))
        .put("labels", strings(&x.labels))
        .put("driver", s(&x.driver))
        .put("driver_opts", strings(&x.driver_opts))
        .put("template_driver", s(&x.template_driver))
        .done()
}

fn config(key: &str, c: &Config, dir: &Path) -> Value {
    Obj::new()
        .put("name", external_name(key, &c.name, &c.external))
        .put(
            "file",
            c.file.as_ref().map(|f| Value::String(absolute(f, dir))),
        )
        .put("content", s(&c.content))
        .put("environment", s(&c.environment))
        .put("external", c.external.external.then_some(Value::Bool(true)))
        .put("labels", strings(&c.labels))
        .put("template_driver", s(&c.template_driver))
        .done()
}

/// A duration as Go's `time.Duration.String()` prints it: `1m30s`, `1h0m0s`, `500ms`, `1.5s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let frac = |value: u128, unit: u128| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 1_000_000));
    }
    let secs_nanos = nanos % 60_000_000_000;
    let minutes = nanos / 60_000_000_000;
    let seconds = format!("{}s", frac(secs_nanos, 1_000_000_000));
    match (minutes / 60, minutes % 60) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::go_duration;

    #[test]
    fn durations_print_like_go() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(5), "5ns"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }
}
