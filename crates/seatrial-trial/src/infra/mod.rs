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
mod deploy;
pub mod gate;
mod releases;
pub mod state;
mod upgrade;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use seatrial_engine::labels;
use seatrial_engine::{Engine, EngineError};
use seatrial_recipe::git::{self, Version};
use seatrial_recipe::{SecretSlot, SecretValue};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::{InfraApp, Policy};
pub use state::{AppState, InfraDir, LastAction, Pending, Release, Step};

use crate::stage::StageError;

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
            let (stop, _watch) = self.git_stop();
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

    /// A stop for git commands that cancelling the reconcile sets; the watcher lives as long
    /// as the returned guard.
    fn git_stop(&self) -> (git::Stop, AbortOnDrop) {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = flag.clone();
        let cancel = self.cancel.clone();
        let watcher = tokio::spawn(async move {
            cancel.cancelled().await;
            watch.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let stop = git::Stop {
            timeout: git::GIT_TIMEOUT,
            cancel: Some(flag),
        };
        (stop, AbortOnDrop(watcher))
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
}

/// The release deployed now becomes last-good once it is seen healthy (an upgrade done by
/// hand after a hold is recorded this way).
fn adopt(state: &mut AppState, current: &Release) {
    if state.last_good.as_ref() != Some(current) {
        state.last_good = Some(current.clone());
    }
}

/// Ends a watcher task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reconcile's exit code for a set of outcomes: 0 when every app ended installed, upgraded,
/// skipped or held; 1 when any rolled back or failed.
pub fn exit_code(outcomes: &[AppOutcome]) -> i32 {
    i32::from(outcomes.iter().any(|o| o.action.is_failure()))
}

#[cfg(test)]
mod tests {
    use super::deploy::recipe_name;

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
