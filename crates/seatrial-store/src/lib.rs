//! The store — the only crate with SQL: runs and their queue (states, leases, heartbeats), stage
//! results, log lines, and the forge's state (polling cursors, seen comments, reports). SQLite by
//! default (one file, WAL), PostgreSQL when the URL says so; one API, the same SQL wherever the
//! two agree. No database driver type crosses this crate's edge.
//!
//! - `model`: the types callers see (runs, ids, words, records, filters).
//! - `pool`: opening, migrating, the database's clock.
//! - `runs`: queueing, reading and listing runs; counts.
//! - `queue`: claims, leases and heartbeats, verdicts, cancellation, reaping.
//! - `logs`: stage results and log lines.
//! - `forge`: polling cursors, seen comments, forge reports.

mod error;
mod forge;
mod logs;
mod model;
mod pool;
mod queue;
mod runs;

pub use error::StoreError;
pub use model::{
    FAILING_STREAK_LIMIT, ForgeReport, LogChunk, Mode, NewRun, Reaped, Run, RunFilter, RunId,
    RunState, StageRecord, StageResult, Stats, Trigger,
};
pub use pool::redact;

/// A handle on the database; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: pool::Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend())
    }
}
