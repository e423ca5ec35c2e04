//! The recipe's own tests: every executable file in `tests/`, sorted by name, run on the host
//! with the documented environment, each with a timeout. Exit 0 passes; anything else — including
//! a test that cannot be started — fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Output kept per stream of a test (the tail, when longer).
const MAX_OUTPUT: usize = 64 * 1024;

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

fn tail(mut bytes: Vec<u8>) -> String {
    if bytes.len() > MAX_OUTPUT {
        bytes.drain(..bytes.len() - MAX_OUTPUT);
    }
    String::from_utf8_lossy(&bytes).into_owned()
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
    let spawned = Command::new(&path)
        .current_dir(&recipe_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
    // However the test ends — exit, timeout, or the trial cancelled under it — nothing it
    // started outlives it.
    let _group = child.id().map(GroupKill);
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = async {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b).await;
        }
        b
    };
    let read_err = async {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b).await;
        }
        b
    };
    let waited = tokio::time::timeout(timeout, async {
        let (status, o, e) = tokio::join!(child.wait(), read_out, read_err);
        (status, o, e)
    })
    .await;
    let (passed, outcome, stdout, stderr) = match waited {
        Ok((Ok(status), o, e)) => {
            let outcome = match status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_owned(),
            };
            (status.success(), outcome, tail(o), tail(e))
        }
        Ok((Err(e), o, er)) => (false, format!("cannot wait for it: {e}"), tail(o), tail(er)),
        Err(_) => {
            let _ = child.kill().await;
            (
                false,
                format!("killed after {}s (timeout)", timeout.as_secs()),
                String::new(),
                String::new(),
            )
        }
    };
    TestResult {
        name: name.to_owned(),
        passed,
        outcome,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout,
        stderr,
    }
}
