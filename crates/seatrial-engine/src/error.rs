//! Engine errors, sorted by who has to act: the user (bad input), the app (failed to converge),
//! or the operator (engine unreachable or misbehaving).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use seatrial_recipe::Finding;

/// Who has to act on an error; the CLI maps these to exit codes 2, 1 and 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadInput,
    AppFailed,
    Infrastructure,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker engine at {host}: {message}\n  is dockerd running? start it (scripts/setup.sh does) or set DOCKER_HOST"
    )]
    Unreachable { host: String, message: String },
    #[error(
        "the Docker engine at {host} is not a swarm manager (swarm state: {state})\n  run `docker swarm init --advertise-addr 127.0.0.1` on a single node, or point DOCKER_HOST at a manager"
    )]
    NotSwarmManager { host: String, state: String },
    #[error(
        "the engine at {host} is {engine}, which has no Docker Swarm: seatrial deploys apps as swarm stacks, so `seatrial app`, `test`, `warm`, `janitor`, `reconcile` and `serve` need a Docker Engine that is a swarm manager\n  install Docker Engine, run `docker swarm init --advertise-addr 127.0.0.1` and point DOCKER_HOST at it; with Podman alone, `seatrial lint` and `seatrial render` still check a recipe (they need no engine)"
    )]
    Podman { host: String, engine: String },
    #[error("stack `{stack}` cannot be deployed:\n{}", render(findings))]
    Invalid {
        stack: String,
        findings: Vec<Finding>,
    },
    #[error(
        "stack `{stack}` already exists ({detail})\n  use --update to upgrade it in place, or remove it first with `seatrial app undeploy {stack}`"
    )]
    StackTaken { stack: String, detail: String },
    #[error("stack `{stack}` does not exist on this engine")]
    StackNotFound { stack: String },
    #[error("{0}")]
    Failed(Box<AppFailure>),
    #[error("Docker engine error while {context}: {source}")]
    Api {
        context: String,
        #[source]
        source: ApiError,
    },
    #[error("cancelled while {context}")]
    Cancelled { context: String },
    #[error(
        "volume `{volume}` does not exist on this engine\n  check the name with `docker volume ls`"
    )]
    VolumeNotFound { volume: String },
    #[error(
        "volume `{volume}` is in use by {}\n  a volume is snapshotted or restored only while nothing uses it: undeploy the app and wait until its containers are gone (or remove the containers listed), then try again",
        containers.join(", ")
    )]
    VolumeInUse {
        volume: String,
        /// `name (state)` of each container that mounts it.
        containers: Vec<String>,
    },
    #[error(
        "the snapshot at {} cannot be restored:\n{}\n  no volume was touched; {reseed}",
        dir.display(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    SnapshotInvalid {
        dir: PathBuf,
        /// What does not match, one entry per file: which file, what was expected, what was found.
        problems: Vec<String>,
        /// How to make a usable snapshot again.
        reseed: String,
    },
    #[error("{action} {}: {source}\n  {hint}", path.display())]
    SnapshotIo {
        action: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: String,
    },
    #[error(
        "volume `{volume}` still holds files after it was removed and recreated (driver `{driver}`, options `{options}`): its data lives outside the volume, so restoring into it would merge old and new files\n  nothing was unpacked into it; empty the storage behind it by hand, then restore again"
    )]
    VolumeNotEmpty {
        volume: String,
        driver: String,
        options: String,
    },
    #[error(
        "a restore from the snapshot at {} was interrupted: volume(s) {} are incomplete\n  restore that snapshot again before using or snapshotting them",
        snapshot.display(),
        volumes.join(", ")
    )]
    RestoreUnfinished {
        snapshot: PathBuf,
        volumes: Vec<String>,
    },
    #[error(
        "another snapshot or restore of {} is running (it holds {}); wait until it ends",
        dir.display(),
        lock.display()
    )]
    SnapshotBusy { dir: PathBuf, lock: PathBuf },
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid { .. }
            | Self::StackTaken { .. }
            | Self::StackNotFound { .. }
            | Self::VolumeNotFound { .. }
            | Self::VolumeInUse { .. }
            | Self::VolumeNotEmpty { .. } => ErrorKind::BadInput,
            Self::Failed(_) => ErrorKind::AppFailed,
            Self::Unreachable { .. }
            | Self::NotSwarmManager { .. }
            | Self::Podman { .. }
            | Self::Api { .. }
            | Self::Cancelled { .. }
            | Self::SnapshotInvalid { .. }
            | Self::SnapshotIo { .. }
            | Self::SnapshotBusy { .. }
            | Self::RestoreUnfinished { .. } => ErrorKind::Infrastructure,
        }
    }

    pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let context = context.into();
        move |source| Self::Api {
            context,
            source: ApiError(Box::new(source)),
        }
    }
}

/// What the Docker API client reported: its message, and its causes through `source()`. The
/// client library's own error type stays inside this crate, so callers do not depend on it.
#[derive(Debug)]
pub struct ApiError(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  - {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why an app did not converge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// Swarm rolled the update back (failure_action: rollback): a failed deploy, never a success.
    RolledBack,
    /// Swarm paused the update (the default failure_action).
    UpdatePaused,
    /// Tasks of the current spec kept failing (unhealthy, crashing, rejected).
    TasksFailing { failures: usize },
    /// The restart policy gave up and no task runs.
    RestartsExhausted,
    /// The deadline passed before the service converged.
    Timeout { after: Duration },
}

/// A service that failed to converge, with what a person needs to see why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFailure {
    pub stack: String,
    pub service: String,
    pub reason: FailureReason,
    /// The swarm's message (UpdateStatus message or task error).
    pub task_error: Option<String>,
    /// Output of the last failed healthcheck, when there was one.
    pub health_output: Option<String>,
    /// The last log lines of the failing container.
    pub logs: Vec<String>,
    /// Services still not converged besides this one (on timeout).
    pub others: Vec<String>,
}

impl fmt::Display for AppFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.reason {
            FailureReason::RolledBack => "the update failed and swarm rolled it back".to_owned(),
            FailureReason::UpdatePaused => "the update failed and swarm paused it".to_owned(),
            FailureReason::TasksFailing { failures } => {
                format!("its tasks keep failing ({failures} failed tasks of the current spec)")
            }
            FailureReason::RestartsExhausted => {
                "its restart policy gave up and no task is running".to_owned()
            }
            FailureReason::Timeout { after } => {
                format!("it did not converge within {}", crate::fmt_duration(*after))
            }
        };
        write!(f, "service `{}` failed: {why}", self.service)?;
        if let Some(e) = &self.task_error {
            write!(f, "\n  task error: {e}")?;
        }
        if let Some(h) = &self.health_output {
            write!(f, "\n  last healthcheck output: {}", h.trim())?;
        }
        if !self.others.is_empty() {
            write!(f, "\n  also not converged: {}", self.others.join(", "))?;
        }
        if self.logs.is_empty() {
            write!(f, "\n  (no container logs)")?;
        } else {
            write!(f, "\n  last {} log lines:", self.logs.len())?;
            for line in &self.logs {
                write!(f, "\n    | {line}")?;
            }
        }
        Ok(())
    }
}
