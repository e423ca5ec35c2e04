//! `seatrial lint <recipe> [--json]`: a table (or JSON) of findings; exit 1 on any error.

use seatrial_recipe::Severity;
use seatrial_recipe::lint::{self, LintFinding};

use crate::cli::LintArgs;
use crate::exit::{self, Failure};

pub fn run(args: &LintArgs) -> Result<(), Failure> {
    let overrides = args.env.iter().cloned().collect();
    let findings = lint::lint_with(&args.recipe, &overrides)?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if args.json {
        let doc = serde_json::json!({
            "recipe": args.recipe.display().to_string(),
            "errors": errors,
            "warnings": warnings,
            "findings": findings,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                return Err(Failure::new(
                    exit::INFRASTRUCTURE,
                    format!("cannot encode JSON: {e}"),
                ));
            }
        }
    } else {
        print_table(&findings);
        eprintln!(
            "{}: {errors} error(s), {warnings} warning(s)",
            args.recipe.display()
        );
    }
    if errors > 0 {
        return Err(Failure::new(exit::APP_FAILED, String::new()));
    }
    Ok(())
}

fn print_table(findings: &[LintFinding]) {
    if findings.is_empty() {
        return;
    }
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            [
                f.rule.to_owned(),
                match f.severity {
                    Severity::Error => "error".to_owned(),
                    Severity::Warning => "warning".to_owned(),
                },
                f.what.clone(),
                match f.combinations.as_slice() {
                    [] => f.at.clone(),
                    combos => format!("{} (COMPOSE_FILE={})", f.at, combos.join(" | ")),
                },
                f.fix.clone(),
            ]
        })
        .collect();
    crate::table::print(
        ["RULE", "SEVERITY", "WHAT", "WHERE", "HOW TO FIX"],
        &rows,
        70,
    );
}
