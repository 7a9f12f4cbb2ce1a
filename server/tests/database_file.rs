//! What `herald serve` says about a database file it cannot use (issue 11,
//! finding 8): a damaged Herald file is called damaged, with `sqlite3
//! .recover`, once; no cause is said twice; nothing is left beside a refused
//! file; a new database is owner-only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{ConnectOptions, Connection};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// `herald serve` on `database`, which must fail: its standard error.
fn serve_fails(database: &Path) -> String {
    let out = Command::new(HERALD)
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(database)
        .output()
        .expect("run herald");
    assert!(
        !out.status.success(),
        "herald serve started on {database:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `herald: …` line, checked to say no cause twice.
fn error_line(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("herald: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 12).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} said twice in: {line}"
        );
    }
    line
}

fn sidecars(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test]
async fn a_damaged_database_is_called_damaged_with_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let out = Command::new(HERALD)
        .args([
            "user",
            "add",
            "admin",
            "--admin",
            "--password",
            "correct horse",
        ])
        .arg("--database")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
         last_successful_stream_ordering) \
         SELECT 'server-' || i || '.example.org', i * 1000, 60000, i, i FROM n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(sidecars(&path).is_empty());

    // Garbage over 16 pages in the middle of the file.
    let len = std::fs::metadata(&path).unwrap().len();
    let start = (len / 2 / 4096) * 4096;
    let garbage: Vec<u8> = (0..16 * 4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    file.write_all(&garbage).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let stderr = serve_fails(&path);
    let line = error_line(&stderr);
    eprintln!("{line}");
    assert!(line.contains("is damaged"), "{line}");
    assert!(
        line.contains(&format!("sqlite3 {} .recover", path.display())),
        "{line}"
    );
    assert!(!line.contains("not a Herald database"), "{line}");
    assert!(sidecars(&path).is_empty(), "{:?} left", sidecars(&path));
}

#[test]
fn a_database_that_cannot_be_created_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let stderr = serve_fails(&not_a_dir.join("herald.db"));
    let line = error_line(&stderr);
    eprintln!("{line}");
    assert!(line.contains("herald.db"), "{line}");
}

#[cfg(unix)]
#[test]
fn user_add_creates_an_owner_only_database_and_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join("herald.db");
    let out = Command::new(HERALD)
        .args(["user", "add", "admin", "--password", "correct horse"])
        .arg("--database")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&path), 0o600);
}
