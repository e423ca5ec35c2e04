//! Helpers shared by the trial suites on the fake engine: a small recipe, git, a quiet
//! observer and a stand-in for the app's task.

// Each suite uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use seatrial_engine::ProgressObserver;
use seatrial_trial::TrialObserver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const COMPOSE: &str = r#"services:
  app:
    image: example/app:IMAGE
    ports:
      - "8080:80"
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD", "true"]
volumes:
  data:
"#;

pub struct Quiet;
impl ProgressObserver for Quiet {}
impl TrialObserver for Quiet {}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the recipe's files for `image`, with a test executable running `test_script`.
pub fn write_recipe(dir: &Path, image: &str, test_script: &str) {
    std::fs::create_dir_all(dir.join("tests")).expect("tests dir");
    std::fs::write(dir.join("compose.yml"), COMPOSE.replace("IMAGE", image)).expect("compose");
    let test = dir.join("tests/smoke");
    std::fs::write(&test, format!("#!/bin/sh\n{test_script}\n")).expect("test");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&test, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A stand-in for the app's task: answers every request with 200 "ok" on 127.0.0.1.
pub async fn serve_ok() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}
