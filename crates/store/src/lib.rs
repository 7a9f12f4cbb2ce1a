//! All SQL lives here. The store opens (or creates, owner-only: 0600 file,
//! 0700 data directory) the SQLite file in WAL mode, refuses a file that is
//! not Herald's, is from a newer version or is damaged (telling which, and
//! leaving no `-wal`/`-shm` it created beside a refused file; an open that
//! fails otherwise, e.g. locked by another process, removes nothing), runs the
//! embedded migrations, and offers typed operations per table
//! family: [`destinations`] (with the in-memory [`index`] that serves the
//! admin list), [`users`] (accounts and access tokens) and [`outbox`] (the
//! sender's accepted PDUs and EDUs, written by group commit). On PostgreSQL,
//! [`notices`] brings other instances' writes to this store within a second.

pub mod db;
pub mod delivery;
pub mod destinations;
pub mod forget;
pub mod history;
pub mod index;
pub mod leases;
pub mod migrate;
pub mod notices;
mod orderings;
pub mod outbox;
pub mod postgres;
mod ranked;
pub mod serving;
pub mod shards;
mod shared_index;
mod substring;
pub mod synapse;
pub mod users;

/// The tests' throwaway PostgreSQL cluster (`scripts/pg-cluster.sh`), the
/// server tests' own helper.
#[cfg(test)]
#[path = "../../../server/tests/common/postgres.rs"]
pub(crate) mod test_cluster;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

pub use db::{is_postgres_url, DatabaseTarget, Db};
pub use destinations::{Destinations, ResetOutcome};
pub use herald_federation::clock::now_ms;
pub use herald_federation::RetryTimings;
pub use index::{DestinationIndex, DestinationRow, IndexBuilder, NullsOrder};
pub use leases::Leases;
pub use migrate::{migrate_store, MigrateCounts, MigrateProgress};
pub use notices::{Notices, Queued};
pub use outbox::{NewEdu, NewEvent, Outbox, OutboxError};
pub use serving::{claim_serving, claim_whole, ServingClaim};
pub use shards::{shard_of, ShardSet, SHARDS};
pub use shared_index::{Edit, SharedIndex};
pub use synapse::{import_synapse, ImportCounts, ImportProgress, SynapseSettings};
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
    #[error(
        "{path} is damaged ({detail}); refusing to start on it. It is still Herald's \
         database: do not replace it. Stop Herald, keep a copy, and let SQLite recover \
         what it can into a new file: `sqlite3 {path} .recover | sqlite3 {path}.recovered`, \
         then point `database` at the recovered file"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path} is not an SQLite database (it does not start with SQLite's header); \
         refusing to touch it: point `database` at a new or Herald file (if it is Herald's \
         and only its first page is damaged, try `sqlite3 {path} .recover`)"
    )]
    NotSqlite { path: PathBuf },
    #[error("cannot create database {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migrating {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    /// Herald's own PostgreSQL database (`database`) cannot be reached or
    /// refuses the login; `target` is the URL without its password.
    #[error("`database` ({target}) does not answer: {detail}")]
    PgUnreachable { target: String, detail: String },
    /// `herald serve` on a database another server already serves.
    #[error(
        "`database` ({target}) is served by another Herald ({detail}): one `herald serve` \
         per database and instance_name (stop the other, or give this one its own `database`, \
         or on PostgreSQL its own `instance_name`)"
    )]
    Serving { target: String, detail: String },
    #[error(
        "`database` ({target}) holds tables that are not Herald's ({tables}); \
         refusing to touch it: point `database` at a new PostgreSQL database for Herald"
    )]
    PgForeign { target: String, tables: String },
    #[error(
        "`database` ({target}) was written by a newer Herald (schema version {found}, \
         this build knows up to {known}); refusing to touch it: upgrade Herald"
    )]
    PgTooNew {
        target: String,
        found: i64,
        known: i64,
    },
    #[error("migrating `database` ({target}): {source}")]
    PgMigrate {
        target: String,
        source: sqlx::migrate::MigrateError,
    },
    /// `herald migrate-store`'s source (`--from`) refused.
    #[error("`--from` ({path}) {problem}")]
    MigrateSource { path: String, problem: String },
    /// `herald migrate-store`'s target (`--to`) refused.
    #[error("`--to` ({target}) {problem}")]
    MigrateTarget { target: String, problem: String },
    /// `herald migrate-store` cannot claim a side (a `herald serve` holds
    /// it, or its claim cannot be taken): `detail` says which.
    #[error(
        "`{flag}` ({target}) cannot be claimed for the copy: {detail} (stop any \
         `herald serve` using it first)"
    )]
    MigrateInUse {
        flag: &'static str,
        target: String,
        detail: String,
    },
    /// `herald migrate-store` into a database that holds Herald's data.
    #[error(
        "Herald's database {target} already holds rows in {held}: refusing to copy over them \
         (pass --replace to replace them)"
    )]
    MigrateNotEmpty { target: String, held: String },
    /// The database cannot be reached or cannot commit now (PostgreSQL
    /// stopped, restarting or cut off; no connection free in time): nothing
    /// was written, and the same request may succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Sql(sqlx::Error),
    /// PostgreSQL cannot store this text (a NUL character, which SQLite
    /// stores): the request's value, not the database, is at fault.
    #[error("PostgreSQL cannot store a NUL character in text: {0}")]
    Unstorable(String),
    #[error("user {0} already exists")]
    UserExists(String),
    /// Other writers kept changing the rows this write needs (e.g. a
    /// destination forgotten again and again while events were queued for
    /// it): nothing was written, and the same request may succeed later.
    #[error("the database is busy: {0}")]
    Contended(String),
    #[error("a store task stopped: {0}")]
    Task(String),
    #[error("unexpected value in the database: {what}")]
    Corrupt { what: String },
    #[error("loading the destinations index: {0}")]
    Load(String),
    /// Synapse's database, at start-up (`setting` is `[synapse] database`)
    /// or for an import (`--from`): `target` names it (a path, or host, port
    /// and database without the password).
    #[error("`{setting}` ({target}) {problem}")]
    Synapse {
        setting: &'static str,
        target: String,
        problem: String,
    },
    /// A read from Synapse's database failed while running.
    #[error("Synapse's database ({target}) does not answer: {detail}")]
    SynapseUnavailable { target: String, detail: String },
    /// A write asked of destinations that are read from Synapse's database.
    #[error(
        "destinations are read from Synapse's database, which Herald never writes \
         (attached mode): make this change through Synapse"
    )]
    ReadOnly,
    /// `herald import-synapse` into a Herald database that holds destinations.
    #[error(
        "Herald's database already holds {destinations} destinations and {rooms} destination \
         rooms: refusing to import over them (pass --replace to replace them)"
    )]
    NotEmpty { destinations: u64, rooms: u64 },
    /// `herald import-synapse --replace` while the sender holds PDUs.
    #[error(
        "Herald's sender still holds {pdus} queued PDUs for the destinations --replace would \
         remove: let Herald deliver them (or forget those destinations) first"
    )]
    QueuedPdus { pdus: u64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        // 22021 character_not_in_repertoire (a NUL in text), 22P05
        // untranslatable_character (`\u0000` in JSON).
        match &e {
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                    && matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                StoreError::Unstorable(db.message().to_owned())
            }
            _ if cannot_reach(&e) => StoreError::Unavailable(e),
            _ => StoreError::Sql(e),
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached (see
    /// [`StoreError::Unavailable`]): the request may be tried again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Contended(_))
    }

    /// Whether PostgreSQL gave up this transaction for another's sake
    /// (40P01 deadlock, 40001 serialization failure), or other writers kept
    /// changing its rows ([`StoreError::Contended`]): nothing was written,
    /// and running it again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Contended(_) => true,
            StoreError::Sql(sqlx::Error::Database(db)) => {
                db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                    && matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }
}

/// Whether `e` says the database is out of reach rather than that the
/// request was wrong: no connection in time, the connection broken, or
/// PostgreSQL's connection-exception class (08xxx), shutting down or
/// starting (57P01–57P03), or out of connections (53300).
fn cannot_reach(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db)
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            })
        }
        _ => false,
    }
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
    /// Instances and the shards each holds (several on one PostgreSQL).
    pub leases: Leases,
    pool: Db,
    /// PostgreSQL: what other instances sharing the database write.
    notices: Option<Arc<Notices>>,
}

impl Store {
    /// Opens `path`, creating and migrating it if needed. A file that is
    /// refused (foreign, newer, damaged, not SQLite) is left as it was, with
    /// no `-wal` or `-shm` beside it that was not there before. Any other
    /// failure (locked, unreadable) removes nothing: what appeared meanwhile
    /// may be another process's.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_reading(path, true).await
    }

    /// Opens the store `target` names: an SQLite file ([`Store::open`]) or
    /// a PostgreSQL database ([`Store::open_postgres`]).
    pub async fn open_target(target: &DatabaseTarget) -> Result<Store, StoreError> {
        match target {
            DatabaseTarget::Sqlite(path) => Store::open(path).await,
            DatabaseTarget::Postgres(url) => Store::open_postgres(url).await,
        }
    }

    /// Opens Herald's store in the PostgreSQL database `url` names,
    /// migrating it if needed (see [`postgres`] for what is refused).
    /// Listens for other instances' writes (see [`notices`]) from before
    /// the index is loaded until [`Store::close`].
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let instance = notices::new_instance_tag();
        let pool = postgres::open_schema_as(url, &instance).await?;
        let listening = match notices::listen(url, &instance).await {
            Ok(listening) => listening,
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        };
        match Store::on_pool(pool.clone(), None, true).await {
            Ok(mut store) => {
                let started =
                    listening.start(store.destinations.clone(), store.outbox.queued_sender());
                store.notices = Some(Arc::new(started));
                Ok(store)
            }
            Err(e) => {
                listening.close().await;
                pool.close().await;
                Err(e)
            }
        }
    }

    /// The PostgreSQL backend process listening for other instances'
    /// writes (`None` on SQLite): for tests that cut it.
    pub fn notices_backend_pid(&self) -> Option<i32> {
        self.notices.as_ref().map(|n| n.backend_pid())
    }

    /// The handles on an opened, migrated pool; `path` is the SQLite file
    /// (read with rusqlite for the index load).
    async fn on_pool(
        pool: Db,
        path: Option<&Path>,
        read_destinations: bool,
    ) -> Result<Store, StoreError> {
        // Reads before writes: damage found while loading leaves the file
        // as it was.
        let destinations = Destinations::load(pool.clone(), path, read_destinations).await?;
        orderings::orderings_above_imported(&pool).await?;
        Ok(Store {
            outbox: Outbox::new(pool.clone(), destinations.clone()),
            users: Users::new(pool.clone()),
            leases: Leases::new(pool.clone()),
            destinations,
            pool,
            notices: None,
        })
    }

    /// [`Store::open`]; with `read_destinations` false the index of
    /// Herald's own `destinations` is left empty (attached, it is Synapse's
    /// rows that are loaded instead, see `synapse`).
    pub(crate) async fn open_reading(
        path: &Path,
        read_destinations: bool,
    ) -> Result<Store, StoreError> {
        let before = Sidecars::present(path);
        let created = create_private(path)?;
        let mut opened = None;
        match Store::open_existing(path, read_destinations, &mut opened).await {
            Ok(store) => Ok(store),
            Err(error) => {
                if let Some(pool) = opened {
                    pool.close().await;
                }
                let error = match error {
                    other if may_be_damage(&other) => diagnose(path).await.unwrap_or(other),
                    other => other,
                };
                if matches!(
                    error,
                    StoreError::Foreign { .. }
                        | StoreError::TooNew { .. }
                        | StoreError::Damaged { .. }
                        | StoreError::NotSqlite { .. }
                ) {
                    before.remove_new(path);
                    // Only the empty file this open made: anything more was
                    // written by someone else.
                    let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
                    if created && empty {
                        let _ = std::fs::remove_file(path);
                    }
                }
                Err(error)
            }
        }
    }

    /// [`Store::open`] once the file exists (or may be created by SQLite);
    /// `opened` receives the pool as soon as there is one, for the caller to
    /// close on failure.
    async fn open_existing(
        path: &Path,
        read_destinations: bool,
        opened: &mut Option<SqlitePool>,
    ) -> Result<Store, StoreError> {
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
        *opened = Some(pool.clone());
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.into(),
                source,
            })?;
        Store::on_pool(Db::Sqlite(pool), Some(path), read_destinations).await
    }

    /// Closes the pool, checkpointing the WAL (and, attached, stops the
    /// refresh and closes Synapse's database).
    pub async fn close(&self) {
        if let Some(notices) = &self.notices {
            notices.stop().await;
        }
        self.destinations.detach().await;
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
    let mut conn = read_only(path).await.map_err(open_err)?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .map_err(open_err)?;
    if tables.is_empty() {
        return Ok(());
    }
    // A `herald_meta` that cannot be read is damage, not a foreign file.
    let ours = tables.iter().any(|t| t == "herald_meta")
        && sqlx::query_scalar::<_, String>(
            "SELECT value FROM herald_meta WHERE key = 'application'",
        )
        .fetch_optional(&mut conn)
        .await
        .map_err(open_err)?
        .as_deref()
            == Some("herald");
    if !ours {
        return Err(StoreError::Foreign {
            path: path.into(),
            tables: shown_tables(&tables),
        });
    }
    if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(open_err)?
            .try_get("v")
            .map_err(open_err)?;
        let known = known_version();
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

/// The newest schema version this build knows on SQLite.
pub(crate) fn known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The first tables of a database that is not Herald's, for the refusal.
pub(crate) fn shown_tables(tables: &[String]) -> String {
    let mut shown: Vec<&str> = tables.iter().map(String::as_str).take(8).collect();
    if tables.len() > shown.len() {
        shown.push("…");
    }
    shown.join(", ")
}

/// A read-only connection that creates nothing beside the file: without a
/// `-wal` (so nothing waits to be checkpointed) or a `-journal` (which may
/// be hot: a rollback to replay first) it opens the file as immutable,
/// which needs no `-shm` either.
async fn read_only(path: &Path) -> Result<sqlx::SqliteConnection, sqlx::Error> {
    let immutable = !sidecar(path, "-wal").exists() && !sidecar(path, "-journal").exists();
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(immutable)
        .disable_statement_logging()
        .connect()
        .await
}

/// Why a file that failed to open failed, when it is the file itself:
/// [`StoreError::NotSqlite`] without SQLite's header, [`StoreError::Damaged`]
/// when `PRAGMA quick_check` finds damage (or cannot run for it). `None`:
/// the file looks sound, the first error stands.
async fn diagnose(path: &Path) -> Option<StoreError> {
    use std::io::Read as _;
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut header));
    match read {
        Ok(0) | Err(_) => return None,
        Ok(n) if n < header.len() || &header != b"SQLite format 3\0" => {
            return Some(StoreError::NotSqlite { path: path.into() })
        }
        Ok(_) => {}
    }
    let damaged = |detail: String| {
        Some(StoreError::Damaged {
            path: path.into(),
            detail,
        })
    };
    let mut conn = match read_only(path).await {
        Ok(conn) => conn,
        Err(e) if is_corruption(&e) => return damaged(sqlite_message(&e)),
        Err(_) => return None,
    };
    let found = sqlx::query_scalar::<_, String>("PRAGMA quick_check(3)")
        .fetch_all(&mut conn)
        .await;
    let _ = conn.close().await;
    match found {
        Ok(lines) if lines.iter().all(|l| l == "ok") => None,
        Ok(lines) => {
            let found: Vec<&str> = lines
                .iter()
                .flat_map(|l| l.lines())
                .filter(|l| !l.starts_with("*** in database"))
                .collect();
            damaged(format!("PRAGMA quick_check: {}", found.join("; ")))
        }
        Err(e) if is_corruption(&e) => damaged(sqlite_message(&e)),
        Err(_) => None,
    }
}

/// Whether a failed open may come from the file itself (SQLite said
/// corrupt or not a database, or a value read back made no sense), so that
/// [`diagnose`] should look: not for a lock or a permission.
fn may_be_damage(error: &StoreError) -> bool {
    match error {
        StoreError::Open { source, .. } | StoreError::Sql(source) => is_corruption(source),
        StoreError::Migrate {
            source: sqlx::migrate::MigrateError::Execute(source),
            ..
        } => is_corruption(source),
        StoreError::Migrate {
            source: sqlx::migrate::MigrateError::ExecuteMigration(source, _),
            ..
        } => is_corruption(source),
        StoreError::Corrupt { .. } => true,
        _ => false,
    }
}

/// SQLITE_CORRUPT or SQLITE_NOTADB, with any extended code.
fn is_corruption(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    matches!(code.map(|c| c & 0xff), Some(11 | 26))
}

fn sqlite_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// `path` with `suffix` appended (`herald.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Which of SQLite's files beside the database were there before we opened
/// it.
struct Sidecars(Vec<(&'static str, bool)>);

impl Sidecars {
    const SUFFIXES: [&'static str; 3] = ["-wal", "-shm", "-journal"];

    fn present(path: &Path) -> Sidecars {
        Sidecars(
            Self::SUFFIXES
                .iter()
                .map(|s| (*s, sidecar(path, s).exists()))
                .collect(),
        )
    }

    /// Removes those we created, once every connection of ours is closed.
    /// (Another process that opened the file meanwhile would have found
    /// them there; a refused file is not one Herald shares.)
    fn remove_new(&self, path: &Path) {
        for (suffix, existed) in &self.0 {
            let file = sidecar(path, suffix);
            if !existed && file.exists() {
                if let Err(e) = std::fs::remove_file(&file) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot remove");
                }
            }
        }
    }
}

/// Creates a missing database file empty and owner-only (0600), and its
/// missing directories 0700, before SQLite opens it: it holds password and
/// token hashes. SQLite gives the `-wal` and `-shm` files the database's
/// mode. Returns whether it created the file.
fn create_private(path: &Path) -> Result<bool, StoreError> {
    if path.exists() {
        return Ok(false);
    }
    let create = |source| StoreError::Create {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                builder.mode(0o700);
            }
            builder.create(dir).map_err(create)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map_err(create)?;
    Ok(true)
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

#[cfg(test)]
mod unavailable_tests {
    use super::StoreError;

    /// Out of reach is told by sqlx's error type, not by its text.
    #[test]
    fn a_database_out_of_reach_is_unavailable_and_a_bad_query_is_not() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(StoreError::from(e).is_unavailable());
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Protocol("unexpected".into()),
        ] {
            assert!(!StoreError::from(e).is_unavailable());
        }
    }
}
