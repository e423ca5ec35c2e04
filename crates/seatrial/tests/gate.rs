//! `seatrial gate` and `seatrial check migrations` as CI sees them: exit codes, the reports, and
//! a deploy token that never shows in stdout, stderr or the JSON report. The deploy API is a
//! local fake (axum on 127.0.0.1:0); the migration checks themselves are tested against a real
//! PostgreSQL in crates/seatrial-gate/tests.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

const TOKEN: &str = "cli-token-5d1e-do-not-print";

/// A deploy API that records the Authorization header of each call, and a readiness URL that
/// always answers 503.
async fn fake_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new()
        .route(
            "/deploy",
            post(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().expect("lock").push(auth.clone());
                    // Echoes the token, as careless APIs do.
                    (StatusCode::ACCEPTED, format!("queued for {auth}"))
                }
            }),
        )
        .route(
            "/ready",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "db down") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

async fn seatrial(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .current_dir(dir)
        .env("DEPLOY_TOKEN", TOKEN)
        .env("SEATRIAL_DATA_DIR", dir.join("data"))
        .output()
        .await
        .expect("run seatrial");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_deploy_that_never_gets_ready_exits_1_and_the_token_is_never_printed() {
    let (base, calls) = fake_api().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("gate.toml"),
        format!(
            "[gate]\n[[gate.checks]]\nname = \"env\"\nrun = \"env; echo token=${{DEPLOY_TOKEN:-unset}}\"\n\
             [gate.deploy]\nkind = \"hook\"\nurl = \"{base}/deploy\"\ntoken_env = \"DEPLOY_TOKEN\"\n\
             [gate.ready]\nurl = \"{base}/ready\"\ntimeout = \"2s\"\n"
        ),
    )
    .expect("write gate.toml");
    let (code, stdout, stderr) = seatrial(
        dir.path(),
        &[
            "gate",
            "--ref",
            "main",
            "--json",
            "report.json",
            "--junit",
            "report.xml",
        ],
    )
    .await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = std::fs::read_to_string(dir.path().join("report.json")).expect("json report");
    let junit = std::fs::read_to_string(dir.path().join("report.xml")).expect("junit report");
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("JSON", &report),
        ("JUnit", &junit),
    ] {
        assert!(!text.contains(TOKEN), "the token is in {what}:\n{text}");
    }
    // The check did not see the token either.
    let json: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(json["mode"], "gate");
    assert_eq!(json["result"], "fail");
    assert_eq!(json["deploy"], true);
    let stages: Vec<(&str, &str)> = json["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or(""),
                s["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("checks", "pass"),
            ("migrations", "skipped"),
            ("deploy", "pass"),
            ("ready", "fail"),
            ("rollback", "skipped")
        ]
    );
    assert!(
        json["stages"][0]["tests"][0]["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("token=unset"))
    );
    assert!(
        json["stages"][4]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no rollback_url: alert only"))
    );
    assert!(stdout.contains("FAIL: gate"), "{stdout}");
    assert!(
        junit.contains("<testcase classname=\"seatrial.gate\" name=\"ready\""),
        "{junit}"
    );
    assert_eq!(
        calls.lock().expect("lock").as_slice(),
        [format!("Bearer {TOKEN}")]
    );
}

#[tokio::test]
async fn bad_config_exits_2_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("gate.toml"),
        "[gate]\n[[gate.checks]]\nname = \"a\"\nrun = \"true\"\ncomand = \"x\"\n",
    )
    .expect("write");
    let (code, _, stderr) = seatrial(dir.path(), &["gate"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("gate.toml: `gate.checks.0.comand`: unknown key"),
        "{stderr}"
    );
    // --deploy without a [gate.deploy] table.
    std::fs::write(dir.path().join("gate.toml"), "[gate]\n").expect("write");
    let (code, _, stderr) = seatrial(dir.path(), &["gate", "--deploy"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`gate.deploy`: a deploy was asked for"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checks_alone_pass_and_a_duplicate_migration_slot_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("migrations")).expect("mkdir");
    for f in ["001_init.up.sql", "002_a.up.sql"] {
        std::fs::write(dir.path().join("migrations").join(f), "SELECT 1;").expect("write");
    }
    std::fs::write(
        dir.path().join("gate.toml"),
        "[gate]\n[[gate.checks]]\nname = \"ok\"\nrun = \"true\"\n[gate.migrations]\ndir = \"migrations\"\n",
    )
    .expect("write");
    let (code, stdout, stderr) = seatrial(dir.path(), &["gate", "--ref", "feature-x"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("PASS: gate"), "{stdout}");
    std::fs::write(dir.path().join("migrations/002_b.up.sql"), "SELECT 1;").expect("write");
    let (code, _, stderr) = seatrial(dir.path(), &["check", "migrations", "migrations"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("002_a.up.sql and 002_b.up.sql"), "{stderr}");
}
