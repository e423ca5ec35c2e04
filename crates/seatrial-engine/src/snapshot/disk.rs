//! The on-disk side of a snapshot: one directory per snapshot (a tar file per volume plus
//! `manifest.json`), replaced atomically, guarded by a lock file, checked before any restore.
//!
//! Why this file is a little over 600 lines: writing, swapping, locking and checking a snapshot
//! directory are one crash-safety protocol, kept together so its invariants are read in one place.
//!
//! Layout next to a snapshot directory `<parent>/<name>`:
//! - `<parent>/.<name>.lock`: held (flock) by a snapshot or restore of `<name>`;
//! - `<parent>/.<name>.tmp-<pid>-<nanos>`: a snapshot being written (stale once the lock is free);
//! - `<parent>/.<name>.old-<pid>-<nanos>`: the previous snapshot, only on a file system without
//!   `RENAME_EXCHANGE` and only between two renames (put back by [`recover`] when `<name>` is missing);
//! - `<parent>/.<name>.restoring`: the volumes a restore from `<name>` has started to replace,
//!   until it has finished them all (so an interrupted restore is found and redone).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{MANIFEST_FILE, MANIFEST_FORMAT, Manifest};
use crate::{EngineError, Result};

/// Size of the reads and writes of tar files.
pub(crate) const CHUNK: usize = 1 << 20;

/// The parts of a snapshot directory path: its parent and its own name.
fn split(dest: &Path) -> Result<(PathBuf, String)> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .ok_or_else(|| EngineError::SnapshotIo {
            action: "using as a snapshot directory".to_owned(),
            path: dest.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a usable directory name"),
            hint: "name a directory whose last component is a plain name (not `.`, `..` or hidden)"
                .to_owned(),
        })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_owned()))
}

pub(crate) fn io_error(
    action: impl Into<String>,
    path: &Path,
    hint: impl Into<String>,
) -> impl FnOnce(io::Error) -> EngineError {
    let (action, path, hint) = (action.into(), path.to_owned(), hint.into());
    move |source| {
        let hint = if is_disk_full(&source) {
            format!(
                "the file system holding {} is full (or over quota); {hint}",
                path.display()
            )
        } else {
            hint
        };
        EngineError::SnapshotIo {
            action,
            path,
            source,
            hint,
        }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// An exclusive lock on a snapshot directory, held while it is written or restored from.
pub(crate) struct SnapshotLock {
    _file: File,
}

impl SnapshotLock {
    pub(crate) fn acquire(dest: &Path) -> Result<Self> {
        let (parent, name) = split(dest)?;
        let hint = "check that seatrial may write there";
        fs::create_dir_all(&parent).map_err(io_error("creating", &parent, hint))?;
        let lock = parent.join(format!(".{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io_error("opening the lock file", &lock, hint))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(EngineError::SnapshotBusy {
                dir: dest.to_owned(),
                lock,
            }),
            Err(TryLockError::Error(e)) => Err(io_error("locking", &lock, hint)(e)),
        }
    }
}

/// Locks `dest` for a new snapshot of `volumes`, after [`recover`]; refuses volumes that an
/// unfinished restore from `dest` left incomplete (snapshotting them would keep the damage).
pub(crate) fn lock_for_snapshot(dest: &Path, volumes: &[String]) -> Result<SnapshotLock> {
    let lock = SnapshotLock::acquire(dest)?;
    recover(dest)?;
    if let Some(unfinished) = unfinished_restore(dest)? {
        let incomplete: Vec<String> = volumes
            .iter()
            .filter(|n| unfinished.is_empty() || unfinished.contains(n))
            .cloned()
            .collect();
        if !incomplete.is_empty() {
            return Err(EngineError::RestoreUnfinished {
                snapshot: dest.to_owned(),
                volumes: incomplete,
            });
        }
    }
    Ok(lock)
}

/// Locks `snapshot` for a restore, after [`recover`], and checks every file against its manifest.
pub(crate) fn lock_for_restore(snapshot: &Path) -> Result<(SnapshotLock, Manifest)> {
    let lock = SnapshotLock::acquire(snapshot)?;
    recover(snapshot)?;
    Ok((lock, verify_snapshot(snapshot)?))
}

/// Writes the manifest into a staged snapshot, reads it back after the sync — the manifest as
/// written, every file at its size — and swaps the snapshot in. The checksums were computed from
/// the very bytes written (a re-read would only come from the page cache), so they are not
/// computed twice; every restore checks them before touching a volume.
pub(crate) fn finish(staging: Staging, manifest: &Manifest) -> Result<()> {
    write_manifest(&staging.dir, manifest, &staging.kept_hint())?;
    let written = check_snapshot(&staging.dir, Check::Sizes)?;
    if written != *manifest {
        return Err(EngineError::SnapshotInvalid {
            dir: staging.dir.clone(),
            problems: vec!["the manifest read back differs from the one written".to_owned()],
            reseed: staging.kept_hint(),
        });
    }
    staging.commit()
}

/// Under the lock: puts back a previous snapshot that a crash left between two renames, and
/// removes snapshots that were being written when their process died.
pub(crate) fn recover(dest: &Path) -> Result<()> {
    let (parent, name) = split(dest)?;
    let hint = "check the permissions of the snapshot directory's parent";
    let entries = match fs::read_dir(&parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("listing", &parent, hint)(e)),
    };
    let (tmp, old) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    let mut stale = Vec::new();
    let mut previous = None;
    for entry in entries {
        let entry = entry.map_err(io_error("listing", &parent, hint))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.starts_with(&tmp) {
            stale.push(entry.path());
        } else if file_name.starts_with(&old) {
            previous = Some(entry.path());
        }
    }
    if let Some(previous) = previous {
        if dest.exists() {
            stale.push(previous);
        } else {
            warn!(from = %previous.display(), to = %dest.display(), "putting back the previous snapshot an interrupted replacement left aside");
            fs::rename(&previous, dest).map_err(io_error("putting back", &previous, hint))?;
            sync_dir(&parent)?;
        }
    }
    for dir in stale {
        info!(dir = %dir.display(), "removing what an interrupted snapshot left");
        fs::remove_dir_all(&dir).map_err(io_error("removing", &dir, hint))?;
    }
    Ok(())
}

/// A snapshot being written: a temporary directory next to its destination, removed on drop
/// unless committed.
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    dest: PathBuf,
    parent: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn create(dest: &Path) -> Result<Self> {
        let (parent, name) = split(dest)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).map_err(io_error(
            "creating the snapshot's temporary directory",
            &dir,
            format!("the previous snapshot at {} is kept", dest.display()),
        ))?;
        Ok(Self {
            dir,
            dest: dest.to_owned(),
            parent,
            committed: false,
        })
    }

    /// The hint for an error while writing: nothing of the previous snapshot was touched.
    pub(crate) fn kept_hint(&self) -> String {
        format!(
            "nothing was replaced: the previous snapshot at {} is kept (free space there, or move $SEATRIAL_DATA_DIR to a larger disk, and snapshot again)",
            self.dest.display()
        )
    }

    /// Makes the written snapshot the one at `dest`, in one step: the previous one (if any)
    /// stays complete until the new one has replaced it, and is removed after.
    pub(crate) fn commit(mut self) -> Result<()> {
        let hint = self.kept_hint();
        sync_dir(&self.dir)?;
        if self.dest.exists() {
            let exchanged = rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.dir,
                rustix::fs::CWD,
                &self.dest,
                rustix::fs::RenameFlags::EXCHANGE,
            );
            match exchanged {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                    // No atomic exchange here: set the old one aside, then move the new one in
                    // ([`recover`] puts the old one back if we die in between).
                    let aside = self.dir.with_file_name(
                        self.dir
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or_default()
                            .replacen(".tmp-", ".old-", 1),
                    );
                    fs::rename(&self.dest, &aside).map_err(io_error(
                        "setting aside the previous snapshot",
                        &self.dest,
                        hint.clone(),
                    ))?;
                    fs::rename(&self.dir, &self.dest).map_err(io_error(
                        "moving the new snapshot into place",
                        &self.dest,
                        hint.clone(),
                    ))?;
                    self.dir = aside;
                }
                Err(e) => {
                    return Err(io_error(
                        "moving the new snapshot into place",
                        &self.dest,
                        hint,
                    )(e.into()));
                }
            }
            sync_dir(&self.parent)?;
            self.committed = true;
            // `self.dir` now holds the previous snapshot.
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                warn!(dir = %self.dir.display(), error = %e, "could not remove the replaced snapshot; remove it by hand");
            }
        } else {
            fs::rename(&self.dir, &self.dest).map_err(io_error(
                "moving the new snapshot into place",
                &self.dest,
                hint,
            ))?;
            sync_dir(&self.parent)?;
            self.committed = true;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(dir = %self.dir.display(), error = %e, "could not remove an unfinished snapshot");
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(
        "syncing",
        dir,
        "check the file system holding it",
    ))
}

/// How much is written between two background flushes of a tar file being written.
const FLUSH_EVERY: u64 = 64 << 20;

/// Writes the chunks received into a new file while hashing them, then syncs it.
/// Returns the bytes written and their sha256 (hex).
///
/// A second thread flushes what is written to disk while the stream goes on, so the final
/// sync (needed before the snapshot may replace the previous one) finds little left to write
/// and the disk works while the engine is still producing the tar.
pub(crate) fn write_hashed(
    path: &Path,
    mut chunks: mpsc::Receiver<Bytes>,
) -> io::Result<(u64, String)> {
    let file = File::create_new(path)?;
    let flushed_file = file.try_clone()?;
    let (flush, flush_requests) = std::sync::mpsc::channel::<()>();
    let flusher = std::thread::Builder::new()
        .name("snapshot-flush".to_owned())
        .spawn(move || -> io::Result<()> {
            while flush_requests.recv().is_ok() {
                while flush_requests.try_recv().is_ok() {}
                flushed_file.sync_data()?;
            }
            Ok(())
        })?;
    let write = || -> io::Result<(u64, String, File)> {
        let mut out = BufWriter::with_capacity(CHUNK, file);
        let mut hasher = Sha256::new();
        let (mut bytes, mut flushed_at) = (0u64, 0u64);
        while let Some(chunk) = chunks.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            bytes += chunk.len() as u64;
            if bytes - flushed_at >= FLUSH_EVERY {
                flushed_at = bytes;
                // A flusher that stopped has failed: its error is returned below.
                let _ = flush.send(());
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok((bytes, hex::encode(hasher.finalize()), file))
    };
    let written = write();
    drop(flush);
    let flushed = flusher
        .join()
        .map_err(|_| io::Error::other("the thread flushing the file to disk panicked"))?;
    let (bytes, sha256, file) = written?;
    flushed?;
    file.sync_all()?;
    Ok((bytes, sha256))
}

/// Reads a file in chunks into `chunks` (until the receiver goes away). Returns the bytes sent.
/// A read error is also sent, so that the stream's consumer aborts rather than ending early.
pub(crate) fn read_chunks(
    path: &Path,
    chunks: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<u64> {
    let forward = |e: io::Error| {
        let _ = chunks.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        e
    };
    let mut file = File::open(path).map_err(forward)?;
    let mut sent = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).map_err(forward)?;
        if n == 0 {
            return Ok(sent);
        }
        buf.truncate(n);
        sent += n as u64;
        if chunks.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Ok(sent);
        }
    }
}

/// The size and sha256 (hex) of a file, read in chunks.
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Writes `manifest.json` into `dir` and syncs it.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest, hint: &str) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| {
        io_error("encoding", &path, hint)(io::Error::new(io::ErrorKind::InvalidData, e))
    })?;
    File::create_new(&path)
        .and_then(|mut f| {
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .map_err(io_error("writing", &path, hint))
}

/// The marker of a restore from `snapshot` that has started replacing volumes.
fn restoring_marker(snapshot: &Path) -> Result<PathBuf> {
    let (parent, name) = split(snapshot)?;
    Ok(parent.join(format!(".{name}.restoring")))
}

/// Records (synced) that a restore from `snapshot` is about to replace `volumes`.
pub(crate) fn mark_restoring(snapshot: &Path, volumes: &[String]) -> Result<()> {
    let marker = restoring_marker(snapshot)?;
    let hint = "no volume was touched; check that seatrial may write there";
    let json = serde_json::to_vec(volumes).map_err(|e| {
        io_error("encoding", &marker, hint)(io::Error::new(io::ErrorKind::InvalidData, e))
    })?;
    File::create(&marker)
        .and_then(|mut f| {
            f.write_all(&json)?;
            f.sync_all()
        })
        .map_err(io_error("writing", &marker, hint))?;
    sync_dir(marker.parent().unwrap_or(Path::new(".")))
}

/// Removes the marker once every volume is restored.
pub(crate) fn clear_restoring(snapshot: &Path) -> Result<()> {
    let marker = restoring_marker(snapshot)?;
    match fs::remove_file(&marker) {
        Ok(()) => sync_dir(marker.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(
            "removing",
            &marker,
            "every volume was restored; remove the file by hand",
        )(e)),
    }
}

/// The volumes a restore from `snapshot` started to replace and did not finish (the process
/// died or the restore failed midway): their contents are incomplete until a restore from the
/// snapshot succeeds. `None` when no restore from it is unfinished.
pub fn unfinished_restore(snapshot: &Path) -> Result<Option<Vec<String>>> {
    let marker = restoring_marker(snapshot)?;
    match fs::read(&marker) {
        // An unreadable marker still says a restore did not finish, not which volumes.
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_default())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", &marker, "check its permissions")(e)),
    }
}

/// Reads a snapshot's manifest without checking its files.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let invalid = |problem: String, reseed: String| EngineError::SnapshotInvalid {
        dir: dir.to_owned(),
        problems: vec![problem],
        reseed,
    };
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read(&path).map_err(|e| {
        invalid(
            format!("cannot read {}: {e}", path.display()),
            reseed_hint(None),
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        invalid(
            format!("{} is not a snapshot manifest: {e}", path.display()),
            reseed_hint(None),
        )
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(invalid(
            format!(
                "{} has format {}, this seatrial reads format {MANIFEST_FORMAT}",
                path.display(),
                manifest.format
            ),
            reseed_hint(manifest.meta.recipe.as_deref()),
        ));
    }
    Ok(manifest)
}

/// How to get a usable snapshot again.
pub(crate) fn reseed_hint(recipe: Option<&str>) -> String {
    let recipe = recipe.unwrap_or("<recipe>");
    format!(
        "take a new snapshot of a known-good state (for a canonical: `seatrial warm seed {recipe}`)"
    )
}

/// Reads a snapshot's manifest and checks every tar file against it (name, size, sha256).
/// Nothing on any engine is touched.
pub fn verify_snapshot(dir: &Path) -> Result<Manifest> {
    check_snapshot(dir, Check::Contents)
}

/// How far [`check_snapshot`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The manifest and the files' names and sizes.
    Sizes,
    /// Also every file's sha256.
    Contents,
}

pub(crate) fn check_snapshot(dir: &Path, check: Check) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for volume in &manifest.volumes {
        if !super::is_volume_name(&volume.name) || !seen.insert(volume.name.as_str()) {
            problems.push(format!(
                "the manifest names volume `{}` twice or names no valid volume",
                volume.name
            ));
            continue;
        }
        if !super::is_plain_file_name(&volume.file)
            || !super::is_plain_file_name(&volume.archive_root)
        {
            problems.push(format!(
                "volume `{}`: file `{}` / archive root `{}` must be plain names inside the snapshot",
                volume.name, volume.file, volume.archive_root
            ));
            continue;
        }
        let path = dir.join(&volume.file);
        match fs::metadata(&path) {
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
            Ok(meta) if meta.len() != volume.bytes => {
                problems.push(format!(
                    "{} (volume `{}`) has {} bytes, the manifest expects {}",
                    path.display(),
                    volume.name,
                    meta.len(),
                    volume.bytes
                ));
                continue;
            }
            Ok(_) => {}
        }
        if check == Check::Sizes {
            continue;
        }
        match hash_file(&path) {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok((_, sha256)) if sha256 != volume.sha256 => problems.push(format!(
                "{} (volume `{}`) has sha256 {sha256}, the manifest expects {}",
                path.display(),
                volume.name,
                volume.sha256
            )),
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(EngineError::SnapshotInvalid {
            dir: dir.to_owned(),
            problems,
            reseed: reseed_hint(manifest.meta.recipe.as_deref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Staging, recover};

    #[test]
    fn recovery_puts_back_a_snapshot_left_aside_and_drops_unfinished_ones() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dest = tmp.path().join("known-good");
        // A crash between the two renames of the fallback replacement: no `known-good`, the
        // previous one aside, the new one still in its temporary directory.
        let aside = tmp.path().join(".known-good.old-1-2");
        std::fs::create_dir(&aside).expect("aside");
        std::fs::write(aside.join("manifest.json"), "previous").expect("write");
        let unfinished = tmp.path().join(".known-good.tmp-1-2");
        std::fs::create_dir(&unfinished).expect("tmp");
        std::fs::write(unfinished.join("v.tar"), "partial").expect("write");
        // Another snapshot's leftovers are not ours to touch.
        std::fs::create_dir(tmp.path().join(".other.tmp-1-2")).expect("other");

        recover(&dest).expect("recover");
        assert_eq!(
            std::fs::read_to_string(dest.join("manifest.json")).expect("read"),
            "previous"
        );
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".other.tmp-1-2", "known-good"]);

        // With `known-good` present, a directory left aside is stale and goes.
        std::fs::create_dir(&aside).expect("aside again");
        recover(&dest).expect("recover");
        assert!(!aside.exists() && dest.join("manifest.json").exists());
    }

    #[test]
    fn an_uncommitted_snapshot_is_removed_and_a_committed_one_replaces_the_previous() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dest = tmp.path().join("known-good");
        let staging = Staging::create(&dest).expect("staging");
        let dir = staging.dir.clone();
        std::fs::write(dir.join("v.tar"), "new").expect("write");
        drop(staging);
        assert!(
            !dir.exists() && !dest.exists(),
            "dropped before commit: nothing left"
        );

        for content in ["first", "second"] {
            let staging = Staging::create(&dest).expect("staging");
            std::fs::write(staging.dir.join("v.tar"), content).expect("write");
            staging.commit().expect("commit");
            assert_eq!(
                std::fs::read_to_string(dest.join("v.tar")).expect("read"),
                content
            );
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "only the snapshot is left");
    }
}
