//! What a recipe from someone else (a pull request, an API caller) may ask of the host: a pure
//! check over the resolved compose that names every way it reaches past its own containers —
//! host paths, the Docker socket, privileges, host namespaces, devices — each with the `permit`
//! entry an operator adds for a recipe that really needs it (a proxy reading the Docker socket).

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use crate::compose::{ComposeFile, MountKind};

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

/// Engine sockets: a bind of one of them, or of a directory holding one, hands the container the
/// engine (and so root on the host).
const ENGINE_SOCKETS: [&str; 4] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/containerd/containerd.sock",
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

/// A host path a bind mount (or bind volume) uses: fine inside the recipe, otherwise a
/// `host-bind` — and a `docker-socket` when the path is, or holds, an engine socket.
fn host_path(out: &mut Vec<Violation>, at: &str, written: &str, path: &Path, recipe_dir: &Path) {
    let resolved = resolve_host(path);
    if resolved.starts_with(recipe_dir) {
        return;
    }
    let shown = resolved.display().to_string();
    let written_as = if Path::new(written) == resolved {
        String::new()
    } else {
        format!(" (written `{written}`)")
    };
    let sockets: Vec<PathBuf> = ENGINE_SOCKETS
        .iter()
        .flat_map(|s| [PathBuf::from(s), resolve_host(Path::new(s))])
        .collect();
    let is_socket = sockets.contains(&resolved)
        || resolved.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.ends_with(".sock")
                && ["docker", "podman", "containerd"]
                    .iter()
                    .any(|engine| n.contains(engine))
        });
    let holds_socket = sockets.iter().any(|s| s.starts_with(&resolved));
    if is_socket || holds_socket {
        out.push(Violation {
            rule: Rule::DockerSocket,
            at: at.to_owned(),
            value: shown.clone(),
            what: format!(
                "exposes the Docker socket through {shown}{written_as}: control of the engine, and so root on the host"
            ),
        });
    }
    // The socket itself is one finding; a directory holding it is also a host path.
    if !is_socket {
        out.push(Violation {
            rule: Rule::HostBind,
            at: at.to_owned(),
            value: shown,
            what: format!(
                "mounts the host path {resolved}{written_as}, outside the recipe",
                resolved = resolved.display()
            ),
        });
    }
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

/// Resolves `path` as the kernel would on this machine: component by component, following
/// symlinks of what exists (`/var/run` → `/run`) and applying `..` to the resolved parent, so
/// `/var/run/../run/docker.sock` and a symlink in the recipe pointing at `/etc` show where they
/// lead. What does not exist is kept as written (normalised).
pub fn resolve_host(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    let mut on_disk = true;
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if !on_disk {
                    continue;
                }
                match out.canonicalize() {
                    Ok(real) => out = real,
                    Err(_) => {
                        on_disk = false;
                        // A dangling symlink still says where it would lead.
                        if let Ok(target) = std::fs::read_link(&out) {
                            out.pop();
                            let joined = out.join(target);
                            out = normalise(&joined);
                        }
                    }
                }
            }
        }
    }
    out
}

/// `..` and `.` removed lexically (for paths that do not exist).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{compose_from_value, parse_yaml};

    /// A recipe directory with a `data/` subdirectory and the given symlinks.
    fn recipe_dir(name: &str, links: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("seatrial-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("dir");
        for (link, target) in links {
            std::os::unix::fs::symlink(target, dir.join(link)).expect("symlink");
        }
        dir.canonicalize().expect("canonical")
    }

    fn violations(dir: &Path, yaml: &str) -> Vec<Violation> {
        let value = parse_yaml(yaml, Path::new("compose.yml")).expect("yaml");
        let (compose, _) = compose_from_value(value, Path::new("compose.yml")).expect("compose");
        check(&compose, dir)
    }

    fn ids(v: &[Violation]) -> Vec<String> {
        v.iter().map(Violation::permit).collect()
    }

    fn service(body: &str) -> String {
        format!("services:\n  app:\n    image: busybox:1\n{body}")
    }

    #[test]
    fn the_docker_socket_is_refused_however_it_is_spelled() {
        let dir = recipe_dir("socket", &[("sock", "/var/run/docker.sock")]);
        for source in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run/../run/docker.sock",
            "/var//run/./docker.sock",
            "/run/user/1000/docker.sock",
            "./sock",
        ] {
            let v = violations(
                &dir,
                &service(&format!(
                    "    volumes:\n      - {source}:/var/run/docker.sock:ro\n"
                )),
            );
            assert_eq!(v.len(), 1, "{source}: {v:#?}");
            assert_eq!(v[0].rule, Rule::DockerSocket, "{source}: {v:#?}");
            assert_eq!(v[0].at, "services.app.volumes[0]");
            assert_eq!(v[0].permit(), "docker-socket");
        }
    }

    #[test]
    fn a_directory_holding_the_socket_is_a_host_bind_and_the_socket() {
        let dir = recipe_dir("run", &[]);
        let v = violations(&dir, &service("    volumes:\n      - /var/run:/host-run\n"));
        let mut got = ids(&v);
        got.sort();
        let run = resolve_host(Path::new("/var/run")).display().to_string();
        assert_eq!(
            got,
            vec!["docker-socket".to_owned(), format!("host-bind:{run}")]
        );
    }

    #[test]
    fn host_paths_outside_the_recipe_are_refused_inside_are_fine() {
        let dir = recipe_dir(
            "binds",
            &[("etc-link", "/etc"), ("dangling", "/nonexistent/x")],
        );
        let yaml = service(
            "    volumes:\n      - ./data:/data\n      - data:/data2\n      - /etc:/host-etc:ro\n      - ../../etc:/up\n      - ./etc-link:/linked\n      - type: bind\n        source: ./dangling\n        target: /d\n      - type: tmpfs\n        target: /tmp\n",
        );
        let v = violations(&dir, &yaml);
        let got: Vec<(String, String)> = v.iter().map(|v| (v.at.clone(), v.permit())).collect();
        assert_eq!(
            got,
            vec![
                ("services.app.volumes[2]".into(), "host-bind:/etc".into()),
                ("services.app.volumes[3]".into(), "host-bind:/etc".into()),
                ("services.app.volumes[4]".into(), "host-bind:/etc".into()),
                (
                    "services.app.volumes[5]".into(),
                    "host-bind:/nonexistent/x".into()
                ),
            ],
            "{v:#?}"
        );
        assert!(v[3].what.contains("written `./dangling`"), "{v:#?}");
        // An absolute path into the recipe itself is inside.
        let inside = format!("    volumes:\n      - {}/data:/data\n", dir.display());
        assert!(violations(&dir, &service(&inside)).is_empty());
    }

    #[test]
    fn bind_volumes_by_driver_opts_are_host_binds() {
        let dir = recipe_dir("driveropts", &[]);
        let yaml = service("    volumes:\n      - etc:/etc-host\n")
            + "volumes:\n  etc:\n    driver: local\n    driver_opts:\n      type: none\n      o: bind\n      device: /etc\n  disk:\n    driver_opts:\n      type: ext4\n      device: /dev/sdb1\n  nfs:\n    driver_opts:\n      type: nfs\n      o: addr=10.0.0.1,rw\n      device: \":/export\"\n  plugin:\n    driver: local-persist\n";
        let v = violations(&dir, &yaml);
        assert_eq!(
            ids(&v),
            vec![
                "host-bind:/etc",
                "devices:/dev/sdb1",
                "volume-driver:local-persist"
            ],
            "{v:#?}"
        );
        assert_eq!(v[0].at, "volumes.etc.driver_opts.device");
    }

    #[test]
    fn privileges_and_host_namespaces_are_refused() {
        let dir = recipe_dir("privs", &[]);
        let yaml = service(
            "    privileged: true\n    network_mode: host\n    pid: host\n    ipc: host\n    uts: host\n    userns_mode: host\n    cgroup: host\n    cgroup_parent: /system.slice\n    cap_add: [NET_ADMIN, CHOWN, cap_sys_admin]\n    devices:\n      - /dev/fuse:/dev/fuse\n      - source: /dev/kvm\n        target: /dev/kvm\n    security_opt: [no-new-privileges:true, seccomp=unconfined]\n",
        );
        let mut got = ids(&violations(&dir, &yaml));
        got.sort();
        let mut want = vec![
            "privileged",
            "network_mode:host",
            "pid:host",
            "ipc:host",
            "uts:host",
            "userns_mode:host",
            "cgroup:host",
            "cgroup_parent:/system.slice",
            "cap_add:NET_ADMIN",
            "cap_add:SYS_ADMIN",
            "devices:/dev/fuse",
            "devices:/dev/kvm",
            "security_opt:seccomp=unconfined",
        ];
        want.sort();
        assert_eq!(got, want);
        // Harmless spellings of the same keys are not findings.
        let calm = service(
            "    privileged: false\n    network_mode: bridge\n    ipc: shareable\n    security_opt: [no-new-privileges]\n    cap_add: [NET_BIND_SERVICE]\n",
        );
        assert_eq!(violations(&dir, &calm), Vec::new());
    }

    #[test]
    fn the_swarm_host_network_is_network_mode_host() {
        let dir = recipe_dir("hostnet", &[]);
        let yaml = service("    networks: [hostnet]\n")
            + "networks:\n  hostnet:\n    external: true\n    name: host\n  proxy:\n    external: true\n";
        assert_eq!(ids(&violations(&dir, &yaml)), vec!["network_mode:host"]);
    }

    #[test]
    fn permits_cover_what_they_name_and_no_more() {
        let dir = recipe_dir("permits", &[]);
        let yaml = service(
            "    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - /var/log/app:/logs\n      - /etc:/host-etc\n    cap_add: [net_admin]\n",
        );
        let v = violations(&dir, &yaml);
        let permits: Vec<Permit> = [
            "docker-socket",
            "host-bind:/var/log",
            "cap_add:CAP_NET_ADMIN",
        ]
        .iter()
        .map(|p| p.parse().expect("permit"))
        .collect();
        let left: Vec<String> = refused(&v, &permits).iter().map(|v| v.permit()).collect();
        assert_eq!(left, vec!["host-bind:/etc"]);
        // A path permit covers what is below it, not its neighbours.
        let sibling: Permit = "host-bind:/var/lo".parse().expect("permit");
        assert!(!v.iter().any(|v| sibling.allows(v)));
        let any: Permit = "host-bind".parse().expect("permit");
        assert_eq!(
            refused(&v, &[any]).len(),
            2,
            "docker-socket and cap_add stay"
        );
    }

    #[test]
    fn bad_permit_entries_say_what_to_write() {
        let e = "docker_socket".parse::<Permit>().expect_err("unknown");
        assert!(
            e.contains("unknown rule `docker_socket`") && e.contains("docker-socket"),
            "{e}"
        );
        let e = "host-bind:var/log".parse::<Permit>().expect_err("relative");
        assert!(e.contains("absolute host path"), "{e}");
        let e = "cap_add:".parse::<Permit>().expect_err("empty");
        assert!(e.contains("empty value"), "{e}");
    }

    #[test]
    fn overlays_and_interpolation_are_judged_after_resolution() {
        let dir = recipe_dir("resolved", &[]);
        std::fs::write(
            dir.join("compose.yml"),
            "services:\n  app:\n    image: busybox:1\n    volumes:\n      - ${HOST_DIR}:/data\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("compose.priv.yml"),
            "services:\n  app:\n    privileged: true\n",
        )
        .expect("write");
        std::fs::write(
            dir.join(".env.sample"),
            "TYPE=resolved\nHOST_DIR=/etc\nCOMPOSE_FILE=compose.yml:compose.priv.yml\n",
        )
        .expect("write");
        let recipe = crate::Recipe::open(&dir).expect("open");
        let app = recipe
            .resolve(&crate::AppSettings {
                stack: "t-1".into(),
                ..Default::default()
            })
            .expect("resolve");
        let mut got = ids(&check(&app.compose, &recipe.dir));
        got.sort();
        assert_eq!(got, vec!["host-bind:/etc", "privileged"]);
    }
}
