//! The `seatrial` binary as users and scripts see it: output and exit codes, against the real
//! engine (`scripts/setup.sh` makes one).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seatrial(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .output()
        .expect("run seatrial")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of the example recipe with its published port moved, so the test does not collide
/// with an app deployed by the README's quick start.
fn example_copy(name: &str, port: u16) -> PathBuf {
    let src = repo_root().join("examples/hello");
    let dst = std::env::temp_dir().join(format!("seatrial-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dst).expect("create dir");
    for entry in std::fs::read_dir(&src).expect("read example") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
    }
    let compose = std::fs::read_to_string(dst.join("compose.yml")).expect("read compose");
    assert!(compose.contains("18080"), "the example publishes 18080");
    std::fs::write(
        dst.join("compose.yml"),
        compose.replace("18080", &port.to_string()),
    )
    .expect("write compose");
    dst
}

fn stack(name: &str) -> String {
    format!("cli{}-{name}", std::process::id() % 100_000)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

#[test]
fn example_deploys_serves_shows_and_undeploys() {
    let dir = example_copy("example", 18390);
    let name = stack("example");
    let out = seatrial(&[
        "app",
        "deploy",
        dir.to_str().expect("utf8"),
        "--name",
        &name,
    ]);
    let (stdout, stderr) = text(&out);
    let undeploy = || seatrial(&["app", "undeploy", &name, "--volumes"]);
    if code(&out) != 0 {
        undeploy();
        panic!("deploy failed: {stdout}\n{stderr}");
    }
    assert!(stderr.contains("converged in"), "{stderr}");
    assert!(
        stdout.contains(&format!("{name}_web")) && stdout.contains("1/1"),
        "{stdout}"
    );
    assert!(stdout.contains("converged"), "{stdout}");

    let body = std::net::TcpStream::connect(("127.0.0.1", 18390)).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b)
    });
    let ps = seatrial(&["app", "ps", &name, "--json"]);
    let (ps_out, _) = text(&ps);
    let gone = undeploy();
    let (_, gone_err) = text(&gone);

    assert!(body.expect("the app serves").contains("web v1"));
    assert_eq!(code(&ps), 0);
    let json: serde_json::Value = serde_json::from_str(&ps_out).expect("ps --json is JSON");
    assert_eq!(json[0]["name"], format!("{name}_web"));
    assert_eq!(json[0]["converged"], true);
    assert_eq!(code(&gone), 0, "{gone_err}");
    assert!(gone_err.contains("waited until it was gone"), "{gone_err}");
    assert_eq!(code(&seatrial(&["app", "ps", &name])), 2, "gone means gone");
}

#[test]
fn unhealthy_app_exits_1_naming_the_service() {
    let dir = std::env::temp_dir().join(format!("seatrial-cli-{}-sick", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/unhealthy:1\n    deploy:\n      restart_policy: {condition: any, delay: 1s}\n",
    )
    .expect("write");
    let name = stack("sick");
    let out = seatrial(&[
        "app",
        "deploy",
        dir.to_str().expect("utf8"),
        "--name",
        &name,
        "--timeout",
        "2m",
    ]);
    let cleanup = seatrial(&["app", "undeploy", &name, "--volumes"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("service `{name}_web` failed")),
        "{stderr}"
    );
    assert!(stderr.contains("failing on purpose"), "{stderr}");
    assert!(
        stderr.contains("seatrial app undeploy"),
        "says how to clean up: {stderr}"
    );
    assert_eq!(code(&cleanup), 0);
}

#[test]
fn malformed_compose_exits_2_with_file_and_place() {
    let dir = std::env::temp_dir().join(format!("seatrial-cli-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:1\n    ports: [\"80:eighty\"]\n",
    )
    .expect("write");
    let out = seatrial(&[
        "app",
        "deploy",
        dir.to_str().expect("utf8"),
        "--name",
        "bad",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("compose.yml") && stderr.contains("services.web.ports"),
        "{stderr}"
    );

    let out = seatrial(&["app", "deploy", "/nonexistent/recipe", "--name", "bad"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("/nonexistent/recipe"));
}

#[test]
fn bad_stack_name_exits_2() {
    let dir = example_copy("badname", 18391);
    let out = seatrial(&["app", "deploy", dir.to_str().expect("utf8"), "--name", "-x"]);
    // Bad input is reported as such even when no engine answers.
    let out2 = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args([
            "app",
            "deploy",
            dir.to_str().expect("utf8"),
            "--name",
            "has space",
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    assert_eq!(code(&out2), 2, "{}", text(&out2).1);
    assert!(text(&out2).1.contains("stack name"), "{}", text(&out2).1);
    // clap refuses a value starting with '-' itself, also with exit code 2.
    assert_eq!(code(&out), 2);
}

#[test]
fn unreachable_engine_exits_3() {
    let dir = example_copy("noengine", 18392);
    let out = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["app", "deploy", dir.to_str().expect("utf8"), "--name", "x"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker engine"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
}

#[test]
fn unknown_stack_exits_2() {
    let out = seatrial(&["app", "undeploy", &stack("ghost")]);
    assert_eq!(code(&out), 2, "{}", text(&out).1);
    assert!(text(&out).1.contains("does not exist"));
}

#[test]
fn bash_completion_knows_the_subcommands_and_bash_accepts_it() {
    let out = seatrial(&["completions", "bash"]);
    let (script, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    for word in [
        "serve",
        "reconcile",
        "janitor",
        "lint",
        "runs",
        "--data-dir",
    ] {
        assert!(script.contains(word), "completes {word}");
    }
    let path = std::env::temp_dir().join(format!("seatrial-{}.bash", std::process::id()));
    std::fs::write(&path, &script).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash -n");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourced in a shell, it registers a completion for `seatrial`.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p seatrial", path.display()))
        .output()
        .expect("bash");
    let _ = std::fs::remove_file(&path);
    assert!(
        String::from_utf8_lossy(&sourced.stdout).contains("seatrial"),
        "{}",
        String::from_utf8_lossy(&sourced.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = seatrial(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}");
        assert!(
            text(&out).0.contains("reconcile"),
            "{shell} completes reconcile"
        );
    }
    let out = seatrial(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "an unknown shell is bad input");
    assert!(text(&out).1.contains("bash"), "the error lists the shells");
}

#[test]
fn man_page_is_roff_and_names_every_subcommand() {
    let out = seatrial(&["man"]);
    let (page, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(page.starts_with(".TH seatrial 1 "), "{page}");
    assert!(
        page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"),
        "{page}"
    );
    // groff reads it without a warning (-ww: all of them), as `man` would render it.
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff (Debian's groff-base; scripts/setup.sh installs it)");
    std::io::Write::write_all(&mut groff.stdin.take().expect("stdin"), page.as_bytes())
        .expect("write");
    let checked = groff.wait_with_output().expect("groff");
    let warnings = String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success() && warnings.is_empty(),
        "groff: {warnings}"
    );
    for sub in [
        "app",
        "lint",
        "render",
        "test",
        "janitor",
        "warm",
        "reconcile",
        "serve",
        "runs",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("seatrial\\-{sub}(1)")),
            "the man page names `{sub}`"
        );
    }
}
