//! seatrial-trial: the cold trial, stage by stage, written against the [`Engine`] trait.
//!
//! prepare → install (the previous release) → serve → upgrade (to the change) → tests →
//! teardown. Teardown always runs: after a failure, a stage timeout, or cancellation.

pub mod janitor;
pub mod junit;
pub mod probe;
pub mod recipe_tests;
pub mod settings;
pub mod trust;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use seatrial_engine::labels::{self, RunLabels};
use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, Engine, EngineError, ErrorKind, ProgressObserver,
    PullPolicy, StackPlan, UndeployOptions,
};
use seatrial_recipe::git::{self, Checkout};
use seatrial_recipe::lint;
use seatrial_recipe::{AppSettings, Recipe, ResolvedApp, SecretValue, Severity};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::probe::ProbeSpec;
use crate::settings::{Settings, Strategy};
pub use crate::trust::Trust;

/// Everything a trial needs to know.
#[derive(Debug, Clone)]
pub struct TrialConfig {
    /// A recipe directory, or a git repository path/URL (with `reference`).
    pub recipe: String,
    /// The change under test: a branch, tag or commit. `None`: the directory as it is.
    pub reference: Option<String>,
    /// With `reference`: the recipe's directory inside the repository (`None`: its root).
    pub subdir: Option<PathBuf>,
    /// Domain suffix: the app's domain is `<stack>.<base_domain>`.
    pub base_domain: String,
    /// Command-line settings; they override the recipe's `tests/seatrial.toml`.
    pub overrides: settings::Overrides,
    /// Leave the app deployed (skip teardown) for debugging.
    pub keep: bool,
    /// seatrial's data directory: checkouts go to `checkouts/`, running trials register in `runs/`.
    pub data_dir: PathBuf,
    /// Age after which the janitor pass (before the trial) reaps trial stacks of unknown runs.
    pub janitor_max_age: Duration,
    /// Who tells whether the run behind a trial stack is alive (a server's store); `None`: this
    /// host's run registry under `data_dir` (command-line trials).
    pub liveness: Option<janitor::SharedLiveness>,
    /// This run's id and stack name (see [`identity`]).
    pub run_id: String,
    pub stack: String,
    /// Whose recipe this is: an untrusted one's host access is refused at prepare.
    pub trust: Trust,
}

/// A fresh run id and the stack name it gives `recipe` at `reference`.
pub fn identity(recipe: &str, reference: Option<&str>) -> (String, String) {
    let run_id = new_run_id();
    let label = recipe.trim_end_matches('/');
    let name = label
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(label)
        .trim_end_matches(".git");
    let stack = stack_name(name, reference.unwrap_or(""), &run_id);
    (run_id, stack)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageResult {
    Pass,
    Fail,
    Error,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: &'static str,
    pub result: StageResult,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub detail: String,
    /// Per-test results (the `tests` stage).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<recipe_tests::TestResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialResult {
    Pass,
    Fail,
    Error,
}

/// The report of a trial, as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    pub run_id: String,
    pub recipe: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub mode: &'static str,
    pub stack: String,
    pub domain: String,
    /// The release installed first (`None`: the change itself was installed).
    pub previous_version: Option<String>,
    pub result: TrialResult,
    /// Who has to act on an `error` result: `bad-input` or `infrastructure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub interrupted: bool,
    pub started_at: String,
    pub duration_ms: u64,
    pub stages: Vec<StageReport>,
}

/// Receives stage progress; the CLI draws it.
pub trait TrialObserver: ProgressObserver {
    fn stage_started(&self, _name: &'static str, _what: &str) {}
    fn stage_finished(&self, _stage: &StageReport) {}
}

/// An outcome of a stage body: detail on success, or why it failed.
enum StageError {
    /// The app failed (unhealthy, rolled back, probe failed, tests failed).
    Fail(String),
    /// The app failed after the stage's tests ran; their results stay in the report.
    FailAfterTests(String, Vec<recipe_tests::TestResult>),
    /// Bad input or infrastructure; not the app's fault.
    Error(String, ErrorKind),
}

impl From<EngineError> for StageError {
    fn from(e: EngineError) -> Self {
        match e.kind() {
            ErrorKind::AppFailed => Self::Fail(e.to_string()),
            kind => Self::Error(e.to_string(), kind),
        }
    }
}

/// A short unique stack name: `t` + the recipe's initials + 6 hex digits of a hash of recipe, ref
/// and run id — so `<stack>_<secret>_<version>` fits the engine's 64 characters.
pub fn stack_name(recipe: &str, reference: &str, run_id: &str) -> String {
    let initials: String = recipe
        .split(['-', '_', '.', ' '])
        .filter_map(|w| w.chars().find(|c| c.is_ascii_alphanumeric()))
        .take(4)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(recipe.as_bytes());
    h.write(reference.as_bytes());
    h.write(run_id.as_bytes());
    format!("t{initials}-{:06x}", h.finish() & 0xff_ffff)
}

/// A fresh random run id.
pub fn new_run_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A recipe revision ready to deploy.
struct Revision {
    dir: PathBuf,
    commit: Option<String>,
    version: Option<String>,
    _checkout: Option<Checkout>,
}

/// What every stage reads: never changed once the trial starts.
struct Ctx<'a> {
    engine: &'a dyn Engine,
    observer: &'a dyn TrialObserver,
    config: TrialConfig,
    run_id: String,
    stack: String,
    domain: String,
    /// Failed tasks per service when the stack last converged: anything beyond this since then
    /// means a service did not stay up.
    converged: std::sync::Mutex<HashMap<String, usize>>,
}

type Body<'f> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(String, Vec<recipe_tests::TestResult>), StageError>,
            > + Send
            + 'f,
    >,
>;

/// Runs one stage body — timed, cancellable — and records its result; `true` when it passed.
async fn record(
    report: &mut TrialReport,
    cancel: &CancellationToken,
    observer: &dyn TrialObserver,
    name: &'static str,
    what: &str,
    body: Body<'_>,
) -> bool {
    observer.stage_started(name, what);
    let started_at = labels::now_rfc3339();
    let started = Instant::now();
    let outcome = tokio::select! {
        r = body => Some(r),
        _ = cancel.cancelled() => None,
    };
    let (mut result, detail, tests) = match outcome {
        Some(Ok((detail, tests))) => (StageResult::Pass, detail, tests),
        Some(Err(StageError::Fail(why))) => (StageResult::Fail, why, Vec::new()),
        Some(Err(StageError::FailAfterTests(why, tests))) => (StageResult::Fail, why, tests),
        Some(Err(StageError::Error(why, kind))) => {
            report.error_kind.get_or_insert(match kind {
                ErrorKind::BadInput => "bad-input",
                _ => "infrastructure",
            });
            (StageResult::Error, why, Vec::new())
        }
        None => {
            report.interrupted = true;
            (StageResult::Error, "interrupted".to_owned(), Vec::new())
        }
    };
    if result == StageResult::Pass && tests.iter().any(|t| !t.passed) {
        result = StageResult::Fail;
    }
    // The first bad stage decides the verdict; later ones (teardown) never soften it.
    match (report.result, result) {
        (TrialResult::Pass, StageResult::Fail) => report.result = TrialResult::Fail,
        (TrialResult::Pass, StageResult::Error) => report.result = TrialResult::Error,
        _ => {}
    }
    let stage = StageReport {
        name,
        result,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        detail,
        tests,
    };
    observer.stage_finished(&stage);
    report.stages.push(stage);
    result == StageResult::Pass
}

fn skip(report: &mut TrialReport, observer: &dyn TrialObserver, name: &'static str, why: &str) {
    let stage = StageReport {
        name,
        result: StageResult::Skipped,
        started_at: labels::now_rfc3339(),
        duration_ms: 0,
        detail: why.to_owned(),
        tests: Vec::new(),
    };
    observer.stage_finished(&stage);
    report.stages.push(stage);
}

/// Runs a whole cold trial and returns its report; teardown has run when this returns
/// (unless `keep`). Cancelling `cancel` ends the running stage and goes to teardown.
pub async fn run(
    engine: &dyn Engine,
    config: TrialConfig,
    observer: &dyn TrialObserver,
    cancel: CancellationToken,
) -> TrialReport {
    let started = Instant::now();
    let run_id = config.run_id.clone();
    let stack = config.stack.clone();
    let domain = format!("{stack}.{}", config.base_domain);
    let mut report = TrialReport {
        run_id: run_id.clone(),
        recipe: config.recipe.trim_end_matches('/').to_owned(),
        reference: config.reference.clone(),
        commit: None,
        mode: "cold",
        stack: stack.clone(),
        domain: domain.clone(),
        previous_version: None,
        result: TrialResult::Pass,
        error_kind: None,
        interrupted: false,
        started_at: labels::now_rfc3339(),
        duration_ms: 0,
        stages: Vec::new(),
    };
    // A command-line trial registers on this host before anything is created, so no janitor
    // reaps it while it lives; a server's trial is known to be alive by its store instead.
    let guard = if config.liveness.is_none() {
        let registry = janitor::RunRegistry::new(&config.data_dir);
        let guard = registry.register(&run_id);
        if let Err(e) = &guard {
            // Without it the janitor treats this run as unknown: reaped only after its max age.
            tracing::warn!(error = %e, dir = %config.data_dir.display(), "cannot register the running trial");
        }
        guard.ok()
    } else {
        None
    };
    let ctx = Ctx {
        engine,
        observer,
        config,
        run_id,
        stack,
        domain,
        converged: std::sync::Mutex::default(),
    };
    let mut secrets = HashMap::new();
    let deployed = lifecycle(&ctx, &mut report, &cancel, &mut secrets).await;
    teardown(&ctx, &mut report, deployed).await;
    let teardown_failed = report.stages.iter().any(|s| {
        s.name == "teardown" && matches!(s.result, StageResult::Fail | StageResult::Error)
    });
    if teardown_failed && let Some(guard) = guard {
        // The registration outlives this process, so the next janitor knows the run is over
        // and removes what teardown could not.
        guard.leave();
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// The stages before teardown; returns whether anything may have been deployed.
async fn lifecycle(
    ctx: &Ctx<'_>,
    report: &mut TrialReport,
    cancel: &CancellationToken,
    secrets: &mut HashMap<String, SecretValue>,
) -> bool {
    let obs = ctx.observer;
    let mut prepared_state = None;
    let prepared = record(
        report,
        cancel,
        obs,
        "prepare",
        "janitor pass, checkouts, settings, lint, resolution",
        Box::pin(async {
            // First reap what killed trials left, so this one starts on a clean engine. The
            // janitor's trouble is not this trial's: it is reported and the trial goes on.
            let registry = janitor::RunRegistry::new(&ctx.config.data_dir);
            let runs: &dyn janitor::RunLiveness = match &ctx.config.liveness {
                Some(l) => l.as_ref(),
                None => &registry,
            };
            let options = janitor::JanitorOptions {
                max_age: ctx.config.janitor_max_age,
                dry_run: false,
            };
            let (reaped, janitor_trouble) = match janitor::run(ctx.engine, runs, &options).await {
                Ok(decisions) => (
                    decisions
                        .iter()
                        .filter(|d| d.action == janitor::Action::Removed)
                        .map(|d| d.stack.clone())
                        .collect::<Vec<_>>(),
                    decisions
                        .iter()
                        .filter(|d| d.action == janitor::Action::Failed)
                        .map(|d| format!("{}: {}", d.stack, d.reason))
                        .collect::<Vec<_>>(),
                ),
                Err(e) => (Vec::new(), vec![e.to_string()]),
            };
            let (change, previous) = checkouts_off_runtime(&ctx.config).await?;
            let settings = prepare(ctx, &change, previous.as_ref())?;
            let mut detail = match &previous {
                Some(p) => format!(
                    "change at {}; upgrading from release {}",
                    short(change.commit.as_deref()),
                    p.version.as_deref().unwrap_or("?")
                ),
                None => format!(
                    "change at {}; no earlier release",
                    short(change.commit.as_deref())
                ),
            };
            if !reaped.is_empty() {
                detail.push_str(&format!(
                    "; janitor removed stale trial stack(s): {}",
                    reaped.join(", ")
                ));
            }
            if !janitor_trouble.is_empty() {
                tracing::warn!(trouble = ?janitor_trouble, "the janitor pass before the trial had trouble");
                detail.push_str(&format!(
                    "; janitor trouble (not this trial's; run `seatrial janitor`): {}",
                    janitor_trouble.join("; ")
                ));
            }
            prepared_state = Some((change, previous, settings));
            Ok((detail, Vec::new()))
        }),
    )
    .await;
    let Some((change, previous, settings)) = prepared_state.filter(|_| prepared) else {
        return false;
    };
    report.commit = change.commit.clone();
    report.previous_version = previous.as_ref().and_then(|p| p.version.clone());
    let s = &settings;

    let first = previous.as_ref().unwrap_or(&change);
    let what = format!(
        "deploying {}",
        first.version.as_deref().unwrap_or("the change")
    );
    let installed = record(
        report,
        cancel,
        obs,
        "install",
        &what,
        Box::pin(deploy_and_converge(
            ctx,
            s,
            first,
            DeployMode::Create,
            secrets,
        )),
    )
    .await;
    if !installed {
        return true;
    }
    let mut probe_url = None;
    let probe_what = format!("probing the app ({:?} strategy)", s.strategy).to_lowercase();
    if !record(
        report,
        cancel,
        obs,
        "serve",
        &probe_what,
        Box::pin(serve(ctx, s, &mut probe_url)),
    )
    .await
    {
        return true;
    }
    if previous.is_some() {
        let upgraded = record(
            report,
            cancel,
            obs,
            "upgrade",
            "upgrading in place to the change",
            Box::pin(async {
                let (detail, _) =
                    deploy_and_converge(ctx, s, &change, DeployMode::Update, secrets).await?;
                verify_moved(ctx, &change).await?;
                Ok((
                    format!("{detail}; every service carries the change's commit"),
                    Vec::new(),
                ))
            }),
        )
        .await;
        if !upgraded {
            return true;
        }
        let served = record(
            report,
            cancel,
            obs,
            "serve-after-upgrade",
            &probe_what,
            Box::pin(serve(ctx, s, &mut probe_url)),
        )
        .await;
        if !served {
            return true;
        }
    } else {
        skip(
            report,
            obs,
            "upgrade",
            "no earlier release to upgrade from: the change was installed directly",
        );
    }
    let names = recipe_tests::discover(&change.dir);
    if names.is_empty() {
        skip(
            report,
            obs,
            "tests",
            "the recipe has no executables in tests/",
        );
        return true;
    }
    let env = vec![
        ("SEATRIAL_STACK".to_owned(), ctx.stack.clone()),
        ("SEATRIAL_DOMAIN".to_owned(), ctx.domain.clone()),
        ("SEATRIAL_URL".to_owned(), probe_url.unwrap_or_default()),
        ("SEATRIAL_RUN_ID".to_owned(), ctx.run_id.clone()),
        (
            "SEATRIAL_PREVIOUS_VERSION".to_owned(),
            previous
                .as_ref()
                .and_then(|p| p.version.clone())
                .unwrap_or_default(),
        ),
        (
            "DOCKER_HOST".to_owned(),
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        ),
    ];
    let timeout = s.test_timeout;
    record(
        report,
        cancel,
        obs,
        "tests",
        "running the recipe's tests",
        Box::pin(async move {
            let mut results = Vec::new();
            for name in &names {
                results.push(recipe_tests::run(&change.dir, name, &env, timeout).await);
            }
            let passed = results.iter().filter(|r| r.passed).count();
            let summary: Vec<String> = results
                .iter()
                .map(|r| format!("{} {}", r.name, r.outcome))
                .collect();
            let detail = format!("{passed}/{} passed: {}", results.len(), summary.join(", "));
            match still_up(ctx).await {
                Ok(()) => Ok((detail, results)),
                Err(StageError::Fail(why)) => Err(StageError::FailAfterTests(
                    format!("{why}; tests: {detail}"),
                    results,
                )),
                Err(e) => Err(e),
            }
        }),
    )
    .await;
    true
}

fn short(commit: Option<&str>) -> &str {
    commit.map_or("the working tree", |c| &c[..c.len().min(12)])
}

fn app_settings(ctx: &Ctx<'_>, s: &Settings, version: Option<String>) -> AppSettings {
    AppSettings {
        stack: ctx.stack.clone(),
        domain: Some(ctx.domain.clone()),
        overrides: s.env.iter().cloned().collect(),
        version,
    }
}

fn resolve(
    ctx: &Ctx<'_>,
    s: &Settings,
    rev: &Revision,
) -> Result<(Recipe, ResolvedApp), StageError> {
    let bad =
        |e: seatrial_recipe::RecipeError| StageError::Error(e.to_string(), ErrorKind::BadInput);
    let recipe = Recipe::open(&rev.dir).map_err(bad)?;
    let app = recipe
        .resolve(&app_settings(ctx, s, rev.version.clone()))
        .map_err(bad)?;
    Ok((recipe, app))
}

/// Checkouts, settings (defaults < tests/seatrial.toml < command line), lint (errors stop the
/// trial), and resolution of both revisions.
fn prepare(
    ctx: &Ctx<'_>,
    change: &Revision,
    previous: Option<&Revision>,
) -> Result<Settings, StageError> {
    let bad = |e: String| StageError::Error(e, ErrorKind::BadInput);
    let from_recipe = settings::read(&change.dir).map_err(bad)?;
    let s = Settings::default()
        .apply(&from_recipe)
        .apply(&ctx.config.overrides);
    s.check().map_err(bad)?;
    // Lint what this trial deploys: the app env's own COMPOSE_FILE combination, not every
    // overlay the recipe offers (`seatrial lint` checks those).
    let recipe = Recipe::open(&change.dir).map_err(|e| bad(e.to_string()))?;
    let mut env: indexmap::IndexMap<String, String> = s.env.iter().cloned().collect();
    if let Some(files) = recipe
        .app_env(&app_settings(ctx, &s, change.version.clone()))
        .get("COMPOSE_FILE")
        .filter(|f| !f.trim().is_empty())
    {
        env.insert("COMPOSE_FILE".to_owned(), files.clone());
    }
    let findings = lint::lint_with(&change.dir, &env).map_err(|e| bad(e.to_string()))?;
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {} ({})", f.rule, f.at, f.what, f.fix))
        .collect();
    if !errors.is_empty() {
        return Err(bad(format!(
            "lint found {} error(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        )));
    }
    // Resolve both now, so a broken release fails here rather than halfway through.
    for rev in std::iter::once(change).chain(previous) {
        let (recipe, app) = resolve(ctx, &s, rev)?;
        let which = rev
            .version
            .as_deref()
            .map_or("the change".into(), |v| format!("release {v}"));
        ctx.config
            .trust
            .check(&recipe.dir, &app, &which)
            .map_err(bad)?;
        let plan = plan(ctx, rev, &app, &mut HashMap::new())?;
        ctx.engine.check_plan(&plan)?;
    }
    Ok(s)
}

fn plan(
    ctx: &Ctx<'_>,
    rev: &Revision,
    app: &ResolvedApp,
    secrets: &mut HashMap<String, SecretValue>,
) -> Result<StackPlan, StageError> {
    // One value per secret for the whole trial: the upgrade keeps the installed secrets.
    for slot in &app.secrets {
        if !secrets.contains_key(&slot.engine_name) {
            let value = SecretValue::generate(slot.length).map_err(|e| {
                StageError::Error(
                    format!("the OS random number generator failed: {e}"),
                    ErrorKind::Infrastructure,
                )
            })?;
            secrets.insert(slot.engine_name.clone(), value);
        }
    }
    let recipe = Recipe::open(&rev.dir)
        .map_err(|e| StageError::Error(e.to_string(), ErrorKind::BadInput))?;
    let mut labels = RunLabels::new(ctx.run_id.clone(), recipe.name.clone(), "trial");
    labels.commit = rev.commit.clone();
    labels.version = rev.version.clone();
    Ok(StackPlan {
        stack: ctx.stack.clone(),
        compose: app.compose.clone(),
        base_dir: recipe.dir.clone(),
        labels,
        env: app.env.clone().into_iter().collect(),
        secret_values: app
            .secrets
            .iter()
            .filter_map(|s| Some((s.engine_name.clone(), secrets.get(&s.engine_name)?.clone())))
            .collect(),
    })
}

async fn deploy_and_converge(
    ctx: &Ctx<'_>,
    s: &Settings,
    rev: &Revision,
    mode: DeployMode,
    secrets: &mut HashMap<String, SecretValue>,
) -> Result<(String, Vec<recipe_tests::TestResult>), StageError> {
    let (_, app) = resolve(ctx, s, rev)?;
    let plan = plan(ctx, rev, &app, secrets)?;
    let options = DeployOptions {
        mode,
        pull: PullPolicy::Missing,
        ..DeployOptions::default()
    };
    ctx.engine.deploy(&plan, &options).await?;
    let converge = ConvergeOptions {
        timeout: s.timeout,
        stable_for: s.stable_for,
        ..ConvergeOptions::default()
    };
    let report = ctx
        .engine
        .converge(&ctx.stack, &converge, ctx.observer)
        .await?;
    if let Ok(mut baseline) = ctx.converged.lock() {
        *baseline = report
            .services
            .iter()
            .map(|s| (s.name.clone(), s.failed_tasks))
            .collect();
    }
    let services: Vec<String> = report
        .services
        .iter()
        .map(|s| format!("{} {}/{}", s.name, s.running, s.desired))
        .collect();
    Ok((
        format!(
            "{} converged in {} ({})",
            rev.version.as_deref().unwrap_or("the change"),
            seatrial_engine::fmt_duration(report.elapsed),
            services.join(", ")
        ),
        Vec::new(),
    ))
}

/// Nothing may have failed since the stack converged. Services with a healthcheck count as
/// converged once healthy (no waiting window), so this check, after serving and after the tests,
/// is what catches an app that crashes after its first healthy moment.
async fn still_up(ctx: &Ctx<'_>) -> Result<(), StageError> {
    let baseline = ctx.converged.lock().map(|b| b.clone()).unwrap_or_default();
    for s in ctx.engine.ps(&ctx.stack).await? {
        let before = baseline.get(&s.name).copied().unwrap_or(0);
        if s.converged && s.failed_tasks <= before {
            continue;
        }
        return Err(StageError::Fail(format!(
            "service `{}` did not stay up after it converged: {}/{} running, {} task(s) failed since{}; see `docker service ps --no-trunc {}` and `docker service logs {}`",
            s.name,
            s.running,
            s.desired,
            s.failed_tasks.saturating_sub(before),
            s.last_error
                .as_deref()
                .map(|e| format!("; last task error: {e}"))
                .unwrap_or_default(),
            s.name,
            s.name,
        )));
    }
    Ok(())
}

/// The deployed services must carry the change's commit label: the upgrade really happened.
async fn verify_moved(ctx: &Ctx<'_>, change: &Revision) -> Result<(), StageError> {
    let Some(commit) = &change.commit else {
        return Ok(());
    };
    for status in ctx.engine.ps(&ctx.stack).await? {
        let deployed = ctx.engine.service_labels(&status.name).await?;
        if deployed.get(labels::COMMIT) != Some(commit) {
            return Err(StageError::Fail(format!(
                "service `{}` carries {}={:?}, not the change's commit {commit}",
                status.name,
                labels::COMMIT,
                deployed.get(labels::COMMIT)
            )));
        }
    }
    Ok(())
}

/// The port users reach a service on: traefik's loadbalancer port, else the container side of
/// its first published port, else the first port its image exposes.
async fn service_port(
    ctx: &Ctx<'_>,
    status: &seatrial_engine::ServiceStatus,
) -> Result<(Option<u16>, bool), StageError> {
    let deployed = ctx.engine.service_labels(&status.name).await?;
    let traefik = deployed.iter().find_map(|(k, v)| {
        (k.starts_with("traefik.http.services.") && k.ends_with(".loadbalancer.server.port"))
            .then(|| v.parse::<u16>().ok())
            .flatten()
    });
    if let Some(port) = traefik {
        return Ok((Some(port), true));
    }
    // `8080->80/tcp (host)` or `80/tcp`: the container side is what the gateway reaches.
    let published = status.ports.first().and_then(|p| {
        let container_side = p.split("->").last()?;
        container_side.split('/').next()?.parse::<u16>().ok()
    });
    let port = match published {
        Some(p) => Some(p),
        None => ctx
            .engine
            .image_ports(&status.image)
            .await?
            .first()
            .copied(),
    };
    Ok((port, false))
}

/// One service the serve stage probes, with what its probe asks.
struct Target {
    service: String,
    port: Option<u16>,
    spec: ProbeSpec,
    command: Option<Vec<String>>,
}

/// The services to probe and their ports: those the settings choose (`probe.services`, or the
/// `[probe.service.*]` tables), else the traefik-routed service, else each with a published or
/// exposed port.
async fn probe_targets(ctx: &Ctx<'_>, s: &Settings) -> Result<Vec<Target>, StageError> {
    let services = ctx.engine.ps(&ctx.stack).await?;
    let prefix = format!("{}_", ctx.stack);
    let target = |status: &seatrial_engine::ServiceStatus, found: Option<u16>| {
        let short = status.name.strip_prefix(&prefix).unwrap_or(&status.name);
        let (spec, port, command) = s.probe_for(short);
        Target {
            service: status.name.clone(),
            port: port.or(found),
            spec,
            command,
        }
    };
    if let Some(names) = s.chosen_services() {
        let mut out = Vec::new();
        for name in names {
            let full = format!("{prefix}{name}");
            let status = services.iter().find(|x| x.name == full).ok_or_else(|| {
                StageError::Error(
                    format!(
                        "probe service `{name}` is not a service of the recipe (services: {})",
                        services
                            .iter()
                            .map(|x| x.name.strip_prefix(&prefix).unwrap_or(&x.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    ErrorKind::BadInput,
                )
            })?;
            let found = if s.probe_for(&name).1.is_some() {
                None
            } else {
                service_port(ctx, status).await?.0
            };
            out.push(target(status, found));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for status in &services {
        let (port, routed) = service_port(ctx, status).await?;
        if routed {
            // The proxy-routed service is what users reach: probe it alone.
            return Ok(vec![target(status, port)]);
        }
        let t = target(status, port);
        if t.port.is_some() || s.strategy == Strategy::Exec {
            out.push(t);
        }
    }
    Ok(out)
}

/// Probes the app as users would reach it, with the configured strategy.
async fn serve(
    ctx: &Ctx<'_>,
    s: &Settings,
    probe_url: &mut Option<String>,
) -> Result<(String, Vec<recipe_tests::TestResult>), StageError> {
    let spec = &s.probe;
    // The latest serve stage decides the URL tests get: an upgrade may move the task.
    *probe_url = None;
    if s.strategy == Strategy::Url {
        let base = s.url.as_deref().unwrap_or_default();
        let shown = format!("GET {}{}", base.trim_end_matches('/'), spec.path);
        return match probe::until_ok_via(base, &ctx.domain, spec, s.insecure).await {
            Ok(answer) => {
                still_up(ctx).await?;
                *probe_url = Some(base.trim_end_matches('/').to_owned());
                Ok((
                    format!("{shown} (Host: {}) → {}", ctx.domain, answer.status),
                    Vec::new(),
                ))
            }
            Err(why) => Err(StageError::Fail(format!(
                "{shown} (Host: {}) did not succeed within {}: {why} (a proxy's fallback page or 404 counts as failure)",
                ctx.domain,
                seatrial_engine::fmt_duration(spec.deadline)
            ))),
        };
    }
    let targets = probe_targets(ctx, s).await?;
    if targets.is_empty() {
        return Err(StageError::Fail(
            "nothing to probe: no service has traefik router labels, a published port or an exposed port (set probe.services and probe.port in tests/seatrial.toml)".into(),
        ));
    }
    let addresses = ctx.engine.task_addresses(&ctx.stack).await?;
    let mut lines = Vec::new();
    for Target {
        service,
        port,
        spec,
        command,
    } in &targets
    {
        let Some(addr) = addresses.iter().find(|a| &a.service == service) else {
            return Err(StageError::Fail(format!(
                "service `{service}` has no running task reachable through docker_gwbridge"
            )));
        };
        if s.strategy == Strategy::Exec {
            let command = command.clone().unwrap_or_default();
            let outcome = exec_until_ok(ctx, &addr.container, &command, spec.deadline).await?;
            match outcome {
                Ok(output) => lines.push(format!(
                    "{command:?} in {service} → exit 0{}",
                    output
                        .lines()
                        .next()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                )),
                Err(why) => {
                    return Err(StageError::Fail(format!(
                        "{command:?} in `{service}` did not succeed within {}: {why}",
                        seatrial_engine::fmt_duration(spec.deadline)
                    )));
                }
            }
            if let Some(port) = port {
                probe_url.get_or_insert(format!("http://{}:{port}", addr.ip));
            }
            continue;
        }
        let Some(port) = port else {
            return Err(StageError::Fail(format!(
                "service `{service}` has no port to probe (set probe.port or probe.service.<name>.port in tests/seatrial.toml)"
            )));
        };
        let url = format!("http://{}:{port}", addr.ip);
        match probe::until_ok(&addr.ip.to_string(), *port, &ctx.domain, spec).await {
            Ok(answer) => {
                lines.push(format!(
                    "GET {url}{} (Host: {}) → {} ({service})",
                    spec.path, ctx.domain, answer.status
                ));
                probe_url.get_or_insert(url);
            }
            Err(why) => {
                return Err(StageError::Fail(format!(
                    "GET {url}{} (Host: {}) for service `{service}` did not succeed within {}: {why}",
                    spec.path,
                    ctx.domain,
                    seatrial_engine::fmt_duration(spec.deadline)
                )));
            }
        }
    }
    still_up(ctx).await?;
    Ok((lines.join("; "), Vec::new()))
}

/// Runs `command` in `container` until it exits 0 or `deadline` passes (backing off).
async fn exec_until_ok(
    ctx: &Ctx<'_>,
    container: &str,
    command: &[String],
    deadline: Duration,
) -> Result<Result<String, String>, StageError> {
    let until = tokio::time::Instant::now() + deadline;
    let mut wait = Duration::from_millis(100);
    loop {
        let (code, output) = ctx.engine.exec(container, command).await?;
        if code == 0 {
            return Ok(Ok(output));
        }
        let why = format!("exit {code}: {}", output.trim());
        if tokio::time::Instant::now() + wait > until {
            return Ok(Err(why));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Always runs (also after failure or cancellation, with its own token), unless `keep`.
async fn teardown(ctx: &Ctx<'_>, report: &mut TrialReport, deployed: bool) {
    if ctx.config.keep {
        let why = format!(
            "--keep: the app is left up; remove it with `seatrial app undeploy {} --volumes`",
            ctx.stack
        );
        skip(report, ctx.observer, "teardown", &why);
        return;
    }
    if !deployed {
        skip(report, ctx.observer, "teardown", "nothing was deployed");
        return;
    }
    let options = UndeployOptions {
        remove_data: true,
        // An interrupted deploy's last request may still be creating something.
        settle: report.interrupted,
        ..UndeployOptions::default()
    };
    let fresh = CancellationToken::new();
    record(report, &fresh, ctx.observer, "teardown", "removing the app and waiting until it is gone", Box::pin(async {
        match ctx.engine.undeploy(&ctx.stack, &options, ctx.observer).await {
            Ok(r) => Ok((
                format!(
                    "removed {} service(s), {} network(s), {} volume(s), {} secret(s), {} config(s); all gone after {}",
                    r.removed_services.len(),
                    r.removed_networks.len(),
                    r.removed_volumes.len(),
                    r.removed_secrets.len(),
                    r.removed_configs.len(),
                    seatrial_engine::fmt_duration(r.elapsed)
                ),
                Vec::new(),
            )),
            Err(EngineError::StackNotFound { .. }) => Ok(("nothing was left to remove".to_owned(), Vec::new())),
            Err(e) => Err(StageError::Error(e.to_string(), ErrorKind::Infrastructure)),
        }
    }))
    .await;
}

/// Sets a cancel flag when dropped: a stage body dropped by cancellation stops the git
/// commands it started on a blocking thread.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// [`checkouts`] on a blocking thread: git (a clone from a server that never answers) never
/// holds a runtime thread, and cancelling the trial kills it.
async fn checkouts_off_runtime(
    config: &TrialConfig,
) -> Result<(Revision, Option<Revision>), StageError> {
    let flag = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = CancelOnDrop(flag.clone());
    let stop = git::Stop {
        timeout: git::GIT_TIMEOUT,
        cancel: Some(flag),
    };
    let config = config.clone();
    tokio::task::spawn_blocking(move || checkouts(&config, &stop))
        .await
        .map_err(|e| {
            StageError::Error(
                format!("the checkout task failed: {e}"),
                ErrorKind::Infrastructure,
            )
        })?
        .map_err(|e| StageError::Error(e, ErrorKind::BadInput))
}

/// The change (at the ref, or the directory as it is) and the release before it, if any.
fn checkouts(
    config: &TrialConfig,
    stop: &git::Stop,
) -> Result<(Revision, Option<Revision>), String> {
    let path = Path::new(&config.recipe);
    let change = match &config.reference {
        None if path.is_dir() => {
            let (commit, dirty) = if git::is_repo(path) {
                let (c, d) = git::head(path).map_err(|e| e.to_string())?;
                (Some(c), d)
            } else {
                (None, false)
            };
            let version = match (&commit, dirty) {
                (Some(c), false) if git::is_toplevel(path) => git::versions(path)
                    .ok()
                    .and_then(|v| v.at(c).map(|r| r.tag.clone())),
                _ => None,
            };
            Revision {
                dir: path.to_owned(),
                commit,
                version,
                _checkout: None,
            }
        }
        None => {
            return Err(format!(
                "recipe `{}` is not a directory; give a directory, or a repository with --ref",
                config.recipe
            ));
        }
        Some(reference) => {
            let c = git::checkout_with(
                &config.recipe,
                reference,
                &config.data_dir.join("checkouts"),
                stop,
            )
            .map_err(|e| e.to_string())?;
            let version = git::versions(&c.dir)
                .ok()
                .and_then(|v| v.at(&c.commit).map(|r| r.tag.clone()));
            let dir = match &config.subdir {
                Some(sub) => {
                    let dir = c.dir.join(sub);
                    if !dir.is_dir() {
                        return Err(format!(
                            "the recipe path {} does not exist in {} at {reference}",
                            sub.display(),
                            config.recipe
                        ));
                    }
                    dir
                }
                None => c.dir.clone(),
            };
            Revision {
                dir,
                commit: Some(c.commit.clone()),
                version,
                _checkout: Some(c),
            }
        }
    };
    // Releases are the recipe repository's tags: a recipe in a subdirectory has none.
    if !git::is_toplevel(&change.dir) {
        return Ok((change, None));
    }
    let Some(commit) = change.commit.clone() else {
        return Ok((change, None));
    };
    let versions = git::versions(&change.dir).map_err(|e| e.to_string())?;
    let Some(previous) = versions.previous_for(&commit).cloned() else {
        return Ok((change, None));
    };
    if previous.commit == commit {
        return Ok((change, None));
    }
    // Clone from the change's repository: it has every tag the source has.
    let source = change.dir.to_string_lossy().into_owned();
    let c = git::checkout_with(
        &source,
        &previous.tag,
        &config.data_dir.join("checkouts"),
        stop,
    )
    .map_err(|e| e.to_string())?;
    let prev = Revision {
        dir: c.dir.clone(),
        commit: Some(c.commit.clone()),
        version: Some(previous.tag.clone()),
        _checkout: Some(c),
    };
    Ok((change, Some(prev)))
}
