//! The push gate in `seatrial serve`: a signed Gitea push webhook for a repository enrolled with
//! `gate = true` queues a gate run (mode `gate`), run on the pushed commit with the app's
//! gate.toml, its stages on the API, its verdict as a `seatrial/gate` commit status on the
//! fake forge — and the deploy token from the server's environment in none of it.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const FORGE_TOKEN: &str = "gitea-token-gate-51";
const HOOK_SECRET: &str = "hook-secret-gate-19";
const DEPLOY_TOKEN: &str = "deploy-token-9f3e1c7a-never-shown";

/// A deploy API and readiness endpoint in one: answers every request 200, its body the
/// request's head (an API that echoes the `Authorization` header it got, which the gate must
/// scrub). Returns its base URL.
fn echoing_deploy_api() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().map_while(Result::ok) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = c.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let head = head.split("\r\n\r\n").next().unwrap_or_default().to_owned();
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                )
                .as_bytes(),
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn push_payload(repo: &str, git_ref: &str, after: &str, clone_url: &str) -> String {
    json!({
        "ref": git_ref,
        "before": "1111111111111111111111111111111111111111",
        "after": after,
        "repository": { "full_name": repo, "clone_url": clone_url },
        "pusher": { "login": "alice" },
        "commits": [],
    })
    .to_string()
}

fn push(server: &Server, body: &str, request_id: &str) -> (u16, Value) {
    let signature = seatrial_forge::webhook::sign(HOOK_SECRET.as_bytes(), body.as_bytes());
    let (status, answer) = deliver(server, "push", Some(&signature), body, request_id);
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn gate_runs(server: &Server) -> Vec<Value> {
    server.get("/api/runs?mode=gate")["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn pushes_to_gate_repositories_run_the_gate_and_set_commit_statuses() {
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("gate-serve");
    let deploy_api = echoing_deploy_api();
    // The app: `main` deploys (checks pass, the deploy API answers 200, ready at once);
    // `broken` has a failing check.
    let app = data.join("app");
    std::fs::create_dir_all(&app).expect("dir");
    git(&app, &["init", "-q", "-b", "main"]);
    std::fs::write(
        app.join("gate.toml"),
        format!(
            "[gate]\ndeploy_branches = [\"main\"]\n\n[[gate.checks]]\nname = \"unit\"\nrun = \"echo checking; echo \\\"token=[$GATE_DEPLOY_TOKEN]\\\"; test -z \\\"$GATE_DEPLOY_TOKEN\\\"\"\n\n[gate.deploy]\nkind = \"hook\"\nurl = \"{deploy_api}/api/compose.deploy\"\ntoken_env = \"GATE_DEPLOY_TOKEN\"\nbody = '{{\"composeId\": \"abc\"}}'\n\n[gate.ready]\nurl = \"{deploy_api}/health/ready\"\ntimeout = \"30s\"\n"
        ),
    )
    .expect("gate.toml");
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "gate"]);
    let good = git(&app, &["rev-parse", "HEAD"]);
    git(&app, &["checkout", "-q", "-b", "broken"]);
    let config = std::fs::read_to_string(app.join("gate.toml")).expect("read");
    std::fs::write(
        app.join("gate.toml"),
        config.replace(
            "name = \"unit\"",
            "name = \"lint\"\nrun = \"echo lint failed on purpose >&2; exit 3\"\n[[gate.checks]]\nname = \"unit\"",
        ),
    )
    .expect("write");
    git(&app, &["commit", "-q", "-am", "a failing check"]);
    let broken = git(&app, &["rev-parse", "HEAD"]);
    let clone_url = app.to_str().expect("utf8").to_owned();

    let config = data.join("seatrial.toml");
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1s\"\nwebhook_secret = \"{HOOK_SECRET}\"\n\n[[repos]]\nname = \"coop/app\"\ngate = true\n\n[[repos]]\nname = \"coop/recipe\"\n",
            forge.url
        ),
    )
    .expect("config");
    let config_path = config.to_str().expect("utf8").to_owned();
    let env = [
        ("SEATRIAL_CONFIG", config_path.as_str()),
        ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
        ("GATE_DEPLOY_TOKEN", DEPLOY_TOKEN),
    ];
    let server = Server::start(&data, None, &env);

    // Unsigned and badly signed pushes are refused and queue nothing.
    let body = push_payload("coop/app", "refs/heads/main", &good, &clone_url);
    let (status, _) = deliver(&server, "push", None, &body, "unsigned");
    assert_eq!(status, 401, "an unsigned push");
    let bad = seatrial_forge::webhook::sign(b"another secret", body.as_bytes());
    let (status, _) = deliver(&server, "push", Some(&bad), &body, "badly-signed");
    assert_eq!(status, 401, "a badly signed push");
    // A repository without `gate = true`, a tag and a deletion: acknowledged, ignored, said why.
    let (status, answer) = push(
        &server,
        &push_payload("coop/recipe", "refs/heads/main", &good, &clone_url),
        "no-gate",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|w| w.contains("gate = true")),
        "{answer}"
    );
    let (status, answer) = push(
        &server,
        &push_payload("coop/app", "refs/tags/v1", &good, &clone_url),
        "tag",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ignored"].as_str().is_some(), "{answer}");
    let (status, answer) = push(
        &server,
        &push_payload(
            "coop/app",
            "refs/heads/old",
            "0000000000000000000000000000000000000000",
            &clone_url,
        ),
        "deleted",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|w| w.contains("deleted")),
        "{answer}"
    );
    assert!(gate_runs(&server).is_empty(), "nothing queued so far");
    assert!(
        server.get("/api/runs")["runs"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no trial queued either"
    );

    // A push to main: gate, deploy, ready — passed, success.
    let (status, answer) = push(&server, &body, "push-main-7");
    assert_eq!(status, 202, "{answer}\n{}", server.log_text());
    let id = answer["queued"].as_i64().expect("the run id");
    let started = Instant::now();
    let done = server.wait_done(id, Duration::from_secs(120));
    eprintln!("the main push's gate took {:?}", started.elapsed());
    assert_eq!(done["state"], "passed", "{done:#}\n{}", server.log_text());
    assert_eq!(done["mode"], "gate");
    assert_eq!(done["trigger"], "push");
    assert_eq!(done["commit"], json!(good));
    let stages = stage_names(&done);
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "checkout",
            "checks",
            "migrations",
            "deploy",
            "ready",
            "rollback"
        ],
        "{done:#}"
    );
    assert_eq!(stages[1].1, "pass");
    assert_eq!(stages[2].1, "skipped", "no [gate.migrations]");
    assert_eq!(
        (stages[3].1.as_str(), stages[4].1.as_str()),
        ("pass", "pass")
    );
    let lines = server.log_lines(id);
    assert!(
        lines[0].contains("request push-main-7") && lines[0].contains("push of @alice"),
        "the first log line names the push and its request: {lines:#?}"
    );
    // The check passes only when it cannot see the deploy token's variable.
    assert!(
        lines.iter().any(|l| l.contains("✓ checks pass")),
        "the check ran without the deploy token in its environment: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Bearer ***")),
        "the deploy API's echo of the token is scrubbed: {lines:#?}"
    );
    let statuses = wait_for("success on main's commit", Duration::from_secs(30), || {
        let s = forge.statuses(&good);
        (s.last().map(|x| x.state.as_str()) == Some("success")).then_some(s)
    });
    assert_eq!(statuses[0].state, "pending", "pending first: {statuses:?}");
    assert!(statuses.iter().all(|s| s.context == "seatrial/gate"));
    assert!(
        statuses
            .last()
            .expect("last")
            .target_url
            .ends_with(&format!("/runs/{id}"))
    );

    // A push to `broken`: a check fails, nothing after it runs — failed, failure.
    let (status, answer) = push(
        &server,
        &push_payload("coop/app", "refs/heads/broken", &broken, &clone_url),
        "push-broken",
    );
    assert_eq!(status, 202, "{answer}");
    let failed_id = answer["queued"].as_i64().expect("the run id");
    let failed = server.wait_done(failed_id, Duration::from_secs(120));
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(
        stage_names(&failed),
        [
            ("checkout", "pass"),
            ("checks", "fail"),
            ("migrations", "skipped"),
            ("deploy", "skipped"),
            ("ready", "skipped"),
            ("rollback", "skipped"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("checks fail") && r.contains("lint")),
        "{failed:#}"
    );
    assert!(
        server
            .log_lines(failed_id)
            .iter()
            .any(|l| l.contains("lint failed on purpose")),
        "the failing check's output is in the log"
    );
    let statuses = wait_for(
        "failure on broken's commit",
        Duration::from_secs(30),
        || {
            let s = forge.statuses(&broken);
            (s.last().map(|x| x.state.as_str()) == Some("failure")).then_some(s)
        },
    );
    assert_eq!(statuses[0].state, "pending");
    assert_eq!(statuses.last().expect("last").context, "seatrial/gate");

    // Both runs are listed as gate runs; the dashboard labels them.
    let listed: Vec<i64> = gate_runs(&server)
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(listed, [failed_id, id]);
    assert!(
        server.get("/api/runs?mode=cold")["runs"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let (_, page, _) = http("GET", &server.url(&format!("/runs/{id}")), None, None).expect("page");
    assert!(
        page.contains("mode-gate") && page.contains("ready"),
        "{page}"
    );

    // The deploy token (which the deploy API echoed back) is nowhere: not in the runs' logs,
    // stages or the server's own log.
    for run in [id, failed_id] {
        let all = format!(
            "{}\n{}",
            server.log_lines(run).join("\n"),
            server.get(&format!("/api/runs/{run}"))
        );
        assert!(
            !all.contains(DEPLOY_TOKEN),
            "run {run} shows the token: {all}"
        );
    }
    assert!(!server.log_text().contains(DEPLOY_TOKEN));
    assert!(
        std::fs::read(data.join("seatrial.db"))
            .map(|db| !String::from_utf8_lossy(&db).contains(DEPLOY_TOKEN))
            .unwrap_or(true),
        "the token is not in the store"
    );
}
