//! One commit of an app's own repository deployed to Swarm as a stack, for `seatrial gate`'s
//! `kind = "swarm"`: the infra lifecycle (snapshot before an upgrade, deploy, post-deploy gate,
//! rollback to last-good with its data) with the commit as the release, recorded like an infra
//! app's in `<data dir>/gate/<stack>/` (state.json, snapshot/, recipe.git, lock).
//!
//! Unlike reconcile, the deploy is not called good when it converged and served: the gate's
//! readiness stage decides, so the upgrade stays recorded as under way until [`CommitDeploy::confirm`]
//! (a gate killed meanwhile is rolled back by the next one) or [`CommitDeploy::roll_back`].

use std::path::Path;
use std::sync::Arc;

use seatrial_engine::{Engine, NoProgress, UndeployOptions};
use tokio_util::sync::CancellationToken;

use super::releases::{self, Catalog};
use super::state::{InfraDir, Pending, Release, Step};
use super::{InfraApp, InfraHost, ReconcileOptions, Reconciler, engine_err};
use crate::warm::lock::WarmLock;

/// How many hex digits of the commit name the deployed version.
const SHORT_SHA: usize = 12;

/// Why a deploy failed, and whether the stack may have changed.
#[derive(Debug)]
pub struct DeployFailure {
    pub message: String,
    /// `true` when what ran before runs again untouched: there is nothing to roll back.
    pub nothing_deployed: bool,
}

/// A deploy of one commit as a stack, with its way back.
pub struct CommitDeploy {
    engine: Arc<dyn Engine>,
    app: InfraApp,
    options: ReconcileOptions,
    host: Arc<dyn InfraHost>,
    cancel: CancellationToken,
    target: Release,
    run_id: String,
    inner: tokio::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Held from the deploy to its confirmation or rollback: one gate per stack at a time.
    lock: Option<WarmLock>,
    /// Nothing ran before the target (and nothing was ever good): a rollback removes it, with
    /// its volumes when there were none before.
    first_install: Option<bool>,
}

impl CommitDeploy {
    /// `app.name` is the stack, `app.recipe` the repository (a path or URL) holding `commit`.
    pub fn new(
        engine: Arc<dyn Engine>,
        app: InfraApp,
        data_dir: &Path,
        host: Arc<dyn InfraHost>,
        cancel: CancellationToken,
        commit: &str,
    ) -> Self {
        let version = commit.get(..SHORT_SHA).unwrap_or(commit).to_owned();
        Self {
            engine,
            app,
            options: ReconcileOptions {
                data_dir: data_dir.to_owned(),
                dry_run: false,
                // A rollback that failed before is tried again by the next gate.
                retry: true,
            },
            host,
            cancel,
            target: Release {
                version,
                commit: commit.to_owned(),
            },
            run_id: crate::new_run_id(),
            inner: tokio::sync::Mutex::default(),
        }
    }

    /// The version label of the deployed commit (its short sha).
    pub fn version(&self) -> &str {
        &self.target.version
    }

    /// Where this stack's state is kept.
    pub fn state_path(&self) -> std::path::PathBuf {
        InfraDir::for_gate(&self.options.data_dir).state_path(&self.app.name)
    }

    fn reconciler(&self) -> Reconciler<'_> {
        Reconciler {
            engine: &*self.engine,
            app: &self.app,
            options: &self.options,
            host: &*self.host,
            cancel: &self.cancel,
            dir: InfraDir::for_gate(&self.options.data_dir),
            run_id: self.run_id.clone(),
            detail: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn catalog(&self, r: &Reconciler<'_>) -> Result<Catalog, String> {
        let app = self.app.clone();
        let dir = r.dir.clone();
        let (stop, _watch) = r.git_stop();
        tokio::task::spawn_blocking(move || releases::sync(&app, &dir, &stop))
            .await
            .map_err(|e| format!("the git task failed: {e}"))?
    }

    /// Deploys the commit: a previous gate's unfinished deploy is put back first; a stateful
    /// stack is undeployed and snapshotted; then deployed, converged and serving. On `Ok` the
    /// previous release stays last-good until [`Self::confirm`].
    pub async fn deploy(&self) -> Result<String, DeployFailure> {
        let r = self.reconciler();
        let unchanged = |message: String| DeployFailure {
            message,
            nothing_deployed: true,
        };
        let lock =
            crate::warm::lock::acquire(&r.dir.lock_path(&self.app.name), &self.cancel, || {
                r.say("waiting for another gate deploy of this stack to finish")
            })
            .await
            .map_err(unchanged)?
            .ok_or_else(|| unchanged("interrupted while waiting for the stack's lock".into()))?;
        self.inner.lock().await.lock = Some(lock);
        let catalog = self.catalog(&r).await.map_err(unchanged)?;
        let mut state = r.dir.load(&self.app.name).map_err(unchanged)?;
        if let Some(pending) = state.pending.clone()
            && let Some(done) = r.interrupted(&mut state, &pending, &catalog).await
        {
            return Err(unchanged(format!(
                "a previous gate's deploy of {} was left unfinished and could not be undone: {}; nothing deployed",
                pending.to.version, done.reason
            )));
        }
        let current = r.deployed().await.map_err(unchanged)?;
        let volumes: Vec<String> = self
            .engine
            .stack_volumes(&self.app.name)
            .await
            .map_err(|e| unchanged(engine_err(e)))?
            .into_iter()
            .map(|v| v.name)
            .collect();
        let deployed = current.is_some();
        let Some(from) = current.or_else(|| state.last_good.clone()) else {
            self.inner.lock().await.first_install = Some(volumes.is_empty());
            r.deploy_then_verify(&self.target, &catalog)
                .await
                .map_err(|e| DeployFailure {
                    message: format!("{} failed: {e}", self.target.version),
                    nothing_deployed: false,
                })?;
            return Ok(self.told(
                &r,
                format!(
                    "deployed {} as stack {} (nothing was deployed before), converged and serving",
                    self.target.version, self.app.name
                ),
            ));
        };
        let stateful = !volumes.is_empty();
        let helper_image = if stateful {
            r.helper_image(deployed, &from, &catalog)
                .await
                .map_err(unchanged)?
        } else {
            String::new()
        };
        let mut pending = Pending::new(from.clone(), self.target.clone(), stateful, helper_image);
        match r
            .upgrade_steps(&mut state, &mut pending, &volumes, deployed, &catalog)
            .await
        {
            Ok(()) => Ok(self.told(
                &r,
                format!(
                    "deployed {} over {} as stack {}{}, converged and serving; {} stays last-good until the app is ready",
                    self.target.version,
                    from.version,
                    self.app.name,
                    if stateful {
                        " after snapshotting its volumes"
                    } else {
                        ""
                    },
                    from.version
                ),
            )),
            Err(e) if !pending.step.target_may_have_run() && pending.step != Step::Deploying => {
                // Undeploying or snapshotting failed: the data is untouched.
                let back = r.ensure_running(&from, &catalog).await;
                state.pending = None;
                let saved = r.save(&state);
                Err(DeployFailure {
                    message: match back {
                        Ok(()) => format!(
                            "the deploy of {} could not start: {e}; {} is running again, nothing changed{}",
                            self.target.version,
                            from.version,
                            saved.err().map(|s| format!(" (but {s})")).unwrap_or_default()
                        ),
                        Err(b) => format!(
                            "the deploy of {} could not start ({e}) and {} could not be redeployed: {b}; redeploy it by hand",
                            self.target.version, from.version
                        ),
                    },
                    nothing_deployed: true,
                })
            }
            Err(e) => Err(DeployFailure {
                message: format!("{} failed: {e}", self.target.version),
                nothing_deployed: false,
            }),
        }
    }

    /// The app is ready: the commit becomes last-good (and the lock is released).
    pub async fn confirm(&self) -> Result<String, String> {
        let r = self.reconciler();
        let mut state = r.dir.load(&self.app.name)?;
        state.last_good = Some(self.target.clone());
        state.pending = None;
        state.failed.retain(|f| f != &self.target.version);
        r.save(&state)?;
        self.inner.lock().await.lock = None;
        Ok(format!(
            "{} recorded as last-good in {}",
            self.target.version,
            self.state_path().display()
        ))
    }

    /// Puts the stack back as it was before [`Self::deploy`]: the target removed, the data
    /// restored from the snapshot (stateful stacks), last-good redeployed and verified; or,
    /// when nothing ran before, the target removed.
    pub async fn roll_back(&self) -> Result<String, String> {
        let r = self.reconciler();
        let mut state = r.dir.load(&self.app.name)?;
        let first_install = self.inner.lock().await.first_install;
        let outcome = if let Some(pending) = state.pending.clone() {
            let catalog = self.catalog(&r).await?;
            match r.roll_back(&mut state, &pending, &catalog).await {
                Ok(()) => {
                    state.pending = None;
                    if !state.failed.contains(&pending.to.version) {
                        state.failed.push(pending.to.version.clone());
                    }
                    r.save(&state)?;
                    Ok(self.told(
                        &r,
                        format!(
                            "rolled back to {}{}, which is running and serving",
                            pending.from.version,
                            if pending.stateful {
                                " with its data restored from the snapshot taken before the deploy"
                            } else {
                                ""
                            }
                        ),
                    ))
                }
                Err(e) => Err(r.rollback_failed(&mut state, pending, e).reason),
            }
        } else if let Some(remove_data) = first_install {
            let options = UndeployOptions {
                remove_data,
                settle: true,
                ..UndeployOptions::default()
            };
            self.engine
                .undeploy(&self.app.name, &options, &NoProgress)
                .await
                .map(|_| {
                    format!(
                        "removed stack {}: nothing was deployed before {}{}",
                        self.app.name,
                        self.target.version,
                        if remove_data {
                            ", and its new volumes with it"
                        } else {
                            ""
                        }
                    )
                })
                .map_err(|e| {
                    format!(
                        "removing stack {} failed: {e}; remove it by hand (`docker stack rm {}`)",
                        self.app.name, self.app.name
                    )
                })
        } else {
            Err(format!(
                "nothing to roll back to: {} was already the release of stack {} (see {})",
                self.target.version,
                self.app.name,
                self.state_path().display()
            ))
        };
        self.inner.lock().await.lock = None;
        outcome
    }

    /// `summary`, then the steps the reconciler noted.
    fn told(&self, r: &Reconciler<'_>, summary: String) -> String {
        let notes = r.detail.lock().map(|d| d.join("; ")).unwrap_or_default();
        if notes.is_empty() {
            summary
        } else {
            format!("{summary} ({notes})")
        }
    }
}
