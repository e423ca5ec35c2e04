//! Trial settings: seatrial's defaults, then the recipe's optional `tests/seatrial.toml`, then the
//! command line — each overriding the one before. Heavy apps need longer deadlines; none is
//! hard-coded.
//!
//! ```toml
//! [trial]
//! timeout = "15m"          # convergence deadline of each deploy
//! stable_for = "5s"        # how long every service must stay converged
//! test_timeout = "10m"     # per executable of tests/
//! env = { GREETING = "hi" } # app env overrides
//!
//! [probe]
//! strategy = "gateway"     # gateway | url | exec | job (default: gateway on a single node; on
//!                          # a cluster url when a url is set, else job)
//! services = ["app"]       # which services to probe (default: the traefik-routed one, else
//!                          # each with a published or exposed port)
//! port = 8080              # the port to probe (default: traefik's, published, or exposed)
//! path = "/health"
//! status = "200-299"
//! body = "ok"              # the body must contain this
//! timeout = "2m"
//! url = "https://proxy.example.org"            # strategy = "url": base URL, sent with Host: <domain>
//! insecure = false         # https: accept a certificate that does not verify (test proxies)
//! command = ["wget", "-q", "-O-", "http://127.0.0.1/"]  # strategy = "exec": run in the container
//! image = "seatrial:0.1.0"  # strategy = "job": the image that runs `seatrial probe` in the swarm
//!                          # (default: SEATRIAL_PROBE_IMAGE, else seatrial:<its version>)
//!
//! [probe.service.api]      # per service: overrides port, path, status, body, command for it;
//! path = "/api/health"     # with such tables and no `services`, the services probed are theirs
//! status = "200"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::probe::ProbeSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Straight to the task through `docker_gwbridge` (single node).
    #[default]
    Gateway,
    /// Through the operator's reverse proxy: a base URL, with `Host: <domain>`.
    Url,
    /// A command in the service's container; exit 0 passes.
    Exec,
    /// From inside the swarm: a one-shot job on the service's network runs `seatrial probe`
    /// (multi-node swarms and remote engines, where this host cannot reach the tasks).
    Job,
}

impl Strategy {
    /// Its name as settings write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Url => "url",
            Self::Exec => "exec",
            Self::Job => "job",
        }
    }
}

/// The environment variable naming the image of probe jobs (`probe.image` beats it).
pub const PROBE_IMAGE_ENV: &str = "SEATRIAL_PROBE_IMAGE";

/// The image probe jobs run without `probe.image` or [`PROBE_IMAGE_ENV`]: seatrial's own, at
/// this version (`scripts/build-image.sh` tags it), which carries `seatrial probe`.
pub fn default_probe_image() -> String {
    std::env::var(PROBE_IMAGE_ENV)
        .ok()
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| format!("seatrial:{}", env!("CARGO_PKG_VERSION")))
}

/// Everything a trial can be told; `None` means "not said here".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub timeout: Option<Duration>,
    pub stable_for: Option<Duration>,
    pub test_timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
    pub strategy: Option<Strategy>,
    pub services: Option<Vec<String>>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: Option<(u16, u16)>,
    pub body: Option<String>,
    pub probe_timeout: Option<Duration>,
    pub url: Option<String>,
    pub insecure: Option<bool>,
    pub command: Option<Vec<String>>,
    /// The image of probe jobs (strategy `job`).
    pub probe_image: Option<String>,
    /// `[probe.service.<name>]` tables.
    pub per_service: BTreeMap<String, ServiceProbe>,
}

/// What `[probe.service.<name>]` says about one service's probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceProbe {
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: Option<(u16, u16)>,
    pub body: Option<String>,
    pub command: Option<Vec<String>>,
}

impl Overrides {
    /// These overrides with `later`'s on top (what `later` says wins).
    pub fn then(mut self, later: &Overrides) -> Self {
        macro_rules! over {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f.clone_from(&later.$f); } )* };
        }
        over!(
            timeout,
            stable_for,
            test_timeout,
            strategy,
            services,
            port,
            path,
            status,
            body
        );
        over!(probe_timeout, url, insecure, command, probe_image);
        self.env.extend(later.env.iter().cloned());
        for (k, v) in &later.per_service {
            self.per_service.insert(k.clone(), v.clone());
        }
        self
    }
}

/// The settings a trial runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub stable_for: Duration,
    pub test_timeout: Duration,
    pub env: Vec<(String, String)>,
    pub strategy: Strategy,
    /// Whether some layer chose the strategy; when none did, the serve stage picks one for the
    /// engine (see [`Strategy`]).
    pub strategy_chosen: bool,
    pub services: Option<Vec<String>>,
    pub port: Option<u16>,
    pub probe: ProbeSpec,
    pub url: Option<String>,
    /// `url` over https: accept a certificate that does not verify.
    pub insecure: bool,
    pub command: Option<Vec<String>>,
    /// The image probe jobs run (strategy `job`).
    pub probe_image: String,
    pub per_service: BTreeMap<String, ServiceProbe>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            stable_for: Duration::from_secs(3),
            test_timeout: Duration::from_secs(300),
            env: Vec::new(),
            strategy: Strategy::Gateway,
            strategy_chosen: false,
            services: None,
            port: None,
            probe: ProbeSpec::default(),
            url: None,
            insecure: false,
            command: None,
            probe_image: default_probe_image(),
            per_service: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Applies `o` on top of these settings.
    pub fn apply(mut self, o: &Overrides) -> Self {
        self.timeout = o.timeout.unwrap_or(self.timeout);
        self.stable_for = o.stable_for.unwrap_or(self.stable_for);
        self.test_timeout = o.test_timeout.unwrap_or(self.test_timeout);
        for (k, v) in &o.env {
            self.env.retain(|(ek, _)| ek != k);
            self.env.push((k.clone(), v.clone()));
        }
        self.strategy = o.strategy.unwrap_or(self.strategy);
        self.strategy_chosen |= o.strategy.is_some();
        if let Some(image) = &o.probe_image {
            self.probe_image.clone_from(image);
        }
        if o.services.is_some() {
            self.services.clone_from(&o.services);
        }
        self.port = o.port.or(self.port);
        if let Some(p) = &o.path {
            self.probe.path.clone_from(p);
        }
        self.probe.status = o.status.unwrap_or(self.probe.status);
        if o.body.is_some() {
            self.probe.body_contains.clone_from(&o.body);
        }
        self.probe.deadline = o.probe_timeout.unwrap_or(self.probe.deadline);
        if o.url.is_some() {
            self.url.clone_from(&o.url);
        }
        self.insecure = o.insecure.unwrap_or(self.insecure);
        if o.command.is_some() {
            self.command.clone_from(&o.command);
        }
        // What is said generally here beats what an earlier layer said per service.
        for p in self.per_service.values_mut() {
            if o.path.is_some() {
                p.path = None;
            }
            if o.status.is_some() {
                p.status = None;
            }
            if o.body.is_some() {
                p.body = None;
            }
            if o.port.is_some() {
                p.port = None;
            }
            if o.command.is_some() {
                p.command = None;
            }
        }
        for (name, probe) in &o.per_service {
            self.per_service.insert(name.clone(), probe.clone());
        }
        self
    }

    /// The services to probe by name, when the settings choose them: `services`, else the
    /// services of `[probe.service.*]` tables.
    pub fn chosen_services(&self) -> Option<Vec<String>> {
        self.services.clone().or_else(|| {
            (!self.per_service.is_empty()).then(|| self.per_service.keys().cloned().collect())
        })
    }

    /// The probe for one service (its name inside the recipe): the general probe with its
    /// `[probe.service.<name>]` table on top; and the port and exec command it sets, if any.
    pub fn probe_for(&self, service: &str) -> (ProbeSpec, Option<u16>, Option<Vec<String>>) {
        let mut spec = self.probe.clone();
        let Some(own) = self.per_service.get(service) else {
            return (spec, self.port, self.command.clone());
        };
        if let Some(p) = &own.path {
            spec.path.clone_from(p);
        }
        spec.status = own.status.unwrap_or(spec.status);
        if own.body.is_some() {
            spec.body_contains.clone_from(&own.body);
        }
        (
            spec,
            own.port.or(self.port),
            own.command.clone().or_else(|| self.command.clone()),
        )
    }

    /// Checks that the chosen strategy has what it needs.
    pub fn check(&self) -> Result<(), String> {
        match self.strategy {
            Strategy::Url => match self.url.as_deref() {
                None => {
                    Err("probe strategy `url` needs a base URL (probe.url or --probe-url)".into())
                }
                Some(u) if !u.starts_with("http://") && !u.starts_with("https://") => Err(format!(
                    "probe url {u:?}: give the proxy's base URL, http://… or https://…"
                )),
                Some(_) => Ok(()),
            },
            Strategy::Exec
                if self.command.as_ref().is_none_or(Vec::is_empty)
                    && (self.per_service.is_empty()
                        || self
                            .per_service
                            .values()
                            .any(|p| p.command.as_ref().is_none_or(Vec::is_empty))) =>
            {
                Err(
                    "probe strategy `exec` needs a command (probe.command, probe.service.<name>.command or --probe-command)".into(),
                )
            }
            Strategy::Job if self.probe_image.trim().is_empty() => Err(
                "probe strategy `job` needs an image that carries `seatrial probe` (probe.image or SEATRIAL_PROBE_IMAGE)".into(),
            ),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    trial: TrialSection,
    #[serde(default)]
    probe: ProbeSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialSection {
    timeout: Option<String>,
    stable_for: Option<String>,
    test_timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A `[probe]` table as a file writes it (`tests/seatrial.toml`, an `[[infra]]` entry).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    strategy: Option<Strategy>,
    services: Option<Vec<String>>,
    port: Option<u16>,
    path: Option<String>,
    status: Option<String>,
    body: Option<String>,
    timeout: Option<String>,
    url: Option<String>,
    insecure: Option<bool>,
    command: Option<Vec<String>>,
    image: Option<String>,
    #[serde(default)]
    service: BTreeMap<String, ServiceSection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    port: Option<u16>,
    path: Option<String>,
    status: Option<String>,
    body: Option<String>,
    command: Option<Vec<String>>,
}

/// `"200-399"` or `"200"`.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let parse = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{x:?} is not an HTTP status code"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => parse(s).map(|c| (c, c)),
    }
}

/// Reads `tests/seatrial.toml` of a recipe, if there is one.
pub fn read(recipe_dir: &Path) -> Result<Overrides, String> {
    let path = recipe_dir.join("tests").join("seatrial.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::default()),
        Err(e) => return Err(format!("cannot read tests/seatrial.toml: {e}")),
    };
    let file: File = toml::from_str(&text).map_err(|e| format!("tests/seatrial.toml: {e}"))?;
    let duration = |key: &str, v: Option<String>| {
        v.map(|s| {
            seatrial_recipe::parse_duration(&s)
                .map_err(|e| format!("tests/seatrial.toml: {key} = {s:?}: {e}"))
        })
        .transpose()
    };
    let mut overrides = file.probe.overrides("tests/seatrial.toml: probe")?;
    overrides.timeout = duration("trial.timeout", file.trial.timeout)?;
    overrides.stable_for = duration("trial.stable_for", file.trial.stable_for)?;
    overrides.test_timeout = duration("trial.test_timeout", file.trial.test_timeout)?;
    overrides.env = file.trial.env.into_iter().collect();
    Ok(overrides)
}

impl ProbeSection {
    /// These probe settings as trial overrides; `origin` says where they were written (errors
    /// name it: `tests/seatrial.toml: probe`, `[[infra]] traefik: probe`).
    pub fn overrides(self, origin: &str) -> Result<Overrides, String> {
        let status = |key: &str, v: Option<String>| {
            v.map(|s| parse_status_range(&s).map_err(|e| format!("{origin}.{key}: {e}")))
                .transpose()
        };
        let probe_timeout = self
            .timeout
            .map(|s| {
                seatrial_recipe::parse_duration(&s)
                    .map_err(|e| format!("{origin}.timeout = {s:?}: {e}"))
            })
            .transpose()?;
        Ok(Overrides {
            strategy: self.strategy,
            services: self.services,
            port: self.port,
            path: self.path,
            status: status("status", self.status)?,
            body: self.body,
            probe_timeout,
            url: self.url,
            insecure: self.insecure,
            command: self.command,
            probe_image: self.image,
            per_service: self
                .service
                .into_iter()
                .map(|(name, p)| {
                    let probe = ServiceProbe {
                        port: p.port,
                        path: p.path,
                        status: status(&format!("service.{name}.status"), p.status)?,
                        body: p.body,
                        command: p.command,
                    };
                    Ok((name, probe))
                })
                .collect::<Result<_, String>>()?,
            ..Overrides::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_command_line() {
        let dir = std::env::temp_dir().join(format!("seatrial-settings-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests")).expect("dir");
        std::fs::write(
            dir.join("tests/seatrial.toml"),
            "[trial]\ntimeout = \"15m\"\nenv = { A = \"1\", B = \"2\" }\n[probe]\npath = \"/health\"\nstatus = \"200-299\"\nservices = [\"app\"]\n",
        )
        .expect("write");
        let file = read(&dir).expect("reads");
        let cli = Overrides {
            path: Some("/ready".into()),
            env: vec![("B".into(), "3".into())],
            ..Overrides::default()
        };
        let s = Settings::default().apply(&file).apply(&cli);
        assert_eq!(s.timeout, Duration::from_secs(900), "the file sets it");
        assert_eq!(s.stable_for, Duration::from_secs(3), "the default stays");
        assert_eq!(s.probe.path, "/ready", "the command line wins");
        assert_eq!(s.probe.status, (200, 299));
        assert_eq!(s.services.as_deref(), Some(&["app".to_string()][..]));
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "3".into())]
        );

        std::fs::write(dir.join("tests/seatrial.toml"), "[probe]\npaht = \"/\"\n").expect("write");
        let err = read(&dir).expect_err("unknown keys are errors");
        assert!(err.contains("paht"), "{err}");
        std::fs::write(
            dir.join("tests/seatrial.toml"),
            "[trial]\ntimeout = \"15\"\n",
        )
        .expect("write");
        assert!(read(&dir).expect_err("no unit").contains("trial.timeout"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn per_service_probes_and_what_beats_them() {
        let dir = std::env::temp_dir().join(format!("seatrial-persvc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests")).expect("dir");
        std::fs::write(
            dir.join("tests/seatrial.toml"),
            "[probe]\npath = \"/\"\n[probe.service.api]\npath = \"/api/health\"\nstatus = \"200\"\nport = 9000\n[probe.service.web]\nbody = \"Welcome\"\n",
        )
        .expect("write");
        let s = Settings::default().apply(&read(&dir).expect("reads"));
        assert_eq!(
            s.chosen_services(),
            Some(vec!["api".to_string(), "web".to_string()]),
            "the tables choose the services"
        );
        let (api, port, _) = s.probe_for("api");
        assert_eq!(
            (api.path.as_str(), api.status, port),
            ("/api/health", (200, 200), Some(9000))
        );
        let (web, port, _) = s.probe_for("web");
        assert_eq!(
            (web.path.as_str(), web.body_contains.as_deref(), port),
            ("/", Some("Welcome"), None)
        );
        assert_eq!(s.probe_for("other").0.path, "/");

        let cli = Overrides {
            path: Some("/ready".into()),
            ..Overrides::default()
        };
        let s = s.apply(&cli);
        assert_eq!(
            s.probe_for("api").0.path,
            "/ready",
            "the command line beats the file's tables"
        );
        assert_eq!(
            s.probe_for("api").0.status,
            (200, 200),
            "what it did not say stays"
        );

        std::fs::write(
            dir.join("tests/seatrial.toml"),
            "[probe.service.api]\nstatus = \"abc\"\n",
        )
        .expect("write");
        let err = read(&dir).expect_err("bad status");
        assert!(err.contains("probe.service.api.status"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn strategies_need_their_inputs() {
        let url = Settings {
            strategy: Strategy::Url,
            ..Settings::default()
        };
        assert!(url.check().is_err());
        let https = Settings {
            strategy: Strategy::Url,
            url: Some("https://x".into()),
            ..Settings::default()
        };
        assert!(https.check().is_ok());
        let ftp = Settings {
            strategy: Strategy::Url,
            url: Some("ftp://x".into()),
            ..Settings::default()
        };
        assert!(ftp.check().expect_err("ftp").contains("https://"));
        let exec = Settings {
            strategy: Strategy::Exec,
            ..Settings::default()
        };
        assert!(exec.check().is_err());
        assert!(Settings::default().check().is_ok());
    }
}
