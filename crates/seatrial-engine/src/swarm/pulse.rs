//! Waking up when the engine reports a change to a stack, with a bounded polling fallback.
//!
//! Events only say "look again": every decision is made from a fresh inspection, so a missed or
//! reordered event costs at most one polling interval, never a wrong answer.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::labels::STACK_NAMESPACE;

/// First polling interval after a change; doubles up to [`MAX_POLL`].
const MIN_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

pub(crate) struct Pulse {
    rx: mpsc::Receiver<()>,
    reader: JoinHandle<()>,
    poll: Duration,
    max_poll: Duration,
}

/// The polling interval while tasks run on other nodes: their containers' events reach only
/// their own engine, so nothing wakes this one up when they change.
pub(crate) const REMOTE_POLL: Duration = Duration::from_millis(250);

impl Pulse {
    /// Subscribes to service, container, network and volume events that concern `stack`.
    pub(crate) fn start(docker: &Docker, stack: &str) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let docker = docker.clone();
        let prefix = format!("{stack}_");
        let stack = stack.to_owned();
        let reader = tokio::spawn(async move {
            let options = EventsOptions {
                filters: Some(
                    [(
                        "type".to_owned(),
                        ["service", "container", "network", "volume"]
                            .map(str::to_owned)
                            .to_vec(),
                    )]
                    .into(),
                ),
                ..Default::default()
            };
            let mut events = docker.events(Some(options));
            while let Some(Ok(event)) = events.next().await {
                let attrs = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                let relevant = attrs.get(STACK_NAMESPACE).is_some_and(|s| *s == stack)
                    || attrs.get("name").is_some_and(|n| n.starts_with(&prefix));
                if relevant {
                    // A full channel already holds a wake-up: coalesce.
                    let _ = tx.try_send(());
                }
            }
            // Stream ended (engine restarted?): polling carries on alone.
        });
        Self {
            rx,
            reader,
            poll: MIN_POLL,
            max_poll: MAX_POLL,
        }
    }

    /// Polls at least every `interval` from now on (for stacks with tasks on other nodes).
    pub(crate) fn poll_at_most(&mut self, interval: Duration) {
        self.max_poll = interval.min(MAX_POLL);
        self.poll = self.poll.min(self.max_poll);
    }

    /// Waits for a relevant event, the next poll, or `until`, whichever comes first.
    pub(crate) async fn wait(&mut self, until: Instant) {
        let poll_at = Instant::now() + self.poll;
        tokio::select! {
            got = self.rx.recv() => {
                if got.is_some() {
                    // Something changed: look now, then soon again (the swarm applies
                    // task state a moment after the container event).
                    self.poll = MIN_POLL;
                } else {
                    tokio::time::sleep_until(poll_at.min(until)).await;
                }
            }
            _ = tokio::time::sleep_until(poll_at.min(until)) => {
                self.poll = (self.poll * 2).min(self.max_poll);
            }
        }
    }
}

impl Pulse {
    /// Waits until `quiet` passes without a relevant event (`true`), or an event arrives
    /// (`false`: look again). Past `until` it answers `true` at once: the caller's deadline
    /// decides then.
    pub(crate) async fn quiet_for(&mut self, quiet: Duration, until: Instant) -> bool {
        // Events that arrived before this moment were already looked at by the caller.
        while self.rx.try_recv().is_ok() {}
        let end = (Instant::now() + quiet).min(until);
        tokio::select! {
            got = self.rx.recv() => {
                if got.is_some() {
                    self.poll = MIN_POLL;
                    false
                } else {
                    // The event stream ended: only the quiet time itself is left to go by.
                    tokio::time::sleep_until(end).await;
                    true
                }
            }
            () = tokio::time::sleep_until(end) => true,
        }
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
