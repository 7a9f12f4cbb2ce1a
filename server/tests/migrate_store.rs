//! `herald migrate-store` with the real binary: a SQLite Herald store filled
//! by a real `herald serve` (events delivered to one loopback receiver and
//! failing at another, EDUs, a login, a forgotten destination) is copied
//! into a new PostgreSQL database; every table is compared row for row
//! through the test's own connections; then `herald serve` on PostgreSQL
//! delivers what was queued, a new event, and lets the user log in. And
//! what it refuses: a non-empty target, a served source, a foreign source,
//! another schema version.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "common/backend.rs"]
pub mod backend;
#[path = "common/postgres.rs"]
pub mod postgres;
mod process;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backend::{Backend, TestDb};
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use process::{
    free_port, intake_body, log_tail, sending_config_on, start_serve, wait_delivered_within,
    Process,
};
use serde_json::{json, Value};
use sqlx::{Connection, Row};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const TOKEN: &str = "sender-secret";

/// Every table of Herald's store with every column, each as an expression
/// giving the same text on both backends (the test's own oracle: it does
/// not ask the copy which columns there are).
const TABLES: &[(&str, &[&str])] = &[
    ("herald_meta", &["key", "value"]),
    (
        "destinations",
        &[
            "destination",
            "retry_last_ts",
            "retry_interval",
            "failure_ts",
            "last_successful_stream_ordering",
        ],
    ),
    (
        "destination_rooms",
        &["destination", "room_id", "stream_ordering"],
    ),
    ("users", &["name", "password_hash", "admin", "created_ts"]),
    (
        "access_tokens",
        &[
            "token_hash",
            "user_name",
            "device_id",
            "created_ts",
            "expires_ts",
        ],
    ),
    (
        "outgoing_events",
        &[
            "stream_ordering",
            "event_id",
            "room_id",
            "json",
            "received_ts",
            "canonical",
        ],
    ),
    ("destination_pdus", &["destination", "stream_ordering"]),
    (
        "destination_edus",
        &[
            "id",
            "destination",
            "edu_type",
            "content",
            "received_ts",
            "canonical",
        ],
    ),
    (
        "destination_health",
        &[
            "destination",
            "last_error_ts",
            "last_error_kind",
            "last_error_message",
            "last_error_address",
            "last_delivered_ts",
        ],
    ),
    (
        "destination_history",
        &[
            "id",
            "destination",
            "ts",
            "event",
            "last_ts",
            "count",
            "kind",
            "message",
            "outage_ms",
            "actor",
        ],
    ),
];

/// The expression reading `column` as text on SQLite or PostgreSQL.
fn as_text(column: &str, pg: bool) -> String {
    match (column, pg) {
        ("token_hash", false) => "lower(hex(token_hash))".into(),
        ("token_hash", true) => "encode(token_hash, 'hex')".into(),
        ("admin", _) => "CASE WHEN admin THEN '1' ELSE '0' END".into(),
        (c, _) => format!("CAST({c} AS TEXT)"),
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Every row of `table`, each column as text (sorted by the caller).
fn select(table: &str, columns: &[&str], pg: bool) -> String {
    let list: Vec<String> = columns.iter().map(|c| as_text(c, pg)).collect();
    format!("SELECT {} FROM {table}", list.join(", "))
}

async fn sqlite_rows(path: &Path, table: &str, columns: &[&str]) -> Rows {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows = sqlx::query(&select(table, columns, false))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    sorted_texts(rows, columns.len())
}

async fn postgres_rows(url: &str, table: &str, columns: &[&str]) -> Rows {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(&select(table, columns, true))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    sorted_texts(rows, columns.len())
}

/// The rows' first `n` columns as text, sorted.
fn sorted_texts<R>(rows: Vec<R>, n: usize) -> Rows
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut rows: Rows = rows
        .iter()
        .map(|r| (0..n).map(|i| r.get(i)).collect())
        .collect();
    rows.sort();
    rows
}

/// The SQLite file's tables and each one's columns (`PRAGMA table_info`),
/// without SQLite's and sqlx's own.
async fn sqlite_schema(path: &Path) -> Vec<(String, Vec<String>)> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT IN ('sqlite_sequence', '_sqlx_migrations') ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Vec::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        schema.push((table, columns));
    }
    conn.close().await.unwrap();
    schema
}

/// Runs the real binary with `args`.
fn herald(args: &[&str]) -> Output {
    Command::new(HERALD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run herald")
}

/// Runs `herald` with `args`, which must fail; its stderr.
fn herald_refused(args: &[&str]) -> String {
    let out = herald(args);
    assert!(!out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Herald's files: a config on SQLite and one on PostgreSQL, the same
/// server name and signing key.
struct Setup {
    dir: tempfile::TempDir,
    cert: LoopbackCert,
    sqlite: PathBuf,
    sqlite_config: PathBuf,
    pg_config: PathBuf,
    admin: String,
    runs: usize,
}

impl Setup {
    fn new(pg_url: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        let (admin_port, federation_port) = (free_port(), free_port());
        let sqlite = dir.path().join("herald.db");
        let retry = "destination_min_retry_interval = \"300ms\"\n\
                     [federation]\n\
                     max_long_retries = 0\n";
        let config = |database: &str| {
            sending_config_on(
                database,
                dir.path(),
                (&cert.cert_path, &cert.key_path),
                (admin_port, federation_port),
                TOKEN,
                retry,
            )
        };
        let sqlite_config = dir.path().join("sqlite.toml");
        let pg_config = dir.path().join("postgres.toml");
        std::fs::write(&sqlite_config, config(sqlite.to_str().unwrap())).unwrap();
        std::fs::write(&pg_config, config(pg_url)).unwrap();
        Setup {
            dir,
            cert,
            sqlite,
            sqlite_config,
            pg_config,
            admin: format!("127.0.0.1:{admin_port}"),
            runs: 0,
        }
    }

    /// Starts `herald serve` on `config` and waits until its port answers.
    async fn start(&mut self, config: &Path) -> Process {
        self.runs += 1;
        let log = self.log_path(self.runs);
        start_serve(config, &log, &self.admin)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("herald-{run}.log"))
    }

    fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                format!(
                    "--- run {run} (last lines) ---\n{}",
                    log_tail(&self.log_path(run), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self) -> (u16, Value) {
        let body = serde_json::to_value(herald_shared::PasswordLogin::new("admin", "pw")).unwrap();
        self.post("/_matrix/client/v3/login", "", body).await
    }
}

/// Waits (bounded, 30 s) until `rx` holds every event of `expected`.
async fn wait_delivered(setup: &Setup, rx: &Homeserver, expected: &[String]) {
    let expected: HashSet<String> = expected.iter().cloned().collect();
    wait_delivered_within(&[rx], &expected, Duration::from_secs(30), || setup.logs()).await;
}

/// Polls `done` (bounded by 30 s).
async fn wait_until(setup: &Setup, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", setup.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_sqlite_store_moves_to_postgresql_row_for_row_and_serves_on() {
    let target = TestDb::new(Backend::Postgres).await;
    let url = target.setting();
    let mut setup = Setup::new(&url);
    let sqlite_config = setup.sqlite_config.to_str().unwrap().to_owned();
    let out = herald(&[
        "user",
        "add",
        "admin",
        "--password",
        "pw",
        "--admin",
        "--config",
        &sqlite_config,
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // A real server on SQLite: one receiver takes everything, one fails
    // (its events and EDUs stay queued, its failures make history), one
    // destination is forgotten.
    let ok = Homeserver::start_with_cert(Behaviour::healthy(), &setup.cert)
        .await
        .unwrap();
    let failing = Homeserver::start_with_cert(Behaviour::healthy(), &setup.cert)
        .await
        .unwrap();
    failing.force_status(Some(500));
    let forgotten = "forgotten.invalid";
    let sqlite_config_path = setup.sqlite_config.clone();
    let server = setup.start(&sqlite_config_path).await;
    let (status, login) = setup.login().await;
    assert_eq!(status, 200, "{login}");
    let old_token = login["access_token"].as_str().unwrap().to_owned();
    let first: Vec<String> = (0..20).map(|i| format!("$before{i}")).collect();
    let (status, body) = setup
        .post(
            "/_herald/v1/send/pdus",
            TOKEN,
            intake_body(
                &first,
                "!migrate:herald.test",
                &[ok.name(), failing.name(), forgotten],
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let edus = json!({"edus": [
        {"edu_type": "m.direct_to_device", "content": {"n": 1}, "destinations": [ok.name(), failing.name()]},
        {"edu_type": "m.direct_to_device", "content": {"n": 2}, "destinations": [failing.name()]},
    ]});
    let (status, body) = setup.post("/_herald/v1/send/edus", TOKEN, edus).await;
    assert_eq!(status, 200, "{body}");
    wait_delivered(&setup, &ok, &first).await;
    wait_until(&setup, "the failing receiver was not tried twice", || {
        failing.received().attempts.len() >= 2
    })
    .await;
    let response = reqwest::Client::new()
        .delete(setup.url(&format!(
            "/_herald/admin/v1/federation/destinations/{forgotten}"
        )))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // A served source is refused, naming it.
    let sqlite_path = setup.sqlite.to_str().unwrap().to_owned();
    let err = herald_refused(&["migrate-store", "--from", &sqlite_path, "--to", &url]);
    assert!(
        err.contains("`--from`")
            && err.contains("cannot be claimed for the copy: another `herald serve` holds"),
        "{err}"
    );
    drop(server);

    // Every table holds something to copy.
    let schema = sqlite_schema(&setup.sqlite).await;
    let mut expected: Vec<(String, Vec<String>)> = TABLES
        .iter()
        .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
        .collect();
    expected.sort();
    let mut found = schema.clone();
    found.retain(|(table, _)| !herald_store::migrate::NOT_COPIED.contains(&table.as_str()));
    found.sort();
    assert_eq!(found, expected, "the test names every table and column");
    let mut source = Vec::new();
    for (table, columns) in TABLES {
        let rows = sqlite_rows(&setup.sqlite, table, columns).await;
        assert!(!rows.is_empty(), "the source's {table} is empty");
        source.push(rows);
    }

    // The copy, with the config naming the source.
    let out = herald(&["migrate-store", "--config", &sqlite_config, "--to", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for ((table, _), rows) in TABLES.iter().zip(&source) {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no count for {table}: {stdout}"));
        let unit = if rows.len() == 1 { "row" } else { "rows" };
        assert!(
            line.ends_with(&format!(" {} {unit}", rows.len())),
            "{table}: {line}"
        );
    }
    for ((table, columns), rows) in TABLES.iter().zip(&source) {
        assert_eq!(
            &postgres_rows(&url, table, columns).await,
            rows,
            "{table} differs"
        );
    }

    // Run again: the target holds data now, refused unless --replace.
    let err = herald_refused(&["migrate-store", "--from", &sqlite_path, "--to", &url]);
    assert!(
        err.contains("already holds rows in") && err.contains("(pass --replace to replace them)"),
        "{err}"
    );
    let out = herald(&[
        "migrate-store",
        "--from",
        &sqlite_path,
        "--to",
        &url,
        "--replace",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for ((table, columns), rows) in TABLES.iter().zip(&source) {
        assert_eq!(
            &postgres_rows(&url, table, columns).await,
            rows,
            "{table} differs after --replace"
        );
    }
    let high_water: i64 = {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", setup.sqlite.display()))
                .await
                .unwrap();
        let seq =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'outgoing_events'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        seq
    };

    // `herald serve` on the copy: the old token still works, the user logs
    // in, what was queued is delivered, a new event gets a new ordering
    // and is delivered once.
    failing.force_status(None);
    let pg_config = setup.pg_config.clone();
    let _server = setup.start(&pg_config).await;
    let response = reqwest::Client::new()
        .get(setup.url("/_matrix/client/v3/account/whoami"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, login) = setup.login().await;
    assert_eq!(status, 200, "{login}");
    wait_delivered(&setup, &failing, &first).await;
    wait_until(&setup, "the queued EDUs were not delivered", || {
        let edus: Vec<String> = failing
            .received()
            .transactions
            .iter()
            .flat_map(|t| t.edu_types.clone())
            .collect();
        edus.len() >= 2
    })
    .await;
    let after = vec!["$after".to_owned()];
    let (status, body) = setup
        .post(
            "/_herald/v1/send/pdus",
            TOKEN,
            intake_body(&after, "!migrate:herald.test", &[ok.name()]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ordering = body["stream_orderings"][0].as_i64().unwrap();
    assert!(ordering > high_water, "{ordering} reused (≤ {high_water})");
    wait_delivered(&setup, &ok, &after).await;
    let ok_ids = ok.received().event_ids();
    let unique: HashSet<&String> = ok_ids.iter().collect();
    assert_eq!(
        unique.len(),
        ok_ids.len(),
        "an event was sent twice: {ok_ids:?}"
    );
    let failing_ids = failing.received().event_ids();
    let unique: HashSet<&String> = failing_ids.iter().collect();
    assert_eq!(unique.len(), failing_ids.len(), "an event was sent twice");

    // A served target is refused too, and left as it is.
    let err = herald_refused(&[
        "migrate-store",
        "--from",
        &sqlite_path,
        "--to",
        &url,
        "--replace",
    ]);
    assert!(
        err.contains("`--to`") && err.contains("cannot be claimed for the copy: a `herald serve`"),
        "{err}"
    );
    assert_eq!(
        target
            .strings("SELECT event_id FROM outgoing_events WHERE event_id = '$after'")
            .await,
        vec!["$after".to_owned()]
    );
}

#[tokio::test]
async fn a_foreign_or_other_version_source_is_refused_naming_both() {
    let target = TestDb::new(Backend::Postgres).await;
    let url = target.setting();
    let dir = tempfile::tempdir().unwrap();
    // Not Herald's.
    let foreign = dir.path().join("other.db");
    {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", foreign.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE events (id INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let err = herald_refused(&[
        "migrate-store",
        "--from",
        foreign.to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert!(
        err.contains("is not a Herald database") && err.contains("events"),
        "{err}"
    );
    // Herald's, one schema version behind.
    let old = dir.path().join("old.db");
    let out = herald(&[
        "user",
        "add",
        "admin",
        "--password",
        "pw",
        "--database",
        old.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let known = {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", old.display()))
            .await
            .unwrap();
        let known: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(known)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        known
    };
    let err = herald_refused(&[
        "migrate-store",
        "--from",
        old.to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert!(
        err.contains(&format!("schema version {}", known - 1))
            && err.contains(&format!("this Herald's is {known}")),
        "{err}"
    );
    // Not a PostgreSQL URL.
    herald_refused(&[
        "migrate-store",
        "--from",
        old.to_str().unwrap(),
        "--to",
        "x.db",
    ]);
    // Nothing was written to the target by any refusal.
    assert_eq!(
        target
            .i64s("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'")
            .await,
        vec![0]
    );
}
