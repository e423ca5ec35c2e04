//! The nightly job on the fake engine, with a real SQLite store and the real queue runner: it
//! waits for the trial in flight, holds the capacity while queued runs wait, records the sweep's
//! promoting trials as runs, and catches up at start. Each test takes a few seconds.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use seatrial_engine::fake::FakeEngine;
use seatrial_store::{Mode, NewRun, Run, RunId, RunState, Store, Trigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::serve::config::load_with;
use crate::serve::worker;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A recipe whose one service `app` answers on 127.0.0.1:`port` (the fake engine's task
/// address), whose tests run `test_script`, and that converges in no time.
fn write_recipe(dir: &Path, port: u16, test_script: &str) {
    std::fs::create_dir_all(dir.join("tests")).expect("tests dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  app:\n    image: example/app:1\n    ports:\n      - \"8080:80\"\n    volumes:\n      - data:/data\nvolumes:\n  data:\n",
    )
    .expect("compose");
    std::fs::write(
        dir.join("tests/seatrial.toml"),
        format!(
            "[trial]\ntimeout = \"5s\"\nstable_for = \"50ms\"\ntest_timeout = \"20s\"\n\n[probe]\nport = {port}\ntimeout = \"2s\"\n"
        ),
    )
    .expect("settings");
    let test = dir.join("tests/smoke");
    std::fs::write(&test, format!("#!/bin/sh\n{test_script}\n")).expect("test");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&test, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// An enrolled repository on a "forge" that is a directory: `<forge>/coop/app.git`, with the
/// releases `1.0.0+1` and `1.1.0+1` (the latest, whose tests run `latest_tests`) and a commit
/// after them.
fn enrolled_repo(forge: &Path, port: u16, latest_tests: &str) {
    let dir = forge.join("coop/app.git");
    std::fs::create_dir_all(&dir).expect("repo dir");
    git(&dir, &["init", "-q", "-b", "main"]);
    for (k, v) in [
        ("user.email", "maintainer@example.org"),
        ("user.name", "Maintainer"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(&dir, &["config", k, v]);
    }
    for step in ["1.0.0+1", "1.1.0+1", "after"] {
        let tests = match step {
            "1.1.0+1" => latest_tests.to_owned(),
            _ => format!("echo {step}"),
        };
        write_recipe(&dir, port, &tests);
        std::fs::write(dir.join("STEP"), step).expect("step");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", step]);
        if step != "after" {
            git(&dir, &["tag", "-a", step, "-m", step]);
        }
    }
}

/// A stand-in for the app's task: answers every request with 200 "ok".
async fn serve_ok() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

struct World {
    root: tempfile::TempDir,
    shared: Arc<Shared>,
    port: u16,
}

impl World {
    /// A server (not yet running anything) with a schedule, a forge that is a directory, and
    /// (with `enrolled`) one enrolled repository.
    async fn new(enrolled: bool) -> Self {
        Self::with(enrolled, "echo 1.1.0+1", "5s").await
    }

    /// As [`World::new`], the latest release's tests running `latest_tests`, and this shutdown
    /// grace.
    async fn with(enrolled: bool, latest_tests: &str, grace: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let port = serve_ok().await;
        let forge = root.path().join("forge");
        enrolled_repo(&forge, port, latest_tests);
        let data = root.path().join("data");
        let path = root.path().join("seatrial.toml");
        let repos = if enrolled {
            "\n[[repos]]\nname = \"coop/app\"\n"
        } else {
            ""
        };
        std::fs::write(
            &path,
            format!(
                "data_dir = {data:?}\ncapacity = 1\npoll_interval = \"100ms\"\nshutdown_grace = \"{grace}\"\n\n[schedule]\nnightly = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\n\n[forge]\nurl = {forge:?}\ntoken = \"t\"\n{repos}"
            ),
        )
        .expect("config");
        let config = load_with(Some(&path), &|_| None).expect("config loads");
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let store = Store::open(&config.database_url).await.expect("store");
        let shared = Arc::new(Shared::new(store, config));
        shared.use_engine(Arc::new(
            FakeEngine::new().with_settle(Duration::from_millis(100)),
        ));
        Self { root, shared, port }
    }

    fn schedule(&self) -> Schedule {
        self.shared.config.schedule.clone().expect("schedule")
    }

    fn record_file(&self) -> RecordFile {
        RecordFile::new(&self.shared.config.data_dir)
    }

    /// Queues a run of a plain recipe whose tests run `test_script`.
    async fn enqueue(&self, name: &str, test_script: &str) -> RunId {
        let dir = self.root.path().join(name);
        write_recipe(&dir, self.port, test_script);
        let run = self
            .shared
            .enqueue(&NewRun::new(
                dir.to_str().expect("utf8"),
                Mode::Cold,
                Trigger::Api,
            ))
            .await
            .expect("enqueue");
        run.id
    }

    async fn run(&self, id: RunId) -> Run {
        self.shared.store.get(id).await.expect("get").expect("run")
    }

    async fn wait_for(&self, id: RunId, what: &str, done: impl Fn(&Run) -> bool) -> Run {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.run(id).await;
            if done(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "run {id} never {what}: {run:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ms(t: Option<jiff::Timestamp>) -> i64 {
    t.expect("recorded").as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_waits_for_the_run_in_flight_and_holds_the_capacity() {
    let w = World::new(true).await;
    let queue = tokio::spawn(worker::run_queue(w.shared.clone(), None));
    let in_flight = w.enqueue("slow", "sleep 1").await;
    w.wait_for(in_flight, "started", |r| r.state == RunState::Running)
        .await;

    let nightly = {
        let (shared, schedule, file) = (w.shared.clone(), w.schedule(), w.record_file());
        tokio::spawn(async move { run_once(&shared, &schedule, &file).await })
    };
    // Queued while the nightly is due: it waits for the nightly, however long it takes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(w.shared.nightly_holds(), "the nightly is due");
    let waiting = w.enqueue("quick", "exit 0").await;
    nightly.await.expect("nightly");

    let record = w.record_file().load().expect("record");
    let in_flight = w.run(in_flight).await;
    assert_eq!(in_flight.state, RunState::Passed, "{in_flight:#?}");
    assert!(
        in_flight.finished_at_ms.expect("finished") <= ms(record.last_started_at),
        "the nightly started only after the run in flight ended: {record:#?} {in_flight:#?}"
    );
    let waited = w
        .wait_for(waiting, "ran after the nightly", |r| r.state.is_terminal())
        .await;
    assert_eq!(waited.state, RunState::Passed, "{waited:#?}");
    assert!(
        waited.started_at_ms.expect("started") >= ms(record.last_finished_at),
        "the queued run waited for the whole nightly: {record:#?} {waited:#?}"
    );

    // The sweep: one promoting cold trial of the latest release, recorded as a run.
    let last = record.last.clone().expect("an outcome");
    assert_eq!(last.sweep.len(), 1, "{last:#?}");
    let swept = &last.sweep[0];
    assert_eq!(
        (
            swept.repo.as_str(),
            swept.release.as_deref(),
            swept.state.as_str()
        ),
        ("coop/app", Some("1.1.0+1"), "passed"),
        "{last:#?}"
    );
    let run = w.run(RunId(swept.run.expect("a run"))).await;
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(run.requested_by.as_deref(), Some("nightly"));
    assert!(run.promote && run.mode == Mode::Cold, "{run:#?}");
    assert_eq!(run.reference.as_deref(), Some("1.1.0+1"));
    assert!(
        run.started_at_ms.expect("started") >= ms(record.last_started_at)
            && run.finished_at_ms.expect("finished") <= ms(record.last_finished_at),
        "the sweep ran inside the nightly"
    );
    let warm = seatrial_trial::warm::Warm::new(&w.shared.config.data_dir);
    let canonical = warm.load("app").expect("readable").expect("a canonical");
    assert_eq!(canonical.version, "1.1.0+1", "the canonical is fresh");
    assert!(record.last_success().is_some(), "{record:#?}");
    assert!(!w.shared.nightly_holds(), "the capacity is given back");

    w.shared.shutdown.cancel();
    queue.await.expect("queue stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nightly_missed_while_down_runs_once_at_start() {
    // Nothing enrolled: the nightly has nothing to do but start and finish.
    let w = World::new(false).await;
    let file = w.record_file();
    let now = jiff::Timestamp::now();
    let two_days = jiff::SignedDuration::from_hours(48);
    let before = NightlyRecord {
        armed_at: Some(now - two_days),
        last_started_at: Some(now - two_days),
        last_finished_at: Some(now - two_days + jiff::SignedDuration::from_mins(5)),
        last: None,
    };
    file.save(&before).expect("record");
    let nightly = tokio::spawn(run_loop(w.shared.clone()));
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let record = loop {
        let r = file.load().expect("record");
        if r.last_finished_at > before.last_finished_at {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no catch-up ran: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(record.last_started_at.expect("started") >= now);
    // Then it waits for the next nightly time: one catch-up, not one per missed night.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let next = loop {
        if let Some(next) = w.shared.nightly_now().next {
            break next;
        }
        assert!(tokio::time::Instant::now() < until, "no next time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(next > now, "{next}");
    assert_eq!(
        file.load().expect("record").last_started_at,
        record.last_started_at,
        "only one catch-up"
    );
    w.shared.shutdown.cancel();
    nightly.await.expect("the nightly loop stops at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_nightly_after_its_grace_with_teardown() {
    let w = World::with(true, "sleep 60", "1s").await;
    let nightly = {
        let (shared, schedule, file) = (w.shared.clone(), w.schedule(), w.record_file());
        tokio::spawn(async move { run_once(&shared, &schedule, &file).await })
    };
    // Wait until the sweep's trial runs its (endless) tests.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let running = w
            .shared
            .store
            .list(&seatrial_store::RunFilter {
                state: Some(RunState::Running),
                ..seatrial_store::RunFilter::default()
            })
            .await
            .expect("list");
        if let Some(run) = running.first() {
            let log = w
                .shared
                .store
                .logs_since(run.id, 0, 1000)
                .await
                .expect("log");
            if log.iter().any(|l| l.text.starts_with("▶ tests")) {
                break run.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the sweep never reached its tests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let asked = tokio::time::Instant::now();
    w.shared.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), nightly)
        .await
        .expect("the nightly stops within the grace and a teardown")
        .expect("nightly");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "the grace was given"
    );
    let run = w.run(run.id).await;
    assert_eq!(run.state, RunState::Cancelled, "{run:#?}");
    assert!(
        run.reason
            .as_deref()
            .is_some_and(|r| r.contains("shut down")),
        "{run:#?}"
    );
    let stages = w.shared.store.stages(run.id).await.expect("stages");
    assert!(
        stages
            .iter()
            .any(|s| s.name == "teardown" && s.result == seatrial_store::StageResult::Pass),
        "torn down: {stages:#?}"
    );
    let record = w.record_file().load().expect("record");
    assert!(
        record.interrupted().is_some(),
        "unfinished, so the next start runs it again: {record:#?}"
    );
    assert!(!w.shared.nightly_holds());
}
