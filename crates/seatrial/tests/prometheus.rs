//! deploy/prometheus/seatrial.rules.yml as Prometheus reads it: `promtool check rules` accepts
//! it, and `promtool test rules` shows each alert quiet on healthy figures and firing, with its
//! labels and text, on bad ones. promtool comes from Debian's `prometheus` package
//! (scripts/setup.sh installs it); without it this test fails rather than skips.

use std::path::{Path, PathBuf};
use std::process::Command;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it with `apt-get install --no-install-recommends prometheus` (scripts/setup.sh does)"
            )
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_rules() {
    let (ok, out) = promtool(&["check", "rules", "seatrial.rules.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
}

#[test]
fn every_alert_fires_on_bad_figures_and_only_then() {
    let (ok, out) = promtool(&["test", "rules", "seatrial.rules.test.yml"]);
    assert!(ok, "{out}");
    // Every alert of the rules file is exercised by the unit tests.
    let rules = std::fs::read_to_string(rules_dir().join("seatrial.rules.yml")).expect("rules");
    let tests =
        std::fs::read_to_string(rules_dir().join("seatrial.rules.test.yml")).expect("tests");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no promtool test sees {alert} fire"
        );
    }
}
