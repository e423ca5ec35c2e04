//! The trial report as JUnit XML, so other CIs (GitLab, Jenkins, Woodpecker, ...) display it:
//! one test suite per trial, one test case per stage, and one per recipe test.

use crate::{StageReport, StageResult, TrialReport};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Renders the report.
pub fn render(report: &TrialReport) -> String {
    render_suite(
        &Suite {
            name: &format!("seatrial {} ({} trial)", report.recipe, report.mode),
            class: &format!("seatrial.{}", report.stack),
            started_at: &report.started_at,
            duration_ms: report.duration_ms,
        },
        &report.stages,
    )
}

/// What names and times one suite of stages (a trial, a gate run).
pub struct Suite<'a> {
    /// The suite's name, e.g. `seatrial coop-hello (cold trial)`.
    pub name: &'a str,
    /// The class name of its stages' test cases; their own tests get `<class>.tests`.
    pub class: &'a str,
    pub started_at: &'a str,
    pub duration_ms: u64,
}

/// Renders one suite: a test case per stage, and one per test a stage ran.
pub fn render_suite(suite: &Suite<'_>, stages: &[StageReport]) -> String {
    let mut cases = String::new();
    let (mut failures, mut errors, mut skipped, mut count) = (0, 0, 0, 0);
    let class = esc(suite.class);
    for stage in stages {
        count += 1;
        cases.push_str(&format!(
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"{}\">\n",
            esc(stage.name),
            secs(stage.duration_ms)
        ));
        match stage.result {
            StageResult::Pass => {}
            StageResult::Fail => {
                failures += 1;
                cases.push_str(&format!(
                    "      <failure message=\"{}\">{}</failure>\n",
                    esc(stage.detail.lines().next().unwrap_or_default()),
                    esc(&stage.detail)
                ));
            }
            StageResult::Error => {
                errors += 1;
                cases.push_str(&format!(
                    "      <error message=\"{}\">{}</error>\n",
                    esc(stage.detail.lines().next().unwrap_or_default()),
                    esc(&stage.detail)
                ));
            }
            StageResult::Skipped => {
                skipped += 1;
                cases.push_str(&format!(
                    "      <skipped message=\"{}\"/>\n",
                    esc(&stage.detail)
                ));
            }
        }
        cases.push_str(&format!(
            "      <system-out>{}</system-out>\n",
            esc(&stage.detail)
        ));
        cases.push_str("    </testcase>\n");
        for t in &stage.tests {
            count += 1;
            cases.push_str(&format!(
                "    <testcase classname=\"{class}.tests\" name=\"{}\" time=\"{}\">\n",
                esc(&t.name),
                secs(t.duration_ms)
            ));
            if !t.passed {
                failures += 1;
                cases.push_str(&format!(
                    "      <failure message=\"{}\"/>\n",
                    esc(&t.outcome)
                ));
            }
            cases.push_str(&format!(
                "      <system-out>{}</system-out>\n      <system-err>{}</system-err>\n    </testcase>\n",
                esc(&t.stdout),
                esc(&t.stderr)
            ));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"seatrial\" tests=\"{count}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\">\n  <testsuite name=\"{}\" tests=\"{count}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">\n{cases}  </testsuite>\n</testsuites>\n",
        secs(suite.duration_ms),
        esc(suite.name),
        secs(suite.duration_ms),
        esc(suite.started_at)
    )
}
