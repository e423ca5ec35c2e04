//! `!testme` end to end: a fake Gitea (Gitea's shapes and quirks), the real `seatrial serve`,
//! real trials of the example recipe on the real engine, results back on the pull request.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use seatrial_forge::fake::FakeForge;
use serde_json::{Value, json};

const FORGE_TOKEN: &str = "gitea-token-3d9f0a";
const HOOK_SECRET: &str = "hook-secret-77";

fn runs(server: &Server) -> Vec<Value> {
    server.get("/api/runs")["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn hook(server: &Server, secret: &str, payload: &Value) -> u16 {
    hook_as(
        server,
        secret,
        payload,
        &format!("hook-{}", std::process::id()),
    )
}

/// [`hook`], delivered with the `X-Request-Id` given.
fn hook_as(server: &Server, secret: &str, payload: &Value, request_id: &str) -> u16 {
    let body = payload.to_string();
    let signature = seatrial_forge::webhook::sign(secret.as_bytes(), body.as_bytes());
    deliver(server, "issue_comment", Some(&signature), &body, request_id).0
}

/// Posts a comment on the fake forge and returns the `issue_comment` webhook payload Gitea
/// would deliver for it.
fn comment_delivery(forge: &FakeForge, repo: &str, pr: i64, user: &str, body: &str) -> Value {
    let comment = forge.post_comment(repo, pr, user, body);
    let at = forge
        .comments(repo, pr)
        .into_iter()
        .find(|c| c.id == comment)
        .map(|c| c.updated_at)
        .expect("the comment");
    json!({
        "action": "created", "is_pull": true,
        "issue": { "number": pr },
        "comment": { "id": comment, "body": body, "user": { "login": user }, "created_at": at, "updated_at": at },
        "repository": { "full_name": repo },
        "sender": { "login": user },
    })
}

#[test]
fn testme_comments_run_real_trials_and_report_back() {
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("forge");
    // The recipe repository with releases, and two PR heads: a good change and a broken one.
    let repo = data.join("hello-recipe");
    let o = Command::new(repo_root().join("scripts/example-history.sh"))
        .arg(&repo)
        .output()
        .expect("history");
    assert!(o.status.success());
    git(&repo, &["checkout", "-q", "-b", "good"]);
    std::fs::write(repo.join("NOTES.md"), "a harmless change\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "harmless"]);
    let good = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "broken", "main"]);
    std::fs::write(
        repo.join("tests/01-serves-its-page.sh"),
        "#!/bin/sh\necho broken on purpose >&2\nexit 1\n",
    )
    .expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "break the test"]);
    let broken = git(&repo, &["rev-parse", "HEAD"]);
    let clone_url = repo.to_str().expect("utf8");
    forge.open_pull("coop/hello", 7, &good, clone_url);
    forge.open_pull("coop/hello", 8, &broken, clone_url);
    forge.add_member("coop", "alice");
    // A monorepo: the recipe lives in apps/hello; its [[repos]] entry says so, with its own probe.
    let mono = data.join("monorepo");
    std::fs::create_dir_all(mono.join("apps")).expect("dir");
    let o = Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("examples/hello"))
        .arg(mono.join("apps/hello"))
        .output()
        .expect("cp");
    assert!(o.status.success());
    git(&mono, &["init", "-q", "-b", "main"]);
    git(
        &mono,
        &[
            "-c",
            "user.email=m@example.org",
            "-c",
            "user.name=M",
            "add",
            "-A",
        ],
    );
    git(
        &mono,
        &[
            "-c",
            "user.email=m@example.org",
            "-c",
            "user.name=M",
            "commit",
            "-q",
            "-m",
            "apps",
        ],
    );
    let mono_head = git(&mono, &["rev-parse", "HEAD"]);
    forge.open_pull("coop/monorepo", 3, &mono_head, mono.to_str().expect("utf8"));
    // In `hidden`, seatrial's account is no member: Gitea answers 303 — which denies.
    forge.open_pull("hidden/hello", 9, &good, clone_url);
    forge.add_member("hidden", "alice");
    forge.redirect_membership("hidden");
    // Asked before the repository was enrolled: never run.
    forge.post_comment("coop/hello", 7, "alice", "!testme");

    let config = data.join("seatrial.toml");
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1s\"\nallow = [\"carol\"]\nwebhook_secret = \"{HOOK_SECRET}\"\n\n[[repos]]\nname = \"coop/hello\"\nrecipe = \".\"\n\n[[repos]]\nname = \"hidden/hello\"\ntimeout = \"20m\"\n\n[[repos]]\nname = \"coop/monorepo\"\nrecipe = \"apps/hello\"\nprobe = {{ path = \"/healthz\", body = \"ok\" }}\n",
            forge.url
        ),
    )
    .expect("config");
    let config_path = config.to_str().expect("utf8").to_owned();
    let env = [
        ("SEATRIAL_CONFIG", config_path.as_str()),
        ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
    ];
    let server = Server::start(&data, None, &env);
    std::thread::sleep(Duration::from_secs(3));
    assert!(runs(&server).is_empty(), "old comments are not run");

    // A member asks; a stranger asks; quick mode is asked.
    forge.post_comment("coop/hello", 7, "alice", "Looks good!\n\n!testme");
    forge.post_comment("coop/hello", 7, "mallory", "!testme");
    forge.post_comment("coop/hello", 7, "alice", "!testme --quick");
    forge.post_comment("hidden/hello", 9, "alice", "!testme");
    let run = wait_for(
        "the run from alice's comment",
        Duration::from_secs(30),
        || runs(&server).first().cloned(),
    );
    assert_eq!(run["trigger"], "comment");
    assert_eq!(run["requested_by"], "alice");
    assert_eq!(run["pr"], 7);
    assert_eq!(run["commit"], json!(good));
    let id = run["id"].as_i64().expect("id");
    let done = server.wait_done(id, Duration::from_secs(300));
    assert_eq!(done["state"], "passed", "{done:#}\n{}", server.log_text());

    let statuses = wait_for("success on the PR head", Duration::from_secs(30), || {
        let s = forge.statuses(&good);
        (s.last().map(|x| x.state.as_str()) == Some("success")).then_some(s)
    });
    assert_eq!(statuses[0].state, "pending", "pending first");
    assert_eq!(statuses.last().expect("last").context, "seatrial/cold");
    assert!(
        statuses
            .last()
            .expect("last")
            .target_url
            .ends_with(&format!("/runs/{id}"))
    );
    let bot = forge.me();
    let replies: Vec<String> = forge
        .comments("coop/hello", 7)
        .into_iter()
        .filter(|c| c.user == bot)
        .map(|c| c.body)
        .collect();
    let result = replies
        .iter()
        .find(|b| b.contains(&format!("run [{id}]")))
        .expect("a result comment");
    assert!(
        result.contains("**passed**") && result.contains("| install | pass |"),
        "{result}"
    );
    assert!(result.contains("mode: cold"), "{result}");
    assert!(
        result.contains(&format!("commit `{}`", &good[..10])),
        "the comment names the commit it tested: {result}"
    );
    assert_eq!(
        replies.iter().filter(|b| b.contains("run [")).count(),
        1,
        "one comment per run, edited"
    );
    assert!(
        replies
            .iter()
            .any(|b| b.contains("@mallory") && b.contains("nothing was queued")),
        "{replies:#?}"
    );
    assert!(
        replies
            .iter()
            .any(|b| b.contains("--quick` needs a warm canonical of `")
                && b.contains("seatrial warm seed")),
        "{replies:#?}"
    );
    assert_eq!(
        runs(&server).len(),
        1,
        "the stranger and a quick run without a canonical queued nothing"
    );

    // A wrongly signed webhook is refused; the same comment by webhook and poll runs once.
    let payload = comment_delivery(&forge, "coop/hello", 8, "alice", "!testme");
    assert_eq!(hook(&server, "wrong-secret", &payload), 401);
    assert_eq!(hook(&server, HOOK_SECRET, &payload), 202);
    let failed = wait_for("the run of PR 8", Duration::from_secs(30), || {
        runs(&server).into_iter().find(|r| r["pr"] == 8)
    });
    let failed = server.wait_done(failed["id"].as_i64().expect("id"), Duration::from_secs(300));
    assert_eq!(failed["state"], "failed", "{failed:#}");
    wait_for(
        "failure on the broken head",
        Duration::from_secs(30),
        || {
            (forge.statuses(&broken).last().map(|s| s.state.clone()) == Some("failure".into()))
                .then_some(())
        },
    );
    let result = wait_for("the failure comment", Duration::from_secs(30), || {
        forge
            .comments("coop/hello", 8)
            .into_iter()
            .find(|c| c.user == bot && c.body.contains("**failed**"))
    });
    assert!(
        result.body.contains("| tests | fail |"),
        "the failing stage is named: {}",
        result.body
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&server).len(),
        2,
        "webhook + poll of one comment ran once"
    );

    // The monorepo's recipe is found in its subdirectory and probed as its entry says.
    forge.post_comment("coop/monorepo", 3, "alice", "!testme");
    let mono_run = wait_for("the monorepo run", Duration::from_secs(30), || {
        runs(&server)
            .into_iter()
            .find(|r| r["pr"] == 3 && r["repo"] == "coop/monorepo")
    });
    let mono_run = server.wait_done(
        mono_run["id"].as_i64().expect("id"),
        Duration::from_secs(300),
    );
    assert_eq!(mono_run["state"], "passed", "{mono_run:#}");
    let serve = mono_run["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == "serve")
        .cloned()
        .unwrap_or_default();
    assert!(
        serve["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/healthz")),
        "the repository's probe path was used: {serve:#}"
    );

    // A restart does not re-run old comments.
    drop(server);
    let server = Server::start(&data, None, &env);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(runs(&server).len(), 3, "no re-runs after a restart");

    // The forge token is nowhere: logs, comments, the database.
    assert!(!server.log_text().contains(FORGE_TOKEN));
    for entry in std::fs::read_dir(&data).expect("data dir").flatten() {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(FORGE_TOKEN),
                "the token leaked into {}",
                entry.path().display()
            );
        }
    }
    for pr in [7, 8] {
        assert!(
            forge
                .comments("coop/hello", pr)
                .iter()
                .all(|c| !c.body.contains(FORGE_TOKEN))
        );
    }
    assert_eq!(forge.unauthorized(), 0, "every request carried the token");
}

/// The poll benchmark (bench/forge-poll.sh runs it; ignored in the normal test run): 200
/// enrolled repositories with 10 open PRs each and no new comments, the forge answering after
/// 50 ms. Reports requests per repository per cycle and the cycle time.
#[test]
#[ignore = "a benchmark: bench/forge-poll.sh"]
fn poll_cycle_benchmark() {
    let repos = 200;
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("forge-bench");
    let sha = "c".repeat(40);
    let mut config = format!(
        "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1s\"\n",
        forge.url
    );
    for r in 0..repos {
        let name = format!("bench/r{r}");
        for pr in 1..=10 {
            forge.open_pull(&name, pr, &sha, "/nowhere.git");
            forge.post_comment(&name, pr, "alice", "looks good");
        }
        config.push_str(&format!("\n[[repos]]\nname = \"{name}\"\n"));
    }
    forge.set_latency(Duration::from_millis(50));
    let path = data.join("seatrial.toml");
    std::fs::write(&path, config).expect("config");
    let path = path.to_str().expect("utf8").to_owned();
    let server = Server::start(
        &data,
        None,
        &[
            ("SEATRIAL_CONFIG", path.as_str()),
            ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
            ("SEATRIAL_LOG", "warn,seatrial::serve::forge=debug"),
        ],
    );
    let cycles = |s: &Server| -> Vec<u64> {
        s.log_text()
            .lines()
            .filter(|l| l.contains("poll cycle done"))
            .filter_map(|l| {
                l.split("took_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    };
    // The first cycle enrols (reads every comment once); then steady cycles.
    wait_for("two poll cycles", Duration::from_secs(120), || {
        (cycles(&server).len() >= 2).then_some(())
    });
    let (c0, r0) = (cycles(&server).len(), forge.requests());
    let steady = 5;
    wait_for("steady cycles", Duration::from_secs(120), || {
        (cycles(&server).len() >= c0 + steady).then_some(())
    });
    let (c1, r1) = (cycles(&server).len(), forge.requests());
    let times = cycles(&server);
    let mut window: Vec<u64> = times[c0..c1].to_vec();
    window.sort_unstable();
    let per_cycle = (r1 - r0) as f64 / (c1 - c0) as f64;
    let median = window[window.len() / 2];
    let naive = repos as f64 * 11.0;
    println!(
        "| poll cycle (200 repos × 10 open PRs, no new comments, 50 ms forge latency) | value |\n|---|---:|\n| requests per cycle | {per_cycle:.0} ({:.2} per repo; aim 1) |\n| cycle time, median of {} | {median} ms ({:.2}× the 10 s aim) |\n| one-call-per-PR polling (list PRs + comments of each), requests per cycle | {naive:.0} (computed; {:.1}× ours) |",
        per_cycle / repos as f64,
        c1 - c0,
        median as f64 / 10_000.0,
        naive / per_cycle
    );
}

fn bot_comments(forge: &FakeForge, repo: &str, pr: i64) -> Vec<String> {
    let bot = forge.me();
    forge
        .comments(repo, pr)
        .into_iter()
        .filter(|c| c.user == bot)
        .map(|c| c.body)
        .collect()
}

/// What a `!testme` approves, end to end with the real server: pushes after the comment, closed
/// and merged pull requests and an unrecorded head move are refused (one reply each); a named
/// commit runs; a run comment whose answer is lost is not posted twice; and a run keeps the
/// settings it was queued with when a server with another config runs it.
#[test]
fn testme_runs_only_what_was_approved_with_the_settings_it_was_queued_with() {
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("forge-approval");
    // A monorepo whose recipe lives in apps/web (no published port: runs beside other tests).
    let mono = data.join("mono");
    portless_recipe(&mono.join("apps/web"));
    git(&mono, &["init", "-q", "-b", "main"]);
    let id = ["-c", "user.email=m@example.org", "-c", "user.name=M"];
    git(&mono, &[&id[..], &["add", "-A"]].concat());
    git(&mono, &[&id[..], &["commit", "-q", "-m", "apps"]].concat());
    let mono_head = git(&mono, &["rev-parse", "HEAD"]);
    forge.open_pull("coop/mono", 5, &mono_head, mono.to_str().expect("utf8"));
    forge.add_member("coop", "alice");

    let write_config = |name: &str, mono_entry: &str| {
        let path = data.join(name);
        std::fs::write(
            &path,
            format!(
                "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1s\"\n\n[[repos]]\nname = \"coop/hello\"\n\n[[repos]]\nname = \"coop/mono\"\n{mono_entry}\n",
                forge.url
            ),
        )
        .expect("config");
        path.to_str().expect("utf8").to_owned()
    };
    // Server A queues with its config (the recipe in apps/web, probed at /healthz for "ok")
    // but cannot claim: its engine does not answer.
    let config_a = write_config(
        "a.toml",
        "recipe = \"apps/web\"\ntimeout = \"20m\"\nprobe = { path = \"/healthz\", body = \"ok\" }",
    );
    let server_a = Server::start(
        &data,
        None,
        &[
            ("SEATRIAL_CONFIG", config_a.as_str()),
            ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    forge.post_comment("coop/mono", 5, "alice", "!testme");
    let queued = wait_for(
        "the monorepo run, queued by A",
        Duration::from_secs(30),
        || runs(&server_a).into_iter().find(|r| r["pr"] == 5),
    );
    assert_eq!(queued["state"], "queued", "A cannot claim: {queued:#}");
    assert_eq!(queued["recipe_path"], "apps/web");
    assert_eq!(queued["probe"]["path"], "/healthz");
    assert_eq!(queued["timeout_secs"], 1200);
    assert_eq!(queued["commit"], json!(mono_head));
    let mono_run = queued["id"].as_i64().expect("id");
    drop(server_a);

    // While no server runs, members comment; then things change under the comments.
    let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
    for pr in 11..=16 {
        let head = if pr == 16 { &c } else { &a };
        forge.open_pull("coop/hello", pr, head, "/nowhere.git");
    }
    forge.close_pull("coop/hello", 12);
    forge.merge_pull("coop/hello", 13);
    forge.push("coop/hello", 15, &[&a]);
    for pr in 12..=15 {
        forge.post_comment("coop/hello", pr, "alice", "!testme");
    }
    forge.push("coop/hello", 14, &[&b]);
    forge.move_head_unrecorded("coop/hello", 15, &b);
    forge.post_comment("coop/hello", 16, "alice", &format!("!testme {}", &c[..8]));
    // Every run comment is created but its answer comes after the client's 10 s timeout.
    forge.stall_comment_creation("seatrial-run", Duration::from_secs(12));

    // Server B has another config for coop/mono: if it used its own, the trial would fail (no
    // recipe at the root, a body that is not there).
    let config_b = write_config(
        "b.toml",
        "recipe = \".\"\nprobe = { path = \"/nope\", body = \"not-there\" }",
    );
    let server = Server::start(
        &data,
        None,
        &[
            ("SEATRIAL_CONFIG", config_b.as_str()),
            ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
        ],
    );
    let done = server.wait_done(mono_run, Duration::from_secs(300));
    assert_eq!(done["state"], "passed", "{done:#}\n{}", server.log_text());
    let serve = done["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == "serve")
        .cloned()
        .unwrap_or_default();
    assert!(
        serve["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/healthz")),
        "probed as queued, not as B's config says: {serve:#}"
    );

    // Refusals: one reply each, saying why; nothing queued, no status on either head.
    let expect_reply = |pr: i64, says: &str| {
        wait_for(
            &format!("the reply on #{pr}"),
            Duration::from_secs(30),
            || (!bot_comments(&forge, "coop/hello", pr).is_empty()).then_some(()),
        );
        std::thread::sleep(Duration::from_secs(2));
        let replies = bot_comments(&forge, "coop/hello", pr);
        assert_eq!(replies.len(), 1, "one reply on #{pr}: {replies:#?}");
        assert!(replies[0].contains(says), "#{pr}: {}", replies[0]);
    };
    expect_reply(12, "is closed");
    expect_reply(13, "already merged");
    expect_reply(14, "after your comment");
    expect_reply(15, "cannot tell");
    assert!(
        forge.statuses(&b).is_empty(),
        "a pushed-after head never gets a status"
    );

    // The named head runs (it errors: there is nothing to clone), and its comment, whose
    // creation was never confirmed, is found and edited rather than posted again.
    let named = wait_for(
        "the run of the named commit",
        Duration::from_secs(60),
        || runs(&server).into_iter().find(|r| r["pr"] == 16),
    );
    assert_eq!(named["commit"], json!(c));
    let named = server.wait_done(named["id"].as_i64().expect("id"), Duration::from_secs(120));
    assert_eq!(named["state"], "errored", "{named:#}");
    let body = wait_for("the verdict on #16", Duration::from_secs(60), || {
        let mine = bot_comments(&forge, "coop/hello", 16);
        mine.iter()
            .find(|b| b.contains("**errored**"))
            .cloned()
            .map(|b| (b, mine.len()))
    });
    assert_eq!(
        body.1, 1,
        "one comment for the run, edited — never posted twice"
    );
    assert!(
        body.0.contains(&format!("commit `{}`", &c[..10])),
        "{}",
        body.0
    );
    assert_eq!(
        forge.statuses(&c).last().map(|s| s.state.clone()),
        Some("error".to_owned())
    );
    let mono_comments: Vec<String> = bot_comments(&forge, "coop/mono", 5);
    assert_eq!(mono_comments.len(), 1, "{mono_comments:#?}");
    assert_eq!(
        runs(&server).len(),
        2,
        "only the approved runs were queued: {:#?}",
        runs(&server)
    );
    forge.stop_stalling();
}

#[test]
fn a_run_queued_by_the_webhook_names_its_request() {
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("forge-request-id");
    // Nothing to clone there: the run ends at once; what is checked is who queued it.
    let missing = data.join("no-such-recipe");
    let head = "b".repeat(40);
    forge.open_pull("coop/hello", 5, &head, missing.to_str().expect("utf8"));
    forge.add_member("coop", "alice");
    let config = data.join("seatrial.toml");
    // Polled once at start (enrolment), then not for an hour: only the webhook can queue.
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1h\"\nwebhook_secret = \"{HOOK_SECRET}\"\n\n[[repos]]\nname = \"coop/hello\"\n",
            forge.url
        ),
    )
    .expect("config");
    let config_path = config.to_str().expect("utf8").to_owned();
    let server = Server::start(
        &data,
        None,
        &[
            ("SEATRIAL_CONFIG", config_path.as_str()),
            ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
        ],
    );
    wait_for("enrolment", Duration::from_secs(30), || {
        server.log_text().contains("enrolled").then_some(())
    });

    let payload = comment_delivery(&forge, "coop/hello", 5, "alice", "!testme");
    let request_id = format!("hook-{}-5e0b", std::process::id());
    assert_eq!(hook_as(&server, HOOK_SECRET, &payload, &request_id), 202);
    let run = wait_for("the run of PR 5", Duration::from_secs(30), || {
        runs(&server).into_iter().find(|r| r["pr"] == 5)
    });
    let id = run["id"].as_i64().expect("id");
    let log = server.get(&format!("/api/runs/{id}/log"));
    assert_eq!(
        log["log"][0]["text"],
        format!("queued by `!testme` of @alice on coop/hello#5 (webhook, request {request_id})"),
        "{log:#}"
    );
    let server_log = server.log_text();
    assert!(
        server_log
            .lines()
            .any(|l| l.contains(&format!("request_id={request_id}"))
                && l.contains("queued from a comment")),
        "the handling of the delivery logs under its request id: {server_log}"
    );
}
