//! The recipe's own tests: every executable file in `tests/`, sorted by name, run on the host
//! with the documented environment, each with a timeout. Exit 0 passes; anything else — including
//! a test that cannot be started — fails.
//!
//! A test is someone else's code running as seatrial's user, so it gets a minimal environment:
//! nothing of seatrial's own (API and forge tokens, the webhook secret, the database URL) and a
//! fresh empty `HOME` of its own.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Output kept per stream of a test: its first and last parts, when longer.
const KEEP_HEAD: usize = 16 * 1024;
const KEEP_TAIL: usize = 48 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub name: String,
    pub passed: bool,
    /// `exit 0`, `exit 3`, `killed after 300s`, `cannot run: ...`.
    pub outcome: String,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
}

/// Kills a process group when dropped.
struct GroupKill(u32);

impl Drop for GroupKill {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Host variables a test inherits (when set): where programs are, the locale and time zone, who
/// it runs as, and the client certificates of a TLS engine (`DOCKER_HOST` is in the contract).
const INHERITED: [&str; 8] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "USER",
    "LOGNAME",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
];

/// `PATH` when seatrial itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The whole environment of a test: [`INHERITED`] from `host`, `HOME`, then the contract
/// variables (`SEATRIAL_STACK`, ..., `DOCKER_HOST`).
pub fn environment(
    host: impl Fn(&str) -> Option<String>,
    contract: &[(String, String)],
    home: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), host(k)?)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("HOME".into(), home.to_string_lossy().into_owned()));
    env.extend(contract.iter().cloned());
    env
}

/// A fresh, private, empty `HOME` for one test; removed with what the test left in it.
struct TestHome(PathBuf);

impl TestHome {
    fn create() -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "seatrial-test-home-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with this pid is not ours to reuse.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The executables of `tests/`, sorted; other files (docs, seatrial.toml) are not tests.
pub fn discover(recipe_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(recipe_dir.join("tests")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A stream's output, capped while it is read: the first [`KEEP_HEAD`] and last [`KEEP_TAIL`]
/// bytes, and how much was cut between them. A test printing gigabytes costs no memory.
#[derive(Debug, Default)]
pub struct Capped {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    cut: u64,
}

impl Capped {
    pub fn push(&mut self, mut bytes: &[u8]) {
        let room = KEEP_HEAD.saturating_sub(self.head.len());
        let to_head = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..to_head]);
        bytes = &bytes[to_head..];
        if bytes.len() >= KEEP_TAIL {
            self.cut += (self.tail.len() + bytes.len() - KEEP_TAIL) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - KEEP_TAIL..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(KEEP_TAIL);
        self.tail.drain(..overflow);
        self.cut += overflow as u64;
        self.tail.extend(bytes);
    }

    /// The kept text, with a line saying how much was cut.
    pub fn render(&self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let (a, b) = self.tail.as_slices();
        let tail = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        if self.cut == 0 {
            return format!("{head}{tail}");
        }
        format!(
            "{head}\n[… {} bytes cut: only the first {} KiB and the last {} KiB are kept …]\n{tail}",
            self.cut,
            KEEP_HEAD / 1024,
            KEEP_TAIL / 1024
        )
    }
}

/// Reads a pipe to its end into `into`, chunk by chunk.
async fn drain<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, into: &std::sync::Mutex<Capped>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]),
        }
    }
}

/// Runs one test to completion or timeout.
pub async fn run(
    recipe_dir: &Path,
    name: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> TestResult {
    let started = Instant::now();
    // Absolute: the test runs with the recipe as its working directory.
    let recipe_dir = recipe_dir
        .canonicalize()
        .unwrap_or_else(|_| recipe_dir.to_owned());
    let path = recipe_dir.join("tests").join(name);
    let cannot_run = |why: String| TestResult {
        name: name.to_owned(),
        passed: false,
        outcome: format!("cannot run: {why}"),
        duration_ms: started.elapsed().as_millis() as u64,
        stdout: String::new(),
        stderr: String::new(),
    };
    let home = match TestHome::create() {
        Ok(h) => h,
        Err(e) => {
            return cannot_run(format!(
                "cannot create its HOME under {}: {e}",
                std::env::temp_dir().display()
            ));
        }
    };
    let env = environment(|k| std::env::var(k).ok(), env, &home.0);
    let mut command = Command::new(&path);
    command
        .current_dir(&recipe_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    run_captured(name, command, timeout).await
}

/// Runs a prepared command (its program, arguments, directory and environment set) to
/// completion or `timeout`, in its own process group, with its output capped as it is read.
/// Whatever ends it — exit, timeout, or the caller dropping this future (a cancelled run) —
/// nothing it started outlives it, and what it printed until then is kept.
pub async fn run_captured(name: &str, mut command: Command, timeout: Duration) -> TestResult {
    let started = Instant::now();
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so what it starts is stopped with it.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return TestResult {
                name: name.to_owned(),
                passed: false,
                outcome: format!("cannot run: {e}"),
                duration_ms: started.elapsed().as_millis() as u64,
                stdout: String::new(),
                stderr: String::new(),
            };
        }
    };
    let _group = child.id().map(GroupKill);
    let out = std::sync::Mutex::new(Capped::default());
    let err = std::sync::Mutex::new(Capped::default());
    let (stdout_pipe, stderr_pipe) = (child.stdout.take(), child.stderr.take());
    let waited = tokio::time::timeout(timeout, async {
        let (status, (), ()) = tokio::join!(
            child.wait(),
            drain(stdout_pipe, &out),
            drain(stderr_pipe, &err)
        );
        status
    })
    .await;
    let (passed, outcome) = match waited {
        Ok(Ok(status)) => {
            let outcome = match status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_owned(),
            };
            (status.success(), outcome)
        }
        Ok(Err(e)) => (false, format!("cannot wait for it: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            (
                false,
                format!("killed after {}s (timeout)", timeout.as_secs()),
            )
        }
    };
    let stdout = out.lock().unwrap_or_else(|e| e.into_inner()).render();
    let stderr = err.lock().unwrap_or_else(|e| e.into_inner()).render();
    TestResult {
        name: name.to_owned(),
        passed,
        outcome,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout,
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Capped::default();
        c.push(b"hello ");
        c.push(b"world\n");
        assert_eq!(c.render(), "hello world\n");
    }

    #[test]
    fn long_output_keeps_first_and_last_parts_and_says_how_much_was_cut() {
        let mut c = Capped::default();
        c.push(b"START");
        // 10 MiB in odd-sized chunks.
        let filler = vec![b'x'; 7919];
        let mut total = 5usize;
        while total < 10 * 1024 * 1024 {
            c.push(&filler);
            total += filler.len();
        }
        c.push(b"END");
        total += 3;
        let text = c.render();
        assert!(text.starts_with("START"), "head kept");
        assert!(text.ends_with("END"), "tail kept");
        let cut = total - KEEP_HEAD - KEEP_TAIL;
        assert!(
            text.contains(&format!("[… {cut} bytes cut")),
            "says how much was cut: {}",
            &text[KEEP_HEAD..KEEP_HEAD + 120]
        );
        assert!(
            text.len() < KEEP_HEAD + KEEP_TAIL + 200,
            "bounded: {}",
            text.len()
        );
    }

    #[test]
    fn one_huge_chunk_is_capped_too() {
        let mut c = Capped::default();
        c.push(&vec![b'a'; KEEP_HEAD + KEEP_TAIL + 10]);
        assert!(c.render().contains("[… 10 bytes cut"));
    }

    const SECRETS: [&str; 5] = [
        "SEATRIAL_API_TOKEN",
        "SEATRIAL_FORGE_TOKEN",
        "SEATRIAL_WEBHOOK_SECRET",
        "SEATRIAL_DATABASE_URL",
        "SEATRIAL_TEST_POSTGRES_URL",
    ];

    fn contract() -> Vec<(String, String)> {
        vec![
            ("SEATRIAL_STACK".into(), "t-1".into()),
            ("DOCKER_HOST".into(), "unix:///var/run/docker.sock".into()),
        ]
    }

    #[test]
    fn seatrial_secrets_never_reach_a_test() {
        let host = |k: &str| match k {
            "PATH" => Some("/opt/bin:/usr/bin".to_owned()),
            "HOME" => Some("/root".to_owned()),
            k if SECRETS.contains(&k) => Some("s3cret".to_owned()),
            _ => None,
        };
        let env = environment(host, &contract(), Path::new("/tmp/home-x"));
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "SEATRIAL_STACK", "DOCKER_HOST"]);
        assert!(env.contains(&("HOME".into(), "/tmp/home-x".into())));
        assert!(env.iter().all(|(_, v)| v != "s3cret"));
    }

    #[tokio::test]
    async fn a_test_sees_only_its_environment_and_a_fresh_home() {
        let dir = std::env::temp_dir().join(format!("seatrial-rt-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tests")).expect("dir");
        let script = dir.join("tests/env.sh");
        std::fs::write(&script, "#!/bin/sh\nls -A \"$HOME\" >&2\nenv\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let r = run(&dir, "env.sh", &contract(), Duration::from_secs(30)).await;
        assert!(r.passed, "{r:?}");
        let keys: Vec<&str> = r
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k)
            .collect();
        // The test process runs under cargo, whose CARGO_* variables would leak without env_clear.
        assert!(
            std::env::var("CARGO_PKG_NAME").is_ok(),
            "cargo sets it for tests"
        );
        for k in &keys {
            assert!(
                [
                    "PATH",
                    "LANG",
                    "LC_ALL",
                    "TZ",
                    "USER",
                    "LOGNAME",
                    "HOME",
                    "SEATRIAL_STACK",
                    "DOCKER_HOST",
                    "PWD",
                    "SHLVL",
                    "_",
                    "OLDPWD"
                ]
                .contains(k),
                "{k} leaked into the test: {}",
                r.stdout
            );
        }
        let home = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("HOME="))
            .expect("HOME is set");
        assert!(home.contains("seatrial-test-home-"), "{home}");
        assert_eq!(r.stderr, "", "HOME starts empty");
        assert!(!Path::new(home).exists(), "HOME is removed after the test");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
