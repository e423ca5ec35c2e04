//! Infra apps kept current behind two gates (`seatrial reconcile`).
//!
//! For each `[[infra]]` app: read the deployed release, the recorded last-good one and the
//! recipe's releases; then
//! - **pre-deploy gate** ([`releases::decide`]): the newest release the policy allows, unless
//!   a release crossed on the way asks for a human in its notes — then nothing changes (`held`);
//! - **upgrade**: a stateful app (any volume) is undeployed, waited gone and snapshotted before
//!   the target is deployed; a stateless one is updated in place;
//! - **post-deploy gate**: converged and serving within the health timeout, or **rollback**:
//!   the target removed, the snapshot restored, last-good deployed and verified again.
//!
//! Every step is recorded before it starts ([`state::Pending`]), so a reconcile killed at any
//! point is finished by the next one: back to last-good (from the snapshot once the target may
//! have touched the data), then the upgrade is tried again.

pub mod config;
mod releases;
pub mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use seatrial_engine::labels::{self, RunLabels};
use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, Engine, EngineError, NoProgress, PullPolicy,
    SnapshotMeta, StackPlan, UndeployOptions, fmt_duration,
};
use seatrial_recipe::git::{self, Version};
use seatrial_recipe::{AppSettings, Recipe, SecretSlot, SecretValue};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::{InfraApp, Policy};
pub use state::{AppState, InfraDir, LastAction, Pending, Release, Step};

use crate::checkout::Revision;
use crate::report::TrialMode;
use crate::settings::Settings;
use crate::stage::StageError;
use crate::{Ctx, TrialConfig, TrialObserver};

/// The `io.seatrial.kind` of what reconcile deploys (the janitor never touches it).
pub const KIND_INFRA: &str = "infra";

/// What reconcile did to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Installed,
    Upgraded,
    Skipped,
    Held,
    RolledBack,
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Installed => "installed",
            Action::Upgraded => "upgraded",
            Action::Skipped => "skipped",
            Action::Held => "held",
            Action::RolledBack => "rolled-back",
            Action::Failed => "failed",
        }
    }

    /// Rolled back or failed: reconcile exits 1.
    pub fn is_failure(self) -> bool {
        matches!(self, Action::RolledBack | Action::Failed)
    }
}

/// How loud an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Critical,
}

/// One app's result, as `reconcile --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AppOutcome {
    pub name: String,
    pub action: Action,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Steps taken, for people (`undeployed in 1.2s; snapshot 3 MB in 0.4s; …`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
    /// Alert the operator (already deduplicated: the same situation alerts once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Level>,
    pub duration_ms: u64,
}

/// What the caller decides for a reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    pub data_dir: PathBuf,
    /// Say what would be done; deploy nothing, record nothing.
    pub dry_run: bool,
    /// Try a release that failed before again (and an app a failed rollback left for a human).
    pub retry: bool,
}

/// What reconcile needs from whoever runs it.
pub trait InfraHost: Send + Sync {
    /// The value of every secret slot of the app (stored ones reused, missing ones made).
    fn secrets(
        &self,
        stack: &str,
        slots: &[SecretSlot],
    ) -> Result<HashMap<String, SecretValue>, String>;

    /// One line of progress about an app (`undeploying 1.0.0+1 …`).
    fn progress(&self, app: &str, line: &str);
}

/// The end of one app's reconcile, before it is recorded.
struct Done {
    action: Action,
    from: Option<String>,
    to: Option<String>,
    reason: String,
    notes: Option<String>,
    /// The situation an alert is about, and how loud it is.
    alert: Option<(String, Level)>,
}

impl Done {
    fn failed(from: Option<&str>, to: Option<&str>, reason: String) -> Self {
        Self {
            action: Action::Failed,
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            alert: Some((format!("failed:{reason}"), Level::Critical)),
            reason,
            notes: None,
        }
    }
}

/// Reconciles one infra app. Never panics on engine or git errors: they end as `failed`.
pub async fn reconcile_app(
    engine: &dyn Engine,
    app: &InfraApp,
    options: &ReconcileOptions,
    host: &dyn InfraHost,
    cancel: &CancellationToken,
) -> AppOutcome {
    let started = Instant::now();
    let dir = InfraDir::new(&options.data_dir);
    let r = Reconciler {
        engine,
        app,
        options,
        host,
        cancel,
        dir: dir.clone(),
        run_id: crate::new_run_id(),
        detail: std::sync::Mutex::new(Vec::new()),
    };
    let lock = crate::warm::lock::acquire(&dir.lock_path(&app.name), cancel, || {
        host.progress(
            &app.name,
            "waiting for another reconcile of this app to finish",
        );
    })
    .await;
    let done = match lock {
        Err(e) => Done::failed(None, None, e),
        Ok(None) => Done::failed(None, None, "interrupted while waiting for the lock".into()),
        Ok(Some(_lock)) => match dir.load(&app.name) {
            Err(e) => Done::failed(None, None, e),
            Ok(mut state) => {
                let done = r.run(&mut state).await;
                if options.dry_run {
                    done
                } else {
                    r.record(&mut state, done)
                }
            }
        },
    };
    AppOutcome {
        name: app.name.clone(),
        action: done.action,
        from: done.from,
        to: done.to,
        reason: done.reason,
        notes: done.notes,
        detail: r.detail.into_inner().unwrap_or_default(),
        alert: done.alert.map(|(_, level)| level),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

struct Reconciler<'a> {
    engine: &'a dyn Engine,
    app: &'a InfraApp,
    options: &'a ReconcileOptions,
    host: &'a dyn InfraHost,
    cancel: &'a CancellationToken,
    dir: InfraDir,
    run_id: String,
    detail: std::sync::Mutex<Vec<String>>,
}

/// A step that failed, and whether the failure is the target's (rolled back) or the
/// machinery's.
type StepResult<T> = Result<T, String>;

fn engine_err(e: EngineError) -> String {
    e.to_string()
}

fn stage_err(e: StageError) -> String {
    match e {
        StageError::Fail(m) | StageError::FailAfterTests(m, _) | StageError::Error(m, _) => m,
    }
}

impl Reconciler<'_> {
    fn say(&self, line: &str) {
        self.host.progress(&self.app.name, line);
    }

    fn note(&self, line: String) {
        if let Ok(mut d) = self.detail.lock() {
            d.push(line);
        }
    }

    fn save(&self, state: &AppState) -> StepResult<()> {
        self.dir.save(&self.app.name, state)
    }

    /// Records the outcome in the state: the last action, and whether to alert (once per
    /// situation).
    fn record(&self, state: &mut AppState, mut done: Done) -> Done {
        state.last = Some(LastAction {
            action: done.action.as_str().to_owned(),
            from: done.from.clone(),
            to: done.to.clone(),
            reason: done.reason.clone(),
            notes: done.notes.clone(),
            at: labels::now_rfc3339(),
        });
        match &done.alert {
            Some((key, _)) if state.alerted.as_deref() == Some(key.as_str()) => {
                // Alerted about this already.
                done.alert = None;
            }
            Some((key, _)) => state.alerted = Some(key.clone()),
            None => state.alerted = None,
        }
        if let Err(e) = self.save(state) {
            done.reason
                .push_str(&format!("; the state could not be saved: {e}"));
            done.action = Action::Failed;
        }
        done
    }

    async fn run(&self, state: &mut AppState) -> Done {
        let catalog = {
            let app = self.app.clone();
            let dir = self.dir.clone();
            let stop = self.git_stop();
            match tokio::task::spawn_blocking(move || releases::sync(&app, &dir, &stop)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Done::failed(None, None, e),
                Err(e) => return Done::failed(None, None, format!("the git task failed: {e}")),
            }
        };
        if let Some(pending) = state.pending.clone()
            && let Some(done) = self.interrupted(state, &pending, &catalog).await
        {
            return done;
        }
        let current = match self.deployed().await {
            Ok(c) => c,
            Err(e) => return Done::failed(None, None, e),
        };
        let notes = |v: &Version| releases::notes(&catalog.repo, v);
        let decision = releases::decide(
            self.app,
            current.as_ref(),
            state.last_good.as_ref(),
            &catalog.versions,
            &state.failed,
            self.options.retry,
            &notes,
        );
        let from = current.as_ref().map(|c| c.version.clone());
        let decision = match decision {
            Ok(d) => d,
            Err(e) => return Done::failed(from.as_deref(), None, e),
        };
        let would = |s: &str| format!("dry run: would {s}");
        match (decision, current) {
            (
                releases::Decision::Skip { reason } | releases::Decision::Hold { reason, .. },
                None,
            ) => Done::failed(None, None, reason),
            (releases::Decision::Skip { reason }, Some(current)) => match self.healthy().await {
                Ok(()) => {
                    if !self.options.dry_run {
                        adopt(state, &current);
                    }
                    Done {
                        action: Action::Skipped,
                        from: from.clone(),
                        to: from,
                        reason,
                        notes: None,
                        alert: None,
                    }
                }
                Err(why) => Done {
                    alert: Some((format!("unhealthy:{}", current.version), Level::Critical)),
                    ..Done::failed(
                        from.as_deref(),
                        from.as_deref(),
                        format!("{reason}, but not healthy: {why}"),
                    )
                },
            },
            (
                releases::Decision::Hold {
                    to,
                    reason,
                    notes,
                    key,
                },
                Some(current),
            ) => {
                if !self.options.dry_run && self.healthy().await.is_ok() {
                    adopt(state, &current);
                }
                Done {
                    action: Action::Held,
                    from,
                    to: Some(to.tag),
                    reason,
                    notes,
                    alert: Some((key, Level::Warning)),
                }
            }
            (releases::Decision::Install { base, to, reason }, _) => {
                if self.options.dry_run {
                    return Done {
                        action: Action::Installed,
                        from: None,
                        to: Some(to.tag.clone()),
                        reason: would(&reason),
                        notes: None,
                        alert: None,
                    };
                }
                self.say(&reason);
                self.apply(state, base, false, &to, Action::Installed, reason, &catalog)
                    .await
            }
            (releases::Decision::Upgrade { to, reason }, current) => {
                if self.options.dry_run {
                    return Done {
                        action: Action::Upgraded,
                        from,
                        to: Some(to.tag.clone()),
                        reason: would(&format!("upgrade: {reason}")),
                        notes: None,
                        alert: None,
                    };
                }
                self.say(&format!("upgrading: {reason}"));
                self.apply(
                    state,
                    current,
                    true,
                    &to,
                    Action::Upgraded,
                    reason,
                    &catalog,
                )
                .await
            }
        }
    }

    fn git_stop(&self) -> git::Stop {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = flag.clone();
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            watch.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        git::Stop {
            timeout: git::GIT_TIMEOUT,
            cancel: Some(flag),
        }
    }

    /// An upgrade a crash (or a failed rollback) left: puts last-good back. `Some`: the app's
    /// reconcile ends here.
    async fn interrupted(
        &self,
        state: &mut AppState,
        pending: &Pending,
        catalog: &releases::Catalog,
    ) -> Option<Done> {
        let (from, to) = (pending.from.version.as_str(), pending.to.version.as_str());
        if pending.step == Step::Failed && !self.options.retry {
            return Some(Done {
                alert: Some((format!("failed:{to}"), Level::Critical)),
                ..Done::failed(
                    Some(from),
                    Some(to),
                    format!(
                        "left for a human since the rollback from {to} to {from} failed: {}; {}after fixing the app, run `seatrial reconcile --retry {}`",
                        pending.failure.as_deref().unwrap_or("unknown error"),
                        pending
                            .snapshot
                            .as_ref()
                            .map(|s| format!("the data before the upgrade is at {}; ", s.display()))
                            .unwrap_or_default(),
                        self.app.name
                    ),
                )
            });
        }
        if self.options.dry_run {
            return Some(Done {
                action: Action::Skipped,
                from: Some(from.to_owned()),
                to: Some(to.to_owned()),
                reason: format!(
                    "dry run: an upgrade from {from} to {to} was interrupted (step {:?}); reconcile would put {from} back first",
                    pending.step
                ),
                notes: None,
                alert: None,
            });
        }
        self.say(&format!(
            "an upgrade from {from} to {to} was interrupted at step {:?}: putting {from} back first",
            pending.step
        ));
        let result = if pending.step.target_may_have_run() {
            self.roll_back(state, pending, catalog).await
        } else {
            self.ensure_running(&pending.from, catalog).await
        };
        match result {
            Ok(()) => {
                state.pending = None;
                if let Err(e) = self.save(state) {
                    return Some(Done::failed(Some(from), Some(to), e));
                }
                self.note(format!(
                    "put {from} back after an interrupted upgrade to {to}"
                ));
                None
            }
            Err(e) => Some(self.rollback_failed(state, pending.clone(), e)),
        }
    }

    /// The release deployed now: `io.seatrial.version` of the stack's services (or the
    /// `coop-cloud.<stack>.version` label abra writes); `None` when nothing is deployed.
    async fn deployed(&self) -> StepResult<Option<Release>> {
        let services = self.engine.ps(&self.app.name).await.map_err(engine_err)?;
        if services.is_empty() {
            return Ok(None);
        }
        let abra = format!("coop-cloud.{}.version", self.app.name);
        for s in &services {
            let l = self
                .engine
                .service_labels(&s.name)
                .await
                .map_err(engine_err)?;
            if let Some(v) = l.get(labels::VERSION).or_else(|| l.get(&abra)) {
                return Ok(Some(Release {
                    version: v.clone(),
                    commit: l.get(labels::COMMIT).cloned().unwrap_or_default(),
                }));
            }
        }
        Err(format!(
            "stack `{}` is deployed, but none of its services says which release it runs ({} or {abra}); deploy a release with `seatrial app deploy` or abra first",
            self.app.name,
            labels::VERSION
        ))
    }

    /// Every service converged (healthy, where it has a healthcheck).
    async fn healthy(&self) -> StepResult<()> {
        let services = self.engine.ps(&self.app.name).await.map_err(engine_err)?;
        let down: Vec<String> = services
            .iter()
            .filter(|s| !s.converged)
            .map(|s| {
                format!(
                    "{} {}/{}{}",
                    s.name,
                    s.running,
                    s.desired,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(down.join(", "))
        }
    }

    /// Deploys `to` (from `from`: the release deployed, or the last-good one whose data the
    /// volumes may hold) behind the post-deploy gate, rolling back on failure.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        state: &mut AppState,
        from: Option<Release>,
        deployed: bool,
        to: &Version,
        success: Action,
        reason: String,
        catalog: &releases::Catalog,
    ) -> Done {
        let target = Release {
            version: to.tag.clone(),
            commit: to.commit.clone(),
        };
        let from_version = from.as_ref().map(|f| f.version.clone());
        let fail = |why: String| Done::failed(from_version.as_deref(), Some(&to.tag), why);
        let volumes: Vec<String> = match self.engine.stack_volumes(&self.app.name).await {
            Ok(v) => v.into_iter().map(|v| v.name).collect(),
            Err(e) => return fail(engine_err(e)),
        };
        let Some(from) = from else {
            // A first install: nothing to protect, nothing to roll back to.
            return match self.deploy_then_verify(&target, catalog).await {
                Ok(()) => {
                    state.last_good = Some(target.clone());
                    state.failed.retain(|f| f != &target.version);
                    Done {
                        action: success,
                        from: None,
                        to: Some(target.version),
                        reason,
                        notes: None,
                        alert: None,
                    }
                }
                Err(e) => {
                    self.say(&format!("{} failed: {e}; removing it", target.version));
                    let options = UndeployOptions {
                        remove_data: volumes.is_empty(),
                        settle: true,
                        ..UndeployOptions::default()
                    };
                    let _ = self
                        .engine
                        .undeploy(&self.app.name, &options, &NoProgress)
                        .await;
                    if !state.failed.contains(&target.version) {
                        state.failed.push(target.version.clone());
                    }
                    fail(format!(
                        "installing {} failed and it was removed: {e}",
                        target.version
                    ))
                }
            };
        };
        let stateful = !volumes.is_empty();
        let helper_image = if stateful {
            match self.helper_image(deployed, &from, catalog).await {
                Ok(i) => i,
                Err(e) => return fail(e),
            }
        } else {
            String::new()
        };
        let mut pending = Pending {
            from: from.clone(),
            to: target.clone(),
            stateful,
            step: Step::Started,
            helper_image,
            snapshot: None,
            started_at: labels::now_rfc3339(),
            failure: None,
        };
        let steps = self
            .upgrade_steps(state, &mut pending, &volumes, deployed, catalog)
            .await;
        let failure = match steps {
            Ok(()) => {
                state.last_good = Some(target.clone());
                state.pending = None;
                state.failed.retain(|f| f != &target.version);
                if let Err(e) = self.save(state) {
                    return fail(e);
                }
                return Done {
                    action: success,
                    from: Some(from.version),
                    to: Some(target.version),
                    reason,
                    notes: None,
                    alert: None,
                };
            }
            Err(e) => e,
        };
        if !pending.step.target_may_have_run() && pending.step != Step::Deploying {
            // Undeploying or snapshotting failed: the data is untouched; bring last-good back.
            self.say(&format!(
                "could not prepare the upgrade ({failure}); redeploying {}",
                from.version
            ));
            let back = self.ensure_running(&from, catalog).await;
            state.pending = None;
            let _ = self.save(state);
            return match back {
                Ok(()) => fail(format!(
                    "the upgrade to {} could not start: {failure}; {} is running again",
                    target.version, from.version
                )),
                Err(e) => fail(format!(
                    "the upgrade to {} could not start ({failure}) and {} could not be redeployed: {e}",
                    target.version, from.version
                )),
            };
        }
        self.say(&format!(
            "{} failed its gate: {failure}; rolling back to {}",
            target.version, from.version
        ));
        match self.roll_back(state, &pending, catalog).await {
            Ok(()) => {
                state.pending = None;
                if !state.failed.contains(&target.version) {
                    state.failed.push(target.version.clone());
                }
                if let Err(e) = self.save(state) {
                    return fail(e);
                }
                Done {
                    action: Action::RolledBack,
                    from: Some(from.version.clone()),
                    to: Some(target.version.clone()),
                    alert: Some((format!("rolled-back:{}", target.version), Level::Critical)),
                    reason: format!(
                        "{} failed: {failure}; rolled back to {}{}, which is running and healthy; {} is not tried again until a newer release exists (or --retry {})",
                        target.version,
                        from.version,
                        if pending.stateful {
                            " with its data restored from the snapshot"
                        } else {
                            ""
                        },
                        target.version,
                        self.app.name
                    ),
                    notes: Some(releases::notes(&catalog.repo, &to.clone()))
                        .filter(|n| !n.is_empty()),
                }
            }
            Err(e) => {
                let mut done = self.rollback_failed(state, pending, e);
                done.reason = format!("{} failed ({failure}); {}", target.version, done.reason);
                done
            }
        }
    }

    /// The rollback failed: the app is left for a human, the snapshot kept.
    fn rollback_failed(&self, state: &mut AppState, mut pending: Pending, why: String) -> Done {
        let (from, to) = (pending.from.version.clone(), pending.to.version.clone());
        pending.step = Step::Failed;
        pending.failure = Some(why.clone());
        let snapshot = pending.snapshot.clone();
        state.pending = Some(pending);
        let saved = self.save(state);
        Done {
            alert: Some((format!("failed:{to}"), Level::Critical)),
            ..Done::failed(
                Some(&from),
                Some(&to),
                format!(
                    "the rollback to {from} failed: {why}; the app is left for a human{}{}",
                    snapshot
                        .map(|s| format!(", the data before the upgrade kept at {}", s.display()))
                        .unwrap_or_default(),
                    saved
                        .err()
                        .map(|e| format!(" (and the state could not be saved: {e})"))
                        .unwrap_or_default()
                ),
            )
        }
    }

    /// Undeploy, snapshot, deploy, verify — each step recorded before it starts.
    async fn upgrade_steps(
        &self,
        state: &mut AppState,
        pending: &mut Pending,
        volumes: &[String],
        deployed: bool,
        catalog: &releases::Catalog,
    ) -> StepResult<()> {
        let set = |state: &mut AppState, pending: &mut Pending, step: Step| {
            pending.step = step;
            state.pending = Some(pending.clone());
            self.save(state)
        };
        set(state, pending, Step::Started)?;
        if pending.stateful {
            if deployed {
                set(state, pending, Step::Undeploying)?;
                self.say(&format!(
                    "undeploying {} to snapshot its data ({} volume(s))",
                    pending.from.version,
                    volumes.len()
                ));
                let t = Instant::now();
                self.undeploy().await?;
                self.note(format!(
                    "undeployed {} in {}",
                    pending.from.version,
                    fmt_duration(t.elapsed())
                ));
            }
            set(state, pending, Step::Snapshotting)?;
            self.say(&format!("snapshotting {} volume(s)", volumes.len()));
            let t = Instant::now();
            let dest = self.dir.snapshot_path(&self.app.name);
            let meta = SnapshotMeta {
                recipe: Some(self.app.recipe.clone()),
                version: Some(pending.from.version.clone()),
                commit: Some(pending.from.commit.clone()),
            };
            let manifest = self
                .engine
                .snapshot_volumes(volumes, &dest, &pending.helper_image, &meta)
                .await
                .map_err(engine_err)?;
            self.note(format!(
                "snapshot of {} volume(s), {} bytes, in {}",
                manifest.volumes.len(),
                manifest.bytes(),
                fmt_duration(t.elapsed())
            ));
            pending.snapshot = Some(dest);
            set(state, pending, Step::Snapshotted)?;
        }
        set(state, pending, Step::Deploying)?;
        self.say(&format!("deploying {}", pending.to.version));
        self.deploy(&pending.to, catalog).await?;
        set(state, pending, Step::Verifying)?;
        self.say(&format!(
            "verifying {}: converged and serving within {}",
            pending.to.version,
            fmt_duration(self.app.health_timeout)
        ));
        let t = Instant::now();
        self.verify().await?;
        self.note(format!(
            "{} converged and served in {}",
            pending.to.version,
            fmt_duration(t.elapsed())
        ));
        Ok(())
    }

    /// Puts last-good back: the target removed and (stateful) the data restored from the
    /// snapshot, then last-good deployed and verified.
    async fn roll_back(
        &self,
        state: &mut AppState,
        pending: &Pending,
        catalog: &releases::Catalog,
    ) -> StepResult<()> {
        let mut p = pending.clone();
        p.step = Step::RollingBack;
        state.pending = Some(p);
        self.save(state)?;
        let t = Instant::now();
        if pending.stateful {
            self.say(&format!("removing {}", pending.to.version));
            self.undeploy().await?;
            let snapshot = pending.snapshot.clone().ok_or_else(|| {
                "the upgrade recorded no snapshot although the app is stateful".to_owned()
            })?;
            let manifest = {
                let dir = snapshot.clone();
                tokio::task::spawn_blocking(move || seatrial_engine::verify_snapshot(&dir))
                    .await
                    .map_err(|e| format!("the snapshot check failed: {e}"))?
                    .map_err(engine_err)?
            };
            if manifest.meta.version.as_deref() != Some(pending.from.version.as_str()) {
                return Err(format!(
                    "the snapshot at {} holds {:?}'s data, not {}'s; restore by hand",
                    snapshot.display(),
                    manifest.meta.version,
                    pending.from.version
                ));
            }
            let known: Vec<&str> = manifest.volumes.iter().map(|v| v.name.as_str()).collect();
            let extra: Vec<String> = self
                .engine
                .stack_volumes(&self.app.name)
                .await
                .map_err(engine_err)?
                .into_iter()
                .map(|v| v.name)
                .filter(|v| !known.contains(&v.as_str()))
                .collect();
            self.engine
                .remove_volumes(&extra)
                .await
                .map_err(engine_err)?;
            self.say(&format!(
                "restoring {} volume(s) from the snapshot of {}",
                manifest.volumes.len(),
                pending.from.version
            ));
            let report = self
                .engine
                .restore_volumes(&snapshot, &pending.helper_image)
                .await
                .map_err(engine_err)?;
            self.note(format!(
                "restored {} volume(s), {} bytes, in {}",
                report.volumes.len(),
                report.bytes,
                fmt_duration(report.elapsed)
            ));
        }
        self.say(&format!("redeploying {}", pending.from.version));
        self.deploy(&pending.from, catalog).await?;
        self.verify().await?;
        self.note(format!(
            "rolled back to {} in {}",
            pending.from.version,
            fmt_duration(t.elapsed())
        ));
        Ok(())
    }

    /// `release` runs, healthy: left as it is when it does, else deployed and verified.
    async fn ensure_running(
        &self,
        release: &Release,
        catalog: &releases::Catalog,
    ) -> StepResult<()> {
        let deployed = self.deployed().await.ok().flatten();
        if deployed.as_ref() == Some(release) && self.healthy().await.is_ok() {
            return Ok(());
        }
        self.say(&format!("redeploying {}", release.version));
        self.deploy(release, catalog).await?;
        self.verify().await
    }

    async fn deploy_then_verify(
        &self,
        release: &Release,
        catalog: &releases::Catalog,
    ) -> StepResult<()> {
        self.say(&format!("deploying {}", release.version));
        self.deploy(release, catalog).await?;
        self.say(&format!(
            "verifying {}: converged and serving within {}",
            release.version,
            fmt_duration(self.app.health_timeout)
        ));
        self.verify().await
    }

    async fn undeploy(&self) -> StepResult<()> {
        let options = UndeployOptions {
            remove_data: false,
            settle: true,
            ..UndeployOptions::default()
        };
        match self
            .engine
            .undeploy(&self.app.name, &options, &NoProgress)
            .await
        {
            Ok(_) | Err(EngineError::StackNotFound { .. }) => Ok(()),
            Err(e) => Err(engine_err(e)),
        }
    }

    /// An image the engine has, for the snapshot helpers (never started): the deployed app's,
    /// else the one `from` deploys.
    async fn helper_image(
        &self,
        deployed: bool,
        from: &Release,
        catalog: &releases::Catalog,
    ) -> StepResult<String> {
        if deployed
            && let Some(image) = self
                .engine
                .ps(&self.app.name)
                .await
                .map_err(engine_err)?
                .into_iter()
                .map(|s| s.image)
                .find(|i| !i.is_empty())
        {
            return Ok(image);
        }
        let (rev, _) = self.checkout(from, catalog).await?;
        let (_, resolved) = self.resolve(&rev)?;
        resolved
            .compose
            .services
            .values()
            .find_map(|s| s.image.clone())
            .ok_or_else(|| format!("{} names no image", from.version))
    }

    async fn checkout(
        &self,
        release: &Release,
        catalog: &releases::Catalog,
    ) -> StepResult<(Revision, Settings)> {
        let repo = catalog.repo.to_string_lossy().into_owned();
        let work = self.options.data_dir.join("checkouts");
        let stop = self.git_stop();
        let reference = if release.commit.is_empty() {
            release.version.clone()
        } else {
            release.commit.clone()
        };
        let c = tokio::task::spawn_blocking(move || {
            git::checkout_with(&repo, &reference, &work, &stop)
        })
        .await
        .map_err(|e| format!("the checkout task failed: {e}"))?
        .map_err(|e| e.to_string())?;
        let own = crate::settings::read(&c.dir)?;
        let mut settings = Settings::default().apply(&own).apply(&self.app.overrides);
        settings.timeout = self.app.health_timeout;
        Ok((
            Revision::checked_out(c, Some(release.version.clone())),
            settings,
        ))
    }

    fn resolve(&self, rev: &Revision) -> StepResult<(Recipe, seatrial_recipe::ResolvedApp)> {
        let mut recipe = Recipe::open(&rev.dir).map_err(|e| e.to_string())?;
        if recipe.sample_env.get("TYPE").is_none() {
            recipe.name = recipe_name(&self.app.recipe);
        }
        let own = crate::settings::read(&rev.dir)?;
        let settings = Settings::default().apply(&own).apply(&self.app.overrides);
        let resolved = recipe
            .resolve(&AppSettings {
                stack: self.app.name.clone(),
                domain: Some(self.app.domain()),
                overrides: settings.env.iter().cloned().collect(),
                version: rev.version.clone(),
            })
            .map_err(|e| e.to_string())?;
        Ok((recipe, resolved))
    }

    /// Deploys `release` (create or update in place).
    async fn deploy(&self, release: &Release, catalog: &releases::Catalog) -> StepResult<()> {
        let (rev, _) = self.checkout(release, catalog).await?;
        let (recipe, resolved) = self.resolve(&rev)?;
        let secrets = self.host.secrets(&self.app.name, &resolved.secrets)?;
        let mut run_labels = RunLabels::new(self.run_id.clone(), recipe.name.clone(), KIND_INFRA);
        run_labels.commit = rev.commit.clone();
        run_labels.version = Some(release.version.clone());
        let plan = StackPlan::for_app(&self.app.name, &resolved, &recipe.dir, run_labels, &secrets);
        let options = DeployOptions {
            mode: DeployMode::CreateOrUpdate,
            pull: PullPolicy::Missing,
            ..DeployOptions::default()
        };
        let t = Instant::now();
        self.engine
            .deploy(&plan, &options)
            .await
            .map_err(engine_err)?;
        self.note(format!(
            "deployed {} in {}",
            release.version,
            fmt_duration(t.elapsed())
        ));
        Ok(())
    }

    /// The post-deploy gate: converged (and Swarm's update completed) within the health
    /// timeout, then serving as the probe settings say.
    async fn verify(&self) -> StepResult<()> {
        let settings = {
            let mut s = Settings::default().apply(&self.app.overrides);
            s.timeout = self.app.health_timeout;
            s
        };
        let ctx = self.ctx();
        let converge = ConvergeOptions {
            timeout: self.app.health_timeout,
            stable_for: settings.stable_for,
            ..ConvergeOptions::default()
        };
        let report = self
            .engine
            .converge(&self.app.name, &converge, &NoProgress)
            .await
            .map_err(engine_err)?;
        if let Ok(mut baseline) = ctx.converged.lock() {
            *baseline = report
                .services
                .iter()
                .map(|s| (s.name.clone(), s.failed_tasks))
                .collect();
        }
        let mut probe_url = None;
        let probing = crate::serve::serve(&ctx, &settings, &mut probe_url);
        let served =
            tokio::time::timeout(settings.probe.deadline + Duration::from_secs(30), probing)
                .await
                .map_err(|_| "the probe did not finish".to_owned())?
                .map_err(stage_err)?;
        self.note(format!("served: {}", served.0));
        Ok(())
    }

    /// The context the trial's serve stage reads.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            engine: self.engine,
            observer: &QuietObserver,
            config: TrialConfig {
                recipe: self.app.recipe.clone(),
                reference: None,
                subdir: None,
                base_domain: "localhost".into(),
                overrides: self.app.overrides.clone(),
                keep: true,
                data_dir: self.options.data_dir.clone(),
                janitor_max_age: Duration::MAX,
                liveness: None,
                run_id: self.run_id.clone(),
                stack: self.app.name.clone(),
                trust: crate::Trust::Local,
                mode: TrialMode::Cold,
                promote: false,
            },
            run_id: self.run_id.clone(),
            stack: self.app.name.clone(),
            domain: self.app.domain(),
            converged: std::sync::Mutex::default(),
            kind: KIND_INFRA,
            recipe_key: crate::warm::recipe_key(&self.app.recipe),
            warm: crate::warm::Warm::new(&self.options.data_dir),
        }
    }
}

/// The release deployed now becomes last-good once it is seen healthy (an upgrade done by
/// hand after a hold is recorded this way).
fn adopt(state: &mut AppState, current: &Release) {
    if state.last_good.as_ref() != Some(current) {
        state.last_good = Some(current.clone());
    }
}

/// A recipe's name from its source: the last path segment without `.git`.
fn recipe_name(source: &str) -> String {
    let last = source
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(source);
    last.strip_suffix(".git").unwrap_or(last).to_owned()
}

struct QuietObserver;

impl seatrial_engine::ProgressObserver for QuietObserver {}
impl TrialObserver for QuietObserver {}

/// Reconcile's exit code for a set of outcomes: 0 when every app ended installed, upgraded,
/// skipped or held; 1 when any rolled back or failed.
pub fn exit_code(outcomes: &[AppOutcome]) -> i32 {
    i32::from(outcomes.iter().any(|o| o.action.is_failure()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_names_come_from_the_source() {
        assert_eq!(
            recipe_name("https://git.example.org/coop-cloud/traefik.git"),
            "traefik"
        );
        assert_eq!(recipe_name("/srv/recipes/keycloak/"), "keycloak");
        assert_eq!(recipe_name("git@host:coop/authentik.git"), "authentik");
    }
}
