//! An empty, real Synapse 1.163 schema, made by Synapse itself
//! (`update_synapse_database` from `.tools/synapse-venv`, which
//! `scripts/synapse-schema.sh` prepares), in an SQLite file or a PostgreSQL
//! database, and SQL to seed its `destinations` and `destination_rooms`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use herald_shared::DestinationRoom;
use herald_store::DestinationRow;

use super::postgres::PgCluster;

fn venv_bin(tool: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/synapse-venv/bin")
        .join(tool);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/synapse-schema.sh (make synapse-venv) to install \
         matrix-synapse 1.163.0 and psycopg2-binary",
        bin.display()
    );
    bin
}

/// Runs Synapse's schema creation with `database` (a YAML mapping) in `dir`.
fn create_schema(dir: &Path, database: &str) {
    // An ed25519 seed of zeros: only the config loader reads it.
    std::fs::write(
        dir.join("signing.key"),
        "ed25519 a_test AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .expect("key");
    let config = dir.join("schema.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: synapse.test\nreport_stats: false\nsigning_key_path: {}\n\
             media_store_path: {}\ndatabase:\n{database}\n",
            dir.join("signing.key").display(),
            dir.join("media").display()
        ),
    )
    .expect("config");
    let out = Command::new(venv_bin("update_synapse_database"))
        .arg("--database-config")
        .arg(&config)
        .current_dir(dir)
        .output()
        .expect("run update_synapse_database");
    assert!(
        out.status.success(),
        "update_synapse_database failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty Synapse schema in a new SQLite file `dir/homeserver.db`.
pub fn sqlite_schema(dir: &Path) -> PathBuf {
    let db = dir.join("homeserver.db");
    let work = dir.join("synapse-schema");
    std::fs::create_dir_all(&work).expect("dir");
    create_schema(
        &work,
        &format!("  name: sqlite3\n  args:\n    database: {}", db.display()),
    );
    db
}

/// An empty Synapse schema in a new database `name` of `pg`; its URL.
pub async fn pg_schema(pg: &PgCluster, name: &str) -> String {
    let url = pg.create_database(name).await;
    let work = pg.dir().join(format!("synapse-schema-{name}"));
    std::fs::create_dir_all(&work).expect("dir");
    create_schema(
        &work,
        &format!(
            "  name: psycopg2\n  args:\n    user: herald\n    database: {name}\n    \
             host: 127.0.0.1\n    port: {}\n    cp_min: 1\n    cp_max: 2",
            pg.port
        ),
    );
    url
}

/// Synapse's database for a test: SQLite or PostgreSQL, opened by the test
/// as an admin's `sqlite3` or `psql` would be.
pub enum SynapseDb {
    Sqlite {
        path: PathBuf,
        pool: sqlx::SqlitePool,
    },
    Postgres {
        url: String,
        pool: sqlx::PgPool,
    },
}

impl SynapseDb {
    pub async fn sqlite(dir: &Path) -> SynapseDb {
        let path = sqlite_schema(dir);
        let pool = super::sql_pool(&path).await;
        SynapseDb::Sqlite { path, pool }
    }

    pub async fn postgres(pg: &PgCluster, name: &str) -> SynapseDb {
        let url = pg_schema(pg, name).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect");
        SynapseDb::Postgres { url, pool }
    }

    /// What `[synapse] database` says.
    pub fn setting(&self) -> String {
        match self {
            SynapseDb::Sqlite { path, .. } => path.display().to_string(),
            SynapseDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// Runs one statement with `?` placeholders (turned into `$n` on
    /// PostgreSQL), binding optional integers and texts.
    pub async fn exec(&self, sql: &str, args: &[Arg]) {
        match self {
            SynapseDb::Sqlite { pool, .. } => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(*v),
                        Arg::Text(t) => q.bind(t.clone()),
                    };
                }
                q.execute(pool).await.expect(sql);
            }
            SynapseDb::Postgres { pool, .. } => {
                let sql = dollar(sql);
                let mut q = sqlx::query(&sql);
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(*v),
                        Arg::Text(t) => q.bind(t.clone()),
                    };
                }
                q.execute(pool).await.expect(&sql);
            }
        }
    }

    pub async fn put_row(&self, r: &DestinationRow) {
        let int4 = |v: Option<i64>| Arg::Int(v);
        self.exec(
            "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
             last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)",
            &[
                Arg::Text(r.destination.clone()),
                Arg::Int(r.retry_last_ts),
                int4(r.retry_interval),
                Arg::Int(r.failure_ts),
                Arg::Int(r.last_successful_stream_ordering),
            ],
        )
        .await;
    }

    pub async fn put_rooms(&self, destination: &str, rooms: &[DestinationRoom]) {
        for room in rooms {
            // Synapse's `destination_rooms.room_id` references `rooms`.
            self.exec(
                "INSERT INTO rooms (room_id, is_public) VALUES (?, FALSE) ON CONFLICT DO NOTHING",
                &[Arg::Text(room.room_id.clone())],
            )
            .await;
            self.exec(
                "INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES (?, ?, ?)",
                &[
                    Arg::Text(destination.into()),
                    Arg::Text(room.room_id.clone()),
                    Arg::Int(Some(room.stream_ordering)),
                ],
            )
            .await;
        }
    }

    /// Everything in both tables, in a fixed order, as text: compared before
    /// and after to prove nothing was written.
    pub async fn dump(&self) -> String {
        let d = "SELECT destination || '|' || COALESCE(CAST(retry_last_ts AS TEXT), 'N') || '|' || \
                 COALESCE(CAST(retry_interval AS TEXT), 'N') || '|' || COALESCE(CAST(failure_ts AS TEXT), 'N') \
                 || '|' || COALESCE(CAST(last_successful_stream_ordering AS TEXT), 'N') \
                 FROM destinations ORDER BY destination";
        let r = "SELECT destination || '|' || room_id || '|' || CAST(stream_ordering AS TEXT) \
                 FROM destination_rooms ORDER BY destination, room_id";
        let mut out = Vec::new();
        for sql in [d, r] {
            let lines: Vec<String> = match self {
                SynapseDb::Sqlite { pool, .. } => sqlx::query_scalar(sql).fetch_all(pool).await,
                SynapseDb::Postgres { pool, .. } => sqlx::query_scalar(sql).fetch_all(pool).await,
            }
            .expect("dump");
            out.extend(lines);
            out.push("--".into());
        }
        out.join("\n")
    }

    pub async fn close(&self) {
        match self {
            SynapseDb::Sqlite { pool, .. } => pool.close().await,
            SynapseDb::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// A bound value for [`SynapseDb::exec`].
pub enum Arg {
    Int(Option<i64>),
    Text(String),
}

/// `?` placeholders as PostgreSQL's `$1`, `$2`, … (none of the tests' SQL
/// has a `?` inside a string literal).
pub fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}
