//! The compose model reads what recipe maintainers write, and says what it did not understand.

use std::path::Path;
use std::time::Duration;

use seatrial_recipe::compose::{MountKind, PortMode, Protocol};
use seatrial_recipe::load::{compose_from_value, parse_yaml};
use seatrial_recipe::{ComposeFile, Finding, RecipeError, Severity, naming};

fn parse(yaml: &str) -> Result<(ComposeFile, Vec<Finding>), RecipeError> {
    let path = Path::new("compose.yml");
    let value = parse_yaml(yaml, path)?;
    compose_from_value(value, path)
}

fn load_text(yaml: &str) -> Result<seatrial_recipe::LoadedCompose, RecipeError> {
    let dir = std::env::temp_dir().join(format!(
        "seatrial-recipe-test-{}-{}",
        std::process::id(),
        yaml.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("compose.yml"), yaml).expect("write compose");
    let out = seatrial_recipe::load_compose(&dir);
    std::fs::remove_dir_all(&dir).ok();
    out
}

const FULL: &str = r#"
version: "3.8"
x-common: &common
  environment:
    SHARED: "yes"
services:
  app:
    image: example/app:1.2.3
    command: ./run --port "80 80"
    entrypoint: ["/bin/sh", "-c"]
    environment:
      A: 1
      B: true
      C:
    ports:
      - "8080:80"
      - "127.0.0.1:9000-9001:9000-9001/udp"
      - target: 443
        published: "8443"
        mode: host
    volumes:
      - data:/var/lib/app:ro
      - ./conf:/etc/app
      - type: tmpfs
        target: /tmp
        tmpfs:
          size: 64m
    networks:
      backend:
        aliases: [api]
      default:
    healthcheck:
      test: wget -q -O- http://localhost/ || exit 1
      interval: 1m30s
      timeout: 500ms
      retries: "5"
      start_period: 2s
    labels:
      - com.example=1
    deploy:
      replicas: "2"
      endpoint_mode: dnsrr
      update_config:
        failure_action: rollback
        monitor: 10s
        order: start-first
      restart_policy:
        condition: on-failure
        max_attempts: 3
      resources:
        limits:
          cpus: "0.5"
          memory: 512M
      labels:
        traefik.enable: "true"
    secrets:
      - db_password
      - source: api_key
        target: /run/secrets/key
        mode: 0440
    configs:
      - source: app_conf
        target: /etc/app.conf
    x-note: kept
  worker:
    <<: *common
    image: example/worker:2
    deploy:
      mode: global
networks:
  backend:
  proxy:
    external: true
volumes:
  data:
secrets:
  db_password:
    external: true
    name: app_db_password_v1
  api_key:
    file: ./api_key
configs:
  app_conf:
    file: ./app.conf
    template_driver: golang
x-top: 1
"#;

#[test]
fn full_compose_file_normalises_short_and_long_syntaxes() {
    let (c, findings) = parse(FULL).expect("parses");
    assert!(findings.is_empty(), "unexpected findings: {findings:?}");
    let app = &c.services["app"];
    assert_eq!(
        app.command.as_deref(),
        Some(&["./run".into(), "--port".into(), "80 80".into()][..])
    );
    assert_eq!(app.environment["A"].as_deref(), Some("1"));
    assert_eq!(app.environment["B"].as_deref(), Some("true"));
    assert_eq!(app.environment["C"], None);

    assert_eq!(app.ports.len(), 4, "a range expands to one port per number");
    assert_eq!(app.ports[0].published, Some(8080));
    assert_eq!(app.ports[0].target, 80);
    assert_eq!(app.ports[1].protocol, Protocol::Udp);
    assert_eq!(app.ports[2].published, Some(9001));
    assert_eq!(app.ports[2].target, 9001);
    assert_eq!(app.ports[3].mode, PortMode::Host);
    assert_eq!(app.ports[3].published, Some(8443));

    assert_eq!(app.volumes[0].kind, MountKind::Volume);
    assert!(app.volumes[0].read_only);
    assert_eq!(app.volumes[1].kind, MountKind::Bind);
    assert_eq!(app.volumes[2].kind, MountKind::Tmpfs);
    assert_eq!(app.volumes[2].tmpfs_size, Some(64 * 1024 * 1024));

    assert_eq!(app.networks["backend"].aliases, vec!["api".to_string()]);
    let hc = app.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(hc.test.as_ref().map(|t| t[0].as_str()), Some("CMD-SHELL"));
    assert_eq!(hc.interval, Some(Duration::from_secs(90)));
    assert_eq!(hc.timeout, Some(Duration::from_millis(500)));
    assert_eq!(hc.retries, Some(5));

    let deploy = app.deploy.as_ref().expect("deploy");
    assert_eq!(app.replicas(), Some(2));
    assert_eq!(
        deploy
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.memory),
        Some(512 * 1024 * 1024)
    );
    assert_eq!(deploy.labels["traefik.enable"], "true");
    assert_eq!(
        app.secrets[1].mode,
        Some(0o440),
        "0440 is a file mode, read as octal"
    );
    assert_eq!(app.extensions["x-note"], "kept");
    assert_eq!(c.extensions["x-top"], 1);
    assert!(c.extensions.contains_key("x-common"));

    let worker = &c.services["worker"];
    assert_eq!(
        worker.environment["SHARED"].as_deref(),
        Some("yes"),
        "merge keys apply"
    );
    assert_eq!(
        worker.replicas(),
        None,
        "global services have no replica count"
    );
    assert!(c.networks["proxy"].external.external);
    assert!(c.secrets["db_password"].external.external);
    assert_eq!(
        c.configs["app_conf"].template_driver.as_deref(),
        Some("golang")
    );
}

#[test]
fn unknown_keys_are_warnings_with_their_path() {
    let (_, findings) = parse(
        "services:\n  web:\n    image: a:1\n    imagee: typo\n    deploy:\n      replicaz: 2\n",
    )
    .expect("parses");
    let at: Vec<_> = findings.iter().map(|f| f.at.as_str()).collect();
    assert_eq!(
        at,
        vec!["services.web.imagee", "services.web.deploy.replicaz"]
    );
    assert!(findings.iter().all(|f| f.severity == Severity::Warning));
}

#[test]
fn type_errors_name_the_path() {
    let err = parse("services:\n  web:\n    image: a:1\n    ports:\n      - \"80:http\"\n")
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("services.web.ports"), "{msg}");
    assert!(msg.contains("not a port number"), "{msg}");
}

#[test]
fn malformed_yaml_is_a_clear_error() {
    let err = parse("services:\n  web:\n    image: [unclosed\n").expect_err("must fail");
    assert!(matches!(err, RecipeError::Yaml { .. }), "{err}");
    assert!(err.to_string().contains("compose.yml"), "{err}");
    let err = parse("- just\n- a list\n").expect_err("must fail");
    assert!(err.to_string().contains("must be a mapping"), "{err}");
}

#[test]
fn billion_laughs_is_refused() {
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            std::iter::repeat_n(prev.as_str(), 9)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    yaml.push_str("services: {}\n");
    let err = parse(&yaml).expect_err("an alias bomb must be refused");
    assert!(matches!(err, RecipeError::Yaml { .. }), "{err}");
}

#[test]
fn references_to_undefined_things_are_errors() {
    let err = load_text(
        "services:\n  web:\n    image: a:1\n    networks: [nope]\n    volumes: [\"ghost:/data\"]\n    secrets: [s]\n    depends_on: [db]\n",
    )
    .expect_err("must fail");
    let RecipeError::Invalid { findings, .. } = &err else {
        panic!("expected Invalid, got {err}");
    };
    let msgs: Vec<_> = findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("network `nope`")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("volume `ghost`")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("secret `s`")), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m.contains("depends on `db`")),
        "Swarm ignores depends_on: not an error: {msgs:?}"
    );
}

#[test]
fn depends_on_an_unknown_service_is_a_warning() {
    let loaded = load_text(
        "services:
  web:
    image: a:1
    depends_on: [db]
",
    )
    .expect("Swarm ignores depends_on, so does the loader");
    assert!(
        loaded
            .warnings()
            .any(|f| f.message.contains("depends on `db`") && f.at == "services.web.depends_on"),
        "{:?}",
        loaded.findings
    );
}

#[test]
fn service_without_image_or_with_env_file_is_refused() {
    let err =
        load_text("services:\n  web:\n    build: .\n  api:\n    image: a:1\n    env_file: .env\n")
            .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("service `web` has no image"), "{msg}");
    assert!(msg.contains("env_file"), "{msg}");
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let big = format!("services: {{}}\n#{}\n", "x".repeat(5 * 1024 * 1024));
    let err = load_text(&big).expect_err("must fail");
    assert!(matches!(err, RecipeError::TooLarge { .. }), "{err}");
}

#[test]
fn name_guards_count_the_stack_prefix() {
    let yaml = format!(
        "services:\n  web:\n    image: a:1\nsecrets:\n  {}:\n    file: ./x\n",
        "s".repeat(62)
    );
    let (c, _) = parse(&yaml).expect("parses");
    let findings = naming::guard_names(&c, "ab");
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("65 characters"), "{}", f.message);
    assert!(f.message.contains("at most 64"), "{}", f.message);
    let (c, _) = parse("services:\n  web:\n    image: a:1\n").expect("parses");
    assert!(naming::guard_names(&c, "ab").is_empty());
    let long_stack = "x".repeat(60);
    assert!(
        !naming::guard_names(&c, &long_stack).is_empty(),
        "service name over 63"
    );
}

#[test]
fn durations_and_sizes_parse_like_docker() {
    use seatrial_recipe::{parse_bytes, parse_duration};
    assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(
        parse_duration("30")
            .expect_err("needs a unit")
            .contains("missing unit")
    );
    assert!(
        parse_duration("3d")
            .expect_err("no days")
            .contains("unknown unit")
    );
    assert_eq!(parse_bytes("1g"), Ok(1 << 30));
    assert_eq!(parse_bytes("1.5k"), Ok(1536));
    assert_eq!(parse_bytes("100"), Ok(100));
    assert!(parse_bytes("12parsecs").is_err());
}
