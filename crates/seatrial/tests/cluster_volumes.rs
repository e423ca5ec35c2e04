//! Volumes are node-local (docs/cluster.md, "Volumes"): on a real two-node swarm, a service
//! with a volume runs on the manager seatrial talks to — where its data can be snapshotted and
//! removed — and a recipe that would put it elsewhere is refused before anything is created.
//!
//! Needs the two-node swarm of `scripts/cluster.sh up`: `SEATRIAL_TEST_CLUSTER` is the manager's
//! DOCKER_HOST (unix:///run/docker-c1.sock), `SEATRIAL_TEST_CLUSTER_WORKER` the worker's
//! (unix:///run/docker-c2.sock). Each node's state is read through its own socket.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The manager's and the worker's DOCKER_HOST; fails (never skips) when they are not set.
fn cluster() -> (String, String) {
    let var = |name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
            panic!(
                "{name} is not set: these tests need a two-node swarm. Run `scripts/cluster.sh up`, then set SEATRIAL_TEST_CLUSTER=unix:///run/docker-c1.sock (the manager) and SEATRIAL_TEST_CLUSTER_WORKER=unix:///run/docker-c2.sock (the worker)"
            )
        })
    };
    (
        var("SEATRIAL_TEST_CLUSTER"),
        var("SEATRIAL_TEST_CLUSTER_WORKER"),
    )
}

/// `docker -H <host> <args>`: its stdout, trimmed; panics when it fails.
fn docker(host: &str, args: &[&str]) -> String {
    let o = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        o.status.success(),
        "docker -H {host} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A recipe directory holding `compose`, unique to this test process.
fn recipe(tag: &str, compose: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-pv-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("recipe dir");
    std::fs::write(dir.join("compose.yml"), compose).expect("write compose");
    dir
}

fn stack(tag: &str) -> String {
    format!("pv{}{tag}", std::process::id() % 100_000)
}

/// `seatrial <args>` against the manager, with a data directory of its own.
fn seatrial(manager: &str, args: &[&str]) -> Output {
    let data = std::env::temp_dir().join(format!("seatrial-pv-{}-data", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .env("DOCKER_HOST", manager)
        .env("SEATRIAL_DATA_DIR", &data)
        .output()
        .expect("run seatrial")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Everything of `stack` that `host` holds: services and networks (the swarm's view, on the
/// manager), and that node's own containers and volumes. Empty means nothing is left.
fn leftovers(host: &str, stack: &str, manager: bool) -> Vec<String> {
    let label = format!("label=com.docker.stack.namespace={stack}");
    let name = format!("name={stack}_");
    let mut left = Vec::new();
    if manager {
        for s in lines(&docker(host, &["service", "ls", "-q", "--filter", &label])) {
            left.push(format!("service {s}"));
        }
    }
    for c in lines(&docker(host, &["ps", "-aq", "--filter", &label])) {
        left.push(format!("container {c}"));
    }
    for v in lines(&docker(host, &["volume", "ls", "-q", "--filter", &name])) {
        left.push(format!("volume {v}"));
    }
    for n in lines(&docker(host, &["network", "ls", "-q", "--filter", &name])) {
        left.push(format!("network {n}"));
    }
    left
}

/// Waits until `host` holds nothing of `stack` (a worker drops a removed overlay network a
/// moment after its last task), or says what is left.
fn gone_from(host: &str, stack: &str, manager: bool, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    loop {
        let left = leftovers(host, stack, manager);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The node (hostname) of each running task of `service`.
fn task_nodes(manager: &str, service: &str) -> Vec<String> {
    let mut nodes = lines(&docker(
        manager,
        &[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
            service,
        ],
    ));
    nodes.sort();
    nodes
}

/// Removes the stack and its volumes whatever happened (the test's own cleanup).
struct Cleanup<'a> {
    manager: &'a str,
    stack: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = seatrial(self.manager, &["app", "undeploy", self.stack, "--volumes"]);
    }
}

const STATEFUL: &str = r#"
services:
  db:
    image: seatrial-fixture/IMAGE
    volumes:
      - data:/data
    deploy:
      replicas: 2
  web:
    image: seatrial-fixture/web:1
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
volumes:
  data:
"#;

#[test]
fn a_service_with_a_volume_runs_on_the_manager_and_leaves_nothing_on_any_node() {
    let (manager, worker) = cluster();
    let name = stack("a");
    let _cleanup = Cleanup {
        manager: &manager,
        stack: &name,
    };
    let dir = recipe("a", &STATEFUL.replace("IMAGE", "web:1"));
    let dir = dir.to_str().expect("utf8");
    let manager_id = docker(&manager, &["info", "--format", "{{.Swarm.NodeID}}"]);
    let manager_host = docker(&manager, &["info", "--format", "{{.Name}}"]);
    let worker_host = docker(&worker, &["info", "--format", "{{.Name}}"]);
    assert_ne!(manager_host, worker_host, "two nodes");

    let out = seatrial(
        &manager,
        &["app", "deploy", dir, "--name", &name, "--timeout", "3m"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The stateless service spreads over both nodes; both replicas of the one with a volume
    // run on the manager, although the worker could take one.
    let db = format!("{name}_db");
    let mut both = vec![manager_host.clone(), worker_host.clone()];
    both.sort();
    assert_eq!(
        task_nodes(&manager, &format!("{name}_web")),
        both,
        "web is not pinned"
    );
    assert_eq!(
        task_nodes(&manager, &db),
        [manager_host.clone(), manager_host.clone()],
        "db runs on the manager"
    );
    // `docker service inspect` explains why.
    let constraints = docker(
        &manager,
        &[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.Placement.Constraints}}",
            &db,
        ],
    );
    assert!(
        constraints.contains(&format!("node.id=={manager_id}")),
        "{constraints}"
    );
    let why = docker(
        &manager,
        &[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"io.seatrial.pinned\"}}",
            &db,
        ],
    );
    assert!(
        why.contains(&format!("volume `{name}_data`")) && why.contains(&manager_host),
        "{why}"
    );
    let web_constraints = docker(
        &manager,
        &[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.Placement.Constraints}}",
            &format!("{name}_web"),
        ],
    );
    assert!(!web_constraints.contains("node.id"), "{web_constraints}");

    let volume = format!("{name}_data");
    let on = |host: &str| {
        lines(&docker(
            host,
            &["volume", "ls", "-q", "--filter", &format!("name={volume}")],
        ))
    };
    assert_eq!(
        on(&manager),
        std::slice::from_ref(&volume),
        "the volume is on the manager"
    );
    assert!(on(&worker).is_empty(), "and not on the worker");

    // An upgrade in place stays on the node.
    let dir2 = recipe("a2", &STATEFUL.replace("IMAGE", "web:2"));
    let out = seatrial(
        &manager,
        &[
            "app",
            "deploy",
            dir2.to_str().expect("utf8"),
            "--name",
            &name,
            "--update",
            "--timeout",
            "3m",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        task_nodes(&manager, &db),
        [manager_host.clone(), manager_host.clone()],
        "the upgraded db still runs on the manager"
    );
    assert!(
        on(&worker).is_empty(),
        "no volume on the worker after the upgrade"
    );

    let out = seatrial(&manager, &["app", "undeploy", &name, "--volumes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Nothing of the app is left on either node.
    assert_eq!(
        leftovers(&manager, &name, true),
        Vec::<String>::new(),
        "left on the manager"
    );
    assert_eq!(
        gone_from(&worker, &name, false, Duration::from_secs(15)),
        Vec::<String>::new(),
        "left on the worker"
    );
}

#[test]
fn a_volume_service_constrained_to_the_worker_is_refused_and_nothing_is_created() {
    let (manager, worker) = cluster();
    let name = stack("b");
    let _cleanup = Cleanup {
        manager: &manager,
        stack: &name,
    };
    let worker_host = docker(&worker, &["info", "--format", "{{.Name}}"]);
    let manager_host = docker(&manager, &["info", "--format", "{{.Name}}"]);
    let compose = format!(
        r#"
services:
  db:
    image: seatrial-fixture/web:1
    volumes:
      - data:/data
    deploy:
      placement:
        constraints:
          - node.hostname=={worker_host}
  web:
    image: seatrial-fixture/web:1
volumes:
  data:
"#
    );
    let dir = recipe("b", &compose);
    let out = seatrial(
        &manager,
        &[
            "app",
            "deploy",
            dir.to_str().expect("utf8"),
            "--name",
            &name,
            "--timeout",
            "1m",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for part in [
        format!("service `{name}_db`"),
        format!("volume `{name}_data`"),
        format!("`node.hostname=={worker_host}`"),
        format!("`{manager_host}`"),
        "drop or change the constraint".to_owned(),
        "DOCKER_HOST".to_owned(),
    ] {
        assert!(stderr.contains(&part), "names {part}: {stderr}");
    }
    assert!(
        !stderr.contains("warning"),
        "a refusal, not a warning: {stderr}"
    );
    assert_eq!(
        leftovers(&manager, &name, true),
        Vec::<String>::new(),
        "nothing was created on the manager"
    );
    assert_eq!(
        leftovers(&worker, &name, false),
        Vec::<String>::new(),
        "nothing was created on the worker"
    );
}

/// `seatrial <args>` against the manager with the data directory `data`.
fn seatrial_in(manager: &str, data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .args(args)
        .env("DOCKER_HOST", manager)
        .env("SEATRIAL_DATA_DIR", data)
        .env_remove("SEATRIAL_PROBE_IMAGE")
        .output()
        .expect("run seatrial")
}

/// A warm canonical on the cluster: promoting the slow-first-boot recipe (its app keeps its
/// data in a volume) keeps that volume on the manager's node only, where its snapshot is read;
/// a `--quick` run of a change then passes from it (restored data, probed from inside the
/// swarm), and `warm drop` leaves neither node anything of it.
#[test]
fn a_canonical_and_its_quick_runs_keep_their_data_on_the_manager() {
    let (manager, worker) = cluster();
    let scratch = std::env::temp_dir().join(format!("seatrial-pv-{}-warm", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch");
    let name = format!("pvw{}", std::process::id() % 100_000);
    let repo = scratch.join(&name);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new(root.join("fixtures/recipes/slowseed-history.sh"))
        .arg(&repo)
        .output()
        .expect("slowseed-history.sh");
    assert!(o.status.success(), "{}", text(&o));
    let data = scratch.join("data");
    let repo_arg = repo.to_str().expect("utf8");
    let run = |reference: &str, extra: &[&str]| {
        let mut args = vec![
            "test",
            repo_arg,
            "--ref",
            reference,
            "--env",
            "SEED_SECONDS=2",
            "--janitor-max-age",
            "100h",
        ];
        args.extend_from_slice(extra);
        seatrial_in(&manager, &data, &args)
    };

    let promote = run("1.1.0+1", &["--promote"]);
    assert_eq!(promote.status.code(), Some(0), "{}", text(&promote));
    let list = seatrial_in(&manager, &data, &["warm", "list", "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let canonicals: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let canonical = canonicals
        .as_array()
        .and_then(|a| a.iter().find(|c| c["recipe"] == *name))
        .unwrap_or_else(|| panic!("no canonical of {name}: {canonicals:#}"))
        .clone();
    let stack = canonical["stack"].as_str().expect("stack").to_owned();
    let volumes: Vec<String> = canonical["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(!volumes.is_empty(), "{canonical:#}");
    for v in &volumes {
        assert_eq!(
            docker(
                &manager,
                &["volume", "ls", "-q", "--filter", &format!("name=^{v}$")]
            ),
            *v,
            "the canonical's volume {v} is on the manager's node"
        );
        assert_eq!(
            docker(
                &worker,
                &["volume", "ls", "-q", "--filter", &format!("name={v}")]
            ),
            "",
            "and not on the worker"
        );
    }
    assert!(
        canonical["snapshot"]["bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "its snapshot was read: {canonical:#}"
    );

    let report_file = scratch.join("quick.json");
    let quick = run(
        "good-change",
        &["--quick", "--json", report_file.to_str().expect("utf8")],
    );
    assert_eq!(quick.status.code(), Some(0), "{}", text(&quick));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).expect("report"))
            .expect("JSON report");
    assert_eq!(report["mode"], "quick", "{report:#}");
    assert_eq!(report["result"], "pass", "{report:#}");
    let serve = report["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "serve"))
        .unwrap_or_else(|| panic!("a serve stage: {report:#}"));
    assert!(
        serve["detail"]
            .as_str()
            .is_some_and(|d| d.contains("probed from inside the swarm")),
        "{serve:#}"
    );

    let drop = seatrial_in(&manager, &data, &["warm", "drop", &name]);
    assert_eq!(drop.status.code(), Some(0), "{}", text(&drop));
    assert_eq!(
        leftovers(&manager, &stack, true),
        Vec::<String>::new(),
        "manager"
    );
    assert_eq!(
        leftovers(&worker, &stack, false),
        Vec::<String>::new(),
        "worker"
    );
    for v in &volumes {
        assert_eq!(
            docker(
                &worker,
                &["volume", "ls", "-q", "--filter", &format!("name={v}")]
            ),
            "",
            "worker"
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
