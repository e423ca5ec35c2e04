//! Recipe content from a pull request is untrusted, end to end: the fake Gitea, the real
//! `seatrial serve`, the real engine. A PR whose compose mounts the Docker socket and `/etc` is
//! refused at prepare — the finding on the PR, nothing deployed — unless its repository's
//! `[[repos]]` entry permits them; and the recipe's tests never see seatrial's secrets.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const FORGE_TOKEN: &str = "gitea-token-untrusted-51c7";
const HOOK_SECRET: &str = "hook-secret-untrusted-e2";

fn run_of(server: &Server, repo: &str) -> Option<Value> {
    server.get("/api/runs")["runs"]
        .as_array()?
        .iter()
        .find(|r| r["repo"] == repo)
        .cloned()
}

#[test]
fn a_pr_mounting_the_docker_socket_or_etc_is_refused_unless_permitted() {
    let forge = fake_forge(FORGE_TOKEN);
    let data = scratch("untrusted");
    // main: a harmless recipe. The PR: mounts the Docker socket and /etc, and adds a test that
    // fails if any of seatrial's secrets is in its environment.
    let repo = data.join("recipe");
    portless_recipe(&repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "harmless"]);
    git(&repo, &["checkout", "-q", "-b", "wants-the-host"]);
    std::fs::write(
        repo.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:2\n    volumes:\n      - /var/run/../run/docker.sock:/var/run/docker.sock:ro\n      - /etc:/host-etc:ro\n",
    )
    .expect("write");
    std::fs::create_dir_all(repo.join("tests")).expect("dir");
    let test = repo.join("tests/01-no-seatrial-secrets.sh");
    std::fs::write(
        &test,
        format!(
            "#!/bin/sh\nif env | grep -e '{FORGE_TOKEN}' -e '{TOKEN}' -e '{HOOK_SECRET}' -e SEATRIAL_FORGE_TOKEN -e SEATRIAL_API_TOKEN -e SEATRIAL_WEBHOOK_SECRET -e SEATRIAL_CONFIG >&2; then\n  echo 'seatrial secrets leaked into the test' >&2\n  exit 1\nfi\necho clean\n"
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&test, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "mount the host"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let clone_url = repo.to_str().expect("utf8");
    forge.open_pull("coop/plain", 1, &head, clone_url);
    forge.open_pull("coop/proxy", 2, &head, clone_url);
    forge.add_member("coop", "alice");

    let config = data.join("seatrial.toml");
    std::fs::write(
        &config,
        format!(
            "[forge]\nkind = \"gitea\"\nurl = \"{}\"\npoll_interval = \"1s\"\n\n[[repos]]\nname = \"coop/plain\"\n\n[[repos]]\nname = \"coop/proxy\"\npermit = [\"docker-socket\", \"host-bind:/etc\"]\n",
            forge.url
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf8").to_owned();
    let server = Server::start(
        &data,
        None,
        &[
            ("SEATRIAL_CONFIG", config.as_str()),
            ("SEATRIAL_FORGE_TOKEN", FORGE_TOKEN),
            ("SEATRIAL_WEBHOOK_SECRET", HOOK_SECRET),
        ],
    );
    // Let the first poll enrol both repositories (existing comments are marked seen).
    std::thread::sleep(Duration::from_secs(3));
    let bot = forge.me();

    // Not permitted: refused at prepare, with the findings on the PR, and nothing deployed.
    forge.post_comment("coop/plain", 1, "alice", "!testme");
    let refused = wait_for("the run of coop/plain", Duration::from_secs(30), || {
        run_of(&server, "coop/plain")
    });
    let refused = server.wait_done(
        refused["id"].as_i64().expect("id"),
        Duration::from_secs(120),
    );
    assert_eq!(refused["state"], "errored", "{refused:#}");
    let stages = stage_names(&refused);
    assert_eq!(
        stages.first(),
        Some(&("prepare".to_owned(), "error".to_owned())),
        "{refused:#}"
    );
    assert!(
        !stages
            .iter()
            .any(|(name, result)| name == "install" && result != "skipped"),
        "nothing was installed: {stages:?}"
    );
    let stack = refused["stack"].as_str().expect("stack").to_owned();
    assert_eq!(leftovers(&stack), "", "nothing of {stack} on the engine");
    let comment = wait_for("the refusal on the PR", Duration::from_secs(30), || {
        forge
            .comments("coop/plain", 1)
            .into_iter()
            .find(|c| c.user == bot && c.body.contains("**errored**"))
    });
    for needle in [
        "refused",
        "services.web.volumes[0]",
        "[docker-socket]",
        "services.web.volumes[1]",
        "[host-bind:/etc]",
        "`permit`",
    ] {
        assert!(comment.body.contains(needle), "{needle}: {}", comment.body);
    }
    wait_for("the error status", Duration::from_secs(30), || {
        (forge.statuses(&head).last().map(|s| s.state.clone()) == Some("error".into()))
            .then_some(())
    });

    // The same head in a repository that permits both: deployed, tested, passed — and its test
    // saw none of seatrial's secrets.
    forge.post_comment("coop/proxy", 2, "alice", "!testme");
    let permitted = wait_for("the run of coop/proxy", Duration::from_secs(30), || {
        run_of(&server, "coop/proxy")
    });
    let permitted = server.wait_done(
        permitted["id"].as_i64().expect("id"),
        Duration::from_secs(300),
    );
    assert_eq!(
        permitted["state"],
        "passed",
        "{permitted:#}\n{}",
        server.log_text()
    );
    let tests = permitted["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == "tests")
        .cloned()
        .unwrap_or_default();
    assert!(
        tests["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1/1 passed")),
        "the secrets test ran and passed: {tests:#}"
    );
}

#[test]
fn seatrial_test_untrusted_refuses_what_is_not_permitted() {
    let data = scratch("untrusted-cli");
    let recipe = data.join("recipe");
    std::fs::create_dir_all(&recipe).expect("dir");
    std::fs::write(
        recipe.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:2\n    cap_add: [SYS_ADMIN]\n    volumes:\n      - /run/docker.sock:/var/run/docker.sock\n",
    )
    .expect("write");
    let recipe = recipe.to_str().expect("utf8");
    let test = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(["test", recipe, "--timeout", "2m"])
            .args(extra)
            .env("SEATRIAL_DATA_DIR", &data)
            .output()
            .expect("seatrial test");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = test(&["--untrusted", "--permit", "docker-socket"]);
    assert_eq!(code, Some(2), "bad input: {stderr}");
    assert!(
        stderr.contains("[cap_add:SYS_ADMIN]") && !stderr.contains("[docker-socket]"),
        "only what is not permitted is named: {stderr}"
    );
    let (code, stderr) = test(&["--permit", "docker-socket"]);
    assert_eq!(code, Some(2), "--permit needs --untrusted: {stderr}");
    assert!(stderr.contains("--untrusted"), "{stderr}");
}
