//! `herald migrate-store`: copies every table of a SQLite Herald store into
//! a new PostgreSQL one, keeping every ID and ordering, so that a server
//! started on the copy continues exactly where the SQLite one stopped.
//!
//! - Checked first, nothing written on refusal: the source must be Herald's
//!   and of this build's schema version, no `herald serve` may hold the
//!   source or the target (their serving claims are taken and held for the
//!   whole copy, so none can start meanwhile), and the target must hold no
//!   Herald data unless `replace`.
//! - One PostgreSQL transaction: a copy that fails halfway (a row
//!   PostgreSQL cannot store, the connection lost) leaves the target as it
//!   was, and the command is simply run again; nothing needs resuming. The
//!   source is read in one read transaction (a consistent snapshot) and
//!   streamed: at most [`BATCH`] rows are held, written as one multi-row
//!   `INSERT`.
//! - The columns copied are the target's (PostgreSQL's catalog, which the
//!   same schema version gives the same columns as SQLite's), each decoded
//!   by its PostgreSQL type. Every table is copied; `_sqlx_migrations` is not
//!   (the target's own migrations are the same versions, checked) and
//!   neither is SQLite's `sqlite_sequence`: its high-water marks move the
//!   target's identity sequences instead (an AUTOINCREMENT value is never
//!   reused, even after its row went, so neither is it on the copy).

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Postgres, QueryBuilder, Row};

use crate::db::Db;
use crate::{DatabaseTarget, StoreError};

/// Rows written by one `INSERT` (and between two progress reports); at most
/// 10 columns a row stays far below PostgreSQL's 65,535 parameters.
const BATCH: usize = 1_000;

/// Every table of Herald's store, in an order that writes a row after any
/// row it names (foreign keys).
pub const TABLES: [&str; 10] = [
    "herald_meta",
    "destinations",
    "destination_rooms",
    "users",
    "access_tokens",
    "outgoing_events",
    "destination_pdus",
    "destination_edus",
    "destination_health",
    "destination_history",
];

/// Tables of Herald's store a copy leaves alone: which instance holds which
/// shard, and the instances' heartbeats. A SQLite store never writes them
/// (its one server holds every shard); the target keeps its own (the 256
/// free shard rows its migrations made), and the instances started on it
/// claim them.
pub const NOT_COPIED: [&str; 2] = ["herald_instances", "herald_shards"];

/// Where a copy is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateProgress {
    /// Which table is being copied now.
    pub table: &'static str,
    /// Rows of it copied so far.
    pub done: u64,
    /// Rows it holds.
    pub total: u64,
}

/// Rows copied per table, in [`TABLES`]' order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrateCounts {
    pub tables: Vec<(&'static str, u64)>,
}

/// How a column's values are read from SQLite and bound for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
    Bytes,
}

/// One value of one row, NULL or not.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

/// A column of the target: its name, kind, and whether it is an identity.
struct Column {
    name: String,
    kind: Kind,
    identity: bool,
}

/// Copies the SQLite Herald store at `from` into the PostgreSQL database
/// `to` (created beforehand, empty or Herald's without data; migrated here).
/// `replace` allows a target that holds Herald data: it is replaced.
pub async fn migrate_store(
    from: &Path,
    to: &str,
    replace: bool,
    mut progress: impl FnMut(MigrateProgress),
) -> Result<MigrateCounts, StoreError> {
    let source_problem = |problem: String| StoreError::MigrateSource {
        path: from.display().to_string(),
        problem,
    };
    if !crate::is_postgres_url(to) {
        return Err(StoreError::MigrateTarget {
            target: to.to_owned(),
            problem: "is not a postgresql:// URL".into(),
        });
    }
    if !from.is_file() {
        return Err(source_problem("is not a file".into()));
    }
    check_source(from).await?;
    let _source_claim = claim(&DatabaseTarget::Sqlite(from.to_owned()), "--from").await?;
    let _target_claim = claim(&DatabaseTarget::Postgres(to.to_owned()), "--to").await?;
    let Db::Postgres(target) = crate::postgres::open_schema(to).await? else {
        return Err(StoreError::Task("PostgreSQL opened as SQLite".into()));
    };
    let result = copy(from, &target, to, replace, &mut progress).await;
    target.close().await;
    result
}

/// Refuses a source that is not Herald's or is not of this build's schema
/// version (reading only).
async fn check_source(from: &Path) -> Result<(), StoreError> {
    let problem = |problem: String| StoreError::MigrateSource {
        path: from.display().to_string(),
        problem,
    };
    // The store's own check names a foreign or newer file.
    crate::check_identity(from).await.map_err(|e| match e {
        StoreError::Foreign { tables, .. } => problem(format!(
            "is not a Herald database (it holds tables {tables})"
        )),
        StoreError::TooNew { found, known, .. } => problem(format!(
            "is Herald's schema version {found}, newer than this Herald's ({known}): \
             migrate it with the Herald that wrote it"
        )),
        other => other,
    })?;
    let mut conn = crate::read_only(from).await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await?;
    if !tables.iter().any(|t| t == "herald_meta") {
        let _ = conn.close().await;
        return Err(problem("is not a Herald database (it is empty)".into()));
    }
    let found: i64 = if tables.iter().any(|t| t == "_sqlx_migrations") {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await?
    } else {
        0
    };
    let _ = conn.close().await;
    let known = crate::known_version();
    if found != known {
        return Err(problem(format!(
            "is Herald's schema version {found}, this Herald's is {known}: start this \
             Herald's `herald serve` on it once (it migrates the file), then move it"
        )));
    }
    Ok(())
}

/// How long a claim is waited for: a process that ended a moment ago (a
/// server stopped, the previous `migrate-store`) may still hold it until
/// PostgreSQL notices its session closed.
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Takes the serving claim of `target`, or says which is in use.
async fn claim(
    target: &DatabaseTarget,
    flag: &'static str,
) -> Result<crate::ServingClaim, StoreError> {
    crate::claim_whole(target, CLAIM_WAIT)
        .await
        .map_err(|e| match e {
            StoreError::Serving { target, detail } => StoreError::MigrateInUse {
                flag,
                target,
                detail,
            },
            other => other,
        })
}

async fn copy(
    from: &Path,
    target: &sqlx::PgPool,
    to: &str,
    replace: bool,
    progress: &mut impl FnMut(MigrateProgress),
) -> Result<MigrateCounts, StoreError> {
    let shown = crate::synapse::without_password(to);
    let held = target_contents(target).await?;
    if !held.is_empty() && !replace {
        return Err(StoreError::MigrateNotEmpty {
            target: shown,
            held: held.join(", "),
        });
    }
    let mut source = crate::read_only(from).await?;
    // One snapshot of the source for every table.
    sqlx::query("BEGIN").execute(&mut source).await?;
    let mut tx = target.begin().await?;
    // No notice per copied row: instances started on the target later
    // load it whole anyway.
    crate::notices::bulk_write_pg(&mut tx).await?;
    // Emptied first: the migrations' own `herald_meta` row, and with
    // `replace` everything the target held.
    sqlx::query(&format!("TRUNCATE {}", TABLES.join(", ")))
        .execute(&mut *tx)
        .await?;
    let mut counts = MigrateCounts::default();
    for table in TABLES {
        let columns = target_columns(&mut tx, table).await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut source)
            .await?;
        let total = total.max(0) as u64;
        progress(MigrateProgress {
            table,
            done: 0,
            total,
        });
        let done = copy_table(&mut source, &mut tx, table, &columns, |done| {
            progress(MigrateProgress {
                table,
                done,
                total: total.max(done),
            })
        })
        .await?;
        for column in columns.iter().filter(|c| c.identity) {
            move_identity(&mut source, &mut tx, table, &column.name).await?;
        }
        counts.tables.push((table, done));
    }
    tx.commit().await?;
    let _ = sqlx::query("COMMIT").execute(&mut source).await;
    let _ = source.close().await;
    // A bulk load leaves the planner without statistics and the visibility
    // map empty (every index-only scan, e.g. a deep page of a destination's
    // rooms, would visit the heap) until autovacuum comes by: done now.
    sqlx::query(&format!("VACUUM (ANALYZE) {}", TABLES.join(", ")))
        .execute(target)
        .await?;
    Ok(counts)
}

/// What the target holds besides a new store's own `herald_meta` row, as
/// "<table> (<rows>)" (empty: nothing).
async fn target_contents(target: &sqlx::PgPool) -> Result<Vec<String>, StoreError> {
    let mut held = Vec::new();
    for table in TABLES {
        let filter = if table == "herald_meta" {
            " WHERE key <> 'application'"
        } else {
            ""
        };
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}{filter}"))
            .fetch_one(target)
            .await?;
        if n > 0 {
            held.push(format!("{table} ({n})"));
        }
    }
    Ok(held)
}

/// The target's columns of `table`, in their order.
async fn target_columns(
    tx: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<Column>, StoreError> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text, is_identity::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, data_type, identity): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let kind = match data_type.as_str() {
            "text" => Kind::Text,
            "bigint" | "integer" => Kind::Int,
            "boolean" => Kind::Bool,
            "bytea" => Kind::Bytes,
            other => {
                return Err(StoreError::Corrupt {
                    what: format!("{table}.{name} has type {other}, which the copy does not know"),
                })
            }
        };
        columns.push(Column {
            name,
            kind,
            identity: identity == "YES",
        });
    }
    if columns.is_empty() {
        return Err(StoreError::Corrupt {
            what: format!("the target has no table {table}"),
        });
    }
    Ok(columns)
}

/// Streams `table` from the source into the target in batches; answers
/// the rows copied.
async fn copy_table(
    source: &mut sqlx::SqliteConnection,
    tx: &mut sqlx::PgConnection,
    table: &str,
    columns: &[Column],
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let list = names.join(", ");
    // In the table's own order (no sort: a scan streams).
    let select = format!("SELECT {list} FROM {table}");
    let mut rows = sqlx::query(&select).fetch(source);
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
    let mut done = 0u64;
    while let Some(row) = rows.try_next().await? {
        batch.push(read_row(&row, columns)?);
        if batch.len() == BATCH {
            done += insert(tx, table, &list, &mut batch).await?;
            progress(done);
        }
    }
    if !batch.is_empty() {
        done += insert(tx, table, &list, &mut batch).await?;
        progress(done);
    }
    Ok(done)
}

fn read_row(row: &SqliteRow, columns: &[Column]) -> Result<Vec<Value>, StoreError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.kind {
                Kind::Text => Value::Text(row.try_get(i)?),
                Kind::Int => Value::Int(row.try_get(i)?),
                Kind::Bool => Value::Bool(row.try_get(i)?),
                Kind::Bytes => Value::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

/// Writes `batch` (emptied) as one multi-row `INSERT`.
async fn insert(
    tx: &mut sqlx::PgConnection,
    table: &str,
    list: &str,
    batch: &mut Vec<Vec<Value>>,
) -> Result<u64, StoreError> {
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("INSERT INTO {table} ({list}) "));
    query.push_values(batch.drain(..), |mut row, values| {
        for value in values {
            match value {
                Value::Text(v) => row.push_bind(v),
                Value::Int(v) => row.push_bind(v),
                Value::Bool(v) => row.push_bind(v),
                Value::Bytes(v) => row.push_bind(v),
            };
        }
    });
    let written = query.build().execute(&mut *tx).await?;
    Ok(written.rows_affected())
}

/// Moves the target's identity sequence of `table.column` above every value
/// the source used: its largest value, and SQLite's high-water mark
/// (`sqlite_sequence`), which may be above it after the newest rows went.
async fn move_identity(
    source: &mut sqlx::SqliteConnection,
    tx: &mut sqlx::PgConnection,
    table: &str,
    column: &str,
) -> Result<(), StoreError> {
    let max: Option<i64> = sqlx::query_scalar(&format!("SELECT MAX({column}) FROM {table}"))
        .fetch_one(&mut *source)
        .await?;
    let high: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
        .bind(table)
        .fetch_optional(&mut *source)
        .await?;
    let used = max.max(high).unwrap_or(0);
    if used > 0 {
        // `true`: the next value is `used + 1`.
        sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, true)")
            .bind(table)
            .bind(column)
            .bind(used)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
