//! The stage runner: one stage body, timed and cancellable, recorded into the report; and the
//! recording itself ([`run_stage`], [`skip`]), shared with other lifecycles (the gate).

use std::time::Instant;

use seatrial_engine::labels;
use seatrial_engine::{EngineError, ErrorKind};
use tokio_util::sync::CancellationToken;

use crate::recipe_tests;
use crate::report::{StageReport, StageResult, TrialObserver, TrialReport, TrialResult};

/// An outcome of a stage body: detail on success, or why it failed.
pub(crate) enum StageError {
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

pub(crate) type Body<'f> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(String, Vec<recipe_tests::TestResult>), StageError>,
            > + Send
            + 'f,
    >,
>;

/// Runs one stage body — timed, cancellable — and records its result; `true` when it passed.
pub(crate) async fn record(
    report: &mut TrialReport,
    cancel: &CancellationToken,
    observer: &dyn TrialObserver,
    name: &'static str,
    what: &str,
    body: Body<'_>,
) -> bool {
    let outcome = async {
        match body.await {
            Ok((detail, tests)) => StageOutcome::Passed(detail, tests),
            Err(StageError::Fail(why)) => StageOutcome::Failed(why, Vec::new()),
            Err(StageError::FailAfterTests(why, tests)) => StageOutcome::Failed(why, tests),
            Err(StageError::Error(why, kind)) => StageOutcome::Errored(
                why,
                match kind {
                    ErrorKind::BadInput => "bad-input",
                    _ => "infrastructure",
                },
            ),
        }
    };
    run_stage(report, Some(cancel), observer, name, what, outcome).await == StageResult::Pass
}

/// Runs a stage: tells the observer, times the body, stops it when `cancel` (if given) fires,
/// and records how it ended (see [`conclude`]).
pub async fn run_stage(
    log: &mut dyn StageLog,
    cancel: Option<&CancellationToken>,
    observer: &dyn TrialObserver,
    name: &'static str,
    what: &str,
    body: impl std::future::Future<Output = StageOutcome>,
) -> StageResult {
    observer.stage_started(name, what);
    let started_at = labels::now_rfc3339();
    let started = Instant::now();
    let never = CancellationToken::new();
    let outcome = tokio::select! {
        o = body => o,
        _ = cancel.unwrap_or(&never).cancelled() => StageOutcome::Interrupted,
    };
    conclude(log, observer, name, started_at, started, outcome)
}

/// Where stages are recorded: a trial's report, a gate run's.
pub trait StageLog: Send {
    /// The verdict so far.
    fn verdict_mut(&mut self) -> &mut TrialResult;
    /// Who has to act on an `error` verdict: `bad-input` or `infrastructure`.
    fn error_kind_mut(&mut self) -> &mut Option<&'static str>;
    fn set_interrupted(&mut self);
    fn push_stage(&mut self, stage: StageReport);
}

impl StageLog for TrialReport {
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

/// How a stage body ended.
pub enum StageOutcome {
    Passed(String, Vec<recipe_tests::TestResult>),
    /// The change failed; the tests the stage ran stay in the report.
    Failed(String, Vec<recipe_tests::TestResult>),
    /// Not the change's fault: `bad-input` or `infrastructure`.
    Errored(String, &'static str),
    Interrupted,
}

/// Records a finished stage — a pass whose tests failed is a failure; the first bad stage
/// decides the verdict, later ones (teardown, rollback) never soften it — and tells the
/// observer. Returns the stage's result.
fn conclude(
    log: &mut dyn StageLog,
    observer: &dyn TrialObserver,
    name: &'static str,
    started_at: String,
    started: Instant,
    outcome: StageOutcome,
) -> StageResult {
    let (mut result, detail, tests) = match outcome {
        StageOutcome::Passed(detail, tests) => (StageResult::Pass, detail, tests),
        StageOutcome::Failed(why, tests) => (StageResult::Fail, why, tests),
        StageOutcome::Errored(why, kind) => {
            log.error_kind_mut().get_or_insert(kind);
            (StageResult::Error, why, Vec::new())
        }
        StageOutcome::Interrupted => {
            log.set_interrupted();
            (StageResult::Error, "interrupted".to_owned(), Vec::new())
        }
    };
    if result == StageResult::Pass && tests.iter().any(|t| !t.passed) {
        result = StageResult::Fail;
    }
    let verdict = log.verdict_mut();
    match (*verdict, result) {
        (TrialResult::Pass, StageResult::Fail) => *verdict = TrialResult::Fail,
        (TrialResult::Pass, StageResult::Error) => *verdict = TrialResult::Error,
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
    log.push_stage(stage);
    result
}

/// Records a stage that did not run, and why.
pub fn skip(log: &mut dyn StageLog, observer: &dyn TrialObserver, name: &'static str, why: &str) {
    let stage = StageReport {
        name,
        result: StageResult::Skipped,
        started_at: labels::now_rfc3339(),
        duration_ms: 0,
        detail: why.to_owned(),
        tests: Vec::new(),
    };
    observer.stage_finished(&stage);
    log.push_stage(stage);
}
