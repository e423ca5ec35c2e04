//! The janitor: removes what trials left behind when they could not clean up (killed, crashed,
//! machine rebooted) — and nothing else.
//!
//! A stack is reaped only when every seatrial object in it is of kind `trial` (apps from
//! `seatrial app deploy` and infra apps are never touched), and its run is known dead (its
//! registered process is gone) or, when nothing is known about the run here, it is older than
//! `max_age`. Live runs are never touched. Recorded canonicals (`protected`) are never touched
//! either; a stack of kind `canonical` that is no recorded canonical — what a promotion killed
//! midway left — is reaped only when its run is known dead.
//!
//! Who decides whether a run is alive: for runs of `seatrial serve`, the store (a run is alive
//! while its lease holds, measured by the database's clock); for command-line trials, the
//! [`RunRegistry`] of this host (pid files). See [`RunLiveness`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use seatrial_engine::labels::parse_rfc3339;
use seatrial_engine::{Engine, EngineError, LabelledStack, NoProgress, UndeployOptions};
use serde::Serialize;

/// Where running trials register themselves: `<data dir>/runs/<run id>` holds the process id
/// and its start time (so a reused pid is not mistaken for the run).
#[derive(Debug, Clone)]
pub struct RunRegistry {
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    Dead,
    Unknown,
}

/// Removes the run's registration when dropped (the run ended and cleaned up after itself).
#[derive(Debug)]
pub struct RunGuard {
    path: Option<PathBuf>,
}

impl RunGuard {
    /// Leaves the registration in place: once this process is gone the run reads as dead, and
    /// the janitor removes what it left.
    pub fn leave(mut self) {
        self.path = None;
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The start time of a process in clock ticks since boot (`/proc/<pid>/stat`, field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after its closing ')'.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

impl RunRegistry {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("runs"),
        }
    }

    /// Registers this process as running `run_id`.
    pub fn register(&self, run_id: &str) -> std::io::Result<RunGuard> {
        std::fs::create_dir_all(&self.dir)?;
        let pid = std::process::id();
        let path = self.dir.join(run_id);
        let start = start_time(pid).unwrap_or(0);
        std::fs::write(&path, format!("{pid} {start}\n"))?;
        Ok(RunGuard { path: Some(path) })
    }

    pub fn liveness(&self, run_id: &str) -> Liveness {
        if run_id.is_empty() || run_id.contains(['/', '.']) {
            return Liveness::Unknown;
        }
        let Ok(text) = std::fs::read_to_string(self.dir.join(run_id)) else {
            return Liveness::Unknown;
        };
        let mut parts = text.split_whitespace();
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let start = parts.next().and_then(|s| s.parse::<u64>().ok());
        match (pid, start) {
            (Some(pid), Some(start)) if start_time(pid) == Some(start) => Liveness::Live,
            (Some(_), Some(_)) => Liveness::Dead,
            _ => Liveness::Unknown,
        }
    }

    /// Forgets a dead run (after its resources are gone).
    pub fn forget(&self, run_id: &str) {
        if !run_id.is_empty() && !run_id.contains(['/', '.']) {
            let _ = std::fs::remove_file(self.dir.join(run_id));
        }
    }
}

/// Answers "is the run that made this stack still alive?".
#[async_trait]
pub trait RunLiveness: Send + Sync + std::fmt::Debug {
    async fn liveness(&self, stack: &str, run_id: &str) -> Liveness;
    /// Called once a dead run's resources are gone.
    fn forget(&self, _run_id: &str) {}
}

#[async_trait]
impl RunLiveness for RunRegistry {
    async fn liveness(&self, _stack: &str, run_id: &str) -> Liveness {
        RunRegistry::liveness(self, run_id)
    }
    fn forget(&self, run_id: &str) {
        RunRegistry::forget(self, run_id);
    }
}

/// A shared liveness oracle, as a trial's configuration carries it.
pub type SharedLiveness = Arc<dyn RunLiveness>;

#[derive(Debug, Clone)]
pub struct JanitorOptions {
    pub max_age: Duration,
    pub dry_run: bool,
    /// Stacks never to touch: the recorded warm canonicals (see `warm::Warm::stacks`).
    pub protected: std::collections::HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Removed,
    WouldRemove,
    Kept,
    /// Removal was tried and failed (the reason says why); the next pass tries again.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub stack: String,
    pub runs: Vec<String>,
    pub kinds: Vec<String>,
    /// Seconds since the oldest `io.seatrial.created`, when known.
    pub age_secs: Option<u64>,
    pub objects: usize,
    pub action: Action,
    pub reason: String,
}

async fn decide(
    stack: &LabelledStack,
    runs: &dyn RunLiveness,
    options: &JanitorOptions,
    now: u64,
) -> (bool, String, Option<u64>) {
    let age = stack
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|c| now.saturating_sub(c));
    if options.protected.contains(&stack.stack) {
        return (
            false,
            "a warm canonical (`seatrial warm drop` removes it)".to_owned(),
            age,
        );
    }
    let canonical = stack.kinds.iter().any(|k| k == "canonical");
    if stack.kinds.iter().any(|k| k != "trial" && k != "canonical") || stack.kinds.is_empty() {
        return (
            false,
            format!("not a trial (kind: {})", stack.kinds.join(", ")),
            age,
        );
    }
    let mut states: Vec<(String, Liveness)> = Vec::new();
    for run in &stack.runs {
        states.push((run.clone(), runs.liveness(&stack.stack, run).await));
    }
    if let Some((run, _)) = states.iter().find(|(_, l)| *l == Liveness::Live) {
        return (false, format!("run {run} is still running"), age);
    }
    if let Some((run, _)) = states.iter().find(|(_, l)| *l == Liveness::Dead) {
        return (
            true,
            format!("run {run} is gone (its process ended without cleaning up)"),
            age,
        );
    }
    if canonical {
        return (
            false,
            "of kind canonical, not recorded here, and its run is not known dead (another data directory's canonical?)".to_owned(),
            age,
        );
    }
    match age {
        Some(a) if a >= options.max_age.as_secs() => (
            true,
            format!(
                "older than {} and its run is not running here",
                seatrial_engine::fmt_duration(options.max_age)
            ),
            age,
        ),
        Some(_) => (
            false,
            format!(
                "younger than {}",
                seatrial_engine::fmt_duration(options.max_age)
            ),
            age,
        ),
        None => (
            false,
            "its age is unknown (no io.seatrial.created label)".to_owned(),
            age,
        ),
    }
}

/// Looks at every seatrial-labelled stack and removes the stale trials. An error listing the
/// engine's stacks is returned; an error removing one stack is that stack's decision
/// ([`Action::Failed`]), and the pass goes on.
pub async fn run(
    engine: &dyn Engine,
    runs: &dyn RunLiveness,
    options: &JanitorOptions,
) -> Result<Vec<Decision>, EngineError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut decisions = Vec::new();
    for stack in engine.labelled_stacks().await? {
        let (remove, mut reason, age) = decide(&stack, runs, options, now).await;
        let action = match (remove, options.dry_run) {
            (false, _) => Action::Kept,
            (true, true) => Action::WouldRemove,
            (true, false) => {
                let undeploy = UndeployOptions {
                    remove_data: true,
                    ..UndeployOptions::default()
                };
                match engine.undeploy(&stack.stack, &undeploy, &NoProgress).await {
                    Ok(_) | Err(EngineError::StackNotFound { .. }) => {
                        for run in &stack.runs {
                            runs.forget(run);
                        }
                        Action::Removed
                    }
                    Err(e) => {
                        tracing::warn!(stack = %stack.stack, error = %e, "the janitor could not remove a stale trial stack");
                        reason = format!("{reason}; removing it failed: {e}");
                        Action::Failed
                    }
                }
            }
        };
        decisions.push(Decision {
            stack: stack.stack.clone(),
            runs: stack.runs.clone(),
            kinds: stack.kinds.clone(),
            age_secs: age,
            objects: stack.objects,
            action,
            reason,
        });
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use seatrial_engine::{
        ConvergeOptions, ConvergeReport, DeployOptions, DeployOutcome, Engine, EngineError,
        EngineInfo, LabelledStack, ProgressObserver, ServiceStatus, StackPlan, TaskAddress,
        UndeployOptions, UndeployReport,
    };

    use super::*;

    /// Two stale trial stacks; removing the first fails (say, the engine answers 500).
    #[derive(Default)]
    struct Stale {
        removed: Mutex<Vec<String>>,
    }

    fn unused<T>() -> Result<T, EngineError> {
        Err(EngineError::Cancelled {
            context: "not used by the janitor".into(),
        })
    }

    #[async_trait]
    impl seatrial_engine::VolumeSnapshots for Stale {
        async fn snapshot_volumes(
            &self,
            _: &[String],
            _: &std::path::Path,
            _: &str,
            _: &seatrial_engine::SnapshotMeta,
        ) -> Result<seatrial_engine::Manifest, EngineError> {
            unused()
        }
        async fn restore_volumes(
            &self,
            _: &std::path::Path,
            _: &str,
        ) -> Result<seatrial_engine::RestoreReport, EngineError> {
            unused()
        }
        async fn stack_volumes(
            &self,
            _: &str,
        ) -> Result<Vec<seatrial_engine::VolumeState>, EngineError> {
            unused()
        }
        async fn remove_volumes(&self, _: &[String]) -> Result<(), EngineError> {
            unused()
        }
    }

    #[async_trait]
    impl Engine for Stale {
        async fn info(&self) -> Result<EngineInfo, EngineError> {
            unused()
        }
        fn check_plan(&self, _: &StackPlan) -> Result<(), EngineError> {
            unused()
        }
        async fn deploy(
            &self,
            _: &StackPlan,
            _: &DeployOptions,
        ) -> Result<DeployOutcome, EngineError> {
            unused()
        }
        async fn converge(
            &self,
            _: &str,
            _: &ConvergeOptions,
            _: &dyn ProgressObserver,
        ) -> Result<ConvergeReport, EngineError> {
            unused()
        }
        async fn undeploy(
            &self,
            stack: &str,
            _: &UndeployOptions,
            _: &dyn ProgressObserver,
        ) -> Result<UndeployReport, EngineError> {
            if stack == "tbroken" {
                return Err(EngineError::Cancelled {
                    context: "removing volume tbroken_data (in use)".into(),
                });
            }
            self.removed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stack.to_owned());
            Ok(UndeployReport::default())
        }
        async fn ps(&self, _: &str) -> Result<Vec<ServiceStatus>, EngineError> {
            unused()
        }
        async fn task_addresses(&self, _: &str) -> Result<Vec<TaskAddress>, EngineError> {
            unused()
        }
        async fn image_ports(&self, _: &str) -> Result<Vec<u16>, EngineError> {
            unused()
        }
        async fn exec(&self, _: &str, _: &[String]) -> Result<(i64, String), EngineError> {
            unused()
        }
        async fn labelled_stacks(&self) -> Result<Vec<LabelledStack>, EngineError> {
            Ok(["tbroken", "tfine"]
                .map(|s| LabelledStack {
                    stack: s.to_owned(),
                    runs: vec![format!("run-{s}")],
                    kinds: vec!["trial".to_owned()],
                    created: Some("2000-01-01T00:00:00Z".to_owned()),
                    objects: 3,
                })
                .to_vec())
        }
        async fn service_labels(
            &self,
            _: &str,
        ) -> Result<std::collections::HashMap<String, String>, EngineError> {
            unused()
        }
        async fn run_probe_job(
            &self,
            _: &seatrial_engine::ProbeJob,
        ) -> Result<seatrial_engine::ProbeJobOutcome, EngineError> {
            unused()
        }
        async fn service_nodes(&self, _: &str) -> Result<Vec<String>, EngineError> {
            unused()
        }
    }

    #[derive(Debug)]
    struct AllDead;

    #[async_trait]
    impl RunLiveness for AllDead {
        async fn liveness(&self, _: &str, _: &str) -> Liveness {
            Liveness::Dead
        }
    }

    #[tokio::test]
    async fn a_stack_that_cannot_be_removed_is_reported_and_the_pass_goes_on() {
        let engine = Stale::default();
        let options = JanitorOptions {
            max_age: Duration::from_secs(3600),
            dry_run: false,
            protected: Default::default(),
        };
        let decisions = run(&engine, &AllDead, &options)
            .await
            .expect("one failed removal does not fail the pass");
        assert_eq!(decisions.len(), 2);
        assert_eq!(decisions[0].action, Action::Failed);
        assert!(
            decisions[0].reason.contains("tbroken_data (in use)"),
            "the reason says what failed: {}",
            decisions[0].reason
        );
        assert_eq!(decisions[1].action, Action::Removed);
        assert_eq!(
            *engine.removed.lock().expect("lock"),
            vec!["tfine".to_owned()]
        );
    }

    #[derive(Debug)]
    struct Alive;

    #[async_trait]
    impl RunLiveness for Alive {
        async fn liveness(&self, _: &str, _: &str) -> Liveness {
            Liveness::Live
        }
    }

    #[tokio::test]
    async fn a_live_run_is_kept_however_old_its_stack_is() {
        let engine = Stale::default();
        let options = JanitorOptions {
            max_age: Duration::from_secs(1),
            dry_run: false,
            protected: Default::default(),
        };
        let decisions = run(&engine, &Alive, &options).await.expect("pass");
        assert!(
            decisions.iter().all(|d| d.action == Action::Kept),
            "{decisions:?}"
        );
        assert!(engine.removed.lock().expect("lock").is_empty());
    }

    #[derive(Debug)]
    struct Unknown;

    #[async_trait]
    impl RunLiveness for Unknown {
        async fn liveness(&self, _: &str, _: &str) -> Liveness {
            Liveness::Unknown
        }
    }

    fn canonical_stack(name: &str) -> LabelledStack {
        LabelledStack {
            stack: name.to_owned(),
            runs: vec!["r1".into()],
            kinds: vec!["canonical".into()],
            created: Some("2020-01-01T00:00:00Z".into()),
            objects: 1,
        }
    }

    #[tokio::test]
    async fn canonicals_are_kept_and_only_a_dead_promotion_is_reaped() {
        let options = JanitorOptions {
            max_age: Duration::from_secs(1),
            dry_run: false,
            protected: ["wrec-000001".to_owned()].into(),
        };
        let now = 2_000_000_000;
        // A recorded canonical: never touched, whatever its run.
        let (remove, why, _) =
            decide(&canonical_stack("wrec-000001"), &AllDead, &options, now).await;
        assert!(!remove, "{why}");
        assert!(why.contains("warm canonical"), "{why}");
        // Not recorded here and its run unknown (another data directory's canonical): kept,
        // however old.
        let (remove, why, _) =
            decide(&canonical_stack("wrec-000002"), &Unknown, &options, now).await;
        assert!(!remove, "{why}");
        // Not recorded and its run known dead: a promotion killed midway; reaped.
        let (remove, why, _) =
            decide(&canonical_stack("wrec-000003"), &AllDead, &options, now).await;
        assert!(remove, "{why}");
    }
}
