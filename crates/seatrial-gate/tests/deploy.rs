//! The gate end to end against a fake deploy API (axum on 127.0.0.1:0) that records every call
//! and serves a readiness URL that turns ready, never does, or redirects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use seatrial_gate::{GateReport, GateRun, Quiet, StageResult, TrialResult};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok-3f9a-very-secret";

#[derive(Debug, Clone)]
struct Call {
    path: String,
    authorization: Option<String>,
    body: String,
}

#[derive(Debug, Clone, Copy)]
enum Ready {
    /// 503 until this long after the deploy call, then 200.
    After(Duration),
    Always(u16),
    /// 302 to a login page (which a redirect-following client would see as 200).
    Redirect,
}

#[derive(Clone)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    deployed_at: Arc<Mutex<Option<Instant>>>,
    ready: Ready,
}

async fn record(State(fake): State<Fake>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    fake.calls.lock().expect("lock").push(Call {
        path: uri.path().to_owned(),
        authorization: authorization.clone(),
        body,
    });
    if uri.path() == "/api/compose.deploy" {
        *fake.deployed_at.lock().expect("lock") = Some(Instant::now());
    }
    if uri.path() == "/api/refuse" {
        // A careless API that echoes the header it refused.
        return (
            StatusCode::UNAUTHORIZED,
            format!("bad token: {}", authorization.unwrap_or_default()),
        )
            .into_response();
    }
    (StatusCode::OK, "{\"ok\": true}").into_response()
}

async fn ready(State(fake): State<Fake>) -> Response {
    match fake.ready {
        Ready::After(d) => {
            let since = *fake.deployed_at.lock().expect("lock");
            if since.is_some_and(|t| t.elapsed() >= d) {
                (StatusCode::OK, "ready").into_response()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "database not reachable").into_response()
            }
        }
        Ready::Always(code) => StatusCode::from_u16(code).expect("status").into_response(),
        Ready::Redirect => (StatusCode::FOUND, [("location", "/login")], "").into_response(),
    }
}

async fn serve(ready_mode: Ready) -> (String, Fake) {
    let fake = Fake {
        calls: Arc::default(),
        deployed_at: Arc::default(),
        ready: ready_mode,
    };
    let app = axum::Router::new()
        .route("/api/compose.deploy", post(record))
        .route("/api/compose.rollback", post(record))
        .route("/api/refuse", post(record))
        .route("/health/ready", get(ready))
        .route("/login", get(|| async { "please log in" }))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn gate_toml(
    base: &str,
    checks: &str,
    deploy_path: &str,
    rollback: bool,
    ready_timeout: &str,
) -> String {
    let rollback = if rollback {
        format!("rollback_url = \"{base}/api/compose.rollback\"\n")
    } else {
        String::new()
    };
    format!(
        "[gate]\n{checks}\n[gate.deploy]\nkind = \"hook\"\nurl = \"{base}{deploy_path}\"\ntoken_env = \"DEPLOY_TOKEN\"\n\
         body = '{{\"composeId\": \"abc\"}}'\n{rollback}\
         [gate.ready]\nurl = \"{base}/health/ready\"\ntimeout = \"{ready_timeout}\"\n"
    )
}

async fn gate(
    toml: &str,
    checkout: &std::path::Path,
    reference: Option<&str>,
    flag: bool,
) -> GateReport {
    let config = seatrial_gate::config::parse(&checkout.join("gate.toml"), toml).expect("config");
    let deploy = seatrial_gate::deploy_wanted(&config, reference, flag);
    let deployer = seatrial_gate::prepare_deployer(&config, deploy, |k| {
        (k == "DEPLOY_TOKEN").then(|| TOKEN.to_owned())
    })
    .expect("deployer");
    seatrial_gate::run(
        GateRun {
            config: &config,
            checkout: checkout.to_owned(),
            reference: reference.map(str::to_owned),
            deploy,
            deployer: deployer.as_deref(),
        },
        &Quiet,
        CancellationToken::new(),
    )
    .await
}

fn stage<'r>(report: &'r GateReport, name: &str) -> &'r seatrial_gate::StageReport {
    report
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report:#?}"))
}

fn assert_no_token(report: &GateReport) {
    let json = serde_json::to_string(report).expect("json");
    assert!(!json.contains(TOKEN), "the token is in the report: {json}");
    assert!(!report.junit().contains(TOKEN));
}

const OK_CHECKS: &str = "[[gate.checks]]\nname = \"build\"\nrun = \"echo built\"\n";

#[tokio::test]
async fn a_failing_check_stops_everything_before_deploy() {
    let (base, fake) = serve(Ready::Always(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checks = "[[gate.checks]]\nname = \"build\"\nrun = \"echo built\"\n\
                  [[gate.checks]]\nname = \"test\"\nrun = \"echo 'test x failed' >&2; exit 3\"\n\
                  [[gate.checks]]\nname = \"lint\"\nrun = \"touch lint-ran\"\n";
    let report = gate(
        &gate_toml(&base, checks, "/api/compose.deploy", true, "10s"),
        dir.path(),
        None,
        true,
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail, "{report:#?}");
    let checks = stage(&report, "checks");
    assert_eq!(checks.result, StageResult::Fail);
    assert!(
        checks.detail.contains("check `test` failed (exit 3)")
            && checks.detail.contains("not run: lint"),
        "{}",
        checks.detail
    );
    assert_eq!(checks.tests.len(), 2);
    assert_eq!(checks.tests[0].stdout.trim(), "built");
    assert!(checks.tests[1].stderr.contains("test x failed"));
    assert!(
        !dir.path().join("lint-ran").exists(),
        "a check after the failing one ran"
    );
    for name in ["migrations", "deploy", "ready", "rollback"] {
        assert_eq!(stage(&report, name).result, StageResult::Skipped, "{name}");
    }
    assert!(
        fake.calls.lock().expect("lock").is_empty(),
        "the deploy API was called"
    );
}

#[tokio::test]
async fn a_hook_deploy_carries_the_token_and_passes_once_ready_answers_200() {
    let (base, fake) = serve(Ready::After(Duration::from_secs(3))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = gate_toml(&base, OK_CHECKS, "/api/compose.deploy", true, "30s");
    // `main` is a deploy branch by default: no --deploy needed.
    let report = gate(&toml, dir.path(), Some("refs/heads/main"), false).await;
    assert_eq!(report.result, TrialResult::Pass, "{report:#?}");
    assert!(report.deploy);
    let calls = fake.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, "/api/compose.deploy");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(calls[0].body, "{\"composeId\": \"abc\"}");
    let ready = stage(&report, "ready");
    assert_eq!(ready.result, StageResult::Pass);
    assert!(
        ready.duration_ms >= 2500,
        "ready before the app was: {}",
        ready.duration_ms
    );
    assert!(ready.detail.contains("answered 200"), "{}", ready.detail);
    assert_eq!(stage(&report, "rollback").result, StageResult::Skipped);
    assert_no_token(&report);
}

#[tokio::test]
async fn readiness_never_200_fails_within_the_timeout_and_rolls_back() {
    for (mode, want) in [
        (Ready::Always(503), "503 Service Unavailable"),
        (Ready::Redirect, "302 Found to"),
    ] {
        let (base, fake) = serve(mode).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let report = gate(
            &gate_toml(&base, OK_CHECKS, "/api/compose.deploy", true, "3s"),
            dir.path(),
            Some("feature"),
            true,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(report.result, TrialResult::Fail, "{report:#?}");
        let ready = stage(&report, "ready");
        assert_eq!(ready.result, StageResult::Fail);
        assert!(
            ready.detail.contains("did not answer 200 within 3.0s") && ready.detail.contains(want),
            "{mode:?}: {}",
            ready.detail
        );
        let rollback = stage(&report, "rollback");
        assert_eq!(rollback.result, StageResult::Pass, "{}", rollback.detail);
        let calls = fake.calls.lock().expect("lock").clone();
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/api/compose.deploy", "/api/compose.rollback"]);
        assert_eq!(
            calls[1].authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_no_token(&report);
    }
}

#[tokio::test]
async fn without_a_rollback_url_the_gate_alerts_only() {
    let (base, fake) = serve(Ready::Always(503)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let report = gate(
        &gate_toml(&base, OK_CHECKS, "/api/compose.deploy", false, "2s"),
        dir.path(),
        None,
        true,
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail);
    let rollback = stage(&report, "rollback");
    assert_eq!(rollback.result, StageResult::Skipped);
    assert!(
        rollback.detail.starts_with("no rollback_url: alert only"),
        "{}",
        rollback.detail
    );
    assert_eq!(fake.calls.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_refused_deploy_fails_without_a_rollback_and_never_shows_the_token() {
    let (base, fake) = serve(Ready::Always(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let report = gate(
        &gate_toml(&base, OK_CHECKS, "/api/refuse", true, "5s"),
        dir.path(),
        None,
        true,
    )
    .await;
    assert_eq!(report.result, TrialResult::Fail);
    let deploy = stage(&report, "deploy");
    assert_eq!(deploy.result, StageResult::Fail);
    assert!(
        deploy.detail.contains("401 Unauthorized")
            && deploy.detail.contains("bad token: Bearer ***"),
        "{}",
        deploy.detail
    );
    assert!(
        deploy.detail.contains("DEPLOY_TOKEN"),
        "says which token to check: {}",
        deploy.detail
    );
    assert_eq!(stage(&report, "ready").result, StageResult::Skipped);
    assert_eq!(stage(&report, "rollback").result, StageResult::Skipped);
    assert_eq!(
        fake.calls.lock().expect("lock").len(),
        1,
        "no rollback call after a refusal"
    );
    assert_no_token(&report);
}

#[test]
fn an_unset_token_variable_is_named_before_anything_runs() {
    let toml = gate_toml("http://127.0.0.1:9", OK_CHECKS, "/x", true, "5s");
    let config =
        seatrial_gate::config::parse(std::path::Path::new("app/gate.toml"), &toml).expect("config");
    let Err(e) = seatrial_gate::prepare_deployer(&config, true, |_| None) else {
        panic!("an unset token must be refused");
    };
    let e = e.to_string();
    assert!(
        e.starts_with("app/gate.toml: `gate.deploy.token_env`")
            && e.contains("DEPLOY_TOKEN is not set"),
        "{e}"
    );
    // Not deploying: the token is not needed.
    assert!(seatrial_gate::prepare_deployer(&config, false, |_| None).is_ok_and(|d| d.is_none()));
}

#[tokio::test]
async fn a_cancelled_gate_kills_the_running_check_and_deploys_nothing() {
    let (base, fake) = serve(Ready::Always(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The check starts a grandchild and waits for it; both must go with the cancel.
    let checks =
        "[[gate.checks]]\nname = \"slow\"\nrun = \"sleep 300 & echo $! > sleeper.pid; wait\"\n";
    let toml = gate_toml(&base, checks, "/api/compose.deploy", true, "5s");
    let config =
        seatrial_gate::config::parse(&dir.path().join("gate.toml"), &toml).expect("config");
    let deployer = seatrial_gate::prepare_deployer(&config, true, |_| Some(TOKEN.to_owned()))
        .expect("deployer");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let report = seatrial_gate::run(
        GateRun {
            config: &config,
            checkout: dir.path().to_owned(),
            reference: None,
            deploy: true,
            deployer: deployer.as_deref(),
        },
        &Quiet,
        cancel,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the cancel was not heeded"
    );
    assert!(report.interrupted, "{report:#?}");
    assert_eq!(stage(&report, "checks").detail, "interrupted");
    assert_eq!(stage(&report, "deploy").result, StageResult::Skipped);
    assert!(
        fake.calls.lock().expect("lock").is_empty(),
        "deployed after a cancel"
    );
    let pid = std::fs::read_to_string(dir.path().join("sleeper.pid")).expect("the check started");
    // Killed processes may linger as zombies for a moment; a live one would stay.
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
    });
    assert!(gone, "the check's child {pid} outlived the cancel");
}
