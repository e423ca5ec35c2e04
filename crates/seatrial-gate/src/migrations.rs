//! Migration checks: the files of a migrations directory (`NNN_name.up.sql`, one file per slot),
//! then — with a database — the new ones tried on a scratch copy of production's schema, each
//! as the app's role in its own transaction. The scratch database is always dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgErrorPosition};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseCheck, MigrationsConfig};
use crate::sql_text;
use crate::{ErrorKind, StageFailure};

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number its name starts with.
    pub slot: u64,
    /// Its file name, e.g. `003_add_email.up.sql`.
    pub file: String,
    pub path: PathBuf,
}

/// The migrations of `dir` in slot order. Duplicate slots fail (naming both files); a `.sql`
/// file that is neither `NNN_name.up.sql` nor `NNN_name.down.sql` is bad input (it would
/// silently never run).
pub fn scan(dir: &Path) -> Result<Vec<Migration>, StageFailure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StageFailure::Error(
            format!(
                "cannot read the migrations directory {}: {e}; check gate.migrations.dir (relative to the checkout)",
                dir.display()
            ),
            ErrorKind::BadInput,
        )
    })?;
    let mut by_slot: BTreeMap<u64, Vec<Migration>> = BTreeMap::new();
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".sql") || file.ends_with(".down.sql") {
            continue;
        }
        let slot = file
            .strip_suffix(".up.sql")
            .and_then(|stem| stem.split_once('_'))
            .filter(|(n, name)| !n.is_empty() && !name.is_empty())
            .and_then(|(n, _)| n.parse::<u64>().ok().filter(|_| n.bytes().all(|c| c.is_ascii_digit())))
            .ok_or_else(|| {
                StageFailure::Error(
                    format!(
                        "{}: not a migration file name (NNN_name.up.sql), so it would never run; rename it (e.g. 004_{})",
                        dir.join(&file).display(),
                        file.trim_end_matches(".sql").trim_end_matches(".up")
                    ),
                    ErrorKind::BadInput,
                )
            })?;
        by_slot.entry(slot).or_default().push(Migration {
            slot,
            path: entry.path(),
            file,
        });
    }
    let next_free = by_slot.keys().next_back().map_or(1, |s| s + 1);
    let clashes: Vec<String> = by_slot
        .iter_mut()
        .filter(|(_, files)| files.len() > 1)
        .map(|(slot, files)| {
            files.sort_by(|a, b| a.file.cmp(&b.file));
            let names: Vec<&str> = files.iter().map(|m| m.file.as_str()).collect();
            format!("slot {slot} is taken by both {}", names.join(" and "))
        })
        .collect();
    if !clashes.is_empty() {
        return Err(StageFailure::Fail(format!(
            "duplicate migration slots in {}: {}; renumber all but one of each (the next free slot is {next_free}) — no database work was done",
            dir.display(),
            clashes.join("; ")
        )));
    }
    Ok(by_slot.into_values().flatten().collect())
}

/// The whole migration check: the files, then (with a database) the scratch run. Cancelling
/// `cancel` stops it, and the scratch database is still dropped before this returns.
pub async fn check(
    config: &MigrationsConfig,
    checkout: &Path,
    cancel: &CancellationToken,
) -> Result<String, StageFailure> {
    let dir = checkout.join(&config.dir);
    let migrations = scan(&dir)?;
    let Some(db) = &config.database else {
        return Ok(format!(
            "{} migration(s) in {}, one per slot; no database_url: not tried on a database",
            migrations.len(),
            config.dir.display()
        ));
    };
    try_on_scratch(db, checkout, &config.dir, &migrations, cancel).await
}

/// An identifier quoted for PostgreSQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn infra(msg: String) -> StageFailure {
    StageFailure::Error(msg, ErrorKind::Infrastructure)
}

fn bad_input(msg: String) -> StageFailure {
    StageFailure::Error(msg, ErrorKind::BadInput)
}

async fn try_on_scratch(
    db: &DatabaseCheck,
    checkout: &Path,
    dir: &Path,
    migrations: &[Migration],
    cancel: &CancellationToken,
) -> Result<String, StageFailure> {
    let server = db.url.to_string();
    let scrub = |text: String| db.url.scrub(&text);
    let options = PgConnectOptions::from_str(db.url.expose()).map_err(|e| {
        bad_input(scrub(format!(
            "gate.migrations.database_url {server}: {e}; write it as postgres://user:password@host:port/database"
        )))
    })?;
    let snapshot_path = checkout.join(&db.snapshot);
    let snapshot = std::fs::read_to_string(&snapshot_path).map_err(|e| {
        bad_input(format!(
            "cannot read the snapshot {}: {e}; check gate.migrations.snapshot (a plain-SQL schema dump, relative to the checkout)",
            snapshot_path.display()
        ))
    })?;
    let snapshot = plain_sql(&snapshot, &snapshot_path)?;

    let connect = async {
        PgConnection::connect_with(&options).await.map_err(|e| {
            infra(scrub(format!(
                "cannot connect to the scratch server {server}: {e}; check gate.migrations.database_url and that the server runs"
            )))
        })
    };
    let mut admin = tokio::select! {
        c = connect => c?,
        _ = cancel.cancelled() => return Err(infra("interrupted".into())),
    };
    let role = sqlx::query("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(&db.role)
        .fetch_optional(&mut admin)
        .await
        .map_err(|e| infra(scrub(format!("cannot read the roles of {server}: {e}"))))?;
    match role.map(|r| r.try_get::<bool, _>(0)) {
        None => {
            return Err(bad_input(format!(
                "role `{}` does not exist on {server}: create it there as production has it (`CREATE ROLE {} NOLOGIN`; a pg_dump of one database does not carry roles)",
                db.role,
                quote_ident(&db.role)
            )));
        }
        Some(Ok(true)) => {
            return Err(bad_input(format!(
                "role `{}` is a superuser on {server}: migrations run as it would pass whatever they need; set gate.migrations.role to the app's own (non-superuser) role",
                db.role
            )));
        }
        Some(Ok(false)) => {}
        Some(Err(e)) => return Err(infra(format!("cannot read role `{}`: {e}", db.role))),
    }

    let name = format!(
        "seatrial_gate_{}_{:012x}",
        std::process::id(),
        fastrand::u64(..) & 0xffff_ffff_ffff
    );
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&name))))
        .execute(&mut admin)
        .await
        .map_err(|e| {
            infra(scrub(format!(
                "cannot create the scratch database {name} on {server}: {e}; the URL's user must be allowed to create databases (a superuser of a scratch server)"
            )))
        })?;
    tracing::info!(database = %name, server = %server, "created the scratch database");

    let scratch = options.clone().database(&name);
    let outcome = tokio::select! {
        r = apply(db, dir, &snapshot, &snapshot_path, migrations, &scratch) => r,
        _ = cancel.cancelled() => Err(infra("interrupted".into())),
    };

    // Always dropped: after a pass, a failure or a cancel (connections of `apply` are gone with
    // its future; FORCE ends any that linger).
    let drop_sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&name)
    );
    let mut dropped = sqlx::raw_sql(AssertSqlSafe(drop_sql.clone()))
        .execute(&mut admin)
        .await
        .map(|_| ());
    if dropped.is_err() {
        // The admin connection may itself be what broke: once more on a fresh one.
        dropped = match PgConnection::connect_with(&options).await {
            Ok(mut c) => sqlx::raw_sql(AssertSqlSafe(drop_sql.clone()))
                .execute(&mut c)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
    }
    let _ = admin.close().await;
    let cleanup = match &dropped {
        Ok(()) => format!("scratch database {name} dropped"),
        Err(e) => {
            tracing::warn!(database = %name, error = %scrub(e.to_string()), "cannot drop the scratch database");
            scrub(format!(
                "the scratch database {name} could NOT be dropped ({e}); drop it by hand: {drop_sql}"
            ))
        }
    };
    match (outcome, dropped) {
        (Ok(detail), Ok(())) => Ok(format!("{detail}; {cleanup}")),
        (Ok(detail), Err(_)) => Err(infra(format!("{detail}; {cleanup}"))),
        (Err(StageFailure::Fail(why)), _) => Err(StageFailure::Fail(format!("{why}; {cleanup}"))),
        (Err(StageFailure::Error(why, kind)), _) => {
            Err(StageFailure::Error(format!("{why}; {cleanup}"), kind))
        }
    }
}

/// The snapshot as plain SQL: psql's `\restrict`/`\unrestrict` lines (pg_dump 17.6+) are
/// dropped; any other psql meta-command cannot run on a server connection and is refused.
fn plain_sql(text: &str, path: &Path) -> Result<String, StageFailure> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("\\restrict") || trimmed.starts_with("\\unrestrict") {
            out.push('\n');
            continue;
        }
        if trimmed.starts_with('\\') {
            return Err(bad_input(format!(
                "{}: line {}: `{}` is a psql command, not SQL; dump the schema as plain SQL without it (pg_dump --schema-only --no-owner is not needed: owners are kept)",
                path.display(),
                n + 1,
                trimmed.split_whitespace().next().unwrap_or(trimmed)
            )));
        }
        out.push_str(line);
    }
    Ok(out)
}

/// Loads the snapshot into the scratch database and applies the migrations it has not applied.
async fn apply(
    db: &DatabaseCheck,
    dir: &Path,
    snapshot: &str,
    snapshot_path: &Path,
    migrations: &[Migration],
    scratch: &PgConnectOptions,
) -> Result<String, StageFailure> {
    let connect = || async {
        PgConnection::connect_with(scratch).await.map_err(|e| {
            infra(
                db.url
                    .scrub(&format!("cannot connect to the scratch database: {e}")),
            )
        })
    };
    // The snapshot's own session settings (pg_dump empties search_path) stay on its connection.
    let mut loader = connect().await?;
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(snapshot.to_owned()))
        .execute(&mut loader)
        .await
    {
        let what = describe(snapshot, &e, None, &db.role);
        return Err(bad_input(format!(
            "the snapshot {} does not load: {what}; it must be a plain-SQL schema dump of production (pg_dump --schema-only) whose roles exist on the scratch server",
            snapshot_path.display()
        )));
    }
    let _ = loader.close().await;

    let mut conn = connect().await?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&db.applied_table)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| {
            bad_input(format!(
                "gate.migrations.applied_table `{}` is not a table name: {e}",
                db.applied_table
            ))
        })?;
    let mut applied = BTreeSet::new();
    let mut notes = Vec::new();
    match &table {
        // The name as PostgreSQL prints a regclass: already quoted where it must be.
        Some(table) => {
            let versions: Vec<Option<String>> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT version::text FROM {table}"
            )))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| {
                bad_input(format!(
                    "cannot read the applied versions (column `version`) of `{}` in the snapshot: {e}; set gate.migrations.applied_table to the table that records them",
                    db.applied_table
                ))
            })?;
            for v in versions.into_iter().flatten() {
                match slot_of_version(&v) {
                    Some(slot) => {
                        applied.insert(slot);
                    }
                    None => notes.push(format!(
                        "version {v:?} of `{}` names no slot",
                        db.applied_table
                    )),
                }
            }
        }
        None => notes.push(format!(
            "the snapshot has no table `{}`: every migration counts as new",
            db.applied_table
        )),
    }
    let (done, todo): (Vec<&Migration>, Vec<&Migration>) =
        migrations.iter().partition(|m| applied.contains(&m.slot));
    for m in &todo {
        let sql = std::fs::read_to_string(&m.path)
            .map_err(|e| bad_input(format!("cannot read {}: {e}", m.path.display())))?;
        let file = dir.join(&m.file).display().to_string();
        if let Err(e) = run_as_role(&mut conn, &db.role, &sql).await {
            // Locating the statement is best effort; the verdict is the whole file's.
            let at = if position_of(&e).is_none() {
                locate(&mut conn, &db.role, &sql, &e).await
            } else {
                None
            };
            let what = describe(&sql, &e, at, &db.role);
            let before: Vec<&str> = todo
                .iter()
                .take_while(|x| x.slot != m.slot)
                .map(|x| x.file.as_str())
                .collect();
            let applied_before = if before.is_empty() {
                String::new()
            } else {
                format!(" (after applying {})", before.join(", "))
            };
            return Err(StageFailure::Fail(format!(
                "migration {file} failed as role `{}` on a copy of the snapshot{applied_before}: {what}",
                db.role
            )));
        }
    }
    let _ = conn.close().await;
    let mut detail = format!(
        "{} migration(s) in {}: {} already applied in the snapshot",
        migrations.len(),
        dir.display(),
        done.len()
    );
    if todo.is_empty() {
        detail.push_str(", none new");
    } else {
        let names: Vec<&str> = todo.iter().map(|m| m.file.as_str()).collect();
        detail.push_str(&format!(
            ", applied {} new as role `{}`: {}",
            todo.len(),
            db.role,
            names.join(", ")
        ));
    }
    for n in notes {
        detail.push_str(&format!("; {n}"));
    }
    Ok(detail)
}

/// A version as the applied table holds it (`3`, `'003'`, `'003_add_email'`) as a slot.
fn slot_of_version(v: &str) -> Option<u64> {
    let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs a script in its own transaction as `role` (rolled back when it fails).
async fn run_as_role(conn: &mut PgConnection, role: &str, sql: &str) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        quote_ident(role)
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Which statement of `sql` fails with the same SQLSTATE as `failed`, run one at a time (in a
/// transaction that is rolled back): its byte offset in the file.
async fn locate(
    conn: &mut PgConnection,
    role: &str,
    sql: &str,
    failed: &sqlx::Error,
) -> Option<usize> {
    let code = sqlstate(failed)?;
    let mut tx = conn.begin().await.ok()?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        quote_ident(role)
    )))
    .execute(&mut *tx)
    .await
    .ok()?;
    for (offset, statement) in sql_text::statements(sql) {
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
            .execute(&mut *tx)
            .await
        {
            let _ = tx.rollback().await;
            return (sqlstate(&e).as_deref() == Some(code.as_str())).then_some(offset);
        }
    }
    let _ = tx.rollback().await;
    None
}

fn pg_error(e: &sqlx::Error) -> Option<&PgDatabaseError> {
    match e {
        sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>(),
        _ => None,
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    pg_error(e).map(|p| p.code().to_owned())
}

/// PostgreSQL's position of the error in the script (characters, 1-based), when it gave one.
fn position_of(e: &sqlx::Error) -> Option<usize> {
    match pg_error(e)?.position()? {
        PgErrorPosition::Original(p) => Some(p),
        PgErrorPosition::Internal { .. } => None,
    }
}

/// `line L, column C (byte B): <message> (SQLSTATE X)[; detail][; hint][ — what to do]`.
fn describe(sql: &str, e: &sqlx::Error, statement_at: Option<usize>, role: &str) -> String {
    let Some(pg) = pg_error(e) else {
        return e.to_string();
    };
    let byte = position_of(e)
        .map(|p| sql_text::char_position_to_byte(sql, p))
        .or(statement_at);
    let at = match byte {
        Some(b) => {
            let (line, col) = sql_text::line_col(sql, b);
            let what = if position_of(e).is_some() {
                ""
            } else {
                "the statement at "
            };
            format!("{what}line {line}, column {col} (byte {b})")
        }
        None => "position unknown".to_owned(),
    };
    let mut out = format!("{at}: {} (SQLSTATE {})", pg.message(), pg.code());
    if let Some(d) = pg.detail() {
        out.push_str(&format!("; {d}"));
    }
    if let Some(h) = pg.hint() {
        out.push_str(&format!("; hint: {h}"));
    }
    if pg.code() == "42501" {
        out.push_str(&format!(
            " — needs a privilege the app's role `{role}` does not have: grant it in production (and in the snapshot) before this deploy, or make this change as the object's owner outside the app's migrations"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_text_or_integers_name_slots() {
        assert_eq!(slot_of_version("3"), Some(3));
        assert_eq!(slot_of_version("003"), Some(3));
        assert_eq!(slot_of_version(" 003_add_email "), Some(3));
        assert_eq!(slot_of_version("initial"), None);
    }

    #[test]
    fn files_are_read_in_slot_order_and_misnamed_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "010_b.up.sql",
            "002_a.up.sql",
            "002_a.down.sql",
            "README.md",
        ] {
            std::fs::write(dir.path().join(f), "SELECT 1;").expect("write");
        }
        let got: Vec<u64> = scan(dir.path())
            .expect("scan")
            .iter()
            .map(|m| m.slot)
            .collect();
        assert_eq!(got, [2, 10]);
        std::fs::write(dir.path().join("3-add.sql"), "SELECT 1;").expect("write");
        let Err(StageFailure::Error(why, ErrorKind::BadInput)) = scan(dir.path()) else {
            panic!("a misnamed file must be refused");
        };
        assert!(
            why.contains("3-add.sql") && why.contains("NNN_name.up.sql"),
            "{why}"
        );
    }

    #[test]
    fn psql_commands_in_a_snapshot_are_refused_except_restrict() {
        let ok = plain_sql(
            "\\restrict abc\nCREATE TABLE t();\n\\unrestrict abc\n",
            Path::new("s.sql"),
        )
        .expect("restrict lines are dropped");
        assert_eq!(ok, "\nCREATE TABLE t();\n\n");
        let Err(StageFailure::Error(why, _)) =
            plain_sql("SELECT 1;\n\\connect prod\n", Path::new("s.sql"))
        else {
            panic!("\\connect must be refused");
        };
        assert!(
            why.contains("s.sql: line 2") && why.contains("\\connect"),
            "{why}"
        );
    }
}
