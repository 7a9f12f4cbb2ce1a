//! Attached mode against a real Synapse 1.163 schema (made by Synapse
//! itself) on SQLite and on PostgreSQL: the list, details and rooms read
//! from Synapse's rows over real HTTP and compared with Synapse's SQL, the
//! refresh picking up an update, an insert and a delete, every bad
//! `[synapse] database`, writes refused with nothing written to Synapse's
//! database, and `herald import-synapse` from both kinds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::time::{Duration, Instant};

use common::oracle::{synapse_list_sql, OracleDb};
use common::postgres::PgCluster;
use common::synapse_db::{Arg, SynapseDb};
use common::*;
use herald::config::Config;
use herald_store::{Store, StoreError, SynapseSettings};
use serde_json::{json, Value};

const LIST: &str = "/_synapse/admin/v1/federation/destinations";
/// The refresh interval the tests run with.
const INTERVAL: Duration = Duration::from_millis(200);
/// The longest a change may take to show (see the README: one interval
/// plus, on PostgreSQL, the statistics flush, at most FORCED_EVERY
/// intervals), with room for a loaded machine.
const SHOWS_WITHIN: Duration = Duration::from_secs(20);

enum Kind {
    Sqlite,
    Postgres,
}

/// Synapse's database seeded with the admin API tests' rows, Herald
/// attached to it and serving on 127.0.0.1.
struct Attached {
    db: SynapseDb,
    store: Store,
    base: String,
    client: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
    // Dropped last: stops the cluster.
    _pg: Option<PgCluster>,
}

async fn synapse_db(kind: &Kind, dir: &std::path::Path) -> (SynapseDb, Option<PgCluster>) {
    match kind {
        Kind::Sqlite => (SynapseDb::sqlite(dir).await, None),
        Kind::Postgres => {
            let pg = PgCluster::start();
            (SynapseDb::postgres(&pg, "synapse").await, Some(pg))
        }
    }
}

async fn seed(db: &SynapseDb) {
    for r in seed_rows() {
        db.put_row(&r).await;
    }
    db.put_rooms("b.org", &seed_rooms()).await;
}

fn settings(db: &SynapseDb) -> SynapseSettings {
    SynapseSettings {
        database: db.setting(),
        refresh_interval: INTERVAL,
    }
}

async fn attach(kind: Kind) -> Attached {
    let dir = tempfile::tempdir().unwrap();
    let (db, pg) = synapse_db(&kind, dir.path()).await;
    seed(&db).await;
    let own = dir.path().join("herald.db");
    let store = Store::open_attached(&own, &settings(&db)).await.unwrap();
    assert!(store.destinations.is_attached());
    let hash = herald::auth::password::hash(ADMIN_PASSWORD).unwrap();
    store.users.create_user(ADMIN, &hash, true).await.unwrap();
    let config = Config::loopback(SERVER_NAME, own);
    let addr = herald::serve::spawn(store.clone(), config).await.unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let resp = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&login_body(ADMIN, ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(resp).await;
    assert_eq!(status, 200, "{body}");
    Attached {
        db,
        store,
        base,
        client,
        token: body["access_token"].as_str().unwrap().to_owned(),
        _dir: dir,
        _pg: pg,
    }
}

impl Attached {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        into_json(resp).await
    }

    fn oracle(&self) -> OracleDb<'_> {
        match &self.db {
            SynapseDb::Sqlite { pool, .. } => OracleDb::Sqlite(pool),
            SynapseDb::Postgres { pool, .. } => OracleDb::Postgres(pool),
        }
    }

    /// Polls `path` until `done` holds for its body, within [`SHOWS_WITHIN`];
    /// returns how long it took.
    async fn until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let (_, body) = self.get(path).await;
            if done(&body) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < SHOWS_WITHIN,
                "{what} did not show within {SHOWS_WITHIN:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn list_matches_synapse_sql(kind: Kind) {
    let a = attach(kind).await;
    for order_by in [
        "destination",
        "retry_last_ts",
        "retry_interval",
        "failure_ts",
        "last_successful_stream_ordering",
    ] {
        for dir in ["f", "b"] {
            for filter in [
                None,
                Some("org"),
                Some("ORG"),
                Some("_"),
                Some("%"),
                Some("nope"),
            ] {
                for (from, limit) in [(0, 100), (0, 4), (4, 4), (8, 4), (3, 0), (20, 5)] {
                    let mut path =
                        format!("{LIST}?order_by={order_by}&dir={dir}&from={from}&limit={limit}");
                    if let Some(f) = filter {
                        path.push_str(&format!("&destination={}", f.replace('%', "%25")));
                    }
                    let (status, body) = a.get(&path).await;
                    assert_eq!(status, 200, "{path}: {body}");
                    // Synapse's own SQL on the same database: on PostgreSQL
                    // NULL sorts last ascending, first descending.
                    let (rows, total) =
                        synapse_list_sql(a.oracle(), order_by, dir, filter, from, limit).await;
                    assert_eq!(body["destinations"], Value::Array(rows), "{path}");
                    assert_eq!(body["total"], total, "{path}");
                }
            }
        }
    }
    // The order by name does not depend on NULLs: Synapse's SQL as is.
    let (_, body) = a.get(&format!("{LIST}?limit=100&dir=b")).await;
    let (rows, _) = synapse_list_sql(a.oracle(), "destination", "b", None, 0, 100).await;
    assert_eq!(body["destinations"], Value::Array(rows));
}

#[tokio::test]
async fn attached_list_matches_synapse_sql_on_sqlite() {
    list_matches_synapse_sql(Kind::Sqlite).await;
}

#[tokio::test]
async fn attached_list_matches_synapse_sql_on_postgres() {
    list_matches_synapse_sql(Kind::Postgres).await;
}

/// Attaching loads the rows and the refresh's bucket checksums in one
/// scan, computed in Herald; the first compared cycle reads the
/// database's own (`bucket_sums`, SQL) and must find every bucket
/// unchanged: a bucket whose count or sum Herald got wrong would be
/// fetched, or the rows walked. Rows whose arithmetic is easy to get
/// wrong: NULLs, negative and extreme numbers, multi-byte names (and on
/// SQLite a NUL inside one), a one-character and an empty name, and
/// enough rows to fill many buckets.
async fn first_cycle_finds_the_loaded_buckets(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (db, _pg) = synapse_db(&kind, dir.path()).await;
    let n = |v: Option<i64>| v.map_or("NULL".to_owned(), |v| v.to_string());
    let mut values: Vec<String> = Vec::new();
    let mut add = |name: &str, c: [Option<i64>; 4]| {
        values.push(format!(
            "('{name}', {}, {}, {}, {})",
            n(c[0]),
            n(c[1]),
            n(c[2]),
            n(c[3])
        ));
    };
    add("", [None; 4]);
    add("b", [Some(-1), Some(-1_000_034), Some(-7), Some(0)]);
    add(
        "é.example",
        [Some(i64::MAX), Some(i64::MIN + 1), None, Some(-5)],
    );
    add(
        "例え.テスト",
        [Some(1_700_000_000_000), Some(600_000), Some(1), None],
    );
    add(
        "🦀x🦀",
        [
            Some(-1_700_000_000_000),
            None,
            Some(999_983),
            Some(1_000_037),
        ],
    );
    for i in 0..3000i64 {
        let v = |m: i64| (i % m != 0).then_some((i * 7_919 - 4_000) * m);
        add(
            &format!("host{i}.ñ{}.example", i % 13),
            [v(3), v(5), v(7), v(11)],
        );
    }
    let rows = values.len();
    db.exec(
        &format!(
            "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
             last_successful_stream_ordering) VALUES {}",
            values.join(", ")
        ),
        &[],
    )
    .await;
    if matches!(kind, Kind::Sqlite) {
        db.exec(
            "INSERT INTO destinations (destination, retry_last_ts) VALUES (?, ?)",
            &[Arg::Text("nul\0inside".into()), Arg::Int(Some(-3))],
        )
        .await;
    }
    let own = dir.path().join("herald.db");
    let quiet = SynapseSettings {
        database: db.setting(),
        refresh_interval: Duration::from_secs(3600),
    };
    let store = Store::open_attached(&own, &quiet).await.unwrap();
    let d = &store.destinations;
    let expected = rows + usize::from(matches!(kind, Kind::Sqlite));
    assert_eq!(d.destination_count(), expected);
    let e = d.indexed("é.example").unwrap();
    assert_eq!(
        (e.retry_last_ts, e.retry_interval, e.failure_ts),
        (Some(i64::MAX), Some(i64::MIN + 1), None)
    );
    let report = d.refresh_now(true).await.unwrap().unwrap();
    assert_eq!(
        report,
        herald_store::synapse::refresh::CycleReport {
            compared: true,
            ..Default::default()
        },
        "the database's buckets differ from those computed at load"
    );
    store.close().await;
    db.close().await;
}

#[tokio::test]
async fn attached_load_computes_the_databases_buckets_on_sqlite() {
    first_cycle_finds_the_loaded_buckets(Kind::Sqlite).await;
}

#[tokio::test]
async fn attached_load_computes_the_databases_buckets_on_postgres() {
    first_cycle_finds_the_loaded_buckets(Kind::Postgres).await;
}

async fn details_and_rooms(kind: Kind) {
    let a = attach(kind).await;
    let (status, body) = a.get(&format!("{LIST}/b.org")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"destination": "b.org", "retry_last_ts": 1_700_000_000_000i64,
               "retry_interval": 600_000, "failure_ts": 1_699_000_000_000i64,
               "last_successful_stream_ordering": 50})
    );
    // Not in backoff: Synapse shows no timings.
    let (_, body) = a.get(&format!("{LIST}/UPPER.Example.COM")).await;
    assert_eq!(body["failure_ts"], Value::Null, "{body}");
    assert_eq!(body["retry_interval"], 0, "{body}");
    let (status, body) = a.get(&format!("{LIST}/unknown.example")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let mut all = seed_rooms();
    all.sort_by(|x, y| x.room_id.cmp(&y.room_id));
    for (dir, from, limit) in [
        ("f", 0, 100),
        ("f", 0, 4),
        ("f", 12, 4),
        ("b", 3, 5),
        ("f", 15, 5),
    ] {
        let path = format!("{LIST}/b.org/rooms?dir={dir}&from={from}&limit={limit}");
        let (status, body) = a.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let mut want = all.clone();
        if dir == "b" {
            want.reverse();
        }
        let want: Vec<Value> = want
            .iter()
            .skip(from)
            .take(limit)
            .map(|r| json!({"room_id": r.room_id, "stream_ordering": r.stream_ordering}))
            .collect();
        let shown = want.len();
        assert_eq!(body["rooms"], Value::Array(want), "{path}");
        assert_eq!(body["total"], 15, "{path}");
        let token = (from + limit < 15).then(|| (from + shown).to_string());
        assert_eq!(
            body.get("next_token").and_then(Value::as_str),
            token.as_deref(),
            "{path}"
        );
    }
    let (status, body) = a.get(&format!("{LIST}/a.org/rooms")).await;
    assert_eq!((status, &body["total"]), (200, &json!(0)), "{body}");
}

#[tokio::test]
async fn attached_details_and_rooms_on_sqlite() {
    details_and_rooms(Kind::Sqlite).await;
}

#[tokio::test]
async fn attached_details_and_rooms_on_postgres() {
    details_and_rooms(Kind::Postgres).await;
}

async fn refresh_shows_changes(kind: Kind) {
    let a = attach(kind).await;
    // An update Synapse's retry limiter would make.
    a.db.exec(
        "UPDATE destinations SET retry_last_ts = ?, retry_interval = ?, failure_ts = ? \
         WHERE destination = ?",
        &[
            Arg::Int(Some(1_800_000_000_000)),
            Arg::Int(Some(3_600_000)),
            Arg::Int(Some(1_799_000_000_000)),
            Arg::Text("zeta.example".into()),
        ],
    )
    .await;
    let took = a
        .until(
            &format!("{LIST}?destination=zeta.example"),
            "an update",
            |b| b["destinations"][0]["retry_last_ts"] == 1_800_000_000_000_i64,
        )
        .await;
    eprintln!("update shown after {took:?}");
    a.db.put_row(&row("new.example", Some(0), Some(0), None, Some(77)))
        .await;
    let took = a
        .until(
            &format!("{LIST}?destination=new.example"),
            "an insert",
            |b| b["total"] == 1,
        )
        .await;
    eprintln!("insert shown after {took:?}");
    a.db.exec(
        "DELETE FROM destinations WHERE destination = ?",
        &[Arg::Text("never.example".into())],
    )
    .await;
    let took = a
        .until(&format!("{LIST}?limit=100"), "a delete", |b| {
            b["total"] == 11
                && !b["destinations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["destination"] == "never.example")
        })
        .await;
    eprintln!("delete shown after {took:?}");
    // The newest row deleted and another inserted: on SQLite it takes the
    // deleted row's rowid, so its bucket keeps its count.
    a.db.exec(
        "DELETE FROM destinations WHERE destination = ?",
        &[Arg::Text("new.example".into())],
    )
    .await;
    a.db.put_row(&row("wen.example", Some(0), Some(0), None, Some(77)))
        .await;
    a.until(&format!("{LIST}?limit=100"), "a replaced row", |b| {
        let names: Vec<&str> = b["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["destination"].as_str())
            .collect();
        names.contains(&"wen.example") && !names.contains(&"new.example")
    })
    .await;
    // The whole list is Synapse's again.
    let (_, body) = a.get(&format!("{LIST}?limit=100")).await;
    let (rows, _) = synapse_list_sql(a.oracle(), "destination", "f", None, 0, 100).await;
    assert_eq!(body["destinations"], Value::Array(rows));
    // refresh_one applies a row at once.
    a.db.exec(
        "UPDATE destinations SET last_successful_stream_ordering = 999 WHERE destination = ?",
        &[Arg::Text("a.org".into())],
    )
    .await;
    a.store.destinations.refresh_one("a.org").await.unwrap();
    assert_eq!(
        a.store
            .destinations
            .indexed("a.org")
            .unwrap()
            .last_successful_stream_ordering,
        Some(999)
    );
    a.store.close().await;
}

#[tokio::test]
async fn attached_refresh_shows_an_update_an_insert_and_a_delete_on_sqlite() {
    refresh_shows_changes(Kind::Sqlite).await;
}

#[tokio::test]
async fn attached_refresh_shows_an_update_an_insert_and_a_delete_on_postgres() {
    refresh_shows_changes(Kind::Postgres).await;
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

async fn writes_are_refused(kind: Kind) {
    let a = attach(kind).await;
    let before = a.db.dump().await;
    let file_before = match &a.db {
        SynapseDb::Sqlite { path, .. } => Some(file_bytes(path)),
        SynapseDb::Postgres { .. } => None,
    };
    let d = &a.store.destinations;
    let read_only = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::ReadOnly)), "{r:?}");
    };
    read_only(
        d.reset_retry_timings("b.org", Some("@admin:x"))
            .await
            .map(|_| ()),
    );
    read_only(
        d.set_retry_timings(
            "b.org",
            herald_store::RetryTimings {
                failure_ts: None,
                retry_last_ts: 0,
                retry_interval: 0,
            },
        )
        .await,
    );
    read_only(
        d.put_destinations(&[row("x.example", None, None, None, None)])
            .await,
    );
    read_only(d.put_destination_rooms("b.org", &seed_rooms()).await);
    read_only(d.forget("b.org", Some("@admin:x")).await.map(|_| ()));
    // The federation client's writes are no-ops (Herald's sender is off).
    use herald_federation::BackoffStore;
    BackoffStore::set_retry_timings(
        d,
        "b.org",
        herald_store::RetryTimings {
            failure_ts: None,
            retry_last_ts: 0,
            retry_interval: 0,
        },
    )
    .await
    .unwrap();
    // The timings are Synapse's.
    let timings = BackoffStore::retry_timings(d, "b.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timings.retry_interval, 600_000);
    // Over HTTP, reads only.
    let (status, _) = a.get(&format!("{LIST}?limit=100")).await;
    assert_eq!(status, 200);
    let (status, _) = a.get(&format!("{LIST}/b.org/rooms")).await;
    assert_eq!(status, 200);
    a.store.close().await;
    assert_eq!(a.db.dump().await, before);
    if let (SynapseDb::Sqlite { path, .. }, Some(bytes)) = (&a.db, file_before) {
        assert!(file_bytes(path) == bytes, "Synapse's SQLite file changed");
    }
}

#[tokio::test]
async fn attached_writes_are_refused_and_nothing_is_written_on_sqlite() {
    writes_are_refused(Kind::Sqlite).await;
}

#[tokio::test]
async fn attached_writes_are_refused_and_nothing_is_written_on_postgres() {
    writes_are_refused(Kind::Postgres).await;
}

async fn open_error(database: String, dir: &std::path::Path) -> String {
    let settings = SynapseSettings {
        database,
        refresh_interval: INTERVAL,
    };
    let own = dir.join("own.db");
    match Store::open_attached(&own, &settings).await {
        Ok(_) => panic!("opened {}", settings.database),
        Err(e) => {
            // Herald's own database is not touched before Synapse's is good.
            assert!(!own.exists(), "{e}");
            eprintln!("refused: {e}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn bad_synapse_databases_are_refused_naming_the_setting_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/homeserver.db");
    let e = open_error(missing.display().to_string(), dir.path()).await;
    assert!(
        e.contains("`[synapse] database`") && e.contains("no such file"),
        "{e}"
    );
    assert!(!missing.exists());

    // Herald's own database is not Synapse's.
    let herald_db = dir.path().join("herald.db");
    Store::open(&herald_db).await.unwrap().close().await;
    // sqlx may finish closing (checkpointing the WAL into the file) after
    // close() returns: the baseline is the file once its WAL is gone.
    let wal = dir.path().join("herald.db-wal");
    let start = Instant::now();
    while wal.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Herald's WAL stays"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bytes = file_bytes(&herald_db);
    let e = open_error(herald_db.display().to_string(), dir.path()).await;
    assert!(
        e.contains("`[synapse] database`")
            && e.contains("is not Synapse's database (no schema_version"),
        "{e}"
    );
    let after = file_bytes(&herald_db);
    if after != bytes {
        let diff: Vec<usize> = (0..after.len().min(bytes.len()))
            .filter(|&i| after[i] != bytes[i])
            .take(20)
            .collect();
        panic!(
            "changed at {diff:?} ({} -> {} bytes)",
            bytes.len(),
            after.len()
        );
    }

    // Not SQLite at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let e = open_error(text.display().to_string(), dir.path()).await;
    assert!(e.contains("`[synapse] database`"), "{e}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "hello");

    // A schema version this Herald does not know.
    let syn = SynapseDb::sqlite(dir.path()).await;
    syn.exec(
        "UPDATE schema_version SET version = ?",
        &[Arg::Int(Some(999))],
    )
    .await;
    syn.close().await;
    let SynapseDb::Sqlite { path, .. } = &syn else {
        unreachable!()
    };
    let bytes = file_bytes(path);
    let e = open_error(path.display().to_string(), dir.path()).await;
    assert!(
        e.contains("`[synapse] database`")
            && e.contains("schema version 999")
            && e.contains("upgrade Herald"),
        "{e}"
    );
    assert!(file_bytes(path) == bytes, "Synapse's file changed");
}

#[tokio::test]
async fn bad_synapse_databases_are_refused_naming_the_setting_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open_error(
        format!("postgresql://synapse:secret@127.0.0.1:{port}/synapse"),
        dir.path(),
    )
    .await;
    assert!(
        e.contains("`[synapse] database`") && e.contains("does not answer"),
        "{e}"
    );
    assert!(!e.contains("secret"), "the password is shown: {e}");

    let pg = PgCluster::start();
    let empty = pg.create_database("empty").await;
    let e = open_error(empty, dir.path()).await;
    assert!(e.contains("is not Synapse's database"), "{e}");

    let syn = SynapseDb::postgres(&pg, "synapse").await;
    seed(&syn).await;
    syn.exec(
        "UPDATE schema_version SET version = ?",
        &[Arg::Int(Some(999))],
    )
    .await;
    let before = syn.dump().await;
    let e = open_error(syn.setting(), dir.path()).await;
    assert!(e.contains("schema version 999"), "{e}");
    assert_eq!(syn.dump().await, before);
    syn.close().await;
}

/// Herald's next stream ordering, as SQLite's AUTOINCREMENT keeps it.
async fn next_ordering_floor(own: &std::path::Path) -> i64 {
    let pool = sql_pool(own).await;
    let seq: i64 =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'outgoing_events'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    seq
}

#[tokio::test]
async fn import_from_sqlite_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let syn = SynapseDb::sqlite(dir.path()).await;
    seed(&syn).await;
    syn.put_rooms(
        "zeta.example",
        &[herald_shared::DestinationRoom {
            room_id: "!big:x".into(),
            stream_ordering: 5_000_000,
        }],
    )
    .await;
    let before = syn.dump().await;
    syn.close().await;
    let own = dir.path().join("herald.db");
    let import = |replace: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["import-synapse", "--from", &syn.setting(), "--database"])
            .arg(&own);
        if replace {
            cmd.arg("--replace");
        }
        cmd.output().unwrap()
    };
    // A --from that is not there: named as the flag, nothing created.
    let missing = dir.path().join("missing.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["import-synapse", "--from"])
        .arg(&missing)
        .arg("--database")
        .arg(&own)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`--from`") && stderr.contains("no such file"),
        "{stderr}"
    );
    assert!(!missing.exists());

    let out = import(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 11 destinations and 16 destination rooms"),
        "{stdout}"
    );
    assert!(stdout.contains("above 5000000"), "{stdout}");
    assert!(next_ordering_floor(&own).await >= 5_000_000);
    // Not a tty: plain counts.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("destinations: 11/11"), "{stderr}");

    let out = import(false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already holds 11 destinations") && stderr.contains("--replace"),
        "{stderr}"
    );
    let out = import(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let store = Store::open(&own).await.unwrap();
    assert_holds_the_seed(&store).await;
    store.close().await;
    let syn = SynapseDb::Sqlite {
        pool: sql_pool(std::path::Path::new(&syn.setting())).await,
        path: syn.setting().into(),
    };
    assert_eq!(
        syn.dump().await,
        before,
        "the import wrote to Synapse's database"
    );
}

#[tokio::test]
async fn import_from_postgres_with_counts_replace_and_orderings() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgCluster::start();
    let syn = SynapseDb::postgres(&pg, "synapse").await;
    seed(&syn).await;
    let own = dir.path().join("herald.db");
    let store = Store::open(&own).await.unwrap();
    store
        .destinations
        .put_destinations(&[row("old.example", None, None, None, Some(3))])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let refused =
        herald_store::import_synapse(&syn.setting(), &store, false, |p| seen.push(p)).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::NotEmpty {
                destinations: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    let counts = herald_store::import_synapse(&syn.setting(), &store, true, |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!((counts.destinations, counts.destination_rooms), (11, 15));
    assert_eq!(counts.max_stream_ordering, Some(1014));
    assert!(seen.iter().any(|p| p.done == 11 && p.total == 11));
    // The store's index is what was imported; the old row is gone.
    assert_eq!(store.destinations.destination_count(), 11);
    assert!(store.destinations.indexed("old.example").is_none());
    for r in seed_rows() {
        assert_eq!(store.destinations.indexed(&r.destination), Some(r));
    }
    store.close().await;
    assert!(next_ordering_floor(&own).await >= 1014);
    syn.close().await;
}

#[tokio::test]
async fn attached_keeps_answering_when_synapses_postgres_stops() {
    let mut a = attach(Kind::Postgres).await;
    // PostgreSQL stops (and its files go) under a running Herald.
    drop(a._pg.take());
    // The list is the index's: it still answers.
    let (status, body) = a.get(&format!("{LIST}?limit=100")).await;
    assert_eq!((status, &body["total"]), (200, &json!(11)), "{body}");
    // A read that needs Synapse's database is a Matrix error, not a crash.
    for path in [format!("{LIST}/b.org"), format!("{LIST}/b.org/rooms")] {
        let (status, body) = a.get(&path).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("Synapse's database")),
            "{body}"
        );
    }
    // The refresh fails, is logged, and the server goes on.
    assert!(a.store.destinations.refresh_now(true).await.is_err());
    let (status, _) = a.get(&format!("{LIST}?limit=1")).await;
    assert_eq!(status, 200);
    a.store.close().await;
}

#[tokio::test]
async fn import_replace_refuses_while_the_sender_holds_pdus() {
    let dir = tempfile::tempdir().unwrap();
    let syn = SynapseDb::sqlite(dir.path()).await;
    seed(&syn).await;
    let own = dir.path().join("herald.db");
    let store = Store::open(&own).await.unwrap();
    store
        .outbox
        .enqueue_pdus(vec![herald_store::NewEvent {
            event_id: "$queued".into(),
            room_id: "!room:herald.test".into(),
            pdu_json: r#"{"type":"m.room.message"}"#.into(),
            destinations: vec!["queued.example".into()],
        }])
        .await
        .unwrap();
    let refused = herald_store::import_synapse(&syn.setting(), &store, true, |_| {}).await;
    assert!(
        matches!(refused, Err(StoreError::QueuedPdus { pdus: 1 })),
        "{refused:?}"
    );
    // Nothing was replaced: the queued destination is still Herald's.
    assert!(store.destinations.indexed("queued.example").is_some());
    assert_eq!(store.destinations.destination_count(), 1);
    store.close().await;
    syn.close().await;
}
