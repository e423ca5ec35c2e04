//! `seatrial reconcile` end to end on the real engine, with the slow-first-boot recipe
//! (fixtures/recipes/slowseed) in a repository whose release tags the test adds one by one:
//! install; a patch with the data kept; a second reconcile that redeploys nothing; a release
//! that rewrites the data and never becomes healthy, rolled back with the data byte-identical
//! and an alert naming it, not tried again; holds by policy and by release notes; and kill -9
//! at each step of an upgrade, finished by the next reconcile.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use common::{Contents, differences, docker, git, listing, repo_root};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tiny webhook receiver: every POST body, in order.
fn webhook_sink() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                store.lock().expect("sink").push(v);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// An infra app: a slowseed repository, its data directory, its config, the stack.
struct Infra {
    stack: String,
    repo: PathBuf,
    data: PathBuf,
    config: PathBuf,
    alerts: Arc<Mutex<Vec<Value>>>,
    scratch: PathBuf,
}

impl Infra {
    fn new(tag: &str) -> Self {
        let scratch = common::scratch(&format!("infra-{tag}"));
        let stack = format!("inf{}{tag}", std::process::id());
        let repo = scratch.join("slowseed");
        std::fs::create_dir_all(&repo).expect("repo");
        let src = repo_root().join("fixtures/recipes/slowseed");
        for entry in ["compose.yml", "tests"] {
            let o = Command::new("cp")
                .args(["-a"])
                .arg(src.join(entry))
                .arg(&repo)
                .output()
                .expect("cp");
            assert!(o.status.success(), "{}", text(&o));
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        for (k, v) in [
            ("user.email", "maintainer@example.org"),
            ("user.name", "Maintainer"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
        ] {
            git(&repo, &["config", k, v]);
        }
        let (port, alerts) = webhook_sink();
        let data = scratch.join("data");
        let config = scratch.join("seatrial.toml");
        std::fs::write(
            &config,
            format!(
                "[[infra]]\nname = \"{stack}\"\nrecipe = \"{}\"\npolicy = \"minor\"\ntimeout = \"60s\"\nenv = {{ SEED_SECONDS = \"2\" }}\nprobe = {{ timeout = \"30s\" }}\n\n[[alerts]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n",
                repo.display()
            ),
        )
        .expect("config");
        Self {
            stack,
            repo,
            data,
            config,
            alerts,
            scratch,
        }
    }

    /// Commits the recipe with `env` lines added to the app's environment and tags `version`,
    /// with release notes when given.
    fn release(&self, version: &str, env: &[&str], notes: Option<&str>) {
        let compose =
            std::fs::read_to_string(repo_root().join("fixtures/recipes/slowseed/compose.yml"))
                .expect("compose");
        let mut extra = String::new();
        for line in env {
            extra.push_str(&format!("\n      - {line}"));
        }
        let compose = compose
            .replace(
                "      - SEED_SECONDS=${SEED_SECONDS:-20}",
                &format!("      - SEED_SECONDS=${{SEED_SECONDS:-20}}{extra}"),
            )
            .replace("version=1.1.0+1", &format!("version={version}"));
        std::fs::write(self.repo.join("compose.yml"), compose).expect("compose");
        if let Some(notes) = notes {
            std::fs::create_dir_all(self.repo.join("release")).expect("release dir");
            std::fs::write(self.repo.join("release").join(version), notes).expect("notes");
        }
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("Release {version}"),
            ],
        );
        git(
            &self.repo,
            &["tag", "-a", version, "-m", &format!("Release {version}")],
        );
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seatrial"));
        c.args(["reconcile", "--config"])
            .arg(&self.config)
            .args(["--json"])
            .args(extra)
            .env("SEATRIAL_DATA_DIR", &self.data);
        c
    }

    /// Runs reconcile; returns its exit code and this app's outcome.
    fn reconcile(&self, extra: &[&str]) -> (i32, Value) {
        let o = self.command(extra).output().expect("reconcile");
        let json: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("reconcile printed no JSON ({e}): {}", text(&o)));
        let app = json["apps"][0].clone();
        assert_eq!(app["name"], self.stack.as_str(), "{json:#}");
        eprintln!("reconcile: {}", text(&o));
        (o.status.code().unwrap_or(-1), app)
    }

    /// Starts reconcile and kills it (SIGKILL) once its progress reaches `step`.
    fn reconcile_killed_at(&self, step: &str) {
        let mut child = self
            .command(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reconcile");
        let wanted = format!("{}: {step}", self.stack);
        let mut seen = Vec::new();
        let mut hit = false;
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                hit = line.starts_with(&wanted);
                seen.push(line);
                if hit {
                    break;
                }
            }
        }
        // SIGKILL: nothing of reconcile runs after this (a no-op when it ended already).
        let _ = child.kill();
        let status = child.wait().expect("reap");
        assert!(
            hit,
            "reconcile ended ({status}) before `{step}`: {}",
            seen.join("\n")
        );
    }

    fn state(&self) -> Value {
        let path = self.data.join("infra").join(&self.stack).join("state.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state")).expect("json")
    }

    fn volume(&self) -> String {
        format!("{}_data", self.stack)
    }

    fn contents(&self) -> Contents {
        Contents::from([(self.volume(), listing(&self.volume()))])
    }

    /// The version label and container id of the running app.
    fn running(&self) -> (String, String) {
        let service = format!("{}_app", self.stack);
        let version = docker(&[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"io.seatrial.version\"}}",
            &service,
        ]);
        let container = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]);
        (version, container)
    }

    fn healthy(&self) -> bool {
        let id = self.running().1;
        !id.is_empty()
            && docker(&["inspect", "--format", "{{.State.Health.Status}}", &id]) == "healthy"
    }
}

impl Drop for Infra {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(["app", "undeploy", &self.stack, "--volumes"])
            .env("SEATRIAL_DATA_DIR", &self.data)
            .output();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn assert_same(before: &Contents, after: &Contents, when: &str) {
    let diff = differences(before, after);
    assert!(
        diff.is_empty(),
        "{when}: the data changed:\n{}",
        diff.join("\n")
    );
}

#[test]
fn reconcile_installs_upgrades_rolls_back_and_holds() {
    let app = Infra::new("a");
    app.release("1.0.0+1", &[], Some("First release."));
    let (code, o) = app.reconcile(&[]);
    assert_eq!(
        (code, o["action"].as_str()),
        (0, Some("installed")),
        "{o:#}"
    );
    assert_eq!(app.running().0, "1.0.0+1");
    assert!(app.healthy());
    let seeded = app.contents();

    app.release("1.0.1+1", &["LOG_LEVEL=debug"], Some("Quieter logs."));
    let (code, o) = app.reconcile(&[]);
    assert_eq!((code, o["action"].as_str()), (0, Some("upgraded")), "{o:#}");
    assert_eq!(
        (o["from"].as_str(), o["to"].as_str()),
        (Some("1.0.0+1"), Some("1.0.1+1"))
    );
    assert_eq!(app.running().0, "1.0.1+1");
    assert_same(&seeded, &app.contents(), "after a patch");

    let container = app.running().1;
    let (code, o) = app.reconcile(&[]);
    assert_eq!((code, o["action"].as_str()), (0, Some("skipped")), "{o:#}");
    assert_eq!(
        app.running().1,
        container,
        "the same container: nothing redeployed"
    );

    // A release whose migration rewrites the data, then crashes: never healthy.
    app.release("1.0.2+1", &["BREAK=1"], Some("New data layout."));
    let (code, o) = app.reconcile(&[]);
    assert_eq!(
        (code, o["action"].as_str()),
        (1, Some("rolled-back")),
        "{o:#}"
    );
    assert!(app.healthy(), "last-good runs, healthy");
    assert_eq!(app.running().0, "1.0.1+1");
    assert_same(&seeded, &app.contents(), "after the rollback");
    let alerts = app.alerts.lock().expect("alerts").clone();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["event"], "rolled-back");
    assert_eq!(alerts[0]["to"], "1.0.2+1");
    assert_eq!(alerts[0]["app"], app.stack.as_str());
    assert_eq!(app.state()["failed"], serde_json::json!(["1.0.2+1"]));

    let (code, o) = app.reconcile(&[]);
    assert_eq!((code, o["action"].as_str()), (0, Some("skipped")), "{o:#}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not tried again"),
        "{o:#}"
    );
    assert_eq!(app.running().0, "1.0.1+1");

    app.release("2.0.0+1", &[], Some("Rewritten from scratch."));
    let (code, o) = app.reconcile(&[]);
    assert_eq!((code, o["action"].as_str()), (0, Some("held")), "{o:#}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("major step"),
        "{o:#}"
    );

    app.release(
        "1.1.0+1",
        &["GREETING=hi"],
        Some("The config format changed: a manual migration is needed before upgrading."),
    );
    let (code, o) = app.reconcile(&[]);
    assert_eq!((code, o["action"].as_str()), (0, Some("held")), "{o:#}");
    assert_eq!(o["to"], "1.1.0+1");
    let alerts = app.alerts.lock().expect("alerts").clone();
    let last = alerts.last().expect("an alert");
    assert_eq!(last["event"], "held");
    assert!(
        last["notes"]
            .as_str()
            .unwrap_or_default()
            .contains("manual migration is needed"),
        "{last:#}"
    );
    let count = alerts.len();
    let (_, o) = app.reconcile(&[]);
    assert_eq!(o["action"], "held");
    assert_eq!(
        app.alerts.lock().expect("alerts").len(),
        count,
        "the same hold alerts once"
    );
    assert_eq!(app.running().0, "1.0.1+1");
    assert_same(&seeded, &app.contents(), "after the holds");
}

#[test]
fn reconcile_killed_at_each_step_is_finished_by_the_next() {
    let app = Infra::new("k");
    app.release("1.0.0+1", &[], None);
    let (code, o) = app.reconcile(&[]);
    assert_eq!(
        (code, o["action"].as_str()),
        (0, Some("installed")),
        "{o:#}"
    );
    let seeded = app.contents();
    for (n, step) in ["undeploying", "snapshotting", "deploying", "verifying"]
        .into_iter()
        .enumerate()
    {
        let version = format!("1.0.{}+1", n + 1);
        app.release(&version, &[&format!("STEP={step}")], None);
        app.reconcile_killed_at(step);
        let pending = &app.state()["pending"];
        assert!(
            pending.is_object(),
            "killed at {step}: an upgrade under way"
        );
        if matches!(step, "deploying" | "verifying") {
            assert!(pending["snapshot"].is_string(), "{step}: {pending:#}");
        }
        let (code, o) = app.reconcile(&[]);
        assert_eq!(
            (code, o["action"].as_str()),
            (0, Some("upgraded")),
            "{step}: {o:#}"
        );
        assert_eq!(app.running().0, version, "{step}");
        assert!(app.healthy(), "{step}");
        assert_same(&seeded, &app.contents(), step);
    }
    // Killed while restoring after a broken release: the next reconcile puts last-good back
    // (and tries the release again, which rolls back again).
    app.release("1.0.9+1", &["BREAK=1"], None);
    app.reconcile_killed_at("restoring");
    let (code, o) = app.reconcile(&[]);
    assert_eq!(
        (code, o["action"].as_str()),
        (1, Some("rolled-back")),
        "{o:#}"
    );
    assert_eq!(app.running().0, "1.0.4+1");
    assert!(app.healthy());
    assert_same(&seeded, &app.contents(), "after a killed rollback");
}

#[test]
fn bad_config_is_exit_2_and_dry_run_deploys_nothing() {
    let app = Infra::new("c");
    app.release("1.0.0+1", &[], None);
    let (code, o) = app.reconcile(&["--dry-run"]);
    assert_eq!(
        (code, o["action"].as_str()),
        (0, Some("installed")),
        "{o:#}"
    );
    assert!(
        o["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("dry run"),
        "{o:#}"
    );
    assert_eq!(app.running().0, "", "nothing deployed");
    let bad = app.scratch.join("bad.toml");
    std::fs::write(
        &bad,
        "[[infra]]\nname = \"x\"\nrecipe = \"y\"\npolicy = \"huge\"\n",
    )
    .expect("bad config");
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["reconcile", "--config"])
        .arg(&bad)
        .env("SEATRIAL_DATA_DIR", &app.data)
        .output()
        .expect("reconcile");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("[[infra]] entry 1"), "{}", text(&o));
}
