//! The fast path of a snapshot when the engine runs on this host: GNU tar reads a plain local
//! volume straight from its mountpoint (no archive API in between). The tar it writes restores
//! through the archive API like any other.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::disk::{CHUNK, Staging};
use crate::{EngineError, Result};

/// Whether `tar` on the PATH is GNU tar (asked once).
pub(super) async fn gnu_tar() -> bool {
    static GNU: OnceCell<bool> = OnceCell::const_new();
    *GNU.get_or_init(|| async {
        tokio::process::Command::new("tar")
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await
            .is_ok_and(|out| {
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("GNU tar")
            })
    })
    .await
}

/// Streams `<parent>/<root>` as a tar (entries `<root>/...`, the root's own mode and owner
/// first) into `path`, hashing it. Returns its size and sha256.
pub(super) async fn read(
    parent: &Path,
    root: &str,
    volume: &str,
    path: &Path,
    staging: &Staging,
) -> Result<(u64, String)> {
    let mountpoint = parent.join(root);
    let failed = |source: std::io::Error| EngineError::SnapshotIo {
        action: format!("reading volume `{volume}` from its mountpoint"),
        path: mountpoint.clone(),
        source,
        hint: staging.kept_hint(),
    };
    let mut tar = tokio::process::Command::new("tar")
        .args([
            "--create",
            "--file=-",
            // PAX: exact mtimes, long names, and extended attributes; no atime/ctime noise.
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--directory",
        ])
        .arg(parent)
        .arg("--")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    let (stdout, mut stderr) = match (tar.stdout.take(), tar.stderr.take()) {
        (Some(out), Some(err)) => (out, err),
        _ => return Err(failed(std::io::Error::other("tar's output is not piped"))),
    };
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let chunks = futures_util::stream::unfold(stdout, |mut out| async move {
        let mut buf = vec![0u8; CHUNK];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    });
    let (written, read_error) = super::save_stream(chunks, volume, path, staging).await?;
    if let Some(e) = read_error {
        return Err(failed(e));
    }
    let status = tar.wait().await.map_err(failed)?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        // Exit 1 is "a file changed as we read it": something used the volume meanwhile.
        return Err(failed(std::io::Error::other(format!(
            "tar exited with {status}: {}",
            stderr.trim()
        ))));
    }
    Ok(written)
}
