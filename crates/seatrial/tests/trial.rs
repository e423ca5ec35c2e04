//! `seatrial test` against the real engine: the verdicts users act on, the JSON report, and
//! that nothing seatrial-labelled is left behind — after a pass, a failure, or a signal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-trial-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
}

/// The example recipe's repository with three releases.
fn history(name: &str) -> PathBuf {
    let dir = scratch(name);
    let o = Command::new(repo_root().join("scripts/example-history.sh"))
        .arg(&dir)
        .output()
        .expect("history");
    assert!(o.status.success(), "{}", text(&o));
    dir
}

/// Commits `edit` on top of the history as an untagged change.
fn change(repo: &Path, message: &str, edit: impl FnOnce(&Path)) {
    edit(repo);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
}

fn trial(args: &[&str], data: &Path) -> (Output, serde_json::Value) {
    let report = data.join("report.json");
    std::fs::create_dir_all(data).expect("data dir");
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .arg("test")
        .args(args)
        .arg("--json")
        .arg(&report)
        .env("SEATRIAL_DATA_DIR", data)
        .output()
        .expect("run seatrial test");
    let json = std::fs::read_to_string(&report)
        .map(|s| serde_json::from_str(&s).expect("the report is JSON"))
        .unwrap_or_else(|_| panic!("no report written: {}", text(&o)));
    (o, json)
}

fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report:#}"))
}

/// Everything on the engine labelled with the stack's namespace.
fn leftovers(stack: &str) -> String {
    let label = format!("label=com.docker.stack.namespace={stack}");
    let mut out = String::new();
    for args in [
        vec!["service", "ls", "-q", "--filter", &label],
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
        vec!["secret", "ls", "-q", "--filter", &label],
        vec!["config", "ls", "-q", "--filter", &label],
    ] {
        let o = Command::new("docker").args(&args).output().expect("docker");
        out.push_str(String::from_utf8_lossy(&o.stdout).trim());
    }
    out
}

#[test]
fn good_recipe_passes_every_stage() {
    let repo = history("good");
    let data = scratch("good-data");
    let (o, report) = trial(
        &[
            repo.to_str().expect("utf8"),
            "--ref",
            "main",
            "--env",
            "PUBLISHED_PORT=18401",
        ],
        &data,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["result"], "pass");
    assert_eq!(report["mode"], "cold");
    assert_eq!(
        report["previous_version"], "1.1.0+1",
        "upgrades from the release below the change"
    );
    for name in [
        "prepare",
        "install",
        "serve",
        "upgrade",
        "serve-after-upgrade",
        "tests",
        "teardown",
    ] {
        let s = stage(&report, name);
        assert_eq!(s["result"], "pass", "{name}: {s:#}");
        assert!(
            s["started_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{s:#}"
        );
        assert!(s["duration_ms"].as_u64().is_some(), "{s:#}");
    }
    assert!(
        stage(&report, "upgrade")["detail"]
            .as_str()
            .expect("detail")
            .contains("carries the change's commit")
    );
    let tests = stage(&report, "tests")["tests"]
        .as_array()
        .expect("tests")
        .len();
    assert_eq!(tests, 2);
    assert!(text(&o).contains("PASS"), "{}", text(&o));
    let stack = report["stack"].as_str().expect("stack");
    assert!(stack.len() <= 12, "short stack names: {stack}");
    assert_eq!(leftovers(stack), "", "nothing seatrial-labelled remains");
}

#[test]
fn new_version_failing_its_healthcheck_fails_at_upgrade_and_is_torn_down() {
    let repo = history("sick");
    change(&repo, "Break the app", |dir| {
        let compose = std::fs::read_to_string(dir.join("compose.yml")).expect("read");
        let broken = compose.replacen(
            "image: seatrial-fixture/web:2",
            "image: seatrial-fixture/unhealthy:1",
            1,
        );
        std::fs::write(dir.join("compose.yml"), broken).expect("write");
    });
    let data = scratch("sick-data");
    let (o, report) = trial(
        &[
            repo.to_str().expect("utf8"),
            "--ref",
            "main",
            "--env",
            "PUBLISHED_PORT=18402",
        ],
        &data,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(report["result"], "fail");
    assert_eq!(
        report["previous_version"], "2.0.0+2",
        "an untagged change upgrades from the latest release"
    );
    assert_eq!(stage(&report, "install")["result"], "pass");
    let upgrade = stage(&report, "upgrade");
    assert_eq!(upgrade["result"], "fail", "{upgrade:#}");
    let detail = upgrade["detail"].as_str().expect("detail");
    assert!(
        detail.contains("_app") && detail.contains("rolled it back"),
        "{detail}"
    );
    assert_eq!(stage(&report, "teardown")["result"], "pass");
    assert!(
        report["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .all(|s| s["name"] != "tests"),
        "no stage runs after a failed one but teardown"
    );
    assert_eq!(leftovers(report["stack"].as_str().expect("stack")), "");
}

#[test]
fn failing_recipe_test_fails_at_tests_with_its_output() {
    let repo = history("redtest");
    change(&repo, "A failing test", |dir| {
        let test = dir.join("tests/03-always-fails.sh");
        std::fs::write(
            &test,
            "#!/bin/sh\necho checking the frobnicator\necho 'frobnicator missing' >&2\nexit 3\n",
        )
        .expect("write");
        let status = Command::new("chmod")
            .arg("+x")
            .arg(&test)
            .status()
            .expect("chmod");
        assert!(status.success());
    });
    let data = scratch("redtest-data");
    let junit = data.join("report.xml");
    let (o, report) = trial(
        &[
            repo.to_str().expect("utf8"),
            "--ref",
            "main",
            "--junit",
            junit.to_str().expect("utf8"),
        ],
        &data,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(report["result"], "fail");
    let tests = stage(&report, "tests");
    assert_eq!(tests["result"], "fail");
    let failing = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["name"] == "03-always-fails.sh")
        .expect("the failing test is reported");
    assert_eq!(failing["passed"], false);
    assert_eq!(failing["outcome"], "exit 3");
    assert!(
        failing["stdout"]
            .as_str()
            .expect("stdout")
            .contains("checking the frobnicator")
    );
    assert!(
        failing["stderr"]
            .as_str()
            .expect("stderr")
            .contains("frobnicator missing")
    );
    assert!(
        text(&o).contains("frobnicator missing"),
        "the terminal shows the failing test's output"
    );
    assert_eq!(stage(&report, "teardown")["result"], "pass");
    assert_eq!(leftovers(report["stack"].as_str().expect("stack")), "");
}

#[test]
fn sigterm_mid_converge_tears_down_and_exits_130() {
    // A recipe that never becomes healthy keeps the trial in install's convergence wait.
    let dir = scratch("term-recipe");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/unhealthy:1\n    ports: [{target: 80, published: 18396, mode: host}]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 100\n",
    )
    .expect("write");
    let data = scratch("term-data");
    std::fs::create_dir_all(&data).expect("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args([
            "test",
            dir.to_str().expect("utf8"),
            "--timeout",
            "5m",
            "--json",
        ])
        .arg(data.join("report.json"))
        .env("SEATRIAL_DATA_DIR", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut stack = String::new();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(rest) = line.split("as stack `").nth(1) {
            stack = rest.trim_end_matches('`').to_owned();
        }
        let waiting = line.contains("waiting for web");
        seen.push(line);
        if waiting {
            break;
        }
    }
    assert!(!stack.is_empty(), "{seen:?}");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{seen:?}\n{rest:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["interrupted"], true);
    assert_eq!(stage(&report, "install")["detail"], "interrupted");
    assert_eq!(stage(&report, "teardown")["result"], "pass", "{report:#}");
    assert_eq!(
        leftovers(&stack),
        "",
        "SIGTERM mid-converge leaves nothing behind"
    );
}

/// Starts a trial of a never-healthy recipe and returns it once it waits for convergence.
fn trial_stuck_in_install(name: &str, data: &Path, port: u16) -> (std::process::Child, String) {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        format!("services:\n  web:\n    image: seatrial-fixture/unhealthy:1\n    ports: [{{target: 80, published: {port}, mode: host}}]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 100\n"),
    )
    .expect("write");
    std::fs::create_dir_all(data).expect("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["test", dir.to_str().expect("utf8"), "--timeout", "5m"])
        .env("SEATRIAL_DATA_DIR", data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut stack = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("as stack `").nth(1) {
            stack = rest.trim_end_matches('`').to_owned();
        }
        if line.contains("waiting for web") {
            break;
        }
    }
    assert!(!stack.is_empty());
    (child, stack)
}

#[test]
fn sigkilled_trial_leftovers_are_removed_by_the_next_trials_janitor() {
    let data = scratch("kill-data");
    let (mut child, stack) = trial_stuck_in_install("kill-recipe", &data, 18397);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_ne!(leftovers(&stack), "", "a SIGKILLed trial cannot clean up");

    let (o, report) = trial(
        &[repo_root()
            .join("examples/coop-hello")
            .to_str()
            .expect("utf8")],
        &data,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let prepare = stage(&report, "prepare")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        prepare.contains(&stack),
        "the janitor pass names what it removed: {prepare}"
    );
    assert_eq!(
        leftovers(&stack),
        "",
        "the next trial's janitor removed the killed trial's stack"
    );
    assert_eq!(leftovers(report["stack"].as_str().expect("stack")), "");
}

#[test]
fn janitor_never_touches_apps() {
    let data = scratch("janitor-app-data");
    let recipe = scratch("janitor-app-recipe");
    std::fs::create_dir_all(&recipe).expect("dir");
    std::fs::write(
        recipe.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:1\n",
    )
    .expect("write");
    let stack = format!("jan{}", std::process::id() % 100_000);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(args)
            .env("SEATRIAL_DATA_DIR", &data)
            .output()
            .expect("run")
    };
    let o = run(&[
        "app",
        "deploy",
        recipe.to_str().expect("utf8"),
        "--name",
        &stack,
        "--stable-for",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["janitor", "--max-age", "0s", "--dry-run", "--json"]);
    let undeploy = run(&["app", "undeploy", &stack, "--volumes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let decisions: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let mine = decisions
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["stack"] == stack.as_str())
        .unwrap_or_else(|| panic!("the app is listed: {decisions:#}"));
    assert_eq!(mine["action"], "kept", "{mine:#}");
    assert!(
        mine["reason"]
            .as_str()
            .expect("reason")
            .contains("not a trial"),
        "{mine:#}"
    );
    assert_eq!(undeploy.status.code(), Some(0));
}

#[test]
fn probe_strategies_and_recipe_settings() {
    // The recipe asks for the exec strategy in tests/seatrial.toml; the command line can override.
    let dir = scratch("strategies-recipe");
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:1\n    ports: [{target: 80, published: 18405, mode: host}]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("tests/seatrial.toml"),
        "[trial]\nstable_for = \"1s\"\n[probe]\nstrategy = \"exec\"\ncommand = [\"wget\", \"-q\", \"-O-\", \"http://127.0.0.1/\"]\n",
    )
    .expect("write");
    let data = scratch("strategies-data");
    let recipe = dir.to_str().expect("utf8");

    let (o, report) = trial(&[recipe], &data);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let detail = stage(&report, "serve")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        detail.contains("exit 0") && detail.contains("seatrial fixture web v1"),
        "exec from seatrial.toml: {detail}"
    );

    let (o, report) = trial(
        &[
            recipe,
            "--probe-strategy",
            "url",
            "--probe-url",
            "http://127.0.0.1:18405",
            "--probe-body",
            "web v1",
        ],
        &data,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let detail = stage(&report, "serve")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        detail.starts_with("GET http://127.0.0.1:18405/ (Host: ") && detail.ends_with("→ 200"),
        "url strategy: {detail}"
    );

    let (o, report) = trial(
        &[
            recipe,
            "--probe-path",
            "/missing",
            "--probe-strategy",
            "gateway",
            "--probe-timeout",
            "2s",
        ],
        &data,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a 404 fails the serve stage: {}",
        text(&o)
    );
    let serve = stage(&report, "serve");
    assert_eq!(serve["result"], "fail");
    assert!(
        serve["detail"]
            .as_str()
            .expect("detail")
            .contains("status 404"),
        "{serve:#}"
    );

    let (o, report) = trial(
        &[recipe, "--probe-command", "false", "--probe-timeout", "2s"],
        &data,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(stage(&report, "serve")["result"], "fail");
    assert_eq!(stage(&report, "teardown")["result"], "pass");

    std::fs::write(
        dir.join("tests/seatrial.toml"),
        "[probe]\nstrategy = \"carrier-pigeon\"\n",
    )
    .expect("write");
    let (o, report) = trial(&[recipe], &data);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a bad seatrial.toml is bad input: {}",
        text(&o)
    );
    assert!(
        stage(&report, "prepare")["detail"]
            .as_str()
            .expect("detail")
            .contains("seatrial.toml")
    );
}

#[test]
fn per_service_probe_and_an_app_that_crashes_after_turning_healthy() {
    // `web` turns healthy, then its main process dies 8 s in. It converges (its healthcheck
    // passed), serves, and must still fail: the tests stage checks that nothing failed since.
    let dir = scratch("crash-recipe");
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:1\n    command: [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; /bin/httpd -p 80 -h /www; sleep 8; exit 3\"]\n  side:\n    image: seatrial-fixture/web:2\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("tests/seatrial.toml"),
        "[probe.service.web]\npath = \"/healthz\"\nbody = \"ok\"\n",
    )
    .expect("write");
    let script = dir.join("tests/01-wait");
    std::fs::write(&script, "#!/bin/sh\nsleep 12\n").expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .expect("chmod");
    let data = scratch("crash-data");
    let (o, report) = trial(&[dir.to_str().expect("utf8")], &data);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let serve = stage(&report, "serve");
    assert_eq!(serve["result"], "pass", "{serve:#}");
    let detail = serve["detail"].as_str().expect("detail");
    assert!(
        detail.contains("/healthz (Host: ")
            && detail.contains("_web)")
            && !detail.contains("_side"),
        "only the service with a [probe.service] table is probed, at its own path: {detail}"
    );
    let tests = stage(&report, "tests");
    assert_eq!(tests["result"], "fail", "{tests:#}");
    let why = tests["detail"].as_str().expect("detail");
    assert!(
        why.contains("did not stay up") && why.contains("_web`"),
        "the crash after convergence is named: {why}"
    );
    assert_eq!(stage(&report, "teardown")["result"], "pass");
    let stack = report["stack"].as_str().expect("stack");
    assert_eq!(leftovers(stack), "", "nothing of {stack} is left");
}
