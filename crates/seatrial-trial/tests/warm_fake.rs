//! Warm canonicals on the fake engine: promotion, quick runs and their restore, the claim that
//! repairs what a dead run left, and one user at a time — each in well under a second. The
//! real-engine suite (crates/seatrial/tests/warm.rs) proves the same on Docker, byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Quiet, git, serve_ok, write_recipe};
use seatrial_engine::VolumeSnapshots;
use seatrial_engine::fake::{Behaviour, FakeEngine};
use seatrial_trial::settings::Overrides;
use seatrial_trial::warm::{self, Warm};
use seatrial_trial::{StageResult, TrialConfig, TrialMode, TrialReport, TrialResult, Trust};
use tokio_util::sync::CancellationToken;

fn commit(dir: &Path, image: &str, message: &str) {
    write_recipe(dir, image, "exit 0");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

/// Releases `1.0.0+1` and `1.1.0+1` (the latest) on main, and a branch `change` on top.
fn recipe(root: &Path) -> PathBuf {
    let dir = root.join("warmapp");
    std::fs::create_dir_all(&dir).expect("recipe dir");
    git(&dir, &["init", "-q", "-b", "main"]);
    for (k, v) in [
        ("user.email", "maintainer@example.org"),
        ("user.name", "Maintainer"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(&dir, &["config", k, v]);
    }
    for (image, version) in [("1", "1.0.0+1"), ("2", "1.1.0+1")] {
        commit(&dir, image, &format!("Release {version}"));
        git(&dir, &["tag", "-a", version, "-m", version]);
    }
    git(&dir, &["checkout", "-q", "-b", "change"]);
    commit(&dir, "3", "The change");
    git(&dir, &["checkout", "-q", "main"]);
    dir
}

struct World {
    _root: tempfile::TempDir,
    data: PathBuf,
    recipe: PathBuf,
    engine: FakeEngine,
    port: u16,
}

async fn world() -> World {
    let root = tempfile::tempdir().expect("tempdir");
    let recipe = recipe(root.path());
    World {
        data: root.path().join("data"),
        recipe,
        engine: FakeEngine::new().with_settle(Duration::from_millis(100)),
        port: serve_ok().await,
        _root: root,
    }
}

impl World {
    fn warm(&self) -> Warm {
        Warm::new(&self.data)
    }

    fn key(&self) -> String {
        warm::recipe_key(self.recipe.to_str().expect("utf8"))
    }

    fn config(&self, reference: &str, mode: TrialMode, promote: bool) -> TrialConfig {
        let recipe = self.recipe.to_str().expect("utf8").to_owned();
        let (run_id, mut stack) = seatrial_trial::identity(&recipe, Some(reference));
        if promote {
            stack = warm::canonical_stack(&self.key(), &run_id);
        }
        if mode == TrialMode::Quick
            && let Ok(Some(c)) = self.warm().load(&self.key())
        {
            stack = c.stack;
        }
        TrialConfig {
            recipe,
            reference: Some(reference.to_owned()),
            subdir: None,
            base_domain: "test.invalid".to_owned(),
            overrides: Overrides {
                timeout: Some(Duration::from_secs(5)),
                stable_for: Some(Duration::from_millis(50)),
                test_timeout: Some(Duration::from_secs(10)),
                port: Some(self.port),
                probe_timeout: Some(Duration::from_secs(2)),
                ..Overrides::default()
            },
            keep: false,
            mode,
            promote,
            data_dir: self.data.clone(),
            janitor_max_age: Duration::from_secs(3600),
            liveness: None,
            run_id,
            stack,
            trust: Trust::Local,
        }
    }

    async fn run(&self, reference: &str, mode: TrialMode, promote: bool) -> TrialReport {
        let config = self.config(reference, mode, promote);
        seatrial_trial::run(&self.engine, config, &Quiet, CancellationToken::new()).await
    }

    /// Promotes the latest release; returns the canonical's only volume.
    async fn seed(&self) -> String {
        let report = self.run("1.1.0+1", TrialMode::Cold, true).await;
        assert_eq!(report.result, TrialResult::Pass, "{report:#?}");
        let c = self.canonical();
        assert_eq!(c.volumes.len(), 1, "{c:?}");
        c.volumes[0].clone()
    }

    fn canonical(&self) -> warm::Canonical {
        self.warm()
            .load(&self.key())
            .expect("readable")
            .expect("a canonical")
    }

    fn files(&self, volume: &str) -> Vec<(String, Vec<u8>)> {
        self.engine
            .volume(volume)
            .map(|v| v.files.into_iter().collect())
            .unwrap_or_default()
    }
}

fn stage_names(report: &TrialReport) -> Vec<(&'static str, StageResult)> {
    report.stages.iter().map(|s| (s.name, s.result)).collect()
}

fn detail<'r>(report: &'r TrialReport, name: &str) -> &'r str {
    &report
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}: {:?}", stage_names(report)))
        .detail
}

#[tokio::test]
async fn promotion_keeps_a_passed_latest_release_undeployed_with_its_snapshot() {
    let w = world().await;
    let volume = w.seed().await;
    let c = w.canonical();
    assert_eq!(c.version, "1.1.0+1");
    assert!(
        c.stack.starts_with('w'),
        "canonical stacks are not trial stacks: {}",
        c.stack
    );
    assert!(
        w.engine.services(&c.stack).is_empty(),
        "the canonical is undeployed"
    );
    assert!(w.engine.volume(&volume).is_some(), "its volume is kept");
    let manifest = seatrial_engine::verify_snapshot(&w.warm().snapshot_dir(&c.recipe, &c.stack))
        .expect("a whole snapshot");
    assert_eq!(manifest.meta.commit.as_deref(), Some(c.commit.as_str()));
}

#[tokio::test]
async fn promotion_of_an_older_release_is_refused_before_anything_is_deployed() {
    let w = world().await;
    let report = w.run("1.0.0+1", TrialMode::Cold, true).await;
    assert_eq!(report.result, TrialResult::Error);
    assert_eq!(report.error_kind, Some("bad-input"));
    assert!(
        detail(&report, "prepare").contains("not the latest release 1.1.0+1"),
        "{}",
        detail(&report, "prepare")
    );
    assert_eq!(detail(&report, "teardown"), "nothing was deployed");
    assert!(w.warm().load(&w.key()).expect("readable").is_none());
}

#[tokio::test]
async fn a_failed_promotion_keeps_the_older_canonical() {
    let w = world().await;
    w.seed().await;
    let before = w.canonical();
    w.engine.script("app", Behaviour::never_healthy());
    let report = w.run("1.1.0+1", TrialMode::Cold, true).await;
    assert_eq!(report.result, TrialResult::Fail);
    let promote = report
        .stages
        .iter()
        .find(|s| s.name == "promote")
        .expect("a promote stage");
    assert_eq!(promote.result, StageResult::Skipped);
    assert_eq!(w.canonical(), before, "the canonical is as it was");
    assert!(
        w.engine.leftovers(&report.stack).is_empty(),
        "the failed attempt is gone"
    );
}

#[tokio::test]
async fn a_quick_run_upgrades_the_canonical_and_puts_its_data_back() {
    let w = world().await;
    let volume = w.seed().await;
    let known_good = w.files(&volume);
    let report = w.run("change", TrialMode::Quick, false).await;
    use StageResult::Pass;
    assert_eq!(
        stage_names(&report),
        [
            ("prepare", Pass),
            ("install", Pass),
            ("serve", Pass),
            ("upgrade", Pass),
            ("serve-after-upgrade", Pass),
            ("tests", Pass),
            ("teardown", Pass),
            ("restore", Pass),
        ],
        "{report:#?}"
    );
    assert_eq!(report.mode, TrialMode::Quick);
    assert_eq!(report.previous_version.as_deref(), Some("1.1.0+1"));
    assert_eq!(w.files(&volume), known_good);
    let c = w.canonical();
    assert!(c.last_used.is_some());
    assert_eq!(
        w.warm().in_use(&w.key()),
        None,
        "the restore cleared the mark"
    );
}

#[tokio::test]
async fn a_failing_quick_run_fails_and_still_restores() {
    let w = world().await;
    let volume = w.seed().await;
    let before = w.canonical();
    w.engine.script(
        "app",
        Behaviour::healthy_after(Duration::ZERO).rolls_back_on_update(),
    );
    let report = w.run("change", TrialMode::Quick, false).await;
    assert_eq!(report.result, TrialResult::Fail, "{report:#?}");
    assert_eq!(
        report.stages.last().map(|s| (s.name, s.result)),
        Some(("restore", StageResult::Pass))
    );
    assert!(w.engine.volume(&volume).is_some());
    let after = w.canonical();
    assert_eq!(
        (after.version, after.commit),
        (before.version, before.commit)
    );
}

#[tokio::test]
async fn a_dead_runs_leftovers_are_restored_before_the_next_quick_run() {
    let w = world().await;
    let volume = w.seed().await;
    let known_good = w.files(&volume);
    // A quick run died after its change wrote into the canonical.
    w.engine
        .write_file(&volume, "migrated-by-the-change", b"v3 schema")
        .expect("write");
    w.warm().mark_in_use(&w.key(), "a-dead-run").expect("mark");
    let report = w.run("change", TrialMode::Quick, false).await;
    assert_eq!(report.result, TrialResult::Pass, "{report:#?}");
    let prepare = detail(&report, "prepare");
    assert!(
        prepare.contains("restored the canonical") && prepare.contains("a-dead-run"),
        "{prepare}"
    );
    assert_eq!(w.files(&volume), known_good, "the change's file is gone");
}

#[tokio::test]
async fn a_volume_removed_by_hand_is_restored_before_use() {
    let w = world().await;
    let volume = w.seed().await;
    w.engine
        .remove_volumes(std::slice::from_ref(&volume))
        .await
        .expect("remove");
    let report = w.run("change", TrialMode::Quick, false).await;
    assert_eq!(report.result, TrialResult::Pass, "{report:#?}");
    assert!(
        detail(&report, "prepare").contains(&format!("volume `{volume}` is missing")),
        "{}",
        detail(&report, "prepare")
    );
    assert!(w.engine.volume(&volume).is_some());
}

#[tokio::test]
async fn a_quick_run_without_a_canonical_is_bad_input_naming_how_to_seed() {
    let w = world().await;
    let report = w.run("change", TrialMode::Quick, false).await;
    assert_eq!(report.result, TrialResult::Error);
    assert_eq!(report.error_kind, Some("bad-input"));
    let prepare = detail(&report, "prepare");
    assert!(
        prepare.contains("has no canonical") && prepare.contains("seatrial warm seed"),
        "{prepare}"
    );
}

#[tokio::test]
async fn two_quick_runs_take_turns_on_the_canonical() {
    let w = world().await;
    w.seed().await;
    w.engine
        .script("app", Behaviour::healthy_after(Duration::from_millis(200)));
    let (a, b) = tokio::join!(
        w.run("change", TrialMode::Quick, false),
        w.run("change", TrialMode::Quick, false)
    );
    assert_eq!(a.result, TrialResult::Pass, "{a:#?}");
    assert_eq!(b.result, TrialResult::Pass, "{b:#?}");
    let waited = [&a, &b]
        .iter()
        .filter(|r| detail(r, "prepare").contains("waited"))
        .count();
    assert_eq!(waited, 1, "exactly one run waited for the other");
}
