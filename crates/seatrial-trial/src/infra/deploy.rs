//! Deploying one release of an infra app from seatrial's mirror of its recipe, and the
//! post-deploy gate (converged, then serving — the trial's serve stage).

use std::time::{Duration, Instant};

use seatrial_engine::labels::RunLabels;
use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, NoProgress, PullPolicy, StackPlan, fmt_duration,
};
use seatrial_recipe::git;
use seatrial_recipe::{AppSettings, Recipe};

use super::releases::Catalog;
use super::state::Release;
use super::{KIND_INFRA, Reconciler, StepResult, engine_err, stage_err};
use crate::checkout::Revision;
use crate::report::TrialMode;
use crate::settings::Settings;
use crate::{Ctx, TrialConfig, TrialObserver};

impl Reconciler<'_> {
    pub(super) async fn checkout(
        &self,
        release: &Release,
        catalog: &Catalog,
    ) -> StepResult<(Revision, Settings)> {
        let repo = catalog.repo.to_string_lossy().into_owned();
        let work = self.options.data_dir.join("checkouts");
        let (stop, _watch) = self.git_stop();
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

    /// The release's app, resolved with the env of `settings` (from [`Self::checkout`]).
    pub(super) fn resolve(
        &self,
        rev: &Revision,
        settings: &Settings,
    ) -> StepResult<(Recipe, seatrial_recipe::ResolvedApp)> {
        let mut recipe = Recipe::open(&rev.dir).map_err(|e| e.to_string())?;
        if recipe.sample_env.get("TYPE").is_none() {
            recipe.name = recipe_name(&self.app.recipe);
        }
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

    /// Deploys `release` (create or update in place); returns the settings its post-deploy
    /// gate uses (its recipe's `tests/seatrial.toml` under the entry's own).
    pub(super) async fn deploy(
        &self,
        release: &Release,
        catalog: &Catalog,
    ) -> StepResult<Settings> {
        let (rev, settings) = self.checkout(release, catalog).await?;
        let (recipe, resolved) = self.resolve(&rev, &settings)?;
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
        Ok(settings)
    }

    /// The post-deploy gate: converged (and Swarm's update completed) within the health
    /// timeout, then serving as the probe settings say.
    pub(super) async fn verify(&self, settings: &Settings) -> StepResult<()> {
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
        let probing = crate::serve::serve(&ctx, settings, &mut probe_url);
        let served =
            tokio::time::timeout(settings.probe.deadline + Duration::from_secs(30), probing)
                .await
                .map_err(|_| "the probe did not finish".to_owned())?
                .map_err(stage_err)?;
        self.note(format!("served: {}", served.0));
        Ok(())
    }

    /// The context the trial's serve stage reads.
    pub(super) fn ctx(&self) -> Ctx<'_> {
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

/// A recipe's name from its source: the last path segment without `.git`.
pub(super) fn recipe_name(source: &str) -> String {
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
