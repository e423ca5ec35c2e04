//! `seatrial serve` settings: defaults, then the config file (optional), then the environment.
//! Every key has an environment variable, so containers and systemd units need no file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seatrial_recipe::policy::Permit;
use serde::{Deserialize, Serialize};

/// An API bearer token. Never printed: `Debug` shows its length only.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// Constant-time comparison, so response timing says nothing about the token.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
        }
        diff == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken(<{} chars>)", self.0.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    /// Concurrent trials in this process.
    pub capacity: usize,
    /// Default per-run timeout (a recipe's tests/seatrial.toml may not lower the server's bound).
    pub run_timeout: Duration,
    /// How long a claim lasts without a heartbeat; a crashed server's runs are reaped after it.
    pub lease: Duration,
    /// On SIGTERM, how long running trials may go on before they are cancelled (with teardown).
    pub shutdown_grace: Duration,
    pub base_domain: String,
    pub api_tokens: Vec<ApiToken>,
    pub log_format: LogFormat,
    pub request_timeout: Duration,
    pub body_limit: usize,
    /// Base URL of the dashboard as users reach it (links in API answers).
    pub public_url: Option<String>,
    /// How often to look for work queued by other processes.
    pub poll_interval: Duration,
    /// Default probe strategy/url/timeout for every trial (recipes and runs may override).
    pub probe: ProbeDefaults,
    /// Per-recipe run timeouts (recipe as queued → timeout), over `run_timeout`.
    pub run_timeouts: std::collections::BTreeMap<String, Duration>,
    /// The forge integration, when `[forge]` (or SEATRIAL_FORGE_URL) is set.
    pub forge: Option<ForgeConfig>,
    /// Host access allowed to runs queued through the API (which are untrusted too).
    pub api_permit: Vec<Permit>,
}

impl ServeConfig {
    /// The time limit of a run: its own, else its recipe's, else the server's.
    /// The longest run this server's configuration allows (server default, per-recipe and
    /// per-repository timeouts): a trial stack of an unknown run younger than this, plus a
    /// lease, may still belong to a live run elsewhere, so the janitor keeps it.
    pub fn longest_run_timeout(&self) -> Duration {
        let repos = self
            .forge
            .iter()
            .flat_map(|f| f.repos.iter().filter_map(|r| r.timeout));
        self.run_timeouts
            .values()
            .copied()
            .chain(repos)
            .fold(self.run_timeout, Duration::max)
    }

    pub fn timeout_for(&self, recipe: &str, own: Option<Duration>) -> Duration {
        own.or_else(|| self.run_timeouts.get(recipe.trim_end_matches('/')).copied())
            .unwrap_or(self.run_timeout)
    }

    /// The server's own probe defaults (`[probe]`), as trial overrides.
    pub fn probe_overrides(&self) -> seatrial_trial::settings::Overrides {
        seatrial_trial::settings::Overrides {
            strategy: self.probe.strategy,
            url: self.probe.url.clone(),
            insecure: self.probe.insecure,
            probe_timeout: self
                .probe
                .timeout
                .as_deref()
                .and_then(|t| seatrial_recipe::parse_duration(t).ok()),
            ..seatrial_trial::settings::Overrides::default()
        }
    }

    /// The enrolled repository `owner/name`, if it is one.
    pub fn enrolled(&self, repo: &str) -> Option<&EnrolledRepo> {
        self.forge
            .as_ref()?
            .repos
            .iter()
            .find(|r| r.name.to_string() == repo)
    }

    /// What a run queued now is fixed to: for a run of an enrolled repository its recipe
    /// directory, probe and timeout over the server's; else the server's. `own`: the run's own
    /// time limit, when it asked for one.
    pub fn settings_for(
        &self,
        recipe: &str,
        enrolled: Option<&EnrolledRepo>,
        own: Option<Duration>,
    ) -> RunSettings {
        let mut probe = self.probe_overrides();
        if let Some(e) = enrolled {
            probe = probe.then(&e.probe);
        }
        RunSettings {
            recipe_path: enrolled
                .and_then(|e| e.recipe.as_ref())
                .map(|p| p.to_string_lossy().into_owned()),
            probe: StoredProbe::from_overrides(&probe),
            timeout: self.timeout_for(recipe, own.or_else(|| enrolled.and_then(|e| e.timeout))),
        }
    }
}

/// What decides how a run runs, fixed when it is queued and stored with it, so any server that
/// claims it runs it the same way: the recipe's directory in the repository, the probe settings
/// (the server's `[probe]` under the repository's `probe`), and the time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub recipe_path: Option<String>,
    pub probe: StoredProbe,
    pub timeout: Duration,
}

/// The probe settings of a queued run, as stored (JSON in the run's `probe` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `[lowest, highest]` accepted HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

fn strategy_name(s: seatrial_trial::settings::Strategy) -> &'static str {
    use seatrial_trial::settings::Strategy;
    match s {
        Strategy::Gateway => "gateway",
        Strategy::Url => "url",
        Strategy::Exec => "exec",
    }
}

impl StoredProbe {
    pub fn from_overrides(o: &seatrial_trial::settings::Overrides) -> Self {
        Self {
            strategy: o.strategy.map(|s| strategy_name(s).to_owned()),
            url: o.url.clone(),
            insecure: o.insecure,
            path: o.path.clone(),
            status: o.status,
            body: o.body.clone(),
            timeout_ms: o
                .probe_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            port: o.port,
            services: o.services.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads stored settings back; an error names what is wrong with them.
    pub fn from_json(json: &str) -> Result<Self, String> {
        serde_json::from_str(json)
            .map_err(|e| format!("the run's stored probe settings {json:?} cannot be read: {e}"))
    }

    pub fn to_overrides(&self) -> Result<seatrial_trial::settings::Overrides, String> {
        let strategy = self
            .strategy
            .as_deref()
            .map(|s| {
                serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
                    format!("the run's stored probe strategy {s:?} is not gateway, url or exec")
                })
            })
            .transpose()?;
        Ok(seatrial_trial::settings::Overrides {
            strategy,
            url: self.url.clone(),
            insecure: self.insecure,
            path: self.path.clone(),
            status: self.status,
            body: self.body.clone(),
            probe_timeout: self.timeout_ms.map(Duration::from_millis),
            port: self.port,
            services: self.services.clone(),
            ..seatrial_trial::settings::Overrides::default()
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeDefaults {
    pub strategy: Option<seatrial_trial::settings::Strategy>,
    pub url: Option<String>,
    pub insecure: Option<bool>,
    pub timeout: Option<String>,
}

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

/// One enrolled repository.
#[derive(Debug, Clone)]
pub struct EnrolledRepo {
    pub name: seatrial_forge::RepoName,
    /// The recipe's directory inside the repository (`None`: the root).
    pub recipe: Option<std::path::PathBuf>,
    pub timeout: Option<Duration>,
    /// Probe settings for its trials.
    pub probe: seatrial_trial::settings::Overrides,
    /// Policy findings its (untrusted) recipes may have.
    pub permit: Vec<Permit>,
}

fn dot() -> String {
    ".".into()
}

/// `[forge]` and `[[repos]]`: enrolled recipe repositories on a Gitea/Forgejo.
#[derive(Clone)]
pub struct ForgeConfig {
    /// `gitea` or `forgejo`.
    pub kind: String,
    pub url: String,
    pub token: seatrial_forge::Token,
    pub poll_interval: Duration,
    /// Users allowed besides members of each repository's owner org.
    pub allow: Vec<String>,
    pub webhook_secret: Option<ApiToken>,
    /// The comment command (default `!testme`).
    pub command: String,
    pub repos: Vec<EnrolledRepo>,
}

impl std::fmt::Debug for ForgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("poll_interval", &self.poll_interval)
            .field("repos", &self.repos.len())
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
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

pub fn load_with(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeConfig, String> {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn no_file_gives_sane_defaults() {
        let c = load_with(None, &no_env).expect("defaults");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8086");
        assert_eq!(c.capacity, 1);
        assert_eq!(c.run_timeout, Duration::from_secs(3600));
        assert!(
            c.database_url.starts_with("sqlite://"),
            "{}",
            c.database_url
        );
        assert!(c.api_tokens.is_empty(), "no token: writes are refused");
    }

    #[test]
    fn environment_beats_the_file() {
        let dir = std::env::temp_dir().join(format!("seatrial-serve-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("seatrial.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ncapacity = 3\napi_tokens = [\"from-file\"]\nrun_timeout = \"20m\"\n[run_timeouts]\n\"recipes/heavy\" = \"2h\"\n",
        )
        .expect("write");
        let env = |k: &str| match k {
            "SEATRIAL_CAPACITY" => Some("2".to_owned()),
            "SEATRIAL_API_TOKEN" => Some("from-env".to_owned()),
            "SEATRIAL_DATABASE_URL" => Some("postgres://db/seatrial".to_owned()),
            _ => None,
        };
        let c = load_with(Some(&path), &env).expect("loads");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000", "the file sets it");
        assert_eq!(c.capacity, 2, "the environment wins");
        assert_eq!(c.database_url, "postgres://db/seatrial");
        assert_eq!(c.run_timeout, Duration::from_secs(1200));
        assert_eq!(
            c.timeout_for("recipes/heavy/", None),
            Duration::from_secs(7200)
        );
        assert_eq!(
            c.timeout_for("recipes/light", None),
            Duration::from_secs(1200)
        );
        assert_eq!(
            c.timeout_for("recipes/heavy", Some(Duration::from_secs(60))),
            Duration::from_secs(60),
            "a run's own timeout wins"
        );
        assert!(c.api_tokens.iter().any(|t| t.matches("from-file")));
        assert!(c.api_tokens.iter().any(|t| t.matches("from-env")));
        assert!(!format!("{c:?}").contains("from-env"), "tokens never print");

        std::fs::write(&path, "capacty = 3\n").expect("write");
        let err = load_with(Some(&path), &no_env).expect_err("typo");
        assert!(err.contains("capacty"), "{err}");
        std::fs::write(&path, "run_timeout = \"soon\"\n").expect("write");
        let err = load_with(Some(&path), &no_env).expect_err("bad duration");
        assert!(err.contains("run_timeout"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_documented_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seatrial.toml");
        let c = load_with(Some(&path), &no_env).expect("examples/seatrial.toml is valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8086");
        assert_eq!(c.lease, Duration::from_secs(30));
    }

    #[test]
    fn enrolled_repositories() {
        let dir = std::env::temp_dir().join(format!("seatrial-forge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("seatrial.toml");
        let write = |repos: &str| {
            std::fs::write(
                &path,
                format!("[forge]\nurl = \"https://git.example.org\"\ntoken = \"t0k3n\"\n{repos}"),
            )
            .expect("write")
        };
        write(
            "[[repos]]\nname = \"coop/app\"\n\n[[repos]]\nname = \"coop/mono\"\nrecipe = \"apps/x/\"\ntimeout = \"90m\"\nprobe = { path = \"/health\", status = \"200\" }\npermit = [\"docker-socket\", \"host-bind:/var/log\"]\n",
        );
        let c = load_with(Some(&path), &no_env).expect("loads");
        let f = c.forge.expect("forge");
        assert_eq!(f.poll_interval, Duration::from_secs(30), "the default");
        assert_eq!(f.command, "!testme");
        assert!(
            f.webhook_secret.is_none(),
            "the webhook is off without a secret"
        );
        assert!(
            !format!("{f:?}").contains("t0k3n"),
            "the token never prints"
        );
        assert_eq!(f.repos[0].recipe, None, "the root by default");
        assert_eq!(f.repos[1].recipe.as_deref(), Some(Path::new("apps/x")));
        assert_eq!(f.repos[1].timeout, Some(Duration::from_secs(5400)));
        assert_eq!(f.repos[1].probe.path.as_deref(), Some("/health"));
        assert_eq!(f.repos[1].probe.status, Some((200, 200)));
        assert!(
            f.repos[0].permit.is_empty(),
            "nothing is permitted by default"
        );
        let permit: Vec<String> = f.repos[1].permit.iter().map(ToString::to_string).collect();
        assert_eq!(permit, ["docker-socket", "host-bind:/var/log"]);

        write("[[repos]]\nname = \"coop/app\"\npermit = [\"docker_sock\"]\n");
        let err = load_with(Some(&path), &no_env).expect_err("unknown rule");
        assert!(
            err.contains("[[repos]] coop/app: permit") && err.contains("docker-socket"),
            "{err}"
        );

        write("[[repos]]\nname = \"coop/app\"\nrecipe = \"../elsewhere\"\n");
        let err = load_with(Some(&path), &no_env).expect_err("outside the repository");
        assert!(err.contains("inside the repository"), "{err}");
        write("[[repos]]\nname = \"just-a-name\"\n");
        assert!(
            load_with(Some(&path), &no_env)
                .expect_err("no owner")
                .contains("owner/name")
        );
        std::fs::write(&path, "[forge]\nurl = \"https://git.example.org\"\n").expect("write");
        let err = load_with(Some(&path), &no_env).expect_err("no token");
        assert!(err.contains("SEATRIAL_FORGE_TOKEN"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn api_runs_are_permitted_nothing_unless_configured() {
        let dir = std::env::temp_dir().join(format!("seatrial-api-permit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("seatrial.toml");
        assert!(
            load_with(None, &no_env)
                .expect("defaults")
                .api_permit
                .is_empty()
        );
        std::fs::write(&path, "api_permit = [\"cap_add:NET_ADMIN\"]\n").expect("write");
        let c = load_with(Some(&path), &no_env).expect("loads");
        assert_eq!(
            c.api_permit,
            vec!["cap_add:NET_ADMIN".parse::<Permit>().expect("permit")]
        );
        std::fs::write(&path, "api_permit = [\"host-bind:var\"]\n").expect("write");
        let err = load_with(Some(&path), &no_env).expect_err("relative path");
        assert!(
            err.starts_with("api_permit: ") && err.contains("absolute"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn run_settings_are_fixed_at_enqueue_and_read_back_the_same() {
        let dir =
            std::env::temp_dir().join(format!("seatrial-settings-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("seatrial.toml");
        std::fs::write(
            &path,
            "run_timeout = \"30m\"\n[probe]\nstrategy = \"url\"\nurl = \"https://proxy.example.org\"\ntimeout = \"2m\"\n\n[forge]\nurl = \"https://git.example.org\"\ntoken = \"t\"\n\n[[repos]]\nname = \"coop/mono\"\nrecipe = \"apps/x\"\ntimeout = \"90m\"\nprobe = { path = \"/health\", status = \"200\", services = [\"app\"] }\n",
        )
        .expect("write");
        let c = load_with(Some(&path), &no_env).expect("loads");
        let enrolled = c.enrolled("coop/mono");
        assert!(enrolled.is_some());
        let s = c.settings_for("https://git.example.org/coop/mono.git", enrolled, None);
        assert_eq!(s.recipe_path.as_deref(), Some("apps/x"));
        assert_eq!(s.timeout, Duration::from_secs(5400), "the repository's");
        let expected = StoredProbe {
            strategy: Some("url".into()),
            url: Some("https://proxy.example.org".into()),
            path: Some("/health".into()),
            status: Some((200, 200)),
            timeout_ms: Some(120_000),
            services: Some(vec!["app".into()]),
            ..StoredProbe::default()
        };
        assert_eq!(
            s.probe, expected,
            "the repository's probe over the server's"
        );
        let back = StoredProbe::from_json(&s.probe.to_json()).expect("reads back");
        assert_eq!(back, expected);
        let o = back.to_overrides().expect("overrides");
        assert_eq!(StoredProbe::from_overrides(&o), expected);
        let plain = c.settings_for("/recipes/x", None, None);
        assert_eq!(
            (plain.recipe_path, plain.timeout),
            (None, Duration::from_secs(1800))
        );
        assert_eq!(plain.probe.path, None);
        let err = StoredProbe::from_json(r#"{"strategy":"carrier-pigeon"}"#)
            .expect("json")
            .to_overrides()
            .expect_err("unknown strategy");
        assert!(
            err.contains("carrier-pigeon") && err.contains("gateway"),
            "{err}"
        );
        assert!(StoredProbe::from_json("{").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn tokens_compare_exactly() {
        let t = ApiToken("s3cret".into());
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret!"));
        assert!(!t.matches(""));
    }
}
