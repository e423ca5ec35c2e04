//! [`VolumeSnapshots`] on the fake engine: each volume's in-memory files become a tar file in a
//! snapshot directory of the real on-disk format (`manifest.json`, one tar per volume with its
//! sha256), written, locked and swapped in by the same code as the Swarm engine's — so
//! [`crate::read_manifest`] and [`crate::verify_snapshot`] accept it, and a restore checks it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::time::Instant as TokioInstant;

use super::{FakeEngine, FakeVolume};
use crate::labels;
use crate::snapshot::disk;
use crate::snapshot::{
    ARCHIVE_ROOT, MANIFEST_FORMAT, Manifest, RestoreReport, SnapshotMeta, VolumeRecord,
    VolumeSnapshots, distinct_volume_names,
};
use crate::{EngineError, Result};

const BLOCK: usize = 512;

/// One ustar header.
fn header(path: &str, typeflag: u8, size: usize) -> Result<[u8; BLOCK], String> {
    let mut h = [0u8; BLOCK];
    let (prefix, name) = match path.len() {
        0..=100 => ("", path),
        _ => path
            .rsplit_once('/')
            .filter(|(p, n)| p.len() <= 155 && n.len() <= 100)
            .ok_or_else(|| format!("path `{path}` is too long for a tar header"))?,
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode: &[u8] = if typeflag == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    h[100..108].copy_from_slice(mode);
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// A volume's files as a tar archive, its root directory first (as the Swarm engine's are).
fn pack(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut out = header(&format!("{ARCHIVE_ROOT}/"), b'5', 0)?.to_vec();
    for (path, contents) in files {
        out.extend(header(
            &format!("{ARCHIVE_ROOT}/{path}"),
            b'0',
            contents.len(),
        )?);
        out.extend(contents);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.extend([0u8; 2 * BLOCK]);
    Ok(out)
}

/// The files of an archive [`pack`] wrote.
fn unpack(archive: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut files = BTreeMap::new();
    let mut at = 0;
    while let Some(h) = archive.get(at..at + BLOCK) {
        if h.iter().all(|&b| b == 0) {
            return Ok(files);
        }
        let size = usize::from_str_radix(text(&h[124..136]).trim(), 8)
            .map_err(|e| format!("bad size in the tar header at byte {at}: {e}"))?;
        let (prefix, name) = (text(&h[345..500]), text(&h[..100]));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let data = archive
            .get(at + BLOCK..at + BLOCK + size)
            .ok_or_else(|| format!("the archive ends inside `{path}`"))?;
        if matches!(h[156], b'0' | 0) {
            let inside = path
                .strip_prefix(&format!("{ARCHIVE_ROOT}/"))
                .ok_or_else(|| format!("`{path}` is outside {ARCHIVE_ROOT}/"))?;
            files.insert(inside.to_owned(), data.to_vec());
        }
        at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
    Err("the archive has no end marker".to_owned())
}

impl FakeEngine {
    /// Refuses a volume a container mounts, as the Swarm engine does.
    fn ensure_unused(&self, volume: &str) -> Result<()> {
        let users = self.state().users_of(volume, TokioInstant::now());
        if users.is_empty() {
            Ok(())
        } else {
            Err(EngineError::VolumeInUse {
                volume: volume.to_owned(),
                containers: users,
            })
        }
    }
}

fn invalid(dir: &Path, problem: String) -> EngineError {
    EngineError::SnapshotInvalid {
        dir: dir.to_owned(),
        problems: vec![problem],
        reseed: "take a new snapshot".to_owned(),
    }
}

#[async_trait]
impl VolumeSnapshots for FakeEngine {
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<crate::VolumeState>> {
        let mut out: Vec<crate::VolumeState> = self
            .volume_names(stack)
            .into_iter()
            .filter_map(|name| self.volume(&name))
            .map(|v| crate::VolumeState {
                name: v.name,
                created_at: v.created_at,
                labels: v.labels,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn remove_volumes(&self, names: &[String]) -> Result<()> {
        for name in names {
            if self.volume(name).is_some() {
                self.ensure_unused(name)?;
            }
        }
        let mut state = self.state();
        for name in names {
            state.volumes.remove(name);
        }
        Ok(())
    }

    async fn snapshot_volumes(
        &self,
        volumes: &[String],
        dest: &Path,
        helper_image: &str,
        meta: &SnapshotMeta,
    ) -> Result<Manifest> {
        let names = distinct_volume_names(volumes)?;
        let taken_at = labels::now_rfc3339();
        let lock = disk::lock_for_snapshot(dest, &names)?;
        let mut described = Vec::new();
        for name in &names {
            let volume = self
                .volume(name)
                .ok_or_else(|| EngineError::VolumeNotFound {
                    volume: name.clone(),
                })?;
            self.ensure_unused(name)?;
            described.push(volume);
        }
        let staging = disk::Staging::create(dest)?;
        let mut records = Vec::new();
        for volume in described {
            let file = format!("{}.tar", volume.name);
            let path = staging.dir.join(&file);
            let archive = pack(&volume.files).map_err(|e| invalid(dest, e))?;
            std::fs::write(&path, &archive).map_err(disk::io_error(
                format!("writing the snapshot of volume `{}` to", volume.name),
                &path,
                staging.kept_hint(),
            ))?;
            records.push(VolumeRecord {
                name: volume.name,
                driver: volume.driver,
                options: volume.options,
                labels: volume.labels,
                file,
                archive_root: ARCHIVE_ROOT.to_owned(),
                bytes: archive.len() as u64,
                sha256: hex::encode(Sha256::digest(&archive)),
                taken_at: labels::now_rfc3339(),
            });
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            taken_at,
            meta: meta.clone(),
            engine: "fake".to_owned(),
            helper_image: helper_image.to_owned(),
            volumes: records,
        };
        disk::finish(staging, &manifest)?;
        drop(lock);
        Ok(manifest)
    }

    async fn restore_volumes(&self, snapshot: &Path, _helper_image: &str) -> Result<RestoreReport> {
        let started = Instant::now();
        let (lock, manifest) = disk::lock_for_restore(snapshot)?;
        for record in &manifest.volumes {
            if self.volume(&record.name).is_some() {
                self.ensure_unused(&record.name)?;
            }
        }
        // Read everything before touching any volume: a bad archive leaves them all as they are.
        let mut restored = Vec::new();
        for record in &manifest.volumes {
            let path = snapshot.join(&record.file);
            let archive = std::fs::read(&path).map_err(disk::io_error(
                format!("reading the snapshot of volume `{}` from", record.name),
                &path,
                "no volume was touched",
            ))?;
            let files = unpack(&archive).map_err(|e| invalid(snapshot, e))?;
            restored.push(FakeVolume {
                name: record.name.clone(),
                driver: record.driver.clone(),
                options: record.options.clone(),
                labels: record.labels.clone(),
                files,
                created_at: FakeVolume::creation_stamp(),
            });
        }
        let names: Vec<String> = manifest.volumes.iter().map(|v| v.name.clone()).collect();
        disk::mark_restoring(snapshot, &names)?;
        for volume in restored {
            // Removed and recreated: files written since the snapshot are gone.
            self.put_volume(volume);
        }
        disk::clear_restoring(snapshot)?;
        drop(lock);
        Ok(RestoreReport {
            volumes: names,
            bytes: manifest.bytes(),
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{pack, unpack};
    use std::collections::BTreeMap;

    #[test]
    fn an_archive_gives_back_the_files_packed() {
        let files = BTreeMap::from([
            ("a.txt".to_owned(), b"hello".to_vec()),
            ("deep/dir/b.bin".to_owned(), vec![0u8; 700]),
            ("empty".to_owned(), Vec::new()),
            (format!("{}/long-name", "x".repeat(120)), b"far".to_vec()),
        ]);
        let archive = pack(&files).expect("pack");
        assert_eq!(archive.len() % 512, 0);
        assert_eq!(unpack(&archive).expect("unpack"), files);
        assert!(unpack(&archive[..600]).is_err(), "a cut archive is refused");
    }
}
