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
//! strategy = "gateway"     # gateway | url | exec
//! services = ["app"]       # which services to probe (default: the traefik-routed one, else
//!                          # each with a published or exposed port)
//! port = 8080              # the port to probe (default: traefik's, published, or exposed)
//! path = "/health"
//! status = "200-299"
//! body = "ok"              # the body must contain this
//! timeout = "2m"
//! url = "http://proxy.example.org"             # strategy = "url": base URL, sent with Host: <domain>
//! command = ["wget", "-q", "-O-", "http://127.0.0.1/"]  # strategy = "exec": run in the container
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
    pub command: Option<Vec<String>>,
}

/// The settings a trial runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub stable_for: Duration,
    pub test_timeout: Duration,
    pub env: Vec<(String, String)>,
    pub strategy: Strategy,
    pub services: Option<Vec<String>>,
    pub port: Option<u16>,
    pub probe: ProbeSpec,
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            stable_for: Duration::from_secs(3),
            test_timeout: Duration::from_secs(300),
            env: Vec::new(),
            strategy: Strategy::Gateway,
            services: None,
            port: None,
            probe: ProbeSpec::default(),
            url: None,
            command: None,
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
        if o.command.is_some() {
            self.command.clone_from(&o.command);
        }
        self
    }

    /// Checks that the chosen strategy has what it needs.
    pub fn check(&self) -> Result<(), String> {
        match self.strategy {
            Strategy::Url => match self.url.as_deref() {
                None => {
                    Err("probe strategy `url` needs a base URL (probe.url or --probe-url)".into())
                }
                Some(u) if !u.starts_with("http://") => Err(format!(
                    "probe url {u:?}: only http:// base URLs are supported (point it at the proxy's plain-HTTP entrypoint)"
                )),
                Some(_) => Ok(()),
            },
            Strategy::Exec if self.command.as_ref().is_none_or(Vec::is_empty) => Err(
                "probe strategy `exec` needs a command (probe.command or --probe-command)".into(),
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSection {
    strategy: Option<Strategy>,
    services: Option<Vec<String>>,
    port: Option<u16>,
    path: Option<String>,
    status: Option<String>,
    body: Option<String>,
    timeout: Option<String>,
    url: Option<String>,
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
    Ok(Overrides {
        timeout: duration("trial.timeout", file.trial.timeout)?,
        stable_for: duration("trial.stable_for", file.trial.stable_for)?,
        test_timeout: duration("trial.test_timeout", file.trial.test_timeout)?,
        env: file.trial.env.into_iter().collect(),
        strategy: file.probe.strategy,
        services: file.probe.services,
        port: file.probe.port,
        path: file.probe.path,
        status: file
            .probe
            .status
            .map(|s| {
                parse_status_range(&s)
                    .map_err(|e| format!("tests/seatrial.toml: probe.status: {e}"))
            })
            .transpose()?,
        body: file.probe.body,
        probe_timeout: duration("probe.timeout", file.probe.timeout)?,
        url: file.probe.url,
        command: file.probe.command,
    })
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
        assert!(https.check().expect_err("https").contains("http://"));
        let exec = Settings {
            strategy: Strategy::Exec,
            ..Settings::default()
        };
        assert!(exec.check().is_err());
        assert!(Settings::default().check().is_ok());
    }
}
