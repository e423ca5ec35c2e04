//! Reading compose files: YAML (with resource budgets) → typed model, with warnings for keys
//! seatrial does not know and `x-*` extensions kept.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compose::ComposeFile;
use crate::error::RecipeError;
use crate::validate::{Finding, Severity};

/// Compose files larger than this are refused before parsing (real recipes are a few KiB).
pub const MAX_COMPOSE_BYTES: u64 = 4 * 1024 * 1024;

/// File names tried, in order, when a directory is given.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yml",
    "compose.yaml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// A parsed compose file and what was noticed while reading it.
#[derive(Debug, Clone)]
pub struct LoadedCompose {
    pub path: PathBuf,
    pub compose: ComposeFile,
    /// Warnings (unknown keys, ignored settings) and errors found by validation.
    pub findings: Vec<Finding>,
}

impl LoadedCompose {
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }

    /// The directory the compose file lives in; relative `file:` paths resolve against it.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Finds the compose file of a recipe directory (or takes a file path as is).
pub fn find_compose_file(path: &Path) -> Result<PathBuf, RecipeError> {
    let meta = fs::metadata(path).map_err(|source| RecipeError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_file() {
        return Ok(path.to_owned());
    }
    COMPOSE_FILE_NAMES
        .iter()
        .map(|name| path.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| RecipeError::NoComposeFile {
            dir: path.to_owned(),
        })
}

/// Loads and validates the compose file of a recipe directory or a compose file path.
/// Validation errors are returned as [`RecipeError::Invalid`]; warnings stay in `findings`.
pub fn load_compose(path: &Path) -> Result<LoadedCompose, RecipeError> {
    let file = find_compose_file(path)?;
    let len = fs::metadata(&file)
        .map_err(|source| RecipeError::Io {
            path: file.clone(),
            source,
        })?
        .len();
    if len > MAX_COMPOSE_BYTES {
        return Err(RecipeError::TooLarge {
            path: file,
            size: len,
            limit: MAX_COMPOSE_BYTES,
        });
    }
    let text = fs::read_to_string(&file).map_err(|source| RecipeError::Io {
        path: file.clone(),
        source,
    })?;
    let value = parse_yaml(&text, &file)?;
    let (compose, mut findings) =
        compose_from_value(value, &file).map_err(|e| with_line(e, &text))?;
    findings.extend(crate::validate::validate(&compose));
    refuse_errors(&file, &findings)?;
    Ok(LoadedCompose {
        path: file,
        compose,
        findings,
    })
}

/// Fills in the line of a schema error from the text of the file it is about.
pub(crate) fn with_line(e: RecipeError, text: &str) -> RecipeError {
    match e {
        RecipeError::Schema {
            path,
            at,
            message,
            line: None,
        } => RecipeError::Schema {
            line: crate::locate::line_of(text, &at),
            path,
            at,
            message,
        },
        other => other,
    }
}

/// Fails with [`RecipeError::Invalid`] listing the error-severity findings, if there are any.
pub(crate) fn refuse_errors(path: &Path, findings: &[Finding]) -> Result<(), RecipeError> {
    let errors: Vec<Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .cloned()
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RecipeError::Invalid {
            path: path.to_owned(),
            findings: errors,
        })
    }
}

/// Parses YAML text into a generic value, within serde-saphyr's default resource budget
/// (which refuses alias bombs and absurd nesting).
///
/// Scalars keep the spelling compose users expect: `0440` stays text (file modes are octal),
/// `yes`/`on` stay text (YAML 1.2), `1_000` stays text.
pub fn parse_yaml(text: &str, path: &Path) -> Result<Value, RecipeError> {
    let mut options = serde_saphyr::Options::default();
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.strict_booleans = true;
    let value: Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| RecipeError::Yaml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(RecipeError::Yaml {
            path: path.to_owned(),
            message: "the file is empty; a compose file needs at least `services:`".into(),
        }),
        other => Err(RecipeError::Yaml {
            path: path.to_owned(),
            message: format!(
                "the top level must be a mapping (services:, volumes:, ...), not {}",
                kind_of(&other)
            ),
        }),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Turns a generic value (one file, or the merge of several) into the typed model.
/// Unknown keys become warnings; `x-*` keys are kept as extensions.
pub fn compose_from_value(
    value: Value,
    path: &Path,
) -> Result<(ComposeFile, Vec<Finding>), RecipeError> {
    let extensions = |v: Option<&Value>| {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("x-"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let top_extensions = extensions(Some(&value));
    let host_options = |v: &Value| -> indexmap::IndexMap<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| crate::policy::HOST_OPTION_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    type Kept = (
        String,
        indexmap::IndexMap<String, Value>,
        indexmap::IndexMap<String, Value>,
    );
    let service_extensions: Vec<Kept> = value
        .get("services")
        .and_then(Value::as_object)
        .map(|services| {
            services
                .iter()
                .map(|(name, svc)| (name.clone(), extensions(Some(svc)), host_options(svc)))
                .collect()
        })
        .unwrap_or_default();

    let mut unknown = Vec::new();
    // serde_ignored writes `?` for an Option level; users know no such level.
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string().replace(".?", ""));
    let ignored = serde_ignored::Deserializer::new(&value, &mut on_unknown);
    let mut compose: ComposeFile =
        serde_path_to_error::deserialize(ignored).map_err(|e| RecipeError::Schema {
            path: path.to_owned(),
            at: e.path().to_string(),
            message: e.into_inner().to_string(),
            line: None,
        })?;
    compose.extensions = top_extensions;
    for (name, ext, host) in service_extensions {
        if let Some(svc) = compose.services.get_mut(&name) {
            svc.extensions = ext;
            svc.host_options = host;
        }
    }
    let findings = unknown
        .into_iter()
        .filter(|p| !p.rsplit('.').next().unwrap_or(p).starts_with("x-"))
        .map(|p| unknown_key_finding(&p))
        .collect();
    Ok((compose, findings))
}

/// Service keys that compose supports but Swarm does not (`docker stack deploy` ignores them),
/// with what to do instead.
const SWARM_UNSUPPORTED: &[(&str, &str)] = &[
    ("tmpfs", "use a volume of `type: tmpfs` under `volumes:`"),
    ("shm_size", "mount a `type: tmpfs` volume at /dev/shm"),
    (
        "privileged",
        "grant only the capabilities needed with `cap_add`",
    ),
    ("devices", "Swarm services cannot use host devices"),
    ("network_mode", "join networks with `networks:`"),
    (
        "links",
        "services reach each other by name on a shared network",
    ),
    (
        "external_links",
        "services reach each other by name on a shared network",
    ),
    ("security_opt", "Swarm services cannot set security options"),
    ("ulimits", "set limits in the image or entrypoint"),
    ("pid", "Swarm services cannot share a PID namespace"),
    ("ipc", "Swarm services cannot share an IPC namespace"),
    (
        "cgroup_parent",
        "Swarm services cannot choose a cgroup parent",
    ),
    (
        "userns_mode",
        "Swarm services cannot set a user namespace mode",
    ),
    ("mac_address", "Swarm services cannot set a MAC address"),
    ("domainname", "set `hostname` instead"),
];

fn unknown_key_finding(path: &str) -> Finding {
    let key = path.rsplit('.').next().unwrap_or(path);
    let in_service = path.starts_with("services.") && path.matches('.').count() == 2;
    match SWARM_UNSUPPORTED.iter().find(|(k, _)| *k == key) {
        Some((_, instead)) if in_service => Finding {
            severity: Severity::Warning,
            at: path.to_owned(),
            message: format!(
                "`{key}` is not supported by Swarm and is ignored (docker stack deploy ignores it too)"
            ),
            hint: (*instead).to_owned(),
        },
        _ => Finding {
            severity: Severity::Warning,
            at: path.to_owned(),
            message: format!(
                "unknown key `{path}` is not understood by seatrial and will not be deployed"
            ),
            hint: "check its spelling; if it matters for your app, open an issue".into(),
        },
    }
}
