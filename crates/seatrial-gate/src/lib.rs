//! seatrial-gate: the push-to-production gate.
//!
//! checks → migrations → (when asked) deploy → ready → rollback (after a failed deploy or
//! readiness). Nothing is deployed unless every check and the migration check passed; a deploy is
//! never called good before the app's readiness URL answers 200. Each stage is reported like a
//! trial's stages (seatrial-trial's [`StageReport`]), so the same terminal, JSON and JUnit reports
//! show it.
//!
//! `kind = "swarm"` deploys are [`SwarmDeployer`]s (the caller connects the engine). Hook points
//! left for callers: alerts after a failed deploy, and storing runs (the report's `mode` is
//! `"gate"`).

mod checks;
pub mod config;
pub mod deploy;
pub mod migrations;
pub mod redact;
mod sql_text;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::time::Instant;

use seatrial_engine::labels;
use seatrial_trial::recipe_tests::TestResult;
use seatrial_trial::stage::{self, StageLog, StageOutcome};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use crate::config::{ConfigError, DeployConfig, GateConfig, MigrationsConfig};
pub use crate::deploy::{DeployError, Deployer, HookDeployer};
pub use crate::swarm::{SwarmDeployer, swarm_app};
pub use seatrial_trial::{StageReport, StageResult, TrialObserver, TrialResult};

/// An observer that shows nothing (tests, callers that only want the report).
pub struct Quiet;
impl seatrial_engine::ProgressObserver for Quiet {}
impl TrialObserver for Quiet {}

/// Who has to act on an error (as opposed to a failure of the change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or the files it names are wrong.
    BadInput,
    /// A server seatrial needs (database, deploy API) is unreachable or refuses to work.
    Infrastructure,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadInput => "bad-input",
            Self::Infrastructure => "infrastructure",
        }
    }
}

/// Why a stage did not pass.
#[derive(Debug)]
pub enum StageFailure {
    /// The change failed (a check, a migration, the deploy, readiness).
    Fail(String),
    /// Not the change's fault.
    Error(String, ErrorKind),
}

/// The report of a gate run, as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub run_id: String,
    /// Always `"gate"`: how the store and dashboard tell gate runs from trials.
    pub mode: &'static str,
    /// The checkout the checks ran in.
    pub checkout: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    /// Whether the deploy stages were asked for (`--deploy`, or a ref in `deploy_branches`).
    pub deploy: bool,
    pub result: TrialResult,
    /// Who has to act on an `error` result: `bad-input` or `infrastructure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub interrupted: bool,
    pub started_at: String,
    pub duration_ms: u64,
    pub stages: Vec<StageReport>,
}

impl GateReport {
    fn new(checkout: &Path, reference: Option<String>, deploy: bool) -> Self {
        Self {
            run_id: seatrial_trial::new_run_id(),
            mode: "gate",
            checkout: checkout.display().to_string(),
            reference,
            commit: None,
            deploy,
            result: TrialResult::Pass,
            error_kind: None,
            interrupted: false,
            started_at: labels::now_rfc3339(),
            duration_ms: 0,
            stages: Vec::new(),
        }
    }

    /// The report as JUnit XML: one test case per stage and one per check.
    pub fn junit(&self) -> String {
        seatrial_trial::junit::render_suite(
            &seatrial_trial::junit::Suite {
                name: &format!(
                    "seatrial gate {}{}",
                    self.checkout,
                    self.reference
                        .as_deref()
                        .map(|r| format!(" at {r}"))
                        .unwrap_or_default()
                ),
                class: "seatrial.gate",
                started_at: &self.started_at,
                duration_ms: self.duration_ms,
            },
            &self.stages,
        )
    }

    fn passed_so_far(&self) -> bool {
        self.result == TrialResult::Pass && !self.interrupted
    }
}

/// One gate run.
pub struct GateRun<'a> {
    pub config: &'a GateConfig,
    /// The checkout of the change: checks run here; relative paths of the config resolve here.
    pub checkout: PathBuf,
    /// The ref under test (named in the report; decides [`deploy_wanted`]).
    pub reference: Option<String>,
    /// Whether deploy, ready and rollback run (see [`deploy_wanted`]).
    pub deploy: bool,
    /// The deployer of `kind = "hook"` (see [`prepare_deployer`]) or of `kind = "swarm"`.
    pub deployer: Option<&'a dyn Deployer>,
}

/// Whether a run deploys: `--deploy`, or the ref is one of `deploy_branches` (`main` and
/// `refs/heads/main` both name the branch `main`). Without a ref nothing deploys by itself.
pub fn deploy_wanted(config: &GateConfig, reference: Option<&str>, flag: bool) -> bool {
    flag || reference.is_some_and(|r| {
        let branch = r.strip_prefix("refs/heads/").unwrap_or(r);
        config.deploy_branches.iter().any(|b| b == branch)
    })
}

/// The deployer a run needs, checked before anything runs (a missing token is found before the
/// checks take ten minutes, not after): `None` when the run does not deploy.
pub fn prepare_deployer(
    config: &GateConfig,
    deploy: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Box<dyn Deployer>>, ConfigError> {
    if !deploy {
        return Ok(None);
    }
    let file = config.file.display().to_string();
    match &config.deploy {
        None => Err(ConfigError {
            file,
            key: "gate.deploy".into(),
            problem: "a deploy was asked for, but there is no [gate.deploy] table".into(),
            fix: "add [gate.deploy] (and [gate.ready]), or run without --deploy on a branch not in deploy_branches".into(),
        }),
        Some(DeployConfig::Hook(hook)) => Ok(Some(Box::new(HookDeployer::new(hook, &file, env)?))),
        Some(DeployConfig::Swarm { stack }) => Err(ConfigError {
            file,
            key: "gate.deploy.kind".into(),
            problem: format!(
                "kind = \"swarm\" (stack `{stack}`) needs a Docker engine, which prepare_deployer does not connect"
            ),
            fix: "build a SwarmDeployer (swarm_app + seatrial_trial::infra::gate::CommitDeploy) with a connected engine and pass it as GateRun::deployer".into(),
        }),
    }
}

/// Runs the gate. Cancelling `cancel` stops the running stage; a scratch database is still
/// dropped, and a deploy already sent is still rolled back.
pub async fn run(
    gate: GateRun<'_>,
    observer: &dyn TrialObserver,
    cancel: CancellationToken,
) -> GateReport {
    let started = Instant::now();
    let config = gate.config;
    let mut report = GateReport::new(&gate.checkout, gate.reference.clone(), gate.deploy);
    report.commit = head_commit(&gate.checkout).await;
    let token_env = match &config.deploy {
        Some(DeployConfig::Hook(h)) => Some(h.token_env.as_str()),
        _ => None,
    };

    if config.checks.is_empty() {
        skip(
            &mut report,
            observer,
            "checks",
            "no [[gate.checks]] in the config",
        );
    } else {
        let names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
        record(
            &mut report,
            Some(&cancel),
            observer,
            "checks",
            &format!("running {}", names.join(", ")),
            Box::pin(async { Ok(checks::run(&config.checks, &gate.checkout, token_env).await) }),
        )
        .await;
    }

    match &config.migrations {
        _ if !report.passed_so_far() => skip(
            &mut report,
            observer,
            "migrations",
            "not tried: a check did not pass (or the run was interrupted)",
        ),
        None => skip(
            &mut report,
            observer,
            "migrations",
            "no [gate.migrations] in the config",
        ),
        Some(m) => {
            migrations_stage(&mut report, observer, m, &gate.checkout, &cancel).await;
        }
    }

    deploy_stages(&gate, &mut report, observer, &cancel).await;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// deploy → ready → rollback, or their skipped records saying why not.
async fn deploy_stages(
    gate: &GateRun<'_>,
    report: &mut GateReport,
    observer: &dyn TrialObserver,
    cancel: &CancellationToken,
) {
    let skip_all = |report: &mut GateReport, why: &str| {
        for name in ["deploy", "ready", "rollback"] {
            skip(report, observer, name, why);
        }
    };
    if !gate.deploy {
        let why = format!(
            "not asked: no --deploy, and the ref {} is not one of deploy_branches ({})",
            gate.reference
                .as_deref()
                .map_or("(none given)".to_owned(), |r| format!("`{r}`")),
            gate.config.deploy_branches.join(", ")
        );
        return skip_all(report, &why);
    }
    if !report.passed_so_far() {
        return skip_all(
            report,
            "nothing deployed: a check or the migration check did not pass",
        );
    }
    let (Some(deployer), Some(ready)) = (gate.deployer, &gate.config.ready) else {
        report.result = TrialResult::Error;
        report.error_kind = Some(ErrorKind::BadInput.as_str());
        return skip_all(
            report,
            "nothing deployed: no deployer or no [gate.ready] for this run",
        );
    };
    let mut nothing_deployed = false;
    let deployed = record(
        report,
        Some(cancel),
        observer,
        "deploy",
        "starting the deploy",
        Box::pin(async {
            match deployer.deploy().await {
                Ok(detail) => Ok((detail, Vec::new())),
                Err(e) => {
                    nothing_deployed = e.nothing_deployed;
                    Err(e.failure)
                }
            }
        }),
    )
    .await;
    let ready_passed = if deployed == StageResult::Pass {
        record(
            report,
            Some(cancel),
            observer,
            "ready",
            &format!(
                "waiting for {} to answer 200",
                redact::redact_url(&ready.url).unwrap_or_default()
            ),
            Box::pin(async {
                Ok((
                    deploy::wait_ready(&ready.url, ready.timeout).await?,
                    Vec::new(),
                ))
            }),
        )
        .await
            == StageResult::Pass
    } else {
        skip(
            report,
            observer,
            "ready",
            "not waited for: the deploy did not pass",
        );
        false
    };
    if ready_passed {
        let confirmed = deployer.confirm().await;
        return match confirmed {
            Ok(note) if note.is_empty() => {
                skip(report, observer, "rollback", "not needed: the app is ready")
            }
            Ok(note) => skip(
                report,
                observer,
                "rollback",
                &format!("not needed: the app is ready; {note}"),
            ),
            Err(e) => {
                record(
                    report,
                    None,
                    observer,
                    "rollback",
                    "recording the release",
                    Box::pin(async { Err(e) }),
                )
                .await;
            }
        };
    }
    if nothing_deployed {
        return skip(
            report,
            observer,
            "rollback",
            "not needed: the deploy request was refused or never reached the deploy API, so nothing changed",
        );
    }
    if !deployer.can_roll_back() {
        return skip(report, observer, "rollback", deploy::NO_ROLLBACK);
    }
    // Its own token: an interrupt during readiness must not leave an unproven deploy in place.
    record(
        report,
        None,
        observer,
        "rollback",
        "rolling back",
        Box::pin(async { Ok((deployer.rollback().await?, Vec::new())) }),
    )
    .await;
}

type Body<'f> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(String, Vec<TestResult>), StageFailure>>
            + Send
            + 'f,
    >,
>;

/// Runs one stage body — timed, and cancellable when given a token — and records its result.
async fn record(
    report: &mut GateReport,
    cancel: Option<&CancellationToken>,
    observer: &dyn TrialObserver,
    name: &'static str,
    what: &str,
    body: Body<'_>,
) -> StageResult {
    let outcome = async {
        match body.await {
            Ok((detail, tests)) => StageOutcome::Passed(detail, tests),
            Err(StageFailure::Fail(why)) => StageOutcome::Failed(why, Vec::new()),
            Err(StageFailure::Error(why, kind)) => StageOutcome::Errored(why, kind.as_str()),
        }
    };
    stage::run_stage(report, cancel, observer, name, what, outcome).await
}

fn skip(report: &mut GateReport, observer: &dyn TrialObserver, name: &'static str, why: &str) {
    stage::skip(report, observer, name, why);
}

impl StageLog for GateReport {
    fn verdict_mut(&mut self) -> &mut TrialResult {
        &mut self.result
    }
    fn error_kind_mut(&mut self) -> &mut Option<&'static str> {
        &mut self.error_kind
    }
    fn set_interrupted(&mut self) {
        self.interrupted = true;
    }
    fn push_stage(&mut self, stage: StageReport) {
        self.stages.push(stage);
    }
}

/// The migration check as a stage. It handles cancellation itself: the scratch database is
/// dropped before the stage ends.
async fn migrations_stage(
    report: &mut GateReport,
    observer: &dyn TrialObserver,
    config: &MigrationsConfig,
    checkout: &Path,
    cancel: &CancellationToken,
) {
    record(
        report,
        None,
        observer,
        "migrations",
        "checking the migrations",
        Box::pin(async {
            Ok((
                migrations::check(config, checkout, cancel).await?,
                Vec::new(),
            ))
        }),
    )
    .await;
    report.interrupted |= cancel.is_cancelled();
}

/// Runs the migration check alone (`seatrial check migrations`), reported as a one-stage gate.
pub async fn check_migrations(
    config: &MigrationsConfig,
    checkout: &Path,
    observer: &dyn TrialObserver,
    cancel: CancellationToken,
) -> GateReport {
    let started = Instant::now();
    let mut report = GateReport::new(checkout, None, false);
    migrations_stage(&mut report, observer, config, checkout, &cancel).await;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// The checkout's HEAD commit, when it is a git checkout.
async fn head_commit(dir: &Path) -> Option<String> {
    let out = tokio::process::Command::new("git")
        .args(["rev-parse", "--verify", "HEAD"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
}
