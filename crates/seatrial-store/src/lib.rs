//! The store — the only crate with SQL: runs and their queue (states, leases, heartbeats), stage
//! results, log lines, and seen forge comments. SQLite by default (one file, WAL), PostgreSQL when
//! the URL says so; one API, the same SQL wherever the two agree.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// What went wrong, with which database, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database {url}: {message} (check SEATRIAL_DATABASE_URL / database_url)"
    )]
    Open { url: String, message: String },
    #[error("cannot migrate the database {url}: {message}")]
    Migrate { url: String, message: String },
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database holds a run state seatrial does not know: {0:?}")]
    BadState(String),
}

fn query_error(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

/// A run's place in its life: `queued → running → passed | failed | errored | cancelled | timed_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Passed,
    Failed,
    Errored,
    Cancelled,
    TimedOut,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Errored => "errored",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl FromStr for RunState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "passed" => Self::Passed,
            "failed" => Self::Failed,
            "errored" => Self::Errored,
            "cancelled" => Self::Cancelled,
            "timed_out" => Self::TimedOut,
            other => return Err(StoreError::BadState(other.to_owned())),
        })
    }
}

/// What a caller asks to run.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// A recipe directory or git URL.
    pub recipe: String,
    pub reference: Option<String>,
    /// The forge repository, `owner/name`.
    pub repo: Option<String>,
    pub pr_number: Option<i64>,
    pub commit_sha: Option<String>,
    /// `cold` or `quick`.
    pub mode: String,
    /// `comment`, `push`, `schedule`, `manual` or `api`.
    pub trigger: String,
    pub requested_by: Option<String>,
    /// Overrides the server's run timeout.
    pub timeout_secs: Option<i64>,
    /// The recipe's directory inside the repository (`None`: its root).
    pub recipe_path: Option<String>,
    /// The probe settings the run is tried with (JSON, the server's format).
    pub probe: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub recipe: String,
    pub reference: Option<String>,
    pub repo: Option<String>,
    pub pr_number: Option<i64>,
    pub commit_sha: Option<String>,
    pub mode: String,
    pub trigger: String,
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
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    recipe: String,
    reference: Option<String>,
    repo: Option<String>,
    pr_number: Option<i64>,
    commit_sha: Option<String>,
    mode: String,
    trigger_kind: String,
    requested_by: Option<String>,
    state: String,
    attempt: i64,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at_ms: Option<i64>,
    cancel_requested: bool,
    stack: Option<String>,
    reason: Option<String>,
    timeout_secs: Option<i64>,
    recipe_path: Option<String>,
    probe: Option<String>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            recipe: r.recipe,
            reference: r.reference,
            repo: r.repo,
            pr_number: r.pr_number,
            commit_sha: r.commit_sha,
            mode: r.mode,
            trigger: r.trigger_kind,
            requested_by: r.requested_by,
            state: r.state.parse()?,
            attempt: r.attempt,
            created_at_ms: r.created_at_ms,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            lease_owner: r.lease_owner,
            lease_expires_at_ms: r.lease_expires_at_ms,
            cancel_requested: r.cancel_requested,
            stack: r.stack,
            reason: r.reason,
            timeout_secs: r.timeout_secs,
            recipe_path: r.recipe_path,
            probe: r.probe,
        })
    }
}

fn runs(rows: Vec<RunRow>) -> Result<Vec<Run>, StoreError> {
    rows.into_iter().map(Run::try_from).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StageRecord {
    pub name: String,
    pub result: String,
    pub started_at: String,
    pub duration_ms: i64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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
    pub mode: Option<String>,
    pub before_id: Option<i64>,
    /// 0 means 50; at most 500.
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub queued: i64,
    pub running: i64,
    pub active_leases: i64,
    /// (state, mode, count)
    pub by_state_and_mode: Vec<(String, String, i64)>,
}

/// What `reap_expired` did with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    Requeued,
    Errored,
    /// Its cancel had been asked for: it ends cancelled rather than running again.
    Cancelled,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs one body against whichever pool the store has (the SQL is shared).
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The database's own clock in milliseconds since the epoch, as SQL. Leases are measured by it
/// alone, so servers whose clocks disagree never reap each other's healthy runs.
fn db_now_sql(pool: &Pool) -> &'static str {
    match pool {
        Pool::Sqlite(_) => "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
        Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

const RUN_COLUMNS: &str = "id, recipe, reference, repo, pr_number, commit_sha, mode, trigger_kind, requested_by, state, attempt, created_at_ms, started_at_ms, finished_at_ms, lease_owner, lease_expires_at_ms, cancel_requested, stack, reason, timeout_secs, recipe_path, probe";

impl Store {
    /// Opens (creating, for SQLite) and migrates the database: `sqlite://<path>` or
    /// `sqlite:<path>`, or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let open_err = |message: String| StoreError::Open {
            url: shown.clone(),
            message,
        };
        let pool = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = PathBuf::from(path.split('?').next().unwrap_or(path));
            if path.as_os_str().is_empty() {
                return Err(open_err("no file path after `sqlite://`".into()));
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    open_err(format!(
                        "cannot create the directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|e| open_err(e.to_string()))?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|e| StoreError::Migrate {
                    url: shown.clone(),
                    message: e.to_string(),
                })?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| open_err(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|e| open_err(e.to_string()))?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| StoreError::Migrate {
                    url: shown.clone(),
                    message: e.to_string(),
                })?;
            Pool::Postgres(pool)
        } else {
            return Err(open_err(
                "unknown kind of database: use sqlite://<path> or postgres://user:password@host/db"
                    .into(),
            ));
        };
        Ok(Self { pool })
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
            .map_err(query_error("pinging the database"))
    }

    pub async fn enqueue(&self, new: &NewRun) -> Result<Run, StoreError> {
        let sql = format!(
            "INSERT INTO runs (recipe, reference, repo, pr_number, commit_sha, mode, trigger_kind, requested_by, state, attempt, created_at_ms, timeout_secs, recipe_path, probe) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11, $12) RETURNING {RUN_COLUMNS}"
        );
        let row: RunRow = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(&new.recipe)
            .bind(&new.reference)
            .bind(&new.repo)
            .bind(new.pr_number)
            .bind(&new.commit_sha)
            .bind(&new.mode)
            .bind(&new.trigger)
            .bind(&new.requested_by)
            .bind(now_ms())
            .bind(new.timeout_secs)
            .bind(&new.recipe_path)
            .bind(&new.probe)
            .fetch_one(p)
            .await)
        .map_err(query_error("queueing a run"))?;
        row.try_into()
    }

    pub async fn get(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row: Option<RunRow> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)
                .map_err(query_error("reading a run"))?;
        row.map(Run::try_from).transpose()
    }

    pub async fn list(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let limit = match filter.limit {
            0 => 50,
            n => n.clamp(1, 500),
        };
        // Only the filters given, so the (state, id) / (recipe, id) / (mode, id) indexes serve.
        let mut clauses = Vec::new();
        let mut n = 0;
        let mut next = |column: &str, op: &str| {
            n += 1;
            clauses.push(format!("{column} {op} ${n}"));
        };
        if filter.recipe.is_some() {
            next("recipe", "=");
        }
        if filter.state.is_some() {
            next("state", "=");
        }
        if filter.mode.is_some() {
            next("mode", "=");
        }
        if filter.before_id.is_some() {
            next("id", "<");
        }
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs {} ORDER BY id DESC LIMIT ${}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            },
            n + 1
        );
        let rows: Vec<RunRow> = on_pool!(self, p => {
            let mut q = sqlx::query_as(&sql);
            if let Some(r) = &filter.recipe {
                q = q.bind(r);
            }
            if let Some(st) = filter.state {
                q = q.bind(st.as_str());
            }
            if let Some(m) = &filter.mode {
                q = q.bind(m);
            }
            if let Some(b) = filter.before_id {
                q = q.bind(b);
            }
            q.bind(limit).fetch_all(p).await
        })
        .map_err(query_error("listing runs"))?;
        runs(rows)
    }

    /// Queued runs in the order they will be claimed.
    pub async fn queue(&self) -> Result<Vec<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'queued' ORDER BY id");
        let rows: Vec<RunRow> = on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)
            .map_err(query_error("reading the queue"))?;
        runs(rows)
    }

    /// Queue positions (1 = next to be claimed) of those of `runs` that are queued, without
    /// reading the whole queue: one indexed count before the first of them, and the queued ids
    /// between the first and the last of them.
    pub async fn queue_positions(
        &self,
        runs: &[Run],
    ) -> Result<std::collections::HashMap<i64, usize>, StoreError> {
        let queued: Vec<i64> = runs
            .iter()
            .filter(|r| r.state == RunState::Queued)
            .map(|r| r.id)
            .collect();
        let (Some(&low), Some(&high)) = (queued.iter().min(), queued.iter().max()) else {
            return Ok(std::collections::HashMap::new());
        };
        let before: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE state = 'queued' AND id < $1",
        )
        .bind(low)
        .fetch_one(p)
        .await)
        .map_err(query_error("reading queue positions"))?;
        let span: Vec<i64> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM runs WHERE state = 'queued' AND id >= $1 AND id <= $2 ORDER BY id",
        )
        .bind(low)
        .bind(high)
        .fetch_all(p)
        .await)
        .map_err(query_error("reading queue positions"))?;
        let before = usize::try_from(before).unwrap_or(0);
        Ok(span
            .into_iter()
            .enumerate()
            .filter(|(_, id)| queued.contains(id))
            .map(|(i, id)| (id, before + i + 1))
            .collect())
    }

    /// Takes the oldest queued run for `owner`, leased for `lease`. Two claimers never get the
    /// same run: one statement on SQLite (writers are serialized), `FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL.
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Run>, StoreError> {
        let lock = match self.pool {
            Pool::Sqlite(_) => "",
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let db_now = db_now_sql(&self.pool);
        let sql = format!(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, lease_owner = $1, \
               lease_expires_at_ms = {db_now} + $2, started_at_ms = $3, reason = NULL \
             WHERE id = (SELECT id FROM runs WHERE state = 'queued' ORDER BY id LIMIT 1{lock}) \
               AND state = 'queued' \
             RETURNING {RUN_COLUMNS}"
        );
        let now = now_ms();
        let row: Option<RunRow> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(owner)
            .bind(ms(lease))
            .bind(now)
            .fetch_optional(p)
            .await)
        .map_err(query_error("claiming a run"))?;
        row.map(Run::try_from).transpose()
    }

    /// Extends the lease; `false` when the run is no longer this owner's (reaped, finished).
    pub async fn heartbeat(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE runs SET lease_expires_at_ms = {} + $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            db_now_sql(&self.pool)
        );
        let done = on_pool!(self, p => sqlx::query(&sql)
            .bind(id)
            .bind(owner)
            .bind(ms(lease))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(query_error("renewing a lease"))?;
        Ok(done == 1)
    }

    /// Ends a running run owned by `owner`; `false` when it is not (any longer) its own.
    pub async fn finish(
        &self,
        id: i64,
        owner: &str,
        state: RunState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE runs SET state = $3, reason = $4, finished_at_ms = $5, lease_owner = NULL, lease_expires_at_ms = NULL \
                   WHERE id = $1 AND lease_owner = $2 AND state = 'running'";
        let done = on_pool!(self, p => sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .bind(state.as_str())
            .bind(reason)
            .bind(now_ms())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(query_error("recording a verdict"))?;
        Ok(done == 1)
    }

    pub async fn set_stack(&self, id: i64, stack: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("UPDATE runs SET stack = $2 WHERE id = $1")
            .bind(id)
            .bind(stack)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(query_error("recording a run's stack"))
    }

    pub async fn record_stage(&self, id: i64, stage: &StageRecord) -> Result<(), StoreError> {
        let sql = "INSERT INTO stages (run_id, seq, name, result, started_at, duration_ms, detail) \
                   SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM stages WHERE run_id = $1";
        on_pool!(self, p => sqlx::query(sql)
            .bind(id)
            .bind(&stage.name)
            .bind(&stage.result)
            .bind(&stage.started_at)
            .bind(stage.duration_ms)
            .bind(&stage.detail)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(query_error("recording a stage"))
    }

    pub async fn stages(&self, id: i64) -> Result<Vec<StageRecord>, StoreError> {
        let sql = "SELECT name, result, started_at, duration_ms, detail FROM stages WHERE run_id = $1 ORDER BY seq";
        on_pool!(self, p => sqlx::query_as(sql).bind(id).fetch_all(p).await)
            .map_err(query_error("reading stages"))
    }

    /// Appends a log line (or block) to a run; returns its sequence number (1, 2, 3, …).
    pub async fn append_log(&self, id: i64, text: &str) -> Result<i64, StoreError> {
        let sql = "INSERT INTO logs (run_id, seq, at_ms, text) \
                   SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM logs WHERE run_id = $1 RETURNING seq";
        on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(id)
            .bind(now_ms())
            .bind(text)
            .fetch_one(p)
            .await)
        .map_err(query_error("appending to a run's log"))
    }

    pub async fn logs_since(
        &self,
        id: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogChunk>, StoreError> {
        let sql = "SELECT seq, at_ms, text FROM logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        on_pool!(self, p => sqlx::query_as(sql)
            .bind(id)
            .bind(after_seq)
            .bind(limit.max(1))
            .fetch_all(p)
            .await)
        .map_err(query_error("reading a run's log"))
    }

    /// A queued run is cancelled at once; a running one is asked to stop (its server sees
    /// `cancel_requested`); a finished one is left as it is. `None`: no such run.
    pub async fn request_cancel(
        &self,
        id: i64,
        by: Option<&str>,
    ) -> Result<Option<Run>, StoreError> {
        let reason = match by {
            Some(who) => format!("cancelled by {who} before it started"),
            None => "cancelled before it started".to_owned(),
        };
        on_pool!(self, p => sqlx::query(
            "UPDATE runs SET state = 'cancelled', finished_at_ms = $2, reason = $3 WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now_ms())
        .bind(&reason)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("cancelling a run"))?;
        on_pool!(self, p => sqlx::query(
            "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("cancelling a run"))?;
        self.get(id).await
    }

    /// Runs whose lease expired (their server stopped heartbeating) go back to the queue while
    /// `attempt < max_attempts`, else end `errored`; runs whose cancel was asked end
    /// `cancelled`. One statement, so with several servers reaping each run is reaped once.
    pub async fn reap_expired(&self, max_attempts: i64) -> Result<Vec<(Run, Reaped)>, StoreError> {
        let sql = format!(
            "UPDATE runs SET \
               state = CASE WHEN cancel_requested THEN 'cancelled' WHEN attempt < $1 THEN 'queued' ELSE 'errored' END, \
               reason = CASE \
                 WHEN cancel_requested THEN 'cancelled; its server (' || COALESCE(lease_owner, '?') || ') stopped before it ended' \
                 WHEN attempt < $1 THEN 'lease of ' || COALESCE(lease_owner, '?') || ' expired; re-queued' \
                 ELSE 'lease of ' || COALESCE(lease_owner, '?') || ' expired on attempt ' || CAST(attempt AS TEXT) || '; not retried' END, \
               finished_at_ms = CASE WHEN cancel_requested OR attempt >= $1 THEN $2 ELSE NULL END, \
               lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE state = 'running' AND lease_expires_at_ms < {db_now} \
             RETURNING {RUN_COLUMNS}",
            db_now = db_now_sql(&self.pool)
        );
        let rows: Vec<RunRow> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(max_attempts)
            .bind(now_ms())
            .fetch_all(p)
            .await)
        .map_err(query_error("reaping runs with expired leases"))?;
        runs(rows).map(|runs| {
            runs.into_iter()
                .map(|r| {
                    let what = match r.state {
                        RunState::Queued => Reaped::Requeued,
                        RunState::Cancelled => Reaped::Cancelled,
                        _ => Reaped::Errored,
                    };
                    (r, what)
                })
                .collect()
        })
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let groups: Vec<(String, String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT state, mode, COUNT(*) FROM runs GROUP BY state, mode ORDER BY state, mode",
        )
        .fetch_all(p)
        .await)
        .map_err(query_error("counting runs"))?;
        let sql = format!(
            "SELECT COUNT(*) FROM runs WHERE state = 'running' AND lease_expires_at_ms >= {}",
            db_now_sql(&self.pool)
        );
        let active_leases: i64 = on_pool!(self, p => sqlx::query_scalar(&sql)
        .fetch_one(p)
        .await)
        .map_err(query_error("counting leases"))?;
        let sum = |state: &str| {
            groups
                .iter()
                .filter(|(s, _, _)| s == state)
                .map(|(_, _, n)| n)
                .sum()
        };
        Ok(Stats {
            queued: sum("queued"),
            running: sum("running"),
            active_leases,
            by_state_and_mode: groups,
        })
    }

    /// Whether the run that made `stack` is alive: `Some(true)` while it runs under a lease that
    /// holds by the database's clock, `Some(false)` when it ended or its lease expired, `None`
    /// when no run of this store made the stack.
    pub async fn stack_alive(&self, stack: &str) -> Result<Option<bool>, StoreError> {
        let sql = format!(
            "SELECT state = 'running' AND lease_expires_at_ms >= {} FROM runs WHERE stack = $1 ORDER BY id DESC LIMIT 1",
            db_now_sql(&self.pool)
        );
        let alive: Option<Option<bool>> = on_pool!(self, p => sqlx::query_scalar(&sql)
            .bind(stack)
            .fetch_optional(p)
            .await)
        .map_err(query_error("asking whether a run is alive"))?;
        Ok(alive.map(|a| a.unwrap_or(false)))
    }

    /// The polling cursor of a repository: `None` until its first poll.
    pub async fn forge_cursor(&self, repo: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, p => sqlx::query_scalar("SELECT since FROM forge_cursors WHERE repo = $1")
            .bind(repo)
            .fetch_optional(p)
            .await)
        .map_err(query_error("reading a polling cursor"))
    }

    pub async fn set_forge_cursor(&self, repo: &str, since: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO forge_cursors (repo, since) VALUES ($1, $2) ON CONFLICT (repo) DO UPDATE SET since = EXCLUDED.since",
        )
        .bind(repo)
        .bind(since)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("saving a polling cursor"))
    }

    /// Records where run `id` reports back (its PR and head commit).
    pub async fn add_forge_report(
        &self,
        id: i64,
        repo: &str,
        pr: i64,
        sha: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO forge_reports (run_id, repo, pr_number, sha) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(repo)
        .bind(pr)
        .bind(sha)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("recording where a run reports"))
    }

    /// Reports whose run state differs from what was last reported:
    /// (run, repo, pr, sha, comment id).
    pub async fn pending_forge_reports(
        &self,
    ) -> Result<Vec<(Run, String, i64, String, Option<i64>)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            run_id: i64,
            repo: String,
            pr_number: i64,
            sha: String,
            comment_id: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT f.run_id, f.repo, f.pr_number, f.sha, f.comment_id FROM forge_reports f JOIN runs r ON r.id = f.run_id \
             WHERE f.reported_state IS NULL OR f.reported_state <> r.state ORDER BY f.run_id",
        )
        .fetch_all(p)
        .await)
        .map_err(query_error("reading pending forge reports"))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(run) = self.get(r.run_id).await? {
                out.push((run, r.repo, r.pr_number, r.sha, r.comment_id));
            }
        }
        Ok(out)
    }

    pub async fn mark_forge_reported(
        &self,
        id: i64,
        state: RunState,
        comment_id: Option<i64>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE forge_reports SET reported_state = $2, comment_id = COALESCE($3, comment_id) WHERE run_id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(comment_id)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("recording a forge report"))
    }

    /// Remembers a forge comment; `true` the first time it is seen.
    pub async fn mark_comment_seen(
        &self,
        forge: &str,
        comment_id: i64,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO seen_comments (forge, comment_id, seen_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        let done = on_pool!(self, p => sqlx::query(sql)
            .bind(forge)
            .bind(comment_id)
            .bind(now_ms())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(query_error("recording a seen comment"))?;
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://seatrial:hunter2@db:5432/seatrial"),
            "postgres://seatrial:***@db:5432/seatrial"
        );
        assert_eq!(redact("sqlite:///var/lib/s.db"), "sqlite:///var/lib/s.db");
        assert_eq!(redact("postgres://db/seatrial"), "postgres://db/seatrial");
    }

    #[test]
    fn states_round_trip() {
        for s in [
            RunState::Queued,
            RunState::Running,
            RunState::Passed,
            RunState::Failed,
            RunState::Errored,
            RunState::Cancelled,
            RunState::TimedOut,
        ] {
            assert_eq!(s.as_str().parse::<RunState>().expect("parses"), s);
        }
        assert!("done".parse::<RunState>().is_err());
    }
}
