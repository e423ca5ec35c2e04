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

/// How a trial treats the app's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialMode {
    /// From empty volumes; everything is removed at the end.
    #[default]
    Cold,
    /// On the recipe's warm canonical; its known-good data is put back at the end.
    Quick,
}

impl TrialMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Quick => "quick",
        }
    }
}

impl std::fmt::Display for TrialMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The report of a trial, as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    pub run_id: String,
    pub recipe: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    /// The change's release version, when the change is a release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub mode: TrialMode,
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
