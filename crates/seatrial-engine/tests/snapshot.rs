//! Snapshot and restore of volumes against the real Docker engine (`scripts/setup.sh` makes one
//! and builds the fixture images). These tests fail — never skip — when no engine answers.
//!
//! What a volume holds is read straight from its mountpoint on this host (the tests run next to
//! the engine, as root): an oracle independent of the archive API under test.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use seatrial_engine::{
    EngineError, ErrorKind, SnapshotMeta, SwarmEngine, VolumeSnapshots, unfinished_restore,
    verify_snapshot,
};
use sha2::{Digest, Sha256};

const IMAGE: &str = "seatrial-fixture/web:1";
/// On every volume and container these tests create (and remove).
const TEST_LABEL: &str = "io.seatrial.test";

async fn engine() -> SwarmEngine {
    match SwarmEngine::connect().await {
        Ok(e) => e,
        Err(e) => panic!("these tests need a Docker Swarm manager (run scripts/setup.sh): {e}"),
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Volumes and containers of one test, all labelled `io.seatrial.test=<tag>`, removed on drop
/// (also when the test panics), together with snapshot helpers that mount them.
struct Resources {
    tag: String,
    volumes: Vec<String>,
}

impl Resources {
    fn new(test: &str) -> Self {
        Self {
            tag: format!("snap{}-{test}", std::process::id()),
            volumes: Vec::new(),
        }
    }

    fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.tag)
    }

    /// Creates a volume `<tag>-<name>` with the test label plus `extra` arguments.
    fn volume(&mut self, name: &str, extra: &[&str]) -> String {
        let full = format!("{}-{name}", self.tag);
        let label = self.label();
        let mut args = vec!["volume", "create", "--label", &label];
        args.extend_from_slice(extra);
        args.push(&full);
        docker(&args);
        self.volumes.push(full.clone());
        full
    }

    /// Runs a busybox shell script with the volume mounted at /v.
    fn sh(&self, volume: &str, script: &str) {
        let mount = format!("{volume}:/v");
        let label = self.label();
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            &label,
            "-v",
            &mount,
            IMAGE,
            "sh",
            "-euc",
            script,
        ]);
    }

    /// Starts a long-running container that mounts the volume; returns its name.
    fn user(&self, volume: &str) -> String {
        let name = format!("{}-user", self.tag);
        let mount = format!("{volume}:/v");
        let label = self.label();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--label",
            &label,
            "-v",
            &mount,
            IMAGE,
        ]);
        name
    }

    fn remove_containers(&self) {
        let label = format!("label={}", self.label());
        let mut ids: Vec<String> = Vec::new();
        for filter in [label]
            .into_iter()
            .chain(self.volumes.iter().map(|v| format!("volume={v}")))
        {
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                ids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.remove_containers();
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

fn mountpoint(volume: &str) -> PathBuf {
    PathBuf::from(docker(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        volume,
    ]))
}

/// Every entry under a volume's root (the root included): path, type, mode, owner, size,
/// symlink target and sha256 of the contents.
fn listing(volume: &str) -> Vec<String> {
    let root = mountpoint(volume);
    let mut out = Vec::new();
    walk(&root, Path::new("."), &mut out);
    out.sort();
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
    let path = root.join(rel);
    let meta =
        std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ft = meta.file_type();
    let (kind, detail) = if ft.is_symlink() {
        let target =
            std::fs::read_link(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ("link", format!("-> {}", target.display()))
    } else if ft.is_dir() {
        ("dir", String::new())
    } else if ft.is_file() {
        let mut hasher = Sha256::new();
        // digest 0.11 hashers are not io::Write: hash the file's bytes.
        hasher.update(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        (
            "file",
            format!(
                "{} bytes sha256 {}",
                meta.len(),
                hex::encode(hasher.finalize())
            ),
        )
    } else {
        ("other", String::new())
    };
    out.push(format!(
        "{} {kind} {:o} {}:{} {detail}",
        rel.display(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    ));
    if ft.is_dir() {
        let entries =
            std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            walk(root, &rel.join(entry.file_name()), out);
        }
    }
}

/// Files of several sizes, a file owned by 1234:5678 with mode 0600, symlinks, a hard link,
/// an empty directory, a sticky directory, a name with spaces, and a root with its own owner.
const POPULATE: &str = r#"
cd /v
mkdir -p dir/sub emptydir sticky
: > empty.bin
echo x > one-line.txt
head -c 4096 /dev/urandom > dir/page.bin
head -c 3000000 /dev/urandom > dir/sub/big.bin
echo secret > owned
chown 1234:5678 owned
chmod 0600 owned
ln -s dir/page.bin link
ln -s /nowhere/at/all dangling
ln dir/page.bin hardlink.bin
echo spaces > "with spaces.txt"
chmod 1777 sticky
chown 1000:1001 /v
chmod 0750 /v
"#;

/// Changes a file, adds files, deletes a file and a directory, changes modes.
const MODIFY: &str = r#"
cd /v
echo changed > "with spaces.txt"
echo new > added.txt
echo inside > emptydir/now-not-empty
rm dir/sub/big.bin
rm -r sticky
chmod 0644 owned
chown 0:0 /v
"#;

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        recipe: Some("snapshot-test".to_owned()),
        version: Some("1.2.3+4.5".to_owned()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
    }
}

fn inspect(volume: &str) -> String {
    docker(&[
        "volume",
        "inspect",
        "-f",
        "{{.Driver}} {{json .Options}} {{json .Labels}}",
        volume,
    ])
}

/// Snapshot helpers still on the engine for these volumes.
fn helpers(volumes: &[String]) -> Vec<String> {
    volumes
        .iter()
        .flat_map(|v| {
            let out = docker(&[
                "ps",
                "-aq",
                "--filter",
                "label=io.seatrial.kind=snapshot-helper",
                "--filter",
                &format!("volume={v}"),
            ]);
            out.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn snapshot_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dest = tmp.path().join("known-good");
    (tmp, dest)
}

/// Names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The plain volume is read from its mountpoint (GNU tar, this host) when `local` is on, else
/// through the archive API; the one with driver options always goes through the archive API.
/// Restores take the same way: unpacked into the plain volume's mountpoint when `local` is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_restores_every_byte_owner_mode_and_deletion() {
    round_trip(engine().await, "roundtrip", "_data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_archive_api_only() {
    round_trip(
        engine().await.with_local_snapshots(false),
        "roundtrip-api",
        "seatrial-volume",
    )
    .await;
}

async fn round_trip(engine: SwarmEngine, test: &str, plain_root: &str) {
    let mut res = Resources::new(test);
    let data = res.volume(
        "data",
        &["--label", "com.example.role=db", "--label", "keep=me"],
    );
    // A second volume with driver options (a tmpfs: its contents live only while mounted).
    let opts = res.volume(
        "opts",
        &[
            "--driver",
            "local",
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
            "--opt",
            "o=size=16m",
        ],
    );
    res.sh(&data, POPULATE);
    let before = listing(&data);
    let described = (inspect(&data), inspect(&opts));
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("./owned file 600 1234:5678 ")),
        "{before:#?}"
    );
    assert!(
        before.iter().any(|l| l.starts_with(". dir 750 1000:1001")),
        "{before:#?}"
    );

    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![data.clone(), opts.clone()];
    let manifest = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot");
    assert_eq!(manifest.meta, meta());
    assert_eq!(
        manifest
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        [data.as_str(), opts.as_str()]
    );
    let rec = &manifest.volumes[0];
    assert_eq!(rec.archive_root, plain_root, "read the expected way");
    assert_eq!(manifest.volumes[1].archive_root, "seatrial-volume");
    assert!(
        rec.bytes > 3_000_000,
        "the tar holds the 3 MB file: {rec:?}"
    );
    assert_eq!(rec.labels.get("keep").map(String::as_str), Some("me"));
    assert_eq!(
        manifest.volumes[1].options.get("type").map(String::as_str),
        Some("tmpfs")
    );
    assert_eq!(
        verify_snapshot(&dest).expect("the snapshot verifies"),
        manifest
    );
    assert_eq!(
        names_in(&dest),
        [
            "manifest.json".to_owned(),
            format!("{data}.tar"),
            format!("{opts}.tar")
        ]
    );
    assert!(helpers(&volumes).is_empty(), "snapshot helpers are removed");

    res.sh(&data, MODIFY);
    let modified = listing(&data);
    assert_ne!(modified, before, "the modification changed the volume");

    let report = engine.restore_volumes(&dest, IMAGE).await.expect("restore");
    assert_eq!(report.volumes, volumes);
    assert_eq!(report.bytes, manifest.bytes());
    let after = listing(&data);
    assert_eq!(
        after, before,
        "the restored volume is the snapshotted one, entry for entry"
    );
    assert_eq!(
        (inspect(&data), inspect(&opts)),
        described,
        "driver, options and labels kept"
    );
    assert!(helpers(&volumes).is_empty(), "restore helpers are removed");

    // A second snapshot replaces the first in place; nothing is left beside it.
    res.sh(&data, "echo again > /v/again.txt");
    let second = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &SnapshotMeta::default())
        .await
        .expect("second snapshot");
    assert_ne!(second.volumes[0].sha256, manifest.volumes[0].sha256);
    assert_eq!(verify_snapshot(&dest).expect("verifies"), second);
    let parent = dest.parent().expect("parent");
    assert_eq!(names_in(parent), [".known-good.lock", "known-good"]);
}

/// Entries a local restore set aside next to the volume's mountpoint, still being deleted.
fn set_aside_left(volume: &str) -> Vec<String> {
    let parent = mountpoint(volume)
        .parent()
        .expect("the mountpoint's parent")
        .to_owned();
    names_in(&parent)
        .into_iter()
        .filter(|n| n.starts_with("seatrial-restore-old-"))
        .collect()
}

/// Waits until a local restore's background deletion of the volume's old contents is done;
/// returns how long that took.
fn wait_set_aside_deleted(volume: &str) -> Duration {
    let started = Instant::now();
    while !set_aside_left(volume).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the old contents of {volume} are deleted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// A snapshot read one way restores the other way, byte for byte: through the archive API into
/// the local mountpoint (the tar's top directory renamed on the fly), and from the mountpoint
/// back through the archive API; also into a volume that was removed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_across_the_local_and_archive_ways() {
    let local = engine().await;
    let api = engine().await.with_local_snapshots(false);
    let mut res = Resources::new("cross");
    let data = res.volume("data", &["--label", "keep=me"]);
    res.sh(&data, POPULATE);
    let before = listing(&data);
    let described = inspect(&data);
    let volumes = vec![data.clone()];

    let (_tmp, dest) = snapshot_dir();
    let manifest = api
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot through the archive API");
    assert_eq!(manifest.volumes[0].archive_root, "seatrial-volume");
    res.sh(&data, MODIFY);
    local
        .restore_volumes(&dest, IMAGE)
        .await
        .expect("local restore");
    assert_eq!(listing(&data), before, "archive API tar → mountpoint");
    assert_eq!(inspect(&data), described, "driver, options and labels kept");
    wait_set_aside_deleted(&data);
    assert!(
        helpers(&volumes).is_empty(),
        "no helper for a local restore"
    );

    docker(&["volume", "rm", &data]);
    local
        .restore_volumes(&dest, IMAGE)
        .await
        .expect("local restore of a removed volume");
    assert_eq!(listing(&data), before, "a removed volume is recreated");
    assert_eq!(inspect(&data), described, "recreated with its labels");

    let (_tmp2, dest2) = snapshot_dir();
    let manifest = local
        .snapshot_volumes(&volumes, &dest2, IMAGE, &meta())
        .await
        .expect("local snapshot");
    assert_eq!(manifest.volumes[0].archive_root, "_data");
    res.sh(&data, MODIFY);
    api.restore_volumes(&dest2, IMAGE)
        .await
        .expect("restore through the archive API");
    assert_eq!(listing(&data), before, "local tar → archive API");
    assert_eq!(inspect(&data), described);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_snapshot_is_refused_before_any_volume_is_touched() {
    let engine = engine().await;
    let mut res = Resources::new("corrupt");
    let first = res.volume("a", &[]);
    let second = res.volume("b", &[]);
    res.sh(&first, POPULATE);
    res.sh(&second, "echo b > /v/b.txt");
    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![first.clone(), second.clone()];
    engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot");
    res.sh(&first, MODIFY);
    res.sh(&second, "rm /v/b.txt");
    let modified = (listing(&first), listing(&second));

    // One byte changed, in the second volume's tar: the first must not be restored either.
    let tar = dest.join(format!("{second}.tar"));
    let mut bytes = std::fs::read(&tar).expect("read tar");
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x01;
    std::fs::write(&tar, &bytes).expect("write tar");

    let err = engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect_err("a corrupted snapshot is refused");
    assert_eq!(err.kind(), ErrorKind::Infrastructure, "{err}");
    assert!(
        matches!(err, EngineError::SnapshotInvalid { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for needle in [
        tar.display().to_string(),
        "sha256".to_owned(),
        "the manifest expects".to_owned(),
        "no volume was touched".to_owned(),
        "seatrial warm seed snapshot-test".to_owned(),
    ] {
        assert!(
            message.contains(&needle),
            "`{needle}` missing from: {message}"
        );
    }
    assert_eq!(
        (listing(&first), listing(&second)),
        modified,
        "no volume was touched"
    );

    // A truncated file is named with both sizes.
    std::fs::write(&tar, &bytes[..bytes.len() - 1]).expect("truncate");
    let message = engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect_err("a truncated snapshot is refused")
        .to_string();
    assert!(
        message.contains(&format!(
            "has {} bytes, the manifest expects {}",
            bytes.len() - 1,
            bytes.len()
        )),
        "{message}"
    );
    // A missing manifest too.
    std::fs::remove_file(dest.join("manifest.json")).expect("remove manifest");
    let err = engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect_err("no manifest");
    assert!(err.to_string().contains("manifest.json"), "{err}");
    assert_eq!(
        (listing(&first), listing(&second)),
        modified,
        "no volume was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_leaves_the_previous_one_restorable() {
    let engine = engine().await;
    let mut res = Resources::new("crash");
    let data = res.volume("data", &[]);
    res.sh(&data, POPULATE);
    let known_good = listing(&data);
    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![data.clone()];
    let previous = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("first snapshot");

    // A bigger state, and a snapshot of it cut off while its tar is being written (the future
    // is dropped, as a cancelled run drops it).
    res.sh(&data, "head -c 200000000 /dev/zero > /v/large.bin");
    let parent = dest.parent().expect("parent").to_owned();
    let cut_off_meta = meta();
    let snapshot = engine.snapshot_volumes(&volumes, &dest, IMAGE, &cut_off_meta);
    let watch = async {
        loop {
            let writing = std::fs::read_dir(&parent)
                .expect("list")
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".known-good.tmp-")
                })
                .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten())
                .filter_map(|e| e.ok())
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 1_000_000));
            if writing {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        result = snapshot => panic!("the snapshot finished before it could be interrupted: {result:?}"),
        () = watch => {}
    }
    // And what a process killed mid-snapshot leaves: a temporary directory with a partial tar.
    let leftover = parent.join(".known-good.tmp-999999-1");
    std::fs::create_dir(&leftover).expect("leftover dir");
    std::fs::write(leftover.join(format!("{data}.tar")), b"partial").expect("partial tar");

    assert_eq!(
        verify_snapshot(&dest).expect("the previous snapshot is intact"),
        previous
    );
    engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect("restore the previous snapshot");
    assert_eq!(
        listing(&data),
        known_good,
        "the previous snapshot's data is back"
    );
    assert_eq!(
        names_in(&parent),
        [".known-good.lock", "known-good"],
        "what the interrupted snapshots left is removed"
    );
    assert!(
        helpers(&volumes).is_empty(),
        "the interrupted snapshot's helper is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_is_found_and_redone() {
    let engine = engine().await;
    let mut res = Resources::new("halfrestore");
    let data = res.volume("data", &[]);
    res.sh(&data, POPULATE);
    res.sh(&data, "head -c 200000000 /dev/zero > /v/large.bin");
    let known_good = listing(&data);
    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![data.clone()];
    engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot");
    res.sh(&data, MODIFY);
    res.sh(&data, "rm /v/large.bin");
    assert_eq!(unfinished_restore(&dest).expect("marker readable"), None);

    // Cut the restore off while the large file (gone from the volume) is being unpacked again.
    let partial = mountpoint(&data).join("large.bin");
    let restore = engine.restore_volumes(&dest, IMAGE);
    let watch = async {
        while !std::fs::metadata(&partial).is_ok_and(|m| m.len() > 1_000_000) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::select! {
        result = restore => panic!("the restore finished before it could be interrupted: {result:?}"),
        () = watch => {}
    }
    assert_eq!(
        unfinished_restore(&dest).expect("marker readable"),
        Some(volumes.clone()),
        "the interrupted restore is recorded"
    );
    // The cancelled restore's unpacking runs on a blocking thread that holds the snapshot's lock
    // until it stops: "busy" until then (seen under load), never a snapshot taken.
    let until = Instant::now() + Duration::from_secs(60);
    let err = loop {
        let err = engine
            .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
            .await
            .expect_err("an incomplete volume is not snapshotted over the known-good");
        if matches!(err, EngineError::SnapshotBusy { .. }) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break err;
    };
    assert!(
        matches!(err, EngineError::RestoreUnfinished { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&data), "{err}");

    engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect("restore again");
    assert_eq!(listing(&data), known_good);
    assert_eq!(unfinished_restore(&dest).expect("marker readable"), None);
    assert!(
        helpers(&volumes).is_empty(),
        "the interrupted restore's helper is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_whose_data_outlives_it_is_not_merged_into() {
    let engine = engine().await;
    let mut res = Resources::new("bind");
    let device = tempfile::tempdir().expect("device dir");
    let device_opt = format!("device={}", device.path().display());
    let data = res.volume(
        "data",
        &[
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            &device_opt,
        ],
    );
    res.sh(&data, "echo v1 > /v/state; echo keep > /v/kept");
    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![data.clone()];
    let manifest = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot");
    assert_eq!(
        manifest.volumes[0].options.get("o").map(String::as_str),
        Some("bind")
    );
    res.sh(&data, "echo v2 > /v/state; echo new > /v/added");
    let modified = listing(&data);

    let err = engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect_err("removing the volume left its files: restoring would merge");
    assert!(
        matches!(&err, EngineError::VolumeNotEmpty { volume, .. } if *volume == data),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("merge") && message.contains(&device_opt),
        "{message}"
    );
    assert_eq!(listing(&data), modified, "nothing was unpacked into it");
    assert_eq!(
        unfinished_restore(&dest).expect("marker"),
        Some(volumes.clone())
    );
    assert!(helpers(&volumes).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_in_use_is_refused_naming_the_container() {
    let engine = engine().await;
    let mut res = Resources::new("inuse");
    let data = res.volume("data", &[]);
    res.sh(&data, "echo v1 > /v/state");
    let (_tmp, dest) = snapshot_dir();
    let volumes = vec![data.clone()];
    engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("snapshot while unused");
    let user = res.user(&data);
    let modified = listing(&data);

    let err = engine
        .snapshot_volumes(&volumes, &dest.with_file_name("second"), IMAGE, &meta())
        .await
        .expect_err("a volume in use is not snapshotted");
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&user) && message.contains("running") && message.contains(&data),
        "{message}"
    );
    assert!(!dest.with_file_name("second").exists(), "nothing written");

    let err = engine
        .restore_volumes(&dest, IMAGE)
        .await
        .expect_err("a volume in use is not restored");
    assert!(
        matches!(&err, EngineError::VolumeInUse { volume, .. } if *volume == data),
        "{err:?}"
    );
    assert!(err.to_string().contains(&user), "{err}");
    assert_eq!(listing(&data), modified, "the volume is untouched");
    assert!(helpers(&volumes).is_empty());

    let err = engine
        .snapshot_volumes(&[format!("{data}-missing")], &dest, IMAGE, &meta())
        .await
        .expect_err("a missing volume is refused");
    assert!(matches!(err, EngineError::VolumeNotFound { .. }), "{err:?}");
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_string_lossy().into_owned();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path])
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_the_previous_snapshot_and_says_where() {
    let engine = engine().await;
    let mut res = Resources::new("diskfull");
    let data = res.volume("data", &[]);
    res.sh(&data, "echo small > /v/small.txt");
    let known_good = listing(&data);
    let disk = SmallDisk::mount("2m");
    let dest = disk.dir.path().join("known-good");
    let volumes = vec![data.clone()];
    let previous = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect("a small snapshot fits");

    res.sh(&data, "head -c 3000000 /dev/urandom > /v/big.bin");
    let err = engine
        .snapshot_volumes(&volumes, &dest, IMAGE, &meta())
        .await
        .expect_err("3 MB do not fit in 2 MiB");
    assert_eq!(err.kind(), ErrorKind::Infrastructure, "{err}");
    let message = err.to_string();
    let tmp_prefix = disk.dir.path().join(".known-good.tmp-");
    for needle in [
        tmp_prefix.display().to_string(),
        "is full".to_owned(),
        format!("the previous snapshot at {} is kept", dest.display()),
    ] {
        assert!(
            message.contains(&needle),
            "`{needle}` missing from: {message}"
        );
    }
    assert_eq!(
        names_in(disk.dir.path()),
        [".known-good.lock", "known-good"],
        "the partial snapshot is removed"
    );
    assert_eq!(
        verify_snapshot(&dest).expect("the previous snapshot is intact"),
        previous
    );
    assert!(helpers(&volumes).is_empty());
    engine.restore_volumes(&dest, IMAGE).await.expect("restore");
    assert_eq!(listing(&data), known_good);
}

/// Bytes of the files under a directory (what a copy moves).
fn data_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += data_bytes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Writes dirty pages out (untimed), so that every timed step starts from the same disk state.
fn settle() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `bench/snapshot.sh` runs this: snapshot + restore of a 1 GiB volume against
/// `tar -C <mountpoint> -cf - . | tar -xf -` into a scratch directory on the same host,
/// alternating per round; prints a Markdown table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/snapshot.sh"]
async fn bench_snapshot_restore_1gib() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let engine = engine().await;
    let client = common::api_client().await;
    let mut res = Resources::new("bench");
    let data = res.volume("data", &[]);
    // 768 MiB in six large files, 256 MiB in 4096 files of 64 KiB.
    res.sh(
        &data,
        "for i in 1 2 3 4 5 6; do head -c 134217728 /dev/urandom > /v/large-$i.bin; done
         mkdir /v/small; i=0; while [ $i -lt 4096 ]; do head -c 65536 /dev/urandom > /v/small/f$i; i=$((i+1)); done",
    );
    let mp = mountpoint(&data);
    let bytes = data_bytes(&mp);
    assert!(bytes >= 1 << 30, "the volume holds 1 GiB: {bytes}");
    let before = listing(&data);
    let scratch_root = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let snap_root = tempfile::tempdir_in("/var/tmp").expect("snapshot dir");
    let dest = snap_root.path().join("known-good");
    let volumes = vec![data.clone()];
    let rss_start = peak_rss_kib();

    let api_engine = engine.clone().with_local_snapshots(false);
    let api_dest = snap_root.path().join("through-the-api");
    let mut cleanup = Vec::new();
    let (mut tar, mut snap, mut restore, mut verify, mut floor, mut api_snap, mut api_restore) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for round in 1..=rounds {
        // The engine's own floor for reading a volume: its archive API streamed into nothing,
        // through a never-started helper like seatrial's (which must be gone before a snapshot).
        let floor_helper = docker(&[
            "create",
            "--label",
            &res.label(),
            "--network",
            "none",
            "--entrypoint",
            "/none",
            "--mount",
            &format!("type=volume,src={data},dst=/seatrial-volume,volume-nocopy"),
            IMAGE,
        ]);
        settle();
        let t = Instant::now();
        let mut stream = client.download_from_container(
            &floor_helper,
            Some(bollard::query_parameters::DownloadFromContainerOptions {
                path: "/seatrial-volume".to_owned(),
            }),
        );
        let mut streamed = 0u64;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            streamed += chunk.expect("archive chunk").len() as u64;
        }
        floor.push(t.elapsed());
        assert!(streamed > bytes, "the archive holds the volume: {streamed}");
        docker(&["rm", "-f", &floor_helper]);

        let scratch = scratch_root.path().join(format!("r{round}"));
        std::fs::create_dir(&scratch).expect("scratch");
        settle();
        let t = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C '{}' -cf - . | tar -C '{}' -xf -",
                mp.display(),
                scratch.display()
            ))
            .status()
            .expect("run tar");
        tar.push(t.elapsed());
        assert!(status.success(), "tar | tar failed");
        std::fs::remove_dir_all(&scratch).expect("remove scratch");

        settle();
        let t = Instant::now();
        engine
            .snapshot_volumes(&volumes, &dest, IMAGE, &SnapshotMeta::default())
            .await
            .expect("snapshot");
        snap.push(t.elapsed());
        settle();
        let t = Instant::now();
        let api = api_engine
            .snapshot_volumes(&volumes, &api_dest, IMAGE, &SnapshotMeta::default())
            .await
            .expect("snapshot through the archive API");
        api_snap.push(t.elapsed());
        assert_eq!(api.volumes[0].archive_root, "seatrial-volume");
        std::fs::remove_dir_all(&api_dest).expect("remove the archive API's snapshot");
        // The check a restore makes before touching anything, timed on its own.
        let t = Instant::now();
        verify_snapshot(&dest).expect("verify");
        verify.push(t.elapsed());
        settle();
        let t = Instant::now();
        engine.restore_volumes(&dest, IMAGE).await.expect("restore");
        restore.push(t.elapsed());
        // The old contents are deleted in the background once the restore is done: timed on
        // its own, and finished before anything else is timed.
        cleanup.push(wait_set_aside_deleted(&data));
        // The same restore as on a remote engine: volume removed and recreated, tar `PUT`.
        settle();
        let t = Instant::now();
        api_engine
            .restore_volumes(&dest, IMAGE)
            .await
            .expect("restore through the archive API");
        api_restore.push(t.elapsed());
        eprintln!(
            "round {round}: tar|tar {:?}, snapshot {:?} (archive API only: {:?}), restore {:?} (archive API only: {:?}), archive read floor {:?}",
            tar[round - 1],
            snap[round - 1],
            api_snap[round - 1],
            restore[round - 1],
            api_restore[round - 1],
            floor[round - 1]
        );
    }
    assert_eq!(listing(&data), before, "the benchmark's restores are exact");
    let rss_peak = peak_rss_kib();

    let cleanup = median(cleanup);
    let (tar, snap, restore, verify, floor, api_snap, api_restore) = (
        median(tar),
        median(snap),
        median(restore),
        median(verify),
        median(floor),
        median(api_snap),
        median(api_restore),
    );
    let mib = bytes as f64 / f64::from(1 << 20);
    let rate = |d: Duration| mib / d.as_secs_f64();
    let both = snap + restore;
    let api_both = api_snap + api_restore;
    println!(
        "| 1 GiB volume ({mib:.0} MiB of files; median of {rounds} rounds) | time | MiB/s | vs tar \\| tar |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| `tar -C <mountpoint> -cf - . \\| tar -xf -` | {:.2}s | {:.0} | 1.00× |",
        tar.as_secs_f64(),
        rate(tar)
    );
    println!(
        "| snapshot, local read (GNU tar from the mountpoint → hashed tar + manifest, fsynced) | {:.2}s | {:.0} | {:.2}× |",
        snap.as_secs_f64(),
        rate(snap),
        rate(snap) / rate(tar)
    );
    println!(
        "| snapshot through the archive API (any engine) | {:.2}s | {:.0} | {:.2}× |",
        api_snap.as_secs_f64(),
        rate(api_snap),
        rate(api_snap) / rate(tar)
    );
    println!(
        "| restore, local (verify, empty the volume while GNU tar unpacks into its mountpoint) | {:.2}s | {:.0} | {:.2}× |",
        restore.as_secs_f64(),
        rate(restore),
        rate(restore) / rate(tar)
    );
    println!(
        "| restore through the archive API (verify, recreate volume, `PUT` the tar; any engine) | {:.2}s | {:.0} | {:.2}× |",
        api_restore.as_secs_f64(),
        rate(api_restore),
        rate(api_restore) / rate(tar)
    );
    println!(
        "| **snapshot + restore**, local read | **{:.2}s** | **{:.0}** | **{:.2}×** |",
        both.as_secs_f64(),
        rate(both),
        rate(both) / rate(tar)
    );
    println!(
        "| **snapshot + restore**, archive API only | **{:.2}s** | **{:.0}** | **{:.2}×** |",
        api_both.as_secs_f64(),
        rate(api_both),
        rate(api_both) / rate(tar)
    );
    println!(
        "| engine floor: archive API read of the volume, discarded | {:.2}s | {:.0} | {:.2}× |",
        floor.as_secs_f64(),
        rate(floor),
        rate(floor) / rate(tar)
    );
    println!();
    println!(
        "Of the restore, checking the tar file against the manifest (size, sha256) takes {:.2}s; after the local restore, deleting the volume's old contents in the background took {:.2}s more.",
        verify.as_secs_f64(),
        cleanup.as_secs_f64()
    );
    println!(
        "Peak RSS of the benchmark process: {} MiB at start, {} MiB after all rounds.",
        rss_start / 1024,
        rss_peak / 1024
    );
    assert!(
        rss_peak < rss_start + 256 * 1024,
        "memory stays bounded while streaming 1 GiB: {rss_start} KiB → {rss_peak} KiB"
    );
}
