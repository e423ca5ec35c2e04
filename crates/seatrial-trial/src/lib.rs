//! seatrial-trial: the cold trial, stage by stage, written against the [`Engine`] trait.
//!
//! prepare → install (the previous release) → serve → upgrade (to the change) → tests →
//! teardown. Teardown always runs: after a failure, a stage timeout, or cancellation.

mod checkout;
mod deploy;
mod identity;
pub mod infra;
pub mod janitor;
pub mod junit;
mod prepare;
pub mod probe;
pub mod recipe_tests;
mod report;
mod serve;
pub mod settings;
pub mod stage;
mod teardown;
pub mod trust;
pub mod warm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use seatrial_engine::labels;
use seatrial_engine::{DeployMode, Engine};
use seatrial_recipe::SecretValue;
use tokio_util::sync::CancellationToken;

use crate::checkout::checkouts_off_runtime;
use crate::deploy::{deploy_and_converge, still_up, verify_moved};
use crate::prepare::prepare;
use crate::serve::serve;
use crate::stage::{StageError, record, skip};
use crate::teardown::teardown;

pub use crate::identity::{identity, new_run_id, stack_name};
pub use crate::report::{
    StageReport, StageResult, TrialMode, TrialObserver, TrialReport, TrialResult,
};
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
    /// Cold (empty volumes, everything removed at the end) or quick (the recipe's canonical:
    /// `stack` must be its stack; its known-good data is put back at the end).
    pub mode: TrialMode,
    /// Cold only: when the trial passes and the change is the recipe's latest release, keep its
    /// data as the recipe's canonical (`stack` should be a [`warm::canonical_stack`] name).
    pub promote: bool,
}

/// What every stage reads: never changed once the trial starts.
pub(crate) struct Ctx<'a> {
    pub(crate) engine: &'a dyn Engine,
    pub(crate) observer: &'a dyn TrialObserver,
    pub(crate) config: TrialConfig,
    pub(crate) run_id: String,
    pub(crate) stack: String,
    pub(crate) domain: String,
    /// Failed tasks per service when the stack last converged: anything beyond this since then
    /// means a service did not stay up.
    pub(crate) converged: std::sync::Mutex<HashMap<String, usize>>,
    /// `io.seatrial.kind` of what this trial deploys.
    pub(crate) kind: &'static str,
    /// The recipe's key for warm canonicals, and where they live.
    pub(crate) recipe_key: String,
    pub(crate) warm: warm::Warm,
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
        mode: config.mode,
        version: None,
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
    let warm_kind = config.mode == TrialMode::Quick || config.promote;
    let ctx = Ctx {
        engine,
        observer,
        recipe_key: warm::recipe_key(&config.recipe),
        warm: warm::Warm::new(&config.data_dir),
        config,
        run_id,
        stack,
        domain,
        converged: std::sync::Mutex::default(),
        kind: if warm_kind {
            warm::KIND_CANONICAL
        } else {
            "trial"
        },
    };
    let mut secrets = HashMap::new();
    let mut claimed = None;
    let deployed = lifecycle(&ctx, &mut report, &cancel, &mut secrets, &mut claimed).await;
    let promoted = ctx.config.promote && deployed && promote_stage(&ctx, &mut report).await;
    if !promoted {
        teardown(&ctx, &mut report, deployed, claimed.is_some()).await;
    }
    if let Some(claimed) = claimed.as_mut() {
        restore_stage(&ctx, &mut report, claimed).await;
    }
    let teardown_failed = report.stages.iter().any(|s| {
        matches!(s.name, "teardown" | "restore" | "promote")
            && matches!(s.result, StageResult::Fail | StageResult::Error)
    });
    if teardown_failed && let Some(guard) = guard {
        // The registration outlives this process, so the next janitor knows the run is over
        // and removes what teardown could not.
        guard.leave();
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Promotion after a passed trial (`--promote`): keeps the data as the recipe's canonical;
/// `false` when it was not done (the trial did not pass) — teardown then removes everything.
async fn promote_stage(ctx: &Ctx<'_>, report: &mut TrialReport) -> bool {
    if report.result != TrialResult::Pass || report.interrupted || ctx.config.keep {
        let why = if ctx.config.keep {
            "--keep: the app is left up, nothing promoted"
        } else {
            "the trial did not pass: nothing promoted, the canonical is unchanged"
        };
        skip(report, ctx.observer, "promote", why);
        return false;
    }
    let (Some(version), Some(commit)) = (report.version.clone(), report.commit.clone()) else {
        skip(
            report,
            ctx.observer,
            "promote",
            "the change has no release version: nothing promoted",
        );
        return false;
    };
    let promotion = warm::Promotion {
        key: &ctx.recipe_key,
        source: &ctx.config.recipe,
        stack: &ctx.stack,
        version: &version,
        commit: &commit,
    };
    // Its own token: a signal after the trial passed must not leave a half-made canonical;
    // a failed promotion removes what it made.
    let fresh = CancellationToken::new();
    record(
        report,
        &fresh,
        ctx.observer,
        "promote",
        "undeploying, snapshotting the volumes and recording the canonical",
        Box::pin(async {
            let detail = warm::promote(ctx.engine, &ctx.warm, &promotion, &fresh).await?;
            Ok((detail, Vec::new()))
        }),
    )
    .await;
    // Whatever its outcome, promotion removed what it did not keep.
    true
}

/// After a quick run: put the canonical's known-good data back, whatever the verdict.
async fn restore_stage(ctx: &Ctx<'_>, report: &mut TrialReport, claimed: &mut warm::Claimed) {
    if ctx.config.keep {
        skip(
            report,
            ctx.observer,
            "restore",
            "--keep: the canonical is left up with the change's data; the next quick run restores it first",
        );
        return;
    }
    let fresh = CancellationToken::new();
    record(
        report,
        &fresh,
        ctx.observer,
        "restore",
        "putting the known-good data back",
        Box::pin(async {
            let detail = warm::put_back(ctx.engine, &ctx.warm, claimed).await?;
            Ok((detail, Vec::new()))
        }),
    )
    .await;
}

/// The stages before teardown; returns whether anything may have been deployed. A quick run's
/// claim on the canonical is left in `claimed` (held until the restore is done).
async fn lifecycle(
    ctx: &Ctx<'_>,
    report: &mut TrialReport,
    cancel: &CancellationToken,
    secrets: &mut HashMap<String, SecretValue>,
    claimed: &mut Option<warm::Claimed>,
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
                protected: ctx.warm.stacks(),
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
            let known_good = match ctx.config.mode {
                TrialMode::Cold => None,
                TrialMode::Quick => Some(
                    ctx.warm
                        .load(&ctx.recipe_key)
                        .map_err(|e| StageError::Error(e, seatrial_engine::ErrorKind::Infrastructure))?
                        .ok_or_else(|| warm::no_canonical(&ctx.recipe_key))?,
                ),
            };
            if let Some(c) = &known_good
                && c.stack != ctx.stack
            {
                return Err(StageError::Error(
                    format!("a quick run of `{}` must run as its canonical's stack `{}`, not `{}`", ctx.recipe_key, c.stack, ctx.stack),
                    seatrial_engine::ErrorKind::BadInput,
                ));
            }
            let (change, previous) = checkouts_off_runtime(&ctx.config, known_good.as_ref()).await?;
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
            if let Some(c) = &known_good {
                let got = warm::claim(ctx.engine, &ctx.warm, &ctx.recipe_key, &c.commit, &ctx.run_id, cancel).await?;
                detail.push_str(&format!("; {}", got.detail));
                *claimed = Some(got);
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
    report.version = change.version.clone();
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
    let probe_what = if s.strategy_chosen {
        format!("probing the app ({} strategy)", s.strategy.name())
    } else {
        "probing the app".to_owned()
    };
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
