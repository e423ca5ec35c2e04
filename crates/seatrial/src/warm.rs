//! `seatrial warm`: seed, list, drop and prune warm canonicals.

use std::path::Path;
use std::time::Duration;

use seatrial_engine::{SwarmEngine, fmt_duration};
use seatrial_recipe::git;
use seatrial_trial::warm::{self, Warm};
use tokio_util::sync::CancellationToken;

use crate::cli::{TestArgs, WarmCommand};
use crate::exit::{self, Failure};

pub async fn run(command: WarmCommand) -> Result<(), Failure> {
    let warm = Warm::new(&crate::secrets::data_dir());
    match command {
        WarmCommand::Seed(args) => seed(*args).await,
        WarmCommand::List { json } => list(&warm, json),
        WarmCommand::Drop { recipe, json } => drop(&warm, &recipe, json).await,
        WarmCommand::Prune {
            unused_for,
            dry_run,
            json,
        } => prune(&warm, unused_for, dry_run, json).await,
    }
}

/// `warm seed` = `test --promote` of the latest release (or of `--ref`, checked to be it).
async fn seed(mut args: TestArgs) -> Result<(), Failure> {
    if args.quick {
        return Err(Failure::new(
            exit::BAD_INPUT,
            "`seatrial warm seed` runs a cold trial; --quick does not apply",
        ));
    }
    if args.reference.is_none() {
        let latest = latest_release(&args.recipe)?;
        eprintln!("seeding `{}` from its latest release {latest}", args.recipe);
        args.reference = Some(latest);
    }
    args.promote = true;
    crate::trial::run(args).await
}

/// The newest release tag of a recipe repository (a local path or a URL).
fn latest_release(recipe: &str) -> Result<String, Failure> {
    let bad = |m: String| Failure::new(exit::BAD_INPUT, m);
    let source = crate::source::Source::open(
        recipe,
        if Path::new(recipe).is_dir() {
            None
        } else {
            Some("HEAD")
        },
    )?;
    if !git::is_toplevel(&source.dir) {
        return Err(bad(format!(
            "`{recipe}` is not the top of a git repository: a canonical is made from a release tag"
        )));
    }
    let versions = git::versions(&source.dir).map_err(|e| bad(e.to_string()))?;
    versions
        .latest()
        .map(|v| v.tag.clone())
        .ok_or_else(|| bad(format!("`{recipe}` has no release tags (like 1.0.0+1.2.3)")))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::INFRASTRUCTURE, format!("cannot encode JSON: {e}")))?;
    println!("{json}");
    Ok(())
}

fn list(warm: &Warm, json: bool) -> Result<(), Failure> {
    let mut summaries = Vec::new();
    let mut broken = Vec::new();
    for entry in warm.list() {
        match entry {
            Ok(c) => summaries.push(warm.summary(&c)),
            Err(e) => broken.push(e),
        }
    }
    for e in &broken {
        eprintln!("warning: {e}");
    }
    if json {
        return print_json(&summaries);
    }
    if summaries.is_empty() {
        println!(
            "no canonicals in {} (`seatrial warm seed <recipe repository>` makes one)",
            warm.root().display()
        );
        return Ok(());
    }
    let rows: Vec<[String; 6]> = summaries
        .iter()
        .map(|s| {
            [
                s.recipe.clone(),
                s.version.clone(),
                s.stack.clone(),
                s.volumes.len().to_string(),
                s.snapshot
                    .taken_at
                    .as_ref()
                    .map_or("UNREADABLE".to_owned(), |_| {
                        crate::table::human_bytes(s.snapshot.bytes)
                    }),
                s.last_used.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    crate::table::print(
        [
            "RECIPE",
            "VERSION",
            "STACK",
            "VOLUMES",
            "SNAPSHOT",
            "LAST USED",
        ],
        &rows,
        usize::MAX,
    );
    Ok(())
}

async fn drop(warm: &Warm, recipe: &str, json: bool) -> Result<(), Failure> {
    let key = warm::recipe_key(recipe);
    let engine = SwarmEngine::connect().await?;
    let cancel = CancellationToken::new();
    let dropped = warm::drop_canonical(&engine, warm, &key, &cancel)
        .await
        .map_err(|e| Failure::new(exit::INFRASTRUCTURE, e))?;
    let Some(d) = dropped else {
        return Err(Failure::new(
            exit::BAD_INPUT,
            format!(
                "recipe `{key}` has no canonical in {} (`seatrial warm list` shows them)",
                warm.root().display()
            ),
        ));
    };
    if json {
        return print_json(&d);
    }
    println!(
        "dropped the canonical of `{}`: stack `{}` ({} volume(s)) and its snapshot {}",
        d.recipe,
        d.stack,
        d.volumes.len(),
        d.snapshot
    );
    Ok(())
}

#[derive(serde::Serialize)]
struct PruneDecision {
    recipe: String,
    stack: String,
    /// Seconds since last used (or promoted, when never used).
    unused_secs: Option<u64>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn prune(
    warm: &Warm,
    unused_for: Duration,
    dry_run: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut decisions = Vec::new();
    let mut engine = None;
    let cancel = CancellationToken::new();
    for c in warm.list().into_iter().filter_map(Result::ok) {
        let since = c.last_used.as_deref().unwrap_or(&c.created_at);
        let unused = warm::age_secs(since);
        // An unknown age is never old enough: prune only what is known to be unused.
        let stale = unused.is_some_and(|a| a >= unused_for.as_secs());
        let mut decision = PruneDecision {
            recipe: c.recipe.clone(),
            stack: c.stack.clone(),
            unused_secs: unused,
            action: if !stale {
                "kept"
            } else if dry_run {
                "would-drop"
            } else {
                "dropped"
            },
            error: None,
        };
        if stale && !dry_run {
            if engine.is_none() {
                engine = Some(SwarmEngine::connect().await?);
            }
            let Some(engine) = engine.as_ref() else {
                continue;
            };
            if let Err(e) = warm::drop_canonical(engine, warm, &c.recipe, &cancel).await {
                decision.action = "failed";
                decision.error = Some(e);
            }
        }
        decisions.push(decision);
    }
    let failed = decisions.iter().any(|d| d.action == "failed");
    if json {
        print_json(&decisions)?;
    } else if decisions.is_empty() {
        println!("no canonicals");
    } else {
        let rows: Vec<[String; 3]> = decisions
            .iter()
            .map(|d| {
                [
                    d.recipe.clone(),
                    d.action.to_owned(),
                    match (&d.error, d.unused_secs) {
                        (Some(e), _) => e.clone(),
                        (None, Some(s)) => {
                            format!("unused for {}", fmt_duration(Duration::from_secs(s)))
                        }
                        (None, None) => "unknown last use".to_owned(),
                    },
                ]
            })
            .collect();
        crate::table::print(["RECIPE", "ACTION", "WHY"], &rows, usize::MAX);
    }
    if failed {
        return Err(Failure::new(
            exit::INFRASTRUCTURE,
            "some canonicals could not be dropped",
        ));
    }
    Ok(())
}
