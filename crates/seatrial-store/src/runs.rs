//! Runs as rows: queueing one, reading one or a filtered page, the queue in claim order and
//! positions in it, the stack a run made, and the counts the metrics serve.

use std::collections::HashMap;

use crate::error::query_error;
use crate::model::FAILING_STREAK_LIMIT;
use crate::pool::{built, db_now_sql, now_ms, on_pool};
use crate::{Mode, NewRun, Run, RunFilter, RunId, RunState, Stats, Store, StoreError};

pub(crate) const RUN_COLUMNS: &str = "id, recipe, reference, repo, pr_number, commit_sha, mode, trigger_kind, requested_by, state, attempt, created_at_ms, started_at_ms, finished_at_ms, lease_owner, lease_expires_at_ms, cancel_requested, stack, reason, timeout_secs, recipe_path, probe, promote";

/// A `runs` row as the database spells it; [`Run`] once its words are read.
#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
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
    promote: bool,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: RunId(r.id),
            recipe: r.recipe,
            reference: r.reference,
            repo: r.repo,
            pr_number: r.pr_number,
            commit_sha: r.commit_sha,
            mode: r.mode.parse()?,
            trigger: r.trigger_kind.parse()?,
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
            promote: r.promote,
        })
    }
}

pub(crate) fn runs(rows: Vec<RunRow>) -> Result<Vec<Run>, StoreError> {
    rows.into_iter().map(Run::try_from).collect()
}

impl Store {
    pub async fn enqueue(&self, new: &NewRun) -> Result<Run, StoreError> {
        let sql = format!(
            "INSERT INTO runs (recipe, reference, repo, pr_number, commit_sha, mode, trigger_kind, requested_by, state, attempt, created_at_ms, timeout_secs, recipe_path, probe, promote) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11, $12, $13) RETURNING {RUN_COLUMNS}"
        );
        // The run and its first log line in one transaction: no server claims (and logs) a
        // run whose note is not written yet.
        let row: RunRow = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let row: RunRow = sqlx::query_as(built(&sql))
                .bind(&new.recipe)
                .bind(&new.reference)
                .bind(&new.repo)
                .bind(new.pr_number)
                .bind(&new.commit_sha)
                .bind(new.mode.as_str())
                .bind(new.trigger.as_str())
                .bind(&new.requested_by)
                .bind(now_ms())
                .bind(new.timeout_secs)
                .bind(&new.recipe_path)
                .bind(&new.probe)
                .bind(new.promote)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(note) = &new.note {
                sqlx::query("INSERT INTO logs (run_id, seq, at_ms, text) VALUES ($1, 1, $2, $3)")
                    .bind(row.id)
                    .bind(now_ms())
                    .bind(note)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        }
        .await)
        .map_err(query_error("queueing a run"))?;
        row.try_into()
    }

    pub async fn get(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row: Option<RunRow> =
            on_pool!(self, p => sqlx::query_as(built(&sql)).bind(id.0).fetch_optional(p).await)
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
            let mut q = sqlx::query_as(built(&sql));
            if let Some(r) = &filter.recipe {
                q = q.bind(r);
            }
            if let Some(st) = filter.state {
                q = q.bind(st.as_str());
            }
            if let Some(m) = filter.mode {
                q = q.bind(m.as_str());
            }
            if let Some(b) = filter.before_id {
                q = q.bind(b.0);
            }
            q.bind(limit).fetch_all(p).await
        })
        .map_err(query_error("listing runs"))?;
        runs(rows)
    }

    /// Queued runs in the order they will be claimed.
    pub async fn queue(&self) -> Result<Vec<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'queued' ORDER BY id");
        let rows: Vec<RunRow> = on_pool!(self, p => sqlx::query_as(built(&sql)).fetch_all(p).await)
            .map_err(query_error("reading the queue"))?;
        runs(rows)
    }

    /// Queue positions (1 = next to be claimed) of those of `runs` that are queued, without
    /// reading the whole queue: one indexed count before the first of them, and the queued ids
    /// between the first and the last of them.
    pub async fn queue_positions(&self, runs: &[Run]) -> Result<HashMap<RunId, usize>, StoreError> {
        let queued: Vec<RunId> = runs
            .iter()
            .filter(|r| r.state == RunState::Queued)
            .map(|r| r.id)
            .collect();
        let (Some(&low), Some(&high)) = (queued.iter().min(), queued.iter().max()) else {
            return Ok(HashMap::new());
        };
        let before: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE state = 'queued' AND id < $1",
        )
        .bind(low.0)
        .fetch_one(p)
        .await)
        .map_err(query_error("reading queue positions"))?;
        let span: Vec<i64> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM runs WHERE state = 'queued' AND id >= $1 AND id <= $2 ORDER BY id",
        )
        .bind(low.0)
        .bind(high.0)
        .fetch_all(p)
        .await)
        .map_err(query_error("reading queue positions"))?;
        let before = usize::try_from(before).unwrap_or(0);
        Ok(span
            .into_iter()
            .map(RunId)
            .enumerate()
            .filter(|(_, id)| queued.contains(id))
            .map(|(i, id)| (id, before + i + 1))
            .collect())
    }

    pub async fn set_stack(&self, id: RunId, stack: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("UPDATE runs SET stack = $2 WHERE id = $1")
            .bind(id.0)
            .bind(stack)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(query_error("recording a run's stack"))
    }

    /// Whether the run that made `stack` is alive: `Some(true)` while it runs under a lease that
    /// holds by the database's clock, `Some(false)` when it ended or its lease expired, `None`
    /// when no run of this store made the stack.
    pub async fn stack_alive(&self, stack: &str) -> Result<Option<bool>, StoreError> {
        let sql = format!(
            "SELECT state = 'running' AND lease_expires_at_ms >= {} FROM runs WHERE stack = $1 ORDER BY id DESC LIMIT 1",
            db_now_sql(&self.pool)
        );
        let alive: Option<Option<bool>> = on_pool!(self, p => sqlx::query_scalar(built(&sql))
            .bind(stack)
            .fetch_optional(p)
            .await)
        .map_err(query_error("asking whether a run is alive"))?;
        Ok(alive.map(|a| a.unwrap_or(false)))
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let groups: Vec<(String, String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT state, mode, COUNT(*) FROM runs GROUP BY state, mode ORDER BY state, mode",
        )
        .fetch_all(p)
        .await)
        .map_err(query_error("counting runs"))?;
        let groups = groups
            .into_iter()
            .map(|(state, mode, n)| Ok((state.parse::<RunState>()?, mode.parse::<Mode>()?, n)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let sql = format!(
            "SELECT COUNT(*) FROM runs WHERE state = 'running' AND lease_expires_at_ms >= {}",
            db_now_sql(&self.pool)
        );
        let active_leases: i64 = on_pool!(self, p => sqlx::query_scalar(built(&sql))
        .fetch_one(p)
        .await)
        .map_err(query_error("counting leases"))?;
        let oldest_queued_at_ms: Option<i64> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT MIN(created_at_ms) FROM runs WHERE state = 'queued'",
        )
        .fetch_one(p)
        .await)
        .map_err(query_error("reading the queue's oldest run"))?;
        // Newest verdicts first; the streak ends at the first pass.
        let verdicts: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT state FROM runs WHERE state IN ('passed', 'failed', 'errored', 'timed_out') \
             ORDER BY finished_at_ms DESC, id DESC LIMIT $1",
        )
        .bind(FAILING_STREAK_LIMIT)
        .fetch_all(p)
        .await)
        .map_err(query_error("reading the latest verdicts"))?;
        let failing_in_a_row = verdicts.iter().take_while(|s| *s != "passed").count() as i64;
        let sum = |state: RunState| {
            groups
                .iter()
                .filter(|(s, _, _)| *s == state)
                .map(|(_, _, n)| n)
                .sum()
        };
        Ok(Stats {
            queued: sum(RunState::Queued),
            running: sum(RunState::Running),
            active_leases,
            by_state_and_mode: groups,
            oldest_queued_at_ms,
            failing_in_a_row,
        })
    }
}
