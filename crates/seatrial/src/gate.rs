//! `seatrial gate` (checks, migration checks, then — when asked — deploy, readiness, rollback)
//! and `seatrial check migrations`: the same stage lines, summary, `--json` and `--junit`
//! reports and exit codes as `seatrial test`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use seatrial_engine::{Engine, SwarmEngine};
use seatrial_gate::config::{self, DatabaseCheck, MigrationsConfig};
use seatrial_gate::redact::SecretUrl;
use seatrial_gate::{DeployConfig, Deployer, GateReport, GateRun, SwarmDeployer};
use seatrial_trial::infra::gate::CommitDeploy;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};
use crate::trial::{StageProgress, print_summary, verdict, write_reports};

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The gate config [default: gate.toml in the current directory, the checkout the checks
    /// run in].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The ref under test (e.g. main or refs/heads/main): deploys when it is one of the
    /// config's deploy_branches. Without it nothing deploys unless --deploy is given.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Deploy (then wait for readiness, and roll back on failure) once every check and the
    /// migration check passed, whatever the ref.
    #[arg(long)]
    pub deploy: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as JUnit XML to this file (for other CIs' test views).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Check a migrations directory (NNN_name.up.sql, one file per slot); with --database-url,
    /// also apply the migrations a production schema snapshot has not applied, as the app's
    /// role, on a scratch database that is dropped afterwards. Exit 0 pass, 1 a migration
    /// failed, 2 bad input, 3 the database server is unreachable.
    Migrations(CheckMigrationsArgs),
}

#[derive(Debug, Args)]
pub struct CheckMigrationsArgs {
    /// The migrations directory.
    pub dir: PathBuf,
    /// A PostgreSQL server where seatrial may create scratch databases, as a superuser
    /// (postgres://user:password@host:port/database); its password is never printed.
    #[arg(
        long,
        env = "SEATRIAL_GATE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        requires_all = ["snapshot", "role"]
    )]
    pub database_url: Option<String>,
    /// A plain-SQL schema dump of production, loaded into the scratch database.
    #[arg(long, value_name = "FILE", requires = "database_url")]
    pub snapshot: Option<PathBuf>,
    /// The app's role: new migrations run as it (SET ROLE), never as a superuser.
    #[arg(long, requires = "database_url")]
    pub role: Option<String>,
    /// The snapshot's table of applied versions (column `version`).
    #[arg(long, value_name = "TABLE", requires = "database_url", default_value = config::DEFAULT_APPLIED_TABLE)]
    pub applied_table: String,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `seatrial gate`.
pub async fn run(args: GateArgs) -> Result<(), Failure> {
    let checkout = std::env::current_dir().map_err(|e| {
        Failure::new(
            exit::INFRASTRUCTURE,
            format!("cannot read the current directory: {e}"),
        )
    })?;
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| checkout.join("gate.toml"));
    let config = config::load(&path).map_err(|e| Failure::new(exit::BAD_INPUT, e.to_string()))?;
    let deploy = seatrial_gate::deploy_wanted(&config, args.reference.as_deref(), args.deploy);
    let cancel = CancellationToken::new();
    let deployer = match (&config.deploy, &config.ready) {
        (Some(DeployConfig::Swarm { stack }), Some(ready)) if deploy => {
            Some(swarm_deployer(stack, &checkout, ready.timeout, &path, cancel.clone()).await?)
        }
        _ => seatrial_gate::prepare_deployer(&config, deploy, |k| std::env::var(k).ok())
            .map_err(|e| Failure::new(exit::BAD_INPUT, e.to_string()))?,
    };
    eprintln!(
        "gate {}{}: {}",
        checkout.display(),
        args.reference
            .as_deref()
            .map(|r| format!(" at {r}"))
            .unwrap_or_default(),
        if deploy {
            "checks, migrations, then deploy"
        } else {
            "checks and migrations only (no deploy)"
        }
    );
    let signals = watch_signals(cancel.clone())?;
    let report = seatrial_gate::run(
        GateRun {
            config: &config,
            checkout: checkout.clone(),
            reference: args.reference.clone(),
            deploy,
            deployer: deployer.as_deref(),
        },
        &StageProgress::new(),
        cancel,
    )
    .await;
    signals.abort();
    finish(&report, "gate", &args.json, &args.junit)
}

/// `kind = "swarm"`: the checkout's HEAD deployed as `stack` on the Docker engine seatrial
/// reaches, recorded under `<data dir>/gate/<stack>/`.
async fn swarm_deployer(
    stack: &str,
    checkout: &Path,
    timeout: Duration,
    config: &Path,
    cancel: CancellationToken,
) -> Result<Box<dyn Deployer>, Failure> {
    let commit = head_commit(checkout).ok_or_else(|| {
        Failure::new(
            exit::BAD_INPUT,
            format!(
                "{}: gate.deploy.kind = \"swarm\" deploys the checkout's HEAD commit, but {} is not a git checkout with a commit; run the gate in the app's repository",
                config.display(),
                checkout.display()
            ),
        )
    })?;
    let engine: Arc<dyn Engine> = Arc::new(SwarmEngine::connect().await?);
    let deploy = CommitDeploy::new(
        engine,
        seatrial_gate::swarm_app(stack, checkout, timeout),
        &crate::secrets::data_dir(),
        Arc::new(crate::infra::Host {
            progress: &print_progress,
        }),
        cancel,
        &commit,
    );
    Ok(Box::new(SwarmDeployer::new(deploy)))
}

fn head_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "HEAD"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// A swarm gate's progress lines, on stderr under the stage line.
fn print_progress(app: &str, line: &str) {
    eprintln!("  {app}: {line}");
}

/// `seatrial check …`.
pub async fn check(command: CheckCommand) -> Result<(), Failure> {
    let CheckCommand::Migrations(args) = command;
    let database = match (args.database_url, args.snapshot, args.role) {
        (Some(url), Some(snapshot), Some(role)) => Some(DatabaseCheck {
            url: SecretUrl::parse(&url)
                .map_err(|e| Failure::new(exit::BAD_INPUT, format!("--database-url: {e}")))?,
            snapshot,
            role,
            applied_table: args.applied_table,
        }),
        // clap requires the three together.
        _ => None,
    };
    let config = MigrationsConfig {
        dir: args.dir,
        database,
    };
    let cancel = CancellationToken::new();
    let signals = watch_signals(cancel.clone())?;
    let checkout = PathBuf::from(".");
    let report =
        seatrial_gate::check_migrations(&config, &checkout, &StageProgress::new(), cancel).await;
    signals.abort();
    finish(&report, "migration check", &args.json, &args.junit)
}

fn finish(
    report: &GateReport,
    what: &str,
    json: &Option<PathBuf>,
    junit: &Option<PathBuf>,
) -> Result<(), Failure> {
    print_summary(&report.stages, report.result, what, report.duration_ms);
    write_reports(json.as_deref(), junit.as_deref(), report, || report.junit())?;
    verdict(report.result, report.interrupted, report.error_kind)
}

/// First SIGINT/SIGTERM: stop the running stage (a scratch database is still dropped, a deploy
/// already sent still rolled back). A deliberate second one: stop waiting.
fn watch_signals(cancel: CancellationToken) -> Result<tokio::task::JoinHandle<()>, Failure> {
    crate::trial::on_interrupt(
        cancel,
        "stopping the running stage and cleaning up".to_owned(),
        "cleanup abandoned: a scratch database seatrial_gate_* may be left on the migration server, \
         and a started deploy may not be rolled back"
            .to_owned(),
    )
}
