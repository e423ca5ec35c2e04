//! How resources of a stack are named on the engine, and the engine's limits on those names.

use crate::compose::ComposeFile;
use crate::validate::{Finding, Severity};

/// Swarm refuses secret and config names longer than this.
pub const MAX_SECRET_NAME: usize = 64;
/// Swarm refuses service names longer than this (they become DNS labels).
pub const MAX_SERVICE_NAME: usize = 63;

/// `<stack>_<key>`, the name `docker stack deploy` gives a stack member without an explicit name.
pub fn scoped(stack: &str, key: &str) -> String {
    format!("{stack}_{key}")
}

/// The engine name of a network, volume, secret or config: its `name:` if set, else scoped.
pub fn resource_name(stack: &str, key: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| scoped(stack, key), str::to_owned)
}

/// Is `name` made only of characters Swarm accepts in secret/config names?
fn valid_object_chars(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A stack name must be a short DNS-friendly label: it prefixes every resource.
pub fn check_stack_name(stack: &str) -> Result<(), String> {
    let ok_chars = stack
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if stack.is_empty()
        || !ok_chars
        || !stack
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "stack name {stack:?} must start with a letter or digit and contain only letters, digits, '-' and '_'"
        ));
    }
    if stack.len() > 50 {
        return Err(format!(
            "stack name {stack:?} is {} characters; keep it to 50 or fewer so service, secret and config names fit the engine's limits",
            stack.len()
        ));
    }
    Ok(())
}

/// Every name the stack would create that the engine would refuse, as error findings.
pub fn guard_names(compose: &ComposeFile, stack: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut check = |kind: &str, key: &str, name: String, limit: usize, at: String| {
        if name.len() > limit {
            out.push(Finding {
                severity: Severity::Error,
                at,
                message: format!(
                    "{kind} `{key}` would be named `{name}` ({} characters); the engine allows at most {limit}",
                    name.len()
                ),
                hint: format!("use a shorter stack name (now `{stack}`) or a shorter {kind} name"),
            });
        } else if kind != "service" && !valid_object_chars(&name) {
            out.push(Finding {
                severity: Severity::Error,
                at,
                message: format!("{kind} `{key}` would be named `{name}`, which has characters the engine refuses"),
                hint: "use only letters, digits, '-', '_' and '.'".into(),
            });
        }
    };
    for key in compose.services.keys() {
        check(
            "service",
            key,
            scoped(stack, key),
            MAX_SERVICE_NAME,
            format!("services.{key}"),
        );
    }
    for (key, s) in &compose.secrets {
        let name = s.external.name.as_deref().or(s.name.as_deref());
        let name = if s.external.external {
            name.unwrap_or(key).to_owned()
        } else {
            resource_name(stack, key, name)
        };
        check(
            "secret",
            key,
            name,
            MAX_SECRET_NAME,
            format!("secrets.{key}"),
        );
    }
    for (key, c) in &compose.configs {
        let name = c.external.name.as_deref().or(c.name.as_deref());
        let name = if c.external.external {
            name.unwrap_or(key).to_owned()
        } else {
            resource_name(stack, key, name)
        };
        check(
            "config",
            key,
            name,
            MAX_SECRET_NAME,
            format!("configs.{key}"),
        );
    }
    out
}
