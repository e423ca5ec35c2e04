//! The trial report as JUnit XML, so other CIs (GitLab, Jenkins, Woodpecker, ...) display it:
//! one test suite per trial, one test case per stage, and one per recipe test.

use crate::{StageResult, TrialReport};

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
    let mut cases = String::new();
    let (mut failures, mut errors, mut skipped, mut count) = (0, 0, 0, 0);
    let class = format!("seatrial.{}", esc(&report.stack));
    for stage in &report.stages {
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
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"seatrial\" tests=\"{count}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\">\n  <testsuite name=\"seatrial {} ({} trial)\" tests=\"{count}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">\n{cases}  </testsuite>\n</testsuites>\n",
        secs(report.duration_ms),
        esc(&report.recipe),
        report.mode,
        secs(report.duration_ms),
        esc(&report.started_at)
    )
}
