//! All SQL lives here. The store opens (or creates) the SQLite file in WAL
//! mode, refuses a file that is not Herald's or is from a newer version,
//! runs the embedded migrations, and offers typed operations per table
//! family: [`destinations`] (with the in-memory [`index`] that serves the
//! admin list), [`users`] (accounts and access tokens) and [`outbox`] (the
//! sender's accepted PDUs and EDUs, written by group commit).

pub mod delivery;
pub mod destinations;
pub mod index;
mod orderings;
pub mod outbox;
mod ranked;
mod shared_index;
pub mod users;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

pub use destinations::{Destinations, ResetOutcome};
pub use herald_federation::clock::now_ms;
pub use herald_federation::RetryTimings;
pub use index::{DestinationIndex, DestinationRow};
pub use outbox::{NewEdu, NewEvent, Outbox, OutboxError};
pub use users::{TokenOwner, User, Users};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error(
        "{path} is not a Herald database (it holds tables {tables}); \
         refusing to touch it: point `database` at a new or Herald file"
    )]
    Foreign { path: PathBuf, tables: String },
    #[error(
        "{path} was written by a newer Herald (schema version {found}, this build knows up to {known}); \
         refusing to touch it: upgrade Herald"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migrating {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("a store task stopped: {0}")]
    Task(String),
    #[error("unexpected value in the database: {what}")]
    Corrupt { what: String },
}

/// The database, opened: one handle per table family, each with one job.
/// Clone it freely (every handle shares one connection pool).
#[derive(Clone)]
pub struct Store {
    /// `destinations` and `destination_rooms`, with the in-memory index.
    pub destinations: Destinations,
    /// The sender's accepted PDUs and EDUs and what it delivered.
    pub outbox: Outbox,
    /// Accounts and access tokens.
    pub users: Users,
    pool: SqlitePool,
}

impl Store {
    /// Opens `path`, creating and migrating it if needed.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        check_identity(path).await?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.into(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.into(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.into(),
                source,
            })?;
        orderings::orderings_above_imported(&pool).await?;
        let destinations = Destinations::load(pool.clone()).await?;
        Ok(Store {
            outbox: Outbox::new(pool.clone(), destinations.clone()),
            users: Users::new(pool.clone()),
            destinations,
            pool,
        })
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Refuses, without writing anything, a file that is not a Herald database
/// or that a newer Herald migrated.
async fn check_identity(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let open_err = |source| StoreError::Open {
        path: path.into(),
        source,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(open_err)?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .map_err(open_err)?;
    if tables.is_empty() {
        return Ok(());
    }
    let ours = tables.iter().any(|t| t == "herald_meta")
        && sqlx::query_scalar::<_, String>(
            "SELECT value FROM herald_meta WHERE key = 'application'",
        )
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten()
        .as_deref()
            == Some("herald");
    if !ours {
        let mut shown: Vec<&str> = tables.iter().map(String::as_str).take(8).collect();
        if tables.len() > shown.len() {
            shown.push("…");
        }
        return Err(StoreError::Foreign {
            path: path.into(),
            tables: shown.join(", "),
        });
    }
    if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(open_err)?
            .try_get("v")
            .map_err(open_err)?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if found > known {
            return Err(StoreError::TooNew {
                path: path.into(),
                found,
                known,
            });
        }
    }
    conn.close().await.map_err(open_err)?;
    Ok(())
}

/// A JSON array of strings, for `json_each(?)`: one statement for many rows.
pub(crate) fn json_array<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    serde_json::Value::Array(
        items
            .into_iter()
            .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
            .collect(),
    )
    .to_string()
}
