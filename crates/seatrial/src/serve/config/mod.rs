//! `seatrial serve` settings: defaults, then the config file (optional), then the environment.
//! Every key has an environment variable, so containers and systemd units need no file.
//!
//! - this file: the resolved [`ServeConfig`] and what it answers (timeouts, enrolment);
//! - `load`: the file format, the environment variables and how they combine;
//! - `settings`: what a queued run is fixed to (recipe path, probe, time limit);
//! - `forge`: the forge and its enrolled repositories.
//!
//! `[schedule]`, `[[infra]]` and `[[alerts]]` are checked by their own modules
//! (`serve::schedule`, `seatrial_trial::infra::config`, `crate::infra`).

mod forge;
mod load;
mod settings;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use seatrial_recipe::policy::Permit;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::serve::schedule::Schedule;

pub use forge::{EnrolledRepo, ForgeConfig};
pub use load::load;
#[cfg(test)]
pub(crate) use load::load_with;
pub use settings::{ProbeDefaults, RunSettings, StoredProbe};

/// An API bearer token. Never printed: `Debug` shows its length only.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// Constant-time comparison, so response timing says nothing about the token's content.
    pub fn matches(&self, given: &str) -> bool {
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

impl ApiToken {
    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
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
    /// `[schedule]`: when the nightly job runs (reconcile, then the cold sweep); `None`: never.
    pub schedule: Option<Schedule>,
    /// `[[infra]]` and `[[alerts]]`: the infra apps the nightly job keeps current, and where
    /// reconcile tells operators what needs them (`data_dir` is the server's).
    pub infra: crate::infra::InfraConfig,
    /// The disk space warm canonicals' snapshots may use, in bytes: exported on `/metrics`
    /// (`seatrial_warm_budget_bytes`) for an alert; seatrial itself deletes nothing over it.
    pub warm_budget: Option<u64>,
}

impl ServeConfig {
    /// The dashboard URL of run `id`: under `public_url` when it is set, else under `origin`
    /// (`""` for a link relative to this server).
    pub fn run_url(&self, id: seatrial_store::RunId, origin: &str) -> String {
        let base = self.public_url.as_deref().unwrap_or(origin);
        format!("{}/runs/{id}", base.trim_end_matches('/'))
    }

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
