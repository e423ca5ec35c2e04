//! The bookkeeping of a convergence wait, the same for every engine: a stack counts once every
//! service is converged — at once when all have a healthcheck (it passed: that is their
//! evidence), else after staying so for the stability window — and not after the deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ConvergeOptions, ConvergeProgress, ConvergeReport, ProgressObserver, ServiceStatus};

/// What one look at the stack means.
pub(crate) enum Step {
    /// Converged and stable: the wait is over.
    Done(ConvergeReport),
    /// Not converged at the deadline.
    TimedOut,
    /// Look again at this moment (or at the next change seen before it).
    WaitUntil(Instant),
}

pub(crate) struct Stability {
    started: Instant,
    deadline: Instant,
    stable_for: Duration,
    /// Since when every service has been converged.
    since: Option<Instant>,
}

impl Stability {
    pub(crate) fn start(options: &ConvergeOptions) -> Self {
        let started = Instant::now();
        Self {
            started,
            deadline: started + options.timeout,
            stable_for: options.stable_for,
            since: None,
        }
    }

    /// Judges one look at the stack's services (none failed) and tells `observer` about it.
    pub(crate) fn step(
        &mut self,
        services: Vec<ServiceStatus>,
        observer: &dyn ProgressObserver,
    ) -> Step {
        let now = Instant::now();
        let elapsed = now - self.started;
        // Healthy tasks passed their healthcheck; only services without one need the window.
        let window = if services.iter().all(|s| s.healthcheck) {
            Duration::ZERO
        } else {
            self.stable_for
        };
        if !services.iter().all(|s| s.converged) {
            self.since = None;
            observer.converge(&ConvergeProgress {
                elapsed,
                services,
                stabilizing: None,
            });
            return if now >= self.deadline {
                Step::TimedOut
            } else {
                Step::WaitUntil(self.deadline)
            };
        }
        let since = *self.since.get_or_insert(now);
        let stable = now - since;
        if stable >= window {
            return Step::Done(ConvergeReport { elapsed, services });
        }
        observer.converge(&ConvergeProgress {
            elapsed,
            services,
            stabilizing: Some(window - stable),
        });
        Step::WaitUntil((since + window).min(self.deadline))
    }
}
