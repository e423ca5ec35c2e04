//! `seatrial serve` as operators run it: the real binary, a real store, real trials on the real
//! engine. What is checked is what a user of the API, the dashboard or `seatrial runs` sees.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[test]
fn api_queues_a_real_trial_and_shows_its_stages_and_metrics() {
    let data = scratch("e2e");
    let server = Server::start(&data, None, &[]);

    // Writes without (or with a wrong) token are refused and queue nothing.
    let body = json!({ "recipe": "examples/hello" });
    let (status, text, head) =
        http("POST", &server.url("/api/runs"), None, Some(&body)).expect("POST");
    assert_eq!(status, 401, "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, _) =
        http("POST", &server.url("/api/runs"), Some("wrong"), Some(&body)).expect("POST");
    assert_eq!(status, 401);
    assert_eq!(
        server.get("/api/runs")["runs"],
        json!([]),
        "nothing was queued"
    );
    let (status, text, _) = http(
        "POST",
        &server.url("/api/runs"),
        Some(TOKEN),
        Some(&json!({ "recipe": "x", "mode": "quick" })),
    )
    .expect("POST");
    assert_eq!(
        status, 422,
        "a quick run of a recipe without a canonical is refused: {text}"
    );
    assert!(
        text.contains("recipe `x` has no canonical") && text.contains("seatrial warm seed"),
        "the refusal names the recipe and how to make a canonical: {text}"
    );

    // The request id is propagated back.
    let (_, _, head) = http("GET", &server.url("/healthz"), None, None).expect("GET");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-request-id: test-{}", std::process::id())),
        "{head}"
    );

    let recipe = repo_root().join("examples/hello");
    let id = server.enqueue(recipe.to_str().expect("utf8"));
    let run = server.wait_done(id, Duration::from_secs(180));
    assert_eq!(run["state"], "passed", "{run:#}\n{}", server.log_text());
    assert_eq!(run["mode"], "cold");
    assert_eq!(run["attempt"], 1);
    let stages = stage_names(&run);
    for name in ["prepare", "install", "serve", "teardown"] {
        assert!(
            stages.contains(&(name.to_owned(), "pass".to_owned())),
            "stage {name} passed: {stages:?}"
        );
    }
    assert!(run["stages"][1]["duration_ms"].as_i64().expect("ms") > 0);
    let stack = run["stack"].as_str().expect("stack");
    assert_eq!(leftovers(stack), "", "the trial tore down");

    // The log has the stage lines.
    let lines = server.log_lines(id);
    assert!(
        lines.iter().any(|l| l.starts_with("✓ install pass")),
        "{lines:#?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("passed after")),
        "{lines:#?}"
    );

    // Metrics count it.
    let (status, metrics, _) = http("GET", &server.url("/metrics"), None, None).expect("GET");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("seatrial_runs{state=\"passed\",mode=\"cold\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("seatrial_queue_depth 0"), "{metrics}");
    assert!(
        metrics
            .contains("seatrial_stage_duration_seconds_count{stage=\"install\",result=\"pass\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "seatrial_http_requests_total{method=\"POST\",route=\"/api/runs\",status=\"401\"} 2"
        ),
        "{metrics}"
    );
    let (status, ready, _) = http("GET", &server.url("/readyz"), None, None).expect("GET");
    assert_eq!(status, 200, "{ready}");

    // The dashboard lists it with its mode, and the run page shows the stages.
    let (_, list, _) = http("GET", &server.url("/?state=passed"), None, None).expect("GET");
    assert!(list.contains(&format!("href=\"/runs/{id}\"")), "{list}");
    assert!(list.contains("mode-cold"), "{list}");
    let (_, page, _) = http("GET", &server.url(&format!("/runs/{id}")), None, None).expect("GET");
    assert!(
        page.contains("<table id=\"stages\">") && page.contains(">install<"),
        "{page}"
    );

    // The operator's CLI sees the same.
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["runs", "show", &id.to_string(), "--server", &server.base])
        .output()
        .expect("runs show");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("passed") && out.contains("install"), "{out}");
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["runs", "cancel", &id.to_string(), "--server", &server.base])
        .env_remove("SEATRIAL_API_TOKEN")
        .output()
        .expect("runs cancel");
    assert_eq!(
        o.status.code(),
        Some(2),
        "cancel without a token is refused"
    );
    assert!(
        !server.log_text().contains(TOKEN),
        "the token never reaches the log"
    );
}

#[test]
fn killed_server_run_is_recovered_and_its_stack_removed() {
    let data = scratch("crash");
    let recipe = portless_recipe(&data.join("recipe"));
    let fast = [("SEATRIAL_LEASE", "3s")];
    let first = Server::start(&data, None, &fast);
    let id = first.enqueue(&recipe);
    // Wait until its app is on the engine, then kill -9 the server mid-trial.
    let until = Instant::now() + Duration::from_secs(60);
    let stack = loop {
        let run = first.get(&format!("/api/runs/{id}"));
        if let Some(stack) = run["stack"].as_str()
            && run["state"] == "running"
            && !leftovers(stack).is_empty()
        {
            break stack.to_owned();
        }
        assert!(Instant::now() < until, "the trial never started: {run:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(first);

    let second = Server::start(&data, None, &fast);
    let run = second.wait_done(id, Duration::from_secs(120));
    assert_eq!(run["state"], "passed", "{run:#}\n{}", second.log_text());
    assert_eq!(run["attempt"], 2, "re-queued once after the crash");
    assert_eq!(
        leftovers(&stack),
        "",
        "the killed attempt's stack was removed"
    );
    let text = second.log_lines(id);
    assert!(
        text.iter()
            .any(|l| l.contains("expired") && l.contains("re-queued")),
        "the log says why it ran again: {text:#?}"
    );
    let now = run["stack"].as_str().expect("stack");
    assert_eq!(leftovers(now), "");
    assert_eq!(
        second.get("/api/runs?state=running")["runs"],
        json!([]),
        "nothing stays running"
    );
}

#[test]
fn two_servers_on_one_postgres_run_each_of_20_runs_once() {
    // A database of its own, so the count is exact.
    let db = fresh_postgres("serve");
    let own = db.url.clone();

    let data = scratch("pg");
    let recipe = portless_recipe(&data.join("recipe"));
    let a = Server::start(&data.join("a"), Some(&own), &[]);
    let ids: Vec<i64> = (0..20).map(|_| a.enqueue(&recipe)).collect();
    let b = Server::start(&data.join("b"), Some(&own), &[]);
    let mut owners = std::collections::HashMap::new();
    for id in &ids {
        let run = b.wait_done(*id, Duration::from_secs(600));
        assert_eq!(run["state"], "passed", "{run:#}");
        assert_eq!(run["attempt"], 1, "run {id} was claimed once");
        let starts: Vec<String> = a
            .log_lines(*id)
            .into_iter()
            .filter(|l| l.starts_with("attempt "))
            .collect();
        assert_eq!(starts.len(), 1, "run {id} ran exactly once: {starts:?}");
        let owner = starts[0]
            .split(" on ")
            .nth(1)
            .and_then(|s| s.split(':').nth(1))
            .unwrap_or_default()
            .to_owned();
        *owners.entry(owner).or_insert(0) += 1;
    }
    assert_eq!(owners.values().sum::<i32>(), 20);
    assert_eq!(owners.len(), 2, "both servers took runs: {owners:?}");
    drop((a, b));
}

/// A headless Chromium driven through chromedriver (WebDriver), at a phone's screen size.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: scripts/setup.sh installs Debian's chromium and chromium-driver");
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        while http("GET", &format!("{base}/status"), None, None).is_err() {
            assert!(Instant::now() < until, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=390,844"]
            }
        }}});
        let (status, body, _) =
            http("POST", &format!("{base}/session"), None, Some(&caps)).expect("new session");
        assert_eq!(status, 200, "chromium did not start: {body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        let driver_base = base;
        Self {
            driver,
            base: driver_base,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let (status, text, _) = http(method, &url, None, Some(body)).expect("webdriver");
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str::<Value>(&text).expect("json")["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", &json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": [] }),
        )
    }
}

#[test]
fn dashboard_in_a_browser_follows_the_live_log() {
    let data = scratch("browser");
    let dir = data.join("recipe");
    let recipe = portless_recipe(&dir);
    // A test that takes a while and talks, so the log grows while the page is open.
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    let script = dir.join("tests/01-slow");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo step $i; sleep 1; done\n",
    )
    .expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .expect("chmod");
    let server = Server::start(&data, None, &[]);
    let id = server.enqueue(&recipe);
    let browser = Browser::start();

    // Open the run page while the run is queued or running.
    browser.open(&server.url(&format!("/runs/{id}")));
    let lines = || {
        browser
            .eval(
                "var l = document.getElementById('log'); return l ? Number(l.dataset.lines) : -1;",
            )
            .as_i64()
            .unwrap_or(-1)
    };
    let until = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let n = lines();
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < until, "no log line reached the page");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut advanced = false;
    while Instant::now() < until + Duration::from_secs(60) {
        let text =
            browser.eval("var l = document.getElementById('log'); return l ? l.textContent : '';");
        if lines() > first && text.as_str().is_some_and(|t| t.contains("install")) {
            advanced = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        advanced,
        "the live log did not advance past {first} line(s)"
    );

    // When the run ends, the page shows the verdict and the stages table.
    let run = server.wait_done(id, Duration::from_secs(120));
    assert_eq!(run["state"], "passed", "{run:#}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let state = browser.eval(
            "var s = document.querySelector('#state [data-state]'); return s ? s.dataset.state : '';",
        );
        let stages = browser.eval("return !!document.getElementById('stages');");
        if state == "passed" && stages == json!(true) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the page did not show the end: {state} {stages}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = browser.eval("return document.getElementById('log').textContent;");
    assert!(
        log.as_str().is_some_and(|t| t.contains("tests pass")),
        "the whole log is on the page: {log}"
    );

    // Usable on a phone: the run list fits the 390 px wide screen without sideways scrolling.
    browser.open(&server.url("/"));
    let overflow = browser.eval(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the run list scrolls sideways on a phone by {overflow} px"
    );
    let mode = browser
        .eval("var b = document.querySelector('#runs .mode-cold'); return b ? b.textContent : '';");
    assert_eq!(mode, "cold", "every run says its mode");
}

#[test]
fn infra_page_in_a_browser_shows_release_notes_as_text() {
    use seatrial_trial::infra::{AppState, InfraDir, LastAction, Release};
    let data = scratch("infra");
    let config = data.join("seatrial.toml");
    std::fs::write(
        &config,
        "[schedule]\nnightly = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\n\n[[infra]]\nname = \"stproxy\"\nrecipe = \"https://git.example.org/coop-cloud/traefik.git\"\n",
    )
    .expect("config");
    // Release notes are whatever a recipe's maintainers wrote: markup in them must stay text.
    let notes = "Run the <b>manual</b> migration first.\n<script>document.body.dataset.pwned = 'script'</script><img src=x onerror=\"document.body.dataset.pwned = 'img'\">";
    InfraDir::new(&data)
        .save(
            "stproxy",
            &AppState {
                last_good: Some(Release {
                    version: "2.4.1+2.11".into(),
                    commit: "c0ffee".into(),
                }),
                last: Some(LastAction {
                    action: "held".into(),
                    from: Some("2.4.1+2.11".into()),
                    to: Some("3.0.0+3.0".into()),
                    reason: "the notes of 3.0.0+3.0 ask for a human".into(),
                    notes: Some(notes.into()),
                    at: "2025-01-10T01:30:05Z".into(),
                }),
                ..AppState::default()
            },
        )
        .expect("state");
    let server = Server::start(
        &data,
        None,
        &[("SEATRIAL_CONFIG", config.to_str().expect("utf8"))],
    );
    let browser = Browser::start();
    browser.open(&server.url("/"));
    let next = browser.eval(
        "var t = document.querySelector('#next-nightly time'); return t ? [t.getAttribute('datetime'), t.textContent] : null;",
    );
    assert!(
        next[0].as_str().is_some_and(|t| t.ends_with(":30:00Z"))
            && next[1].as_str().is_some_and(|t| t.contains(" 02:30 ")),
        "the runs page says when the next nightly job is: {next}"
    );
    // From the nav to the infra page.
    browser.eval("document.querySelector('header a[href=\"/infra\"]').click(); return true;");
    let until = Instant::now() + Duration::from_secs(10);
    while browser.eval("return location.pathname;") != json!("/infra") {
        assert!(
            Instant::now() < until,
            "the nav link did not lead to /infra"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = |script: &str| {
        browser.eval(&format!(
            "var r = document.querySelector('[data-app=\"stproxy\"]'); return r ? {script} : null;"
        ))
    };
    assert_eq!(
        row("r.querySelector('.last-good').textContent"),
        json!("2.4.1+2.11")
    );
    assert_eq!(
        row("r.querySelector('[data-action]').dataset.action"),
        json!("held")
    );
    assert!(
        row("r.querySelector('[data-attention=\"human\"]').textContent")
            .as_str()
            .is_some_and(|t| t.contains("3.0.0+3.0")),
        "the app is marked as waiting for a human"
    );
    // The notes are there, as the text they are, and nothing in them ran.
    browser.eval("document.querySelector('.held-notes summary').click(); return true;");
    assert_eq!(
        row("r.querySelector('.held-notes pre').textContent"),
        json!(notes)
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('main script, main img, main b').length;"),
        json!(0)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        browser.eval("return document.body.dataset.pwned || '';"),
        json!("")
    );
    let overflow = browser.eval(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the infra page scrolls sideways on a phone by {overflow} px"
    );
}

#[test]
fn run_timeout_and_cancel_stop_running_trials_with_teardown() {
    let data = scratch("stop");
    let dir = data.join("recipe");
    let recipe = portless_recipe(&dir);
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    let script = dir.join("tests/01-forever");
    std::fs::write(&script, "#!/bin/sh\nsleep 120\n").expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .expect("chmod");
    let server = Server::start(&data, None, &[("SEATRIAL_CAPACITY", "2")]);

    let (status, body, _) = http(
        "POST",
        &server.url("/api/runs"),
        Some(TOKEN),
        Some(&json!({ "recipe": recipe, "timeout": "6s" })),
    )
    .expect("POST");
    assert_eq!(status, 201, "{body}");
    let timed: Value = serde_json::from_str(&body).expect("json");
    let timed = timed["id"].as_i64().expect("id");
    let cancelled = server.enqueue(&recipe);

    // Cancel the second once its tests run, through the operator's CLI.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let log = server.get(&format!("/api/runs/{cancelled}/log"));
        if log["log"].as_array().is_some_and(|l| {
            l.iter()
                .any(|c| c["text"].as_str().is_some_and(|t| t.starts_with("▶ tests")))
        }) {
            break;
        }
        assert!(
            Instant::now() < until,
            "run {cancelled} never reached its tests: {log:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args([
            "runs",
            "cancel",
            &cancelled.to_string(),
            "--server",
            &server.base,
        ])
        .env("SEATRIAL_API_TOKEN", TOKEN)
        .output()
        .expect("runs cancel");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    for (id, state, why) in [
        (timed, "timed_out", "run timeout of 6"),
        (cancelled, "cancelled", "cancelled"),
    ] {
        let run = server.wait_done(id, Duration::from_secs(90));
        assert_eq!(run["state"], state, "{run:#}");
        assert!(
            run["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{run:#}"
        );
        let teardown = run["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .find(|s| s["name"] == "teardown")
            .cloned()
            .unwrap_or_default();
        assert_eq!(teardown["result"], "pass", "{run:#}");
        assert_eq!(leftovers(run["stack"].as_str().expect("stack")), "");
    }
}

#[test]
fn a_clone_that_never_answers_times_out_while_heartbeats_keep_the_lease() {
    let port = silent_server();
    let data = scratch("hung-clone");
    // A short lease: a trial that blocked the runtime (no heartbeats) would lose it to the
    // server's own reaper and come back as a second attempt.
    let server = Server::start(&data, None, &[("SEATRIAL_LEASE", "2s")]);
    let (status, body, _) = http(
        "POST",
        &server.url("/api/runs"),
        Some(TOKEN),
        Some(&json!({ "recipe": format!("http://127.0.0.1:{port}/recipe.git"), "ref": "main", "timeout": "8s" })),
    )
    .expect("POST");
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"]
        .as_i64()
        .expect("id");
    let started = Instant::now();
    let run = server.wait_done(id, Duration::from_secs(60));
    assert_eq!(run["state"], "timed_out", "{run:#}");
    assert_eq!(run["attempt"], 1, "the lease held throughout: {run:#}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped {:?} after it was queued",
        started.elapsed()
    );
    let left = processes_mentioning(&format!("127.0.0.1:{port}"));
    assert!(left.is_empty(), "git outlived the run: {left}");
}

#[test]
fn a_server_whose_clock_runs_an_hour_ahead_never_reaps_a_healthy_run() {
    let db = fresh_postgres("skew");
    let own = db.url.clone();
    let data = scratch("skew");
    let dir = data.join("recipe");
    let recipe = portless_recipe(&dir);
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    let script = dir.join("tests/01-slow");
    std::fs::write(&script, "#!/bin/sh\nsleep 8\n").expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .expect("chmod");
    let lease = ("SEATRIAL_LEASE", "2s");
    let a = Server::start(&data.join("a"), Some(&own), &[lease]);
    let id = a.enqueue(&recipe);
    let until = Instant::now() + Duration::from_secs(60);
    while a.get(&format!("/api/runs/{id}"))["state"] != "running" {
        assert!(Instant::now() < until, "run {id} never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second server on the same database whose clock is an hour ahead: by its own clock every
    // lease of server a expired long ago. It reaps at start and every second.
    let mut env = vec![lease];
    env.extend(skewed_clock("+1h"));
    let b = Server::start(&data.join("b"), Some(&own), &env);
    // Its clock really is skewed: a run it queues is stamped an hour ahead.
    let (status, body, _) = http(
        "POST",
        &b.url("/api/runs"),
        Some(TOKEN),
        Some(&json!({ "recipe": recipe })),
    )
    .expect("POST");
    assert_eq!(status, 201, "{body}");
    let probe: Value = serde_json::from_str(&body).expect("json");
    let first = a.get(&format!("/api/runs/{id}"));
    let stamp = |run: &Value, key: &str| {
        run[key]
            .as_str()
            .and_then(|t| t.get(11..13))
            .and_then(|h| h.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no {key} in {run:#}"))
    };
    assert_eq!(
        (stamp(&probe, "created_at") - stamp(&first, "created_at")).rem_euclid(24),
        1,
        "server b runs an hour ahead: {probe:#} vs {first:#}"
    );

    let run = a.wait_done(id, Duration::from_secs(120));
    assert_eq!(run["state"], "passed", "{run:#}\n{}", b.log_text());
    assert_eq!(
        run["attempt"], 1,
        "never reaped by the server with the skewed clock: {run:#}"
    );
    let other = probe["id"].as_i64().expect("id");
    let _ = a.wait_done(other, Duration::from_secs(120));
}

#[test]
fn the_request_that_queued_or_cancelled_a_run_is_named_in_its_log() {
    // A clone that never answers keeps the run running until it is cancelled.
    let port = silent_server();
    let data = scratch("request-ids");
    let server = Server::start(&data, None, &[]);
    let queued_by = format!("queue-{}-7f3a", std::process::id());
    let cancelled_by = format!("cancel-{}-c41d", std::process::id());

    let (status, body, head) = http_as(
        &queued_by,
        "POST",
        &server.url("/api/runs"),
        Some(TOKEN),
        Some(&json!({ "recipe": format!("http://127.0.0.1:{port}/recipe.git"), "ref": "main" })),
    )
    .expect("POST");
    assert_eq!(status, 201, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-request-id: {queued_by}")),
        "{head}"
    );
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"]
        .as_i64()
        .expect("id");
    let until = Instant::now() + Duration::from_secs(30);
    while server.get(&format!("/api/runs/{id}"))["state"] != "running" {
        assert!(Instant::now() < until, "run {id} never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body, _) = http_as(
        &cancelled_by,
        "POST",
        &server.url(&format!("/api/runs/{id}/cancel")),
        Some(TOKEN),
        None,
    )
    .expect("POST cancel");
    assert_eq!(status, 202, "{body}");
    let run = server.wait_done(id, Duration::from_secs(60));
    assert_eq!(run["state"], "cancelled", "{run:#}");

    // The run's log, as the API returns it: queued by one request, cancelled by the other.
    let lines = server.log_lines(id);
    assert_eq!(
        lines.first().map(String::as_str),
        Some(format!("queued by POST /api/runs (request {queued_by})").as_str()),
        "{lines:#?}"
    );
    let cancel_line =
        format!("cancel requested by POST /api/runs/{id}/cancel (request {cancelled_by})");
    let at = lines.iter().position(|l| *l == cancel_line);
    assert!(at.is_some(), "{cancel_line:?} in {lines:#?}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("cancelled after")),
        "the verdict follows the cancel: {lines:#?}"
    );

    // The dashboard's live log (server-sent events) shows the same lines.
    let (status, events, _) = http(
        "GET",
        &server.url(&format!("/runs/{id}/events")),
        None,
        None,
    )
    .expect("GET events");
    assert_eq!(status, 200);
    assert!(
        events.contains(&format!(
            "data: queued by POST /api/runs (request {queued_by})"
        )) && events.contains(&format!("data: {cancel_line}")),
        "{events}"
    );

    // The server's own log lines of those requests carry their ids.
    let server_log = server.log_text();
    let line_with = |id: &str, what: &str| {
        server_log
            .lines()
            .any(|l| l.contains(&format!("request_id={id}")) && l.contains(what))
    };
    assert!(line_with(&queued_by, "queued"), "{server_log}");
    assert!(line_with(&cancelled_by, "cancel requested"), "{server_log}");
}
