//! One claimed gate run (mode `gate`, queued by a push): the app's repository checked out at the
//! pushed commit, its gate config read, and the gate run by the seatrial-gate library — deploying
//! when the branch is one of `deploy_branches` — with each stage recorded like a trial's, the
//! same timeout, cancel and lease handling, and a `seatrial/gate` commit status on the commit.
//! The deploy token is read from this server's environment (`token_env`) and never stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use seatrial_gate::{GateRun, StageReport, TrialObserver, TrialResult};
use seatrial_recipe::git::{self, Checkout};
use seatrial_store::{Run, RunState};
use seatrial_trial::stage::{self, StageLog, StageOutcome};

use super::trial::{Running, conclude};
use crate::serve::forge::ForgeLink;
use crate::serve::forge::report::gate_status;
use crate::serve::state::Shared;

/// The gate config read when the enrolled repository names none.
const DEFAULT_CONFIG: &str = "gate.toml";

/// What the gate needs before its first stage: the checkout and its config, and the deployer
/// when the branch deploys.
struct Prepared {
    checkout: Checkout,
    config: seatrial_gate::GateConfig,
    deploy: bool,
    deployer: Option<Box<dyn seatrial_gate::Deployer>>,
}

/// The `checkout` stage's record (the gate's own stages follow it).
#[derive(Default)]
struct PrepareLog {
    result: Option<TrialResult>,
    error_kind: Option<&'static str>,
    interrupted: bool,
    stages: Vec<StageReport>,
}

impl StageLog for PrepareLog {
    fn verdict_mut(&mut self) -> &mut TrialResult {
        self.result.get_or_insert(TrialResult::Pass)
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

/// Sets a git stop flag when dropped: a cancelled checkout kills its git command.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Clones the run's repository at its commit (on a blocking thread that cancellation stops),
/// reads its gate config and prepares the deployer.
async fn prepare(shared: &Shared, run: &Run) -> Result<Prepared, (String, &'static str)> {
    let commit = run
        .commit_sha
        .clone()
        .or_else(|| run.reference.clone())
        .ok_or((
            "the run names no commit or branch to gate".to_owned(),
            "bad-input",
        ))?;
    let flag = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(flag.clone());
    let stop = git::Stop {
        timeout: git::GIT_TIMEOUT,
        cancel: Some(flag),
    };
    let (source, root) = (run.recipe.clone(), shared.config.data_dir.join("checkouts"));
    let checkout =
        tokio::task::spawn_blocking(move || git::checkout_with(&source, &commit, &root, &stop))
            .await
            .map_err(|e| (format!("the checkout task failed: {e}"), "infrastructure"))?
            .map_err(|e| {
                (
                    format!(
                        "cannot check out {} at {}: {e}",
                        run.recipe,
                        run.commit_sha.as_deref().unwrap_or_default()
                    ),
                    "infrastructure",
                )
            })?;
    let relative = PathBuf::from(run.recipe_path.as_deref().unwrap_or(DEFAULT_CONFIG));
    let path = checkout.dir.join(&relative);
    if !path.is_file() {
        return Err((
            format!(
                "the repository has no {} at this commit: add the gate config there, or set `gate_config` in its [[repos]] entry",
                relative.display()
            ),
            "bad-input",
        ));
    }
    let config = seatrial_gate::config::load(&path).map_err(|e| (e.to_string(), "bad-input"))?;
    let deploy = seatrial_gate::deploy_wanted(&config, run.reference.as_deref(), false);
    // The token comes from this server's environment; the deployer keeps it out of every
    // detail it writes.
    if deploy
        && matches!(
            config.deploy,
            Some(seatrial_gate::DeployConfig::Swarm { .. })
        )
    {
        return Err((
            format!(
                "{}: gate.deploy.kind = \"swarm\" is deployed by `seatrial gate --deploy` on the command line; `seatrial serve` does not run swarm deploys yet — use kind = \"hook\" here, or leave this branch out of deploy_branches",
                relative.display()
            ),
            "bad-input",
        ));
    }
    let deployer = seatrial_gate::prepare_deployer(&config, deploy, |k| std::env::var(k).ok())
        .map_err(|e| (e.to_string(), "bad-input"))?;
    Ok(Prepared {
        checkout,
        config,
        deploy,
        deployer,
    })
}

/// Runs one claimed gate run to its end, records its verdict and sets its commit status.
pub async fn run(shared: &Arc<Shared>, forge: Option<&ForgeLink>, run: Run) {
    let started = Instant::now();
    if let Some(link) = forge {
        gate_status(shared, link, &run, RunState::Running).await;
    }
    let (running, recorder) = Running::start(
        shared,
        &run,
        format!(
            "attempt {} on {}: gate of {} {} at {}",
            run.attempt,
            shared.owner,
            run.repo.as_deref().unwrap_or(&run.recipe),
            run.reference.as_deref().unwrap_or("(no branch)"),
            run.commit_sha.as_deref().unwrap_or("(no commit)"),
        ),
    );
    let cancel = running.cancel.clone();

    let mut log = PrepareLog::default();
    let mut prepared = None;
    stage::run_stage(
        &mut log,
        Some(&cancel),
        &recorder,
        "checkout",
        &format!(
            "cloning {} at {} and reading {}",
            run.recipe,
            run.commit_sha.as_deref().unwrap_or_default(),
            run.recipe_path.as_deref().unwrap_or(DEFAULT_CONFIG)
        ),
        async {
            match prepare(shared, &run).await {
                Ok(p) => {
                    let detail = format!(
                        "commit {}; {}",
                        p.checkout.commit,
                        if p.deploy {
                            "the branch is a deploy branch: checks, migrations, then deploy"
                        } else {
                            "checks and migrations only (the branch is not a deploy branch)"
                        }
                    );
                    prepared = Some(p);
                    StageOutcome::Passed(detail, Vec::new())
                }
                Err((why, kind)) => StageOutcome::Errored(why, kind),
            }
        },
    )
    .await;
    let (result, mut stages) = (log.result.unwrap_or(TrialResult::Pass), log.stages);
    let result = match prepared {
        Some(p) if result == TrialResult::Pass && !log.interrupted => {
            let report = seatrial_gate::run(
                GateRun {
                    config: &p.config,
                    checkout: p.checkout.dir.clone(),
                    reference: run.reference.clone(),
                    deploy: p.deploy,
                    deployer: p.deployer.as_deref(),
                },
                &recorder as &dyn TrialObserver,
                cancel.clone(),
            )
            .await;
            stages.extend(report.stages);
            report.result
        }
        _ => result,
    };
    let (stop, timeout) = running.end(shared, recorder).await;
    let state = conclude(
        shared, &run, &stop, result, &stages, timeout, started, "gate",
    )
    .await;
    if let (Some(link), Some(state)) = (forge, state) {
        gate_status(shared, link, &run, state).await;
    }
}
