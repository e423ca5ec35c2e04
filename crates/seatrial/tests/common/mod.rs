//! Helpers shared by the server tests: a real `seatrial serve` process, a tiny HTTP client,
//! and checks of what is left on the engine.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "test-token-9f2c";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `seatrial serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(data: &Path, database_url: Option<&str>, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        std::fs::create_dir_all(data).expect("data dir");
        let log = data.join(format!("serve-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seatrial"));
        cmd.arg("serve")
            .env("SEATRIAL_LISTEN", format!("127.0.0.1:{port}"))
            .env("SEATRIAL_DATA_DIR", data)
            .env("SEATRIAL_API_TOKEN", TOKEN)
            .env("SEATRIAL_POLL_INTERVAL", "1s")
            .env_remove("SEATRIAL_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(url) = database_url {
            cmd.env("SEATRIAL_DATABASE_URL", url);
        } else {
            cmd.env_remove("SEATRIAL_DATABASE_URL");
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start seatrial serve");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(r) = http("GET", &format!("{}/healthz", server.base), None, None)
                && r.0 == 200
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("seatrial serve did not come up: {}", server.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body, _) = http("GET", &self.url(path), None, None).expect("GET");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }

    pub fn enqueue(&self, recipe: &str) -> i64 {
        let (status, body, _) = http(
            "POST",
            &self.url("/api/runs"),
            Some(TOKEN),
            Some(&json!({ "recipe": recipe, "mode": "cold" })),
        )
        .expect("POST");
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["state"], "queued");
        v["id"].as_i64().expect("id")
    }

    /// The run's log lines, as `GET /api/runs/{id}/log` returns them.
    pub fn log_lines(&self, id: i64) -> Vec<String> {
        self.get(&format!("/api/runs/{id}/log"))["log"]
            .as_array()
            .expect("log")
            .iter()
            .filter_map(|c| c["text"].as_str())
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the run is in a terminal state and returns it.
    pub fn wait_done(&self, id: i64, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let run = self.get(&format!("/api/runs/{id}"));
            let state = run["state"].as_str().unwrap_or_default().to_owned();
            if !matches!(state.as_str(), "queued" | "running") {
                return run;
            }
            assert!(
                Instant::now() < until,
                "run {id} still {state} after {within:?}: {run:#}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A minimal HTTP/1.1 client (std only), enough for these tests: (status, body, headers).
/// Every request carries `X-Request-Id: test-<pid>`.
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, String, String)> {
    http_as(
        &format!("test-{}", std::process::id()),
        method,
        url,
        token,
        body,
    )
}

/// [`http`] with the `X-Request-Id` given.
pub fn http_as(
    request_id: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nX-Request-Id: {request_id}\r\n",
        if path.is_empty() { "/" } else { path },
    );
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if body.is_some() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes())?;
    // Read the head, then exactly Content-Length bytes when given (chromedriver announces
    // `Connection: close` but keeps the connection open); else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut wanted = None;
    loop {
        if let Some(total) = wanted
            && raw.len() >= total
        {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if wanted.is_none()
            && let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            wanted = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map(|len| end + 4 + len);
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body, head.to_owned()))
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Everything on the engine labelled with the stack's namespace.
pub fn leftovers(stack: &str) -> String {
    let label = format!("label=com.docker.stack.namespace={stack}");
    let mut out = String::new();
    for args in [
        vec!["service", "ls", "-q", "--filter", &label],
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
        vec!["secret", "ls", "-q", "--filter", &label],
    ] {
        let o = Command::new("docker").args(&args).output().expect("docker");
        out.push_str(String::from_utf8_lossy(&o.stdout).trim());
    }
    out
}

/// A PostgreSQL database of its own on the test server, created anew and dropped when dropped.
pub struct Database {
    pub url: String,
    admin: String,
    name: String,
}

fn psql(url: &str, sql: &str) {
    let o = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn fresh_postgres(name: &str) -> Database {
    let admin = std::env::var("SEATRIAL_TEST_POSTGRES_URL").expect(
        "SEATRIAL_TEST_POSTGRES_URL is not set: run scripts/setup.sh (it starts PostgreSQL) and scripts/test.sh",
    );
    let name = format!("seatrial_{name}_{}", std::process::id());
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin.rsplit_once('/').expect("a database in the URL");
    Database {
        url: format!("{base}/{name}"),
        admin,
        name,
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Environment that runs a process with its wall clock `offset` off (libfaketime, installed by
/// scripts/setup.sh); monotonic time stays real.
pub fn skewed_clock(offset: &'static str) -> [(&'static str, &'static str); 3] {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(LIB).exists(),
        "{LIB} is missing: run scripts/setup.sh (it installs faketime)"
    );
    [
        ("LD_PRELOAD", LIB),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
}

/// A one-service recipe without published ports, so several trials can run at once.
pub fn portless_recipe(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("compose.yml"),
        "services:\n  web:\n    image: seatrial-fixture/web:2\n",
    )
    .expect("write");
    dir.to_str().expect("utf8").to_owned()
}

pub fn stage_names(run: &Value) -> Vec<(String, String)> {
    run["stages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The fake forge on a runtime of its own, alive for the whole test.
pub fn fake_forge(token: &'static str) -> seatrial_forge::fake::FakeForge {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let _ = tx.send(seatrial_forge::fake::FakeForge::start(token).await);
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the fake forge started")
}

/// A "git server" on loopback that accepts connections and never answers; its port.
pub fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().map_while(Result::ok) {
            held.push(c);
        }
    });
    port
}

/// Command lines of the processes that mention `needle` (say, a git clone of a URL).
pub fn processes_mentioning(needle: &str) -> String {
    let o = Command::new("pgrep")
        .args(["-a", "-f", needle])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Runs git in `dir` (with a committer identity of its own) and returns its trimmed output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=m@example.org", "-c", "user.name=M"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Polls `f` every 200 ms until it gives a value, failing the test after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `docker` and returns its trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// One file system entry of a volume: what a byte-identical restore must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A file's bytes; a symlink's target.
    pub content: Vec<u8>,
}

/// The volume's full listing (relative path → entry, the root as ""), read from its mountpoint
/// (the engine is local).
pub fn listing(volume: &str) -> BTreeMap<String, Entry> {
    let mountpoint = docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume]);
    assert!(!mountpoint.is_empty(), "volume {volume} has a mountpoint");
    let root = PathBuf::from(mountpoint);
    let mut out = BTreeMap::new();
    let mut todo = vec![root.clone()];
    while let Some(path) = todo.pop() {
        let meta =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let t = meta.file_type();
        let (kind, content) = if t.is_symlink() {
            let target = std::fs::read_link(&path).expect("readlink");
            ("symlink", target.into_os_string().into_encoded_bytes())
        } else if t.is_dir() {
            for e in std::fs::read_dir(&path).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
            ("dir", Vec::new())
        } else if t.is_file() {
            ("file", std::fs::read(&path).expect("read"))
        } else {
            ("other", Vec::new())
        };
        let rel = path
            .strip_prefix(&root)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        out.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                content,
            },
        );
    }
    out
}

/// Volumes, listed.
pub type Contents = BTreeMap<String, BTreeMap<String, Entry>>;

/// What differs between two listings, readably (empty when byte-identical).
pub fn differences(before: &Contents, after: &Contents) -> Vec<String> {
    let mut out = Vec::new();
    for (volume, b) in before {
        let Some(a) = after.get(volume) else {
            out.push(format!("volume {volume} is gone"));
            continue;
        };
        for (path, e) in b {
            match a.get(path) {
                None => out.push(format!("{volume}:/{path}: deleted")),
                Some(x) if x != e => out.push(format!(
                    "{volume}:/{path}: was {} {:o} {}:{} ({} bytes), now {} {:o} {}:{} ({} bytes{})",
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.content.len(),
                    x.kind,
                    x.mode,
                    x.uid,
                    x.gid,
                    x.content.len(),
                    if x.content == e.content {
                        ""
                    } else {
                        ", other content"
                    }
                )),
                Some(_) => {}
            }
        }
        for path in a.keys().filter(|p| !b.contains_key(*p)) {
            out.push(format!("{volume}:/{path}: added"));
        }
    }
    for volume in after.keys().filter(|v| !before.contains_key(*v)) {
        out.push(format!("volume {volume} is new"));
    }
    out
}

/// Delivers a webhook to `POST /hooks/gitea` as Gitea does: the `X-Gitea-Event` given and, when
/// given, the `X-Gitea-Signature`. Returns (status, body).
pub fn deliver(
    server: &Server,
    event: &str,
    signature: Option<&str>,
    body: &str,
    request_id: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = server.base.strip_prefix("http://").expect("http");
    let mut stream = std::net::TcpStream::connect(rest).expect("connect");
    let signature = signature
        .map(|s| format!("X-Gitea-Signature: {s}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /hooks/gitea HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\nContent-Type: application/json\r\nX-Gitea-Event: {event}\r\n{signature}X-Request-Id: {request_id}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
