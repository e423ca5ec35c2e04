//! `seatrial render <recipe>`: what would be deployed, in the shape `docker stack config`
//! prints, without touching the engine. Refuses (exit 2) what Docker's loader refuses; what only
//! a deploy would reject is rendered, with the errors on stderr (and as `lint` errors).

use seatrial_recipe::{AppSettings, Recipe, Severity};

use crate::cli::{RenderArgs, RenderFormat};
use crate::exit::{self, Failure};
use crate::source::Source;

pub fn run(args: &RenderArgs) -> Result<(), Failure> {
    let stack = args.name.as_str();
    seatrial_recipe::naming::check_stack_name(stack)
        .map_err(|e| Failure::new(exit::BAD_INPUT, e))?;
    let source = Source::open(&args.recipe, args.reference.as_deref())?;
    let mut recipe = Recipe::open(&source.dir)?;
    if recipe.sample_env.get("TYPE").is_none() {
        recipe.name = source.name.clone();
    }
    let settings = AppSettings {
        stack: stack.to_owned(),
        domain: Some(format!("{stack}.localhost")),
        overrides: args.env.iter().cloned().collect(),
        version: source.version.clone(),
    };
    let app = recipe.render(&settings)?;
    let doc = seatrial_recipe::render::render(&app.compose, &recipe.dir);
    let text = match args.format {
        RenderFormat::Json => serde_json::to_string_pretty(&doc)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        RenderFormat::Yaml => seatrial_recipe::render::to_yaml(&doc),
    }
    .map_err(|e| {
        Failure::new(
            exit::INFRASTRUCTURE,
            format!("cannot encode the compose: {e}"),
        )
    })?;
    print!("{text}");
    for f in &app.findings {
        eprintln!("{f}");
    }
    let errors = app
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!(
            "{errors} error(s) above: Docker's loader accepts this, but a deploy would be refused (see `seatrial lint`)"
        );
    }
    Ok(())
}
