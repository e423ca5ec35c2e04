//! `gate.toml`: what the gate checks, where it deploys, and how it knows the deploy is good.
//! Every error names the file, the key, and what to do; unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::redact::SecretUrl;

/// Per-check timeout when `timeout` is not set.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Readiness deadline when `gate.ready.timeout` is not set.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Where the snapshot records applied migrations when `applied_table` is not set.
pub const DEFAULT_APPLIED_TABLE: &str = "applied_migrations";

/// A parsed, validated `gate.toml`.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The file it was read from (named in errors and reports).
    pub file: PathBuf,
    pub checks: Vec<Check>,
    pub migrations: Option<MigrationsConfig>,
    pub deploy: Option<DeployConfig>,
    pub ready: Option<ReadyConfig>,
    /// Branches whose gate runs also deploy (default `["main"]`).
    pub deploy_branches: Vec<String>,
}

/// One `[[gate.checks]]`: a shell command run in the checkout; exit 0 passes.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub run: String,
    pub timeout: Duration,
}

/// `[gate.migrations]`, also what `seatrial check migrations` takes from its flags.
#[derive(Debug, Clone)]
pub struct MigrationsConfig {
    /// The directory of `NNN_name.up.sql` files (relative paths: to the checkout).
    pub dir: PathBuf,
    /// With a database: the scratch server, the snapshot and the role.
    pub database: Option<DatabaseCheck>,
}

/// How migrations are tried against a copy of production's schema.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    /// A server where seatrial may create (and drop) databases, as a superuser.
    pub url: SecretUrl,
    /// A plain-SQL schema dump of production.
    pub snapshot: PathBuf,
    /// The app's role: new migrations run as it, never as a superuser.
    pub role: String,
    /// The snapshot's table of applied versions (column `version`); may be schema-qualified.
    pub applied_table: String,
}

/// `[gate.deploy]`.
#[derive(Debug, Clone)]
pub enum DeployConfig {
    /// POST to a deploy API (Dokploy-style) with a bearer token from the environment.
    Hook(HookConfig),
    /// Deploy a stack on a Docker Swarm target (done by a [`crate::Deployer`] supplied by the
    /// caller; not built into the gate yet).
    Swarm { stack: String },
}

#[derive(Debug, Clone)]
pub struct HookConfig {
    pub url: String,
    /// The environment variable that holds the bearer token (its value is read at run time).
    pub token_env: String,
    /// The JSON body of the deploy (and rollback) request.
    pub body: String,
    /// Called after a failed deploy or readiness; without it the gate alerts only.
    pub rollback_url: Option<String>,
}

/// `[gate.ready]`.
#[derive(Debug, Clone)]
pub struct ReadyConfig {
    /// Must answer exactly 200 (redirects are not followed).
    pub url: String,
    pub timeout: Duration,
}

/// A bad `gate.toml`: which file, which key, what is wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: `{key}`: {problem}; {fix}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Debug, Deserialize)]
struct FileToml {
    gate: Option<GateToml>,
}

#[derive(Debug, Deserialize)]
struct GateToml {
    #[serde(default)]
    checks: Vec<CheckToml>,
    migrations: Option<MigrationsToml>,
    deploy: Option<DeployToml>,
    ready: Option<ReadyToml>,
    deploy_branches: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct CheckToml {
    name: Option<String>,
    run: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MigrationsToml {
    dir: Option<PathBuf>,
    database_url: Option<String>,
    snapshot: Option<PathBuf>,
    role: Option<String>,
    applied_table: Option<String>,
}

/// Flat on purpose: which keys belong to which `kind` is checked by hand, so a misplaced key
/// gets an error that says which kind it belongs to.
#[derive(Debug, Deserialize)]
struct DeployToml {
    kind: Option<String>,
    url: Option<String>,
    token_env: Option<String>,
    body: Option<String>,
    rollback_url: Option<String>,
    stack: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReadyToml {
    url: Option<String>,
    timeout: Option<String>,
}

/// Reads and validates a gate config file.
pub fn load(path: &Path) -> Result<GateConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        key: "gate".into(),
        problem: format!("cannot read the file: {e}"),
        fix: "put a gate.toml in the app's repository or name one with --config FILE".into(),
    })?;
    parse(path, &text)
}

/// Parses and validates a gate config (`path` is only named in errors).
pub fn parse(path: &Path, text: &str) -> Result<GateConfig, ConfigError> {
    let file = path.display().to_string();
    let err = |key: &str, problem: String, fix: &str| ConfigError {
        file: file.clone(),
        key: key.to_owned(),
        problem,
        fix: fix.to_owned(),
    };
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        err(
            "gate",
            format!("not valid TOML: {}", e.to_string().trim_end()),
            "fix the syntax at the line shown",
        )
    })?;
    let mut unknown = Vec::new();
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string().replace(".?", ""));
    let ignored = serde_ignored::Deserializer::new(value, &mut on_unknown);
    let parsed: FileToml = serde_path_to_error::deserialize(ignored).map_err(|e| {
        err(
            &e.path().to_string().replace(".?", ""),
            e.inner().to_string(),
            "give it a value of the type shown in the README's Gate section",
        )
    })?;
    if let Some(key) = unknown.into_iter().next() {
        return Err(err(
            &key,
            "unknown key".into(),
            "remove it or correct its spelling (the README's Gate section lists every key)",
        ));
    }
    let gate = parsed.gate.ok_or_else(|| {
        err(
            "gate",
            "no [gate] table".into(),
            "add [[gate.checks]], [gate.migrations], [gate.deploy] and [gate.ready] as needed",
        )
    })?;

    let mut checks = Vec::new();
    for (i, c) in gate.checks.into_iter().enumerate() {
        let at = |k: &str| format!("gate.checks[{i}].{k}");
        let name = c.name.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
            err(
                &at("name"),
                "missing".into(),
                "name the check, e.g. name = \"build\"",
            )
        })?;
        if checks.iter().any(|x: &Check| x.name == name) {
            return Err(err(
                &at("name"),
                format!("a second check named `{name}`"),
                "give every check its own name",
            ));
        }
        let run = c.run.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
            err(
                &at("run"),
                "missing".into(),
                "give the shell command to run, e.g. run = \"cargo test --locked\"",
            )
        })?;
        let timeout = match c.timeout {
            None => DEFAULT_CHECK_TIMEOUT,
            Some(t) => {
                duration(&t).map_err(|e| err(&at("timeout"), e, "write it as 90s, 10m or 1h"))?
            }
        };
        checks.push(Check { name, run, timeout });
    }

    let migrations = gate
        .migrations
        .map(|m| {
            let dir = m.dir.ok_or_else(|| {
                err(
                    "gate.migrations.dir",
                    "missing".into(),
                    "name the directory of NNN_name.up.sql files, e.g. dir = \"migrations\"",
                )
            })?;
            let database = match (m.database_url, m.snapshot, m.role) {
                (None, None, None) => {
                    if m.applied_table.is_some() {
                        return Err(err(
                            "gate.migrations.applied_table",
                            "set without database_url".into(),
                            "add database_url, snapshot and role to try the migrations, or remove it",
                        ));
                    }
                    None
                }
                (Some(url), Some(snapshot), Some(role)) => {
                    let url = SecretUrl::parse(&url).map_err(|e| {
                        err(
                            "gate.migrations.database_url",
                            e,
                            "write it as postgres://user:password@host:port/database",
                        )
                    })?;
                    if role.trim().is_empty() {
                        return Err(err("gate.migrations.role", "empty".into(), "name the app's database role"));
                    }
                    Some(DatabaseCheck {
                        url,
                        snapshot,
                        role,
                        applied_table: m
                            .applied_table
                            .unwrap_or_else(|| DEFAULT_APPLIED_TABLE.to_owned()),
                    })
                }
                (url, snapshot, role) => {
                    let missing = [
                        ("database_url", url.is_none()),
                        ("snapshot", snapshot.is_none()),
                        ("role", role.is_none()),
                    ]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(k, _)| format!("gate.migrations.{k}"))
                    .collect::<Vec<_>>();
                    return Err(err(
                        &missing[0],
                        format!("missing (a database check needs {})", missing.join(", ")),
                        "set database_url, snapshot and role together, or none of them to check only the files",
                    ));
                }
            };
            Ok(MigrationsConfig { dir, database })
        })
        .transpose()?;

    let deploy = gate.deploy.map(|d| deploy_config(d, &err)).transpose()?;
    let ready = gate
        .ready
        .map(|r| {
            let url = r.url.ok_or_else(|| {
                err(
                    "gate.ready.url",
                    "missing".into(),
                    "give the app's readiness URL, e.g. https://myapp.example.org/health/ready",
                )
            })?;
            http_url(&url)
                .map_err(|e| err("gate.ready.url", e, "write an http:// or https:// URL"))?;
            let timeout = match r.timeout {
                None => DEFAULT_READY_TIMEOUT,
                Some(t) => duration(&t)
                    .map_err(|e| err("gate.ready.timeout", e, "write it as 90s or 5m"))?,
            };
            Ok(ReadyConfig { url, timeout })
        })
        .transpose()?;
    if deploy.is_some() && ready.is_none() {
        return Err(err(
            "gate.ready",
            "missing: a deploy is never called good before the app says it is ready".into(),
            "add [gate.ready] with the app's readiness url (and a timeout)",
        ));
    }
    let deploy_branches = gate
        .deploy_branches
        .unwrap_or_else(|| vec!["main".to_owned()]);
    Ok(GateConfig {
        file: path.to_owned(),
        checks,
        migrations,
        deploy,
        ready,
        deploy_branches,
    })
}

fn deploy_config(
    d: DeployToml,
    err: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<DeployConfig, ConfigError> {
    let kind = d.kind.ok_or_else(|| {
        err(
            "gate.deploy.kind",
            "missing".into(),
            "set kind = \"hook\" (a deploy API) or kind = \"swarm\"",
        )
    })?;
    let misplaced = |key: &str, owner: &str| {
        err(
            &format!("gate.deploy.{key}"),
            format!("not a key of kind = \"{kind}\" (it belongs to kind = \"{owner}\")"),
            "remove it, or change the kind",
        )
    };
    match kind.as_str() {
        "hook" => {
            if d.stack.is_some() {
                return Err(misplaced("stack", "swarm"));
            }
            let url = d.url.ok_or_else(|| {
                err(
                    "gate.deploy.url",
                    "missing".into(),
                    "give the deploy API's URL the gate POSTs to",
                )
            })?;
            http_url(&url)
                .map_err(|e| err("gate.deploy.url", e, "write an http:// or https:// URL"))?;
            let token_env = d.token_env.ok_or_else(|| {
                err(
                    "gate.deploy.token_env",
                    "missing".into(),
                    "name the environment variable that holds the deploy API's token, e.g. token_env = \"DEPLOY_TOKEN\"",
                )
            })?;
            if token_env.is_empty() || token_env.contains(['=', '\0']) {
                return Err(err(
                    "gate.deploy.token_env",
                    format!("{token_env:?} is not an environment variable name"),
                    "name the variable, not its value, e.g. token_env = \"DEPLOY_TOKEN\"",
                ));
            }
            let body = d.body.unwrap_or_else(|| "{}".to_owned());
            serde_json::from_str::<serde_json::Value>(&body).map_err(|e| {
                err(
                    "gate.deploy.body",
                    format!("not JSON: {e}"),
                    "write the request body as JSON in single quotes, e.g. body = '{\"composeId\": \"abc\"}'",
                )
            })?;
            if let Some(r) = &d.rollback_url {
                http_url(r).map_err(|e| {
                    err(
                        "gate.deploy.rollback_url",
                        e,
                        "write an http:// or https:// URL",
                    )
                })?;
            }
            Ok(DeployConfig::Hook(HookConfig {
                url,
                token_env,
                body,
                rollback_url: d.rollback_url,
            }))
        }
        "swarm" => {
            for (key, set) in [
                ("url", d.url.is_some()),
                ("token_env", d.token_env.is_some()),
                ("body", d.body.is_some()),
                ("rollback_url", d.rollback_url.is_some()),
            ] {
                if set {
                    return Err(misplaced(key, "hook"));
                }
            }
            let stack = d.stack.filter(|s| !s.is_empty()).ok_or_else(|| {
                err(
                    "gate.deploy.stack",
                    "missing".into(),
                    "name the production stack, e.g. stack = \"myapp\"",
                )
            })?;
            if stack.len() > 63
                || !stack
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    "gate.deploy.stack",
                    format!("`{stack}` is not a stack name"),
                    "use at most 63 letters, digits, `-` and `_`",
                ));
            }
            Ok(DeployConfig::Swarm { stack })
        }
        other => Err(err(
            "gate.deploy.kind",
            format!("unknown kind `{other}`"),
            "set kind = \"hook\" (a deploy API) or kind = \"swarm\"",
        )),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = seatrial_recipe::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is no time at all"));
    }
    Ok(d)
}

fn http_url(s: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<GateConfig, ConfigError> {
        parse(Path::new("repo/gate.toml"), text)
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse_str(
            r#"
[gate]
deploy_branches = ["main", "prod"]
[[gate.checks]]
name = "build"
run = "cargo build --locked"
[[gate.checks]]
name = "test"
run = "cargo test --locked"
timeout = "20m"
[gate.migrations]
dir = "migrations"
database_url = "postgres://ci:hunter2@127.0.0.1/postgres"
snapshot = "testdata/prod-schema.sql"
role = "app"
[gate.deploy]
kind = "hook"
url = "https://deploy.example.org/api/compose.deploy"
token_env = "DEPLOY_TOKEN"
body = '{"composeId": "abc"}'
[gate.ready]
url = "https://myapp.example.org/health/ready"
timeout = "5m"
"#,
        )
        .expect("valid");
        assert_eq!(c.checks.len(), 2);
        assert_eq!(c.checks[1].timeout, Duration::from_secs(1200));
        assert_eq!(c.deploy_branches, ["main", "prod"]);
        let db = c
            .migrations
            .and_then(|m| m.database)
            .expect("database check");
        assert_eq!(db.applied_table, "applied_migrations");
        assert!(!format!("{db:?}").contains("hunter2"));
        assert!(matches!(c.deploy, Some(DeployConfig::Hook(h)) if h.rollback_url.is_none()));
    }

    #[test]
    fn errors_name_the_file_the_key_and_what_to_do() {
        let cases = [
            ("[gate]\nbogus = 1\n", "`gate.bogus`: unknown key"),
            (
                "[[gate.checks]]\nname = \"a\"\nrun = \"true\"\nrn = \"x\"\n",
                "`gate.checks.0.rn`: unknown key",
            ),
            (
                "[gate.migrations]\ndir = \"m\"\nrole = \"app\"\n",
                "`gate.migrations.database_url`: missing",
            ),
            (
                "[gate.deploy]\nkind = \"hook\"\nurl = \"https://x\"\ntoken_env = \"T\"\n",
                "`gate.ready`: missing",
            ),
            (
                "[gate.deploy]\nkind = \"swarm\"\nstack = \"s\"\nurl = \"https://x\"\n",
                "`gate.deploy.url`: not a key of kind = \"swarm\"",
            ),
            (
                "[gate.deploy]\nkind = \"k8s\"\n",
                "`gate.deploy.kind`: unknown kind `k8s`",
            ),
            (
                "[gate.ready]\nurl = \"https://x/ready\"\ntimeout = \"soon\"\n",
                "`gate.ready.timeout`",
            ),
            (
                "[[gate.checks]]\nname = \"a\"\n",
                "`gate.checks[0].run`: missing",
            ),
            (
                "[gate]\ndeploy_branches = \"main\"\n",
                "`gate.deploy_branches`: invalid type",
            ),
        ];
        for (text, want) in cases {
            let e = parse_str(text).expect_err(text).to_string();
            assert!(e.starts_with("repo/gate.toml: "), "{e}");
            assert!(e.contains(want), "{text}\nwanted {want}\ngot {e}");
            assert!(
                e.split_once("; ").is_some_and(|(_, fix)| !fix.is_empty()),
                "{e}"
            );
        }
    }

    /// The README's example is a real config (the first ```toml block after `## Gate`).
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let gate = &readme[readme.find("## Gate").expect("a Gate section")..];
        let start = gate.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let text = &gate[start..start + gate[start..].find("```").expect("its end")];
        let c = parse_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.checks.len(), 2);
        assert!(c.migrations.is_some_and(|m| m.database.is_some()));
        assert!(matches!(c.deploy, Some(DeployConfig::Hook(h)) if h.rollback_url.is_some()));
    }

    #[test]
    fn a_swarm_deploy_parses_for_someone_else_to_run() {
        let c = parse_str(
            "[gate.deploy]\nkind = \"swarm\"\nstack = \"myapp\"\n[gate.ready]\nurl = \"http://127.0.0.1/ready\"\n",
        )
        .expect("valid");
        assert!(matches!(c.deploy, Some(DeployConfig::Swarm { stack }) if stack == "myapp"));
    }
}
