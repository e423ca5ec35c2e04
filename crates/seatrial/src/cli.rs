//! Command-line interface definition.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "seatrial",
    version,
    about = "Prove that a deployment works by deploying it for real",
    long_about = "seatrial deploys apps to a Docker Swarm engine, waits until they have truly \
                  converged and are healthy, and removes them completely.\n\n\
                  The engine is the one DOCKER_HOST names (default: the local socket).\n\n\
                  Exit codes: 0 ok, 1 the app failed (unhealthy, rolled back, timed out), \
                  2 bad input or configuration, 3 the engine is unreachable, 130 interrupted."
)]
pub struct Cli {
    /// More log output on stderr (-v: info, -vv: debug). SEATRIAL_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// seatrial's data directory: checkouts, app secrets, warm canonicals and their snapshots
    /// [default: ~/.local/share/seatrial].
    #[arg(long, global = true, env = "SEATRIAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy, inspect and remove apps (one deployed instance of a recipe).
    #[command(subcommand)]
    App(AppCommand),
    /// Check a recipe for problems that would break or weaken a deploy (exit 1 on errors).
    Lint(LintArgs),
    /// Print what would be deployed: the merged, interpolated compose, as `docker stack config`
    /// prints it, without touching the engine.
    Render(RenderArgs),
    /// Run a cold trial: install the previous release, serve, upgrade to the change, run the
    /// recipe's tests, tear everything down.
    Test(Box<TestArgs>),
    /// Remove what killed or crashed trials left behind (only trial stacks whose run is gone).
    Janitor(JanitorArgs),
    /// Warm canonicals: known-good, data-warm copies of recipes for `seatrial test --quick`.
    #[command(subcommand)]
    Warm(WarmCommand),
    /// Keep the config's [[infra]] apps on their newest safe release: pre-deploy gate (policy,
    /// release notes), snapshot, upgrade, post-deploy gate (converged and serving), rollback
    /// with the data restored. Exit 0 when every app ended installed, upgraded, skipped or held;
    /// 1 when one was rolled back or failed; 2 bad config; 3 engine unreachable.
    Reconcile(ReconcileArgs),
    /// Run the trial queue and the dashboard/API server.
    Serve(ServeArgs),
    /// List, show and cancel runs of a `seatrial serve` (through its API).
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish or powershell).
    Completions(CompletionsArgs),
    /// Print seatrial's man page (roff) on stdout: `seatrial man | man -l -`.
    Man,
    /// Ask a URL and exit 0 when it answers the expected status (1 otherwise): a health check
    /// for images without curl, like seatrial's own (`seatrial probe
    /// http://127.0.0.1:8086/healthz`), and the in-cluster probe of a trial (--host, --accept,
    /// --body, --retry-for).
    Probe(ProbeArgs),
    /// Gate a push to production: the config's checks and migration check, then (with --deploy,
    /// or a --ref in deploy_branches) deploy, wait for readiness, roll back on failure. Exit 0
    /// pass, 1 a stage failed, 2 bad config, 3 infrastructure.
    Gate(crate::gate::GateArgs),
    /// Run one of the gate's checks alone.
    #[command(subcommand)]
    Check(crate::gate::CheckCommand),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to ask (GET; redirects are not followed).
    pub url: String,
    /// The status that counts as healthy.
    #[arg(
        long,
        default_value_t = 200,
        value_name = "CODE",
        conflicts_with = "accept"
    )]
    pub status: u16,
    /// Give up after this long (e.g. "5s"); with --retry-for, each try's limit.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The Host header to send (e.g. the app's domain, as a reverse proxy would pass it).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// The statuses that count as healthy, e.g. 200-399 (instead of --status).
    #[arg(long, value_name = "LOW-HIGH", value_parser = seatrial_trial::settings::parse_status_range)]
    pub accept: Option<(u16, u16)>,
    /// Text the answer's body must contain.
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Ask again (backing off up to 2s) until a healthy answer or this long has passed, e.g.
    /// "60s"; each failed try is printed on stderr.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_for: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML, see examples/seatrial.toml). Without one: sane defaults, and every key
    /// can come from the environment (SEATRIAL_LISTEN, SEATRIAL_DATABASE_URL, ...).
    #[arg(long, env = "SEATRIAL_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The config file with the [[infra]] apps and [[alerts]] (the same file as `serve`'s).
    #[arg(long, env = "SEATRIAL_CONFIG")]
    pub config: PathBuf,
    /// Reconcile only this app.
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
    /// Say what would be done; deploy nothing, record nothing, alert no one.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON: {"apps": [{"name", "action", "from", "to", "reason", ...}]}.
    #[arg(long)]
    pub json: bool,
    /// Try this app's failed release again (or its failed rollback); repeatable.
    #[arg(long, value_name = "NAME")]
    pub retry: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "SEATRIAL_SERVER", default_value = "http://127.0.0.1:8086")]
    pub server: String,
    /// API token for writes (cancel).
    #[arg(long, env = "SEATRIAL_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        recipe: Option<String>,
        /// queued, running, passed, failed, errored, cancelled, timed_out
        #[arg(long)]
        state: Option<String>,
        /// cold or quick
        #[arg(long)]
        mode: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run with its stages.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        id: i64,
        /// Also print its log.
        #[arg(long)]
        log: bool,
    },
    /// Cancel a queued or running run (a running trial is torn down).
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct JanitorArgs {
    /// Also remove trial stacks whose run is unknown here once they are this old.
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub max_age: Duration,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the decisions as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WarmCommand {
    /// Make (or replace) a recipe's canonical: a cold trial of its latest release (or --ref,
    /// which must be the latest release) that keeps the data (`seatrial test --promote`).
    Seed(Box<TestArgs>),
    /// The canonicals on this host, with their versions, volumes and snapshot sizes.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a recipe's canonical: its volumes, secrets, configs and snapshot.
    Drop {
        /// The recipe (its name as `warm list` shows it, or its repository path or URL).
        recipe: String,
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the canonicals no quick run has used for a while (never used: since promoted).
    Prune {
        /// How long unused, e.g. 30d, 12h.
        #[arg(long, value_parser = parse_duration)]
        unused_for: Duration,
        /// Only say what would be dropped.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What a quick run does when the recipe has no canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fallback {
    /// Run a cold trial instead.
    Cold,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Recipe: a directory, or a git repository (path or URL) with --ref.
    pub recipe: String,
    /// The change under test (branch, tag or commit), from an isolated checkout.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as JUnit XML to this file (for other CIs' test views).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Leave the app up after the trial (prints the command that removes it).
    #[arg(long)]
    pub keep: bool,
    /// Run on the recipe's warm canonical (`seatrial warm seed` makes one): deploy its
    /// known-good version on its data, upgrade to the change, and put the known-good data back
    /// afterwards. Faster, lower confidence than a cold trial (no first boot on empty volumes).
    #[arg(long, conflicts_with_all = ["promote", "keep"])]
    pub quick: bool,
    /// With --quick: what to do when the recipe has no canonical (default: exit 2).
    #[arg(long, value_enum, requires = "quick")]
    pub fallback: Option<Fallback>,
    /// When the trial passes and the change is the recipe's latest release, keep its data as
    /// the recipe's canonical (replacing an older one) instead of deleting it. Refused (exit 2)
    /// before anything is deployed for any other change.
    #[arg(long, conflicts_with = "keep")]
    pub promote: bool,
    /// The app's domain is <stack>.<base-domain>.
    #[arg(long, default_value = "seatrial.localhost")]
    pub base_domain: String,
    /// Set a variable of the app env (repeatable); overrides tests/seatrial.toml's trial.env.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    // Settings below override the recipe's tests/seatrial.toml, which overrides the defaults.
    /// Convergence deadline of each deploy [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// How long a service without a healthcheck must stay converged [default: 3s]; a service
    /// with one counts once healthy.
    #[arg(long, value_parser = parse_duration)]
    pub stable_for: Option<Duration>,
    /// How the serve stage reaches the app [default: gateway on a single node; on a multi-node
    /// swarm or a remote engine, url with --probe-url, else job].
    #[arg(long, value_enum)]
    pub probe_strategy: Option<ProbeStrategy>,
    /// A service to probe (repeatable) [default: the traefik-routed one, else each with a port].
    #[arg(long = "probe-service", value_name = "SERVICE")]
    pub probe_services: Vec<String>,
    /// The port to probe [default: traefik's loadbalancer port, published, or exposed].
    #[arg(long)]
    pub probe_port: Option<u16>,
    /// Path the probe requests [default: /].
    #[arg(long)]
    pub probe_path: Option<String>,
    /// Accepted status codes of the probe, e.g. 200-399 or 200 [default: 200-399].
    #[arg(long, value_parser = seatrial_trial::settings::parse_status_range)]
    pub probe_status: Option<(u16, u16)>,
    /// Text the probe's response body must contain.
    #[arg(long)]
    pub probe_body: Option<String>,
    /// How long the probe retries before the serve stage fails [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub probe_timeout: Option<Duration>,
    /// Base URL of the operator's reverse proxy (strategy url), e.g. https://proxy.example.org
    #[arg(long)]
    pub probe_url: Option<String>,
    /// With an https:// probe URL: accept a certificate that does not verify (test proxies).
    #[arg(long)]
    pub probe_insecure: bool,
    /// Command to run in the service's container (strategy exec), e.g. "wget -q -O- http://127.0.0.1/"
    #[arg(long)]
    pub probe_command: Option<String>,
    /// The image a probe job runs (strategy job); it must carry `seatrial probe` [default:
    /// $SEATRIAL_PROBE_IMAGE, else seatrial:<this version>].
    #[arg(long)]
    pub probe_image: Option<String>,
    /// Timeout of each executable of the recipe's tests/ [default: 5m].
    #[arg(long, value_parser = parse_duration)]
    pub test_timeout: Option<Duration>,
    /// The janitor pass before the trial also reaps trial stacks of unknown runs this old.
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub janitor_max_age: Duration,
    /// Treat the recipe as someone else's, as `!testme` runs do: host access (host binds, the
    /// Docker socket, privileges, host namespaces, devices) is refused at prepare.
    #[arg(long)]
    pub untrusted: bool,
    /// With --untrusted: allow one finding, `rule` or `rule:value` (e.g. docker-socket,
    /// host-bind:/var/log).
    #[arg(long, value_name = "RULE[:VALUE]", value_parser = parse_permit, requires = "untrusted")]
    pub permit: Vec<seatrial_recipe::policy::Permit>,
}

fn parse_permit(s: &str) -> Result<seatrial_recipe::policy::Permit, String> {
    s.parse()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProbeStrategy {
    /// Straight to the task through docker_gwbridge (single node).
    Gateway,
    /// Through the operator's reverse proxy: --probe-url with Host: <domain>.
    Url,
    /// A command in the service's container (--probe-command); exit 0 passes.
    Exec,
    /// From inside the swarm: a one-shot job on the service's network runs `seatrial probe`
    /// (--probe-image; the default on a multi-node swarm without --probe-url).
    Job,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Recipe directory.
    pub recipe: PathBuf,
    /// Print findings as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Set a variable of the app env (repeatable), as for deploy.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Recipe: a directory, or a git repository (path or URL) with --ref.
    pub recipe: String,
    /// Render the recipe at this git ref (branch, tag or commit), from an isolated checkout.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Set a variable of the app env (repeatable), as for deploy.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Stack name (STACK_NAME in the app env).
    #[arg(long, default_value = "app")]
    pub name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RenderFormat::Yaml)]
    pub format: RenderFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RenderFormat {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Deploy a recipe as a stack and wait until it has converged and is healthy.
    Deploy(DeployArgs),
    /// Remove a stack and wait until its services, containers and networks are gone.
    Undeploy(UndeployArgs),
    /// Show the state of each service of a stack.
    Ps(PsArgs),
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Recipe: a directory, or a git repository (path or URL) with --ref.
    pub recipe: String,
    /// Deploy the recipe at this git ref (branch, tag or commit), from an isolated checkout.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Stack name: prefixes every service, network, secret and config.
    #[arg(long)]
    pub name: String,
    /// The app's domain (DOMAIN in the app env); default <stack>.localhost.
    #[arg(long)]
    pub domain: Option<String>,
    /// Set a variable of the app env (repeatable), e.g. --env COMPOSE_FILE=compose.yml:compose.smtp.yml
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Supply a secret instead of generating it (repeatable), e.g. --secret db_password=...
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = crate::secrets::parse_secret_arg)]
    pub secrets: Vec<(String, seatrial_recipe::SecretValue)>,
    /// Upgrade the stack in place when it already exists (otherwise that is an error).
    #[arg(long)]
    pub update: bool,
    /// Give up waiting for convergence after this long (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long a service without a healthcheck must stay converged before the deploy counts as
    /// good; a service with one counts once healthy.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub stable_for: Duration,
    /// Failed tasks of a service's current spec after which it counts as failing.
    #[arg(long, default_value_t = 3)]
    pub max_task_failures: usize,
    /// Whether images missing on the engine are pulled.
    #[arg(long, value_enum, default_value_t = Pull::Missing)]
    pub pull: Pull,
    /// Don't wait for convergence: return once the stack is created or updated.
    #[arg(long)]
    pub detach: bool,
    /// Print the final service states as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Pull {
    Never,
    Missing,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// Stack name.
    pub name: String,
    /// Also remove the stack's volumes (its data), secrets and configs, and the app's stored
    /// secret values.
    #[arg(long)]
    pub volumes: bool,
    /// Give up waiting for removal after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Stack name.
    pub name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_owned())?;
    if k.is_empty() {
        return Err("expected KEY=VALUE with a non-empty KEY".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    seatrial_recipe::parse_duration(s)
}
