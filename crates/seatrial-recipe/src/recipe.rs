//! A recipe on disk and its resolution into a deployable app: the app env (from `.env.sample`
//! or `.env`, abra.sh exports, user overrides, `STACK_NAME`, `DOMAIN`, `TYPE`), the compose files
//! `COMPOSE_FILE` selects, each interpolated and then merged, and the secrets it needs.

use std::fs;
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::compose::ComposeFile;
use crate::env::{self, EnvFile};
use crate::error::RecipeError;
use crate::interpolate::{self, InterpolationError};
use crate::load::{self, COMPOSE_FILE_NAMES, MAX_COMPOSE_BYTES};
use crate::merge;
use crate::validate::{Finding, Severity};

/// Length of a generated secret when `.env.sample` gives no `# length=N` hint.
pub const DEFAULT_SECRET_LENGTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeKind {
    /// A Co-op Cloud recipe: `.env.sample`, `compose.yml` plus overlays, optional `abra.sh`.
    CoopCloud,
    /// A plain compose project: a compose file and an optional `.env`.
    Compose,
}

/// A recipe directory, read but not yet resolved for an app.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Canonical path of the recipe directory.
    pub dir: PathBuf,
    pub name: String,
    pub kind: RecipeKind,
    /// `.env.sample` (Co-op Cloud) or `.env` (compose); empty when absent.
    pub sample_env: EnvFile,
    /// `export NAME=VALUE` lines of `abra.sh`.
    pub abra_exports: IndexMap<String, String>,
    /// Warnings found while reading the recipe.
    pub findings: Vec<Finding>,
    default_compose_file: String,
}

/// What makes an app of a recipe: its stack name, domain, and overrides of the env.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    pub stack: String,
    pub domain: Option<String>,
    /// `KEY=value` overrides of the app env, applied after `.env.sample` and abra.sh.
    pub overrides: IndexMap<String, String>,
    /// The recipe version being deployed, recorded in `TYPE=<recipe>:<version>`.
    pub version: Option<String>,
}

/// A secret the app needs: `SECRET_<NAME>_VERSION=<version>` in the app env.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretSlot {
    /// The env key, e.g. `SECRET_DB_PASSWORD_VERSION`.
    pub env_key: String,
    /// The secret's short name, e.g. `db_password`.
    pub name: String,
    pub version: String,
    /// Length of a generated value (`# length=N`, default 32).
    pub length: usize,
    /// Its name on the engine: `<stack>_<name>_<version>`.
    pub engine_name: String,
}

/// A recipe resolved for one app: what the engine deploys.
#[derive(Debug, Clone)]
pub struct ResolvedApp {
    pub compose: ComposeFile,
    pub env: IndexMap<String, String>,
    /// The compose files used, in merge order.
    pub files: Vec<PathBuf>,
    pub secrets: Vec<SecretSlot>,
    /// Warnings (unknown keys, unset variables, ignored settings).
    pub findings: Vec<Finding>,
}

impl Recipe {
    /// Reads a recipe directory.
    pub fn open(dir: &Path) -> Result<Self, RecipeError> {
        let canonical = dir.canonicalize().map_err(|source| RecipeError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(RecipeError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        let name = canonical
            .file_name()
            .map_or_else(|| "recipe".to_owned(), |n| n.to_string_lossy().into_owned());
        // Every file read must be inside the recipe (no symlinks out).
        let in_recipe = |rel: &str| -> Result<Option<PathBuf>, RecipeError> {
            if !canonical.join(rel).exists() {
                return Ok(None);
            }
            inside_recipe(&canonical, rel)
                .map(Some)
                .map_err(|reason| RecipeError::ComposeFile {
                    recipe: canonical.clone(),
                    entry: rel.to_owned(),
                    reason,
                })
        };
        let (kind, env_path) = match in_recipe(".env.sample")? {
            Some(sample) => (RecipeKind::CoopCloud, Some(sample)),
            None => (RecipeKind::Compose, in_recipe(".env")?),
        };
        let mut findings = Vec::new();
        let sample_env = match &env_path {
            Some(path) => {
                let text = read_small(&canonical, path)?;
                let parsed = env::parse(&text);
                let label = file_label(&canonical, path);
                for (line, problem) in &parsed.problems {
                    findings.push(Finding {
                        severity: Severity::Warning,
                        at: format!("{label}:{line}"),
                        message: problem.clone(),
                        hint: "fix the line (KEY=value)".into(),
                    });
                }
                for (line, problem) in &parsed.errors {
                    findings.push(Finding {
                        severity: Severity::Error,
                        at: format!("{label}:{line}"),
                        message: problem.clone(),
                        hint: "close the quote; a value spanning lines needs its closing quote"
                            .into(),
                    });
                }
                findings.extend(secret_hint_findings(&parsed, &label));
                parsed
            }
            None => EnvFile::default(),
        };
        // The recipe names itself in TYPE (Co-op Cloud); otherwise its directory does.
        let name = sample_env
            .get("TYPE")
            .and_then(|t| t.split(':').next())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map_or(name, str::to_owned);
        let abra_exports = match in_recipe("abra.sh")? {
            Some(abra) => env::abra_exports(&read_small(&canonical, &abra)?),
            None => IndexMap::new(),
        };
        let default_compose_file = COMPOSE_FILE_NAMES
            .iter()
            .find(|n| canonical.join(n).is_file())
            .map_or_else(|| "compose.yml".to_owned(), |n| (*n).to_owned());
        Ok(Self {
            dir: canonical,
            name,
            kind,
            sample_env,
            abra_exports,
            findings,
            default_compose_file,
        })
    }

    /// The app env for `settings`, in the order values were applied.
    pub fn app_env(&self, settings: &AppSettings) -> IndexMap<String, String> {
        let mut env = self.sample_env.values();
        for (k, v) in &self.abra_exports {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &settings.overrides {
            env.insert(k.clone(), v.clone());
        }
        env.insert("STACK_NAME".into(), settings.stack.clone());
        if let Some(domain) = &settings.domain {
            env.insert("DOMAIN".into(), domain.clone());
        }
        let base_type = env
            .get("TYPE")
            .map(|t| t.split(':').next().unwrap_or_default().to_owned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.name.clone());
        let ty = match &settings.version {
            Some(v) => format!("{base_type}:{v}"),
            None => env.get("TYPE").cloned().unwrap_or(base_type),
        };
        env.insert("TYPE".into(), ty);
        env
    }

    /// The compose files `COMPOSE_FILE` selects, checked to stay inside the recipe.
    pub fn compose_files(
        &self,
        env: &IndexMap<String, String>,
    ) -> Result<Vec<PathBuf>, RecipeError> {
        let list = env
            .get("COMPOSE_FILE")
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| self.default_compose_file.clone());
        let mut files = Vec::new();
        for entry in list.split(':').map(str::trim).filter(|e| !e.is_empty()) {
            let path =
                inside_recipe(&self.dir, entry).map_err(|reason| RecipeError::ComposeFile {
                    recipe: self.dir.clone(),
                    entry: entry.to_owned(),
                    reason,
                })?;
            if !files.contains(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(RecipeError::NoComposeFile {
                dir: self.dir.clone(),
            });
        }
        Ok(files)
    }

    /// Resolves the recipe for an app: env, compose files, interpolation, merge, validation.
    /// Refuses (with [`RecipeError::Invalid`]) anything a deploy would fail on.
    pub fn resolve(&self, settings: &AppSettings) -> Result<ResolvedApp, RecipeError> {
        let app = self.render(settings)?;
        let first = app.files.first().cloned().unwrap_or_default();
        load::refuse_errors(&first, &app.findings)?;
        Ok(app)
    }

    /// Resolves the recipe as Docker's loader reads it: refuses only what the loader refuses
    /// (unreadable files, bad interpolation, bad syntax); what a deploy would reject (an
    /// undefined secret, a missing version variable) stays in `findings` as errors.
    pub fn render(&self, settings: &AppSettings) -> Result<ResolvedApp, RecipeError> {
        let env_errors: Vec<Finding> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .cloned()
            .collect();
        if !env_errors.is_empty() {
            return Err(RecipeError::Invalid {
                path: self.dir.clone(),
                findings: env_errors,
            });
        }
        let env = self.app_env(settings);
        let files = self.compose_files(&env)?;
        let mut findings = self.findings.clone();
        let mut merged: Option<Value> = None;
        // `secrets.<key>.name` as written, before interpolation: the version variable it uses
        // says which secret value to generate (an overlay's definition replaces the base's).
        let mut secret_templates: IndexMap<String, String> = IndexMap::new();
        for file in &files {
            let text = read_small(&self.dir, file)?;
            let mut value = load::parse_yaml(&text, file)?;
            let label = file_label(&self.dir, file);
            if let Some(secrets) = value.get("secrets").and_then(Value::as_object) {
                for (key, def) in secrets {
                    let name = def
                        .get("name")
                        .or_else(|| def.get("external").and_then(|e| e.get("name")))
                        .and_then(Value::as_str);
                    match name {
                        Some(n) => secret_templates.insert(key.clone(), n.to_owned()),
                        None => secret_templates.shift_remove(key),
                    };
                }
            }
            let source = Source {
                label: &label,
                text: &text,
            };
            interpolate_value(&mut value, &env, &source, &mut String::new(), &mut findings)?;
            // Like Docker's loader, each file must read as compose on its own before merging,
            // so an error names the file (an overlay's own name) and its line.
            load::compose_from_value(value.clone(), file).map_err(|e| load::with_line(e, &text))?;
            match &mut merged {
                None => merged = Some(value),
                Some(base) => merge::merge(base, value),
            }
        }
        let merged = merged.unwrap_or(Value::Null);
        let first = files.first().cloned().unwrap_or_default();
        let (compose, unknown) = load::compose_from_value(merged, &first)?;
        findings.extend(unknown);
        findings.extend(crate::validate::validate(&compose));
        let (secrets, secret_findings) =
            secret_slots(&compose, &secret_templates, &self.sample_env, &env);
        findings.extend(secret_findings);
        Ok(ResolvedApp {
            compose,
            env,
            files,
            secrets,
            findings,
        })
    }
}

/// The secrets an app needs generated: every external secret a service uses whose name the
/// compose builds from a `*_VERSION` variable (`${STACK_NAME}_db_${SECRET_DB_VERSION}`), with
/// the version and engine name that interpolation gives it. A name whose version variable is
/// not set is an error finding (its name would end in `_`).
pub fn secret_slots(
    compose: &ComposeFile,
    templates: &IndexMap<String, String>,
    sample: &EnvFile,
    env: &IndexMap<String, String>,
) -> (Vec<SecretSlot>, Vec<Finding>) {
    let mut slots: Vec<SecretSlot> = Vec::new();
    let mut findings = Vec::new();
    for (key, secret) in &compose.secrets {
        let used = compose
            .services
            .values()
            .any(|svc| svc.secrets.iter().any(|r| r.source == *key));
        if !secret.external.external || !used {
            continue;
        }
        let Some(template) = templates.get(key) else {
            continue;
        };
        let Some(var) = variables(template)
            .into_iter()
            .find(|v| v.ends_with("_VERSION"))
        else {
            continue; // a fixed name: the secret must exist already
        };
        let Some(version) = env.get(var).filter(|v| !v.is_empty()) else {
            findings.push(Finding {
                severity: Severity::Error,
                at: format!("secrets.{key}.name"),
                message: format!(
                    "secret `{key}` is named `{template}`, but `{var}` is not set in the app env"
                ),
                hint: format!(
                    "add `{var}=v1` to .env.sample (with `# length=N` to size the generated value)"
                ),
            });
            continue;
        };
        let engine_name = secret
            .name
            .clone()
            .or_else(|| secret.external.name.clone())
            .unwrap_or_else(|| key.clone());
        if slots.iter().any(|s| s.engine_name == engine_name) {
            continue;
        }
        let name = var
            .strip_prefix("SECRET_")
            .and_then(|v| v.strip_suffix("_VERSION"))
            .filter(|n| !n.is_empty())
            .map_or_else(|| key.clone(), str::to_ascii_lowercase);
        let length = sample
            .entries
            .get(var)
            .and_then(|e| e.hint("length"))
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_SECRET_LENGTH);
        slots.push(SecretSlot {
            env_key: var.to_owned(),
            name,
            version: version.clone(),
            length,
            engine_name,
        });
    }
    (slots, findings)
}

/// The variable names a template uses (`$A`, `${B:-x}`), in order.
fn variables(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            rest = r;
            continue;
        }
        let r = rest.strip_prefix('{').unwrap_or(rest);
        let end = r
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(r.len());
        if end > 0 {
            out.push(&r[..end]);
        }
        rest = &r[end..];
    }
    out
}

/// Hints abra reads from a `SECRET_*_VERSION` line's comment.
const SECRET_HINTS: [&str; 3] = ["length", "generate", "charset"];

/// Warnings for `SECRET_*_VERSION` comments seatrial would not understand (`# lenght=64`).
fn secret_hint_findings(env: &EnvFile, label: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, entry) in &env.entries {
        if !(key.starts_with("SECRET_") && key.ends_with("_VERSION")) {
            continue;
        }
        let Some(comment) = &entry.comment else {
            continue;
        };
        for part in comment.split_whitespace() {
            let Some((hint, value)) = part.split_once('=') else {
                continue;
            };
            let problem = if !SECRET_HINTS.contains(&hint) {
                Some(format!(
                    "unknown secret hint `{part}` for `{key}`; it is ignored"
                ))
            } else if hint == "length" && value.parse::<usize>().map_or(true, |l| l == 0) {
                Some(format!(
                    "secret hint `{part}` for `{key}` is not a length; {DEFAULT_SECRET_LENGTH} characters are generated"
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                out.push(Finding {
                    severity: Severity::Warning,
                    at: format!("{label}:{}", entry.line),
                    message,
                    hint: format!(
                        "known hints: {}, e.g. `# length=64`",
                        SECRET_HINTS.join(", ")
                    ),
                });
            }
        }
    }
    out
}

/// A path relative to the recipe, shown in messages.
fn file_label(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir)
        .map_or_else(|_| file.display().to_string(), |p| p.display().to_string())
}

/// Resolves `rel` inside the recipe directory `dir` (canonical), refusing absolute paths, `..`,
/// and symlinks that lead outside.
pub fn inside_recipe(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err("is an absolute path; recipe files must be inside the recipe".into());
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("uses `..` to leave the recipe directory".into());
    }
    let joined = dir.join(path);
    let canonical = joined
        .canonicalize()
        .map_err(|e| format!("does not exist ({e})"))?;
    if !canonical.starts_with(dir) {
        return Err(format!(
            "is a symlink to {}, outside the recipe directory",
            canonical.display()
        ));
    }
    if !canonical.is_file() {
        return Err("is not a file".into());
    }
    Ok(canonical)
}

/// Reads a small text file of the recipe (size-limited).
fn read_small(dir: &Path, path: &Path) -> Result<String, RecipeError> {
    let io = |source| RecipeError::Io {
        path: path.to_owned(),
        source,
    };
    let len = fs::metadata(path).map_err(io)?.len();
    if len > MAX_COMPOSE_BYTES {
        return Err(RecipeError::TooLarge {
            path: PathBuf::from(file_label(dir, path)),
            size: len,
            limit: MAX_COMPOSE_BYTES,
        });
    }
    fs::read_to_string(path).map_err(io)
}

/// A compose file being interpolated: its name in messages and its text (to find lines).
struct Source<'a> {
    label: &'a str,
    text: &'a str,
}

/// Interpolates every string value (keys are left as written) as Docker's stack loader does,
/// reporting where a problem is.
fn interpolate_value(
    value: &mut Value,
    env: &IndexMap<String, String>,
    source: &Source<'_>,
    at: &mut String,
    findings: &mut Vec<Finding>,
) -> Result<(), RecipeError> {
    let file = source.label;
    match value {
        Value::String(s) if s.contains('$') => {
            let out = interpolate::interpolate_docker(s, &|k| env.get(k).cloned()).map_err(|e| {
                let message = match &e {
                    InterpolationError::Required { .. } => e.to_string(),
                    InterpolationError::Syntax { .. } => format!(
                        "invalid interpolation format in {s:?} (Docker refuses it too): write `$$` for a literal `$`, and only ${{VAR}}, ${{VAR:-default}}, ${{VAR-default}}, ${{VAR:?message}} or ${{VAR?message}}"
                    ),
                };
                RecipeError::Interpolation {
                    file: file.to_owned(),
                    at: at.clone(),
                    message,
                    line: crate::locate::line_of(source.text, at),
                }
            })?;
            for var in out.unset {
                findings.push(Finding {
                    severity: Severity::Warning,
                    at: format!("{file}: {at}"),
                    message: format!("variable `{var}` is not set; using an empty string"),
                    hint: format!(
                        "set {var} in the app env (or give a default: ${{{var}:-value}})"
                    ),
                });
            }
            *s = out.value;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                interpolate_value(item, env, source, at, findings)?;
                at.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let len = at.len();
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(k);
                interpolate_value(v, env, source, at, findings)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}
