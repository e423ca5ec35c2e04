//! The stage runner: one stage body, timed and cancellable, recorded into the report.

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

pub(crate) fn skip(
    report: &mut TrialReport,
    observer: &dyn TrialObserver,
    name: &'static str,
    why: &str,
) {
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
