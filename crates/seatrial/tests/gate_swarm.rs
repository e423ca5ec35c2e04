//! `seatrial gate --deploy` with `[gate.deploy] kind = "swarm"` on the real engine: the app's
//! own repository is the recipe, deployed at the commit under test; a commit that never gets
//! healthy, or gets healthy but never ready, is rolled back to the previous commit — for a
//! stateful app with its data byte for byte.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use common::{Contents, differences, docker, free_port, git, leftovers, listing, repo_root};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An app repository gated onto a stack; the stack is undeployed (with its volumes) and the
/// scratch directory removed when dropped.
struct App {
    stack: String,
    repo: PathBuf,
    data: PathBuf,
    port: u16,
    scratch: PathBuf,
}

impl App {
    fn new(tag: &str) -> Self {
        let scratch = common::scratch(&format!("gate-swarm-{tag}"));
        let stack = format!("gsw{}{tag}", std::process::id());
        let repo = scratch.join("myapp");
        std::fs::create_dir_all(&repo).expect("repo");
        git(&repo, &["init", "-q", "-b", "main"]);
        let port = free_port();
        std::fs::write(
            repo.join("gate.toml"),
            format!(
                "[gate.deploy]\nkind = \"swarm\"\nstack = \"{stack}\"\n\n[gate.ready]\nurl = \"http://127.0.0.1:{port}/healthz\"\ntimeout = \"40s\"\n"
            ),
        )
        .expect("gate.toml");
        Self {
            stack,
            repo,
            data: scratch.join("data"),
            port,
            scratch,
        }
    }

    /// Commits `compose` (with `PORT` replaced by the app's host port) and returns the commit.
    fn commit(&self, compose: &str, message: &str) -> String {
        std::fs::write(
            self.repo.join("compose.yml"),
            compose.replace("PORT", &self.port.to_string()),
        )
        .expect("compose");
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    /// Runs the gate with --deploy in the repository; its exit code and JSON report.
    fn gate(&self) -> (i32, Value) {
        let report = self.scratch.join("gate.json");
        let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(["gate", "--deploy", "--json"])
            .arg(&report)
            .current_dir(&self.repo)
            .env("SEATRIAL_DATA_DIR", &self.data)
            .output()
            .expect("gate");
        eprintln!("gate: {}", text(&o));
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default())
                .unwrap_or_else(|e| panic!("the gate wrote no JSON report ({e}): {}", text(&o)));
        (o.status.code().unwrap_or(-1), json)
    }

    /// The version label of the running service and the image it runs.
    fn running(&self) -> (String, String) {
        let service = format!("{}_app", self.stack);
        let version = docker(&[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"io.seatrial.version\"}}",
            &service,
        ]);
        let image = docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            &service,
        ]);
        (version, image)
    }

    /// The readiness URL's status now (0: no answer).
    fn ready_status(&self) -> u16 {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{}/healthz", self.port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    fn state(&self) -> Value {
        let path = self.data.join("gate").join(&self.stack).join("state.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state")).expect("json")
    }

    /// Undeploys the stack with its volumes; what is left of it afterwards.
    fn clean_up(&self) -> String {
        let _ = Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(["app", "undeploy", &self.stack, "--volumes"])
            .env("SEATRIAL_DATA_DIR", &self.data)
            .output();
        leftovers(&self.stack)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.clean_up();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn stage(report: &Value, name: &str) -> (String, String) {
    let s = report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name}: {report:#}"));
    (
        s["result"].as_str().unwrap_or_default().to_owned(),
        s["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

fn short(commit: &str) -> String {
    commit[..12].to_owned()
}

const WEB: &str = "services:\n  app:\n    image: seatrial-fixture/web:1\n    ports: [{target: 80, published: PORT, mode: host}]\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:80/healthz\"]\n      interval: 1s\n      retries: 3\n    deploy:\n      endpoint_mode: dnsrr\n";

#[test]
fn a_good_commit_deploys_and_a_bad_one_is_rolled_back() {
    let app = App::new("a");
    let a = app.commit(WEB, "web v1");
    let (code, report) = app.gate();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(stage(&report, "deploy").0, "pass", "{report:#}");
    assert_eq!(stage(&report, "ready").0, "pass", "{report:#}");
    assert_eq!(
        app.running(),
        (short(&a), "seatrial-fixture/web:1".to_owned())
    );
    assert_eq!(app.state()["last_good"]["commit"], a.as_str());

    // Never healthy: the deploy's post-deploy gate fails, and A comes back.
    let b = app.commit(
        &WEB.replace("web:1", "unhealthy:1"),
        "switch to an image that never gets healthy",
    );
    let (code, report) = app.gate();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(stage(&report, "deploy").0, "fail", "{report:#}");
    let (result, detail) = stage(&report, "rollback");
    assert_eq!(result, "pass", "{report:#}");
    assert!(
        detail.contains(&format!("rolled back to {}", short(&a))),
        "{detail}"
    );
    assert_eq!(
        app.running(),
        (short(&a), "seatrial-fixture/web:1".to_owned())
    );
    assert_eq!(app.ready_status(), 200);
    let state = app.state();
    assert_eq!(state["last_good"]["commit"], a.as_str(), "{state:#}");
    assert!(state["pending"].is_null(), "{state:#}");
    assert!(
        state["failed"]
            .as_array()
            .is_some_and(|f| f.iter().any(|v| v == short(&b).as_str())),
        "{state:#}"
    );

    // Healthy to Swarm, but its readiness URL answers 404: the ready stage fails, A comes back.
    let healthy_not_ready = WEB.replace("web:1", "unhealthy:1").replace(
        "\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:80/healthz\"",
        "\"true\"",
    );
    app.commit(&healthy_not_ready, "healthy but not ready");
    let (code, report) = app.gate();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(stage(&report, "deploy").0, "pass", "{report:#}");
    let (result, detail) = stage(&report, "ready");
    assert_eq!(result, "fail", "{report:#}");
    assert!(detail.contains("404"), "{detail}");
    assert_eq!(stage(&report, "rollback").0, "pass", "{report:#}");
    assert_eq!(
        app.running(),
        (short(&a), "seatrial-fixture/web:1".to_owned())
    );
    assert_eq!(app.ready_status(), 200);

    assert_eq!(app.clean_up(), "", "the stack left something behind");
}

#[test]
fn a_stateful_app_is_rolled_back_with_its_data_byte_for_byte() {
    let app = App::new("s");
    let compose = std::fs::read_to_string(repo_root().join("fixtures/recipes/slowseed/compose.yml"))
        .expect("slowseed compose")
        .replace(
            "    volumes:\n      - data:/data\n",
            "    volumes:\n      - data:/data\n    ports: [{target: 80, published: PORT, mode: host}]\n",
        )
        .replace("SEED_SECONDS=${SEED_SECONDS:-20}", "SEED_SECONDS=2");
    assert!(compose.contains("published: PORT"), "{compose}");
    let a = app.commit(&compose, "slowseed");
    let (code, report) = app.gate();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(app.running().0, short(&a));
    let volume = format!("{}_data", app.stack);
    let seeded = Contents::from([(volume.clone(), listing(&volume))]);
    assert!(
        seeded[&volume].keys().any(|k| k.contains("config.ini")),
        "{seeded:?}"
    );

    // A migration that rewrites, deletes and adds files, then crashes.
    app.commit(
        &compose.replace("SEED_SECONDS=2", "SEED_SECONDS=2\n      - BREAK=1"),
        "a bad migration",
    );
    let (code, report) = app.gate();
    assert_eq!(code, 1, "{report:#}");
    let (result, detail) = stage(&report, "rollback");
    assert_eq!(result, "pass", "{report:#}");
    assert!(detail.contains("restored from the snapshot"), "{detail}");
    assert_eq!(app.running().0, short(&a));
    assert_eq!(app.ready_status(), 200);
    let after = Contents::from([(volume.clone(), listing(&volume))]);
    let diff = differences(&seeded, &after);
    assert!(diff.is_empty(), "the data changed:\n{}", diff.join("\n"));

    assert_eq!(app.clean_up(), "", "the stack left something behind");
}
