//! Recipes as their maintainers write them: resolution, overlays, bad input, versions, lint.

use std::path::{Path, PathBuf};
use std::process::Command;

use seatrial_recipe::compose::PortMode;
use seatrial_recipe::lint;
use seatrial_recipe::{AppSettings, Recipe, RecipeError, RecipeKind, Severity, git};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example() -> PathBuf {
    repo_root().join("examples/coop-hello")
}

fn settings(stack: &str) -> AppSettings {
    AppSettings {
        stack: stack.to_owned(),
        domain: Some(format!("{stack}.example.org")),
        ..AppSettings::default()
    }
}

/// A scratch copy of the example recipe that a test may break.
fn copy_example(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-recipe-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("cp")
        .arg("-a")
        .arg(example())
        .arg(&dir)
        .status()
        .expect("cp");
    assert!(status.success());
    dir
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} lacks {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
}

#[test]
fn coop_cloud_example_resolves_with_env_overlays_and_secrets() {
    let recipe = Recipe::open(&example()).expect("opens");
    assert_eq!(recipe.kind, RecipeKind::CoopCloud);
    assert_eq!(recipe.name, "coop-hello");
    let app = recipe.resolve(&settings("hi")).expect("resolves");
    let names: Vec<String> = app
        .files
        .iter()
        .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["compose.yml", "compose.ports.yml"],
        "COMPOSE_FILE with $COMPOSE_FILE"
    );
    assert_eq!(app.env["STACK_NAME"], "hi");
    assert_eq!(app.env["DOMAIN"], "hi.example.org");
    assert_eq!(app.env["TYPE"], "coop-hello");
    assert_eq!(
        app.env["APP_CONF_VERSION"], "v1",
        "abra.sh exports are read"
    );

    let web = &app.compose.services["app"];
    assert_eq!(web.ports.len(), 1, "the ports overlay applies");
    assert_eq!(web.ports[0].published, Some(18090));
    assert_eq!(web.ports[0].mode, PortMode::Host);
    assert_eq!(web.environment["GREETING"].as_deref(), Some("hello"));
    let labels = &web.deploy.as_ref().expect("deploy").labels;
    assert_eq!(
        labels["traefik.http.routers.hi.rule"],
        "Host(`hi.example.org`)"
    );
    assert_eq!(
        app.compose.secrets["api_key"].name.as_deref(),
        Some("hi_api_key_v1")
    );
    assert_eq!(
        app.compose.configs["app_conf"].name.as_deref(),
        Some("hi_app_conf_v1")
    );

    assert_eq!(app.secrets.len(), 1);
    let slot = &app.secrets[0];
    assert_eq!(
        (slot.name.as_str(), slot.version.as_str()),
        ("api_key", "v1")
    );
    assert_eq!(slot.length, 48, "the # length=48 hint is kept");
    assert_eq!(slot.engine_name, "hi_api_key_v1");
    assert!(
        app.findings.iter().all(|f| f.severity == Severity::Warning),
        "{:?}",
        app.findings
    );
}

#[test]
fn overrides_select_overlays_and_version_goes_into_type() {
    let recipe = Recipe::open(&example()).expect("opens");
    let mut s = settings("ov");
    s.overrides.insert(
        "COMPOSE_FILE".into(),
        "compose.yml:compose.proxy.yml".into(),
    );
    s.overrides.insert("GREETING".into(), "moin".into());
    s.version = Some("2.0.0+2".into());
    let app = recipe.resolve(&s).expect("resolves");
    assert!(app.compose.networks["proxy"].external.external);
    assert!(app.compose.services["app"].networks.contains_key("proxy"));
    assert!(
        app.compose.services["app"]
            .networks
            .contains_key("internal")
    );
    assert!(
        app.compose.services["app"].ports.is_empty(),
        "ports overlay not selected"
    );
    assert_eq!(
        app.compose.services["app"].environment["GREETING"].as_deref(),
        Some("moin")
    );
    assert_eq!(app.env["TYPE"], "coop-hello:2.0.0+2");
}

#[test]
fn compose_file_entries_cannot_escape_the_recipe() {
    let dir = copy_example("escape");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("compose.evil.yml")).expect("symlink");
    let recipe = Recipe::open(&dir).expect("opens");
    for (entry, expect) in [
        ("compose.yml:../../etc/passwd", "`..`"),
        ("compose.yml:/etc/passwd", "absolute"),
        ("compose.yml:compose.evil.yml", "symlink"),
        ("compose.yml:compose.nope.yml", "does not exist"),
    ] {
        let mut s = settings("esc");
        s.overrides.insert("COMPOSE_FILE".into(), entry.into());
        let err = recipe.resolve(&s).expect_err(entry);
        let text = err.to_string();
        assert!(
            matches!(err, RecipeError::ComposeFile { .. }),
            "{entry}: {text}"
        );
        assert!(text.contains(expect), "{entry}: {text}");
        let named = entry.rsplit(':').next().unwrap_or(entry);
        assert!(text.contains(named), "the error names the entry: {text}");
    }
}

#[test]
fn env_sample_symlinked_out_of_the_recipe_is_refused() {
    let dir = copy_example("env-escape");
    std::fs::remove_file(dir.join(".env.sample")).expect("rm");
    std::os::unix::fs::symlink("/etc/hostname", dir.join(".env.sample")).expect("symlink");
    let err = Recipe::open(&dir).expect_err("must not read outside the recipe");
    assert!(
        err.to_string().contains(".env.sample") && err.to_string().contains("symlink"),
        "{err}"
    );
}

#[test]
fn required_variable_error_names_variable_message_file_and_key() {
    let dir = copy_example("required");
    edit(
        &dir,
        "compose.ports.yml",
        "${PUBLISHED_PORT:-18090}",
        "${PUBLISHED_PORT:?set the host port}",
    );
    edit(&dir, ".env.sample", "PUBLISHED_PORT=18090\n", "");
    let err = Recipe::open(&dir)
        .expect("opens")
        .resolve(&settings("req"))
        .expect_err("PUBLISHED_PORT is required");
    let text = err.to_string();
    assert!(matches!(err, RecipeError::Interpolation { .. }), "{text}");
    for part in [
        "PUBLISHED_PORT",
        "set the host port",
        "compose.ports.yml",
        "services.app.ports[0].published",
    ] {
        assert!(text.contains(part), "missing {part:?} in: {text}");
    }
}

#[test]
fn bad_input_in_overlays_is_a_clear_error() {
    let dir = copy_example("bad");
    // A YAML alias bomb in an overlay.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    std::fs::write(dir.join("compose.bomb.yml"), bomb).expect("write");
    // A 10 MB file.
    std::fs::write(
        dir.join("compose.big.yml"),
        format!("services: {{}}\n#{}\n", "x".repeat(10 << 20)),
    )
    .expect("write");
    std::fs::write(
        dir.join("compose.broken.yml"),
        "services:\n  app: [unclosed\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("compose.unknown.yml"),
        "services: {}\nfrobnicate: true\n",
    )
    .expect("write");
    let recipe = Recipe::open(&dir).expect("opens");
    let resolve = |file: &str| {
        let mut s = settings("bad");
        s.overrides
            .insert("COMPOSE_FILE".into(), format!("compose.yml:{file}"));
        recipe.resolve(&s)
    };
    let err = resolve("compose.bomb.yml").expect_err("bomb");
    assert!(matches!(err, RecipeError::Yaml { .. }), "{err}");
    let err = resolve("compose.big.yml").expect_err("big");
    assert!(matches!(err, RecipeError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("compose.big.yml"), "{err}");
    let err = resolve("compose.broken.yml").expect_err("broken");
    assert!(err.to_string().contains("compose.broken.yml"), "{err}");
    let app = resolve("compose.unknown.yml").expect("an unknown top-level key is a warning");
    assert!(
        app.findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.at == "frobnicate"),
        "{:?}",
        app.findings
    );
}

#[test]
fn plain_compose_project_reads_its_dot_env() {
    let dir = std::env::temp_dir().join(format!("seatrial-recipe-{}-plain", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(".env"), "TAG=1.2.3\nexport PORT=8080").expect("write");
    std::fs::write(
        dir.join("docker-compose.yml"),
        "services:\n  web:\n    image: \"example/web:${TAG}\"\n    ports: [\"${PORT}:80\"]\n    environment:\n      PRICE: $$5\n",
    )
    .expect("write");
    let recipe = Recipe::open(&dir).expect("opens");
    assert_eq!(recipe.kind, RecipeKind::Compose);
    let app = recipe.resolve(&settings("plain")).expect("resolves");
    let web = &app.compose.services["web"];
    assert_eq!(web.image.as_deref(), Some("example/web:1.2.3"));
    assert_eq!(web.ports[0].published, Some(8080));
    assert_eq!(web.environment["PRICE"].as_deref(), Some("$5"));
    assert!(app.secrets.is_empty());
}

fn history(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-history-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(repo_root().join("scripts/example-history.sh"))
        .arg(&dir)
        .status()
        .expect("run example-history.sh");
    assert!(status.success());
    dir
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn versions_come_from_annotated_tags_only() {
    let repo = history("versions");
    // A lightweight tag that looks like a version: ignored, and reported.
    git_in(&repo, &["tag", "10.0.0+9", "HEAD~2"]);
    let v = git::versions(&repo).expect("versions");
    let tags: Vec<&str> = v.releases.iter().map(|r| r.tag.as_str()).collect();
    assert_eq!(tags, ["1.0.0+1", "1.1.0+1", "2.0.0+2"]);
    assert_eq!(v.lightweight, ["10.0.0+9"]);
    let head = git_in(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(v.at(&head).map(|r| r.tag.as_str()), Some("2.0.0+2"));
    assert_eq!(
        v.previous_for(&head).map(|r| r.tag.as_str()),
        Some("1.1.0+1")
    );
    assert_eq!(v.latest().map(|r| r.upstream.as_deref()), Some(Some("2")));
    assert!(
        git::release_notes(&repo, "2.0.0+2")
            .expect("notes")
            .contains("web v2")
    );
    assert!(git::release_notes(&repo, "9.9.9+9").is_none());
}

#[test]
fn checkouts_are_isolated_and_leave_the_maintainer_tree_alone() {
    let repo = history("checkout");
    std::fs::write(repo.join("compose.yml"), "# work in progress\n").expect("dirty the tree");
    let head_before = git_in(&repo, &["rev-parse", "HEAD"]);
    let work = std::env::temp_dir().join(format!("seatrial-checkouts-{}", std::process::id()));
    let source = repo.to_string_lossy().into_owned();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| git::checkout(&source, "1.0.0+1", &work));
        let b = s.spawn(|| git::checkout(&source, "1.0.0+1", &work));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    let (a, b) = (a.expect("checkout a"), b.expect("checkout b"));
    assert_ne!(a.dir, b.dir, "concurrent loads never share a checkout");
    assert_eq!(a.commit, b.commit);
    let compose = std::fs::read_to_string(a.dir.join("compose.yml")).expect("read");
    assert!(
        compose.contains("seatrial-fixture/web:1"),
        "the checkout is at 1.0.0+1"
    );
    let main = git::checkout(&source, "main", &work).expect("branch");
    assert_eq!(main.commit, head_before);
    let err = git::checkout(&source, "no-such-ref", &work).expect_err("unknown ref");
    assert!(err.to_string().contains("no-such-ref"), "{err}");

    // The maintainer's tree: same HEAD, same uncommitted change.
    assert_eq!(git_in(&repo, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(
        std::fs::read_to_string(repo.join("compose.yml")).expect("read"),
        "# work in progress\n"
    );
    let (commit, dirty) = git::head(&repo).expect("head");
    assert_eq!((commit.as_str(), dirty), (head_before.as_str(), true));
    let dir = a.dir.clone();
    drop(a);
    assert!(!dir.exists(), "a checkout is removed when dropped");
}

#[test]
fn lint_passes_on_the_example_and_fails_usefully_on_a_broken_copy() {
    let findings = lint::lint(&example()).expect("lints");
    assert!(
        findings.iter().all(|f| f.severity != Severity::Error),
        "{findings:#?}"
    );

    let dir = copy_example("lint-broken");
    edit(
        &dir,
        "compose.yml",
        "image: seatrial-fixture/web:2\n    environment",
        "image: seatrial-fixture/web:latest\n    environment",
    );
    edit(
        &dir,
        "compose.yml",
        "image: seatrial-fixture/web:2\n    # Appends",
        "image: seatrial-fixture/web\n    # Appends",
    );
    edit(
        &dir,
        "compose.yml",
        "traefik.http.routers.${STACK_NAME}.rule",
        "traefik.http.routers.myapp.rule",
    );
    edit(
        &dir,
        "compose.yml",
        "file: app.conf.tmpl",
        "file: missing.tmpl",
    );
    edit(
        &dir,
        "compose.yml",
        "name: ${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION}",
        "name: ${STACK_NAME}_the_api_key_for_the_external_mail_service_${SECRET_API_KEY_VERSION}",
    );
    let findings = lint::lint(&dir).expect("lints");
    let errors: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| (f.rule, f.what.as_str()))
        .collect();
    let has = |rule: &str, text: &str| errors.iter().any(|(r, w)| *r == rule && w.contains(text));
    assert!(has("R002", "`latest`"), "{errors:#?}");
    assert!(has("R002", "without a tag"), "{errors:#?}");
    assert!(has("R008", "`myapp`"), "{errors:#?}");
    assert!(has("R007", "missing.tmpl"), "{errors:#?}");
    assert!(has("R004", "at most 64"), "{errors:#?}");
    assert!(
        findings.iter().all(|f| !f.fix.is_empty()),
        "every finding says how to fix it"
    );

    // No .env.sample next to overlays: R005.
    std::fs::remove_file(dir.join(".env.sample")).expect("rm");
    let findings = lint::lint(&dir).expect("lints");
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "R005" && f.severity == Severity::Error),
        "{findings:#?}"
    );
}

#[test]
fn lint_flags_lightweight_version_tags() {
    let repo = history("lint-tags");
    git_in(&repo, &["tag", "3.0.0+3"]);
    let findings = lint::lint(&repo).expect("lints");
    assert!(
        findings.iter().any(|f| f.rule == "R006"
            && f.severity == Severity::Error
            && f.what.contains("3.0.0+3")),
        "{findings:#?}"
    );
}

#[test]
fn r008_reports_one_finding_per_router_and_spares_the_proxys_own() {
    let dir = std::env::temp_dir().join(format!("seatrial-r008-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        r#"services:
  app:
    image: seatrial-fixture/web:2
    deploy:
      labels:
        - "traefik.enable=true"
        - "traefik.http.routers.myapp.rule=Host(`x.example.org`)"
        - "traefik.http.routers.myapp.entrypoints=web-secure"
        - "traefik.http.routers.myapp.tls=true"
        - "traefik.http.services.${STACK_NAME}.loadbalancer.server.port=80"
  proxy:
    image: traefik:v3.1
    deploy:
      labels:
        - "traefik.http.routers.dashboard.rule=Host(`traefik.example.org`)"
        - "traefik.http.routers.dashboard.service=api@internal"
  other:
    image: seatrial-fixture/web:2
    deploy:
      labels:
        - "traefik.http.routers.api.rule=PathPrefix(`/api`)"
        - "traefik.http.routers.api.service=api@internal"
"#,
    )
    .expect("write");
    let findings = lint::lint(&dir).expect("lints");
    let r008: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule == "R008")
        .map(|f| f.what.as_str())
        .collect();
    assert_eq!(
        r008.len(),
        1,
        "one finding for the router `myapp` (three labels), none for traefik's own dashboard or a router to api@internal: {r008:#?}"
    );
    assert!(
        r008[0].contains("`myapp`") && r008[0].contains("router"),
        "{r008:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
