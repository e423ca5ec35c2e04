//! What the store holds, as the rest of seatrial sees it: runs and their ids, modes, triggers and
//! states; stage records and log lines; the filters and counts it answers. Every word type keeps
//! the spelling it has in the database and in JSON (`as_str`, serde, `FromStr` agree).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The store's id of a run (the `runs` table's key, the API's `id`, the `/runs/{id}` in URLs).
/// Not the trial's run id (a random word in stack names and labels), which the store never
/// sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a word enum: its variants with their stored spelling, `as_str`, `Display` and a
/// `FromStr` whose error names the kind of word.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The spelling stored in the database and served in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    other => Err(StoreError::Unknown { what: $what, value: other.to_owned() }),
                }
            }
        }
    };
}

words!(
    /// A run's place in its life: `queued → running → passed | failed | errored | cancelled |
    /// timed_out`.
    RunState, "run state", {
        Queued = "queued",
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        Errored = "errored",
        Cancelled = "cancelled",
        TimedOut = "timed_out",
    }
);

impl RunState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

words!(
    /// How a recipe is tried.
    Mode, "mode", {
        /// The full trial: the previous release installed, then upgraded to the change.
        Cold = "cold",
        /// A warm copy: faster, lower confidence.
        Quick = "quick",
        /// Not a recipe trial: an app's push gate (checks, migrations, deploy, ready, rollback)
        /// run by `seatrial serve` on a push to an enrolled repository with `gate = true`.
        Gate = "gate",
    }
);

words!(
    /// What queued a run.
    Trigger, "trigger", {
        Comment = "comment",
        Push = "push",
        Schedule = "schedule",
        Manual = "manual",
        Api = "api",
    }
);

words!(
    /// How one stage of a trial ended.
    StageResult, "stage result", {
        Pass = "pass",
        Fail = "fail",
        Error = "error",
        Skipped = "skipped",
    }
);

/// What a caller asks to run.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// A recipe directory or git URL.
    pub recipe: String,
    pub reference: Option<String>,
    /// The forge repository, `owner/name`.
    pub repo: Option<String>,
    pub pr_number: Option<i64>,
    pub commit_sha: Option<String>,
    pub mode: Mode,
    pub trigger: Trigger,
    pub requested_by: Option<String>,
    /// Overrides the server's run timeout.
    pub timeout_secs: Option<i64>,
    /// The recipe's directory inside the repository (`None`: its root); for a gate run, its
    /// gate config file inside the repository (`None`: `gate.toml`).
    pub recipe_path: Option<String>,
    /// The probe settings the run is tried with (JSON, the server's format).
    pub probe: Option<String>,
    /// When the trial passes, keep its data as the recipe's warm canonical (a cold trial of the
    /// recipe's latest release).
    pub promote: bool,
    /// The run's first log line, written with the run: who or what queued it, and through
    /// which HTTP request (`request <id>`) when one did.
    pub note: Option<String>,
}

impl NewRun {
    /// A run of `recipe` with nothing else set.
    pub fn new(recipe: impl Into<String>, mode: Mode, trigger: Trigger) -> Self {
        Self {
            recipe: recipe.into(),
            reference: None,
            repo: None,
            pr_number: None,
            commit_sha: None,
            mode,
            trigger,
            requested_by: None,
            timeout_secs: None,
            recipe_path: None,
            probe: None,
            promote: false,
            note: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: RunId,
    pub recipe: String,
    pub reference: Option<String>,
    pub repo: Option<String>,
    pub pr_number: Option<i64>,
    pub commit_sha: Option<String>,
    pub mode: Mode,
    pub trigger: Trigger,
    pub requested_by: Option<String>,
    pub state: RunState,
    /// How many times it was claimed (2 after a crashed server's run was re-queued).
    pub attempt: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub cancel_requested: bool,
    pub stack: Option<String>,
    /// Why it failed, errored, was cancelled, timed out or was re-queued.
    pub reason: Option<String>,
    pub timeout_secs: Option<i64>,
    /// The recipe's directory inside the repository, fixed when queued.
    pub recipe_path: Option<String>,
    /// The probe settings fixed when queued (JSON); `None` for runs queued before they were
    /// stored.
    pub probe: Option<String>,
    /// Keeps its data as the recipe's warm canonical when it passes.
    pub promote: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub result: StageResult,
    pub started_at: String,
    pub duration_ms: i64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogChunk {
    pub seq: i64,
    pub at_ms: i64,
    pub text: String,
}

/// Which runs `list` returns: newest first, `limit` at a time, older than `before_id`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub recipe: Option<String>,
    pub state: Option<RunState>,
    pub mode: Option<Mode>,
    pub before_id: Option<RunId>,
    /// 0 means 50; at most 500.
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub queued: i64,
    pub running: i64,
    pub active_leases: i64,
    /// (state, mode, count)
    pub by_state_and_mode: Vec<(RunState, Mode, i64)>,
    /// When the run waiting longest was queued (ms since the epoch); `None`: nothing waits.
    pub oldest_queued_at_ms: Option<i64>,
    /// The newest finished runs, of any recipe, that failed, errored or timed out, counted back
    /// to the last one that passed (cancelled runs are passed over), at most
    /// [`FAILING_STREAK_LIMIT`].
    pub failing_in_a_row: i64,
}

/// How far back [`Stats::failing_in_a_row`] counts.
pub const FAILING_STREAK_LIMIT: i64 = 100;

/// What `reap_expired` did with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    Requeued,
    Errored,
    /// Its cancel had been asked for: it ends cancelled rather than running again.
    Cancelled,
}

/// Where a run reports back on the forge, and what it last reported there.
#[derive(Debug, Clone)]
pub struct ForgeReport {
    pub run: Run,
    /// The forge repository, `owner/name`.
    pub repo: String,
    pub pr_number: i64,
    /// The commit whose status it sets.
    pub sha: String,
    /// Its comment on the pull request, once posted.
    pub comment_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().expect("parses"), *s);
            assert_eq!(
                serde_json::to_value(s).expect("serializes"),
                serde_json::json!(s.as_str())
            );
        }
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().expect("parses"), *m);
        }
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>().expect("parses"), *t);
        }
        for r in StageResult::ALL {
            assert_eq!(r.as_str().parse::<StageResult>().expect("parses"), *r);
        }
        assert_eq!(RunState::TimedOut.as_str(), "timed_out");
        assert!("done".parse::<RunState>().is_err());
        assert!("warm".parse::<Mode>().is_err());
        assert_eq!(
            serde_json::to_value(RunId(7)).expect("id"),
            serde_json::json!(7)
        );
    }
}
