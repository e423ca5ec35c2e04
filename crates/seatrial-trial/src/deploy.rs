//! The stack plan of a revision, deploying it and waiting for convergence, and the checks that
//! the app stayed up and really moved to the change.

use std::collections::HashMap;

use seatrial_engine::labels::{self, RunLabels};
use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, ErrorKind, PullPolicy, StackPlan,
};
use seatrial_recipe::{AppSettings, Recipe, ResolvedApp, SecretValue};

use crate::Ctx;
use crate::checkout::Revision;
use crate::recipe_tests;
use crate::settings::Settings;
use crate::stage::StageError;

pub(crate) fn app_settings(ctx: &Ctx<'_>, s: &Settings, version: Option<String>) -> AppSettings {
    AppSettings {
        stack: ctx.stack.clone(),
        domain: Some(ctx.domain.clone()),
        overrides: s.env.iter().cloned().collect(),
        version,
    }
}

pub(crate) fn resolve(
    ctx: &Ctx<'_>,
    s: &Settings,
    rev: &Revision,
) -> Result<(Recipe, ResolvedApp), StageError> {
    let bad =
        |e: seatrial_recipe::RecipeError| StageError::Error(e.to_string(), ErrorKind::BadInput);
    let recipe = Recipe::open(&rev.dir).map_err(bad)?;
    let app = recipe
        .resolve(&app_settings(ctx, s, rev.version.clone()))
        .map_err(bad)?;
    Ok((recipe, app))
}

pub(crate) fn plan(
    ctx: &Ctx<'_>,
    rev: &Revision,
    app: &ResolvedApp,
    secrets: &mut HashMap<String, SecretValue>,
) -> Result<StackPlan, StageError> {
    // One value per secret for the whole trial: the upgrade keeps the installed secrets.
    for slot in &app.secrets {
        if !secrets.contains_key(&slot.engine_name) {
            let value = SecretValue::generate(slot.length).map_err(|e| {
                StageError::Error(
                    format!("the OS random number generator failed: {e}"),
                    ErrorKind::Infrastructure,
                )
            })?;
            secrets.insert(slot.engine_name.clone(), value);
        }
    }
    let recipe = Recipe::open(&rev.dir)
        .map_err(|e| StageError::Error(e.to_string(), ErrorKind::BadInput))?;
    let mut labels = RunLabels::new(ctx.run_id.clone(), recipe.name.clone(), ctx.kind);
    labels.commit = rev.commit.clone();
    labels.version = rev.version.clone();
    Ok(StackPlan::for_app(
        &ctx.stack,
        app,
        &recipe.dir,
        labels,
        secrets,
    ))
}

pub(crate) async fn deploy_and_converge(
    ctx: &Ctx<'_>,
    s: &Settings,
    rev: &Revision,
    mode: DeployMode,
    secrets: &mut HashMap<String, SecretValue>,
) -> Result<(String, Vec<recipe_tests::TestResult>), StageError> {
    let (_, app) = resolve(ctx, s, rev)?;
    let plan = plan(ctx, rev, &app, secrets)?;
    let options = DeployOptions {
        mode,
        pull: PullPolicy::Missing,
        ..DeployOptions::default()
    };
    ctx.engine.deploy(&plan, &options).await?;
    let converge = ConvergeOptions {
        timeout: s.timeout,
        stable_for: s.stable_for,
        // The trial verifies after serving and after its tests that nothing failed or rolled
        // back since (`still_up`): it need not wait out Swarm's monitor period.
        until_update_completed: false,
        ..ConvergeOptions::default()
    };
    let report = ctx
        .engine
        .converge(&ctx.stack, &converge, ctx.observer)
        .await?;
    if let Ok(mut baseline) = ctx.converged.lock() {
        *baseline = report
            .services
            .iter()
            .map(|s| (s.name.clone(), s.failed_tasks))
            .collect();
    }
    let services: Vec<String> = report
        .services
        .iter()
        .map(|s| format!("{} {}/{}", s.name, s.running, s.desired))
        .collect();
    Ok((
        format!(
            "{} converged in {} ({})",
            rev.version.as_deref().unwrap_or("the change"),
            seatrial_engine::fmt_duration(report.elapsed),
            services.join(", ")
        ),
        Vec::new(),
    ))
}

/// Nothing may have failed since the stack converged. Services with a healthcheck count as
/// converged once healthy (no waiting window), so this check, after serving and after the tests,
/// is what catches an app that crashes after its first healthy moment.
pub(crate) async fn still_up(ctx: &Ctx<'_>) -> Result<(), StageError> {
    let baseline = ctx.converged.lock().map(|b| b.clone()).unwrap_or_default();
    for s in ctx.engine.ps(&ctx.stack).await? {
        let before = baseline.get(&s.name).copied().unwrap_or(0);
        if s.converged && s.failed_tasks <= before {
            continue;
        }
        return Err(StageError::Fail(format!(
            "service `{}` did not stay up after it converged: {}/{} running, {} task(s) failed since{}; see `docker service ps --no-trunc {}` and `docker service logs {}`",
            s.name,
            s.running,
            s.desired,
            s.failed_tasks.saturating_sub(before),
            s.last_error
                .as_deref()
                .map(|e| format!("; last task error: {e}"))
                .unwrap_or_default(),
            s.name,
            s.name,
        )));
    }
    Ok(())
}

/// The deployed services must carry the change's commit label: the upgrade really happened.
pub(crate) async fn verify_moved(ctx: &Ctx<'_>, change: &Revision) -> Result<(), StageError> {
    let Some(commit) = &change.commit else {
        return Ok(());
    };
    for status in ctx.engine.ps(&ctx.stack).await? {
        let deployed = ctx.engine.service_labels(&status.name).await?;
        if deployed.get(labels::COMMIT) != Some(commit) {
            return Err(StageError::Fail(format!(
                "service `{}` carries {}={:?}, not the change's commit {commit}",
                status.name,
                labels::COMMIT,
                deployed.get(labels::COMMIT)
            )));
        }
    }
    Ok(())
}
