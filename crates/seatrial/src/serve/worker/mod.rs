//! The queue runner: claims runs with a lease (bounded by `capacity`, and not while the nightly
//! job is due or running) and runs each as a trial (`trial`) or, for mode `gate`, as an app's
//! push gate (`gate`), recording its progress (`recorder`), until shutdown, which lets running trials finish within a grace period. A
//! reaper (`reaper`) re-queues (once) or errors the runs of servers that died, after removing
//! what they left on the engine.

mod gate;
mod reaper;
mod recorder;
mod trial;

use std::sync::Arc;
use std::time::Duration;
pub(crate) use trial::run as run_trial;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use seatrial_engine::fmt_duration;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::forge::ForgeLink;
use super::state::Shared;

pub use reaper::{reap_loop, reap_once};

/// A run is tried at most this many times (a crash of its server re-queues it once).
pub const MAX_ATTEMPTS: i64 = 2;

/// How long the queue runner waits for an unreachable engine before asking again: from 1 s,
/// doubling (jittered) to at most 30 s while it stays unreachable.
fn engine_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Claims and runs trials until shutdown; then lets running trials finish within the grace
/// period, and cancels (with teardown) the ones still running after it.
/// `forge`: where gate runs set their commit status.
pub async fn run_queue(shared: Arc<Shared>, forge: Option<Arc<ForgeLink>>) {
    let slots = shared.slots.clone();
    let mut trials = JoinSet::new();
    // Set while the engine is unreachable; reset once it answers.
    let mut unreachable: Option<ExponentialBackoff> = None;
    loop {
        while trials.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shared.shutdown.cancelled() => break,
        };
        if shared.nightly_holds() {
            // The nightly job is due or running: it takes the whole capacity once the trials
            // running now end; queued runs wait for it.
            drop(permit);
            pause(&shared, shared.config.poll_interval).await;
            continue;
        }
        let engine = match shared.engine().await {
            Ok(e) => {
                unreachable = None;
                e
            }
            Err(e) => {
                let wait = unreachable
                    .get_or_insert_with(engine_backoff)
                    .next()
                    .unwrap_or(Duration::from_secs(30));
                tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "the engine is unreachable; not claiming runs until it answers");
                drop(permit);
                pause(&shared, wait).await;
                continue;
            }
        };
        match shared.store.claim(&shared.owner, shared.config.lease).await {
            Ok(Some(run)) => {
                tracing::info!(run = run.id.0, recipe = %run.recipe, attempt = run.attempt, "claimed");
                shared.changed(run.id);
                let shared = shared.clone();
                let forge = forge.clone();
                let span = tracing::info_span!("trial", run = run.id.0);
                trials.spawn(
                    async move {
                        if run.mode == seatrial_store::Mode::Gate {
                            gate::run(&shared, forge.as_deref(), run).await;
                        } else {
                            trial::run(&shared, &engine, run).await;
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Ok(None) => {
                drop(permit);
                pause(&shared, shared.config.poll_interval).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a run");
                drop(permit);
                pause(&shared, shared.config.poll_interval).await;
            }
        }
    }
    if trials.is_empty() {
        return;
    }
    tracing::info!(
        running = trials.len(),
        grace = %fmt_duration(shared.config.shutdown_grace),
        "shutting down: letting running trials finish"
    );
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = trials.join_next() => if next.is_none() { return },
            () = &mut grace => break,
        }
    }
    tracing::warn!(
        running = trials.len(),
        "grace period over: cancelling the running trials (with teardown)"
    );
    shared.cancel_all_running();
    while trials.join_next().await.is_some() {}
}

/// Waits for new work, a poll interval, or shutdown.
async fn pause(shared: &Shared, interval: Duration) {
    tokio::select! {
        () = shared.wake.notified() => {},
        () = tokio::time::sleep(interval) => {},
        () = shared.shutdown.cancelled() => {},
    }
}
