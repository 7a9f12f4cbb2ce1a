//! Opening Herald's own store on PostgreSQL (`database = "postgresql://…"`):
//! connecting (a clear error naming `database`, never the password, when it
//! does not answer), refusing a database that holds another program's
//! tables or a newer Herald schema (leaving it untouched), then running
//! `migrations_postgres/` (the same versions as SQLite's `migrations/`).
//! Every session commits synchronously (`synchronous_commit = on`): a write
//! is durable before it is acknowledged, as on SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use crate::db::Db;
use crate::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_postgres");

/// The newest schema version this build knows on PostgreSQL.
pub fn known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Connects to the PostgreSQL database `url` names, checks it is Herald's
/// (or empty) and of a schema this build knows, and migrates it. Nothing is
/// written to a database that is refused.
pub async fn open_schema(url: &str) -> Result<Db, StoreError> {
    open_schema_as(url, "").await
}

/// [`open_schema`], every session of the pool naming `instance` (the
/// `herald.instance` setting the notices trigger reads: see `notices`).
pub(crate) async fn open_schema_as(url: &str, instance: &str) -> Result<Db, StoreError> {
    let target = crate::synapse::without_password(url);
    let unreachable = |detail: String| StoreError::PgUnreachable {
        target: target.clone(),
        detail,
    };
    let options = connect_options(url, instance)
        .map_err(|e| unreachable(format!("not a PostgreSQL URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match check_and_migrate(&pool, &target).await {
        Ok(()) => Ok(Db::Postgres(pool)),
        Err(e) => {
            pool.close().await;
            Err(e)
        }
    }
}

/// How every session of Herald's store connects: synchronous commits, read
/// committed (whatever the database's or role's default: the queue's locks
/// rely on each statement seeing what committed before it, see
/// ARCHITECTURE.md), and `herald.instance` set to `instance` (letters,
/// digits and `-` only).
pub(crate) fn connect_options(url: &str, instance: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?
        .application_name("herald")
        .options([
            ("synchronous_commit", "on"),
            ("default_transaction_isolation", r"read\ committed"),
        ])
        .disable_statement_logging();
    Ok(if instance.is_empty() {
        options
    } else {
        options.options([("herald.instance", instance)])
    })
}

async fn check_and_migrate(pool: &PgPool, target: &str) -> Result<(), StoreError> {
    check_identity(pool, target).await?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|source| StoreError::PgMigrate {
            target: target.to_owned(),
            source,
        })
}

/// Refuses, reading only, a database whose schema holds tables that are
/// not Herald's, or Herald's of a newer version.
async fn check_identity(pool: &PgPool, target: &str) -> Result<(), StoreError> {
    // The catalog, not `information_schema` (which lists only the tables
    // this role has a privilege on: another role's tables would look absent).
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
         ORDER BY c.relname COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await?;
    if tables.is_empty() {
        return Ok(());
    }
    let ours = tables.iter().any(|t| t == "herald_meta")
        && sqlx::query_scalar::<_, String>(
            "SELECT value FROM herald_meta WHERE key = 'application'",
        )
        .fetch_optional(pool)
        .await?
        .as_deref()
            == Some("herald");
    if !ours {
        return Err(StoreError::PgForeign {
            target: target.to_owned(),
            tables: crate::shown_tables(&tables),
        });
    }
    if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations")
            .fetch_one(pool)
            .await?
            .try_get("v")?;
        let known = known_version();
        if found > known {
            return Err(StoreError::PgTooNew {
                target: target.to_owned(),
                found,
                known,
            });
        }
    }
    Ok(())
}
