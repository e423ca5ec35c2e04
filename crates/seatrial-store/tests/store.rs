//! The store's behaviour, the same suite on SQLite and on PostgreSQL. PostgreSQL comes from
//! `SEATRIAL_TEST_POSTGRES_URL` (scripts/test.sh sets it after scripts/setup.sh starts the
//! server); without it these tests fail rather than skip.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seatrial_store::{
    Mode, NewRun, Reaped, RunFilter, RunId, RunState, StageRecord, StageResult, Store, Trigger,
};

static N: AtomicUsize = AtomicUsize::new(0);

fn postgres_url() -> String {
    std::env::var("SEATRIAL_TEST_POSTGRES_URL").expect(
        "SEATRIAL_TEST_POSTGRES_URL is not set: run scripts/setup.sh (it starts PostgreSQL) and set it, or run scripts/test.sh",
    )
}

/// A fresh, empty database of each kind: a SQLite file, and a PostgreSQL database of its own.
async fn fresh() -> Vec<(Store, String)> {
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("seatrial-store-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite_url = format!("sqlite://{}/nested/seatrial.db", dir.display());
    let sqlite = Store::open(&sqlite_url).await.expect("open sqlite");

    let base = postgres_url();
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to the test PostgreSQL (is it running? scripts/setup.sh starts it)");
    let db = format!("seatrial_store_{}_{n}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&admin)
        .await
        .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("a database in the URL");
    let pg_url = format!("{prefix}/{db}");
    let postgres = Store::open(&pg_url).await.expect("open postgres");
    vec![(sqlite, sqlite_url), (postgres, pg_url)]
}

fn new_run(recipe: &str) -> NewRun {
    NewRun::new(recipe, Mode::Cold, Trigger::Api)
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_run_goes_from_queued_to_a_verdict_once() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let first = store.enqueue(&new_run("a")).await.expect("enqueue");
        let second = store.enqueue(&new_run("b")).await.expect("enqueue");
        assert_eq!(first.state, RunState::Queued, "{b}");
        assert_eq!(first.attempt, 0);
        let queue: Vec<RunId> = store
            .queue()
            .await
            .expect("queue")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(queue, vec![first.id, second.id], "{b}: oldest first");

        let claimed = store
            .claim("one", LEASE)
            .await
            .expect("claim")
            .expect("a run");
        assert_eq!(claimed.id, first.id, "{b}: the oldest is claimed first");
        assert_eq!(claimed.state, RunState::Running);
        assert_eq!(claimed.attempt, 1);
        assert_eq!(claimed.lease_owner.as_deref(), Some("one"));
        assert!(
            claimed.lease_expires_at_ms.expect("lease") > claimed.started_at_ms.expect("start")
        );
        let next = store
            .claim("two", LEASE)
            .await
            .expect("claim")
            .expect("a run");
        assert_eq!(
            next.id, second.id,
            "{b}: a claimed run is not claimed again"
        );
        assert!(
            store.claim("two", LEASE).await.expect("claim").is_none(),
            "{b}: empty"
        );

        assert!(store.heartbeat(first.id, "one", LEASE).await.expect("hb"));
        assert!(
            !store.heartbeat(first.id, "two", LEASE).await.expect("hb"),
            "{b}: not its lease"
        );
        assert!(
            !store
                .finish(first.id, "two", RunState::Passed, None)
                .await
                .expect("finish"),
            "{b}: only the owner records the verdict"
        );
        assert!(
            store
                .finish(first.id, "one", RunState::Failed, Some("install fail: x"))
                .await
                .expect("finish")
        );
        let done = store.get(first.id).await.expect("get").expect("run");
        assert_eq!(done.state, RunState::Failed);
        assert_eq!(done.reason.as_deref(), Some("install fail: x"));
        assert!(done.finished_at_ms.is_some() && done.lease_owner.is_none());
        assert!(
            !store.heartbeat(first.id, "one", LEASE).await.expect("hb"),
            "{b}: over"
        );
        assert!(
            !store
                .finish(first.id, "one", RunState::Passed, None)
                .await
                .expect("finish"),
            "{b}: once"
        );
        assert!(store.get(RunId(9_999_999)).await.expect("get").is_none());
    }
}

#[tokio::test]
async fn cancel_stops_queued_runs_at_once_and_flags_running_ones() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let running = store.enqueue(&new_run("r")).await.expect("enqueue");
        let queued = store.enqueue(&new_run("q")).await.expect("enqueue");
        store
            .claim("one", LEASE)
            .await
            .expect("claim")
            .expect("run");
        let q = store
            .request_cancel(queued.id, Some("alice"), None)
            .await
            .expect("cancel")
            .expect("run");
        assert_eq!(q.state, RunState::Cancelled, "{b}");
        assert!(
            q.reason.as_deref().is_some_and(|r| r.contains("alice")),
            "{b}: {:?}",
            q.reason
        );
        let r = store
            .request_cancel(running.id, None, None)
            .await
            .expect("cancel")
            .expect("run");
        assert_eq!(r.state, RunState::Running, "{b}: its server stops it");
        assert!(r.cancel_requested);
        assert!(
            store
                .finish(running.id, "one", RunState::Cancelled, None)
                .await
                .expect("finish")
        );
        let again = store
            .request_cancel(running.id, None, None)
            .await
            .expect("cancel")
            .expect("run");
        assert_eq!(
            again.state,
            RunState::Cancelled,
            "{b}: a finished run stays as it is"
        );
        assert!(
            store
                .request_cancel(RunId(424_242), None, None)
                .await
                .expect("cancel")
                .is_none()
        );
        assert!(
            store.claim("one", LEASE).await.expect("claim").is_none(),
            "{b}: nothing to claim"
        );
    }
}

#[tokio::test]
async fn expired_leases_are_requeued_once_then_errored() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let run = store.enqueue(&new_run("x")).await.expect("enqueue");
        store
            .claim("dead-server", Duration::ZERO)
            .await
            .expect("claim")
            .expect("run");
        store.set_stack(run.id, "tx-123456").await.expect("stack");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let reaped = store.reap_expired(2).await.expect("reap");
        assert_eq!(reaped.len(), 1, "{b}");
        let (r, what) = &reaped[0];
        assert_eq!(*what, Reaped::Requeued);
        assert_eq!(r.state, RunState::Queued);
        assert_eq!(
            r.stack.as_deref(),
            Some("tx-123456"),
            "{b}: the stack to remove"
        );
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|x| x.contains("dead-server") && x.contains("re-queued")),
            "{b}: {:?}",
            r.reason
        );
        assert!(
            store.reap_expired(2).await.expect("reap").is_empty(),
            "{b}: reaped once"
        );
        assert!(
            !store
                .heartbeat(run.id, "dead-server", LEASE)
                .await
                .expect("hb"),
            "{b}: the lease is gone"
        );

        let again = store
            .claim("second", Duration::ZERO)
            .await
            .expect("claim")
            .expect("run");
        assert_eq!(again.attempt, 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let reaped = store.reap_expired(2).await.expect("reap");
        assert_eq!(reaped[0].1, Reaped::Errored, "{b}");
        assert_eq!(reaped[0].0.state, RunState::Errored);
        assert!(
            reaped[0]
                .0
                .reason
                .as_deref()
                .is_some_and(|x| x.contains("attempt 2") && x.contains("not retried"))
        );
        assert!(reaped[0].0.finished_at_ms.is_some());

        // A run whose cancel was asked ends cancelled, not re-queued.
        let c = store.enqueue(&new_run("c")).await.expect("enqueue");
        store
            .claim("gone", Duration::ZERO)
            .await
            .expect("claim")
            .expect("run");
        store
            .request_cancel(c.id, None, None)
            .await
            .expect("cancel");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let reaped = store.reap_expired(2).await.expect("reap");
        assert_eq!(reaped[0].1, Reaped::Cancelled, "{b}");
        let live = store.enqueue(&new_run("live")).await.expect("enqueue");
        store
            .claim("alive", LEASE)
            .await
            .expect("claim")
            .expect("run");
        assert!(
            store.reap_expired(2).await.expect("reap").is_empty(),
            "{b}: live leases stay"
        );
        assert_eq!(
            store.get(live.id).await.expect("get").expect("run").state,
            RunState::Running
        );
    }
}

#[tokio::test]
async fn lists_filter_and_page_and_logs_and_stages_keep_order() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut n = new_run(if i % 2 == 0 { "even" } else { "odd" });
            if i == 6 {
                n.mode = Mode::Quick;
            }
            ids.push(store.enqueue(&n).await.expect("enqueue").id);
        }
        let all = store.list(&RunFilter::default()).await.expect("list");
        assert_eq!(
            all.first().map(|r| r.id),
            ids.last().copied(),
            "{b}: newest first"
        );
        let even = store
            .list(&RunFilter {
                recipe: Some("even".into()),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(even.len(), 4, "{b}");
        let quick = store
            .list(&RunFilter {
                mode: Some(Mode::Quick),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(quick.len(), 1);
        let page1 = store
            .list(&RunFilter {
                limit: 3,
                ..RunFilter::default()
            })
            .await
            .expect("list");
        let page2 = store
            .list(&RunFilter {
                limit: 3,
                before_id: page1.last().map(|r| r.id),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(page1.len(), 3);
        assert!(page2.iter().all(|r| r.id < page1[2].id), "{b}: paging");
        store.claim("o", LEASE).await.expect("claim");
        let running = store
            .list(&RunFilter {
                state: Some(RunState::Running),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(running.len(), 1);

        let id = ids[0];
        for i in 1..=5 {
            assert_eq!(
                store
                    .append_log(id, &format!("line {i}"))
                    .await
                    .expect("log"),
                i
            );
        }
        store.append_log(ids[1], "other run").await.expect("log");
        let tail = store.logs_since(id, 3, 100).await.expect("logs");
        let texts: Vec<&str> = tail.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, vec!["line 4", "line 5"], "{b}");
        assert_eq!(store.logs_since(id, 0, 2).await.expect("logs").len(), 2);

        for name in ["prepare", "install"] {
            store
                .record_stage(
                    id,
                    &StageRecord {
                        name: name.into(),
                        result: StageResult::Pass,
                        started_at: "2026-11-24T00:00:00Z".into(),
                        duration_ms: 12,
                        detail: "ok".into(),
                    },
                )
                .await
                .expect("stage");
        }
        let stages: Vec<String> = store
            .stages(id)
            .await
            .expect("stages")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(stages, vec!["prepare", "install"], "{b}");

        let stats = store.stats().await.expect("stats");
        assert_eq!(
            (stats.queued, stats.running, stats.active_leases),
            (6, 1, 1),
            "{b}"
        );
        assert!(
            stats
                .by_state_and_mode
                .contains(&(RunState::Queued, Mode::Quick, 1))
        );

        assert!(store.mark_comment_seen("gitea", 77).await.expect("seen"));
        assert!(
            !store.mark_comment_seen("gitea", 77).await.expect("seen"),
            "{b}: once"
        );
        assert!(store.mark_comment_seen("forgejo", 77).await.expect("seen"));
        store.ping().await.expect("ping");
    }
}

#[tokio::test]
async fn two_stores_claiming_at_once_take_each_run_exactly_once() {
    for (store, url) in fresh().await {
        let b = store.backend();
        for i in 0..20 {
            store
                .enqueue(&new_run(&format!("r{i}")))
                .await
                .expect("enqueue");
        }
        let other = Store::open(&url)
            .await
            .expect("a second store on the same database");
        let claimer = |s: Store, owner: &'static str| async move {
            let mut got = Vec::new();
            while let Some(run) = s.claim(owner, LEASE).await.expect("claim") {
                got.push(run.id);
                tokio::task::yield_now().await;
            }
            got
        };
        let (a, c) = tokio::join!(
            tokio::spawn(claimer(store.clone(), "a")),
            tokio::spawn(claimer(other, "b"))
        );
        let (a, c) = (a.expect("a"), c.expect("b"));
        let all: HashSet<RunId> = a.iter().chain(&c).copied().collect();
        assert_eq!(a.len() + c.len(), 20, "{b}: {a:?} {c:?}");
        assert_eq!(all.len(), 20, "{b}: no run claimed twice");
    }
}

#[tokio::test]
async fn sqlite_file_is_created_and_reopened_and_bad_urls_say_why() {
    let dir = std::env::temp_dir().join(format!("seatrial-store-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/a/b/seatrial.db", dir.display());
    let id = {
        let store = Store::open(&url)
            .await
            .expect("created with its directories");
        store.enqueue(&new_run("kept")).await.expect("enqueue").id
    };
    let store = Store::open(&url)
        .await
        .expect("reopened (migrations run again, harmlessly)");
    assert_eq!(
        store.get(id).await.expect("get").expect("run").recipe,
        "kept"
    );

    let err = Store::open("mysql://x/y")
        .await
        .expect_err("unknown kind")
        .to_string();
    assert!(
        err.contains("sqlite://") && err.contains("postgres://"),
        "{err}"
    );
    let base = postgres_url();
    let (scheme_user, rest) = base.split_once('@').expect("user in the URL");
    let (scheme, user_pass) = scheme_user.split_once("://").expect("scheme");
    let user = user_pass.split(':').next().unwrap_or_default();
    let wrong = format!("{scheme}://{user}:not-the-password-xyz@{rest}");
    let err = Store::open(&wrong)
        .await
        .expect_err("wrong password")
        .to_string();
    assert!(
        !err.contains("not-the-password-xyz"),
        "the password never shows: {err}"
    );
    assert!(err.contains("SEATRIAL_DATABASE_URL"), "{err}");
    std::fs::write(dir.join("file"), "x").expect("write");
    let err = Store::open(&format!("sqlite://{}/file/sub/db", dir.display()))
        .await
        .expect_err("a file in the way")
        .to_string();
    assert!(err.contains("cannot create the directory"), "{err}");
}

#[tokio::test]
async fn a_run_keeps_the_settings_it_was_queued_with() {
    for (store, backend) in fresh().await {
        let queued = store
            .enqueue(&NewRun {
                recipe: "https://git.example.org/coop/mono.git".into(),
                reference: Some("a".repeat(40)),
                commit_sha: Some("a".repeat(40)),
                timeout_secs: Some(5400),
                recipe_path: Some("apps/hello".into()),
                probe: Some(r#"{"path":"/healthz"}"#.into()),
                ..new_run("unused")
            })
            .await
            .expect("enqueue");
        let claimed = store
            .claim("server-b", LEASE)
            .await
            .expect("claim")
            .expect("a run");
        assert_eq!(claimed.id, queued.id, "{backend}");
        assert_eq!(
            claimed.recipe_path.as_deref(),
            Some("apps/hello"),
            "{backend}"
        );
        assert_eq!(
            claimed.probe.as_deref(),
            Some(r#"{"path":"/healthz"}"#),
            "{backend}"
        );
        assert_eq!(claimed.timeout_secs, Some(5400), "{backend}");
        assert_eq!(claimed.commit_sha, Some("a".repeat(40)), "{backend}");
        let plain = store
            .enqueue(&new_run("/recipes/x"))
            .await
            .expect("enqueue");
        assert_eq!((plain.recipe_path, plain.probe), (None, None), "{backend}");
    }
}

#[tokio::test]
async fn a_run_started_at_once_is_leased_and_never_claimed_from_the_queue() {
    for (store, backend) in fresh().await {
        let queued = store.enqueue(&new_run("queued")).await.expect("enqueue");
        assert!(!queued.promote, "runs do not promote unless asked");
        let started = store
            .start(
                &NewRun {
                    reference: Some("1.2.0+1".into()),
                    repo: Some("coop/app".into()),
                    requested_by: Some("nightly".into()),
                    promote: true,
                    ..NewRun::new(
                        "https://git.example.org/coop/app.git",
                        Mode::Cold,
                        Trigger::Schedule,
                    )
                },
                "server-a",
                LEASE,
            )
            .await
            .expect("start");
        assert_eq!(started.state, RunState::Running, "{backend}");
        assert_eq!(started.attempt, 1, "{backend}");
        assert_eq!(
            started.lease_owner.as_deref(),
            Some("server-a"),
            "{backend}"
        );
        assert!(started.lease_expires_at_ms.is_some() && started.started_at_ms.is_some());
        assert_eq!(started.trigger, Trigger::Schedule, "{backend}");
        assert!(started.promote, "{backend}");
        // The queue still holds only the queued run, and a claim takes that one.
        let queue: Vec<RunId> = store
            .queue()
            .await
            .expect("queue")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(queue, vec![queued.id], "{backend}");
        let claimed = store
            .claim("server-b", LEASE)
            .await
            .expect("claim")
            .expect("a run");
        assert_eq!(claimed.id, queued.id, "{backend}");
        // It is kept and ended like a claimed run.
        assert!(
            store
                .heartbeat(started.id, "server-a", LEASE)
                .await
                .expect("heartbeat")
        );
        assert!(
            !store
                .heartbeat(started.id, "server-b", LEASE)
                .await
                .expect("heartbeat")
        );
        assert!(
            store
                .finish(started.id, "server-a", RunState::Passed, None)
                .await
                .expect("finish")
        );
        let done = store.get(started.id).await.expect("get").expect("run");
        assert_eq!(
            (done.state, done.promote),
            (RunState::Passed, true),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn who_queued_and_who_cancelled_a_run_start_and_extend_its_log() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let texts = |chunks: Vec<seatrial_store::LogChunk>| {
            chunks.into_iter().map(|c| c.text).collect::<Vec<_>>()
        };
        let queued = store
            .enqueue(&NewRun {
                note: Some("queued by POST /api/runs (request r-1)".into()),
                ..new_run("noted")
            })
            .await
            .expect("enqueue");
        let running = store.enqueue(&new_run("running")).await.expect("enqueue");
        store
            .claim("one", LEASE)
            .await
            .expect("claim")
            .expect("run");
        store.append_log(queued.id, "later").await.expect("append");
        assert_eq!(
            texts(store.logs_since(queued.id, 0, 10).await.expect("logs")),
            ["queued by POST /api/runs (request r-1)", "later"],
            "{b}: the note is the run's first line"
        );
        let claimed = store
            .claim("one", LEASE)
            .await
            .expect("claim")
            .expect("run");
        assert_eq!(claimed.id, running.id, "{b}");
        for _ in 0..2 {
            store
                .request_cancel(running.id, None, Some("cancel requested (request r-2)"))
                .await
                .expect("cancel")
                .expect("run");
        }
        assert_eq!(
            texts(store.logs_since(running.id, 0, 10).await.expect("logs")),
            ["cancel requested (request r-2)"],
            "{b}: a repeated cancel changes nothing and is not logged again"
        );
    }
}

#[tokio::test]
async fn stats_tell_how_long_the_queue_waits_and_how_many_runs_failed_in_a_row() {
    for (store, _) in fresh().await {
        let b = store.backend();
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            (stats.oldest_queued_at_ms, stats.failing_in_a_row),
            (None, 0),
            "{b}"
        );
        let mut ids = Vec::new();
        for recipe in ["a", "b", "c", "d", "e"] {
            ids.push(store.enqueue(&new_run(recipe)).await.expect("enqueue"));
        }
        // Oldest first: passed, failed, cancelled (passed over), errored; "e" still waits.
        for state in [
            RunState::Passed,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Errored,
        ] {
            let run = store
                .claim("one", LEASE)
                .await
                .expect("claim")
                .expect("run");
            assert!(
                store
                    .finish(run.id, "one", state, None)
                    .await
                    .expect("finish")
            );
        }
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            stats.failing_in_a_row, 2,
            "{b}: errored and failed, back to the pass"
        );
        assert_eq!(stats.oldest_queued_at_ms, Some(ids[4].created_at_ms), "{b}");
    }
}
