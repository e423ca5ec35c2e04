//! `seatrial app …`: deploy, undeploy and inspect one app.

use std::collections::HashMap;

use seatrial_recipe::{AppSettings, Recipe, SecretValue, Severity};

use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, Engine, PullPolicy, RunLabels, ServiceStatus,
    StackPlan, SwarmEngine, UndeployOptions, fmt_duration,
};

use crate::cli::{AppCommand, Cli, Command, DeployArgs, PsArgs, Pull, UndeployArgs};
use crate::exit::{self, Failure};
use crate::progress::Reporter;
use crate::secrets::SecretStore;
use crate::source::Source;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(dir) = cli.data_dir.filter(|d| !d.as_os_str().is_empty()) {
        crate::secrets::set_data_dir(dir);
    }
    match cli.command {
        Command::App(AppCommand::Deploy(args)) => deploy(args).await,
        Command::App(AppCommand::Undeploy(args)) => undeploy(args).await,
        Command::App(AppCommand::Ps(args)) => ps(args).await,
        Command::Lint(args) => crate::lint::run(&args),
        Command::Render(args) => crate::render::run(&args),
        Command::Test(args) => crate::trial::run(*args).await,
        Command::Janitor(args) => crate::trial::janitor(args).await,
        Command::Warm(command) => crate::warm::run(command).await,
        Command::Reconcile(args) => crate::infra::run(args).await,
        Command::Serve(args) => {
            let config = crate::serve::config::load(args.config.as_deref())
                .map_err(|e| Failure::new(crate::exit::BAD_INPUT, e))?;
            crate::serve::run(config).await
        }
        Command::Runs(command) => crate::runs::run(command).await,
        Command::Completions(args) => crate::generate::completions(args.shell),
        Command::Man => crate::generate::man(),
        Command::Probe(args) => crate::probe::run(&args).await,
        Command::Gate(args) => crate::gate::run(args).await,
        Command::Check(command) => crate::gate::check(command).await,
    }
}

async fn deploy(args: DeployArgs) -> Result<(), Failure> {
    let stack = args.name.as_str();
    let source = Source::open(&args.recipe, args.reference.as_deref())?;
    let mut recipe = Recipe::open(&source.dir)?;
    if recipe.sample_env.get("TYPE").is_none() {
        recipe.name = source.name.clone();
    }
    let settings = AppSettings {
        stack: stack.to_owned(),
        domain: Some(
            args.domain
                .clone()
                .unwrap_or_else(|| format!("{stack}.localhost")),
        ),
        overrides: args.env.iter().cloned().collect(),
        version: source.version.clone(),
    };
    let resolved = recipe.resolve(&settings)?;
    for w in resolved
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
    {
        eprintln!("{w}");
    }
    if source.dirty {
        eprintln!("warning: the recipe has uncommitted changes; they are deployed as they are");
    }
    let mut labels = RunLabels::new(seatrial_trial::new_run_id(), recipe.name.clone(), "app");
    labels.commit = source.commit.clone();
    labels.version = source.version.clone();
    labels.dirty = source.dirty;
    let mut plan = StackPlan::for_app(stack, &resolved, &recipe.dir, labels, &HashMap::new());
    // Everything that is wrong with the input is reported before the engine is contacted.
    SwarmEngine::check_plan_unconnected(&plan)?;
    let supplied: HashMap<String, SecretValue> = args.secrets.iter().cloned().collect();
    let engine = SwarmEngine::connect().await?;
    // Secret values generated for an app that never came to exist go with it.
    let app_dir = crate::secrets::app_dir(stack);
    let first_deploy = !app_dir.exists();
    plan.secret_values = SecretStore::for_app(stack).values(&resolved.secrets, &supplied)?;
    let recipe_name = recipe.name.clone();
    let options = DeployOptions {
        mode: if args.update {
            DeployMode::CreateOrUpdate
        } else {
            DeployMode::Create
        },
        pull: match args.pull {
            Pull::Never => PullPolicy::Never,
            Pull::Missing => PullPolicy::Missing,
        },
        ..DeployOptions::default()
    };
    let revision = match (&source.version, &source.commit) {
        (Some(v), _) => format!(" {v}"),
        (None, Some(c)) => format!(" at {}", &c[..c.len().min(12)]),
        _ => String::new(),
    };
    eprintln!("deploying {recipe_name}{revision} as stack `{stack}`");
    let outcome = match engine.deploy(&plan, &options).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let nothing_deployed = engine.ps(stack).await.is_ok_and(|s| s.is_empty());
            if first_deploy
                && nothing_deployed
                && let Err(rm) = std::fs::remove_dir_all(&app_dir)
                // An app without secrets never had a directory: nothing to remove.
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!(
                    "warning: cannot remove the generated secrets in {}: {rm}",
                    app_dir.display()
                );
            }
            return Err(e.into());
        }
    };
    let verb = if outcome.updated_services.is_empty() {
        "created"
    } else {
        "updated"
    };
    eprintln!(
        "{verb} stack `{stack}`: {} service(s) created, {} updated, {} removed",
        outcome.created_services.len(),
        outcome.updated_services.len(),
        outcome.removed_services.len()
    );
    if args.detach {
        return Ok(());
    }
    let converge = ConvergeOptions {
        timeout: args.timeout,
        stable_for: args.stable_for,
        max_task_failures: args.max_task_failures,
        ..ConvergeOptions::default()
    };
    let reporter = Reporter::new("converging");
    let result = tokio::select! {
        r = engine.converge(stack, &converge, &reporter) => r,
        _ = tokio::signal::ctrl_c() => {
            reporter.finish();
            return Err(Failure::new(exit::INTERRUPTED, format!(
                "interrupted while waiting for `{stack}` to converge; the stack is left as it is\n  \
                 inspect it with `seatrial app ps {stack}`, remove it with `seatrial app undeploy {stack} --volumes`"
            )));
        }
    };
    reporter.finish();
    match result {
        Ok(report) => {
            eprintln!(
                "stack `{stack}` converged in {}: every service running its current spec, healthy, stable for {}",
                fmt_duration(report.elapsed),
                fmt_duration(args.stable_for)
            );
            print_services(&report.services, args.json);
            Ok(())
        }
        Err(e) => {
            let mut failure = Failure::from(e);
            if failure.code == exit::APP_FAILED {
                failure.message.push_str(&format!(
                    "\n  the stack is left deployed for inspection: `seatrial app ps {stack}`; \
                     remove it with `seatrial app undeploy {stack} --volumes`"
                ));
            }
            Err(failure)
        }
    }
}

async fn undeploy(args: UndeployArgs) -> Result<(), Failure> {
    let engine = SwarmEngine::connect().await?;
    let reporter = Reporter::new("removing");
    let options = UndeployOptions {
        remove_data: args.volumes,
        timeout: args.timeout,
        ..UndeployOptions::default()
    };
    let report = engine.undeploy(&args.name, &options, &reporter).await;
    reporter.finish();
    let report = report?;
    if args.volumes {
        let dir = crate::secrets::app_dir(&args.name);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "warning: cannot remove the app's stored secrets in {}: {e}",
                dir.display()
            );
        }
    }
    let mut parts = vec![
        format!("{} service(s)", report.removed_services.len()),
        format!("{} network(s)", report.removed_networks.len()),
    ];
    if args.volumes {
        parts.push(format!("{} volume(s)", report.removed_volumes.len()));
        parts.push(format!("{} secret(s)", report.removed_secrets.len()));
        parts.push(format!("{} config(s)", report.removed_configs.len()));
    }
    eprintln!(
        "removed stack `{}` ({}) and waited until it was gone: {}",
        args.name,
        parts.join(", "),
        fmt_duration(report.elapsed)
    );
    if !args.volumes {
        eprintln!("  volumes, secrets and configs were kept; add --volumes to remove them too");
    }
    Ok(())
}

async fn ps(args: PsArgs) -> Result<(), Failure> {
    let engine = SwarmEngine::connect().await?;
    let services = engine.ps(&args.name).await?;
    if services.is_empty() {
        return Err(Failure::new(
            exit::BAD_INPUT,
            format!("stack `{}` does not exist on this engine", args.name),
        ));
    }
    print_services(&services, args.json);
    Ok(())
}

fn print_services(services: &[ServiceStatus], json: bool) {
    if json {
        match serde_json::to_string_pretty(services) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode JSON: {e}"),
        }
        return;
    }
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            let state = if s.converged {
                "converged".to_owned()
            } else if let Some(u) = &s.update_state {
                u.clone()
            } else {
                "converging".to_owned()
            };
            let state = match &s.last_error {
                Some(e) if !s.converged => format!("{state}: {e}"),
                _ => state,
            };
            [
                s.name.clone(),
                s.mode.clone(),
                format!("{}/{}", s.running, s.desired),
                s.image.clone(),
                s.ports.join(", "),
                state,
            ]
        })
        .collect();
    crate::table::print(
        ["SERVICE", "MODE", "REPLICAS", "IMAGE", "PORTS", "STATE"],
        &rows,
        usize::MAX,
    );
}
