//! A throwaway PostgreSQL cluster for one test: `initdb` in a temp dir (as
//! the `postgres` user when run as root, which initdb refuses), started on a
//! free loopback port with trust auth and `fsync=off`, stopped and removed
//! when dropped. Needs PostgreSQL's server binaries
//! (`/usr/lib/postgresql/*/bin`; `scripts/synapse-schema.sh` installs them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's initdb is missing: run scripts/synapse-schema.sh (make synapse-venv)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = server_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown postgres {}", dir.path().display());
        }
        let cluster = PgCluster {
            bin,
            port: free_port(),
            as_postgres,
            dir,
        };
        let d = cluster.dir.path().display().to_string();
        cluster.run(&format!(
            "{}/initdb -D {d}/data -A trust -U herald --no-sync -E UTF8 --locale=C.UTF-8 >{d}/initdb.log 2>&1",
            cluster.bin.display()
        ));
        cluster.run(&format!(
            "{}/pg_ctl -D {d}/data -l {d}/log -w start -o '-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off' >/dev/null",
            cluster.bin.display(),
            cluster.port
        ));
        cluster
    }

    fn run(&self, cmd: &str) {
        let status = if self.as_postgres {
            Command::new("su").args(["postgres", "-c", cmd]).status()
        } else {
            Command::new("sh").args(["-c", cmd]).status()
        }
        .expect("run a PostgreSQL command");
        assert!(
            status.success(),
            "{cmd} failed (see {})",
            self.dir().display()
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
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
        let cmd = format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null 2>&1",
            self.bin.display(),
            self.dir.path().display()
        );
        let _ = if self.as_postgres {
            Command::new("su").args(["postgres", "-c", &cmd]).status()
        } else {
            Command::new("sh").args(["-c", &cmd]).status()
        };
    }
}
