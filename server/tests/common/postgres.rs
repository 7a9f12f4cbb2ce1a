//! A throwaway PostgreSQL cluster for one test, started by
//! `scripts/pg-cluster.sh` (the one way the tests, the benchmarks and
//! `make attached` start one: `initdb` in a temp dir as the `postgres` user
//! when run as root, a free loopback port, trust auth, `fsync=off`), stopped
//! and removed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
}

/// `scripts/pg-cluster.sh` of the workspace, from the server's tests or
/// from a crate's under `crates/` (herald-store includes this file too).
fn script() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("scripts/pg-cluster.sh"))
        .find(|script| script.exists())
        .unwrap_or_else(|| manifest.join("../scripts/pg-cluster.sh"))
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let out = Command::new(script())
            .arg("start")
            .output()
            .expect("run scripts/pg-cluster.sh");
        assert!(
            out.status.success(),
            "scripts/pg-cluster.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (dir, port) = text.rsplit_once(':').expect("DIR:PORT");
        PgCluster {
            dir: PathBuf::from(dir),
            port: port.parse().expect("a port"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://herald@127.0.0.1:{}/{database}", self.port)
    }

    /// A new database as Synapse wants it (UTF8, C collation).
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the cluster");
        sqlx::query(&format!(
            "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .execute(&mut conn)
        .await
        .expect("create database");
        conn.close().await.ok();
        self.url(name)
    }
}

/// A cluster of its own and a new, empty database in it, for one test
/// (Herald's store tests: the database is created with the cluster's
/// defaults, as an admin's `createdb` would).
pub async fn fresh_database(name: &str) -> (PgCluster, String) {
    use sqlx::Connection;
    let cluster = PgCluster::start();
    let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("connect to the cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    conn.close().await.ok();
    let url = cluster.url(name);
    (cluster, url)
}

impl PgCluster {
    /// Stops the server, keeping its data (an outage), or starts it again
    /// on the same port (`resume`).
    pub fn halt(&self) {
        self.run("halt");
    }

    pub fn resume(&self) {
        self.run("resume");
    }

    fn run(&self, what: &str) {
        let out = Command::new(script())
            .arg(what)
            .arg(format!("{}:{}", self.dir.display(), self.port))
            .output()
            .expect("run scripts/pg-cluster.sh");
        assert!(
            out.status.success(),
            "scripts/pg-cluster.sh {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(format!("{}:{}", self.dir.display(), self.port))
            .status();
    }
}
