//! The queue's life cycle: claiming a run under a lease (or starting one at once, unqueued),
//! heartbeats that keep it, the verdict that ends it, cancellation, and reaping the runs of
//! servers that stopped heartbeating.

use std::time::Duration;

use crate::error::query_error;
use crate::pool::{Pool, built, db_now_sql, ms, now_ms, on_pool};
use crate::runs::{RUN_COLUMNS, RunRow, runs};
use crate::{NewRun, Reaped, Run, RunId, RunState, Store, StoreError};

impl Store {
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
        let row: Option<RunRow> = on_pool!(self, p => sqlx::query_as(built(&sql))
            .bind(owner)
            .bind(ms(lease))
            .bind(now)
            .fetch_optional(p)
            .await)
        .map_err(query_error("claiming a run"))?;
        row.map(Run::try_from).transpose()
    }

    /// Records a run that `owner` starts at once, without queueing it (the nightly sweep, which
    /// holds the server's capacity): `running`, first attempt, leased for `lease`. From here on
    /// it is kept and ended like a claimed run (and reaped like one if its server dies).
    pub async fn start(
        &self,
        new: &NewRun,
        owner: &str,
        lease: Duration,
    ) -> Result<Run, StoreError> {
        let sql = format!(
            "INSERT INTO runs (recipe, reference, repo, pr_number, commit_sha, mode, trigger_kind, requested_by, state, attempt, created_at_ms, started_at_ms, lease_owner, lease_expires_at_ms, timeout_secs, recipe_path, probe, promote) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', 1, $9, $9, $10, {} + $11, $12, $13, $14, $15) RETURNING {RUN_COLUMNS}",
            db_now_sql(&self.pool)
        );
        let row: RunRow = on_pool!(self, p => sqlx::query_as(built(&sql))
            .bind(&new.recipe)
            .bind(&new.reference)
            .bind(&new.repo)
            .bind(new.pr_number)
            .bind(&new.commit_sha)
            .bind(new.mode.as_str())
            .bind(new.trigger.as_str())
            .bind(&new.requested_by)
            .bind(now_ms())
            .bind(owner)
            .bind(ms(lease))
            .bind(new.timeout_secs)
            .bind(&new.recipe_path)
            .bind(&new.probe)
            .bind(new.promote)
            .fetch_one(p)
            .await)
        .map_err(query_error("starting a run"))?;
        row.try_into()
    }

    /// Extends the lease; `false` when the run is no longer this owner's (reaped, finished).
    pub async fn heartbeat(
        &self,
        id: RunId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE runs SET lease_expires_at_ms = {} + $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            db_now_sql(&self.pool)
        );
        let done = on_pool!(self, p => sqlx::query(built(&sql))
            .bind(id.0)
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
        id: RunId,
        owner: &str,
        state: RunState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE runs SET state = $3, reason = $4, finished_at_ms = $5, lease_owner = NULL, lease_expires_at_ms = NULL \
                   WHERE id = $1 AND lease_owner = $2 AND state = 'running'";
        let done = on_pool!(self, p => sqlx::query(sql)
            .bind(id.0)
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

    /// A queued run is cancelled at once; a running one is asked to stop (its server sees
    /// `cancel_requested`); a finished one is left as it is. `note` (who asked, through which
    /// request) goes to the run's log when the cancel changed something. `None`: no such run.
    pub async fn request_cancel(
        &self,
        id: RunId,
        by: Option<&str>,
        note: Option<&str>,
    ) -> Result<Option<Run>, StoreError> {
        let reason = match by {
            Some(who) => format!("cancelled by {who} before it started"),
            None => "cancelled before it started".to_owned(),
        };
        let dequeued = on_pool!(self, p => sqlx::query(
            "UPDATE runs SET state = 'cancelled', finished_at_ms = $2, reason = $3 WHERE id = $1 AND state = 'queued'",
        )
        .bind(id.0)
        .bind(now_ms())
        .bind(&reason)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
        .map_err(query_error("cancelling a run"))?;
        let stopping = on_pool!(self, p => sqlx::query(
            "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running' AND NOT cancel_requested",
        )
        .bind(id.0)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
        .map_err(query_error("cancelling a run"))?;
        if let Some(note) = note
            && dequeued + stopping > 0
        {
            self.append_log(id, note).await?;
        }
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
        let rows: Vec<RunRow> = on_pool!(self, p => sqlx::query_as(built(&sql))
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
}
