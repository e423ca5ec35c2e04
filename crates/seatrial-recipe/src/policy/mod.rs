//! What a recipe from someone else (a pull request, an API caller) may ask of the host: a pure
//! check over the resolved compose that names every way it reaches past its own containers —
//! host paths, the Docker socket, privileges, host namespaces, devices — each with the `permit`
//! entry an operator adds for a recipe that really needs it (a proxy reading the Docker socket).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use crate::compose::{ComposeFile, MountKind};

mod host_paths;
use host_paths::host_path;
pub use host_paths::resolve_host;

/// Service keys that reach into the host and that the typed model does not deploy (Swarm
/// ignores them; `docker compose` applies them). They are kept in
/// [`crate::compose::Service::host_options`] so [`check`] can judge them.
pub const HOST_OPTION_KEYS: [&str; 11] = [
    "privileged",
    "devices",
    "device_cgroup_rules",
    "network_mode",
    "pid",
    "ipc",
    "uts",
    "userns_mode",
    "cgroup",
    "cgroup_parent",
    "security_opt",
];

/// Capabilities every container has by default (Docker's default set): adding one is a no-op,
/// so `cap_add` of these is not a finding.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// One kind of host access, with a stable id (used in findings and in `permit` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A bind mount (or a `local` volume with `o: bind`) of a host path outside the recipe.
    HostBind,
    /// A bind mount exposing the Docker (or Podman, containerd) socket.
    DockerSocket,
    /// `privileged: true`.
    Privileged,
    /// `cap_add` of a capability beyond Docker's default set.
    CapAdd,
    /// `devices`, `device_cgroup_rules`, or a `local` volume mounting a host block device.
    Devices,
    /// `network_mode: host` (or `container:…`), or the Swarm way: an external network `host`.
    NetworkMode,
    /// `pid: host` (or `container:…`).
    Pid,
    /// `ipc: host` (or `container:…`).
    Ipc,
    /// `uts: host`.
    Uts,
    /// `userns_mode: host`.
    UsernsMode,
    /// `cgroup: host`.
    Cgroup,
    /// `cgroup_parent`.
    CgroupParent,
    /// `security_opt` other than `no-new-privileges` (e.g. `seccomp=unconfined`).
    SecurityOpt,
    /// A volume driver other than `local` (plugins run with host privileges).
    VolumeDriver,
}

impl Rule {
    pub const ALL: [Rule; 14] = [
        Rule::HostBind,
        Rule::DockerSocket,
        Rule::Privileged,
        Rule::CapAdd,
        Rule::Devices,
        Rule::NetworkMode,
        Rule::Pid,
        Rule::Ipc,
        Rule::Uts,
        Rule::UsernsMode,
        Rule::Cgroup,
        Rule::CgroupParent,
        Rule::SecurityOpt,
        Rule::VolumeDriver,
    ];

    /// The stable id, as findings and `permit` entries spell it.
    pub fn id(self) -> &'static str {
        match self {
            Rule::HostBind => "host-bind",
            Rule::DockerSocket => "docker-socket",
            Rule::Privileged => "privileged",
            Rule::CapAdd => "cap_add",
            Rule::Devices => "devices",
            Rule::NetworkMode => "network_mode",
            Rule::Pid => "pid",
            Rule::Ipc => "ipc",
            Rule::Uts => "uts",
            Rule::UsernsMode => "userns_mode",
            Rule::Cgroup => "cgroup",
            Rule::CgroupParent => "cgroup_parent",
            Rule::SecurityOpt => "security_opt",
            Rule::VolumeDriver => "volume-driver",
        }
    }

    /// Rules whose values are host paths: a permit covers its path and everything below it.
    fn is_path(self) -> bool {
        matches!(self, Rule::HostBind | Rule::DockerSocket)
    }

    /// Rules with a single possible value, permitted by their id alone.
    fn is_flag(self) -> bool {
        matches!(self, Rule::DockerSocket | Rule::Privileged)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One way a recipe reaches into the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// Where, as a dotted path: `services.proxy.volumes[0]`.
    pub at: String,
    /// The offending value: a resolved host path, a capability, `host`, ...
    pub value: String,
    /// What it does, in words.
    pub what: String,
}

impl Violation {
    /// The `permit` entry that allows exactly this.
    pub fn permit(&self) -> String {
        if self.rule.is_flag() {
            self.rule.id().to_owned()
        } else {
            format!("{}:{}", self.rule.id(), self.value)
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} [{}]", self.at, self.what, self.permit())
    }
}

/// An operator's exception: `rule` (any value) or `rule:value` (that value; for path rules that
/// path and everything below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    pub rule: Rule,
    pub value: Option<String>,
}

impl Permit {
    /// True when this permit covers `v`.
    pub fn allows(&self, v: &Violation) -> bool {
        if self.rule != v.rule {
            return false;
        }
        let Some(value) = &self.value else {
            return true;
        };
        if self.rule.is_path() {
            Path::new(&v.value).starts_with(resolve_host(Path::new(value)))
        } else if self.rule == Rule::CapAdd {
            capability(value) == capability(&v.value)
        } else {
            *value == v.value
        }
    }
}

impl fmt::Display for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{v}", self.rule),
            None => write!(f, "{}", self.rule),
        }
    }
}

impl FromStr for Permit {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let (id, value) = match entry.split_once(':') {
            Some((id, value)) => (id.trim(), Some(value.trim().to_owned())),
            None => (entry.trim(), None),
        };
        let known = || {
            Rule::ALL
                .iter()
                .map(|r| r.id())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rule = Rule::ALL
            .into_iter()
            .find(|r| r.id() == id)
            .ok_or_else(|| {
                format!(
                    "permit entry {entry:?}: unknown rule `{id}`; write `rule` or `rule:value` with one of: {}",
                    known()
                )
            })?;
        match &value {
            Some(v) if v.is_empty() => Err(format!(
                "permit entry {entry:?}: empty value after `:`; write `{id}` to permit any value"
            )),
            Some(v) if rule.is_path() && !v.starts_with('/') => Err(format!(
                "permit entry {entry:?}: `{id}` takes an absolute host path, e.g. `{id}:/var/log`"
            )),
            _ => Ok(Self { rule, value }),
        }
    }
}

/// The violations `permits` do not cover.
pub fn refused<'a>(violations: &'a [Violation], permits: &[Permit]) -> Vec<&'a Violation> {
    violations
        .iter()
        .filter(|v| !permits.iter().any(|p| p.allows(v)))
        .collect()
}

/// Every way `compose` (resolved: interpolated, overlays merged) reaches into the host.
/// `recipe_dir` is the directory relative bind mounts resolve against; binds inside it are fine.
pub fn check(compose: &ComposeFile, recipe_dir: &Path) -> Vec<Violation> {
    let recipe_dir = recipe_dir
        .canonicalize()
        .unwrap_or_else(|_| recipe_dir.to_owned());
    let mut out = Vec::new();
    for (name, svc) in &compose.services {
        for (i, vol) in svc.volumes.iter().enumerate() {
            if vol.kind != MountKind::Bind {
                continue;
            }
            let Some(source) = vol.source.as_deref() else {
                continue;
            };
            let at = format!("services.{name}.volumes[{i}]");
            host_path(&mut out, &at, source, &recipe_dir.join(source), &recipe_dir);
        }
        let at = |key: &str| format!("services.{name}.{key}");
        for cap in &svc.cap_add {
            let c = capability(cap);
            if !DEFAULT_CAPABILITIES.contains(&c.as_str()) {
                out.push(Violation {
                    rule: Rule::CapAdd,
                    at: at("cap_add"),
                    what: format!("adds the capability {c}"),
                    value: c,
                });
            }
        }
        for (key, value) in &svc.host_options {
            host_option(&mut out, &at(key), key, value);
        }
    }
    for (key, vol) in &compose.volumes {
        let at = format!("volumes.{key}");
        if let Some(driver) = vol.driver.as_deref().filter(|d| *d != "local") {
            out.push(Violation {
                rule: Rule::VolumeDriver,
                at: format!("{at}.driver"),
                value: driver.to_owned(),
                what: format!("uses the volume driver `{driver}` (a plugin with host privileges)"),
            });
            continue;
        }
        let opts = &vol.driver_opts;
        let Some(device) = opts.get("device").map(String::as_str) else {
            continue;
        };
        let binds = opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|o| matches!(o.trim(), "bind" | "rbind")))
            || opts.get("type").is_some_and(|t| t == "none");
        let at = format!("{at}.driver_opts.device");
        if binds {
            // The local driver bind-mounts `device` as the engine sees it: relative to `/`.
            host_path(
                &mut out,
                &at,
                device,
                &Path::new("/").join(device),
                &recipe_dir,
            );
        } else if device.starts_with('/') && !device.starts_with("//") {
            // `//server/share` is CIFS; `/dev/sdb1` is a host block device.
            out.push(Violation {
                rule: Rule::Devices,
                at,
                value: device.to_owned(),
                what: format!("mounts the host device {device}"),
            });
        }
    }
    for (key, net) in &compose.networks {
        let name = net
            .external
            .name
            .as_deref()
            .or(net.name.as_deref())
            .unwrap_or(key);
        if net.external.external && name == "host" {
            out.push(Violation {
                rule: Rule::NetworkMode,
                at: format!("networks.{key}"),
                value: "host".into(),
                what: "joins the host's network stack (the external network `host`)".into(),
            });
        }
    }
    out
}

/// Judges one of [`HOST_OPTION_KEYS`].
fn host_option(out: &mut Vec<Violation>, at: &str, key: &str, value: &Value) {
    let mut push = |rule: Rule, value: String, what: String| {
        out.push(Violation {
            rule,
            at: at.to_owned(),
            value,
            what,
        });
    };
    let text = scalar(value);
    let shares = |v: &str| v == "host" || v.starts_with("container:") || v.starts_with("service:");
    match key {
        "privileged" if matches!(text.as_deref(), Some("true")) => push(
            Rule::Privileged,
            "true".into(),
            "runs privileged: every capability and every host device".into(),
        ),
        "network_mode" | "pid" | "ipc" | "uts" => {
            if let Some(v) = text.filter(|v| shares(v)) {
                let rule = match key {
                    "network_mode" => Rule::NetworkMode,
                    "pid" => Rule::Pid,
                    "ipc" => Rule::Ipc,
                    _ => Rule::Uts,
                };
                push(rule, v.clone(), format!("shares a namespace: `{key}: {v}`"));
            }
        }
        "userns_mode" | "cgroup" => {
            if let Some(v) = text.filter(|v| v == "host") {
                let rule = if key == "cgroup" {
                    Rule::Cgroup
                } else {
                    Rule::UsernsMode
                };
                push(rule, v, format!("uses the host's namespace: `{key}: host`"));
            }
        }
        "cgroup_parent" => {
            if let Some(v) = text.filter(|v| !v.is_empty()) {
                push(
                    Rule::CgroupParent,
                    v.clone(),
                    format!("places itself in the host cgroup {v}"),
                );
            }
        }
        "devices" | "device_cgroup_rules" => {
            for item in list(value) {
                // `/dev/fuse:/dev/fuse:rwm`, `{source: /dev/kvm, ...}`, or a cgroup rule.
                let device = match (&item, key) {
                    (Value::Object(m), _) => m.get("source").and_then(scalar),
                    (other, "devices") => {
                        scalar(other).map(|s| s.split(':').next().unwrap_or_default().to_owned())
                    }
                    (other, _) => scalar(other),
                };
                if let Some(device) = device.filter(|d| !d.is_empty()) {
                    push(
                        Rule::Devices,
                        device.clone(),
                        format!("gets the host device {device}"),
                    );
                }
            }
        }
        "security_opt" => {
            for item in list(value) {
                let Some(opt) = scalar(&item) else { continue };
                if !opt.starts_with("no-new-privileges") {
                    push(
                        Rule::SecurityOpt,
                        opt.clone(),
                        format!("changes its confinement: `{opt}`"),
                    );
                }
            }
        }
        _ => {}
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// `cap_net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` are one capability.
fn capability(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map_or(up.clone(), str::to_owned)
}

#[cfg(test)]
mod tests;
