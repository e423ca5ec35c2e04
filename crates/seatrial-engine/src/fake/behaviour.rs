//! How a service behaves on the fake engine: scripted per compose key, built step by step.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// How one service behaves on the fake engine, from each deploy of it on. Build one with
/// [`Behaviour::healthy_after`] or [`Behaviour::never_healthy`], then add to it.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `Some(d)`: its tasks run (and are healthy) `d` after each deploy; `None`: never.
    pub(super) healthy_after: Option<Duration>,
    /// How often a task that does not come up fails (and is replaced).
    pub(super) fails_every: Duration,
    /// An update's new tasks fail and Swarm rolls the update back.
    pub(super) rolls_back_on_update: bool,
    /// A task fails this long after the service converged (then is replaced and comes up again).
    pub(super) fails_after_converged: Option<Duration>,
    /// How long the service and its containers take to go once removed.
    pub(super) removal: Duration,
    /// When the task's container (and with it the service's volumes) is created, after a deploy.
    pub(super) container_after: Duration,
    /// What `exec` in its containers answers: exit code and output.
    pub(super) exec: (i64, String),
    /// The IP its tasks are reached at.
    pub(super) address: IpAddr,
    /// Output of its failing healthcheck.
    pub(super) health_output: String,
    /// Its containers' last log lines.
    pub(super) logs: Vec<String>,
}

impl Behaviour {
    /// Converges: its tasks run, healthy, `after` each deploy.
    pub fn healthy_after(after: Duration) -> Self {
        Self {
            healthy_after: Some(after),
            fails_every: Duration::from_secs(1),
            rolls_back_on_update: false,
            fails_after_converged: None,
            removal: Duration::ZERO,
            container_after: Duration::ZERO,
            exec: (0, String::new()),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            health_output: "connection refused".to_owned(),
            logs: vec!["starting".to_owned()],
        }
    }

    /// Never becomes healthy: a task fails every [`Self::fails_every`] (1 s unless set) and is
    /// replaced, until convergence gives up.
    pub fn never_healthy() -> Self {
        Self {
            healthy_after: None,
            ..Self::healthy_after(Duration::ZERO)
        }
    }

    /// How often a task that does not come up (never healthy, rolled back) fails.
    pub fn fails_every(mut self, every: Duration) -> Self {
        self.fails_every = every.max(Duration::from_millis(1));
        self
    }

    /// An update of the service fails: its new task fails after [`Self::fails_every`] and Swarm
    /// rolls the service back to its previous spec (update state `rollback_completed`).
    pub fn rolls_back_on_update(mut self) -> Self {
        self.rolls_back_on_update = true;
        self
    }

    /// A task fails `after` it came up (healthy); Swarm replaces it, and the replacement comes
    /// up as the first one did.
    pub fn fails_after_converged(mut self, after: Duration) -> Self {
        self.fails_after_converged = Some(after);
        self
    }

    /// The service and its containers take `took` to go once removed.
    pub fn slow_removal(mut self, took: Duration) -> Self {
        self.removal = took;
        self
    }

    /// Its task's container — and the named volumes it mounts — are created `after` a deploy,
    /// also when the service was removed meanwhile (a swarm agent that accepted the task still
    /// creates them): a volume of the stack appears after its removal started.
    pub fn container_created_after(mut self, after: Duration) -> Self {
        self.container_after = after;
        self
    }

    /// `exec` in its containers exits with `code` and prints `output`.
    pub fn exec_answers(mut self, code: i64, output: &str) -> Self {
        self.exec = (code, output.to_owned());
        self
    }

    /// Its tasks are reached at `ip` (default 127.0.0.1, where a test serves them).
    pub fn address(mut self, ip: IpAddr) -> Self {
        self.address = ip;
        self
    }

    /// Its containers' last log lines (shown in a failure).
    pub fn logs(mut self, lines: &[&str]) -> Self {
        self.logs = lines.iter().map(|l| (*l).to_owned()).collect();
        self
    }
}

impl Default for Behaviour {
    /// Healthy at once.
    fn default() -> Self {
        Self::healthy_after(Duration::ZERO)
    }
}
