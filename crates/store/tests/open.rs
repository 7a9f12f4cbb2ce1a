//! Opening the database file (issue 11, finding 8): a damaged Herald file is
//! called damaged (with `sqlite3 .recover`), not foreign; a foreign file and
//! one from a newer Herald are told apart; a refused file is left as it was,
//! without `-wal`/`-shm`; a new file and its directory are owner-only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use herald_store::{Store, StoreError};
use sqlx::{ConnectOptions, Connection};

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// No `-wal`, `-shm` or `-journal` beside `path`.
fn assert_no_sidecars(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let file = sidecar(path, suffix);
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

async fn connect(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap()
}

/// A Herald database with `rows` destinations (and their rooms), closed.
async fn herald_db(path: &Path, rows: u32) {
    let store = Store::open(path).await.unwrap();
    store.close().await;
    let mut conn = connect(path).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
         INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
         last_successful_stream_ordering) \
         SELECT 'server-' || i || '.example.org', i * 1000, i % 7, NULL, i FROM n",
    )
    .bind(rows)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO destination_rooms (destination, room_id, stream_ordering) \
         SELECT destination, '!room' || last_successful_stream_ordering || ':example.org', \
         last_successful_stream_ordering FROM destinations",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_no_sidecars(path);
}

/// Overwrites `pages` pages in the middle of the file with garbage.
fn damage_middle(path: &Path, pages: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let page = 4096;
    let start = (len / 2 / page) * page;
    assert!(
        start + pages * page < len,
        "the file is too small to damage"
    );
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..pages * page)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    file.write_all(&garbage).unwrap();
    file.sync_all().unwrap();
}

async fn refused(path: &Path) -> StoreError {
    let before = std::fs::read(path).unwrap();
    let Err(e) = Store::open(path).await else {
        panic!("{} was opened", path.display());
    };
    let after = std::fs::read(path).unwrap();
    let first_change = before.iter().zip(&after).position(|(a, b)| a != b);
    assert!(
        before.len() == after.len() && first_change.is_none(),
        "a refused file was changed: {} bytes, now {}, first change at {first_change:?}",
        before.len(),
        after.len()
    );
    assert_no_sidecars(path);
    e
}

#[tokio::test]
async fn a_damaged_herald_file_is_called_damaged_with_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    herald_db(&path, 20_000).await;
    damage_middle(&path, 16);

    let e = refused(&path).await;
    let text = e.to_string();
    assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
    assert!(text.contains("is damaged"), "{text}");
    assert!(
        text.contains(&format!("sqlite3 {} .recover", path.display())),
        "{text}"
    );
    assert!(!text.contains("not a Herald database"), "{text}");
    assert!(!text.contains("newer"), "{text}");
}

#[tokio::test]
async fn a_foreign_database_is_called_foreign_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synapse.db");
    let mut conn = connect(&path).await;
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE events (event_id TEXT PRIMARY KEY, json TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_no_sidecars(&path);

    let e = refused(&path).await;
    assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("is not a Herald database (it holds tables events)"),
        "{text}"
    );
    assert!(!text.contains("damaged"), "{text}");
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_called_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the pages you are looking for\n".repeat(200),
    )
    .unwrap();
    let e = refused(&path).await;
    assert!(matches!(e, StoreError::NotSqlite { .. }), "{e:?}");
}

#[tokio::test]
async fn a_database_from_a_newer_herald_is_called_newer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    herald_db(&path, 10).await;
    let mut conn = connect(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let e = refused(&path).await;
    assert!(matches!(e, StoreError::TooNew { found: 9999, .. }), "{e:?}");
    assert!(e.to_string().contains("written by a newer Herald"), "{e}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_directory_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").join("herald");
    let path = data.join("herald.db");

    let store = Store::open(&path).await.unwrap();
    store
        .users
        .create_user("admin", "$argon2id$hash", true)
        .await
        .unwrap();
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(
        mode(&dir.path().join("data")),
        0o700,
        "its parent, created too"
    );
    assert_eq!(mode(&path), 0o600, "database");
    // SQLite gives its own files the database's mode.
    for suffix in ["-wal", "-shm"] {
        assert_eq!(mode(&sidecar(&path, suffix)), 0o600, "{suffix}");
    }
    store.close().await;
    // A directory that was there keeps its mode.
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&existing.join("herald.db")).await.unwrap();
    store.close().await;
    assert_eq!(mode(&existing), 0o755);
    assert_eq!(mode(&existing.join("herald.db")), 0o600);
}

#[tokio::test]
async fn an_open_that_fails_for_another_reason_removes_nothing() {
    // `-wal` cannot be opened (here a directory; in life, a file of another
    // process or one without permission): the open fails, but not because
    // of the database file, so nothing beside it, and not the file it
    // created, is removed: it may already be another Herald's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    std::fs::create_dir(sidecar(&path, "-wal")).unwrap();
    let Err(e) = Store::open(&path).await else {
        panic!("opened with a directory for -wal");
    };
    assert!(
        !matches!(
            e,
            StoreError::Damaged { .. }
                | StoreError::NotSqlite { .. }
                | StoreError::Foreign { .. }
                | StoreError::TooNew { .. }
        ),
        "{e:?}"
    );
    assert!(path.exists(), "the database file was removed after {e}");
    assert!(sidecar(&path, "-wal").is_dir());
}
