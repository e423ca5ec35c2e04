//! `seatrial test`: a cold trial with live progress per stage, a summary, a JSON report, and
//! teardown on failure, SIGINT or SIGTERM (a second signal aborts the teardown wait).

use std::sync::Mutex;

use seatrial_engine::{
    ConvergeProgress, ProgressObserver, SwarmEngine, UndeployRemaining, fmt_duration,
};
use seatrial_trial::settings::{Overrides, Strategy};
use seatrial_trial::warm::{self, Warm};
use seatrial_trial::{
    StageReport, StageResult, TrialConfig, TrialMode, TrialObserver, TrialResult,
};
use tokio_util::sync::CancellationToken;

use crate::cli::{Fallback, ProbeStrategy, TestArgs};
use crate::exit::{self, Failure};
use crate::progress::Reporter;

/// Draws one spinner per running stage and a line per finished stage (trials and gate runs).
pub(crate) struct StageProgress {
    current: Mutex<Option<Reporter>>,
}

impl StageProgress {
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(None),
        }
    }

    fn with<F: FnOnce(&Reporter)>(&self, f: F) {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = guard.as_ref() {
            f(r);
        }
    }
}

impl ProgressObserver for StageProgress {
    fn converge(&self, p: &ConvergeProgress) {
        self.with(|r| r.converge(p));
    }
    fn undeploy(&self, remaining: &UndeployRemaining) {
        self.with(|r| r.undeploy(remaining));
    }
}

impl TrialObserver for StageProgress {
    fn stage_started(&self, name: &'static str, what: &str) {
        eprintln!("▶ {name}: {what}");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Reporter::new(name));
    }

    fn stage_finished(&self, stage: &StageReport) {
        if let Some(r) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            r.finish();
        }
        let mark = match stage.result {
            StageResult::Pass => "✓",
            StageResult::Fail => "✗",
            StageResult::Error => "!",
            StageResult::Skipped => "-",
        };
        let first_line = stage.detail.lines().next().unwrap_or_default();
        eprintln!(
            "{mark} {} {} ({}): {first_line}",
            stage.name,
            result_word(stage.result),
            fmt_duration(std::time::Duration::from_millis(stage.duration_ms))
        );
    }
}

pub(crate) fn result_word(r: StageResult) -> &'static str {
    match r {
        StageResult::Pass => "passed",
        StageResult::Fail => "FAILED",
        StageResult::Error => "ERROR",
        StageResult::Skipped => "skipped",
    }
}

pub async fn run(args: TestArgs) -> Result<(), Failure> {
    let engine = SwarmEngine::connect().await?;
    let (run_id, mut stack) = seatrial_trial::identity(&args.recipe, args.reference.as_deref());
    let warm = Warm::new(&crate::secrets::data_dir());
    let key = warm::recipe_key(&args.recipe);
    let mut mode = TrialMode::Cold;
    if args.quick {
        match warm.load(&key) {
            Ok(Some(canonical)) => {
                mode = TrialMode::Quick;
                stack = canonical.stack;
            }
            Ok(None) if args.fallback == Some(Fallback::Cold) => {
                eprintln!(
                    "recipe `{key}` has no canonical: running a cold trial (--fallback cold)"
                );
            }
            Ok(None) => {
                return Err(Failure::new(
                    exit::BAD_INPUT,
                    warm::no_canonical_message(&key),
                ));
            }
            Err(e) => return Err(Failure::new(exit::INFRASTRUCTURE, e)),
        }
    }
    if args.promote {
        stack = warm::canonical_stack(&key, &run_id);
    }
    eprintln!(
        "trial {run_id} ({mode}{}): {} as stack `{stack}`",
        if args.promote { ", promote" } else { "" },
        args.recipe
    );
    let config = TrialConfig {
        run_id,
        stack: stack.clone(),
        recipe: args.recipe.clone(),
        reference: args.reference.clone(),
        subdir: None,
        base_domain: args.base_domain.clone(),
        overrides: Overrides {
            timeout: args.timeout,
            stable_for: args.stable_for,
            test_timeout: args.test_timeout,
            env: args.env.clone(),
            strategy: args.probe_strategy.map(|s| match s {
                ProbeStrategy::Gateway => Strategy::Gateway,
                ProbeStrategy::Url => Strategy::Url,
                ProbeStrategy::Exec => Strategy::Exec,
                ProbeStrategy::Job => Strategy::Job,
            }),
            services: (!args.probe_services.is_empty()).then(|| args.probe_services.clone()),
            port: args.probe_port,
            path: args.probe_path.clone(),
            status: args.probe_status,
            body: args.probe_body.clone(),
            probe_timeout: args.probe_timeout,
            url: args.probe_url.clone(),
            insecure: args.probe_insecure.then_some(true),
            probe_image: args.probe_image.clone(),
            per_service: Default::default(),
            command: match &args.probe_command {
                None => None,
                Some(c) => Some(shlex::split(c).ok_or_else(|| {
                    Failure::new(
                        exit::BAD_INPUT,
                        format!("--probe-command {c:?}: unbalanced quotes"),
                    )
                })?),
            },
        },
        keep: args.keep,
        mode,
        promote: args.promote,
        data_dir: crate::secrets::data_dir(),
        janitor_max_age: args.janitor_max_age,
        liveness: None,
        trust: if args.untrusted {
            seatrial_trial::Trust::Untrusted {
                permit: args.permit.clone(),
            }
        } else {
            seatrial_trial::Trust::Local
        },
    };
    let cancel = CancellationToken::new();
    let signals = watch_signals(cancel.clone(), stack)?;
    let observer = StageProgress::new();
    let report = seatrial_trial::run(&engine, config, &observer, cancel).await;
    signals.abort();

    print_summary(
        &report.stages,
        report.result,
        &format!("{} as stack `{}`", report.recipe, report.stack),
        report.duration_ms,
    );
    write_reports(args.json.as_deref(), args.junit.as_deref(), &report, || {
        seatrial_trial::junit::render(&report)
    })?;
    verdict(report.result, report.interrupted, report.error_kind)
}

/// The summary table after the stages, the verdict line, and the first bad stage's detail with
/// the output of its failing tests.
pub(crate) fn print_summary(
    stages: &[StageReport],
    result: TrialResult,
    what: &str,
    duration_ms: u64,
) {
    let rows: Vec<[String; 3]> = stages
        .iter()
        .map(|s| {
            [
                s.name.to_owned(),
                result_word(s.result).to_owned(),
                fmt_duration(std::time::Duration::from_millis(s.duration_ms)),
            ]
        })
        .collect();
    println!();
    crate::table::print(["STAGE", "RESULT", "TIME"], &rows, usize::MAX);
    let verdict = match result {
        TrialResult::Pass => "PASS",
        TrialResult::Fail => "FAIL",
        TrialResult::Error => "ERROR",
    };
    println!(
        "{verdict}: {what} in {}",
        fmt_duration(std::time::Duration::from_millis(duration_ms))
    );
    if let Some(bad) = stages
        .iter()
        .find(|s| matches!(s.result, StageResult::Fail | StageResult::Error))
    {
        eprintln!(
            "\n{} {}:\n{}",
            bad.name,
            result_word(bad.result),
            bad.detail
        );
        for t in bad.tests.iter().filter(|t| !t.passed) {
            eprintln!("\n--- {} ({}) ---", t.name, t.outcome);
            if !t.stdout.is_empty() {
                eprintln!("stdout:\n{}", t.stdout.trim_end());
            }
            if !t.stderr.is_empty() {
                eprintln!("stderr:\n{}", t.stderr.trim_end());
            }
        }
    }
}

/// `--json FILE` and `--junit FILE`.
pub(crate) fn write_reports(
    json: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
    report: &impl serde::Serialize,
    junit_xml: impl FnOnce() -> String,
) -> Result<(), Failure> {
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(report).map_err(|e| {
            Failure::new(
                exit::INFRASTRUCTURE,
                format!("cannot encode the report: {e}"),
            )
        })?;
        std::fs::write(path, json + "\n").map_err(|e| {
            Failure::new(
                exit::BAD_INPUT,
                format!("cannot write the report to {}: {e}", path.display()),
            )
        })?;
    }
    if let Some(path) = junit {
        std::fs::write(path, junit_xml()).map_err(|e| {
            Failure::new(
                exit::BAD_INPUT,
                format!("cannot write the JUnit report to {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

/// The exit code of a verdict: 0 pass, 1 a stage failed, 2 bad input, 3 infrastructure, 130
/// interrupted.
pub(crate) fn verdict(
    result: TrialResult,
    interrupted: bool,
    error_kind: Option<&str>,
) -> Result<(), Failure> {
    let code = match (result, interrupted, error_kind) {
        (_, true, _) => exit::INTERRUPTED,
        (TrialResult::Pass, ..) => return Ok(()),
        (TrialResult::Fail, ..) => exit::APP_FAILED,
        (TrialResult::Error, _, Some("bad-input")) => exit::BAD_INPUT,
        (TrialResult::Error, ..) => exit::INFRASTRUCTURE,
    };
    Err(Failure::new(code, String::new()))
}

/// First SIGINT/SIGTERM: cancel the running stage (teardown follows). A deliberate second one
/// (not a copy of the first delivered with it, see [`crate::signals`]): stop waiting.
fn watch_signals(
    cancel: CancellationToken,
    stack: String,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    on_interrupt(
        cancel,
        "stopping the running stage and tearing down".to_owned(),
        format!(
            "teardown abandoned: stack `{stack}` may be partly left; `seatrial app undeploy {stack} --volumes` removes it"
        ),
    )
}

/// First SIGINT/SIGTERM: says what happens (`cleaning_up`) and cancels `cancel`. A deliberate
/// second one: says what may be left (`abandoned`) and exits 130.
pub(crate) fn on_interrupt(
    cancel: CancellationToken,
    cleaning_up: String,
    abandoned: String,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let mut interrupts = crate::signals::Interrupts::install()?;
    Ok(tokio::spawn(async move {
        interrupts.first().await;
        eprintln!("\ninterrupted: {cleaning_up} (interrupt again to stop waiting)");
        cancel.cancel();
        interrupts.again().await;
        eprintln!("{abandoned}");
        std::process::exit(i32::from(exit::INTERRUPTED));
    }))
}

/// `seatrial janitor`.
pub async fn janitor(args: crate::cli::JanitorArgs) -> Result<(), Failure> {
    use seatrial_trial::janitor::{self, Action, JanitorOptions, RunRegistry};
    let engine = SwarmEngine::connect().await?;
    let registry = RunRegistry::new(&crate::secrets::data_dir());
    let options = JanitorOptions {
        max_age: args.max_age,
        dry_run: args.dry_run,
        protected: Warm::new(&crate::secrets::data_dir()).stacks(),
    };
    let decisions = janitor::run(&engine, &registry, &options).await?;
    if args.json {
        let json = serde_json::to_string_pretty(&decisions)
            .map_err(|e| Failure::new(exit::INFRASTRUCTURE, format!("cannot encode JSON: {e}")))?;
        println!("{json}");
        return janitor_verdict(&decisions);
    }
    let rows: Vec<[String; 4]> = decisions
        .iter()
        .map(|d| {
            [
                d.stack.clone(),
                match d.action {
                    Action::Removed => "removed",
                    Action::WouldRemove => "would remove",
                    Action::Kept => "kept",
                    Action::Failed => "FAILED",
                }
                .to_owned(),
                d.age_secs.map_or("?".to_owned(), |a| {
                    fmt_duration(std::time::Duration::from_secs(a))
                }),
                d.reason.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no seatrial-labelled stacks on this engine");
    } else {
        crate::table::print(["STACK", "ACTION", "AGE", "WHY"], &rows, usize::MAX);
    }
    janitor_verdict(&decisions)
}

/// Exit 3 when a stale stack could not be removed (the next pass tries again).
fn janitor_verdict(decisions: &[seatrial_trial::janitor::Decision]) -> Result<(), Failure> {
    let failed: Vec<&str> = decisions
        .iter()
        .filter(|d| d.action == seatrial_trial::janitor::Action::Failed)
        .map(|d| d.stack.as_str())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        exit::INFRASTRUCTURE,
        format!(
            "could not remove {} stale stack(s): {} (reasons above); run `seatrial janitor` again once the engine recovers",
            failed.len(),
            failed.join(", ")
        ),
    ))
}
