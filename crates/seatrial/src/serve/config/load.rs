//! Reading the config: the TOML file's shape, the environment variables that override each
//! key, and the checks that turn both into a [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seatrial_recipe::policy::Permit;
use serde::Deserialize;

use super::{ApiToken, EnrolledRepo, ForgeConfig, LogFormat, ProbeDefaults, ServeConfig};
use crate::serve::schedule::Schedule;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgeFile {
    kind: Option<String>,
    url: Option<String>,
    token: Option<String>,
    poll_interval: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    webhook_secret: Option<String>,
    command: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoFile {
    name: String,
    #[serde(default = "dot")]
    recipe: String,
    /// This repository's run timeout.
    timeout: Option<String>,
    /// This repository's probe settings (over the server's `[probe]`).
    probe: Option<RepoProbeFile>,
    /// Host access its recipes may have despite being untrusted (`docker-socket`, ...).
    #[serde(default)]
    permit: Vec<String>,
    /// Run the app's push gate on pushes to its branches (the forge's push webhook).
    #[serde(default)]
    gate: bool,
    /// The gate config inside the repository (default `gate.toml`).
    gate_config: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoProbeFile {
    strategy: Option<seatrial_trial::settings::Strategy>,
    url: Option<String>,
    insecure: Option<bool>,
    path: Option<String>,
    status: Option<String>,
    body: Option<String>,
    timeout: Option<String>,
    port: Option<u16>,
    services: Option<Vec<String>>,
}

/// `[schedule]`: when the nightly job runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    /// A cron expression (5 fields).
    nightly: Option<String>,
    /// The time zone key it is read in (default UTC).
    timezone: Option<String>,
}

fn dot() -> String {
    ".".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    capacity: Option<usize>,
    run_timeout: Option<String>,
    lease: Option<String>,
    shutdown_grace: Option<String>,
    base_domain: Option<String>,
    #[serde(default)]
    api_tokens: Vec<String>,
    log_format: Option<LogFormat>,
    request_timeout: Option<String>,
    body_limit: Option<usize>,
    public_url: Option<String>,
    poll_interval: Option<String>,
    #[serde(default)]
    probe: ProbeDefaults,
    #[serde(default)]
    run_timeouts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    forge: Option<ForgeFile>,
    #[serde(default)]
    repos: Vec<RepoFile>,
    #[serde(default)]
    api_permit: Vec<String>,
    #[serde(default)]
    schedule: Option<ScheduleFile>,
    /// `[[infra]]` entries, checked by `seatrial_trial::infra::config`.
    #[serde(default)]
    infra: Vec<toml::Value>,
    /// `[[alerts]]` entries, checked by `crate::infra` (with `seatrial_alerts`).
    #[serde(default)]
    alerts: Vec<toml::Value>,
    warm_budget: Option<String>,
}

/// Parses `permit` entries, naming the key they come from in errors.
fn permits(key: &str, entries: &[String]) -> Result<Vec<Permit>, String> {
    entries
        .iter()
        .map(|e| e.parse().map_err(|err| format!("{key}: {err}")))
        .collect()
}

/// Reads the config: `path` when given (it must exist), else defaults; then the environment.
pub fn load(path: Option<&Path>) -> Result<ServeConfig, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    load_with(path, &env)
}

/// The variables that carry secrets, each of which may instead name a file holding its value
/// (`SEATRIAL_API_TOKEN_FILE=/run/secrets/api_token`): Docker and systemd credentials.
const SECRET_VARS: [&str; 4] = [
    "SEATRIAL_API_TOKEN",
    "SEATRIAL_WEBHOOK_SECRET",
    "SEATRIAL_FORGE_TOKEN",
    "SEATRIAL_DATABASE_URL",
];

/// The secret variables given as `<VAR>_FILE`, read (one trailing newline dropped).
fn secret_files(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::collections::HashMap<&'static str, String>, String> {
    let mut values = std::collections::HashMap::new();
    for var in SECRET_VARS {
        let Some(file) = env(&format!("{var}_FILE")) else {
            continue;
        };
        if env(var).is_some() {
            return Err(format!(
                "both {var} and {var}_FILE are set: set one of them"
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!("{var}_FILE = {file:?}: cannot read it ({e}); give the path of a file that holds the value")
        })?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(format!("{var}_FILE = {file:?}: the file is empty"));
        }
        values.insert(var, value.to_owned());
    }
    Ok(values)
}

pub fn load_with(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeConfig, String> {
    let from_files = secret_files(env)?;
    let env = |k: &str| from_files.get(k).cloned().or_else(|| env(k));
    let file: File = match path {
        None => File::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the config file {}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
    };
    let pick = |var: &str, file: Option<String>, key: &str| -> Option<(String, String)> {
        env(var)
            .map(|v| (v, var.to_owned()))
            .or_else(|| file.map(|v| (v, key.to_owned())))
    };
    let duration = |var: &str, file: Option<String>, key: &str, default: Duration| match pick(
        var, file, key,
    ) {
        None => Ok(default),
        Some((v, from)) => seatrial_recipe::parse_duration(&v)
            .map_err(|e| format!("{from} = {v:?}: {e} (e.g. \"30s\", \"60m\")")),
    };
    let data_dir = env("SEATRIAL_DATA_DIR")
        .map(PathBuf::from)
        .or(file.data_dir)
        .unwrap_or_else(crate::secrets::data_dir);
    let listen = match pick("SEATRIAL_LISTEN", file.listen, "listen") {
        None => SocketAddr::from(([127, 0, 0, 1], 8086)),
        Some((v, from)) => v.parse().map_err(|e| {
            format!("{from} = {v:?}: {e} (give an address and port, e.g. \"127.0.0.1:8086\")")
        })?,
    };
    let capacity = match env("SEATRIAL_CAPACITY") {
        Some(v) => v.parse::<usize>().map_err(|e| {
            format!("SEATRIAL_CAPACITY = {v:?}: {e} (a whole number of concurrent trials)")
        })?,
        None => file.capacity.unwrap_or(1),
    };
    if capacity == 0 {
        return Err("capacity must be at least 1".into());
    }
    let database_url = env("SEATRIAL_DATABASE_URL")
        .or(file.database_url)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("seatrial.db").display()));
    let mut api_tokens: Vec<ApiToken> = file.api_tokens.into_iter().map(ApiToken).collect();
    if let Some(t) = env("SEATRIAL_API_TOKEN") {
        api_tokens.extend(t.split(',').map(|t| ApiToken(t.trim().to_owned())));
    }
    api_tokens.retain(|t| !t.0.is_empty());
    let log_format = match env("SEATRIAL_LOG_FORMAT") {
        Some(v) if v == "json" => LogFormat::Json,
        Some(v) if v == "text" => LogFormat::Text,
        Some(v) => return Err(format!("SEATRIAL_LOG_FORMAT = {v:?}: use text or json")),
        None => file.log_format.unwrap_or(LogFormat::Text),
    };
    let mut run_timeouts = std::collections::BTreeMap::new();
    for (recipe, t) in file.run_timeouts {
        let d = seatrial_recipe::parse_duration(&t)
            .map_err(|e| format!("run_timeouts.{recipe:?} = {t:?}: {e} (e.g. \"90m\")"))?;
        run_timeouts.insert(recipe.trim_end_matches('/').to_owned(), d);
    }
    let forge_file = file.forge.unwrap_or_default();
    let forge_url = env("SEATRIAL_FORGE_URL").or(forge_file.url);
    let forge = match forge_url {
        None => None,
        Some(url) => {
            let kind = forge_file.kind.unwrap_or_else(|| "gitea".into());
            if !matches!(kind.as_str(), "gitea" | "forgejo") {
                return Err(format!("forge.kind = {kind:?}: use gitea or forgejo"));
            }
            let token = env("SEATRIAL_FORGE_TOKEN")
                .or(forge_file.token)
                .ok_or_else(|| {
                    "the forge needs an API token: set SEATRIAL_FORGE_TOKEN (or forge.token)"
                        .to_owned()
                })?;
            let poll_interval = match forge_file.poll_interval {
                None => Duration::from_secs(30),
                Some(v) => seatrial_recipe::parse_duration(&v)
                    .map_err(|e| format!("forge.poll_interval = {v:?}: {e}"))?,
            };
            if poll_interval < Duration::from_secs(1) {
                return Err("forge.poll_interval must be at least 1s".into());
            }
            let mut repos = Vec::new();
            for r in file.repos {
                let name = r.name.parse().map_err(|e| format!("[[repos]] name: {e}"))?;
                let recipe = std::path::PathBuf::from(r.recipe.trim_end_matches('/'));
                let inside = recipe.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                });
                if !inside {
                    return Err(format!(
                        "[[repos]] {}: recipe = {:?} must be a relative path inside the repository",
                        r.name, r.recipe
                    ));
                }
                let recipe = (recipe.components().count() > 0
                    && recipe != std::path::Path::new("."))
                .then_some(recipe);
                let dur = |key: &str, v: Option<String>| {
                    v.map(|t| {
                        seatrial_recipe::parse_duration(&t)
                            .map_err(|e| format!("[[repos]] {}: {key} = {t:?}: {e}", r.name))
                    })
                    .transpose()
                };
                let timeout = dur("timeout", r.timeout.clone())?;
                let gate_config = match &r.gate_config {
                    Some(g) => {
                        let path = std::path::PathBuf::from(g);
                        let inside = path.components().count() > 0
                            && path
                                .components()
                                .all(|c| matches!(c, std::path::Component::Normal(_)));
                        if !inside {
                            return Err(format!(
                                "[[repos]] {}: gate_config = {g:?} must be a relative path to a file inside the repository (e.g. \"deploy/gate.toml\")",
                                r.name
                            ));
                        }
                        if !r.gate {
                            return Err(format!(
                                "[[repos]] {}: gate_config is set but gate is not: add `gate = true` to run the gate on pushes, or remove gate_config",
                                r.name
                            ));
                        }
                        Some(path)
                    }
                    None => None,
                };
                let permit = permits(&format!("[[repos]] {}: permit", r.name), &r.permit)?;
                let p = r.probe.unwrap_or_default();
                let probe = seatrial_trial::settings::Overrides {
                    strategy: p.strategy,
                    url: p.url,
                    insecure: p.insecure,
                    path: p.path,
                    status: p
                        .status
                        .map(|st| {
                            seatrial_trial::settings::parse_status_range(&st)
                                .map_err(|e| format!("[[repos]] {}: probe.status: {e}", r.name))
                        })
                        .transpose()?,
                    body: p.body,
                    probe_timeout: dur("probe.timeout", p.timeout)?,
                    port: p.port,
                    services: p.services,
                    ..seatrial_trial::settings::Overrides::default()
                };
                repos.push(EnrolledRepo {
                    name,
                    recipe,
                    timeout,
                    probe,
                    permit,
                    gate: r.gate,
                    gate_config,
                });
            }
            Some(ForgeConfig {
                kind,
                url,
                token: seatrial_forge::Token::new(token),
                poll_interval,
                allow: forge_file.allow,
                webhook_secret: env("SEATRIAL_WEBHOOK_SECRET")
                    .or(forge_file.webhook_secret)
                    .filter(|s| !s.is_empty())
                    .map(ApiToken),
                command: forge_file.command.unwrap_or_else(|| "!testme".into()),
                repos,
            })
        }
    };
    let schedule_file = file.schedule.unwrap_or_default();
    let schedule = match (
        pick(
            "SEATRIAL_SCHEDULE_NIGHTLY",
            schedule_file.nightly,
            "schedule.nightly",
        ),
        pick(
            "SEATRIAL_SCHEDULE_TIMEZONE",
            schedule_file.timezone,
            "schedule.timezone",
        ),
    ) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(
                "schedule.timezone is set but schedule.nightly is not: give the nightly job's time as cron, e.g. nightly = \"0 3 * * *\"".into(),
            );
        }
        (Some((cron, cron_from)), timezone) => {
            let (timezone, tz_from) = match timezone {
                Some((tz, from)) => (Some(tz), from),
                None => (None, "schedule.timezone".to_owned()),
            };
            // Errors name where the value came from (the key, or its environment variable).
            let schedule = Schedule::new(&cron, timezone.as_deref()).map_err(|e| {
                e.replacen("schedule.nightly", &cron_from, 1).replacen(
                    "schedule.timezone",
                    &tz_from,
                    1,
                )
            })?;
            Some(schedule)
        }
    };
    let infra = crate::infra::InfraConfig {
        apps: seatrial_trial::infra::config::parse_entries(file.infra)?,
        alerts: crate::infra::parse_alerts(file.alerts)?,
        data_dir: Some(data_dir.clone()),
    };
    let warm_budget = match pick("SEATRIAL_WARM_BUDGET", file.warm_budget, "warm_budget") {
        None => None,
        Some((v, from)) => Some(
            seatrial_recipe::parse_bytes(&v)
                .ok()
                .and_then(|b| u64::try_from(b).ok())
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    format!("{from} = {v:?}: give the disk space warm canonicals may use, e.g. \"50g\" or \"500m\"")
                })?,
        ),
    };
    let mut probe = file.probe;
    if let Some(u) = env("SEATRIAL_PROBE_URL") {
        probe.url = Some(u);
    }
    Ok(ServeConfig {
        listen,
        database_url,
        data_dir,
        capacity,
        run_timeout: duration(
            "SEATRIAL_RUN_TIMEOUT",
            file.run_timeout,
            "run_timeout",
            Duration::from_secs(60 * 60),
        )?,
        lease: duration(
            "SEATRIAL_LEASE",
            file.lease,
            "lease",
            Duration::from_secs(30),
        )?,
        shutdown_grace: duration(
            "SEATRIAL_SHUTDOWN_GRACE",
            file.shutdown_grace,
            "shutdown_grace",
            Duration::from_secs(5 * 60),
        )?,
        base_domain: env("SEATRIAL_BASE_DOMAIN")
            .or(file.base_domain)
            .unwrap_or_else(|| "seatrial.localhost".into()),
        api_tokens,
        log_format,
        request_timeout: duration(
            "SEATRIAL_REQUEST_TIMEOUT",
            file.request_timeout,
            "request_timeout",
            Duration::from_secs(30),
        )?,
        body_limit: file.body_limit.unwrap_or(64 * 1024),
        public_url: env("SEATRIAL_PUBLIC_URL").or(file.public_url),
        poll_interval: duration(
            "SEATRIAL_POLL_INTERVAL",
            file.poll_interval,
            "poll_interval",
            Duration::from_secs(2),
        )?,
        probe,
        run_timeouts,
        forge,
        api_permit: permits("api_permit", &file.api_permit)?,
        schedule,
        infra,
        warm_budget,
    })
}
