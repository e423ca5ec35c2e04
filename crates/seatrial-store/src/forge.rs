//! The forge's state: each repository's polling cursor, the comments already acted on, and
//! where each run reports back (its pull request, commit and comment) with what it last said.

use crate::error::query_error;
use crate::pool::{now_ms, on_pool};
use crate::{ForgeReport, RunId, RunState, Store, StoreError};

impl Store {
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
        id: RunId,
        repo: &str,
        pr: i64,
        sha: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO forge_reports (run_id, repo, pr_number, sha) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.0)
        .bind(repo)
        .bind(pr)
        .bind(sha)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(query_error("recording where a run reports"))
    }

    /// Reports whose run state differs from what was last reported, oldest run first.
    pub async fn pending_forge_reports(&self) -> Result<Vec<ForgeReport>, StoreError> {
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
            if let Some(run) = self.get(RunId(r.run_id)).await? {
                out.push(ForgeReport {
                    run,
                    repo: r.repo,
                    pr_number: r.pr_number,
                    sha: r.sha,
                    comment_id: r.comment_id,
                });
            }
        }
        Ok(out)
    }

    pub async fn mark_forge_reported(
        &self,
        id: RunId,
        state: RunState,
        comment_id: Option<i64>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE forge_reports SET reported_state = $2, comment_id = COALESCE($3, comment_id) WHERE run_id = $1",
        )
        .bind(id.0)
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
