//! The nightly job (`[schedule] nightly`): reconcile the config's `[[infra]]` apps, then the
//! cold sweep (`sweep`: a promoting cold trial of each enrolled recipe's latest release, which
//! keeps the warm canonicals fresh).
//!
//! It never starts while a trial runs here: once due, the queue runner claims nothing more, and
//! the job takes the server's whole capacity as the running trials end; it holds it until it is
//! done (queued runs wait, in order). What it did is remembered in `<data dir>/nightly.json`, so
//! a server that was down at the nightly time — or stopped during the job — runs one at start.

mod sweep;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::schedule::{
    self, AtStart, InfraResult, NightlyOutcome, NightlyRecord, RecordFile, Schedule,
};
use super::state::Shared;

/// Runs the nightly job at each nightly time until shutdown (at once first, when one was missed).
pub async fn run_loop(shared: Arc<Shared>) {
    let Some(schedule) = shared.config.schedule.clone() else {
        return;
    };
    let file = RecordFile::new(&shared.config.data_dir);
    let mut record = file.load().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the nightly record is unreadable; starting it afresh");
        NightlyRecord::default()
    });
    let now = Timestamp::now();
    if record.armed_at.is_none() {
        record.armed_at = Some(now);
        if let Err(e) = file.save(&record) {
            tracing::error!(error = %e, "cannot record the nightly schedule");
        }
    }
    shared.nightly_status(|s| s.record = record.clone());
    let mut due = match schedule::at_start(&record, now, &schedule) {
        AtStart::Wait => false,
        AtStart::CatchUp { missed } => {
            tracing::info!(missed = %schedule.local(missed), "the server was down at the nightly time: running the nightly job now");
            true
        }
        AtStart::Resume { started } => {
            tracing::info!(started = %schedule.local(started), "the last nightly job never finished: running it again now");
            true
        }
    };
    loop {
        if !due {
            let Some(next) = schedule.next_after(Timestamp::now()) else {
                tracing::error!(schedule = %schedule.nightly, "the schedule fires no more; no nightly job");
                return;
            };
            shared.nightly_status(|s| s.next = Some(next));
            tracing::info!(next = %schedule.local(next), "next nightly job");
            if !sleep_until(next, &shared.shutdown).await {
                return;
            }
        }
        due = false;
        run_once(&shared, &schedule, &file).await;
        if shared.shutdown.is_cancelled() {
            return;
        }
    }
}

/// Waits until the wall clock reaches `at` (re-reading it at least every minute, so a clock
/// that jumps is followed); `false` on shutdown.
async fn sleep_until(at: Timestamp, shutdown: &CancellationToken) -> bool {
    loop {
        let left = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// One nightly job: waits for the capacity, holds it while it reconciles and sweeps, records it.
pub async fn run_once(shared: &Arc<Shared>, schedule: &Schedule, file: &RecordFile) {
    shared.set_nightly_holds(true);
    let phase = |p: &str| {
        let p = p.to_owned();
        shared.nightly_status(move |s| s.phase = Some(p));
    };
    phase("waiting for the running trials to end");
    let capacity = u32::try_from(shared.config.capacity).unwrap_or(u32::MAX);
    let held = tokio::select! {
        p = shared.slots.clone().acquire_many_owned(capacity) => p.ok(),
        () = shared.shutdown.cancelled() => None,
    };
    if let Some(_held) = held {
        let started = Timestamp::now();
        let mut record = file.load().unwrap_or_default();
        record.armed_at.get_or_insert(started);
        record.last_started_at = Some(started);
        save(shared, file, &record);
        tracing::info!(at = %schedule.local(started), "nightly job starts");
        // After shutdown the job starts nothing new; what runs gets the shutdown grace, then is
        // cancelled (with teardown) like the queue's trials.
        let grace = {
            let shared = shared.clone();
            tokio::spawn(async move {
                shared.shutdown.cancelled().await;
                tokio::time::sleep(shared.config.shutdown_grace).await;
                shared.cancel_all_running();
            })
        };
        let outcome = work(shared, &phase).await;
        grace.abort();
        if shared.shutdown.is_cancelled() {
            // Unfinished: the next start runs it again.
            tracing::warn!("nightly job stopped by the shutdown; it runs again at the next start");
        } else {
            let finished = Timestamp::now();
            record.last_finished_at = Some(finished);
            record.last = Some(outcome);
            save(shared, file, &record);
            let took = Duration::try_from(finished.duration_since(started)).unwrap_or_default();
            tracing::info!(took = %seatrial_engine::fmt_duration(took), success = record.last_success().is_some(), "nightly job done");
        }
    }
    shared.nightly_status(|s| s.phase = None);
    shared.set_nightly_holds(false);
}

fn save(shared: &Shared, file: &RecordFile, record: &NightlyRecord) {
    if let Err(e) = file.save(record) {
        tracing::error!(error = %e, "cannot record the nightly job");
    }
    shared.nightly_status(|s| s.record = record.clone());
}

/// Reconcile, then the sweep; each part stops at shutdown before starting anything new.
async fn work(shared: &Arc<Shared>, phase: &(dyn Fn(&str) + Send + Sync)) -> NightlyOutcome {
    let mut outcome = NightlyOutcome::default();
    let engine = match shared.engine().await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "nightly job: the engine is unreachable; nothing done");
            for app in &shared.config.infra.apps {
                outcome.infra.push(InfraResult {
                    app: app.name.clone(),
                    action: "failed".into(),
                    reason: format!("the engine is unreachable: {e}"),
                });
            }
            return outcome;
        }
    };
    let progress = |app: &str, line: &str| tracing::info!(app, "{line}");
    for app in &shared.config.infra.apps {
        if shared.shutdown.is_cancelled() {
            return outcome;
        }
        phase(&format!("reconciling {}", app.name));
        let pass = crate::infra::Pass {
            only: Some(&app.name),
            dry_run: false,
            retry: &[],
            data_dir: shared.config.data_dir.clone(),
        };
        let done = crate::infra::reconcile_all(
            engine.as_ref(),
            &shared.config.infra,
            &pass,
            &progress,
            &shared.stop_now,
        )
        .await;
        for o in done {
            tracing::info!(app = %o.name, action = o.action.as_str(), reason = %o.reason, "reconciled");
            outcome.infra.push(InfraResult {
                app: o.name,
                action: o.action.as_str().to_owned(),
                reason: o.reason,
            });
        }
    }
    outcome.sweep = sweep::run(shared, &engine, phase).await;
    outcome
}
