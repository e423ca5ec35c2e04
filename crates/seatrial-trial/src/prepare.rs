//! The prepare stage's checks: settings, lint of what is deployed, trust, and resolution of every
//! revision before anything is deployed.

use std::collections::HashMap;

use seatrial_engine::ErrorKind;
use seatrial_recipe::lint;
use seatrial_recipe::{Recipe, Severity};

use crate::Ctx;
use crate::checkout::Revision;
use crate::deploy::{app_settings, plan, resolve};
use crate::settings::{self, Settings};
use crate::stage::StageError;

/// Checkouts, settings (defaults < tests/seatrial.toml < command line), lint (errors stop the
/// trial), and resolution of both revisions.
pub(crate) fn prepare(
    ctx: &Ctx<'_>,
    change: &Revision,
    previous: Option<&Revision>,
) -> Result<Settings, StageError> {
    let bad = |e: String| StageError::Error(e, ErrorKind::BadInput);
    let from_recipe = settings::read(&change.dir).map_err(bad)?;
    let s = Settings::default()
        .apply(&from_recipe)
        .apply(&ctx.config.overrides);
    s.check().map_err(bad)?;
    // Lint what this trial deploys: the app env's own COMPOSE_FILE combination, not every
    // overlay the recipe offers (`seatrial lint` checks those).
    let recipe = Recipe::open(&change.dir).map_err(|e| bad(e.to_string()))?;
    let mut env: indexmap::IndexMap<String, String> = s.env.iter().cloned().collect();
    if let Some(files) = recipe
        .app_env(&app_settings(ctx, &s, change.version.clone()))
        .get("COMPOSE_FILE")
        .filter(|f| !f.trim().is_empty())
    {
        env.insert("COMPOSE_FILE".to_owned(), files.clone());
    }
    let findings = lint::lint_with(&change.dir, &env).map_err(|e| bad(e.to_string()))?;
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {} ({})", f.rule, f.at, f.what, f.fix))
        .collect();
    if !errors.is_empty() {
        return Err(bad(format!(
            "lint found {} error(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        )));
    }
    // Resolve both now, so a broken release fails here rather than halfway through.
    for rev in std::iter::once(change).chain(previous) {
        let (recipe, app) = resolve(ctx, &s, rev)?;
        let which = rev
            .version
            .as_deref()
            .map_or("the change".into(), |v| format!("release {v}"));
        ctx.config
            .trust
            .check(&recipe.dir, &app, &which)
            .map_err(bad)?;
        let plan = plan(ctx, rev, &app, &mut HashMap::new())?;
        ctx.engine.check_plan(&plan)?;
    }
    Ok(s)
}
