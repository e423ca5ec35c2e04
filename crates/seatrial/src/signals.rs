//! Interrupt requests (SIGINT, SIGTERM) as a person means them: signals that arrive together
//! are one request. `timeout CMD`, a process-group kill or a cgroup kill deliver the same
//! SIGTERM two or more times within milliseconds; only an interrupt that comes after the first
//! was acknowledged (a deliberate second Ctrl-C) asks for more.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use crate::exit::{self, Failure};

/// Signals within this long of the first belong to the same request.
pub const ACKNOWLEDGED_AFTER: Duration = Duration::from_secs(1);

pub struct Interrupts {
    int: Signal,
    term: Signal,
    first: Option<Instant>,
}

impl Interrupts {
    pub fn install() -> Result<Self, Failure> {
        let install = |kind| {
            signal(kind).map_err(|e| {
                Failure::new(exit::INFRASTRUCTURE, format!("cannot handle signals: {e}"))
            })
        };
        Ok(Self {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
            first: None,
        })
    }

    async fn any(&mut self) {
        tokio::select! { _ = self.int.recv() => {}, _ = self.term.recv() => {} }
    }

    /// Waits for the first interrupt request.
    pub async fn first(&mut self) {
        self.any().await;
        self.first.get_or_insert_with(Instant::now);
    }

    /// After [`Self::first`]: waits for a deliberate second request. Copies of the first signal
    /// that arrive within [`ACKNOWLEDGED_AFTER`] of it are swallowed.
    pub async fn again(&mut self) {
        let first = *self.first.get_or_insert_with(Instant::now);
        loop {
            self.any().await;
            if first.elapsed() >= ACKNOWLEDGED_AFTER {
                return;
            }
            tracing::debug!("a copy of the first interrupt signal; still one request");
        }
    }
}
