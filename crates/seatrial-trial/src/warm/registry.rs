//! The canonicals on disk: `$SEATRIAL_DATA_DIR/warm/<recipe>/` holds `canonical.json` (the
//! record), `<stack>/snapshot/` (the known-good snapshot: a manifest and one tar per volume),
//! `in-use` (present while a quick run may have changed the canonical's volumes) and `lock`
//! (held by whoever uses or replaces the canonical).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use seatrial_engine::labels;
use serde::{Deserialize, Serialize};

/// The record of one recipe's canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canonical {
    /// The recipe's key (see [`recipe_key`]).
    pub recipe: String,
    /// The recipe repository as it was given when the canonical was promoted.
    pub source: String,
    /// The canonical's stack name (label `io.seatrial.kind=canonical`).
    pub stack: String,
    /// The known-good release and its commit.
    pub version: String,
    pub commit: String,
    /// Its volumes on the engine, in snapshot order.
    pub volumes: Vec<String>,
    /// An image of the app, for the never-started helper containers of snapshot and restore.
    pub helper_image: String,
    /// When it was promoted (RFC 3339 UTC).
    pub created_at: String,
    /// When a quick run last used it.
    #[serde(default)]
    pub last_used: Option<String>,
    /// Each volume's `CreatedAt` when it last held exactly the known-good snapshot: a volume
    /// recreated or removed since (by hand) differs, and is restored before use.
    #[serde(default)]
    pub volume_stamps: BTreeMap<String, Option<String>>,
}

/// What `seatrial warm list --json` prints per canonical.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub recipe: String,
    pub stack: String,
    pub version: String,
    pub commit: String,
    pub volumes: Vec<String>,
    pub snapshot: SnapshotSummary,
    pub last_used: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    /// `None` when the snapshot's manifest cannot be read (the canonical is unusable).
    pub taken_at: Option<String>,
    pub bytes: u64,
}

/// The recipe's key: the last component of the path or URL it was given, without `.git`
/// (`/srv/recipes/nextcloud.git` → `nextcloud`), reduced to characters safe in a file name.
pub fn recipe_key(recipe: &str) -> String {
    let trimmed = recipe.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let key: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match key.trim_start_matches('.') {
        "" => "recipe".to_owned(),
        k => k.to_owned(),
    }
}

/// Where the canonicals of this host live.
#[derive(Debug, Clone)]
pub struct Warm {
    root: PathBuf,
}

const RECORD: &str = "canonical.json";
const IN_USE: &str = "in-use";
const LOCK: &str = "lock";

impl Warm {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("warm"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn recipe_dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The directory of a canonical's known-good snapshot.
    pub fn snapshot_dir(&self, key: &str, stack: &str) -> PathBuf {
        self.recipe_dir(key).join(stack).join("snapshot")
    }

    pub(crate) fn lock_path(&self, key: &str) -> PathBuf {
        self.recipe_dir(key).join(LOCK)
    }

    /// The recipe's canonical, if it has one. A record that cannot be read is an error that
    /// names the file.
    pub fn load(&self, key: &str) -> Result<Option<Canonical>, String> {
        let path = self.recipe_dir(key).join(RECORD);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            format!(
                "{} is not a canonical record ({e}); remove the recipe's canonical with `seatrial warm drop {key}` and seed it again",
                path.display()
            )
        })
    }

    /// Writes the record atomically (a temporary file, synced, renamed over the old one).
    pub fn save(&self, canonical: &Canonical) -> Result<(), String> {
        let dir = self.recipe_dir(&canonical.recipe);
        let json = serde_json::to_vec_pretty(canonical).map_err(|e| e.to_string())?;
        write_atomically(&dir, RECORD, &json).map_err(|e| {
            format!(
                "cannot write the canonical record in {}: {e}",
                dir.display()
            )
        })
    }

    /// Forgets the recipe's canonical record (its volumes and snapshot are the caller's).
    pub fn remove_record(&self, key: &str) -> Result<(), String> {
        let path = self.recipe_dir(key).join(RECORD);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// Every recipe with a canonical record, sorted; unreadable records as errors.
    pub fn list(&self) -> Vec<Result<Canonical, String>> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(RECORD).is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        keys.sort();
        keys.iter()
            .filter_map(|k| self.load(k).transpose())
            .collect()
    }

    /// The stacks of every recorded canonical: the janitor never touches them.
    pub fn stacks(&self) -> HashSet<String> {
        self.list()
            .into_iter()
            .filter_map(Result::ok)
            .map(|c| c.stack)
            .collect()
    }

    /// The list entry of a canonical (its snapshot's time and size from the manifest).
    pub fn summary(&self, c: &Canonical) -> Summary {
        let manifest = seatrial_engine::read_manifest(&self.snapshot_dir(&c.recipe, &c.stack)).ok();
        Summary {
            recipe: c.recipe.clone(),
            stack: c.stack.clone(),
            version: c.version.clone(),
            commit: c.commit.clone(),
            volumes: c.volumes.clone(),
            snapshot: SnapshotSummary {
                taken_at: manifest.as_ref().map(|m| m.taken_at.clone()),
                bytes: manifest.as_ref().map_or(0, |m| m.bytes()),
            },
            last_used: c.last_used.clone(),
        }
    }

    /// Marks the canonical's volumes as possibly changed by run `run_id`, before anything of
    /// the run is deployed; cleared once they are restored.
    pub fn mark_in_use(&self, key: &str, run_id: &str) -> Result<(), String> {
        let dir = self.recipe_dir(key);
        let text = format!("{run_id} {}\n", labels::now_rfc3339());
        write_atomically(&dir, IN_USE, text.as_bytes())
            .map_err(|e| format!("cannot mark the canonical in use in {}: {e}", dir.display()))
    }

    pub fn clear_in_use(&self, key: &str) -> Result<(), String> {
        let path = self.recipe_dir(key).join(IN_USE);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.recipe_dir(key))
                .map_err(|e| format!("cannot sync {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// The run that marked the canonical in use and did not put it back, if any.
    pub fn in_use(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.recipe_dir(key).join(IN_USE)).ok()?;
        Some(
            text.split_whitespace()
                .next()
                .unwrap_or("an unknown run")
                .to_owned(),
        )
    }

    /// Directories under the recipe's warm directory that belong to no canonical: what a
    /// promotion interrupted before its record was written, or an old canonical's snapshot
    /// that was not removed yet.
    pub fn stray_dirs(&self, key: &str, keep: Option<&str>) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.recipe_dir(key)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| keep.is_none_or(|k| e.file_name().to_str() != Some(k)))
            .map(|e| e.path())
            .collect()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_last_component() {
        assert_eq!(recipe_key("/srv/recipes/nextcloud.git"), "nextcloud");
        assert_eq!(recipe_key("https://git.example.org/coop/hello/"), "hello");
        assert_eq!(recipe_key("git@host:coop/my app"), "my_app");
        assert_eq!(recipe_key("/"), "recipe");
    }

    fn canonical(key: &str) -> Canonical {
        Canonical {
            recipe: key.to_owned(),
            source: format!("/srv/{key}"),
            stack: format!("w{key}-000001"),
            version: "1.0.0+1".into(),
            commit: "abc".into(),
            volumes: vec![format!("w{key}-000001_data")],
            helper_image: "img:1".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            last_used: None,
            volume_stamps: BTreeMap::new(),
        }
    }

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().expect("test");
        let warm = Warm::new(dir.path());
        assert_eq!(warm.load("b").expect("test"), None);
        warm.save(&canonical("b")).expect("test");
        warm.save(&canonical("a")).expect("test");
        let listed: Vec<String> = warm
            .list()
            .into_iter()
            .map(|c| c.expect("test").recipe)
            .collect();
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(warm.load("a").expect("test"), Some(canonical("a")));
        assert!(warm.stacks().contains("wa-000001"));
        warm.remove_record("a").expect("test");
        assert_eq!(warm.load("a").expect("test"), None);
    }

    #[test]
    fn a_broken_record_is_an_error_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().expect("test");
        let warm = Warm::new(dir.path());
        std::fs::create_dir_all(warm.recipe_dir("x")).expect("test");
        std::fs::write(warm.recipe_dir("x").join(RECORD), "{").expect("test");
        let e = warm.load("x").expect_err("test");
        assert!(
            e.contains("canonical.json") && e.contains("seatrial warm drop x"),
            "{e}"
        );
    }

    #[test]
    fn in_use_marks_name_the_run() {
        let dir = tempfile::tempdir().expect("test");
        let warm = Warm::new(dir.path());
        assert_eq!(warm.in_use("a"), None);
        warm.mark_in_use("a", "run1").expect("test");
        assert_eq!(warm.in_use("a").as_deref(), Some("run1"));
        warm.clear_in_use("a").expect("test");
        assert_eq!(warm.in_use("a"), None);
    }
}
