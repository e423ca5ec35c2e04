//! seatrial against Podman's Docker-compatible API (a real `podman system service` on a socket
//! of its own): commands that need Swarm are refused with exit 3 and an explanation that names
//! Podman, instead of "run docker swarm init"; recipe checks that need no engine still work.
//! Podman comes from Debian's `podman` package (scripts/setup.sh installs it); without it this
//! test fails rather than skips.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `podman system service` listening on `socket`; stopped when dropped.
struct PodmanService {
    child: Child,
    socket: PathBuf,
}

impl PodmanService {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start podman ({e}): install it with `apt-get install podman` (scripts/setup.sh does)")
            });
        let service = Self { child, socket };
        let until = Instant::now() + Duration::from_secs(30);
        while !service.answers() {
            assert!(
                Instant::now() < until,
                "podman system service did not answer on {} within 30 s",
                service.socket.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let mut out = String::new();
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            .is_ok()
            && s.read_to_string(&mut out).is_ok()
            && out.starts_with("HTTP/1.")
            && out.contains(" 200 ")
    }

    fn seatrial(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_seatrial"))
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .output()
            .expect("run seatrial")
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn podman_is_refused_with_exit_3_and_told_apart_from_a_swarm_less_docker() {
    let dir = std::env::temp_dir().join(format!("seatrial-podman-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let podman = PodmanService::start(&dir);

    for args in [&["app", "ps", "hello"][..], &["janitor", "--dry-run"][..]] {
        let out = podman.seatrial(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "seatrial {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("the engine at unix://{}", podman.socket.display()))
                && stderr.contains("is Podman ")
                && stderr.contains("has no Docker Swarm"),
            "seatrial {args:?} names the engine and why it cannot work: {stderr}"
        );
        assert!(
            stderr.contains("install Docker Engine") && stderr.contains("`seatrial lint`"),
            "it says what to do, and what works without Swarm: {stderr}"
        );
        assert!(
            !stderr.contains("docker swarm init --advertise-addr 127.0.0.1` on a single node"),
            "not the advice for a Docker engine outside a swarm: {stderr}"
        );
    }

    // What the explanation promises: recipe checks work with only Podman around.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let out = podman.seatrial(&["lint", example.to_str().expect("utf8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(podman);
    let _ = std::fs::remove_dir_all(&dir);
}
