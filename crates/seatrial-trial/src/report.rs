//! What a trial reports: its verdict, its stages, and the observer that watches them.

use seatrial_engine::ProgressObserver;
use serde::Serialize;

use crate::recipe_tests;

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
