//! What a run leaves behind as it goes: its stage results and its numbered log lines.

use crate::error::query_error;
use crate::pool::{now_ms, on_pool};
use crate::{LogChunk, RunId, StageRecord, Store, StoreError};

#[derive(sqlx::FromRow)]
struct StageRow {
    name: String,
    result: String,
    started_at: String,
    duration_ms: i64,
    detail: String,
}

impl Store {
    pub async fn record_stage(&self, id: RunId, stage: &StageRecord) -> Result<(), StoreError> {
        let sql = "INSERT INTO stages (run_id, seq, name, result, started_at, duration_ms, detail) \
                   SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM stages WHERE run_id = $1";
        on_pool!(self, p => sqlx::query(sql)
            .bind(id.0)
            .bind(&stage.name)
            .bind(stage.result.as_str())
            .bind(&stage.started_at)
            .bind(stage.duration_ms)
            .bind(&stage.detail)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(query_error("recording a stage"))
    }

    pub async fn stages(&self, id: RunId) -> Result<Vec<StageRecord>, StoreError> {
        let sql = "SELECT name, result, started_at, duration_ms, detail FROM stages WHERE run_id = $1 ORDER BY seq";
        let rows: Vec<StageRow> =
            on_pool!(self, p => sqlx::query_as(sql).bind(id.0).fetch_all(p).await)
                .map_err(query_error("reading stages"))?;
        rows.into_iter()
            .map(|r| {
                Ok(StageRecord {
                    name: r.name,
                    result: r.result.parse()?,
                    started_at: r.started_at,
                    duration_ms: r.duration_ms,
                    detail: r.detail,
                })
            })
            .collect()
    }

    /// Appends a log line (or block) to a run; returns its sequence number (1, 2, 3, …).
    pub async fn append_log(&self, id: RunId, text: &str) -> Result<i64, StoreError> {
        let sql = "INSERT INTO logs (run_id, seq, at_ms, text) \
                   SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM logs WHERE run_id = $1 RETURNING seq";
        on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(id.0)
            .bind(now_ms())
            .bind(text)
            .fetch_one(p)
            .await)
        .map_err(query_error("appending to a run's log"))
    }

    pub async fn logs_since(
        &self,
        id: RunId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogChunk>, StoreError> {
        let sql = "SELECT seq, at_ms, text FROM logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let rows: Vec<(i64, i64, String)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(id.0)
            .bind(after_seq)
            .bind(limit.max(1))
            .fetch_all(p)
            .await)
        .map_err(query_error("reading a run's log"))?;
        Ok(rows
            .into_iter()
            .map(|(seq, at_ms, text)| LogChunk { seq, at_ms, text })
            .collect())
    }
}
