//! What the JSON API and the dashboard both show of runs: the list query a page or a request
//! gives, the store filter it means, and how times are written.

use seatrial_store::{Mode, RunFilter, RunId, RunState};
use serde::Deserialize;

/// Milliseconds since the epoch as RFC 3339 UTC, to the second.
pub fn ms_rfc3339(ms: i64) -> String {
    seatrial_engine::labels::rfc3339(u64::try_from(ms / 1000).unwrap_or(0))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    pub recipe: Option<String>,
    pub state: Option<String>,
    pub mode: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

pub fn filter_of(q: &ListQuery) -> Result<RunFilter, String> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            format!("unknown state {s:?}: use queued, running, passed, failed, errored, cancelled or timed_out")
        })?),
    };
    let mode = match q.mode.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(m) => Some(
            m.parse::<Mode>()
                .map_err(|_| format!("unknown mode {m:?}: use cold, quick or gate"))?,
        ),
    };
    Ok(RunFilter {
        recipe: q.recipe.clone().filter(|s| !s.is_empty()),
        state,
        mode,
        before_id: q.before.map(RunId),
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    })
}
