//! Synapse's own SQL for the destinations list, run on a database of the
//! test's choosing (Herald's SQLite file, or Synapse's SQLite or
//! PostgreSQL database): the oracle the list is compared with (with `%`/`_`
//! escaped, Herald's one deliberate difference).
#![allow(dead_code)]

use serde_json::{json, Value};
use sqlx::Row;

/// Where the oracle runs.
#[derive(Clone, Copy)]
pub enum OracleDb<'a> {
    Sqlite(&'a sqlx::SqlitePool),
    Postgres(&'a sqlx::PgPool),
    /// Herald's own store on PostgreSQL: Synapse's query with NULLs ordered
    /// as on SQLite (first ascending, last descending), the order Herald's
    /// own list keeps on both backends.
    PostgresSqliteNulls(&'a sqlx::PgPool),
}

/// Synapse's query, as Synapse runs it on that database (NULLs ordered as
/// that database orders them).
pub async fn synapse_list_sql(
    db: OracleDb<'_>,
    order_by: &str,
    dir: &str,
    filter: Option<&str>,
    from: i64,
    limit: i64,
) -> (Vec<Value>, i64) {
    let order = match (dir == "b", matches!(db, OracleDb::PostgresSqliteNulls(_))) {
        (true, false) => "DESC",
        (false, false) => "ASC",
        (true, true) => "DESC NULLS LAST",
        (false, true) => "ASC NULLS FIRST",
    };
    let (where_sql, arg) = match filter {
        Some(f) => {
            let escaped = f
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            (
                "WHERE LOWER(destination) LIKE ? ESCAPE '\\'",
                Some(format!("%{escaped}%")),
            )
        }
        None => ("", None),
    };
    let count_sql = format!("SELECT COUNT(*) FROM destinations {where_sql}");
    let sql = format!(
        "SELECT destination, retry_last_ts, CAST(retry_interval AS BIGINT), failure_ts, \
         last_successful_stream_ordering \
         FROM destinations {where_sql} ORDER BY {order_by} {order}, destination ASC LIMIT ? OFFSET ?"
    );
    let to_json = |dest: String, a: Option<i64>, b: Option<i64>, c: Option<i64>, d: Option<i64>| {
        json!({
            "destination": dest,
            "retry_last_ts": a.unwrap_or(0),
            "retry_interval": b.unwrap_or(0),
            "failure_ts": c,
            "last_successful_stream_ordering": d,
        })
    };
    // The same two queries on either kind of pool (sqlx has no query
    // generic over both); PostgreSQL numbers its placeholders.
    macro_rules! run {
        ($pool:expr, $count_sql:expr, $sql:expr) => {{
            let mut count = sqlx::query($count_sql);
            if let Some(a) = &arg {
                count = count.bind(a.clone());
            }
            let total: i64 = count.fetch_one($pool).await.unwrap().get(0);
            let mut q = sqlx::query($sql);
            if let Some(a) = &arg {
                q = q.bind(a.clone());
            }
            let rows = q.bind(limit).bind(from).fetch_all($pool).await.unwrap();
            let rows = rows
                .iter()
                .map(|r| to_json(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
            (rows, total)
        }};
    }
    match db {
        OracleDb::Sqlite(pool) => run!(pool, &count_sql, &sql),
        OracleDb::Postgres(pool) | OracleDb::PostgresSqliteNulls(pool) => {
            let (count_sql, sql) = (
                super::synapse_db::dollar(&count_sql),
                super::synapse_db::dollar(&sql),
            );
            run!(pool, &count_sql, &sql)
        }
    }
}
