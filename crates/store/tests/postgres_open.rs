//! Opening Herald's store on PostgreSQL: a database that does not answer is
//! named (never its password), another program's database and a newer
//! Herald schema are refused and left as they were, and the migrations give
//! the same tables, columns, keys and indexes as SQLite's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../../../server/tests/common/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;

use herald_store::{postgres::open_schema, Db, Store, StoreError};
use sqlx::{Connection, Row};

async fn pg_tables(url: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    tables
}

#[tokio::test]
async fn a_database_that_does_not_answer_is_named_without_its_password() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgresql://herald:pw-secret@127.0.0.1:{port}/herald");
    let err = open_schema(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::PgUnreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("`database`"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}/herald")), "{text}");
    assert!(!text.contains("pw-secret"), "{text}");
    assert!(!format!("{err:?}").contains("pw-secret"));
}

#[tokio::test]
async fn another_programs_database_is_refused_and_untouched() {
    let (cluster, url) = postgres::fresh_database("other").await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE events (id BIGINT PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = open_schema(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::PgForeign { .. }), "{err:?}");
    assert!(err.to_string().contains("events"), "{err}");
    assert!(err.to_string().contains("`database`"), "{err}");
    assert_eq!(pg_tables(&url).await, ["events"]);
    drop(cluster);
}

#[tokio::test]
async fn a_newer_herald_schema_is_refused_naming_both_versions() {
    let (cluster, url) = postgres::fresh_database("newer").await;
    open_schema(&url).await.unwrap().close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // (Versions may skip a number: count them, do not assume 1..=known.)
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let before = pg_tables(&url).await;
    let err = open_schema(&url).await.unwrap_err();
    let known = herald_store::postgres::known_version();
    assert!(
        matches!(err, StoreError::PgTooNew { found: 9999, known: k, .. } if k == known),
        "{err:?}"
    );
    assert!(err.to_string().contains("9999"), "{err}");
    assert!(err.to_string().contains(&format!("up to {known}")), "{err}");
    assert_eq!(pg_tables(&url).await, before);
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, applied + 1);
    conn.close().await.unwrap();
    drop(cluster);
}

#[tokio::test]
async fn reopening_migrates_nothing_and_every_session_commits_synchronously() {
    let (cluster, url) = postgres::fresh_database("reopen").await;
    open_schema(&url).await.unwrap().close().await;
    let db = open_schema(&url).await.unwrap();
    let Db::Postgres(pool) = &db else {
        panic!("not PostgreSQL")
    };
    let app: String = sqlx::query_scalar("SELECT value FROM herald_meta WHERE key = 'application'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(app, "herald");
    let metas: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM herald_meta")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(metas, 1);
    // Set by Herald on every connection, whatever the server's default.
    let mut conn = pool.acquire().await.unwrap();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, "on");
    drop(conn);
    db.close().await;
    drop(cluster);
}

/// A table's shape, backend-neutral: columns (name → type), primary key,
/// unique constraints and indexes (name → columns).
#[derive(Debug, PartialEq, Eq, Default)]
struct Shape {
    columns: BTreeMap<String, String>,
    primary_key: Vec<String>,
    unique: Vec<Vec<String>>,
    indexes: BTreeMap<String, Vec<String>>,
}

fn neutral_type(declared: &str) -> String {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "bigint",
        "blob" | "bytea" => "bytea",
        other => other,
    }
    .to_owned()
}

async fn sqlite_shapes(path: &std::path::Path) -> BTreeMap<String, Shape> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut shapes = BTreeMap::new();
    for table in tables {
        let mut shape = Shape::default();
        let mut pk = Vec::new();
        for r in sqlx::query(&format!("PRAGMA table_info({table})"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let name: String = r.get("name");
            shape
                .columns
                .insert(name.clone(), neutral_type(r.get("type")));
            let at: i64 = r.get("pk");
            if at > 0 {
                pk.push((at, name));
            }
        }
        pk.sort();
        shape.primary_key = pk.into_iter().map(|(_, n)| n).collect();
        for r in sqlx::query(&format!("PRAGMA index_list({table})"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let index: String = r.get("name");
            let origin: String = r.get("origin");
            let columns: Vec<String> = sqlx::query(&format!("PRAGMA index_info({index})"))
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|c| c.get("name"))
                .collect();
            match origin.as_str() {
                "c" => {
                    shape.indexes.insert(index, columns);
                }
                "u" => shape.unique.push(columns),
                _ => {}
            }
        }
        shapes.insert(table, shape);
    }
    conn.close().await.unwrap();
    shapes
}

async fn pg_shapes(url: &str) -> BTreeMap<String, Shape> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut shapes: BTreeMap<String, Shape> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        shapes
            .entry(r.get(0))
            .or_default()
            .columns
            .insert(r.get(1), neutral_type(r.get(2)));
    }
    for r in sqlx::query(
        "SELECT t.relname::text, i.relname::text, x.indisprimary, x.indisunique, \
                array_agg(a.attname::text ORDER BY k.n) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace ns ON ns.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE ns.nspname = 'public' AND t.relname <> '_sqlx_migrations' \
         GROUP BY t.relname, i.relname, x.indisprimary, x.indisunique",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    {
        let shape = shapes.entry(r.get(0)).or_default();
        let columns: Vec<String> = r.get(4);
        match (r.get::<bool, _>(2), r.get::<bool, _>(3)) {
            (true, _) => shape.primary_key = columns,
            (false, true) => shape.unique.push(columns),
            (false, false) => {
                shape.indexes.insert(r.get(1), columns);
            }
        }
    }
    conn.close().await.unwrap();
    shapes
}

#[tokio::test]
async fn postgres_migrations_give_sqlites_tables_columns_keys_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    Store::open(&path).await.unwrap().close().await;
    let sqlite = sqlite_shapes(&path).await;

    let (cluster, url) = postgres::fresh_database("shape").await;
    open_schema(&url).await.unwrap().close().await;
    let pg = pg_shapes(&url).await;
    assert!(sqlite.contains_key("destinations") && sqlite.contains_key("destination_history"));
    let rooms = &pg["destination_rooms"];
    assert_eq!(rooms.primary_key, ["destination", "room_id"]);
    assert_eq!(
        rooms.indexes["destination_rooms_stream_ordering"],
        ["destination", "stream_ordering"]
    );
    assert_eq!(pg["outgoing_events"].unique, [vec!["event_id".to_owned()]]);
    assert_eq!(pg["destinations"].indexes.len(), 4);
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        pg.keys().collect::<Vec<_>>()
    );
    for (table, shape) in &sqlite {
        assert_eq!(Some(shape), pg.get(table), "table {table}");
    }

    // Every text column in a key or an index compares bytes, as SQLite.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for (table, shape) in &pg {
        let keyed = shape
            .primary_key
            .iter()
            .chain(shape.unique.iter().flatten())
            .chain(shape.indexes.values().flatten());
        for column in keyed {
            if shape.columns[column] != "text" {
                continue;
            }
            let collation: Option<String> = sqlx::query_scalar(
                "SELECT collation_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
            )
            .bind(table)
            .bind(column)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(collation.as_deref(), Some("C"), "{table}.{column}");
        }
    }
    conn.close().await.unwrap();
    drop(cluster);
}
