//! The gate's checks: shell commands run in order in the checkout (`sh -c`); exit 0 passes. The
//! first failing check ends the stage; each check's output is kept (capped) in the report.

use std::path::Path;

use seatrial_trial::recipe_tests::{TestResult, run_captured};
use tokio::process::Command;

use crate::config::Check;

/// Variables a check never sees: the deploy token and seatrial's own secrets. A check is the
/// app's own code, but its output goes into reports.
const HIDDEN: [&str; 5] = [
    "SEATRIAL_API_TOKEN",
    "SEATRIAL_FORGE_TOKEN",
    "SEATRIAL_WEBHOOK_SECRET",
    "SEATRIAL_DATABASE_URL",
    "SEATRIAL_GATE_DATABASE_URL",
];

/// Runs the checks until one fails; returns the detail and every check's result. Dropping the
/// future (a cancelled gate) kills the running check and everything it started.
pub async fn run(
    checks: &[Check],
    checkout: &Path,
    token_env: Option<&str>,
) -> (String, Vec<TestResult>) {
    let mut results = Vec::new();
    for check in checks {
        let mut command = Command::new("sh");
        command.arg("-c").arg(&check.run).current_dir(checkout);
        for k in HIDDEN.iter().copied().chain(token_env) {
            command.env_remove(k);
        }
        let result = run_captured(&check.name, command, check.timeout).await;
        let passed = result.passed;
        results.push(result);
        if !passed {
            break;
        }
    }
    let summary: Vec<String> = results
        .iter()
        .map(|r| format!("{} {}", r.name, r.outcome))
        .collect();
    let mut detail = format!(
        "{}/{} passed: {}",
        results.iter().filter(|r| r.passed).count(),
        checks.len(),
        summary.join(", ")
    );
    let not_run: Vec<&str> = checks[results.len()..]
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if let Some(failed) = results.iter().find(|r| !r.passed) {
        detail = format!(
            "check `{}` failed ({}); {detail}",
            failed.name, failed.outcome
        );
        if !not_run.is_empty() {
            detail.push_str(&format!("; not run: {}", not_run.join(", ")));
        }
    }
    (detail, results)
}
