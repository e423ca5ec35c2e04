//! Reconcile on the fake engine: install, a patch with the data kept, nothing redeployed when
//! current, a broken release rolled back with the data restored and not tried again, holds by
//! policy and by release notes (alerting once), and a reconcile killed at each step of an
//! upgrade finished by the next. The real-engine suite (crates/seatrial/tests/infra.rs)
//! proves the same on Docker.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{git, serve_ok};
use seatrial_engine::Engine;
use seatrial_engine::fake::{Behaviour, FakeEngine};
use seatrial_recipe::{SecretSlot, SecretValue};
use seatrial_trial::infra::{
    self, Action, AppOutcome, InfraApp, InfraDir, InfraHost, Level, ReconcileOptions, Step,
};
use tokio_util::sync::CancellationToken;

const COMPOSE: &str = r#"services:
  app:
    image: example/proxy:IMAGE
    ports:
      - "8080:80"
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD", "true"]
volumes:
  data:
"#;

/// Records progress lines; can stop ("kill") the reconcile when a line starts with a prefix.
#[derive(Default)]
struct Host {
    lines: Mutex<Vec<String>>,
    kill_at: Mutex<Option<(String, Arc<tokio::sync::Notify>)>>,
}

impl InfraHost for Host {
    fn secrets(
        &self,
        _stack: &str,
        slots: &[SecretSlot],
    ) -> Result<HashMap<String, SecretValue>, String> {
        Ok(slots
            .iter()
            .map(|s| (s.engine_name.clone(), SecretValue::new("s3cret")))
            .collect())
    }

    fn progress(&self, _app: &str, line: &str) {
        self.lines.lock().expect("lines").push(line.to_owned());
        if let Some((prefix, notify)) = self.kill_at.lock().expect("kill").as_ref()
            && line.starts_with(prefix.as_str())
        {
            notify.notify_one();
        }
    }
}

struct World {
    _root: tempfile::TempDir,
    data: PathBuf,
    recipe: PathBuf,
    engine: FakeEngine,
    app: InfraApp,
    host: Host,
}

fn init_repo(dir: &Path) {
    std::fs::create_dir_all(dir).expect("recipe dir");
    git(dir, &["init", "-q", "-b", "main"]);
    for (k, v) in [
        ("user.email", "maintainer@example.org"),
        ("user.name", "Maintainer"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(dir, &["config", k, v]);
    }
}

async fn world(policy: &str) -> World {
    let root = tempfile::tempdir().expect("tempdir");
    let recipe = root.path().join("proxy");
    init_repo(&recipe);
    let port = serve_ok().await;
    let app = infra::config::parse(&format!(
        "[[infra]]\nname = \"proxy\"\nrecipe = \"{}\"\npolicy = \"{policy}\"\ntimeout = \"3s\"\nprobe = {{ port = {port}, timeout = \"2s\" }}\n",
        recipe.display()
    ))
    .expect("config")
    .remove(0);
    World {
        data: root.path().join("data"),
        recipe,
        engine: FakeEngine::new().with_settle(Duration::from_millis(50)),
        app,
        host: Host::default(),
        _root: root,
    }
}

impl World {
    /// Commits the recipe at `image` and tags release `version`, with optional release notes.
    fn release(&self, version: &str, image: &str, notes: Option<&str>) {
        std::fs::write(
            self.recipe.join("compose.yml"),
            COMPOSE.replace("IMAGE", image),
        )
        .expect("compose");
        if let Some(notes) = notes {
            std::fs::create_dir_all(self.recipe.join("release")).expect("release dir");
            std::fs::write(self.recipe.join("release").join(version), notes).expect("notes");
        }
        git(&self.recipe, &["add", "-A"]);
        git(
            &self.recipe,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("Release {version}"),
            ],
        );
        git(
            &self.recipe,
            &["tag", "-a", version, "-m", &format!("Release {version}")],
        );
    }

    fn options(&self, retry: bool) -> ReconcileOptions {
        ReconcileOptions {
            data_dir: self.data.clone(),
            dry_run: false,
            retry,
        }
    }

    async fn reconcile(&self) -> AppOutcome {
        infra::reconcile_app(
            &self.engine,
            &self.app,
            &self.options(false),
            &self.host,
            &CancellationToken::new(),
        )
        .await
    }

    /// Runs a reconcile and drops it (as kill -9 would stop it) when a progress line starts
    /// with `prefix`; `false` when it finished first.
    async fn reconcile_killed_at(&self, prefix: &str) -> bool {
        let notify = Arc::new(tokio::sync::Notify::new());
        *self.host.kill_at.lock().expect("kill") = Some((prefix.to_owned(), notify.clone()));
        let options = self.options(false);
        let cancel = CancellationToken::new();
        let run = infra::reconcile_app(&self.engine, &self.app, &options, &self.host, &cancel);
        let killed = tokio::select! {
            _ = run => false,
            () = notify.notified() => true,
        };
        *self.host.kill_at.lock().expect("kill") = None;
        killed
    }

    fn state(&self) -> infra::AppState {
        InfraDir::new(&self.data).load("proxy").expect("state")
    }

    async fn deployed(&self) -> (String, String) {
        let services = self.engine.ps("proxy").await.expect("ps");
        assert_eq!(services.len(), 1, "{services:?}");
        let labels = self
            .engine
            .service_labels(&services[0].name)
            .await
            .expect("labels");
        (
            labels
                .get("io.seatrial.version")
                .cloned()
                .unwrap_or_default(),
            labels.get("io.seatrial.run").cloned().unwrap_or_default(),
        )
    }

    fn volume(&self) -> String {
        let names = self.engine.volume_names("proxy");
        assert_eq!(names.len(), 1, "{names:?}");
        names[0].clone()
    }

    fn files(&self) -> Vec<(String, Vec<u8>)> {
        self.engine
            .volume(&self.volume())
            .map(|v| v.files.into_iter().collect())
            .unwrap_or_default()
    }
}

fn assert_action(o: &AppOutcome, action: Action) {
    assert_eq!(o.action, action, "{o:#?}");
}

#[tokio::test]
async fn install_then_nothing_to_do_then_a_patch_keeps_the_data() {
    let w = world("minor").await;
    w.release("1.0.0+1", "1", None);
    let o = w.reconcile().await;
    assert_action(&o, Action::Installed);
    assert_eq!(o.to.as_deref(), Some("1.0.0+1"));
    let (version, run) = w.deployed().await;
    assert_eq!(version, "1.0.0+1");
    assert_eq!(
        w.state().last_good.map(|r| r.version).as_deref(),
        Some("1.0.0+1")
    );

    let again = w.reconcile().await;
    assert_action(&again, Action::Skipped);
    assert_eq!(
        w.deployed().await.1,
        run,
        "a current, healthy app is not redeployed"
    );
    assert!(again.alert.is_none());

    let volume = w.volume();
    w.engine
        .write_file(&volume, "db/rows", b"42 rows")
        .expect("write");
    w.release("1.0.1+1", "2", None);
    let o = w.reconcile().await;
    assert_action(&o, Action::Upgraded);
    assert_eq!(
        (o.from.as_deref(), o.to.as_deref()),
        (Some("1.0.0+1"), Some("1.0.1+1"))
    );
    assert_eq!(w.deployed().await.0, "1.0.1+1");
    assert_eq!(w.volume(), volume, "the same volume, kept");
    assert!(
        w.files()
            .contains(&("db/rows".to_owned(), b"42 rows".to_vec())),
        "{:?}",
        w.files()
    );
    assert!(
        InfraDir::new(&w.data)
            .snapshot_path("proxy")
            .join("manifest.json")
            .is_file()
    );
    let lines = w.host.lines.lock().expect("lines").clone();
    let order: Vec<&str> = ["undeploying", "snapshotting", "deploying", "verifying"]
        .into_iter()
        .filter(|step| lines.iter().any(|l| l.starts_with(step)))
        .collect();
    assert_eq!(order.len(), 4, "{lines:?}");
}

#[tokio::test]
async fn a_broken_release_is_rolled_back_with_its_data_and_not_tried_again() {
    let w = world("minor").await;
    w.release("1.0.0+1", "1", None);
    assert_action(&w.reconcile().await, Action::Installed);
    let volume = w.volume();
    w.engine
        .write_file(&volume, "db/rows", b"42 rows")
        .expect("write");
    let before = w.files();

    w.release("1.0.1+1", "bad", None);
    w.engine
        .script("example/proxy:bad", Behaviour::never_healthy());
    // The broken release's "migration" rewrites the data before it fails.
    let engine = w.engine.clone();
    let vandal = tokio::spawn(async move {
        loop {
            let ps = engine.ps("proxy").await.unwrap_or_default();
            if ps.iter().any(|s| s.image == "example/proxy:bad") {
                let v = engine.volume_names("proxy").remove(0);
                engine.write_file(&v, "db/rows", b"wiped").expect("wipe");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let o = w.reconcile().await;
    vandal.await.expect("vandal");
    assert_action(&o, Action::RolledBack);
    assert_eq!(o.alert, Some(Level::Critical));
    assert!(o.reason.contains("1.0.1+1 failed"), "{}", o.reason);
    assert!(o.reason.contains("rolled back to 1.0.0+1"), "{}", o.reason);
    assert_eq!(w.deployed().await.0, "1.0.0+1");
    assert_eq!(w.files(), before, "the data is byte-identical");
    let state = w.state();
    assert_eq!(state.failed, vec!["1.0.1+1".to_owned()]);
    assert!(state.pending.is_none());
    assert_eq!(infra::exit_code(std::slice::from_ref(&o)), 1);

    let next = w.reconcile().await;
    assert_action(&next, Action::Skipped);
    assert!(next.reason.contains("not tried again"), "{}", next.reason);
    assert!(next.alert.is_none());

    // A newer release is tried (crossing the failed one).
    w.release("1.0.2+1", "3", None);
    let o = w.reconcile().await;
    assert_action(&o, Action::Upgraded);
    assert_eq!(w.deployed().await.0, "1.0.2+1");
}

#[tokio::test]
async fn holds_by_policy_and_by_notes_alert_once() {
    let w = world("minor").await;
    w.release("1.0.0+1", "1", None);
    assert_action(&w.reconcile().await, Action::Installed);
    let (_, run) = w.deployed().await;

    w.release(
        "1.1.0+1",
        "2",
        Some("The database schema changed: run the manual migration first."),
    );
    let o = w.reconcile().await;
    assert_action(&o, Action::Held);
    assert_eq!(o.alert, Some(Level::Warning));
    let notes = o.notes.clone().unwrap_or_default();
    assert!(notes.contains("run the manual migration first"), "{notes}");
    assert_eq!(w.deployed().await.1, run, "nothing was deployed");
    let again = w.reconcile().await;
    assert_action(&again, Action::Held);
    assert!(again.alert.is_none(), "the same hold alerts once");

    let w = world("minor").await;
    w.release("1.0.0+1", "1", None);
    assert_action(&w.reconcile().await, Action::Installed);
    w.release("2.0.0+1", "2", None);
    let o = w.reconcile().await;
    assert_action(&o, Action::Held);
    assert!(o.reason.contains("major step"), "{}", o.reason);
    assert_eq!(infra::exit_code(std::slice::from_ref(&o)), 0);
}

#[tokio::test]
async fn dry_run_says_what_it_would_do_and_changes_nothing() {
    let w = world("minor").await;
    w.release("1.0.0+1", "1", None);
    let options = ReconcileOptions {
        dry_run: true,
        ..w.options(false)
    };
    let o = infra::reconcile_app(
        &w.engine,
        &w.app,
        &options,
        &w.host,
        &CancellationToken::new(),
    )
    .await;
    assert_action(&o, Action::Installed);
    assert!(o.reason.starts_with("dry run: would"), "{}", o.reason);
    assert!(w.engine.ps("proxy").await.expect("ps").is_empty());
    assert!(w.state().last.is_none());
}

/// Killed at each step of an upgrade, the next reconcile ends at the target, healthy, with the
/// data.
#[tokio::test]
async fn a_reconcile_killed_at_any_step_is_finished_by_the_next() {
    for step in ["undeploying", "snapshotting", "deploying", "verifying"] {
        let w = world("minor").await;
        w.release("1.0.0+1", "1", None);
        assert_action(&w.reconcile().await, Action::Installed);
        let volume = w.volume();
        w.engine
            .write_file(&volume, "db/rows", b"42 rows")
            .expect("write");
        w.release("1.0.1+1", "2", None);
        assert!(w.reconcile_killed_at(step).await, "killed at {step}");
        let pending = w.state().pending.expect("an upgrade under way");
        if matches!(step, "deploying" | "verifying") {
            assert!(
                pending.snapshot.is_some() && pending.step.target_may_have_run(),
                "{step}: {pending:?}"
            );
        }
        let o = w.reconcile().await;
        assert_action(&o, Action::Upgraded);
        assert_eq!(w.deployed().await.0, "1.0.1+1", "{step}");
        assert!(
            w.files()
                .contains(&("db/rows".to_owned(), b"42 rows".to_vec())),
            "{step}: {:?}",
            w.files()
        );
        assert!(w.state().pending.is_none());
    }
}

/// Killed while rolling back a broken release, the next reconcile finishes the rollback.
#[tokio::test]
async fn a_reconcile_killed_during_rollback_is_finished_by_the_next() {
    for step in ["removing", "restoring", "redeploying"] {
        let w = world("minor").await;
        w.release("1.0.0+1", "1", None);
        assert_action(&w.reconcile().await, Action::Installed);
        w.engine
            .write_file(&w.volume(), "db/rows", b"42 rows")
            .expect("write");
        let before = w.files();
        w.release("1.0.1+1", "bad", None);
        w.engine
            .script("example/proxy:bad", Behaviour::never_healthy());
        assert!(w.reconcile_killed_at(step).await, "killed at {step}");
        assert_eq!(
            w.state().pending.map(|p| p.step),
            Some(Step::RollingBack),
            "{step}"
        );
        let o = w.reconcile().await;
        // The interrupted upgrade is put back, then the release is tried again (it was never
        // seen to fail to the end) — and rolled back again.
        assert_action(&o, Action::RolledBack);
        assert_eq!(w.deployed().await.0, "1.0.0+1", "{step}");
        assert_eq!(w.files(), before, "{step}");
    }
}
