//! `seatrial test` with default settings on a real two-node swarm (scripts/cluster.sh): the app's
//! task runs on the worker, out of this host's reach, so the serve stage must probe from inside
//! the swarm with a one-shot job — and leave nothing of the stack behind, the job included.
//!
//! Needs `SEATRIAL_TEST_CLUSTER` (the manager's DOCKER_HOST) and `SEATRIAL_TEST_CLUSTER_WORKER`
//! (the worker's), as `scripts/cluster.sh up` prints them. The probe job runs seatrial's image
//! with the binary under test in it (built here, loaded on both nodes, removed afterwards): the
//! flags the job uses are the ones this change adds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// seatrial's image with the binary under test (and the libraries it loads) in place of its
/// own, on every node; removed from them when dropped.
struct ProbeImage {
    tag: String,
    hosts: Vec<String>,
}

impl ProbeImage {
    fn build(manager: &str, worker: &str) -> Self {
        let base = format!("seatrial:{}", env!("CARGO_PKG_VERSION"));
        for host in [manager, worker] {
            let found = Command::new("docker")
                .args(["-H", host, "image", "inspect", "--format", "{{.Id}}", &base])
                .output()
                .expect("docker");
            assert!(
                found.status.success(),
                "seatrial's image {base} is not on {host}: build it (scripts/build-image.sh) and load it on every node (docker save {base} | docker -H {host} load)"
            );
        }
        let ctx = scratch("image");
        let root = ctx.join("rootfs");
        let bin = Path::new(env!("CARGO_BIN_EXE_seatrial"));
        std::fs::create_dir_all(root.join("usr/local/bin")).expect("dir");
        let o = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(bin)
            .arg(root.join("usr/local/bin/seatrial"))
            .output()
            .expect("objcopy");
        assert!(o.status.success(), "objcopy: {}", text(&o));
        // The test build links the host's glibc: bring what it loads (the image's /lib is /usr/lib).
        let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let Some(path) = line
                .split("=>")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            else {
                continue;
            };
            let inside = Path::new(path)
                .strip_prefix("/usr")
                .unwrap_or(Path::new(path))
                .strip_prefix("/")
                .expect("an absolute path");
            let to = root.join("usr").join(inside);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("lib dir");
            std::fs::copy(path, &to).unwrap_or_else(|e| panic!("copy {path}: {e}"));
        }
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {base}\nCOPY rootfs/ /\n"),
        )
        .expect("Dockerfile");
        let tag = format!("seatrial-probe-test:pj-{}", std::process::id());
        docker(
            manager,
            &["build", "-q", "-t", &tag, ctx.to_str().expect("utf8")],
        );
        let _ = std::fs::remove_dir_all(&ctx);
        // Onto the worker: docker save | docker load.
        let mut save = Command::new("docker")
            .args(["-H", manager, "save", &tag])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let load = Command::new("docker")
            .args(["-H", worker, "load", "-q"])
            .stdin(save.stdout.take().expect("save's stdout"))
            .output()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(
            saved.success() && load.status.success(),
            "docker save | docker load: {}",
            text(&load)
        );
        let image = Self {
            tag,
            hosts: vec![manager.to_owned(), worker.to_owned()],
        };
        // It answers the job's flags.
        let help = docker(
            manager,
            &[
                "run",
                "--rm",
                "--entrypoint",
                "seatrial",
                &image.tag,
                "probe",
                "--help",
            ],
        );
        assert!(help.contains("--retry-for"), "{help}");
        image
    }
}

impl Drop for ProbeImage {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("docker")
                .args(["-H", host, "image", "rm", "-f", &self.tag])
                .output();
        }
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
    let image = ProbeImage::build(&manager, &worker);
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
        .env("SEATRIAL_PROBE_IMAGE", &image.tag)
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

    // Nothing of the stack is left: not the app, not the probe job, not the network; the
    // worker's agent removes its containers on its own schedule (docs/cluster.md).
    assert_eq!(
        leftovers(&manager, &manager, &stack),
        "",
        "left on the manager"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = leftovers(&manager, &worker, &stack);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left on the worker: {left}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_dir_all(&data);
}
