//! A trial's progress into the store: the trial's (synchronous) observer calls become events,
//! and one writer task per trial stores them in order — log lines, and stage results with the
//! output of failed tests — and tells live views.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use seatrial_engine::{ConvergeProgress, ProgressObserver, fmt_duration};
use seatrial_store::{RunId, StageRecord};
use seatrial_trial::{StageReport, StageResult, TrialObserver};
use tokio::sync::mpsc;

use crate::serve::state::Shared;

/// Events from the trial to the store writer.
pub enum Event {
    Log(String),
    Stage(StageReport),
}

pub struct Recorder {
    tx: mpsc::UnboundedSender<Event>,
    last_progress: Mutex<Option<(Instant, String)>>,
}

impl Recorder {
    pub fn new(tx: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            tx,
            last_progress: Mutex::new(None),
        }
    }
}

impl ProgressObserver for Recorder {
    fn converge(&self, p: &ConvergeProgress) {
        let line = match p.stabilizing {
            Some(left) => format!("converged; stable in {}", fmt_duration(left)),
            None => p
                .services
                .iter()
                .map(|s| format!("{} {}/{}", s.name, s.running, s.desired))
                .collect::<Vec<_>>()
                .join(", "),
        };
        // One line per change, at most one every 2 s while nothing changes.
        let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
        let due = match &*last {
            Some((at, text)) => *text != line || at.elapsed() >= Duration::from_secs(2),
            None => true,
        };
        if due {
            let _ = self.tx.send(Event::Log(format!(
                "  waiting ({}): {line}",
                fmt_duration(p.elapsed)
            )));
            *last = Some((Instant::now(), line));
        }
    }
}

impl TrialObserver for Recorder {
    fn stage_started(&self, name: &'static str, what: &str) {
        let _ = self.tx.send(Event::Log(format!("▶ {name}: {what}")));
    }
    fn stage_finished(&self, stage: &StageReport) {
        let _ = self.tx.send(Event::Stage(stage.clone()));
    }
}

/// The store's word for a trial's stage result.
pub fn stored_result(r: StageResult) -> seatrial_store::StageResult {
    match r {
        StageResult::Pass => seatrial_store::StageResult::Pass,
        StageResult::Fail => seatrial_store::StageResult::Fail,
        StageResult::Error => seatrial_store::StageResult::Error,
        StageResult::Skipped => seatrial_store::StageResult::Skipped,
    }
}

/// The log line of a finished stage, with the output of its failed tests.
fn stage_line(stage: &StageReport) -> String {
    let mut line = format!(
        "{} {} {} ({}): {}",
        match stage.result {
            StageResult::Pass => "✓",
            StageResult::Fail => "✗",
            StageResult::Error => "!",
            StageResult::Skipped => "-",
        },
        stage.name,
        stored_result(stage.result),
        fmt_duration(Duration::from_millis(stage.duration_ms)),
        stage.detail
    );
    for t in stage.tests.iter().filter(|t| !t.passed) {
        line.push_str(&format!("\n--- {} ({}) ---", t.name, t.outcome));
        if !t.stdout.is_empty() {
            line.push_str(&format!("\nstdout:\n{}", t.stdout.trim_end()));
        }
        if !t.stderr.is_empty() {
            line.push_str(&format!("\nstderr:\n{}", t.stderr.trim_end()));
        }
    }
    line
}

/// Writes the trial's events to the store, in order, and tells live views.
pub async fn write_events(shared: &Shared, id: RunId, mut rx: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = rx.recv().await {
        let written = match event {
            Event::Log(line) => shared.store.append_log(id, &line).await.map(|_| ()),
            Event::Stage(stage) => {
                let result = stored_result(stage.result);
                shared.metrics.stage(
                    stage.name,
                    result.as_str(),
                    Duration::from_millis(stage.duration_ms),
                );
                let record = StageRecord {
                    name: stage.name.to_owned(),
                    result,
                    started_at: stage.started_at.clone(),
                    duration_ms: i64::try_from(stage.duration_ms).unwrap_or(i64::MAX),
                    detail: stage.detail.clone(),
                };
                match shared.store.record_stage(id, &record).await {
                    Ok(()) => shared
                        .store
                        .append_log(id, &stage_line(&stage))
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = written {
            tracing::error!(run = id.0, error = %e, "cannot record trial progress");
        }
        shared.changed(id);
    }
}
