//! The upgrade itself: undeploy, snapshot, deploy and verify, each step recorded before it
//! starts; the rollback that puts last-good back (with the data, for a stateful app).

use std::time::Instant;

use seatrial_engine::{EngineError, NoProgress, SnapshotMeta, UndeployOptions, fmt_duration};
use seatrial_recipe::git::Version;

use super::releases::{self, Catalog};
use super::state::{AppState, Pending, Release, Step};
use super::{Action, Done, Level, Reconciler, StepResult, engine_err};

impl Reconciler<'_> {
    /// Deploys `to` (from `from`: the release deployed, or the last-good one whose data the
    /// volumes may hold) behind the post-deploy gate, rolling back on failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply(
        &self,
        state: &mut AppState,
        from: Option<Release>,
        deployed: bool,
        to: &Version,
        success: Action,
        reason: String,
        catalog: &Catalog,
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
        let mut pending = Pending::new(from.clone(), target.clone(), stateful, helper_image);
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
    pub(super) fn rollback_failed(
        &self,
        state: &mut AppState,
        mut pending: Pending,
        why: String,
    ) -> Done {
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
    pub(super) async fn upgrade_steps(
        &self,
        state: &mut AppState,
        pending: &mut Pending,
        volumes: &[String],
        deployed: bool,
        catalog: &Catalog,
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
        let settings = self.deploy(&pending.to, catalog).await?;
        set(state, pending, Step::Verifying)?;
        self.say(&format!(
            "verifying {}: converged and serving within {}",
            pending.to.version,
            fmt_duration(self.app.health_timeout)
        ));
        let t = Instant::now();
        self.verify(&settings).await?;
        self.note(format!(
            "{} converged and served in {}",
            pending.to.version,
            fmt_duration(t.elapsed())
        ));
        Ok(())
    }

    /// Puts last-good back: the target removed and (stateful) the data restored from the
    /// snapshot, then last-good deployed and verified.
    pub(super) async fn roll_back(
        &self,
        state: &mut AppState,
        pending: &Pending,
        catalog: &Catalog,
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
        let settings = self.deploy(&pending.from, catalog).await?;
        self.verify(&settings).await?;
        self.note(format!(
            "rolled back to {} in {}",
            pending.from.version,
            fmt_duration(t.elapsed())
        ));
        Ok(())
    }

    /// `release` runs, healthy: left as it is when it does, else deployed and verified.
    pub(super) async fn ensure_running(
        &self,
        release: &Release,
        catalog: &Catalog,
    ) -> StepResult<()> {
        let deployed = self.deployed().await.ok().flatten();
        if deployed.as_ref() == Some(release) && self.healthy().await.is_ok() {
            return Ok(());
        }
        self.say(&format!("redeploying {}", release.version));
        let settings = self.deploy(release, catalog).await?;
        self.verify(&settings).await
    }

    pub(super) async fn deploy_then_verify(
        &self,
        release: &Release,
        catalog: &Catalog,
    ) -> StepResult<()> {
        self.say(&format!("deploying {}", release.version));
        let settings = self.deploy(release, catalog).await?;
        self.say(&format!(
            "verifying {}: converged and serving within {}",
            release.version,
            fmt_duration(self.app.health_timeout)
        ));
        self.verify(&settings).await
    }

    pub(super) async fn undeploy(&self) -> StepResult<()> {
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
    pub(super) async fn helper_image(
        &self,
        deployed: bool,
        from: &Release,
        catalog: &Catalog,
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
        let (rev, settings) = self.checkout(from, catalog).await?;
        let (_, resolved) = self.resolve(&rev, &settings)?;
        resolved
            .compose
            .services
            .values()
            .find_map(|s| s.image.clone())
            .ok_or_else(|| format!("{} names no image", from.version))
    }
}
