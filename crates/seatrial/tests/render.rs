//! `seatrial render` and overlay linting through the binary: exit codes, what errors name,
//! `--ref` with a relative recipe path. No engine is needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seatrial_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .current_dir(dir)
        .env("SEATRIAL_DATA_DIR", scratch("data"))
        .output()
        .expect("run seatrial")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/recipes/parity")
        .join(name)
        .canonicalize()
        .expect("corpus recipe")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-render-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

#[test]
fn render_prints_the_merged_compose_with_one_port_per_published_port() {
    let dir = corpus("ports");
    let o = seatrial_in(
        &dir,
        &[
            "render",
            ".",
            "--name",
            "shop",
            "--env",
            "COMPOSE_FILE=compose.yml:compose.host.yml",
            "--format",
            "json",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let ports = doc["services"]["web"]["ports"].as_array().expect("ports");
    let on_8080: Vec<_> = ports.iter().filter(|p| p["published"] == 8080).collect();
    assert_eq!(on_8080.len(), 1, "one port for 8080: {ports:?}");
    assert_eq!(on_8080[0]["mode"], "host", "the overlay's long syntax wins");
    // YAML by default, with compose keys.
    let o = seatrial_in(&dir, &["render", "."]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("services:\n  web:\n"), "{}", text(&o).0);
}

#[test]
fn render_refuses_what_docker_refuses_naming_the_overlay_and_line() {
    let dir = corpus("interpolation");
    let o = seatrial_in(
        &dir,
        &[
            "render",
            ".",
            "--env",
            "COMPOSE_FILE=compose.yml:compose.colonplus.yml",
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("compose.colonplus.yml:5"), "{err}");
    assert!(err.contains("${B:+alt}"), "{err}");
}

#[test]
fn an_undefined_secret_renders_but_is_a_lint_error() {
    let dir = scratch("undefined-secret");
    std::fs::write(
        dir.join("compose.yml"),
        "version: \"3.8\"\nservices:\n  app:\n    image: x:1\n    secrets: [nope]\n",
    )
    .expect("write");
    let o = seatrial_in(&dir, &["render", "."]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("source: nope"), "{out}");
    assert!(err.contains("secret `nope`"), "{err}");
    let o = seatrial_in(&dir, &["lint", "."]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
}

#[test]
fn lint_checks_overlays_named_only_in_comments_and_says_which_combination() {
    let dir = scratch("lint-overlays");
    copy_dir(&corpus("secrets"), &dir);
    // An overlay named only in a commented-out COMPOSE_FILE line, whose secret has no version.
    std::fs::write(
        dir.join("compose.smtp.yml"),
        "version: \"3.8\"\nservices:\n  app:\n    secrets: [smtp]\nsecrets:\n  smtp:\n    external: true\n    name: ${STACK_NAME}_smtp_${SECRET_SMTP_VERSION}\n",
    )
    .expect("write");
    let o = seatrial_in(&dir, &["lint", ".", "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let missing: Vec<_> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| {
            f["severity"] == "error"
                && f["what"]
                    .as_str()
                    .is_some_and(|w| w.contains("SECRET_SMTP_VERSION"))
        })
        .collect();
    assert_eq!(missing.len(), 1, "{out}");
    assert_eq!(
        missing[0]["combinations"],
        serde_json::json!(["compose.yml:compose.smtp.yml"]),
        "{out}"
    );
    // --env supplies the version, as for deploy.
    let o = seatrial_in(&dir, &["lint", ".", "--env", "SECRET_SMTP_VERSION=v1"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn an_unclosed_quote_in_the_sample_env_is_an_error_naming_the_line() {
    let dir = scratch("unclosed");
    copy_dir(&corpus("secrets"), &dir);
    let sample = std::fs::read_to_string(dir.join(".env.sample")).expect("read");
    std::fs::write(
        dir.join(".env.sample"),
        sample.replace("DOMAIN=secrets.example.com", "DOMAIN=\"secrets.example.com"),
    )
    .expect("write");
    let o = seatrial_in(&dir, &["render", "."]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(".env.sample:2"), "{err}");
    assert!(err.contains("never closed"), "{err}");
}

#[test]
fn ref_works_with_a_relative_recipe_path() {
    let dir = scratch("relative-ref");
    copy_dir(&corpus("ports"), &dir);
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {o:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "ports"]);
    git(&["tag", "-a", "1.2.0+3", "-m", "release"]);
    let o = seatrial_in(&dir, &["render", ".", "--ref", "1.2.0+3"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("seatrial-fixture/web:1"), "{out}");
}
