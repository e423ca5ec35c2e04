//! The policy's findings on small compose files and recipe directories with symlinks.

use std::path::PathBuf;

use super::*;
use crate::load::{compose_from_value, parse_yaml};

/// A recipe directory with a `data/` subdirectory and the given symlinks.
fn recipe_dir(name: &str, links: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("dir");
    for (link, target) in links {
        std::os::unix::fs::symlink(target, dir.join(link)).expect("symlink");
    }
    dir.canonicalize().expect("canonical")
}

fn violations(dir: &Path, yaml: &str) -> Vec<Violation> {
    let value = parse_yaml(yaml, Path::new("compose.yml")).expect("yaml");
    let (compose, _) = compose_from_value(value, Path::new("compose.yml")).expect("compose");
    check(&compose, dir)
}

fn ids(v: &[Violation]) -> Vec<String> {
    v.iter().map(Violation::permit).collect()
}

fn service(body: &str) -> String {
    format!("services:\n  app:\n    image: busybox:1\n{body}")
}

#[test]
fn the_docker_socket_is_refused_however_it_is_spelled() {
    let dir = recipe_dir("socket", &[("sock", "/var/run/docker.sock")]);
    for source in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run/../run/docker.sock",
        "/var//run/./docker.sock",
        "/run/user/1000/docker.sock",
        "./sock",
    ] {
        let v = violations(
            &dir,
            &service(&format!(
                "    volumes:\n      - {source}:/var/run/docker.sock:ro\n"
            )),
        );
        assert_eq!(v.len(), 1, "{source}: {v:#?}");
        assert_eq!(v[0].rule, Rule::DockerSocket, "{source}: {v:#?}");
        assert_eq!(v[0].at, "services.app.volumes[0]");
        assert_eq!(v[0].permit(), "docker-socket");
    }
}

#[test]
fn a_directory_holding_the_socket_is_a_host_bind_and_the_socket() {
    let dir = recipe_dir("run", &[]);
    let v = violations(&dir, &service("    volumes:\n      - /var/run:/host-run\n"));
    let mut got = ids(&v);
    got.sort();
    let run = resolve_host(Path::new("/var/run")).display().to_string();
    assert_eq!(
        got,
        vec!["docker-socket".to_owned(), format!("host-bind:{run}")]
    );
}

#[test]
fn host_paths_outside_the_recipe_are_refused_inside_are_fine() {
    let dir = recipe_dir(
        "binds",
        &[("etc-link", "/etc"), ("dangling", "/nonexistent/x")],
    );
    let yaml = service(
        "    volumes:\n      - ./data:/data\n      - data:/data2\n      - /etc:/host-etc:ro\n      - ../../etc:/up\n      - ./etc-link:/linked\n      - type: bind\n        source: ./dangling\n        target: /d\n      - type: tmpfs\n        target: /tmp\n",
    );
    let v = violations(&dir, &yaml);
    let got: Vec<(String, String)> = v.iter().map(|v| (v.at.clone(), v.permit())).collect();
    assert_eq!(
        got,
        vec![
            ("services.app.volumes[2]".into(), "host-bind:/etc".into()),
            ("services.app.volumes[3]".into(), "host-bind:/etc".into()),
            ("services.app.volumes[4]".into(), "host-bind:/etc".into()),
            (
                "services.app.volumes[5]".into(),
                "host-bind:/nonexistent/x".into()
            ),
        ],
        "{v:#?}"
    );
    assert!(v[3].what.contains("written `./dangling`"), "{v:#?}");
    // An absolute path into the recipe itself is inside.
    let inside = format!("    volumes:\n      - {}/data:/data\n", dir.display());
    assert!(violations(&dir, &service(&inside)).is_empty());
}

#[test]
fn bind_volumes_by_driver_opts_are_host_binds() {
    let dir = recipe_dir("driveropts", &[]);
    let yaml = service("    volumes:\n      - etc:/etc-host\n")
        + "volumes:\n  etc:\n    driver: local\n    driver_opts:\n      type: none\n      o: bind\n      device: /etc\n  disk:\n    driver_opts:\n      type: ext4\n      device: /dev/sdb1\n  nfs:\n    driver_opts:\n      type: nfs\n      o: addr=10.0.0.1,rw\n      device: \":/export\"\n  plugin:\n    driver: local-persist\n";
    let v = violations(&dir, &yaml);
    assert_eq!(
        ids(&v),
        vec![
            "host-bind:/etc",
            "devices:/dev/sdb1",
            "volume-driver:local-persist"
        ],
        "{v:#?}"
    );
    assert_eq!(v[0].at, "volumes.etc.driver_opts.device");
}

#[test]
fn privileges_and_host_namespaces_are_refused() {
    let dir = recipe_dir("privs", &[]);
    let yaml = service(
        "    privileged: true\n    network_mode: host\n    pid: host\n    ipc: host\n    uts: host\n    userns_mode: host\n    cgroup: host\n    cgroup_parent: /system.slice\n    cap_add: [NET_ADMIN, CHOWN, cap_sys_admin]\n    devices:\n      - /dev/fuse:/dev/fuse\n      - source: /dev/kvm\n        target: /dev/kvm\n    security_opt: [no-new-privileges:true, seccomp=unconfined]\n",
    );
    let mut got = ids(&violations(&dir, &yaml));
    got.sort();
    let mut want = vec![
        "privileged",
        "network_mode:host",
        "pid:host",
        "ipc:host",
        "uts:host",
        "userns_mode:host",
        "cgroup:host",
        "cgroup_parent:/system.slice",
        "cap_add:NET_ADMIN",
        "cap_add:SYS_ADMIN",
        "devices:/dev/fuse",
        "devices:/dev/kvm",
        "security_opt:seccomp=unconfined",
    ];
    want.sort();
    assert_eq!(got, want);
    // Harmless spellings of the same keys are not findings.
    let calm = service(
        "    privileged: false\n    network_mode: bridge\n    ipc: shareable\n    security_opt: [no-new-privileges]\n    cap_add: [NET_BIND_SERVICE]\n",
    );
    assert_eq!(violations(&dir, &calm), Vec::new());
}

#[test]
fn the_swarm_host_network_is_network_mode_host() {
    let dir = recipe_dir("hostnet", &[]);
    let yaml = service("    networks: [hostnet]\n")
        + "networks:\n  hostnet:\n    external: true\n    name: host\n  proxy:\n    external: true\n";
    assert_eq!(ids(&violations(&dir, &yaml)), vec!["network_mode:host"]);
}

#[test]
fn permits_cover_what_they_name_and_no_more() {
    let dir = recipe_dir("permits", &[]);
    let yaml = service(
        "    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - /var/log/app:/logs\n      - /etc:/host-etc\n    cap_add: [net_admin]\n",
    );
    let v = violations(&dir, &yaml);
    let permits: Vec<Permit> = [
        "docker-socket",
        "host-bind:/var/log",
        "cap_add:CAP_NET_ADMIN",
    ]
    .iter()
    .map(|p| p.parse().expect("permit"))
    .collect();
    let left: Vec<String> = refused(&v, &permits).iter().map(|v| v.permit()).collect();
    assert_eq!(left, vec!["host-bind:/etc"]);
    // A path permit covers what is below it, not its neighbours.
    let sibling: Permit = "host-bind:/var/lo".parse().expect("permit");
    assert!(!v.iter().any(|v| sibling.allows(v)));
    let any: Permit = "host-bind".parse().expect("permit");
    assert_eq!(
        refused(&v, &[any]).len(),
        2,
        "docker-socket and cap_add stay"
    );
}

#[test]
fn bad_permit_entries_say_what_to_write() {
    let e = "docker_socket".parse::<Permit>().expect_err("unknown");
    assert!(
        e.contains("unknown rule `docker_socket`") && e.contains("docker-socket"),
        "{e}"
    );
    let e = "host-bind:var/log".parse::<Permit>().expect_err("relative");
    assert!(e.contains("absolute host path"), "{e}");
    let e = "cap_add:".parse::<Permit>().expect_err("empty");
    assert!(e.contains("empty value"), "{e}");
}

#[test]
fn overlays_and_interpolation_are_judged_after_resolution() {
    let dir = recipe_dir("resolved", &[]);
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  app:\n    image: busybox:1\n    volumes:\n      - ${HOST_DIR}:/data\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("compose.priv.yml"),
        "services:\n  app:\n    privileged: true\n",
    )
    .expect("write");
    std::fs::write(
        dir.join(".env.sample"),
        "TYPE=resolved\nHOST_DIR=/etc\nCOMPOSE_FILE=compose.yml:compose.priv.yml\n",
    )
    .expect("write");
    let recipe = crate::Recipe::open(&dir).expect("open");
    let app = recipe
        .resolve(&crate::AppSettings {
            stack: "t-1".into(),
            ..Default::default()
        })
        .expect("resolve");
    let mut got = ids(&check(&app.compose, &recipe.dir));
    got.sort();
    assert_eq!(got, vec!["host-bind:/etc", "privileged"]);
}
