//! Checks that a compose model can be deployed to Swarm: every reference resolves, nothing
//! Swarm would silently ignore goes unmentioned.

use std::fmt;

use serde::Serialize;

use crate::compose::{ComposeFile, MountKind, PortMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One thing found in a recipe: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A dotted path into the compose file, e.g. `services.web.ports[0]`.
    pub at: String,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev} at {}: {}", self.at, self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

fn finding(severity: Severity, at: String, message: String, hint: &str) -> Finding {
    Finding {
        severity,
        at,
        message,
        hint: hint.to_owned(),
    }
}

/// All problems of a compose model that do not depend on the stack name.
pub fn validate(compose: &ComposeFile) -> Vec<Finding> {
    use Severity::{Error, Warning};
    let mut out = Vec::new();
    if compose.services.is_empty() {
        out.push(finding(
            Error,
            "services".into(),
            "the compose file defines no services".into(),
            "add at least one service under `services:`",
        ));
    }
    for (name, svc) in &compose.services {
        let at = |field: &str| format!("services.{name}.{field}");
        match svc.image.as_deref() {
            None | Some("") => out.push(finding(
                Error,
                at("image"),
                format!("service `{name}` has no image"),
                "Swarm never builds images: set `image:` to an image the engine has or can pull",
            )),
            Some(_) if svc.build.is_some() => out.push(finding(
                Warning,
                at("build"),
                format!("service `{name}`: `build:` is ignored; Swarm deploys `image:` as it is"),
                "build the image before deploying",
            )),
            Some(_) => {}
        }
        if svc.env_file.is_some() {
            out.push(finding(
                Error,
                at("env_file"),
                format!("service `{name}` uses `env_file:`, which seatrial does not read"),
                "move the variables into `environment:` (values may use ${VAR} from the app env)",
            ));
        }
        if svc.container_name.is_some() {
            out.push(finding(
                Warning,
                at("container_name"),
                format!("service `{name}`: `container_name:` is ignored by Swarm"),
                "remove it; Swarm names containers <stack>_<service>.<slot>.<id>",
            ));
        }
        if svc.restart.is_some() {
            out.push(finding(
                Warning,
                at("restart"),
                format!("service `{name}`: `restart:` is ignored by Swarm"),
                "use `deploy.restart_policy` instead",
            ));
        }
        for (i, port) in svc.ports.iter().enumerate() {
            if port.host_ip.is_some() {
                out.push(finding(
                    Warning,
                    at(&format!("ports[{i}]")),
                    format!("service `{name}`: Swarm cannot bind a published port to one host IP; it binds all addresses"),
                    "remove the IP from the port, or put a proxy in front",
                ));
            }
            if port.mode == PortMode::Host && svc.replicas().is_some_and(|r| r > 1) {
                out.push(finding(
                    Warning,
                    at(&format!("ports[{i}]")),
                    format!("service `{name}` publishes port {:?} in host mode with several replicas; on one node only one can bind it", port.published),
                    "use one replica per node (mode: global) or drop the published port",
                ));
            }
        }
        for net in svc.networks.keys() {
            if net != "default" && !compose.networks.contains_key(net) {
                out.push(finding(
                    Error,
                    at("networks"),
                    format!("service `{name}` joins network `{net}`, which is not defined under the top-level `networks:`"),
                    "define it there (with `external: true` if it exists already)",
                ));
            }
        }
        for (i, vol) in svc.volumes.iter().enumerate() {
            if vol.kind == MountKind::Volume
                && let Some(src) = &vol.source
                && !compose.volumes.contains_key(src)
            {
                out.push(finding(
                    Error,
                    at(&format!("volumes[{i}]")),
                    format!("service `{name}` mounts volume `{src}`, which is not defined under the top-level `volumes:`"),
                    "define it there, or use a path starting with / or ./ for a bind mount",
                ));
            }
        }
        for (kind, refs, defined) in [
            (
                "secret",
                &svc.secrets,
                compose.secrets.keys().collect::<Vec<_>>(),
            ),
            (
                "config",
                &svc.configs,
                compose.configs.keys().collect::<Vec<_>>(),
            ),
        ] {
            for r in refs {
                if !defined.contains(&&r.source) {
                    out.push(finding(
                        Error,
                        at(&format!("{kind}s")),
                        format!("service `{name}` uses {kind} `{}`, which is not defined under the top-level `{kind}s:`", r.source),
                        "define it there",
                    ));
                }
            }
        }
        for dep in &svc.depends_on {
            if !compose.services.contains_key(dep) {
                // Swarm ignores `depends_on` (and Docker's loader accepts the name): a warning.
                out.push(finding(
                    Warning,
                    at("depends_on"),
                    format!(
                        "service `{name}` depends on `{dep}`, which is not a service of this file; Swarm ignores depends_on"
                    ),
                    "fix the name or remove the dependency",
                ));
            }
        }
    }
    for (key, s) in &compose.secrets {
        if !s.external.external && s.file.is_none() && s.environment.is_none() {
            out.push(finding(
                Error,
                format!("secrets.{key}"),
                format!("secret `{key}` has no value source"),
                "set `file:`, `environment:`, or `external: true`",
            ));
        }
    }
    for (key, c) in &compose.configs {
        if !c.external.external
            && c.file.is_none()
            && c.content.is_none()
            && c.environment.is_none()
        {
            out.push(finding(
                Error,
                format!("configs.{key}"),
                format!("config `{key}` has no value source"),
                "set `file:`, `content:`, `environment:`, or `external: true`",
            ));
        }
        if let Some(driver) = &c.template_driver
            && driver != "golang"
        {
            out.push(finding(
                Error,
                format!("configs.{key}.template_driver"),
                format!(
                    "config `{key}` asks for template driver `{driver}`; Swarm only has `golang`"
                ),
                "use `template_driver: golang` or remove it",
            ));
        }
    }
    out
}
