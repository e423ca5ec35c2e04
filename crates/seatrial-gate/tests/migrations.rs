//! The migration check against a real PostgreSQL: duplicate slots, a privilege the app's role
//! lacks, only unapplied migrations run (as the role), and the scratch database always dropped.
//!
//! Needs a superuser of the test server in `SEATRIAL_TEST_POSTGRES_ADMIN_URL` (scripts/setup.sh
//! creates `seatrial_admin`; scripts/test.sh sets the URL): without it these tests fail, never
//! skip. Roles they create are unique to the run and dropped afterwards.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use seatrial_gate::config::{DatabaseCheck, MigrationsConfig};
use seatrial_gate::redact::SecretUrl;
use seatrial_gate::{ErrorKind, StageFailure, migrations};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

static N: AtomicUsize = AtomicUsize::new(0);

fn admin_url() -> String {
    std::env::var("SEATRIAL_TEST_POSTGRES_ADMIN_URL").expect(
        "SEATRIAL_TEST_POSTGRES_ADMIN_URL is not set: these tests need a superuser of the test PostgreSQL \
         (scripts/setup.sh creates seatrial_admin; scripts/test.sh sets \
         SEATRIAL_TEST_POSTGRES_ADMIN_URL=postgres://seatrial_admin:seatrial_admin@127.0.0.1:5432/postgres)",
    )
}

async fn admin() -> PgConnection {
    PgConnection::connect(&admin_url())
        .await
        .expect("connect as the test superuser (is PostgreSQL running? scripts/setup.sh starts it)")
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// An owner role and an app role unique to this test, dropped (with what they own in any
/// database left) when the test ends.
struct Roles {
    owner: String,
    app: String,
}

impl Roles {
    async fn create() -> Self {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}_{n}_{:x}", std::process::id(), fastrand_u32());
        let roles = Self {
            owner: format!("gate_owner_{tag}"),
            app: format!("gate_app_{tag}"),
        };
        let mut c = admin().await;
        exec(&mut c, &format!("CREATE ROLE {} NOLOGIN", roles.owner)).await;
        exec(&mut c, &format!("CREATE ROLE {} NOLOGIN", roles.app)).await;
        roles
    }

    async fn drop(self) {
        let mut c = admin().await;
        for r in [&self.owner, &self.app] {
            exec(&mut c, &format!("DROP ROLE IF EXISTS {r}")).await;
        }
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("migrations")).expect("mkdir");
    let path = if name.ends_with(".up.sql") {
        dir.join("migrations").join(name)
    } else {
        dir.join(name)
    };
    std::fs::write(path, text).expect("write");
}

fn config(role: &str, applied_table: &str) -> MigrationsConfig {
    MigrationsConfig {
        dir: "migrations".into(),
        database: Some(DatabaseCheck {
            url: SecretUrl::parse(&admin_url()).expect("admin URL"),
            snapshot: "prod-schema.sql".into(),
            role: role.to_owned(),
            applied_table: applied_table.to_owned(),
        }),
    }
}

/// The scratch database a detail names, and whether it still exists.
async fn scratch_exists(detail: &str) -> (String, bool) {
    let name = detail
        .split_whitespace()
        .find(|w| w.starts_with("seatrial_gate_"))
        .unwrap_or_else(|| panic!("the detail names no scratch database: {detail}"))
        .to_owned();
    let mut c = admin().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut c)
        .await
        .expect("query pg_database");
    (name, n > 0)
}

#[tokio::test]
async fn a_duplicate_slot_fails_before_any_database_work_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "001_init.up.sql", "CREATE TABLE a();");
    write(dir.path(), "002_add_email.up.sql", "SELECT 1;");
    write(dir.path(), "002_add_phone.up.sql", "SELECT 1;");
    // A server that cannot be reached: any database work would be an infrastructure error.
    let mut cfg = config("app", "applied_migrations");
    if let Some(db) = cfg.database.as_mut() {
        db.url = SecretUrl::parse("postgres://nobody:secret@127.0.0.1:1/postgres").expect("url");
    }
    let got = migrations::check(&cfg, dir.path(), &CancellationToken::new()).await;
    let Err(StageFailure::Fail(why)) = got else {
        panic!("a duplicate slot must fail the check, got {got:?}");
    };
    assert!(
        why.contains("002_add_email.up.sql") && why.contains("002_add_phone.up.sql"),
        "{why}"
    );
    assert!(
        why.contains("slot 2") && why.contains("next free slot is 3"),
        "{why}"
    );
    assert!(!why.contains("secret"), "{why}");
}

#[tokio::test]
async fn a_migration_needing_a_privilege_the_role_lacks_fails_with_42501_naming_the_file() {
    let roles = Roles::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "prod-schema.sql",
        &format!(
            "SET client_min_messages = warning;\n\
             SELECT pg_catalog.set_config('search_path', '', false);\n\
             CREATE TABLE public.users (id integer PRIMARY KEY, name text);\n\
             ALTER TABLE public.users OWNER TO {owner};\n\
             GRANT SELECT, INSERT ON public.users TO {app};\n\
             CREATE TABLE public.applied_migrations (version text PRIMARY KEY);\n\
             INSERT INTO public.applied_migrations VALUES ('001');\n",
            owner = roles.owner,
            app = roles.app
        ),
    );
    write(
        dir.path(),
        "001_init.up.sql",
        "CREATE TABLE users (id int);",
    );
    write(
        dir.path(),
        "002_add_email.up.sql",
        "-- the app may write users, but only their owner may change the table\n\
         SELECT 1;\n\nALTER TABLE users ADD COLUMN email text;\n",
    );
    let got = migrations::check(
        &config(&roles.app, "applied_migrations"),
        dir.path(),
        &CancellationToken::new(),
    )
    .await;
    roles.drop().await;
    let Err(StageFailure::Fail(why)) = got else {
        panic!("the migration must fail, got {got:?}");
    };
    assert!(why.contains("002_add_email.up.sql"), "{why}");
    assert!(why.contains("SQLSTATE 42501"), "{why}");
    assert!(why.contains("needs a privilege the app's role"), "{why}");
    assert!(
        why.contains("line 4"),
        "the failing statement's line: {why}"
    );
    assert!(
        !why.contains("seatrial_admin@") && !why.contains(":seatrial_admin"),
        "{why}"
    );
    let (name, exists) = scratch_exists(&why).await;
    assert!(
        !exists,
        "scratch database {name} left behind after a failure"
    );
}

#[tokio::test]
async fn only_unapplied_migrations_run_as_the_role_and_the_scratch_database_is_dropped() {
    // The applied table's `version` as text and as an integer.
    for version_type in ["text", "integer"] {
        let roles = Roles::create().await;
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "prod-schema.sql",
            &format!(
                "CREATE SCHEMA app AUTHORIZATION {app};\n\
                 CREATE TABLE app.schema_versions (version {version_type} PRIMARY KEY);\n\
                 ALTER TABLE app.schema_versions OWNER TO {owner};\n\
                 INSERT INTO app.schema_versions VALUES ('1'), ('2');\n",
                owner = roles.owner,
                app = roles.app
            ),
        );
        // Already applied in production: broken on purpose, must not run.
        write(dir.path(), "001_init.up.sql", "THIS IS NOT SQL;");
        write(dir.path(), "002_more.up.sql", "ALSO NOT SQL;");
        write(
            dir.path(),
            "003_add_orders.up.sql",
            &format!(
                "DO $$ BEGIN\n  IF current_user <> '{app}' THEN\n    RAISE EXCEPTION 'ran as %, not as the app role', current_user;\n  END IF;\nEND $$;\n\
                 CREATE TABLE app.orders (id integer PRIMARY KEY, note text DEFAULT ';');\n",
                app = roles.app
            ),
        );
        write(
            dir.path(),
            "004_add_index.up.sql",
            "CREATE INDEX orders_note ON app.orders (note);\n",
        );
        let got = migrations::check(
            &config(&roles.app, "app.schema_versions"),
            dir.path(),
            &CancellationToken::new(),
        )
        .await;
        roles.drop().await;
        let detail = got.unwrap_or_else(|e| panic!("({version_type}) must pass: {e:?}"));
        assert!(
            detail.contains("2 already applied")
                && detail.contains("applied 2 new as role")
                && detail.contains("003_add_orders.up.sql, 004_add_index.up.sql"),
            "({version_type}) {detail}"
        );
        assert!(!detail.contains("001_init"), "{detail}");
        let (name, exists) = scratch_exists(&detail).await;
        assert!(!exists, "scratch database {name} left behind");
    }
}

#[tokio::test]
async fn a_superuser_role_or_an_unknown_role_is_refused_as_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "prod-schema.sql", "CREATE TABLE t (id int);\n");
    write(dir.path(), "001_a.up.sql", "SELECT 1;");
    for (role, want) in [
        ("seatrial_admin", "is a superuser"),
        ("gate_no_such_role_here", "does not exist"),
    ] {
        let got = migrations::check(
            &config(role, "applied_migrations"),
            dir.path(),
            &CancellationToken::new(),
        )
        .await;
        let Err(StageFailure::Error(why, ErrorKind::BadInput)) = got else {
            panic!("role {role} must be refused, got {got:?}");
        };
        assert!(why.contains(want) && why.contains(role), "{why}");
    }
}

#[tokio::test]
async fn a_cancelled_check_still_drops_the_scratch_database() {
    let roles = Roles::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "prod-schema.sql", "CREATE TABLE t (id int);\n");
    write(dir.path(), "001_slow.up.sql", "SELECT pg_sleep(60);");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let got = migrations::check(
        &config(&roles.app, "applied_migrations"),
        dir.path(),
        &cancel,
    )
    .await;
    roles.drop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the cancel was not heeded"
    );
    let Err(StageFailure::Error(why, _)) = got else {
        panic!("a cancelled check is an error, got {got:?}");
    };
    assert!(why.starts_with("interrupted"), "{why}");
    let (name, exists) = scratch_exists(&why).await;
    assert!(
        !exists,
        "scratch database {name} left behind after a cancel"
    );
}
