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

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster.sh")
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

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(format!("{}:{}", self.dir.display(), self.port))
            .status();
    }
}
