//! Co-op Cloud recipes through the `seatrial` binary against the real engine: generated
//! secrets, overlays, deploying a release from git and upgrading it in place, lint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-recipes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn seatrial(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .env("SEATRIAL_DATA_DIR", data)
        .output()
        .expect("run seatrial")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().expect("docker");
    assert!(o.status.success(), "docker {args:?}: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("send");
    let mut b = String::new();
    s.read_to_string(&mut b).expect("read");
    b
}

/// Runs `body`, then undeploys the stack whatever happened.
fn with_app(data: &Path, stack: &str, body: impl FnOnce()) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let _ = seatrial(data, &["app", "undeploy", stack, "--volumes"]);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn coop_recipe_deploys_with_generated_secret_config_and_overlay() {
    let data = scratch("coop-data");
    let stack = format!("rc{}-coop", std::process::id() % 100_000);
    let example = repo_root().join("examples/coop-hello");
    with_app(&data, &stack, || {
        let o = seatrial(
            &data,
            &[
                "app",
                "deploy",
                example.to_str().expect("utf8"),
                "--name",
                &stack,
                "--env",
                "PUBLISHED_PORT=18394",
            ],
        );
        let text = out(&o);
        assert_eq!(o.status.code(), Some(0), "{text}");

        // The secret: generated once, 48 characters, stored 0600, never printed.
        let file = data.join(format!("apps/{stack}/secrets/api_key_v1"));
        let value = std::fs::read_to_string(&file).expect("stored secret");
        assert_eq!(value.len(), 48);
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(file.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert!(
            !text.contains(&value),
            "the secret value must never be printed"
        );

        let labels = docker(&[
            "secret",
            "inspect",
            &format!("{stack}_api_key_v1"),
            "--format",
            "{{json .Spec.Labels}}",
        ]);
        assert!(labels.contains("io.seatrial.run"), "{labels}");
        let app = docker(&[
            "ps",
            "-q",
            "-f",
            &format!("label=com.docker.swarm.service.name={stack}_app"),
        ]);
        assert_eq!(
            docker(&["exec", &app, "cat", "/run/secrets/api_key"]),
            value
        );
        let conf = docker(&["exec", &app, "cat", "/etc/app.conf"]);
        assert!(
            conf.contains(&format!("domain = {stack}.localhost")),
            "templated config: {conf}"
        );
        assert!(
            http_get(18394, "/").contains("web v2"),
            "the ports overlay publishes the app"
        );

        // A second deploy of the same app reuses the stored secret.
        let o = seatrial(
            &data,
            &[
                "app",
                "deploy",
                example.to_str().expect("utf8"),
                "--name",
                &stack,
                "--update",
                "--env",
                "PUBLISHED_PORT=18394",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        assert_eq!(std::fs::read_to_string(&file).expect("stored"), value);
    });
    assert!(
        !data.join(format!("apps/{stack}")).exists(),
        "undeploy --volumes forgets the app's secrets"
    );
    assert_eq!(
        docker(&["secret", "ls", "-q", "-f", &format!("name={stack}_")]),
        ""
    );
}

#[test]
fn release_from_git_upgrades_in_place_keeping_data() {
    let data = scratch("ref-data");
    let repo = scratch("ref-repo");
    let made = Command::new(repo_root().join("scripts/example-history.sh"))
        .arg(&repo)
        .output()
        .expect("history");
    assert!(made.status.success(), "{}", out(&made));
    let stack = format!("rc{}-ref", std::process::id() % 100_000);
    let src = repo.to_str().expect("utf8");
    with_app(&data, &stack, || {
        let deploy = |reference: &str, update: bool| {
            let mut args = vec![
                "app",
                "deploy",
                src,
                "--ref",
                reference,
                "--name",
                &stack,
                "--env",
                "PUBLISHED_PORT=18395",
            ];
            if update {
                args.push("--update");
            }
            let o = seatrial(&data, &args);
            assert_eq!(o.status.code(), Some(0), "{reference}: {}", out(&o));
            out(&o)
        };
        let text = deploy("1.0.0+1", false);
        assert!(text.contains("coop-hello 1.0.0+1"), "{text}");
        let version = |svc: &str| {
            docker(&[
                "service",
                "inspect",
                &format!("{stack}_{svc}"),
                "--format",
                "{{index .Spec.Labels \"io.seatrial.version\"}}",
            ])
        };
        assert_eq!(version("app"), "1.0.0+1");
        assert!(http_get(18395, "/").contains("web v1"));

        deploy("2.0.0+2", true);
        assert_eq!(
            version("app"),
            "2.0.0+2",
            "the deployed version label moved"
        );
        assert!(
            http_get(18395, "/").contains("web v2"),
            "the upgrade serves the new version"
        );
        let store = docker(&[
            "ps",
            "-q",
            "-f",
            &format!("label=com.docker.swarm.service.name={stack}_store"),
        ]);
        let boots = docker(&["exec", &store, "cat", "/data/boots"]);
        assert_eq!(
            boots.lines().count(),
            2,
            "the store's volume survived the upgrade: {boots}"
        );
    });
    // The maintainer's repository was only read.
    let status = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["status", "--porcelain"])
        .output()
        .expect("git");
    assert!(status.stdout.is_empty());
}

#[test]
fn lint_exit_codes_and_json() {
    let data = scratch("lint-data");
    let example = repo_root().join("examples/coop-hello");
    let o = seatrial(&data, &["lint", example.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    let broken = scratch("lint-broken");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&example)
        .arg(&broken)
        .status()
        .expect("cp");
    assert!(cp.success());
    let compose = std::fs::read_to_string(broken.join("compose.yml")).expect("read");
    std::fs::write(
        broken.join("compose.yml"),
        compose.replace("seatrial-fixture/web:2", "seatrial-fixture/web:latest"),
    )
    .expect("write");
    let o = seatrial(&data, &["lint", broken.to_str().expect("utf8"), "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an error finding exits 1: {}",
        out(&o)
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json is JSON");
    assert!(json["errors"].as_u64().expect("count") >= 2, "{json}");
    let first = &json["findings"][0];
    for key in ["rule", "severity", "what", "where", "fix"] {
        assert!(first.get(key).is_some(), "finding has `{key}`: {first}");
    }
    assert_eq!(first["rule"], "R002");

    let o = seatrial(&data, &["lint", "/nonexistent/recipe"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

#[test]
fn a_deploy_refused_before_creating_anything_keeps_no_generated_secret() {
    let data = scratch("refused-data");
    let recipe = scratch("refused-recipe");
    std::fs::create_dir_all(&recipe).expect("mkdir");
    std::fs::write(
        recipe.join(".env.sample"),
        "TYPE=refused\nDOMAIN=x.example.org\nSECRET_TOKEN_VERSION=v1\n",
    )
    .expect("write");
    std::fs::write(
        recipe.join("compose.yml"),
        "version: \"3.8\"\nservices:\n  app:\n    image: seatrial-fixture/never-built:0\n    secrets: [token]\nsecrets:\n  token:\n    external: true\n    name: ${STACK_NAME}_token_${SECRET_TOKEN_VERSION}\n",
    )
    .expect("write");
    let stack = format!("rc{}-refused", std::process::id() % 100_000);
    let o = seatrial(
        &data,
        &[
            "app",
            "deploy",
            recipe.to_str().expect("utf8"),
            "--name",
            &stack,
            "--pull",
            "never",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a missing image is bad input: {}",
        out(&o)
    );
    assert!(
        !data.join("apps").join(&stack).exists(),
        "the generated secret of an app that never existed stays behind"
    );
}
