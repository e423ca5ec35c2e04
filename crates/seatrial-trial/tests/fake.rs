//! The trial's verdicts on the fake engine: each way an app can fail decides the stage and
//! detail a user reads, and teardown always leaves nothing behind. Small fixture recipes (a git
//! repository with one release and a change), a local HTTP server standing in for the app's
//! task, and scripted services — each trial runs in well under a second.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Quiet, git, serve_ok, write_recipe};
use seatrial_engine::fake::{Behaviour, FakeEngine, FakeProbeJob};
use seatrial_engine::labels::RunLabels;
use seatrial_engine::{DeployOptions, Engine, StackPlan};
use seatrial_trial::settings::{Overrides, Strategy};
use seatrial_trial::{
    StageReport, StageResult, TrialConfig, TrialMode, TrialReport, TrialResult, Trust,
};
use tokio_util::sync::CancellationToken;

/// A recipe repository: release `1.0.0+1` on image 1, then an untagged change to image 2.
fn recipe_with_release(root: &Path) -> PathBuf {
    let dir = root.join("recipe");
    std::fs::create_dir_all(&dir).expect("recipe dir");
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["config", "user.email", "maintainer@example.org"]);
    git(&dir, &["config", "user.name", "Maintainer"]);
    git(&dir, &["config", "commit.gpgsign", "false"]);
    git(&dir, &["config", "tag.gpgsign", "false"]);
    write_recipe(&dir, "1", "exit 0");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "Release 1.0.0+1"]);
    git(&dir, &["tag", "-a", "1.0.0+1", "-m", "Release 1.0.0+1"]);
    write_recipe(&dir, "2", "exit 0");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "The change"]);
    dir
}

/// A recipe directory without releases (installed as the change itself).
fn plain_recipe(root: &Path, test_script: &str) -> PathBuf {
    let dir = root.join("plain");
    write_recipe(&dir, "1", test_script);
    dir
}

fn config(recipe: &Path, data: &Path, port: u16) -> TrialConfig {
    let (run_id, stack) = seatrial_trial::identity(recipe.to_str().expect("utf8"), None);
    TrialConfig {
        recipe: recipe.to_str().expect("utf8").to_owned(),
        reference: None,
        subdir: None,
        base_domain: "test.invalid".to_owned(),
        overrides: Overrides {
            timeout: Some(Duration::from_secs(5)),
            stable_for: Some(Duration::from_millis(50)),
            test_timeout: Some(Duration::from_secs(10)),
            port: Some(port),
            probe_timeout: Some(Duration::from_secs(2)),
            ..Overrides::default()
        },
        keep: false,
        mode: TrialMode::Cold,
        promote: false,
        data_dir: data.to_owned(),
        janitor_max_age: Duration::from_secs(3600),
        liveness: None,
        run_id,
        stack,
        trust: Trust::Local,
    }
}

/// The engine the trials run on: quick to settle, so removals that wait for quiet stay short.
fn engine() -> FakeEngine {
    FakeEngine::new().with_settle(Duration::from_millis(200))
}

/// Runs a trial of the recipe `make` writes (into a fresh directory), with every service `app`
/// behaving as `app`; returns the engine to inspect after it.
async fn trial(app: Behaviour, make: impl FnOnce(&Path) -> PathBuf) -> (FakeEngine, TrialReport) {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    engine.script("app", app);
    let recipe = make(root.path());
    let port = serve_ok().await;
    let config = config(&recipe, root.path(), port);
    let report = seatrial_trial::run(&engine, config, &Quiet, CancellationToken::new()).await;
    (engine, report)
}

fn stages(report: &TrialReport) -> Vec<(&'static str, StageResult)> {
    report.stages.iter().map(|s| (s.name, s.result)).collect()
}

fn stage<'r>(report: &'r TrialReport, name: &str) -> &'r StageReport {
    report
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}: {:?}", stages(report)))
}

/// Teardown ran, passed, and nothing of the stack is left on the engine.
fn torn_down(engine: &FakeEngine, report: &TrialReport) {
    let teardown = stage(report, "teardown");
    assert_eq!(teardown.result, StageResult::Pass, "{}", teardown.detail);
    assert!(teardown.detail.contains("all gone"), "{}", teardown.detail);
    assert!(
        engine.leftovers(&report.stack).is_empty(),
        "left behind: {:?}",
        engine.leftovers(&report.stack)
    );
}

#[tokio::test]
async fn a_good_change_passes_every_stage() {
    let (engine, report) = trial(
        Behaviour::healthy_after(Duration::from_millis(30)),
        recipe_with_release,
    )
    .await;
    use StageResult::Pass;
    assert_eq!(
        stages(&report),
        [
            ("prepare", Pass),
            ("install", Pass),
            ("serve", Pass),
            ("upgrade", Pass),
            ("serve-after-upgrade", Pass),
            ("tests", Pass),
            ("teardown", Pass),
        ],
        "{report:#?}"
    );
    assert_eq!(report.result, TrialResult::Pass);
    assert_eq!(report.previous_version.as_deref(), Some("1.0.0+1"));
    assert!(stage(&report, "serve").detail.contains("→ 200"));
    assert!(
        stage(&report, "upgrade")
            .detail
            .contains("every service carries the change's commit")
    );
    assert!(stage(&report, "tests").detail.contains("1/1 passed"));
    let teardown = &stage(&report, "teardown").detail;
    assert!(teardown.contains("1 volume(s)"), "{teardown}");
    torn_down(&engine, &report);
}

#[tokio::test]
async fn a_service_that_never_gets_healthy_fails_the_install() {
    let (engine, report) = trial(
        Behaviour::never_healthy()
            .fails_every(Duration::from_millis(20))
            .logs(&["cannot open /data/db"]),
        recipe_with_release,
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail);
    assert_eq!(
        stages(&report),
        [
            ("prepare", StageResult::Pass),
            ("install", StageResult::Fail),
            ("teardown", StageResult::Pass)
        ]
    );
    let detail = &stage(&report, "install").detail;
    let service = format!("service `{}_app` failed", report.stack);
    assert!(detail.contains(&service), "{detail}");
    assert!(detail.contains("its tasks keep failing"), "{detail}");
    assert!(
        detail.contains("cannot open /data/db"),
        "the logs are shown: {detail}"
    );
    torn_down(&engine, &report);
}

#[tokio::test]
async fn an_upgrade_that_swarm_rolls_back_fails_the_upgrade() {
    let (engine, report) = trial(
        Behaviour::healthy_after(Duration::from_millis(10))
            .rolls_back_on_update()
            .fails_every(Duration::from_millis(30)),
        recipe_with_release,
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail);
    use StageResult::{Fail, Pass};
    assert_eq!(
        stages(&report),
        [
            ("prepare", Pass),
            ("install", Pass),
            ("serve", Pass),
            ("upgrade", Fail),
            ("teardown", Pass)
        ]
    );
    let detail = &stage(&report, "upgrade").detail;
    assert!(
        detail.contains("the update failed and swarm rolled it back"),
        "{detail}"
    );
    torn_down(&engine, &report);
}

#[tokio::test]
async fn a_task_failing_after_convergence_fails_the_trial() {
    // Up after 10 ms, a task dies 100 ms later — while the recipe's tests run.
    let (engine, report) = trial(
        Behaviour::healthy_after(Duration::from_millis(10))
            .fails_after_converged(Duration::from_millis(100)),
        |root| plain_recipe(root, "sleep 0.4"),
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail);
    let tests = stage(&report, "tests");
    assert_eq!(tests.result, StageResult::Fail);
    assert!(tests.detail.contains("did not stay up"), "{}", tests.detail);
    assert!(
        tests.tests.iter().all(|t| t.passed),
        "the recipe's own tests passed; the app is what failed"
    );
    assert_eq!(stage(&report, "serve").result, StageResult::Pass);
    torn_down(&engine, &report);
}

#[tokio::test]
async fn a_volume_created_as_the_teardown_starts_is_removed_too() {
    // The install fails before the agent has made the task's container (and its volume).
    let (engine, report) = trial(
        Behaviour::never_healthy()
            .fails_every(Duration::from_millis(20))
            .container_created_after(Duration::from_millis(150)),
        |root| plain_recipe(root, "exit 0"),
    )
    .await;
    assert_eq!(stage(&report, "install").result, StageResult::Fail);
    let teardown = &stage(&report, "teardown").detail;
    assert!(teardown.contains("1 volume(s)"), "{teardown}");
    torn_down(&engine, &report);
}

#[tokio::test]
async fn cancelling_mid_install_interrupts_and_still_tears_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    engine.script("app", Behaviour::healthy_after(Duration::from_secs(60)));
    let recipe = plain_recipe(root.path(), "exit 0");
    let port = serve_ok().await;
    let cancel = CancellationToken::new();
    let watcher = {
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tokio::spawn(async move {
            // Cancel once the install has deployed something.
            while engine
                .labelled_stacks()
                .await
                .map(|s| s.is_empty())
                .unwrap_or(true)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cancel.cancel();
        })
    };
    let started = std::time::Instant::now();
    let report =
        seatrial_trial::run(&engine, config(&recipe, root.path(), port), &Quiet, cancel).await;
    watcher.await.expect("watcher");
    assert!(report.interrupted);
    assert_eq!(report.result, TrialResult::Error);
    let install = stage(&report, "install");
    assert_eq!(
        (install.result, install.detail.as_str()),
        (StageResult::Error, "interrupted")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the 60 s convergence"
    );
    torn_down(&engine, &report);
}

#[tokio::test]
async fn the_exec_probe_runs_in_the_task_and_its_failure_fails_serve() {
    for (code, output, serves) in [(0, "ready", true), (7, "db not migrated", false)] {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        engine.script("app", Behaviour::default().exec_answers(code, output));
        let recipe = plain_recipe(root.path(), "exit 0");
        let mut config = config(&recipe, root.path(), 1);
        config.overrides.strategy = Some(Strategy::Exec);
        config.overrides.command = Some(vec!["check-ready".to_owned()]);
        config.overrides.probe_timeout = Some(Duration::from_millis(300));
        let report = seatrial_trial::run(&engine, config, &Quiet, CancellationToken::new()).await;
        let serve = stage(&report, "serve");
        if serves {
            assert_eq!(serve.result, StageResult::Pass, "{}", serve.detail);
            assert!(serve.detail.contains("exit 0: ready"), "{}", serve.detail);
            assert_eq!(report.result, TrialResult::Pass);
        } else {
            assert_eq!(serve.result, StageResult::Fail);
            assert!(
                serve.detail.contains("exit 7: db not migrated"),
                "{}",
                serve.detail
            );
            assert_eq!(report.result, TrialResult::Fail);
        }
        torn_down(&engine, &report);
    }
}

#[tokio::test]
async fn prepare_reaps_what_a_killed_trial_left_and_keeps_other_apps() {
    let root = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    let recipe = plain_recipe(root.path(), "exit 0");
    let compose = seatrial_recipe::load_compose(&recipe).expect("compose");
    for (stack, kind) in [("tkilled-000001", "trial"), ("someapp", "app")] {
        let plan = StackPlan {
            stack: stack.to_owned(),
            compose: compose.compose.clone(),
            base_dir: recipe.clone(),
            labels: RunLabels::new(format!("run-of-{stack}"), "plain", kind),
            env: HashMap::new(),
            secret_values: HashMap::new(),
        };
        engine
            .deploy(&plan, &DeployOptions::default())
            .await
            .expect("left behind");
    }
    let port = serve_ok().await;
    let mut config = config(&recipe, root.path(), port);
    config.janitor_max_age = Duration::ZERO;
    let report = seatrial_trial::run(&engine, config, &Quiet, CancellationToken::new()).await;
    let prepare = &stage(&report, "prepare").detail;
    assert!(
        prepare.contains("janitor removed stale trial stack(s): tkilled-000001"),
        "{prepare}"
    );
    assert!(engine.leftovers("tkilled-000001").is_empty());
    assert_eq!(
        engine.services("someapp"),
        ["someapp_app"],
        "an app that is not a trial is never reaped"
    );
    assert_eq!(report.result, TrialResult::Pass);
}

/// A plain recipe's trial on `engine`, with `edit` applied to its config.
async fn trial_on(
    engine: &FakeEngine,
    test_script: &str,
    edit: impl FnOnce(&mut TrialConfig),
) -> TrialReport {
    let root = tempfile::tempdir().expect("tempdir");
    let recipe = plain_recipe(root.path(), test_script);
    let port = serve_ok().await;
    let mut config = config(&recipe, root.path(), port);
    edit(&mut config);
    seatrial_trial::run(engine, config, &Quiet, CancellationToken::new()).await
}

#[tokio::test]
async fn on_a_cluster_the_default_probe_runs_inside_the_swarm() {
    let engine = engine();
    engine.set_nodes(2);
    engine.script_probe_job(FakeProbeJob::exited(
        0,
        "http://tasks.x_app:80/ (Host: d): 200 (try 3, after 1.2s)",
        "c2",
    ));
    // The recipe's test sees no URL: nothing the job reached is reachable from this host.
    let report = trial_on(&engine, "test -z \"$SEATRIAL_URL\"", |_| {}).await;
    assert_eq!(report.result, TrialResult::Pass, "{:#?}", report.stages);
    let serve = &stage(&report, "serve").detail;
    let url = format!("http://tasks.{}_app:", report.stack);
    assert!(
        serve.starts_with(&format!(
            "probed from inside the swarm (job on network {}_default, node c2): GET {url}",
            report.stack
        )),
        "{serve}"
    );
    assert!(
        serve.contains(&format!(
            "(Host: {}) → 200 (try 3, after 1.2s)",
            report.domain
        )),
        "{serve}"
    );
    assert!(
        serve.ends_with("[a 2-node swarm: from inside the swarm]"),
        "the detail says why seatrial chose it: {serve}"
    );
    let jobs = engine.probe_jobs();
    assert_eq!(jobs.len(), 1, "one job for the one probed service");
    let job = &jobs[0];
    assert_eq!(job.service, format!("{}_app", report.stack));
    assert_eq!(job.image, format!("seatrial:{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(job.command[..2], ["seatrial", "probe"]);
    for flag in ["--host", "--accept", "--retry-for"] {
        assert!(job.command.iter().any(|a| a == flag), "{:?}", job.command);
    }
    assert!(job.command.contains(&report.domain), "{:?}", job.command);
    assert!(
        job.command.contains(&"200-399".to_owned()),
        "{:?}",
        job.command
    );
    assert!(
        job.command.contains(&"2000ms".to_owned()),
        "the probe timeout"
    );
    assert_eq!(
        stage(&report, "tests").result,
        StageResult::Pass,
        "SEATRIAL_URL is empty with a probe job"
    );
    torn_down(&engine, &report);
}

#[tokio::test]
async fn on_a_cluster_a_configured_url_is_used_and_explicit_choices_are_honoured() {
    // A base URL configured (the reverse proxy): probed through it, no job.
    let engine = engine();
    engine.set_nodes(3);
    let proxy = serve_ok().await;
    let report = trial_on(&engine, "exit 0", |c| {
        c.overrides.url = Some(format!("http://127.0.0.1:{proxy}"));
    })
    .await;
    let serve = &stage(&report, "serve").detail;
    assert_eq!(report.result, TrialResult::Pass, "{serve}");
    assert!(
        serve.starts_with(&format!(
            "GET http://127.0.0.1:{proxy}/ (Host: {}) → 200",
            report.domain
        )),
        "{serve}"
    );
    assert!(
        serve.ends_with("[a 3-node swarm: through the reverse proxy at probe.url]"),
        "{serve}"
    );
    assert!(engine.probe_jobs().is_empty());

    // `gateway` chosen explicitly on a cluster: honoured (the fake's task is reachable).
    let engine = self::engine();
    engine.set_nodes(2);
    let report = trial_on(&engine, "exit 0", |c| {
        c.overrides.strategy = Some(Strategy::Gateway);
    })
    .await;
    let serve = &stage(&report, "serve").detail;
    assert_eq!(report.result, TrialResult::Pass, "{serve}");
    assert!(serve.starts_with("GET http://127.0.0.1:"), "{serve}");
    assert!(engine.probe_jobs().is_empty());

    // `job` chosen explicitly on a single node: honoured, with the image asked for.
    let engine = self::engine();
    let report = trial_on(&engine, "exit 0", |c| {
        c.overrides.strategy = Some(Strategy::Job);
        c.overrides.probe_image = Some("registry.example/seatrial:9".to_owned());
    })
    .await;
    let serve = &stage(&report, "serve").detail;
    assert_eq!(report.result, TrialResult::Pass, "{serve}");
    assert!(
        serve.starts_with("probed from inside the swarm (job on network") && !serve.contains(" ["),
        "no reason given for a chosen strategy: {serve}"
    );
    assert_eq!(engine.probe_jobs()[0].image, "registry.example/seatrial:9");

    // A single node without settings: the gateway, as before.
    let engine = self::engine();
    let report = trial_on(&engine, "exit 0", |_| {}).await;
    assert_eq!(report.result, TrialResult::Pass);
    assert!(
        stage(&report, "serve")
            .detail
            .starts_with("GET http://127.0.0.1:"),
        "{}",
        stage(&report, "serve").detail
    );
    assert!(engine.probe_jobs().is_empty());
}

#[tokio::test]
async fn a_failing_probe_job_fails_serve_and_one_that_cannot_run_is_infrastructure() {
    let engine = engine();
    engine.set_nodes(2);
    engine.script_probe_job(FakeProbeJob::exited(
        1,
        "http://tasks.x_app:80/ (Host: d): try 1: status 404 (expected 200-399)\nerror: http://tasks.x_app:80/ (Host: d): no healthy answer within 2s (6 tries); last: status 404 (expected 200-399)",
        "c2",
    ));
    let report = trial_on(&engine, "exit 0", |_| {}).await;
    let serve = stage(&report, "serve");
    assert_eq!(serve.result, StageResult::Fail, "{}", serve.detail);
    assert!(
        serve.detail.contains("probed from inside the swarm (job on network")
            && serve.detail.contains("node c2")
            && serve.detail.ends_with(
                "did not succeed within 2.0s: http://tasks.x_app:80/ (Host: d): no healthy answer within 2s (6 tries); last: status 404 (expected 200-399)"
            ),
        "{}",
        serve.detail
    );
    assert_eq!(report.result, TrialResult::Fail);
    torn_down(&engine, &report);

    let engine = self::engine();
    engine.set_nodes(2);
    engine.script_probe_job(FakeProbeJob::rejected(
        "No such image: seatrial:0.1.0",
        "c2",
    ));
    let report = trial_on(&engine, "exit 0", |_| {}).await;
    let serve = stage(&report, "serve");
    assert_eq!(serve.result, StageResult::Error, "{}", serve.detail);
    assert_eq!(report.error_kind, Some("infrastructure"));
    assert!(
        serve
            .detail
            .contains("did not run: task rejected: No such image: seatrial:0.1.0")
            && serve.detail.contains("must be on the manager's node")
            && serve.detail.contains("SEATRIAL_PROBE_IMAGE"),
        "says what to do: {}",
        serve.detail
    );
    torn_down(&engine, &report);
}
