//! What reconcile remembers of each infra app, in `<data dir>/infra/<name>/state.json`
//! (written whole and atomically: a kill leaves the old file or the new one): the last-good
//! release, releases that failed, the last action, the alert last sent, and — while an upgrade
//! runs — how far it got, so that the next reconcile after a crash knows what to put back.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A release as deployed: its version tag and the commit it was deployed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub commit: String,
}

/// How far an upgrade got (recorded before each step starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Nothing changed yet.
    Started,
    /// The last-good release is being undeployed; its data is untouched.
    Undeploying,
    /// Its volumes are being snapshotted; the data is untouched.
    Snapshotting,
    /// The snapshot is complete: from here on the target may change the data.
    Snapshotted,
    Deploying,
    Verifying,
    /// Putting the last-good release back (from the snapshot, for a stateful app).
    RollingBack,
    /// The rollback failed: left for a human, snapshot kept.
    Failed,
}

impl Step {
    /// Whether the target may have run (and changed the data) by this step.
    pub fn target_may_have_run(self) -> bool {
        matches!(
            self,
            Step::Snapshotted
                | Step::Deploying
                | Step::Verifying
                | Step::RollingBack
                | Step::Failed
        )
    }
}

/// An upgrade under way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub from: Release,
    pub to: Release,
    /// The app had volumes: it is undeployed and snapshotted before the target is deployed.
    pub stateful: bool,
    pub step: Step,
    /// The image the snapshot helpers are made from.
    #[serde(default)]
    pub helper_image: String,
    /// Set once the snapshot is complete.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    pub started_at: String,
    /// Why the rollback failed (step `failed`).
    #[serde(default)]
    pub failure: Option<String>,
}

impl Pending {
    /// An upgrade from `from` to `to`, not started yet.
    pub fn new(from: Release, to: Release, stateful: bool, helper_image: String) -> Self {
        Self {
            from,
            to,
            stateful,
            step: Step::Started,
            helper_image,
            snapshot: None,
            started_at: seatrial_engine::labels::now_rfc3339(),
            failure: None,
        }
    }
}

/// The last thing reconcile did to an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastAction {
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub notes: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppState {
    #[serde(default)]
    pub last_good: Option<Release>,
    /// Versions that failed their gate and were rolled back: not tried again until a newer
    /// release exists or `--retry` is given.
    #[serde(default)]
    pub failed: Vec<String>,
    #[serde(default)]
    pub last: Option<LastAction>,
    /// What the last alert was about: the same situation alerts once, not every night.
    #[serde(default)]
    pub alerted: Option<String>,
    #[serde(default)]
    pub pending: Option<Pending>,
}

/// Where every infra app's state lives: `<data dir>/infra/`.
#[derive(Debug, Clone)]
pub struct InfraDir {
    root: PathBuf,
}

impl InfraDir {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("infra"),
        }
    }

    /// The gate's swarm deploys keep the same records under `<data dir>/gate/<stack>/`.
    pub fn for_gate(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("gate"),
        }
    }

    pub fn app_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn state_path(&self, name: &str) -> PathBuf {
        self.app_dir(name).join("state.json")
    }

    pub(crate) fn lock_path(&self, name: &str) -> PathBuf {
        self.app_dir(name).join("lock")
    }

    /// seatrial's own mirror of the app's recipe repository.
    pub fn mirror_path(&self, name: &str) -> PathBuf {
        self.app_dir(name).join("recipe.git")
    }

    /// The snapshot of the app's data taken before its latest upgrade.
    pub fn snapshot_path(&self, name: &str) -> PathBuf {
        self.app_dir(name).join("snapshot")
    }

    /// The alerts sent, one JSON object per line, newest last.
    pub fn alerts_path(&self) -> PathBuf {
        self.root.join("alerts.jsonl")
    }

    /// The app's state (empty when it was never reconciled). A file that cannot be read is an
    /// error naming it: reconcile must not forget a last-good release or an upgrade under way.
    pub fn load(&self, name: &str) -> Result<AppState, String> {
        let path = self.state_path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is damaged ({e}); fix or remove it (it records the app's last-good release and any upgrade under way)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the app's state atomically and durably.
    pub fn save(&self, name: &str, state: &AppState) -> Result<(), String> {
        let path = self.state_path(name);
        write_atomically(&path, &serde_json::to_vec_pretty(state).unwrap_or_default())
    }

    /// Every app that has a state, by name.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    /// Appends one alert record (a JSON value) to the alerts log.
    pub fn append_alert(&self, record: &serde_json::Value) -> Result<(), String> {
        let path = self.alerts_path();
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The newest `limit` alerts, newest first (lines that do not parse are skipped).
    pub fn recent_alerts(&self, limit: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.alerts_path()).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(limit)
            .collect()
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_named() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = InfraDir::new(tmp.path());
        assert!(dir.load("proxy").expect("empty").last_good.is_none());
        let state = AppState {
            last_good: Some(Release {
                version: "1.0.0+1".into(),
                commit: "abc".into(),
            }),
            failed: vec!["1.0.2+1".into()],
            ..AppState::default()
        };
        dir.save("proxy", &state).expect("save");
        let back = dir.load("proxy").expect("load");
        assert_eq!(back.last_good, state.last_good);
        assert_eq!(back.failed, state.failed);
        assert_eq!(dir.names(), vec!["proxy".to_owned()]);
        std::fs::write(dir.state_path("proxy"), "{").expect("damage");
        let e = dir.load("proxy").expect_err("damaged");
        assert!(e.contains("state.json is damaged"), "{e}");
    }

    #[test]
    fn alerts_are_kept_newest_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = InfraDir::new(tmp.path());
        for i in 0..3 {
            dir.append_alert(&serde_json::json!({ "n": i }))
                .expect("append");
        }
        let recent = dir.recent_alerts(2);
        assert_eq!(
            recent,
            vec![serde_json::json!({"n": 2}), serde_json::json!({"n": 1})]
        );
    }
}
