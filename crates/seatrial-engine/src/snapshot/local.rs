//! The fast paths when the engine runs on this host and the volume is a plain local one: GNU tar
//! reads the volume straight from its mountpoint for a snapshot, and unpacks a (verified)
//! snapshot straight into it for a restore — no archive API in between. Their tars are the same
//! format as the archive API's, so either side may be taken the other way.

use std::path::{Path, PathBuf};
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

/// Where a restore sets the volume's previous contents aside (next to its mountpoint, on the
/// same file system, outside the data) while they are deleted.
const SET_ASIDE_PREFIX: &str = "seatrial-restore-old-";

/// Replaces the contents of the local volume mounted at `mountpoint` with the tar at `tar`
/// (entries `<archive_root>/...`, the first being the volume's root): its present entries are
/// moved aside, so nothing old is merged into the new contents, and GNU tar unpacks into the
/// empty mountpoint; the root's own mode and owner come from the tar.
///
/// What was moved aside is deleted in the background, after this returns: on these disks
/// (ext4 mounted with `discard`) deleting a GiB takes about as long as writing one, and doing it
/// first or alongside made the restore wait for it. The disk space comes back seconds later; a
/// deletion cut short (the machine stops) is finished by the next restore of the volume, or by
/// removing the volume.
///
/// The caller has verified the tar against its manifest and checked that no container mounts
/// the volume, and marks the restore unfinished until it returns.
pub(super) async fn restore(
    mountpoint: &Path,
    archive_root: &str,
    tar: &Path,
    volume: &str,
) -> Result<()> {
    let parent = mountpoint.parent().map(Path::to_owned).unwrap_or_default();
    let root = mountpoint
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let failed = |path: &Path| {
        let (volume, path) = (volume.to_owned(), path.to_owned());
        move |source: std::io::Error| EngineError::SnapshotIo {
            action: format!("restoring volume `{volume}` into its mountpoint"),
            path,
            source,
            hint: "the volume is incomplete: fix the cause and restore again".to_owned(),
        }
    };
    let set_aside_dirs = {
        let (parent, emptied) = (parent.clone(), mountpoint.to_owned());
        tokio::task::spawn_blocking(move || set_aside(&parent, &emptied))
            .await
            .map_err(|e| EngineError::Cancelled {
                context: format!("emptying volume `{volume}` ({e})"),
            })?
            .map_err(failed(mountpoint))?
    };
    delete_in_background(set_aside_dirs);
    let mut command = tokio::process::Command::new("tar");
    command
        .args([
            "--extract",
            "--numeric-owner",
            "--same-owner",
            "--preserve-permissions",
            "--xattrs",
            "--xattrs-include=*",
        ])
        .arg(format!("--file={}", tar.display()))
        .arg("--directory")
        .arg(&parent);
    if archive_root != root {
        // Entries `<archive_root>/x` become `<root>/x`; hard link targets too, symlink targets
        // (the data itself) never.
        command.arg(format!(
            "--transform=s,^{}\\(/\\|$\\),{}\\1,S",
            escape(archive_root, "\\.[]*^$,"),
            escape(&root, "\\&,")
        ));
    }
    let unpacked = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(failed(tar))?;
    if !unpacked.status.success() {
        return Err(failed(tar)(std::io::Error::other(format!(
            "tar exited with {}: {}",
            unpacked.status,
            String::from_utf8_lossy(&unpacked.stderr).trim()
        ))));
    }
    Ok(())
}

/// Deletes `dirs` (set aside next to a mountpoint, outside the volume's data) with a detached
/// `rm -rf` in a process group of its own, so that it finishes even after this process exits or
/// its terminal is interrupted; a thread reaps it while this process lives.
fn delete_in_background(dirs: Vec<PathBuf>) {
    use std::os::unix::process::CommandExt;
    if dirs.is_empty() {
        return;
    }
    let spawned = std::process::Command::new("rm")
        .args(["-rf", "--"])
        .args(&dirs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            let _ = std::thread::Builder::new()
                .name("restore-cleanup".to_owned())
                .spawn(move || child.wait());
        }
        Err(e) => {
            tracing::warn!(error = %e, dirs = ?dirs, "cannot start rm; deleting what a restore set aside on a thread");
            let _ = std::thread::Builder::new()
                .name("restore-cleanup".to_owned())
                .spawn(move || {
                    for dir in dirs {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                });
        }
    }
}

/// Moves every entry of `mountpoint` into a new directory beside it; returns that directory and
/// those that earlier restores set aside and whose deletion did not finish (all to delete).
/// Fails unless `mountpoint` is empty afterwards.
fn set_aside(parent: &Path, mountpoint: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)?
        .map_while(std::result::Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(SET_ASIDE_PREFIX)
        })
        .map(|e| e.path())
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let aside = parent.join(format!("{SET_ASIDE_PREFIX}{}-{nanos}", std::process::id()));
    std::fs::create_dir(&aside)?;
    dirs.push(aside.clone());
    for entry in std::fs::read_dir(mountpoint)? {
        let entry = entry?;
        let from = entry.path();
        match std::fs::rename(&from, aside.join(entry.file_name())) {
            Ok(()) => {}
            // A mount inside the volume's directory: delete in place instead.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&from)?;
                } else {
                    std::fs::remove_file(&from)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if std::fs::read_dir(mountpoint)?.next().is_some() {
        return Err(std::io::Error::other(
            "entries appeared in the volume while it was emptied: something uses it",
        ));
    }
    Ok(dirs)
}

/// `text` with a backslash before each of `special` (for a tar --transform expression).
fn escape(text: &str, special: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn transform_parts_are_escaped() {
        assert_eq!(escape("seatrial-volume", "\\.[]*^$,"), "seatrial-volume");
        assert_eq!(escape("a.b,c", "\\.[]*^$,"), "a\\.b\\,c");
        assert_eq!(escape("_data&", "\\&,"), "_data\\&");
    }
}
