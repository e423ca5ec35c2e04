//! Snapshot and restore an app's volumes, byte for byte: each volume streams out of the engine
//! through the archive API of a created-but-never-started helper container into a tar file
//! (hashed as it is written), and back into a freshly recreated volume.
//!
//! Works on any engine seatrial reaches (a remote `DOCKER_HOST` too): nothing runs in the helper.
//! When the engine is on this host, a plain local volume is read straight from its mountpoint
//! instead, and restored by unpacking straight into it (GNU tar both ways; faster, and the tars
//! are interchangeable; see `SwarmEngine::with_local_snapshots`). Consistency comes from nothing using the volume: both
//! directions refuse a volume that a container mounts.
//!
//! Two snapshots or restores of one snapshot directory exclude each other (a lock file next to
//! it); keeping two directories from working on the same volume at once is the caller's job
//! (a canonical is used by one run at a time).
//!
//! Why this file is long (~900 lines): the interface and its Swarm implementation (helper
//! containers, the archive API both ways, the local fast paths' dispatch) are one protocol that
//! was being reworked for the faster restore; splitting the Swarm side into its own file
//! (`snapshot/swarm.rs`) is the next step, tracked in issue 12's closing note.

pub(crate) mod disk;
mod local;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use disk::{read_manifest, unfinished_restore, verify_snapshot};

use crate::labels::{self, CREATED, KIND, KIND_SNAPSHOT_HELPER};
use crate::{EngineError, Result, SwarmEngine};

/// The manifest's file name inside a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Where a helper mounts the volume; the tar's entries are `<ARCHIVE_ROOT>/...`, its first entry
/// the volume's root directory (so its mode and owner are restored too).
pub(crate) const ARCHIVE_ROOT: &str = "seatrial-volume";
/// Chunks in flight between the engine connection and the file (each at most [`disk::CHUNK`]).
const CHANNEL_DEPTH: usize = 8;

/// What the caller records about the state it snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The recipe whose app this is (named in the hint to re-seed a snapshot that cannot be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// The recipe version deployed when the data was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The recipe commit deployed when the data was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `manifest.json` of a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// When the snapshot was started, RFC 3339 UTC.
    pub taken_at: String,
    #[serde(flatten)]
    pub meta: SnapshotMeta,
    /// The engine the volumes were read from.
    pub engine: String,
    /// The image of the helper containers that read the volumes.
    pub helper_image: String,
    pub volumes: Vec<VolumeRecord>,
}

impl Manifest {
    /// Size of the snapshot on disk (its tar files).
    pub fn bytes(&self) -> u64 {
        self.volumes.iter().map(|v| v.bytes).sum()
    }
}

/// One volume of a snapshot: how to recreate it, and its contents as a tar file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    /// Driver options, as `docker volume create --opt` takes them.
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The tar file, inside the snapshot directory.
    pub file: String,
    /// The top directory of the tar's entries, standing for the volume's root.
    pub archive_root: String,
    /// Size of the tar file.
    pub bytes: u64,
    /// sha256 of the tar file, hex.
    pub sha256: String,
    /// When this volume was read, RFC 3339 UTC.
    pub taken_at: String,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The volumes recreated, in manifest order.
    pub volumes: Vec<String>,
    /// Tar bytes streamed into them.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Snapshots and restores of volumes on an engine.
#[async_trait]
pub trait VolumeSnapshots: Send + Sync {
    /// Streams each volume into `<dest>/<volume>.tar` and writes `<dest>/manifest.json`,
    /// replacing a previous snapshot at `dest` atomically: the new one is written into a
    /// temporary directory next to it, synced and verified, then swapped in; the previous one is
    /// removed only after. On any error (disk full included) the previous one is kept as it was.
    ///
    /// Refuses (before writing anything) a volume that does not exist, that a container mounts,
    /// or that an unfinished restore from `dest` left incomplete. The helpers are created from
    /// `helper_image` (an image the app already has; it is never started, so any image will do)
    /// and removed again — also, at the next snapshot or restore of their volume, those that an
    /// interrupted call left behind.
    async fn snapshot_volumes(
        &self,
        volumes: &[String],
        dest: &Path,
        helper_image: &str,
        meta: &SnapshotMeta,
    ) -> Result<Manifest>;

    /// Puts every volume of the snapshot at `snapshot` back as it was: checks every tar file
    /// against the manifest and that no container mounts any of the volumes — before touching
    /// any — then removes each volume, recreates it with the same name, driver, options and
    /// labels, and unpacks its tar into it (so files deleted since the snapshot stay deleted).
    /// On an engine on this host, a plain local volume that exists as recorded is emptied
    /// instead of recreated, and its tar unpacked into its mountpoint.
    ///
    /// From the first volume replaced until the last is done, [`unfinished_restore`] names the
    /// volumes: a restore that dies midway is found by the next caller, who restores again.
    async fn restore_volumes(&self, snapshot: &Path, helper_image: &str) -> Result<RestoreReport>;

    /// The volumes of a stack (those labelled with its namespace) as they are now, sorted by
    /// name. `created_at` changes whenever a volume is recreated, so a caller that recorded it
    /// after a restore can tell a volume replaced or removed by hand since.
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<VolumeState>>;

    /// Removes volumes (a volume already gone counts as removed); refuses one a container
    /// mounts.
    async fn remove_volumes(&self, names: &[String]) -> Result<()>;
}

/// A volume as [`VolumeSnapshots::stack_volumes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    pub name: String,
    /// The engine's creation time of the volume (its `CreatedAt`), when it reports one.
    pub created_at: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The archive of an empty volume is its root entry and the end marker, a few KiB at most.
const EMPTY_ARCHIVE_LIMIT: usize = 64 * 1024;

/// Entries of a tar archive (its beginning, at least up to the end marker), not counting the
/// PAX and GNU long-name headers that describe the next entry; a truncated or unreadable header
/// counts as one more entry, so that doubt never passes for empty.
fn tar_entries(archive: &[u8]) -> usize {
    let mut entries = 0;
    let mut at = 0;
    while let Some(header) = archive.get(at..at + 512) {
        if header.iter().all(|&b| b == 0) {
            return entries;
        }
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u64::from_str_radix(s, 8).ok());
        let Some(size) = size else {
            return entries + 1;
        };
        if !matches!(header[156], b'x' | b'g' | b'L' | b'K') {
            entries += 1;
        }
        let Some(next) = usize::try_from(size.div_ceil(512) * 512)
            .ok()
            .and_then(|data| (at + 512).checked_add(data))
        else {
            return entries + 1;
        };
        at = next;
    }
    entries + 1
}

/// Docker's rule for volume names (also keeps them safe as file names).
pub(crate) fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The volumes named, each once, in order; a name Docker would refuse is not found.
pub(crate) fn distinct_volume_names(volumes: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for name in volumes {
        if !is_volume_name(name) {
            return Err(EngineError::VolumeNotFound {
                volume: name.clone(),
            });
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// A single path component that stays inside its directory.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Cancelled {
            context: format!("{what} ({e})"),
        })?
}

impl SwarmEngine {
    /// The volume as the engine describes it; `None` when it does not exist.
    async fn volume(&self, name: &str) -> Result<Option<bollard::models::Volume>> {
        match self.docker().inspect_volume(name).await {
            Ok(v) => Ok(Some(v)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(EngineError::api(format!("inspecting volume `{name}`"))(e)),
        }
    }

    /// Fails with [`EngineError::VolumeInUse`] when a container mounts the volume. Snapshot
    /// helpers an interrupted snapshot or restore left behind are removed instead.
    async fn ensure_unused(&self, volume: &str) -> Result<()> {
        let list = self
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "volume".to_owned(),
                    vec![volume.to_owned()],
                )])),
                ..Default::default()
            }))
            .await
            .map_err(EngineError::api(format!(
                "listing the containers that use volume `{volume}`"
            )))?;
        let mut users = Vec::new();
        for c in list {
            let id = c.id.clone().unwrap_or_default();
            let mounts_it = c
                .mounts
                .iter()
                .flatten()
                .any(|m| m.name.as_deref() == Some(volume));
            if !mounts_it {
                continue;
            }
            let helper = c
                .labels
                .as_ref()
                .and_then(|l| l.get(KIND))
                .is_some_and(|k| k == KIND_SNAPSHOT_HELPER);
            if helper {
                warn!(container = %id, volume, "removing a snapshot helper an interrupted snapshot or restore left");
                self.remove_helper(&id).await;
                continue;
            }
            let name = c
                .names
                .iter()
                .flatten()
                .next()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| id.chars().take(12).collect());
            let state = c.state.map_or("unknown".to_owned(), |s| s.to_string());
            users.push(format!("container `{name}` ({state})"));
        }
        if users.is_empty() {
            Ok(())
        } else {
            Err(EngineError::VolumeInUse {
                volume: volume.to_owned(),
                containers: users,
            })
        }
    }

    /// Creates (never starts) a container of `image` that mounts `volume` at `/<root>`.
    async fn create_helper(&self, volume: &str, image: &str, root: &str) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // Never started: the command only has to make the create valid for any image.
            entrypoint: Some(vec!["/seatrial-snapshot-helper-never-started".to_owned()]),
            cmd: Some(Vec::new()),
            network_disabled: Some(true),
            labels: Some(HashMap::from([
                (KIND.to_owned(), KIND_SNAPSHOT_HELPER.to_owned()),
                (labels::VOLUME.to_owned(), volume.to_owned()),
                (CREATED.to_owned(), labels::now_rfc3339()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(vec![Mount {
                    target: Some(format!("/{root}")),
                    source: Some(volume.to_owned()),
                    typ: Some(MountType::VOLUME),
                    // Never copy the image's files into an empty volume.
                    volume_options: Some(MountVolumeOptions {
                        no_copy: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ref message,
                } if message.contains("image") => EngineError::api(format!(
                    "creating a snapshot helper for volume `{volume}` from image `{image}` (the image must be on the engine: pass an image the app already uses)"
                ))(e),
                e => EngineError::api(format!(
                    "creating a snapshot helper for volume `{volume}` from image `{image}`"
                ))(e),
            })?;
        debug!(container = %created.id, volume, "created snapshot helper");
        Ok(created.id)
    }

    /// Removes a helper; a failure is logged (the next snapshot or restore of its volume, or
    /// the janitor, removes it).
    async fn remove_helper(&self, id: &str) {
        let removed = self
            .docker()
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    ..Default::default()
                }),
            )
            .await;
        match removed {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => warn!(container = id, error = %e, "could not remove a snapshot helper"),
        }
    }

    /// Streams one volume into `<dir>/<volume>.tar`.
    async fn export_volume(
        &self,
        volume: &bollard::models::Volume,
        staging: &disk::Staging,
        image: &str,
    ) -> Result<VolumeRecord> {
        let taken_at = labels::now_rfc3339();
        let file = format!("{}.tar", volume.name);
        let path = staging.dir.join(&file);
        let (bytes, sha256, archive_root) = match self.local_mountpoint(volume).await {
            Some((parent, root)) => {
                let (bytes, sha256) =
                    local::read(&parent, &root, &volume.name, &path, staging).await?;
                (bytes, sha256, root)
            }
            None => {
                let helper = self
                    .create_helper(&volume.name, image, ARCHIVE_ROOT)
                    .await?;
                let streamed = self.download(&helper, &volume.name, &path, staging).await;
                self.remove_helper(&helper).await;
                let (bytes, sha256) = streamed?;
                (bytes, sha256, ARCHIVE_ROOT.to_owned())
            }
        };
        info!(volume = %volume.name, bytes, local = archive_root != ARCHIVE_ROOT, "volume snapshotted");
        Ok(VolumeRecord {
            name: volume.name.clone(),
            driver: volume.driver.clone(),
            options: volume.options.clone().into_iter().collect(),
            labels: volume.labels.clone().into_iter().collect(),
            file,
            archive_root,
            bytes,
            sha256,
            taken_at,
        })
    }

    /// Where a snapshot can read the volume on this host: the parent of its mountpoint and the
    /// mountpoint's name (the tar's top directory). Only for a plain `local` volume (with driver
    /// options it is a mount that exists only while a container uses it), an engine on this
    /// host, and GNU tar at hand.
    async fn local_mountpoint(
        &self,
        volume: &bollard::models::Volume,
    ) -> Option<(std::path::PathBuf, String)> {
        if !self.local_snapshots() || volume.driver != "local" || !volume.options.is_empty() {
            return None;
        }
        let mountpoint = Path::new(&volume.mountpoint);
        let root = mountpoint.file_name()?.to_str()?.to_owned();
        let parent = mountpoint.parent()?.to_owned();
        if !is_plain_file_name(&root) || std::fs::read_dir(mountpoint).is_err() {
            return None;
        }
        local::gnu_tar().await.then_some((parent, root))
    }

    async fn download(
        &self,
        helper: &str,
        volume: &str,
        path: &Path,
        staging: &disk::Staging,
    ) -> Result<(u64, String)> {
        let stream = self.docker().download_from_container(
            helper,
            Some(DownloadFromContainerOptions {
                path: format!("/{ARCHIVE_ROOT}"),
            }),
        );
        let (written, failed) = save_stream(stream, volume, path, staging).await?;
        if let Some(e) = failed {
            return Err(EngineError::api(format!(
                "reading volume `{volume}` through the archive API"
            ))(e));
        }
        Ok(written)
    }

    /// Puts the volume back as recorded: removes it, recreates it with the recorded driver,
    /// options and labels, and unpacks its tar into it. On this host, a plain local volume that
    /// already is as recorded is kept and emptied instead, and the tar unpacked into its
    /// mountpoint (see [`local::restore`]).
    async fn import_volume(&self, dir: &Path, record: &VolumeRecord, image: &str) -> Result<()> {
        let name = &record.name;
        let started = Instant::now();
        if let Some(mountpoint) = self.local_restore_target(record).await? {
            local::restore(
                &mountpoint,
                &record.archive_root,
                &dir.join(&record.file),
                name,
            )
            .await?;
            info!(
                volume = %name,
                bytes = record.bytes,
                local = true,
                total_ms = started.elapsed().as_millis() as u64,
                "volume restored"
            );
            return Ok(());
        }
        self.recreate_volume(record).await?;
        let recreated = started.elapsed();
        let helper = self
            .create_helper(name, image, &record.archive_root)
            .await?;
        let uploaded = async {
            self.ensure_empty(&helper, record).await?;
            self.upload(&helper, name, &dir.join(&record.file)).await
        }
        .await;
        self.remove_helper(&helper).await;
        uploaded?;
        info!(
            volume = %name,
            bytes = record.bytes,
            recreate_ms = recreated.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "volume restored"
        );
        Ok(())
    }

    /// Removes the volume (if it exists) and creates it again as recorded: same name, driver,
    /// options and labels, empty.
    async fn recreate_volume(&self, record: &VolumeRecord) -> Result<bollard::models::Volume> {
        let name = &record.name;
        match self
            .docker()
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                // Something started using it since the check.
                self.ensure_unused(name).await?;
                return Err(EngineError::VolumeInUse {
                    volume: name.clone(),
                    containers: vec!["a container (gone again)".to_owned()],
                });
            }
            Err(e) => {
                return Err(EngineError::api(format!(
                    "removing volume `{name}` to restore it"
                ))(e));
            }
        }
        self.docker()
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                driver: Some(record.driver.clone()),
                // An empty map would be recorded as `{}` where the original had none.
                driver_opts: (!record.options.is_empty())
                    .then(|| record.options.clone().into_iter().collect()),
                labels: (!record.labels.is_empty())
                    .then(|| record.labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(EngineError::api(format!(
                "recreating volume `{name}` (driver `{}`) to restore it",
                record.driver
            )))
    }

    /// Where a restore can unpack the volume on this host: the mountpoint of a plain local
    /// volume (no driver options: its data is the mountpoint's directory, nowhere else) of an
    /// engine on this host, with GNU tar at hand. The volume is kept when it exists as recorded
    /// (same driver, no options, same labels) and recreated as recorded otherwise; `None`
    /// leaves the restore to the archive API.
    async fn local_restore_target(
        &self,
        record: &VolumeRecord,
    ) -> Result<Option<std::path::PathBuf>> {
        if !self.local_snapshots()
            || record.driver != "local"
            || !record.options.is_empty()
            || !local::gnu_tar().await
        {
            return Ok(None);
        }
        let as_recorded = |v: &bollard::models::Volume| {
            v.driver == record.driver
                && v.options.is_empty()
                && v.labels.len() == record.labels.len()
                && record
                    .labels
                    .iter()
                    .all(|(k, value)| v.labels.get(k) == Some(value))
        };
        let volume = match self.volume(&record.name).await? {
            Some(v) if as_recorded(&v) => v,
            _ => self.recreate_volume(record).await?,
        };
        let mountpoint = std::path::PathBuf::from(&volume.mountpoint);
        let plain = mountpoint
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_plain_file_name);
        if !plain || mountpoint.parent().is_none() || std::fs::read_dir(&mountpoint).is_err() {
            return Ok(None);
        }
        Ok(Some(mountpoint))
    }

    /// Checks that a recreated volume starts empty: a volume whose data lives elsewhere (a bind
    /// device, a network share) keeps its files across remove and create, and unpacking into it
    /// would merge old and new files.
    async fn ensure_empty(&self, helper: &str, record: &VolumeRecord) -> Result<()> {
        let mut stream = self.docker().download_from_container(
            helper,
            Some(DownloadFromContainerOptions {
                path: format!("/{}", record.archive_root),
            }),
        );
        let mut head = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(EngineError::api(format!(
                "checking that the recreated volume `{}` is empty",
                record.name
            )))?;
            head.extend_from_slice(&chunk);
            if head.len() > EMPTY_ARCHIVE_LIMIT {
                break;
            }
        }
        if head.len() <= EMPTY_ARCHIVE_LIMIT && tar_entries(&head) <= 1 {
            return Ok(());
        }
        let options = record
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Err(EngineError::VolumeNotEmpty {
            volume: record.name.clone(),
            driver: record.driver.clone(),
            options,
        })
    }

    async fn upload(&self, helper: &str, volume: &str, path: &Path) -> Result<()> {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let reader = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || disk::read_chunks(&path, &tx))
        };
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let uploaded = self
            .docker()
            .upload_to_container(
                helper,
                Some(UploadToContainerOptions {
                    path: "/".to_owned(),
                    no_overwrite_dir_non_dir: Some("true".to_owned()),
                    ..Default::default()
                }),
                bollard::body_try_stream(body),
            )
            .await;
        let read = reader.await.map_err(|e| EngineError::Cancelled {
            context: format!("reading {} ({e})", path.display()),
        })?;
        read.map_err(disk::io_error(
            format!("reading the snapshot of volume `{volume}` from"),
            path,
            "the volume is incomplete: fix the file system and restore again",
        ))?;
        uploaded.map_err(EngineError::api(format!(
            "writing volume `{volume}` through the archive API (the volume is incomplete: restore again)"
        )))
    }
}

#[async_trait]
impl VolumeSnapshots for SwarmEngine {
    async fn remove_volumes(&self, names: &[String]) -> Result<()> {
        for name in names {
            self.ensure_unused(name).await?;
            match self
                .docker()
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(EngineError::api(format!("removing volume `{name}`"))(e)),
            }
        }
        Ok(())
    }

    async fn stack_volumes(&self, stack: &str) -> Result<Vec<VolumeState>> {
        let mut out: Vec<VolumeState> = self
            .in_stack::<bollard::models::Volume>(stack)
            .await?
            .into_iter()
            .map(|v| VolumeState {
                name: v.name,
                created_at: v.created_at,
                labels: v.labels.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn snapshot_volumes(
        &self,
        volumes: &[String],
        dest: &Path,
        helper_image: &str,
        meta: &SnapshotMeta,
    ) -> Result<Manifest> {
        let started = Instant::now();
        let names = distinct_volume_names(volumes)?;
        let taken_at = labels::now_rfc3339();
        let lock = {
            let (dest, names) = (dest.to_owned(), names.clone());
            blocking("locking the snapshot directory", move || {
                disk::lock_for_snapshot(&dest, &names)
            })
            .await?
        };
        let mut described = Vec::new();
        for name in &names {
            let volume = self
                .volume(name)
                .await?
                .ok_or_else(|| EngineError::VolumeNotFound {
                    volume: (*name).to_owned(),
                })?;
            self.ensure_unused(name).await?;
            described.push(volume);
        }
        let staging = {
            let dest = dest.to_owned();
            blocking("creating the snapshot directory", move || {
                disk::Staging::create(&dest)
            })
            .await?
        };
        let mut records = Vec::new();
        for volume in &described {
            records.push(self.export_volume(volume, &staging, helper_image).await?);
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            taken_at,
            meta: meta.clone(),
            engine: self.host().to_owned(),
            helper_image: helper_image.to_owned(),
            volumes: records,
        };
        {
            let manifest = manifest.clone();
            blocking("finishing the snapshot", move || {
                disk::finish(staging, &manifest)?;
                drop(lock);
                Ok(())
            })
            .await?;
        }
        info!(dest = %dest.display(), volumes = manifest.volumes.len(), bytes = manifest.bytes(), elapsed_ms = started.elapsed().as_millis() as u64, "snapshot taken");
        Ok(manifest)
    }

    async fn restore_volumes(&self, snapshot: &Path, helper_image: &str) -> Result<RestoreReport> {
        let started = Instant::now();
        let (lock, manifest) = {
            let snapshot = snapshot.to_owned();
            blocking("checking the snapshot", move || {
                disk::lock_for_restore(&snapshot)
            })
            .await?
        };
        debug!(snapshot = %snapshot.display(), elapsed_ms = started.elapsed().as_millis() as u64, "snapshot verified");
        for record in &manifest.volumes {
            if self.volume(&record.name).await?.is_some() {
                self.ensure_unused(&record.name).await?;
            }
        }
        let names: Vec<String> = manifest.volumes.iter().map(|v| v.name.clone()).collect();
        {
            let (snapshot, names) = (snapshot.to_owned(), names.clone());
            blocking("marking the restore as started", move || {
                disk::mark_restoring(&snapshot, &names)
            })
            .await?;
        }
        for record in &manifest.volumes {
            self.import_volume(snapshot, record, helper_image).await?;
        }
        {
            let snapshot = snapshot.to_owned();
            blocking("marking the restore as finished", move || {
                disk::clear_restoring(&snapshot)
            })
            .await?;
        }
        drop(lock);
        let report = RestoreReport {
            volumes: names,
            bytes: manifest.bytes(),
            elapsed: started.elapsed(),
        };
        info!(snapshot = %snapshot.display(), volumes = report.volumes.len(), bytes = report.bytes, elapsed_ms = report.elapsed.as_millis() as u64, "snapshot restored");
        Ok(report)
    }
}

/// Writes a stream of tar bytes to `path` on a blocking thread, hashing it as it goes. Returns
/// what was written, and the stream's own error when it ended with one; a write error (disk
/// full, …) wins, since it says where.
async fn save_stream<E>(
    stream: impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>>,
    volume: &str,
    path: &Path,
    staging: &disk::Staging,
) -> Result<((u64, String), Option<E>)> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let writer = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || disk::write_hashed(&path, rx))
    };
    let mut stream = std::pin::pin!(stream);
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer stopped: its error says why
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| EngineError::Cancelled {
        context: format!("writing {} ({e})", path.display()),
    })?;
    let written = written.map_err(disk::io_error(
        format!("writing the snapshot of volume `{volume}` to"),
        path,
        staging.kept_hint(),
    ))?;
    Ok((written, failed))
}

#[cfg(test)]
mod tests {
    use super::{is_plain_file_name, is_volume_name, tar_entries};

    #[test]
    fn volume_names_follow_dockers_rule() {
        assert!(is_volume_name("app_data"));
        assert!(is_volume_name("a.b-c_1"));
        assert!(!is_volume_name(""));
        assert!(!is_volume_name(".hidden"));
        assert!(!is_volume_name("../etc"));
        assert!(!is_volume_name("a/b"));
    }

    #[test]
    fn counts_the_entries_of_a_tar_head() {
        fn header(name: &str, typeflag: u8, size: usize) -> Vec<u8> {
            let mut h = vec![0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[156] = typeflag;
            h.extend(std::iter::repeat_n(0u8, size.div_ceil(512) * 512));
            h
        }
        let end = vec![0u8; 1024];
        let root = header("seatrial-volume/", b'5', 0);
        let pax = header("PaxHeaders/seatrial-volume", b'x', 30);
        let file = header("seatrial-volume/a", b'0', 700);
        assert_eq!(tar_entries(&[root.clone(), end.clone()].concat()), 1);
        assert_eq!(
            tar_entries(&[pax.clone(), root.clone(), end.clone()].concat()),
            1
        );
        assert_eq!(
            tar_entries(&[root.clone(), pax, file.clone(), end].concat()),
            2
        );
        // Cut off before the end marker: never counted as empty.
        assert_eq!(tar_entries(&root), 2);
        assert_eq!(tar_entries(&file[..600]), 2);
    }

    #[test]
    fn file_names_stay_inside_the_snapshot() {
        assert!(is_plain_file_name("app_data.tar"));
        assert!(!is_plain_file_name(".."));
        assert!(!is_plain_file_name("../x.tar"));
        assert!(!is_plain_file_name(""));
    }
}
