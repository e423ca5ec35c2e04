//! seatrial on a real two-node swarm (scripts/cluster.sh: a manager and a worker, each a Docker
//! engine in its own network namespace on this machine). seatrial talks to the manager only; the
//! worker is read through its own socket to check what seatrial cannot see.
//!
//! Needs `SEATRIAL_TEST_CLUSTER` (the manager's DOCKER_HOST) and `SEATRIAL_TEST_CLUSTER_WORKER`
//! (the worker's): the test command brings the cluster up and sets both. Fails — never skips —
//! without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    manager: String,
    worker: String,
}

fn cluster() -> Cluster {
    let get = |key: &str| {
        std::env::var(key).unwrap_or_else(|_| {
            panic!(
                "{key} is not set: these tests need a two-node swarm. Run `scripts/cluster.sh up` \
                 (as root) and set SEATRIAL_TEST_CLUSTER=unix:///run/docker-c1.sock and \
                 SEATRIAL_TEST_CLUSTER_WORKER=unix:///run/docker-c2.sock (scripts/test.sh does both)"
            )
        })
    };
    Cluster {
        manager: get("SEATRIAL_TEST_CLUSTER"),
        worker: get("SEATRIAL_TEST_CLUSTER_WORKER"),
    }
}

/// `docker -H host args…`, its stdout; panics when it fails.
fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker -H {host} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn stack(base: &str) -> String {
    format!("{base}{}", std::process::id() % 100_000)
}

/// `seatrial args…` against the cluster's manager.
fn seatrial(c: &Cluster, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .env("DOCKER_HOST", &c.manager)
        .env("SEATRIAL_DATA_DIR", data)
        .stdin(Stdio::null())
        .output()
        .expect("run seatrial")
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Containers (running or not) and networks of the stack on one node, as that node's engine
/// lists them; empty when there are none.
fn on_node(host: &str, stack: &str) -> Vec<String> {
    let label = format!("label=com.docker.stack.namespace={stack}");
    let mut found: Vec<String> = docker(
        host,
        &[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "container {{.Names}}",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect();
    found.extend(
        docker(host, &["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .filter(|n| n.starts_with(&format!("{stack}_")))
            .map(|n| format!("network {n}")),
    );
    found
}

/// The nodes (hostnames) running the service's tasks, per the manager.
fn task_nodes(c: &Cluster, service: &str) -> Vec<String> {
    let mut nodes: Vec<String> = docker(
        &c.manager,
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect();
    nodes.sort();
    nodes
}

fn recipe(dir: &Path, compose: &str) -> String {
    std::fs::create_dir_all(dir).expect("recipe dir");
    std::fs::write(dir.join("compose.yml"), compose).expect("compose");
    dir.to_string_lossy().into_owned()
}

const HEALTHY_TWO: &str = r#"version: "3.8"
services:
  web:
    image: seatrial-fixture/web:2
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/healthz"]
      interval: 1s
      timeout: 5s
      retries: 3
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        max_replicas_per_node: 1
    networks: [net]
networks:
  net:
"#;

#[test]
fn two_replicas_over_both_nodes_converge_and_undeploy_leaves_neither_node_anything() {
    let c = cluster();
    let data = scratch("two");
    let name = stack("ctwo");
    let dir = recipe(&data.join("recipe"), HEALTHY_TWO);
    let out = seatrial(
        &c,
        &data,
        &["app", "deploy", "--name", &name, "--timeout", "2m", &dir],
    );
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(said(&out).contains("2/2"), "{}", said(&out));
    assert_eq!(
        task_nodes(&c, &format!("{name}_web")),
        ["c1", "c2"],
        "one task on each node"
    );
    // The worker's container is healthy: what the manager could not inspect.
    let worker = docker(
        &c.worker,
        &[
            "ps",
            "--filter",
            &format!("label=com.docker.stack.namespace={name}"),
            "--format",
            "{{.Status}}",
        ],
    );
    assert!(worker.contains("(healthy)"), "worker: {worker}");

    let out = seatrial(&c, &data, &["app", "undeploy", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // Right when it returns: nothing of the stack on either node.
    assert_eq!(on_node(&c.manager, &name), Vec::<String>::new(), "manager");
    assert_eq!(on_node(&c.worker, &name), Vec::<String>::new(), "worker");
    assert_eq!(
        docker(
            &c.manager,
            &[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={name}")
            ]
        ),
        ""
    );
}

#[test]
fn a_never_healthy_service_on_the_worker_fails_naming_it_and_its_node() {
    let c = cluster();
    let data = scratch("sick");
    let name = stack("csick");
    let dir = recipe(
        &data.join("recipe"),
        r#"version: "3.8"
services:
  ok:
    image: seatrial-fixture/web:2
    deploy:
      endpoint_mode: dnsrr
  sick:
    image: seatrial-fixture/unhealthy:1
    deploy:
      endpoint_mode: dnsrr
      restart_policy:
        condition: none
      placement:
        constraints: [node.hostname==c2]
"#,
    );
    let started = Instant::now();
    let out = seatrial(
        &c,
        &data,
        &["app", "deploy", "--name", &name, "--timeout", "3m", &dir],
    );
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{name}_sick")),
        "names the service: {text}"
    );
    assert!(text.contains("on node c2"), "names the node: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "failed as it failed, not at the deadline: {text}"
    );
    let out = seatrial(&c, &data, &["app", "undeploy", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(on_node(&c.worker, &name), Vec::<String>::new(), "worker");
    assert_eq!(on_node(&c.manager, &name), Vec::<String>::new(), "manager");
}

/// Kills `seatrial test` once its app runs on both nodes; `seatrial janitor`, talking to the
/// manager only, must then leave nothing of it on either node.
#[test]
fn janitor_reaps_what_a_killed_trial_left_on_the_worker() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let c = cluster();
    let data = scratch("janitor");
    let dir = recipe(&data.join("recipe"), HEALTHY_TWO);
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(["test", &dir, "--timeout", "2m"])
        .env("DOCKER_HOST", &c.manager)
        .env("SEATRIAL_DATA_DIR", &data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("seatrial test");
    // Read on a thread that keeps reading: a closed pipe would end the trial by itself.
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stack = None;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) {
        seen.push(line.clone());
        if stack.is_none() {
            // "▶ install: deploying … as stack `tr-…`" (or any line naming the stack).
            stack = line
                .split('`')
                .find(|w| w.starts_with("tr-"))
                .map(str::to_owned);
        }
        if line.contains("install passed") {
            break;
        }
    }
    let stack = stack.unwrap_or_else(|| panic!("the trial named no stack: {seen:#?}"));
    let service = format!("{stack}_web");
    assert_eq!(task_nodes(&c, &service), ["c1", "c2"], "{seen:#?}");
    // kill -9 of its whole process group: no teardown at all.
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status()
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait();
    assert!(
        !on_node(&c.worker, &stack).is_empty(),
        "the killed trial left its task on the worker"
    );
    let out = seatrial(&c, &data, &["janitor"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(said(&out).contains(&stack), "{}", said(&out));
    assert_eq!(on_node(&c.worker, &stack), Vec::<String>::new(), "worker");
    assert_eq!(on_node(&c.manager, &stack), Vec::<String>::new(), "manager");
    assert_eq!(
        docker(
            &c.manager,
            &[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={stack}")
            ]
        ),
        ""
    );
}
