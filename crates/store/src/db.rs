//! Which database Herald's own store is on, and how one query runs on it:
//! [`DatabaseTarget`] tells an SQLite path from a `postgresql://` URL (the
//! `database` setting and every CLI `--database`), [`Db`] holds the pool of
//! either, and [`on_db!`] runs one body on whichever it holds.
//!
//! Shared queries are written once with `$1, $2, …` placeholders whose
//! first appearances are in ascending order: PostgreSQL binds `$n` to the
//! n-th value, and SQLite numbers a `$name` parameter by its first
//! appearance, so the same text binds the same values on both (a parameter
//! may be used again later; the unit tests below prove both). Where the SQL
//! must differ (`BEGIN IMMEDIATE`, `sqlite_master`, PRAGMAs, sequences) the
//! two texts stay side by side in the function that runs them.

use std::path::PathBuf;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// Where Herald's own store is: an SQLite file (the default) or a
/// PostgreSQL database named by a `postgresql://` or `postgres://` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseTarget {
    /// Reads a `database` value: a URL starting with `postgresql://` or
    /// `postgres://` (scheme in any case) is PostgreSQL, anything else a
    /// path to an SQLite file, as before.
    pub fn parse(value: &str) -> DatabaseTarget {
        if is_postgres_url(value) {
            DatabaseTarget::Postgres(value.to_owned())
        } else {
            DatabaseTarget::Sqlite(PathBuf::from(value))
        }
    }

    /// How to name it in a message or a log: the path, or the URL without
    /// its password.
    pub fn shown(&self) -> String {
        match self {
            DatabaseTarget::Sqlite(path) => path.display().to_string(),
            DatabaseTarget::Postgres(url) => crate::synapse::without_password(url),
        }
    }
}

/// `Debug` never shows a password.
impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseTarget::Postgres(_) => f.debug_tuple("Postgres").field(&self.shown()).finish(),
        }
    }
}

/// Whether a `database` value names PostgreSQL rather than an SQLite file.
pub fn is_postgres_url(value: &str) -> bool {
    let value = value.trim_start();
    ["postgresql://", "postgres://"].iter().any(|scheme| {
        value
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// The connection pool of Herald's own store, on either backend. Cheap to
/// clone (both pools are handles).
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl From<SqlitePool> for Db {
    fn from(pool: SqlitePool) -> Db {
        Db::Sqlite(pool)
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Db {
        Db::Postgres(pool)
    }
}

impl Db {
    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }

    /// Whether this is PostgreSQL (for the few texts that differ).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Whether a row can hold `text`: PostgreSQL stores no NUL character,
    /// so a lookup of a key holding one finds nothing without asking (as
    /// SQLite would find nothing, the key never having been written).
    pub(crate) fn can_hold(&self, text: &str) -> bool {
        !(self.is_postgres() && text.contains('\0'))
    }

    /// A transaction as each backend begins one by default (SQLite:
    /// deferred).
    pub(crate) async fn begin(&self) -> Result<DbTx, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => pool.begin().await.map(DbTx::Sqlite),
            Db::Postgres(pool) => pool.begin().await.map(DbTx::Postgres),
        }
    }

    /// A transaction that reads, then writes: SQLite's `BEGIN IMMEDIATE`
    /// (the write lock at once, so a read cannot make the later write fail
    /// with `SQLITE_BUSY_SNAPSHOT`); PostgreSQL's rows lock as they are
    /// written, its default `BEGIN` suffices.
    pub(crate) async fn begin_write(&self) -> Result<DbTx, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => pool.begin_with("BEGIN IMMEDIATE").await.map(DbTx::Sqlite),
            Db::Postgres(pool) => pool.begin().await.map(DbTx::Postgres),
        }
    }
}

/// Runs `$body` with `$pool` bound to the pool [`Db`] holds: the body is
/// expanded once per pool type, so one query text (with `$n` placeholders)
/// and one set of binds serve both backends. With `|pool, pg|`, `pg` is
/// `true` on PostgreSQL, to pick between two texts kept side by side.
///
/// ```ignore
/// let n: i64 = on_db!(&db, |pool| sqlx::query_scalar("SELECT $1").bind(1_i64).fetch_one(pool).await)?;
/// ```
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
    ($db:expr, |$pool:ident, $pg:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => {
                let $pg = false;
                $body
            }
            $crate::db::Db::Postgres($pool) => {
                let $pg = true;
                $body
            }
        }
    };
}
pub(crate) use on_db;

/// A transaction on either backend (see [`Db::begin`], [`Db::begin_write`]).
pub(crate) enum DbTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl DbTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            DbTx::Sqlite(tx) => tx.commit().await,
            DbTx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// [`on_db!`] for a transaction: `$conn` is the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`).
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::db::DbTx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::DbTx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
    ($tx:expr, |$conn:ident, $pg:ident| $body:expr) => {
        match $tx {
            $crate::db::DbTx::Sqlite(tx) => {
                let $conn = &mut **tx;
                let $pg = false;
                $body
            }
            $crate::db::DbTx::Postgres(tx) => {
                let $conn = &mut **tx;
                let $pg = true;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[test]
    fn urls_select_postgres_and_anything_else_is_a_path() {
        for url in [
            "postgresql://herald@127.0.0.1/herald",
            "postgres://herald:pw@db.example/herald?sslmode=require",
            "PostgreSQL://h@localhost/h",
        ] {
            assert!(matches!(DatabaseTarget::parse(url), DatabaseTarget::Postgres(u) if u == url));
        }
        for path in [
            "herald.db",
            "/var/lib/herald/herald.db",
            "postgresql.db",
            "./postgres:/x",
            "",
        ] {
            assert_eq!(
                DatabaseTarget::parse(path),
                DatabaseTarget::Sqlite(PathBuf::from(path))
            );
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let t = DatabaseTarget::parse("postgresql://herald:s3cret@127.0.0.1:5432/herald");
        assert_eq!(t.shown(), "postgresql://herald:***@127.0.0.1:5432/herald");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    /// [`PLACEHOLDERS`] bound to "a", 2, "c" on `db`.
    async fn placeholders_row(db: &Db) -> (String, i64, String, String) {
        on_db!(db, |pool| sqlx::query(PLACEHOLDERS)
            .bind("a")
            .bind(2_i64)
            .bind("c")
            .fetch_one(pool)
            .await
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))))
        .unwrap()
    }

    /// The placeholder rule the shared texts rely on, on SQLite: `$n`
    /// numbered by first appearance, a repeated `$1` bound to the first
    /// value. (The same text on PostgreSQL: `tests/postgres.rs`.)
    #[tokio::test]
    async fn sqlite_binds_dollar_placeholders_as_postgres_does() {
        let db = Db::Sqlite(SqlitePool::connect("sqlite::memory:").await.unwrap());
        assert_eq!(
            placeholders_row(&db).await,
            ("a".into(), 2, "c".into(), "a".into())
        );
        db.close().await;
    }

    /// The same text and binds on PostgreSQL give the same row.
    #[tokio::test]
    async fn postgres_binds_the_same_text_the_same() {
        let (_cluster, url) = crate::test_cluster::fresh_database("placeholders").await;
        let db = Db::Postgres(PgPool::connect(&url).await.unwrap());
        assert_eq!(
            placeholders_row(&db).await,
            ("a".into(), 2, "c".into(), "a".into())
        );
        db.close().await;
    }

    /// Three parameters, the first used twice (once after the others).
    pub(crate) const PLACEHOLDERS: &str =
        "SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT), CAST($3 AS TEXT), CAST($1 AS TEXT)";
}
