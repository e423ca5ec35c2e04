//! `seatrial test` with default settings on a real two-node swarm (scripts/cluster.sh): the app's
//! task runs on the worker, out of this host's reach, so the serve stage must probe from inside
//! the swarm with a one-shot job — and leave nothing of the stack behind, the job included.
//!
//! Needs `SEATRIAL_TEST_CLUSTER` (the manager's DOCKER_HOST) and `SEATRIAL_TEST_CLUSTER_WORKER`
//! (the worker's), as `scripts/cluster.sh up` prints them. The probe job runs seatrial's own
//! image (the default), which the test command builds before the cluster copies it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn cluster() -> (String, String) {
    let get = |name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
            panic!(
                "{name} is not set: this test needs the two-node swarm — run scripts/cluster.sh up and set SEATRIAL_TEST_CLUSTER (manager) and SEATRIAL_TEST_CLUSTER_WORKER (worker) to the DOCKER_HOSTs it prints"
            )
        })
    };
    (
        get("SEATRIAL_TEST_CLUSTER"),
        get("SEATRIAL_TEST_CLUSTER_WORKER"),
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `docker -H host args…`, which must succeed; its stdout.
fn docker(host: &str, args: &[&str]) -> String {
    let o = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker");
    assert!(
        o.status.success(),
        "docker -H {host} {args:?}: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// seatrial's own image, which the probe job runs by default (on the manager), must be there and be
/// current (it answers the flags the job uses): the test command builds it
/// (scripts/build-image.sh) before `scripts/cluster.sh up` copies it onto both nodes.
fn check_probe_image(hosts: &[&str]) {
    let image = format!("seatrial:{}", env!("CARGO_PKG_VERSION"));
    for host in hosts {
        let help = Command::new("docker")
            .args([
                "-H",
                host,
                "run",
                "--rm",
                "--entrypoint",
                "seatrial",
                &image,
                "probe",
                "--help",
            ])
            .output()
            .expect("docker");
        assert!(
            help.status.success() && text(&help).contains("--retry-for"),
            "seatrial's image {image} on {host} is missing or older than this tree ({}): run scripts/build-image.sh, then scripts/cluster.sh up (it copies changed images onto every node)",
            text(&help)
        );
    }
}

fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report:#}"))
}

/// What of the stack the manager still lists (services — the probe job among them — and
/// networks), and the containers of it on `node`.
fn leftovers(manager: &str, node: &str, stack: &str) -> String {
    let label = format!("label=com.docker.stack.namespace={stack}");
    let name = format!("name={stack}_");
    [
        docker(manager, &["service", "ls", "-q", "--filter", &label]),
        docker(manager, &["service", "ls", "-q", "--filter", &name]),
        docker(manager, &["network", "ls", "-q", "--filter", &label]),
        docker(node, &["ps", "-aq", "--filter", &label]),
    ]
    .join(" ")
    .trim()
    .to_owned()
}

#[test]
fn a_trial_with_default_settings_probes_from_inside_the_cluster() {
    let (manager, worker) = cluster();
    let nodes = docker(&manager, &["node", "ls", "--format", "{{.Hostname}}"]);
    assert!(
        nodes.lines().count() >= 2,
        "{manager} is not a multi-node swarm (nodes: {nodes}): run scripts/cluster.sh up"
    );
    check_probe_image(&[&manager, &worker]);
    // Named `probe-job`, its trial stacks are `tpj-…`.
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe-job");
    let data = scratch("data");
    let report_file = data.join("report.json");
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_seatrial"))
        .arg("test")
        .arg(&recipe)
        .arg("--json")
        .arg(&report_file)
        // Other people's trial stacks on the shared cluster are none of this test's business.
        .args(["--janitor-max-age", "100h"])
        .env("DOCKER_HOST", &manager)
        .env("SEATRIAL_DATA_DIR", &data)
        .env_remove("SEATRIAL_PROBE_IMAGE")
        .env_remove("SEATRIAL_TEST_CLUSTER")
        .output()
        .expect("run seatrial test");
    let report: serde_json::Value = std::fs::read_to_string(&report_file)
        .map(|s| serde_json::from_str(&s).expect("the report is JSON"))
        .unwrap_or_else(|_| panic!("no report written: {}", text(&o)));
    let stack = report["stack"].as_str().expect("stack").to_owned();
    let mut out = std::io::stderr();
    let _ = writeln!(
        out,
        "trial of {stack} took {:?}:\n{}",
        started.elapsed(),
        text(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report["result"], "pass", "{report:#}");

    let serve = stage(&report, "serve")["detail"].as_str().expect("detail");
    assert!(
        serve.starts_with(&format!(
            "probed from inside the swarm (job on network {stack}_default, node "
        )),
        "{serve}"
    );
    assert!(
        serve.contains(&format!(
            "GET http://tasks.{stack}_app:80/ (Host: {}) → 200",
            report["domain"].as_str().expect("domain")
        )),
        "{serve}"
    );
    assert!(
        serve.ends_with("[a 2-node swarm: from inside the swarm]"),
        "the detail says why: {serve}"
    );
    let tests = stage(&report, "tests");
    assert_eq!(tests["result"], "pass", "{tests:#}");
    assert!(
        tests.to_string().contains("SEATRIAL_URL=[]"),
        "recipe tests get an empty SEATRIAL_URL: {tests:#}"
    );
    assert_eq!(stage(&report, "teardown")["result"], "pass");

    // Nothing of the stack is left on either node when the trial returns: not the app, not
    // the probe job, not the network.
    assert_eq!(
        leftovers(&manager, &manager, &stack),
        "",
        "left on the manager"
    );
    assert_eq!(
        leftovers(&manager, &worker, &stack),
        "",
        "left on the worker"
    );
    let _ = std::fs::remove_dir_all(&data);
}
