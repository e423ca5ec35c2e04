//! Each scripted behaviour of the fake engine, as a caller of [`Engine`] sees it. Time is paused:
//! a service "healthy after 30 s" converges at once in wall time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Behaviour, FakeEngine};
use crate::labels::{COMMIT, RunLabels};
use crate::{
    ConvergeOptions, DeployMode, DeployOptions, Engine, EngineError, FailureReason, NoProgress,
    ProgressObserver, StackPlan, UndeployOptions, UndeployRemaining, VolumeSnapshots,
};

const COMPOSE: &str = r#"
services:
  app:
    image: example/app:1
    ports:
      - "8080:80"
    volumes:
      - data:/data
    secrets:
      - token
  worker:
    image: example/worker:1
    healthcheck:
      test: ["CMD", "true"]
volumes:
  data:
secrets:
  token:
    environment: TOKEN
configs:
  motd:
    content: hello
"#;

fn plan(stack: &str, commit: &str) -> StackPlan {
    let path = Path::new("compose.yml");
    let value = seatrial_recipe::load::parse_yaml(COMPOSE, path).expect("yaml");
    let (compose, _) = seatrial_recipe::load::compose_from_value(value, path).expect("compose");
    let mut labels = RunLabels::new(format!("run-{stack}"), "example", "trial");
    labels.commit = Some(commit.to_owned());
    StackPlan {
        stack: stack.to_owned(),
        compose,
        base_dir: std::env::temp_dir(),
        labels,
        env: HashMap::from([("TOKEN".to_owned(), "s3cret".to_owned())]),
        secret_values: HashMap::new(),
    }
}

fn mode(mode: DeployMode) -> DeployOptions {
    DeployOptions {
        mode,
        ..DeployOptions::default()
    }
}

fn converge_within(timeout: Duration) -> ConvergeOptions {
    ConvergeOptions {
        timeout,
        stable_for: Duration::from_secs(3),
        ..ConvergeOptions::default()
    }
}

fn failure(e: EngineError) -> crate::AppFailure {
    match e {
        EngineError::Failed(f) => *f,
        other => panic!("expected an app failure, got {other}"),
    }
}

/// Records what an undeploy saw remaining at each look.
#[derive(Default)]
struct Seen(Mutex<Vec<UndeployRemaining>>);
impl ProgressObserver for Seen {
    fn undeploy(&self, remaining: &UndeployRemaining) {
        self.0.lock().expect("lock").push(remaining.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_converges_after_its_delay_and_the_stability_window() {
    let engine = FakeEngine::new();
    engine.script("app", Behaviour::healthy_after(Duration::from_secs(30)));
    let outcome = engine
        .deploy(&plan("s1", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    assert_eq!(outcome.created_services, ["s1_app", "s1_worker"]);
    assert_eq!(outcome.created_secrets, ["s1_token"]);
    assert_eq!(outcome.created_configs, ["s1_motd"]);
    assert_eq!(outcome.created_networks, ["s1_default"]);
    let before = engine.ps("s1").await.expect("ps");
    assert_eq!((before[0].running, before[0].converged), (0, false));

    let report = engine
        .converge("s1", &converge_within(Duration::from_secs(60)), &NoProgress)
        .await
        .expect("converges");
    // `app` has no healthcheck: it counts after the window, on top of its 30 s.
    assert_eq!(report.elapsed, Duration::from_secs(33));
    let app = &report.services[0];
    assert_eq!(
        (app.name.as_str(), app.running, app.desired),
        ("s1_app", 1, 1)
    );
    assert_eq!(app.ports, ["8080->80/tcp"]);
    assert!(report.services[1].healthcheck, "worker has a healthcheck");
}

#[tokio::test(start_paused = true)]
async fn a_never_healthy_service_fails_with_its_failing_tasks() {
    let engine = FakeEngine::new();
    engine.script(
        "worker",
        Behaviour::never_healthy().logs(&["listening", "db unreachable"]),
    );
    engine
        .deploy(&plan("s2", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    let started = Instant::now();
    let e = engine
        .converge(
            "s2",
            &converge_within(Duration::from_secs(600)),
            &NoProgress,
        )
        .await
        .expect_err("never healthy");
    let f = failure(e);
    assert_eq!(f.service, "s2_worker");
    assert_eq!(f.reason, FailureReason::TasksFailing { failures: 3 });
    assert!(
        f.task_error
            .as_deref()
            .is_some_and(|t| t.contains("unhealthy"))
    );
    assert_eq!(f.health_output.as_deref(), Some("connection refused"));
    assert_eq!(f.logs, ["listening", "db unreachable"]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "the third failure decides"
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_that_never_converges_times_out() {
    let engine = FakeEngine::new();
    engine.script("app", Behaviour::healthy_after(Duration::from_secs(3600)));
    engine
        .deploy(&plan("s3", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    let e = engine
        .converge("s3", &converge_within(Duration::from_secs(60)), &NoProgress)
        .await
        .expect_err("too slow");
    let f = failure(e);
    assert_eq!(f.service, "s3_app");
    assert_eq!(
        f.reason,
        FailureReason::Timeout {
            after: Duration::from_secs(60)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_is_rolled_back_and_the_previous_spec_runs_again() {
    let engine = FakeEngine::new();
    engine.script("app", Behaviour::default().rolls_back_on_update());
    let options = converge_within(Duration::from_secs(60));
    engine
        .deploy(&plan("s4", "old"), &mode(DeployMode::Create))
        .await
        .expect("install");
    engine
        .converge("s4", &options, &NoProgress)
        .await
        .expect("the install converges");
    let outcome = engine
        .deploy(&plan("s4", "new"), &mode(DeployMode::Update))
        .await
        .expect("update");
    assert_eq!(outcome.updated_services, ["s4_app", "s4_worker"]);
    let f = failure(
        engine
            .converge("s4", &options, &NoProgress)
            .await
            .expect_err("rolled back"),
    );
    assert_eq!(
        (f.service.as_str(), f.reason),
        ("s4_app", FailureReason::RolledBack)
    );
    assert!(
        f.task_error
            .as_deref()
            .is_some_and(|t| t.contains("rolled back"))
    );
    let app = &engine.ps("s4").await.expect("ps")[0];
    assert_eq!(app.update_state.as_deref(), Some("rollback_completed"));
    let labels = engine.service_labels("s4_app").await.expect("labels");
    assert_eq!(labels.get(COMMIT).map(String::as_str), Some("old"));
    let worker = engine.service_labels("s4_worker").await.expect("labels");
    assert_eq!(worker.get(COMMIT).map(String::as_str), Some("new"));
}

#[tokio::test(start_paused = true)]
async fn a_task_failing_after_convergence_shows_in_ps() {
    let engine = FakeEngine::new();
    let (up, after) = (Duration::from_secs(2), Duration::from_secs(10));
    engine.script(
        "app",
        Behaviour::healthy_after(up).fails_after_converged(after),
    );
    let deployed = Instant::now();
    engine
        .deploy(&plan("s5", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    let report = engine
        .converge("s5", &converge_within(Duration::from_secs(60)), &NoProgress)
        .await
        .expect("converges first");
    assert_eq!(report.services[0].failed_tasks, 0);
    tokio::time::sleep_until(deployed + up + after).await;
    let app = &engine.ps("s5").await.expect("ps")[0];
    assert_eq!(
        (app.running, app.failed_tasks, app.converged),
        (0, 1, false)
    );
    assert!(app.last_error.is_some());
    tokio::time::sleep(up).await;
    let app = &engine.ps("s5").await.expect("ps")[0];
    assert_eq!(
        (app.running, app.failed_tasks),
        (1, 1),
        "replaced, failure kept"
    );
}

#[tokio::test(start_paused = true)]
async fn deploy_modes_refuse_a_taken_or_missing_stack() {
    let engine = FakeEngine::new();
    let e = engine
        .deploy(&plan("s6", "a"), &mode(DeployMode::Update))
        .await
        .expect_err("nothing to update");
    assert!(matches!(e, EngineError::StackNotFound { .. }), "{e}");
    engine
        .deploy(&plan("s6", "a"), &mode(DeployMode::Create))
        .await
        .expect("create");
    let e = engine
        .deploy(&plan("s6", "a"), &mode(DeployMode::Create))
        .await
        .expect_err("taken");
    assert!(matches!(e, EngineError::StackTaken { .. }), "{e}");
    let mut bad = plan("s6", "a");
    bad.stack = "no spaces allowed".to_owned();
    let e = engine
        .deploy(&bad, &mode(DeployMode::Create))
        .await
        .expect_err("invalid");
    assert!(matches!(e, EngineError::Invalid { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_removal_is_waited_for_and_everything_goes() {
    let engine = FakeEngine::new();
    engine.script(
        "app",
        Behaviour::default().slow_removal(Duration::from_secs(20)),
    );
    engine
        .deploy(&plan("s7", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    assert_eq!(engine.volume_names("s7"), ["s7_data"]);
    let seen = Seen::default();
    let options = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    let report = engine
        .undeploy("s7", &options, &seen)
        .await
        .expect("undeploy");
    assert_eq!(report.elapsed, Duration::from_secs(20));
    assert_eq!(report.removed_volumes, ["s7_data"]);
    assert_eq!(report.removed_secrets, ["s7_token"]);
    let seen = seen.0.lock().expect("lock").clone();
    assert_eq!(seen[0].services, 1, "app was still going at the first look");
    assert!(seen.last().is_some_and(UndeployRemaining::is_empty));
    assert!(engine.leftovers("s7").is_empty());
    let e = engine
        .undeploy("s7", &options, &NoProgress)
        .await
        .expect_err("gone");
    assert!(matches!(e, EngineError::StackNotFound { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_volume_made_after_the_removal_started_is_removed_too() {
    let engine = FakeEngine::new().with_settle(Duration::from_secs(2));
    engine.script(
        "app",
        Behaviour::default().container_created_after(Duration::from_secs(1)),
    );
    engine
        .deploy(&plan("s8", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    assert!(
        engine.volume_names("s8").is_empty(),
        "no container yet, so no volume yet"
    );
    let options = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    let seen = Seen::default();
    let report = engine
        .undeploy("s8", &options, &seen)
        .await
        .expect("undeploy");
    assert_eq!(report.removed_volumes, ["s8_data"]);
    let seen = seen.0.lock().expect("lock");
    assert!(
        seen[0].is_empty(),
        "the stack looked gone before its volume appeared: {seen:?}"
    );
    assert!(
        engine.leftovers("s8").is_empty(),
        "{:?}",
        engine.leftovers("s8")
    );
}

#[tokio::test(start_paused = true)]
async fn undeploy_keeping_data_leaves_volumes_secrets_and_configs() {
    let engine = FakeEngine::new();
    engine
        .deploy(&plan("s9", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    let report = engine
        .undeploy("s9", &UndeployOptions::default(), &NoProgress)
        .await
        .expect("undeploy");
    assert_eq!(report.removed_networks, ["s9_default"]);
    assert!(report.removed_volumes.is_empty());
    let left = engine.leftovers("s9");
    assert_eq!((left.volumes, left.secrets, left.configs), (1, 1, 1));
    let janitor = engine.labelled_stacks().await.expect("labelled");
    assert_eq!(janitor.len(), 1);
    assert_eq!(janitor[0].stack, "s9");
    assert_eq!(janitor[0].runs, ["run-s9"]);
    assert_eq!(janitor[0].objects, 3, "volume, secret and config are left");
}

#[tokio::test(start_paused = true)]
async fn tasks_answer_at_their_address_and_exec_as_scripted() {
    let engine = FakeEngine::new();
    engine.script(
        "app",
        Behaviour::healthy_after(Duration::from_secs(5)).exec_answers(3, "not ready"),
    );
    engine.set_image_ports("example/app:1", &[8080, 80]);
    engine.set_image_healthcheck("example/app:1", true);
    let worker_ip = std::net::IpAddr::from([10, 0, 0, 7]);
    engine.script("worker", Behaviour::default().address(worker_ip));
    engine
        .deploy(&plan("s10", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    let early = engine.task_addresses("s10").await.expect("addresses");
    assert_eq!(early.len(), 1, "only worker runs yet: {early:?}");
    assert_eq!(early[0].ip, worker_ip);
    let app = &engine.ps("s10").await.expect("ps")[0];
    assert!(app.healthcheck, "the image's HEALTHCHECK counts");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let addresses = engine.task_addresses("s10").await.expect("addresses");
    assert_eq!(addresses[0].service, "s10_app");
    assert_eq!(addresses[0].ip.to_string(), "127.0.0.1");
    let answer = engine
        .exec(&addresses[0].container, &["true".to_owned()])
        .await
        .expect("exec");
    assert_eq!(answer, (3, "not ready".to_owned()));
    assert_eq!(
        engine.image_ports("example/app:1").await.expect("ports"),
        [80, 8080]
    );
    assert!(engine.image_ports("unknown:1").await.is_err());
    assert!(engine.exec("nope", &[]).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn snapshots_are_real_directories_and_restore_byte_for_byte() {
    let engine = FakeEngine::new();
    engine
        .deploy(&plan("s11", "a"), &mode(DeployMode::Create))
        .await
        .expect("deploy");
    engine
        .write_file("s11_data", "db/rows", b"one\ntwo\n")
        .expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("known-good");
    let meta = crate::SnapshotMeta::default();
    let e = engine
        .snapshot_volumes(&["s11_data".to_owned()], &dest, "helper", &meta)
        .await
        .expect_err("in use");
    assert!(matches!(e, EngineError::VolumeInUse { .. }), "{e}");
    engine
        .undeploy("s11", &UndeployOptions::default(), &NoProgress)
        .await
        .expect("undeploy keeping data");
    let manifest = engine
        .snapshot_volumes(&["s11_data".to_owned()], &dest, "helper", &meta)
        .await
        .expect("snapshot");
    assert_eq!(crate::verify_snapshot(&dest).expect("verifies"), manifest);
    assert_eq!(
        manifest.volumes[0]
            .labels
            .get(crate::labels::STACK_NAMESPACE)
            .map(String::as_str),
        Some("s11")
    );

    engine
        .write_file("s11_data", "db/rows", b"changed")
        .expect("write");
    engine
        .write_file("s11_data", "new-file", b"x")
        .expect("write");
    let before = engine.volume("s11_data").expect("volume");
    let report = engine
        .restore_volumes(&dest, "helper")
        .await
        .expect("restore");
    assert_eq!(report.volumes, ["s11_data"]);
    let after = engine.volume("s11_data").expect("volume");
    assert_eq!(
        after.files.keys().collect::<Vec<_>>(),
        ["db/rows"],
        "files written since are gone"
    );
    assert_eq!(after.files["db/rows"], b"one\ntwo\n");
    assert_eq!(after.labels, before.labels, "labels kept");

    // A second snapshot replaces the first; a damaged one is refused before any volume changes.
    engine
        .snapshot_volumes(&["s11_data".to_owned()], &dest, "helper", &meta)
        .await
        .expect("second snapshot");
    std::fs::write(dest.join("s11_data.tar"), b"garbage").expect("damage");
    engine
        .write_file("s11_data", "db/rows", b"now")
        .expect("write");
    let e = engine
        .restore_volumes(&dest, "helper")
        .await
        .expect_err("damaged");
    assert!(matches!(e, EngineError::SnapshotInvalid { .. }), "{e}");
    assert_eq!(
        engine.volume("s11_data").expect("volume").files["db/rows"],
        b"now"
    );
}
