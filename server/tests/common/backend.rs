//! The backend a test runs Herald's store on: a real SQLite file in a temp
//! dir, or a new database in a throwaway PostgreSQL cluster
//! (`scripts/pg-cluster.sh` through [`super::postgres`], shared by the tests
//! of one binary that run at the same time and stopped when the last of
//! them ends). [`both_backends!`] makes each test body two tests,
//! `<name>::sqlite` and `<name>::postgres`. Used by the server's tests and
//! herald-store's (which include this file).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use herald_store::{DatabaseTarget, Store};

use super::postgres;
use sqlx::{Connection, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database; the SQLite file's directory or the cluster lives as
/// long as it does.
pub struct TestDb {
    pub target: DatabaseTarget,
    _dir: tempfile::TempDir,
    _cluster: Option<Arc<postgres::PgCluster>>,
}

static CLUSTER: Mutex<Weak<postgres::PgCluster>> = Mutex::new(Weak::new());
static DATABASES: AtomicU32 = AtomicU32::new(0);

fn shared_cluster() -> Arc<postgres::PgCluster> {
    let mut shared = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(postgres::PgCluster::start());
    *shared = Arc::downgrade(&cluster);
    cluster
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                target: DatabaseTarget::Sqlite(dir.path().join("herald.db")),
                _dir: dir,
                _cluster: None,
            },
            Backend::Postgres => {
                let cluster = shared_cluster();
                let name = format!(
                    "herald_{}_{}",
                    std::process::id(),
                    DATABASES.fetch_add(1, Ordering::SeqCst)
                );
                let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                TestDb {
                    target: DatabaseTarget::Postgres(cluster.url(&name)),
                    _dir: dir,
                    _cluster: Some(cluster),
                }
            }
        }
    }

    /// A temp directory of the test's own (on SQLite, the file's).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn backend(&self) -> Backend {
        match self.target {
            DatabaseTarget::Sqlite(_) => Backend::Sqlite,
            DatabaseTarget::Postgres(_) => Backend::Postgres,
        }
    }

    /// The `database` setting (and `--database` value) naming it.
    pub fn setting(&self) -> String {
        match &self.target {
            DatabaseTarget::Sqlite(path) => path.display().to_string(),
            DatabaseTarget::Postgres(url) => url.clone(),
        }
    }

    /// Opens (creating and migrating) the store, as Herald does.
    pub async fn open(&self) -> Store {
        Store::open_target(&self.target).await.unwrap()
    }

    /// Runs statements on a connection of the test's own, as an admin's
    /// `sqlite3` or `psql` would.
    pub async fn execute(&self, sql: &str) {
        match &self.target {
            DatabaseTarget::Sqlite(path) => {
                let mut conn = sqlite_connection(path).await;
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            DatabaseTarget::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The first column of every row `sql` returns, as an integer.
    pub async fn i64s(&self, sql: &str) -> Vec<i64> {
        self.first_column(sql).await
    }

    /// The first column of every row `sql` returns, as text.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        self.first_column(sql).await
    }

    /// The first column of every row `sql` returns, on a connection of its
    /// own to either backend.
    async fn first_column<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>,
    {
        match &self.target {
            DatabaseTarget::Sqlite(path) => {
                let mut conn = sqlite_connection(path).await;
                let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows.iter().map(|r| r.get::<T, _>(0)).collect()
            }
            DatabaseTarget::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows.iter().map(|r| r.get::<T, _>(0)).collect()
            }
        }
    }
}

/// `both_backends!(name, …)`: each `async fn name(backend: Backend)` runs
/// as the tests `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::backend::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::common::backend::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A connection of the test's own to the SQLite file at `path`.
async fn sqlite_connection(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}
