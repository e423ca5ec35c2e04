//! `seatrial reconcile`: keeps the config's `[[infra]]` apps on their newest safe release (see
//! `seatrial_trial::infra`), sends alerts to its `[[alerts]]` and records them for the
//! dashboard. `seatrial serve` runs the same reconcile on its nightly schedule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use seatrial_alerts::{Alert, AlertTarget, Severity};
use seatrial_engine::{Engine, SwarmEngine};
use seatrial_recipe::{SecretSlot, SecretValue};
use seatrial_trial::infra::{self, AppOutcome, InfraApp, InfraDir, InfraHost, Level};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::cli::ReconcileArgs;
use crate::exit::{self, Failure};
use crate::secrets::SecretStore;

/// What reconcile reads from the config file (the same file as `serve`'s).
#[derive(Debug, Clone, Default)]
pub struct InfraConfig {
    pub apps: Vec<InfraApp>,
    pub alerts: Vec<AlertTarget>,
    /// The file's `data_dir`, if it sets one.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    infra: Vec<toml::Value>,
    #[serde(default)]
    alerts: Vec<toml::Value>,
    data_dir: Option<PathBuf>,
}

impl InfraConfig {
    /// Reads `[[infra]]` and `[[alerts]]` from a config file's text (other keys are `serve`'s).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self {
            apps: infra::config::parse_entries(file.infra)?,
            alerts: parse_alerts(file.alerts)?,
            data_dir: file.data_dir,
        })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Checks `[[alerts]]` entries; errors name the entry.
pub fn parse_alerts(entries: Vec<toml::Value>) -> Result<Vec<AlertTarget>, String> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let target: AlertTarget = v.try_into().map_err(|e: toml::de::Error| {
                format!("[[alerts]] entry {}: {}", i + 1, e.message())
            })?;
            target
                .validate()
                .map_err(|e| format!("[[alerts]] entry {} ({}): {e}", i + 1, target.describe()))?;
            Ok(target)
        })
        .collect()
}

/// App secrets from the data directory's secret store (as `seatrial app deploy` keeps them);
/// progress lines to `progress`. The gate's swarm deploys use it too.
pub(crate) struct Host<'a> {
    pub(crate) progress: &'a (dyn Fn(&str, &str) + Send + Sync),
}

impl InfraHost for Host<'_> {
    fn secrets(
        &self,
        stack: &str,
        slots: &[SecretSlot],
    ) -> Result<HashMap<String, SecretValue>, String> {
        SecretStore::for_app(stack)
            .values(slots, &HashMap::new())
            .map_err(|f| f.message)
    }

    fn progress(&self, app: &str, line: &str) {
        (self.progress)(app, line);
    }
}

/// How one reconcile pass runs.
pub struct Pass<'a> {
    pub only: Option<&'a str>,
    pub dry_run: bool,
    /// Apps whose failed release (or failed rollback) is tried again.
    pub retry: &'a [String],
    pub data_dir: PathBuf,
}

/// Reconciles every app (or `only`), one after the other, sending and recording the alerts.
pub async fn reconcile_all(
    engine: &dyn Engine,
    config: &InfraConfig,
    pass: &Pass<'_>,
    progress: &(dyn Fn(&str, &str) + Send + Sync),
    cancel: &CancellationToken,
) -> Vec<AppOutcome> {
    let host = Host { progress };
    let dir = InfraDir::new(&pass.data_dir);
    let mut out = Vec::new();
    for app in config
        .apps
        .iter()
        .filter(|a| pass.only.is_none_or(|o| o == a.name))
    {
        if cancel.is_cancelled() {
            break;
        }
        let options = infra::ReconcileOptions {
            data_dir: pass.data_dir.clone(),
            dry_run: pass.dry_run,
            retry: pass.retry.iter().any(|r| r == &app.name),
        };
        let outcome = infra::reconcile_app(engine, app, &options, &host, cancel).await;
        if let Some(level) = outcome.alert
            && !pass.dry_run
        {
            alert(&dir, &config.alerts, &outcome, level).await;
        }
        out.push(outcome);
    }
    out
}

/// Sends one outcome's alert to every target and records it (with each delivery's result).
async fn alert(dir: &InfraDir, targets: &[AlertTarget], outcome: &AppOutcome, level: Level) {
    let alert = Alert {
        event: outcome.action.as_str().to_owned(),
        app: outcome.name.clone(),
        from: outcome.from.clone(),
        to: outcome.to.clone(),
        reason: outcome.reason.clone(),
        notes: outcome.notes.clone(),
        severity: match level {
            Level::Warning => Severity::Warning,
            Level::Critical => Severity::Critical,
        },
    };
    let deliveries = seatrial_alerts::send_all(targets, &alert).await;
    for d in deliveries.iter().filter(|d| d.error.is_some()) {
        tracing::warn!(app = %outcome.name, target = %d.target, error = d.error.as_deref().unwrap_or_default(), "an alert was not delivered");
    }
    let mut record = serde_json::to_value(&alert).unwrap_or_default();
    if let Some(map) = record.as_object_mut() {
        map.insert(
            "at".into(),
            serde_json::Value::String(seatrial_engine::labels::now_rfc3339()),
        );
        map.insert(
            "deliveries".into(),
            serde_json::to_value(&deliveries).unwrap_or_default(),
        );
    }
    if let Err(e) = dir.append_alert(&record) {
        tracing::warn!(error = %e, "cannot record an alert");
    }
}

/// `seatrial reconcile`.
pub async fn run(args: ReconcileArgs) -> Result<(), Failure> {
    let config = InfraConfig::load(&args.config).map_err(|e| Failure::new(exit::BAD_INPUT, e))?;
    if config.apps.is_empty() {
        return Err(Failure::new(
            exit::BAD_INPUT,
            format!(
                "{} has no [[infra]] entries: nothing to reconcile",
                args.config.display()
            ),
        ));
    }
    let unknown: Vec<&String> = args
        .only
        .iter()
        .chain(&args.retry)
        .filter(|n| !config.apps.iter().any(|a| &a.name == *n))
        .collect();
    if let Some(name) = unknown.first() {
        return Err(Failure::new(
            exit::BAD_INPUT,
            format!(
                "`{name}` is not an [[infra]] app of {} (apps: {})",
                args.config.display(),
                config
                    .apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(dir) = &config.data_dir
        && std::env::var_os("SEATRIAL_DATA_DIR").is_none()
    {
        // `--data-dir` was applied before this and wins (the first setting sticks).
        crate::secrets::set_data_dir(dir.clone());
    }
    let engine = SwarmEngine::connect().await?;
    let cancel = CancellationToken::new();
    let interrupt = {
        let cancel = cancel.clone();
        let mut signals = crate::signals::Interrupts::install()?;
        tokio::spawn(async move {
            signals.first().await;
            eprintln!("interrupted: finishing the step under way (a second Ctrl-C stops at once)");
            cancel.cancel();
            signals.again().await;
            std::process::exit(i32::from(exit::INTERRUPTED));
        })
    };
    let progress = |app: &str, line: &str| eprintln!("{app}: {line}");
    let pass = Pass {
        only: args.only.as_deref(),
        dry_run: args.dry_run,
        retry: &args.retry,
        data_dir: crate::secrets::data_dir(),
    };
    let outcomes = reconcile_all(&engine, &config, &pass, &progress, &cancel).await;
    interrupt.abort();
    if args.json {
        let json = serde_json::json!({ "dry_run": args.dry_run, "apps": outcomes });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print_table(&outcomes);
    }
    if cancel.is_cancelled() {
        return Err(Failure::new(exit::INTERRUPTED, "reconcile was interrupted"));
    }
    match infra::exit_code(&outcomes) {
        0 => Ok(()),
        _ => Err(Failure::new(
            exit::APP_FAILED,
            "an app was rolled back or failed (see above)",
        )),
    }
}

fn print_table(outcomes: &[AppOutcome]) {
    let rows: Vec<[String; 5]> = outcomes
        .iter()
        .map(|o| {
            [
                o.name.clone(),
                o.action.as_str().to_owned(),
                o.from.clone().unwrap_or_else(|| "-".into()),
                o.to.clone().unwrap_or_else(|| "-".into()),
                o.reason.clone(),
            ]
        })
        .collect();
    crate::table::print(["APP", "ACTION", "FROM", "TO", "REASON"], &rows, 40);
    for o in outcomes {
        for d in &o.detail {
            eprintln!("  {}: {d}", o.name);
        }
        if let Some(notes) = &o.notes {
            eprintln!("  {} release notes:\n{}", o.name, indent(notes));
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serve_config_file_is_read_for_infra_and_alerts() {
        let config = InfraConfig::parse(
            r#"
listen = "127.0.0.1:8086"
data_dir = "/var/lib/seatrial"
[[infra]]
name = "traefik"
recipe = "https://git.example.org/coop-cloud/traefik.git"
[[alerts]]
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#,
        )
        .expect("parses");
        assert_eq!(config.apps.len(), 1);
        assert_eq!(config.alerts.len(), 1);
        assert_eq!(
            config.data_dir.as_deref(),
            Some(Path::new("/var/lib/seatrial"))
        );
        let e = InfraConfig::parse("[[alerts]]\nkind = \"pager\"\n").expect_err("bad kind");
        assert!(e.contains("[[alerts]] entry 1"), "{e}");
    }

    #[test]
    fn the_example_config_is_valid() {
        // The example names NTFY_TOKEN; any variable that is set stands in for it here.
        let text = include_str!("../../../examples/infra.toml").replace("NTFY_TOKEN", "PATH");
        let config = InfraConfig::parse(&text).expect("examples/infra.toml parses");
        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["traefik", "sso"]);
        assert_eq!(config.alerts.len(), 2);
    }
}
