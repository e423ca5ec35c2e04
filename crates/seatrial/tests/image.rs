//! seatrial as operators install it: its own image (scripts/build-image.sh, which the test
//! command runs first), the recipe that deploys it (deploy/seatrial, trialled by `seatrial
//! test` on the real engine) and the systemd unit (deploy/systemd).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{docker, free_port, http, leftovers, repo_root, scratch, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The shipped binary's budget (issue "operations": ≤ 40 MiB).
const BINARY_BUDGET: u64 = 40 * 1024 * 1024;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `seatrial:<version>`, which must have been built: fails (never skips) without it.
fn image() -> String {
    let tag = format!("seatrial:{VERSION}");
    let o = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .expect("docker");
    assert!(
        o.status.success(),
        "no image {tag}: build it with scripts/build-image.sh (scripts/test.sh does) — {}",
        text(&o)
    );
    tag
}

fn socket_group() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock")
        .expect("the engine's socket")
        .gid()
        .to_string()
}

/// A container removed with its anonymous volume (the image's /data) when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

fn run(args: &[&str]) -> Container {
    let o = Command::new("docker")
        .args(["run", "-d", "--label", "io.seatrial.test=image"])
        .args(args)
        .output()
        .expect("docker run");
    assert!(o.status.success(), "docker run {args:?}: {}", text(&o));
    Container(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
}

#[test]
fn the_image_serves_as_a_non_root_user_and_reaches_the_engine_through_the_socket() {
    let image = image();
    let port = free_port();
    let group = socket_group();
    let published = format!("127.0.0.1:{port}:8086");
    // By default it runs `seatrial serve` on 0.0.0.0:8086, as the README's `docker run` line.
    let c = run(&[
        "-p",
        &published,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--group-add",
        &group,
        &image,
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let healthz = wait_for("/healthz", Duration::from_secs(30), || {
        http("GET", &format!("{base}/healthz"), None, None)
            .ok()
            .filter(|r| r.0 == 200)
    });
    assert_eq!(healthz.1.trim(), "ok");
    let (status, body, _) = http("GET", &format!("{base}/readyz"), None, None).expect("readyz");
    assert_eq!(
        status,
        200,
        "ready: the store opened in /data and the engine answered through the socket: {body}\n{}",
        docker(&["logs", &c.0])
    );
    assert!(body.contains("\"engine\":\"ok\""), "{body}");

    // Not root: the image's user, and the process really runs as it.
    assert_eq!(inspect(&c.0, "{{.Config.User}}"), "10001:10001");
    let pid = inspect(&c.0, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["10001"; 4],
        "{uid}"
    );

    // Its HEALTHCHECK (`seatrial probe …/healthz`, no curl in a scratch image) passes.
    wait_for(
        "the container to be healthy",
        Duration::from_secs(60),
        || (inspect(&c.0, "{{.State.Health.Status}}") == "healthy").then_some(()),
    );
    // Labelled with its version (OCI annotations).
    assert_eq!(
        inspect(
            &c.0,
            "{{index .Config.Labels \"org.opencontainers.image.version\"}}"
        ),
        VERSION
    );

    // Without the socket's group the engine refuses it, and readiness says so.
    let port = free_port();
    let published = format!("127.0.0.1:{port}:8086");
    let _c = run(&[
        "-p",
        &published,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        &image,
    ]);
    let base = format!("http://127.0.0.1:{port}");
    // (Until the server listens, the published port's proxy accepts and closes: no status.)
    let (status, body) = wait_for("/readyz", Duration::from_secs(30), || {
        http("GET", &format!("{base}/readyz"), None, None)
            .ok()
            .filter(|r| r.0 != 0)
            .map(|r| (r.0, r.1))
    });
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("Permission denied") && body.contains("--group-add"),
        "readiness names the refusal and what to do: {body}"
    );
}

#[test]
fn the_image_carries_git_docker_and_curl_that_run_and_a_binary_within_budget() {
    let image = image();
    // git works as the image's user: a mirror of a local repository (git runs upload-pack through
    // /bin/sh for that), as the server fetches recipes.
    let repo = scratch("image-git-repo");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("compose.yml"), "version: \"3.8\"\n").expect("write");
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.org",
        "commit",
        "-qm",
        "one",
    ]);
    git(&["tag", "-a", "1.0.0+1", "-m", "first"]);
    let mount = format!("{}:/repo:ro", repo.display());
    let o = Command::new("docker")
        .args(["run", "--rm", "-v", &mount, "--entrypoint", "/bin/sh", &image])
        .args([
            "-c",
            "git config --global --add safe.directory '*' && git clone -q --mirror /repo /tmp/m && git -C /tmp/m tag -l && docker --version && curl --version | head -n 1 && id -u",
        ])
        .output()
        .expect("docker run");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("1.0.0+1"), "the mirror has the tag: {out}");
    assert!(stdout.contains("Docker version"), "{out}");
    assert!(stdout.contains("curl "), "{out}");
    assert_eq!(stdout.lines().last(), Some("10001"), "{out}");
    assert!(
        !out.contains("warning"),
        "git finds everything it looks for (templates): {out}"
    );

    // The shipped binary, taken out of the image, is static and within its budget.
    let c = Container(docker(&["create", &image]));
    let out = scratch("image-binary");
    let copied = out.join("seatrial");
    let from = format!("{}:/usr/local/bin/seatrial", c.0);
    let o = Command::new("docker")
        .args(["cp", &from])
        .arg(&copied)
        .output()
        .expect("docker cp");
    assert!(o.status.success(), "{}", text(&o));
    let size = std::fs::metadata(&copied).expect("binary").len();
    assert!(
        size <= BINARY_BUDGET,
        "the shipped binary is {} MiB, over its 40 MiB budget",
        size / 1024 / 1024
    );
    let o = Command::new(&copied)
        .arg("--version")
        .output()
        .expect("run the binary");
    assert_eq!(text(&o).trim(), format!("seatrial {VERSION}"));
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn seatrial_test_trials_the_seatrial_recipe_on_the_engine() {
    image();
    let data = scratch("image-recipe");
    let report = data.join("report.json");
    let recipe = repo_root().join("deploy/seatrial");
    // The recipe is clean by seatrial's own linter, every overlay included.
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .arg("lint")
        .arg(&recipe)
        .env("SEATRIAL_DATA_DIR", &data)
        .output()
        .expect("seatrial lint");
    assert!(
        o.status.success() && text(&o).contains("0 error(s), 0 warning(s)"),
        "seatrial lint deploy/seatrial: {}",
        text(&o)
    );
    let gid = format!("DOCKER_GID={}", socket_group());
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .arg("test")
        .arg(&recipe)
        .args(["--env", &gid, "--json"])
        .arg(&report)
        .env("SEATRIAL_DATA_DIR", &data)
        .output()
        .expect("seatrial test");
    let out = text(&o);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("a report")).expect("JSON");
    assert_eq!(o.status.code(), Some(0), "{out}\n{json:#}");
    assert_eq!(json["result"], "pass", "{json:#}");
    let tests = json["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == "tests")
        .and_then(|s| s["tests"].as_array())
        .unwrap_or_else(|| panic!("no tests stage: {json:#}"));
    let names: Vec<&str> = tests.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "the recipe's three tests ran: {names:?}\n{json:#}"
    );
    assert!(tests.iter().all(|t| t["passed"] == true), "{json:#}");
    let stack = json["stack"].as_str().expect("stack");
    assert_eq!(leftovers(stack), "", "the trial tore everything down");
    let _ = std::fs::remove_dir_all(Path::new(&data));
}

#[test]
fn the_systemd_unit_is_valid_and_hardened() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/seatrial.service"))
        .expect("the unit");
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/seatrial",
        "DynamicUser=yes",
        "SupplementaryGroups=docker",
        "StateDirectory=seatrial",
    ] {
        assert!(unit.lines().any(|l| l.trim() == key), "the unit sets {key}");
    }
    // systemd's own checker, with ExecStart pointed at the binary under test.
    let dir = scratch("systemd-unit");
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/seatrial",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_seatrial")),
    );
    let path = dir.join("seatrial.service");
    std::fs::write(&path, unit).expect("write");
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) must be installed");
    let out = text(&o);
    assert!(
        o.status.success() && out.trim().is_empty(),
        "systemd-analyze verify: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
