//! Opening the database (SQLite file or PostgreSQL URL), running its migrations, and the few
//! things every query module shares: the pool, the database's clock, and passwords kept out of
//! messages.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::query_error;
use crate::{Store, StoreError};

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs one body against whichever pool the store has (the SQL is shared).
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::pool::Pool::Sqlite($p) => $body,
            $crate::pool::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// SQL this crate assembles from its own constants (column lists, the database's clock,
/// numbered placeholders) — never from input, which is always bound as a parameter.
pub(crate) fn built(sql: &str) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(sql)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The database's own clock in milliseconds since the epoch, as SQL. Leases are measured by it
/// alone, so servers whose clocks disagree never reap each other's healthy runs.
pub(crate) fn db_now_sql(pool: &Pool) -> &'static str {
    match pool {
        Pool::Sqlite(_) => "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
        Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
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

impl Store {
    /// Opens (creating, for SQLite) and migrates the database: `sqlite://<path>` or
    /// `sqlite:<path>`, or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let open_err = |message: String| StoreError::Open {
            url: shown.clone(),
            message,
        };
        let migrate_err = |e: sqlx::migrate::MigrateError| StoreError::Migrate {
            url: shown.clone(),
            message: e.to_string(),
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
                .map_err(migrate_err)?;
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
                .map_err(migrate_err)?;
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
}
