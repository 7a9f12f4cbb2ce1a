//! Admin API latency at scale: 1,000,000 destinations and 1,000,000
//! destination_rooms rows (one destination holding 10,000 of them) in a
//! temp SQLite file, served by the real server on 127.0.0.1, measured over
//! HTTP with a keep-alive client.
//!
//! Run: `cargo bench -p herald --bench admin_api`
//! Quick run: `HERALD_BENCH_ROWS=100000 cargo bench -p herald --bench admin_api`
//! (scales destinations and rooms; the big destination keeps 10,000 rooms
//! when there is room for them.)
//! Keep the database: `HERALD_BENCH_DB=/tmp/herald-bench.db` seeds that file
//! once and measures it again on later runs (delete it to reseed), and lets
//! you inspect it with `sqlite3`.
//!
//! The data is seeded by a child process (this same binary with
//! `HERALD_BENCH_SEED_DB` set), so that the measuring process starts the way
//! `herald serve` does: it opens the file, loads the in-memory index, and its
//! RSS is that of a real server, not of the seeding.
//!
//! Each case is also timed as a direct call on the `Store` in the same
//! process (no HTTP, no token check), to show where the time goes.
//!
//! Every response is checked (status, row counts, totals, order, filter
//! matches) before its sample counts, so errors cannot pass as fast answers.
//!
//! The index keeps the last filter's match set for the next pages, so each
//! sample of a filter case follows an untimed request for another needle:
//! those cases time a new filter (the arena scanned). One case times the
//! next page of the same filter (the set reused).
//!
//! Then the real binary (`herald serve`) is started on the same file, three
//! times: the time from its start to its first right answer to the list (the
//! index loaded, the listener up), and its RSS then, from `/proc/<pid>/status`
//! (`HERALD_BENCH_STARTS=0` skips it).
//!
//! Then the list requests are asked again while the intake API runs at full
//! speed on a copy of the database (`intake_load`): p50 and p99 quiet and
//! loaded. `HERALD_BENCH_UNDER_INTAKE=0` skips that part.
//!
//! On PostgreSQL: `HERALD_BENCH_BACKEND=postgres` seeds the SQLite file as
//! above, moves it with `herald migrate-store`'s copy into a new database of
//! a throwaway cluster (`scripts/pg-cluster.sh`), and measures the server
//! on that (the starts and the intake part stay SQLite's: skipped).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod host;
mod intake_load;
#[path = "../tests/common/postgres.rs"]
mod postgres;
#[path = "../tests/process/mod.rs"]
mod process;

use host::{env_number, machine, status_kb};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herald::config::Config;
use herald_shared::{DestinationRoom, DestinationsQuery, RoomsQuery};
use herald_store::{DestinationRow, Store};
use serde_json::Value;

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "bench-admin-secret";
const SERVER_NAME: &str = "herald.bench";
const PREFIX: &str = "/_synapse/admin/v1/federation";
/// Herald's list: Synapse's rows plus status, next retry, last error and
/// last delivery (one indexed lookup per row of the page).
const HERALD_PREFIX: &str = "/_herald/admin/v1/federation";

/// Destinations per `put_destinations` call while seeding.
const CHUNK: usize = 50_000;
/// Rooms of the one big destination.
const BIG_ROOMS: usize = 10_000;
/// Rows per multi-row INSERT of the other rooms.
const ROOMS_PER_INSERT: usize = 300;

/// Samples per case (after warm-up), and the time one case may take.
const SAMPLES: usize = 30;
const WARMUP: usize = 3;
const CASE_BUDGET: Duration = Duration::from_secs(4);

const COMMON: &str = "matrix";
/// A common top-level domain: about 1 name in 8.
const TLD: &str = ".com";
const RARE: &str = "quokka";
const MISSING: &str = "xqzjvw";

/// Fixed "now" so every run builds the same data.
const NOW_MS: i64 = 1_750_000_000_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

// ---------------------------------------------------------------- data --

/// splitmix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "aurora",
    "beacon",
    "birch",
    "cobalt",
    "comet",
    "coral",
    "delta",
    "ember",
    "fable",
    "falcon",
    "fjord",
    "garnet",
    "harbor",
    "hazel",
    "indigo",
    "iris",
    "jade",
    "juniper",
    "kelp",
    "lantern",
    "lumen",
    "maple",
    "meadow",
    "nebula",
    "nimbus",
    "oasis",
    "onyx",
    "orbit",
    "pixel",
    "prism",
    "quartz",
    "raven",
    "river",
    "saffron",
    "sierra",
    "solace",
    "tundra",
    "umber",
    "vertex",
    "willow",
    "zephyr",
    "campus",
    "hacker",
    "space",
    "guild",
    "collective",
    "lab",
    "family",
    "club",
    "union",
    "office",
    "mesh",
    "node",
    "cloud",
    "home",
    "city",
    "uni",
];
const TLDS: &[&str] = &[
    "org", "org", "org", "com", "com", "net", "de", "de", "fr", "io", "chat", "social", "nl", "ch",
    "eu", "uk", "im", "dev",
];
/// Host prefixes other than `matrix`, which takes ~70% of names.
const PREFIXES: &[&str] = &[
    "chat", "im", "synapse", "m", "hs", "home", "talk", "element",
];

/// One realistic server name; every name carries `i`, so all are distinct.
fn name(i: usize, n: usize, rng: &mut Rng) -> String {
    let rare_every = (n / 10).max(1);
    let w1 = rng.pick(WORDS);
    let w2 = rng.pick(WORDS);
    let tld = rng.pick(TLDS);
    let mut s = match rng.below(100) {
        // Bare IPv4 literal with the federation port.
        0 => format!("10.{}.{}.{}:8448", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        1..=70 => format!("matrix{i}.{w1}-{w2}.{tld}"),
        71..=85 => format!("{}{i}.{w1}.{tld}", rng.pick(PREFIXES)),
        _ => format!("{w1}{i}.{w2}.{tld}"),
    };
    if i % rare_every == 7 {
        s = format!("{RARE}-{s}");
    }
    if rng.chance(4) && !s.contains(':') {
        s.push_str(":8448");
    }
    if rng.chance(1) {
        // Some names arrive with capitals; the filter is case-insensitive.
        s = s.to_ascii_uppercase();
    }
    s
}

/// The four numeric columns, mixed as a busy homeserver's table looks.
fn health(rng: &mut Rng) -> (Option<i64>, Option<i64>, Option<i64>, Option<i64>) {
    let stream = |rng: &mut Rng| Some(rng.below(80_000_000) as i64 + 1);
    match rng.below(100) {
        // Healthy: backoff cleared (0, 0), no failure, caught up somewhere.
        0..=69 => {
            let so = if rng.chance(3) { None } else { stream(rng) };
            (Some(0), Some(0), None, so)
        }
        // Known (e.g. from destination_rooms) but never attempted: all NULL.
        70..=79 => (None, None, None, None),
        // In backoff: retry_last_ts recent, interval 10m * 2^k capped at 7d
        // with Synapse's jitter, failure_ts at or before retry_last_ts.
        _ => {
            let last = NOW_MS - rng.below(30 * DAY as u64) as i64;
            let k = rng.below(12) as u32;
            let jitter = 80 + rng.below(61) as i64; // 0.8 .. 1.4
            let interval = (10 * MINUTE * (1i64 << k) * jitter / 100).min(7 * DAY);
            let failure = last - rng.below(60 * DAY as u64) as i64;
            let so = if rng.chance(40) { None } else { stream(rng) };
            (Some(last), Some(interval), Some(failure), so)
        }
    }
}

fn destination_rows(n: usize) -> Vec<DestinationRow> {
    let mut rng = Rng(0x4845_5241_4c44);
    (0..n)
        .map(|i| {
            let destination = name(i, n, &mut rng);
            let (retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering) =
                health(&mut rng);
            DestinationRow {
                destination,
                retry_last_ts,
                retry_interval,
                failure_ts,
                last_successful_stream_ordering,
            }
        })
        .collect()
}

fn room_id(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let local: String = (0..18)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect();
    let server = [
        "matrix.org",
        "kde.org",
        "mozilla.org",
        "fosdem.org",
        "gnome.org",
    ][rng.below(5) as usize];
    format!("!{local}:{server}")
}

/// What the measuring process checks the answers against.
struct Expected {
    rows: u64,
    common: u64,
    rare: u64,
    missing: u64,
    big_destination: String,
    big_rooms: u64,
    detail: DestinationRow,
    /// Names containing `TLD`, counted by SQLite in the measuring process.
    tld: u64,
}

fn count_matching(rows: &[DestinationRow], needle: &str) -> u64 {
    let needle = needle.to_ascii_lowercase();
    rows.iter()
        .filter(|r| r.destination.to_ascii_lowercase().contains(&needle))
        .count() as u64
}

fn expected_of(rows: &[DestinationRow]) -> Expected {
    let n = rows.len();
    let detail = rows
        .iter()
        .skip(n / 3)
        .find(|r| r.retry_last_ts.is_some_and(|t| t != 0))
        .unwrap_or(&rows[n / 3])
        .clone();
    Expected {
        rows: n as u64,
        common: count_matching(rows, COMMON),
        rare: count_matching(rows, RARE),
        missing: count_matching(rows, MISSING),
        big_destination: rows[n / 2].destination.clone(),
        big_rooms: BIG_ROOMS.min(n) as u64,
        detail,
        tld: count_matching(rows, TLD),
    }
}

fn expected_to_json(e: &Expected) -> Value {
    serde_json::json!({
        "rows": e.rows, "common": e.common, "rare": e.rare, "missing": e.missing,
        "big_destination": e.big_destination, "big_rooms": e.big_rooms,
        "detail": {
            "destination": e.detail.destination,
            "retry_last_ts": e.detail.retry_last_ts,
            "retry_interval": e.detail.retry_interval,
            "failure_ts": e.detail.failure_ts,
            "last_successful_stream_ordering": e.detail.last_successful_stream_ordering,
        },
    })
}

fn expected_from_json(v: &Value) -> Expected {
    let d = &v["detail"];
    Expected {
        rows: v["rows"].as_u64().unwrap(),
        common: v["common"].as_u64().unwrap(),
        rare: v["rare"].as_u64().unwrap(),
        missing: v["missing"].as_u64().unwrap(),
        big_destination: v["big_destination"].as_str().unwrap().to_owned(),
        big_rooms: v["big_rooms"].as_u64().unwrap(),
        detail: DestinationRow {
            destination: d["destination"].as_str().unwrap().to_owned(),
            retry_last_ts: d["retry_last_ts"].as_i64(),
            retry_interval: d["retry_interval"].as_i64(),
            failure_ts: d["failure_ts"].as_i64(),
            last_successful_stream_ordering: d["last_successful_stream_ordering"].as_i64(),
        },
        tld: 0,
    }
}

/// How many names contain `needle`, as SQLite's `LIKE` counts them.
async fn count_in_sql(db: &Path, needle: &str) -> u64 {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open the database");
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM destinations WHERE destination LIKE ?")
            .bind(format!("%{needle}%"))
            .fetch_one(&mut conn)
            .await
            .expect("count");
    count as u64
}

/// The child process: builds the database file and `expect.json` beside it.
async fn seed(db: &Path, n: usize) {
    let started = Instant::now();
    let rows = destination_rows(n);
    let expected = expected_of(&rows);
    let generated = started.elapsed();

    // The index's own size and build time, first, while nothing has been
    // freed that it could reuse (RSS would then understate it).
    let rss_before_index = status_kb("VmRSS:");
    let t = Instant::now();
    let index = herald_store::DestinationIndex::build(rows.clone());
    let build_time = t.elapsed();
    let index_kb = status_kb("VmRSS:")
        .zip(rss_before_index)
        .map(|(a, b)| a.saturating_sub(b));
    assert_eq!(index.len(), n);
    drop(index);

    let store = Store::open(db).await.expect("create database");
    // The bench's own connection for bulk inserts (the store hands out none).
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("open the database");
    let t = Instant::now();
    for chunk in rows.chunks(CHUNK) {
        store
            .destinations
            .put_destinations(chunk)
            .await
            .expect("put_destinations");
    }
    let destinations_time = t.elapsed();

    // The big destination through the store's own API...
    let t = Instant::now();
    let mut rng = Rng(0x0052_4f4f_4d53);
    let big: Vec<DestinationRoom> = (0..expected.big_rooms)
        .map(|i| DestinationRoom {
            room_id: room_id(&mut rng),
            stream_ordering: 1_000_000 + i as i64,
        })
        .collect();
    store
        .destinations
        .put_destination_rooms(&expected.big_destination, &big)
        .await
        .expect("put_destination_rooms");
    // ...and the rest (to n rooms in all) as raw multi-row inserts in one
    // transaction, spread over other destinations from a shared pool of room
    // IDs, as real rooms are shared by many servers.
    let pool_ids: Vec<String> = (0..(n / 5).max(100)).map(|_| room_id(&mut rng)).collect();
    let mut remaining = n.saturating_sub(big.len());
    let mut tx = pool.begin().await.expect("begin");
    let mut batch: Vec<(&str, &str, i64)> = Vec::with_capacity(ROOMS_PER_INSERT);
    let mut inserted = big.len();
    let mut d = 0usize;
    while remaining > 0 {
        d = (d + 1 + rng.below(3) as usize) % n;
        if rows[d].destination == expected.big_destination {
            continue;
        }
        // 1..=40 rooms, mostly few.
        let k = (1 + (rng.below(40) * rng.below(40) / 40) as usize)
            .min(remaining)
            .min(pool_ids.len());
        let start = rng.below((pool_ids.len() - k + 1) as u64) as usize;
        for id in &pool_ids[start..start + k] {
            batch.push((&rows[d].destination, id, rng.below(80_000_000) as i64));
            if batch.len() == ROOMS_PER_INSERT {
                insert_rooms(&mut tx, &batch).await;
                batch.clear();
            }
        }
        remaining -= k;
        inserted += k;
    }
    if !batch.is_empty() {
        insert_rooms(&mut tx, &batch).await;
    }
    tx.commit().await.expect("commit rooms");
    let rooms_time = t.elapsed();
    // A last error for every destination that failed and a last delivery
    // for every one delivered to, as Herald's list reads them per page.
    sqlx::query(
        "INSERT INTO destination_health (destination, last_error_ts, last_error_kind, \
         last_error_message, last_error_address, last_delivered_ts) \
         SELECT destination, failure_ts, CASE WHEN failure_ts IS NULL THEN NULL ELSE 'connect' END, \
         CASE WHEN failure_ts IS NULL THEN NULL \
         ELSE 'cannot connect to 127.0.0.1:8448: Connection refused (os error 111)' END, \
         CASE WHEN failure_ts IS NULL THEN NULL ELSE '127.0.0.1:8448' END, \
         CASE WHEN last_successful_stream_ordering IS NULL THEN NULL ELSE ? END \
         FROM destinations WHERE failure_ts IS NOT NULL \
         OR last_successful_stream_ordering IS NOT NULL",
    )
    .bind(NOW_MS)
    .execute(&pool)
    .await
    .expect("seed destination_health");

    // Where Store::open's time goes, measured here so that the measuring
    // process's memory stays that of a server: reading the rows through
    // sqlx (and building the index, timed above).
    let t = Instant::now();
    let read: Vec<ReadRow> = sqlx::query_as(
        "SELECT destination, retry_last_ts, retry_interval, failure_ts, \
             last_successful_stream_ordering FROM destinations",
    )
    .fetch_all(&pool)
    .await
    .expect("read back");
    let read_time = t.elapsed();
    assert_eq!(read.len(), n);
    drop(read);
    store.close().await;

    std::fs::write(expect_path(db), expected_to_json(&expected).to_string())
        .expect("write expect.json");
    let size = std::fs::metadata(db).map_or(0, |m| m.len());
    println!(
        "seeded {n} destinations in {:.1} s (put_destinations, {CHUNK}/call; generating took {:.1} s) \
         and {inserted} destination_rooms rows in {:.1} s ({} for {}); database {:.0} MB",
        destinations_time.as_secs_f64(),
        generated.as_secs_f64(),
        rooms_time.as_secs_f64(),
        expected.big_rooms,
        expected.big_destination,
        size as f64 / 1e6,
    );
    println!(
        "start-up parts: SELECT of all destinations through sqlx {:.2} s; \
         DestinationIndex::build from rows in memory {:.2} s; \
         the index (rows included) takes {} of RSS",
        read_time.as_secs_f64(),
        build_time.as_secs_f64(),
        mb(index_kb),
    );
}

/// One `destinations` row as sqlx reads it.
type ReadRow = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Where the seeding leaves what the answers must be.
fn expect_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".expect.json");
    PathBuf::from(p)
}

async fn insert_rooms(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, batch: &[(&str, &str, i64)]) {
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO destination_rooms (destination, room_id, stream_ordering) ",
    );
    q.push_values(batch, |mut b, (d, r, s)| {
        b.push_bind(*d).push_bind(*r).push_bind(*s);
    });
    q.build().execute(&mut **tx).await.expect("insert rooms");
}

// ------------------------------------------------------------- measure --

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    First,
    Deep,
    Filter,
    Rooms,
    Details,
}

impl Kind {
    fn target_ms(self) -> f64 {
        match self {
            Kind::First => 3.0,
            Kind::Deep => 40.0,
            Kind::Filter => 20.0,
            Kind::Rooms | Kind::Details => 2.0,
        }
    }
}

/// How a list answer must look.
struct ListCheck {
    total: u64,
    rows: usize,
    order_by: &'static str,
    backwards: bool,
    needle: Option<&'static str>,
}

enum Check {
    List(ListCheck),
    Rooms {
        total: u64,
        rows: usize,
        backwards: bool,
    },
    Details(DestinationRow),
}

struct Case {
    name: String,
    kind: Kind,
    path: String,
    check: Check,
    /// A needle asked (untimed) before each sample, so that a filter case
    /// times a new filter: the index keeps only the last filter's match set.
    evict: Option<&'static str>,
}

impl Case {
    fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }

    /// The same answer straight from the store, without HTTP and auth, as
    /// JSON; so the table shows where the time goes.
    async fn direct(&self, store: &Store) -> Value {
        let to_json = |v: Result<Value, serde_json::Error>| v.expect("serialise");
        match &self.check {
            Check::List(_) => {
                let q = DestinationsQuery::parse(self.query()).expect("query");
                let page = store.destinations.list_destinations(q).await;
                if self.path.starts_with(HERALD_PREFIX) {
                    // What Herald's list adds: the extras of the page's rows.
                    let names: Vec<String> = page
                        .destinations
                        .iter()
                        .map(|d| d.destination.clone())
                        .collect();
                    let extras = store.destinations.extras(&names).await.expect("extras");
                    assert!(extras.len() <= names.len());
                }
                to_json(serde_json::to_value(page))
            }
            Check::Rooms { .. } => {
                let q = RoomsQuery::parse(self.query()).expect("query");
                let name = self.destination();
                to_json(serde_json::to_value(
                    store
                        .destinations
                        .destination_rooms(&name, q)
                        .await
                        .expect("rooms"),
                ))
            }
            Check::Details(_) => {
                let name = self.destination();
                to_json(serde_json::to_value(
                    store
                        .destinations
                        .destination_details(&name)
                        .await
                        .expect("details")
                        .expect("known"),
                ))
            }
        }
    }

    fn destination(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        let segment = path
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix("/destinations/"))
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        herald_shared::percent_decode_path(segment)
    }
}

struct Outcome {
    name: String,
    kind: Kind,
    samples: usize,
    median: f64,
    p90: f64,
    /// Median of the same call made on the store in-process.
    store_median: f64,
}

fn check(case: &Case, body: &Value) -> Result<(), String> {
    match &case.check {
        Check::List(c) => {
            let rows = body["destinations"].as_array().ok_or("no destinations")?;
            if body["total"].as_u64() != Some(c.total) {
                return Err(format!("total {} != {}", body["total"], c.total));
            }
            if rows.len() != c.rows {
                return Err(format!("{} rows != {}", rows.len(), c.rows));
            }
            if let Some(needle) = c.needle {
                for r in rows {
                    let d = r["destination"].as_str().unwrap_or("").to_ascii_lowercase();
                    if !d.contains(needle) {
                        return Err(format!("{d} does not contain {needle}"));
                    }
                }
            }
            // The sort column never goes the wrong way (NULL shows as 0 for
            // the first two columns and as null, which sorts first, for the
            // others; names are compared as bytes).
            let key = |r: &Value| -> (Option<i64>, String) {
                let name = r["destination"].as_str().unwrap_or("").to_owned();
                match c.order_by {
                    "destination" => (None, name),
                    col => (r[col].as_i64(), String::new()),
                }
            };
            for w in rows.windows(2) {
                let (a, b) = (key(&w[0]), key(&w[1]));
                let bad = if c.backwards { a < b } else { a > b };
                if bad {
                    return Err(format!("out of order: {} then {}", w[0], w[1]));
                }
            }
            Ok(())
        }
        Check::Rooms {
            total,
            rows,
            backwards,
        } => {
            let got = body["rooms"].as_array().ok_or("no rooms")?;
            if body["total"].as_u64() != Some(*total) || got.len() != *rows {
                return Err(format!(
                    "rooms: total {} rows {}, want {total} and {rows}",
                    body["total"],
                    got.len()
                ));
            }
            let ids: Vec<&str> = got.iter().filter_map(|r| r["room_id"].as_str()).collect();
            let wrong = |w: &[&str]| {
                if *backwards {
                    w[0] <= w[1]
                } else {
                    w[0] >= w[1]
                }
            };
            if ids.len() != got.len() || ids.windows(2).any(wrong) {
                return Err("rooms not in room ID order".into());
            }
            Ok(())
        }
        Check::Details(row) => {
            let in_backoff = row.retry_last_ts.is_some_and(|t| t != 0);
            let want = serde_json::json!({
                "destination": row.destination,
                "last_successful_stream_ordering": row.last_successful_stream_ordering,
                "failure_ts": if in_backoff { row.failure_ts } else { None },
                "retry_last_ts": if in_backoff { row.retry_last_ts.unwrap_or(0) } else { 0 },
                "retry_interval": if in_backoff { row.retry_interval } else { Some(0) },
            });
            if body != &want {
                return Err(format!("details {body} != {want}"));
            }
            Ok(())
        }
    }
}

/// One request, timed from send to the last byte of the body.
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(Duration, Value), String> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let elapsed = t.elapsed();
    if status != 200 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok((elapsed, body))
}

/// Sorted samples' quantile.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn measure(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    store: &Store,
    case: &Case,
) -> Outcome {
    let url = format!("{base}{}", case.path);
    let run = |body: Value| {
        check(case, &body).unwrap_or_else(|e| panic!("{}: {} ({})", case.name, e, case.path))
    };
    for _ in 0..WARMUP {
        let (_, body) = timed_get(client, &url, token)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        run(body);
    }
    let evict_url = case
        .evict
        .map(|needle| format!("{base}{PREFIX}/destinations?destination={needle}"));
    let evict_query = case.evict.map(|needle| DestinationsQuery {
        destination: Some(needle.into()),
        ..Default::default()
    });
    let started = Instant::now();
    let mut ms = Vec::with_capacity(SAMPLES);
    while ms.len() < SAMPLES && (ms.len() < 5 || started.elapsed() < CASE_BUDGET) {
        if let Some(evict) = &evict_url {
            timed_get(client, evict, token)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        }
        let (d, body) = timed_get(client, &url, token)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        run(body);
        ms.push(d.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);

    let started = Instant::now();
    let mut direct = Vec::with_capacity(SAMPLES);
    while direct.len() < SAMPLES && (direct.len() < 5 || started.elapsed() < CASE_BUDGET) {
        if let Some(evict) = &evict_query {
            store.destinations.list_destinations(evict.clone()).await;
        }
        let t = Instant::now();
        let body = case.direct(store).await;
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        run(body);
    }
    direct.sort_by(f64::total_cmp);
    Outcome {
        name: case.name.clone(),
        kind: case.kind,
        samples: ms.len(),
        median: quantile(&ms, 0.5),
        p90: quantile(&ms, 0.9),
        store_median: quantile(&direct, 0.5),
    }
}

fn cases(e: &Expected) -> Vec<Case> {
    const ORDERS: [&str; 5] = [
        "destination",
        "retry_last_ts",
        "retry_interval",
        "failure_ts",
        "last_successful_stream_ordering",
    ];
    let n = e.rows;
    let page = |total: u64, from: u64| total.saturating_sub(from).min(100) as usize;
    let deep = n * 9 / 10;
    let mut out = Vec::new();
    for (kind, from) in [(Kind::First, 0), (Kind::Deep, deep)] {
        for order_by in ORDERS {
            for (dir, backwards) in [("f", false), ("b", true)] {
                out.push(Case {
                    name: format!("list from={from} order_by={order_by} dir={dir}"),
                    kind,
                    evict: None,
                    path: format!(
                        "{PREFIX}/destinations?from={from}&limit=100&order_by={order_by}&dir={dir}"
                    ),
                    check: Check::List(ListCheck {
                        total: n,
                        rows: page(n, from),
                        order_by,
                        backwards,
                        needle: None,
                    }),
                });
            }
        }
    }
    for (label, needle, total) in [
        ("common", COMMON, e.common),
        ("tld", TLD, e.tld),
        ("rare", RARE, e.rare),
        ("missing", MISSING, e.missing),
    ] {
        for (order, order_by, backwards) in [
            ("", "destination", false),
            ("&order_by=retry_last_ts&dir=b", "retry_last_ts", true),
        ] {
            out.push(Case {
                name: format!("filter {label} ({needle}, {total} hits){order}"),
                kind: Kind::Filter,
                evict: Some(if needle == MISSING { RARE } else { MISSING }),
                path: format!("{PREFIX}/destinations?destination={needle}{order}"),
                check: Check::List(ListCheck {
                    total,
                    rows: page(total, 0),
                    order_by,
                    backwards,
                    needle: Some(needle),
                }),
            });
        }
    }
    // Not in the brief's list: a filter deep into its matches, the one case
    // that walks the whole order.
    let from = e.common * 9 / 10;
    out.push(Case {
        name: format!("filter common from={from} (deep)"),
        kind: Kind::Deep,
        evict: Some(MISSING),
        path: format!("{PREFIX}/destinations?destination={COMMON}&from={from}"),
        check: Check::List(ListCheck {
            total: e.common,
            rows: page(e.common, from),
            order_by: "destination",
            backwards: false,
            needle: Some(COMMON),
        }),
    });
    // The next page of a filter just asked: its match set is reused.
    out.push(Case {
        name: format!("filter tld ({TLD}) next page from=100, same filter"),
        kind: Kind::Filter,
        evict: None,
        path: format!("{PREFIX}/destinations?destination={TLD}&from=100"),
        check: Check::List(ListCheck {
            total: e.tld,
            rows: page(e.tld, 100),
            order_by: "destination",
            backwards: false,
            needle: Some(TLD),
        }),
    });
    // Herald's list with health: the same pages through its own endpoint.
    for (kind, from, order_by, dir) in [
        (Kind::First, 0, "destination", "f"),
        (Kind::First, 0, "failure_ts", "b"),
        (Kind::Deep, deep, "retry_last_ts", "f"),
    ] {
        out.push(Case {
            name: format!("herald list from={from} order_by={order_by} dir={dir}"),
            kind,
            evict: None,
            path: format!(
                "{HERALD_PREFIX}/destinations?from={from}&limit=100&order_by={order_by}&dir={dir}"
            ),
            check: Check::List(ListCheck {
                total: n,
                rows: page(n, from),
                order_by,
                backwards: dir == "b",
                needle: None,
            }),
        });
    }
    out.push(Case {
        name: format!("herald filter common ({COMMON}, {} hits)", e.common),
        kind: Kind::Filter,
        evict: Some(MISSING),
        path: format!("{HERALD_PREFIX}/destinations?destination={COMMON}"),
        check: Check::List(ListCheck {
            total: e.common,
            rows: page(e.common, 0),
            order_by: "destination",
            backwards: false,
            needle: Some(COMMON),
        }),
    });
    let enc = |s: &str| s.replace('%', "%25").replace(':', "%3A");
    out.push(Case {
        name: format!("details {}", e.detail.destination),
        kind: Kind::Details,
        evict: None,
        path: format!("{PREFIX}/destinations/{}", enc(&e.detail.destination)),
        check: Check::Details(e.detail.clone()),
    });
    let rooms_from = e.big_rooms.saturating_sub(100);
    for (from, dir) in [(0, "f"), (rooms_from, "f"), (0, "b")] {
        out.push(Case {
            name: format!("rooms ({} rooms) from={from} dir={dir}", e.big_rooms),
            kind: Kind::Rooms,
            evict: None,
            path: format!(
                "{PREFIX}/destinations/{}/rooms?from={from}&dir={dir}",
                enc(&e.big_destination)
            ),
            check: Check::Rooms {
                total: e.big_rooms,
                rows: page(e.big_rooms, from),
                backwards: dir == "b",
            },
        });
    }
    out
}

// ---------------------------------------------------------------- host --

fn mb(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |kb| format!("{:.0} MB", kb as f64 / 1024.0))
}

fn rows_from_env() -> usize {
    env_number("HERALD_BENCH_ROWS", 1_000_000).max(1_000) as usize
}

/// Serves `store` on 127.0.0.1 as `config` says and signs `user` in: the
/// address, a keep-alive client and the access token.
async fn serve_and_sign_in(
    store: &Store,
    config: Config,
    user: &str,
    password: &str,
) -> (std::net::SocketAddr, reqwest::Client, String) {
    let addr = herald::serve::spawn(store.clone(), config)
        .await
        .expect("serve");
    assert!(addr.ip().is_loopback());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let token = login_as(&client, &format!("http://{addr}"), user, password).await;
    (addr, client, token)
}

async fn login_as(client: &reqwest::Client, base: &str, user: &str, password: &str) -> String {
    let resp = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        }))
        .send()
        .await
        .expect("login request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("login body");
    assert_eq!(status, 200, "login failed: {body}");
    body["access_token"].as_str().expect("token").to_owned()
}

async fn bench(n: usize) {
    println!("## Herald admin API benchmark\n");
    println!("machine: {}", machine());
    let dir = tempfile::tempdir().expect("temp dir");
    let db: PathBuf = match std::env::var_os("HERALD_BENCH_DB") {
        Some(kept) => PathBuf::from(kept),
        None => dir.path().join("herald.db"),
    };

    if db.exists() && expect_path(&db).exists() {
        println!("reusing the database seeded earlier at {}", db.display());
    } else {
        // Seed in a child process (see the header).
        let t = Instant::now();
        let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env("HERALD_BENCH_SEED_DB", &db)
            .env("HERALD_BENCH_ROWS", n.to_string())
            .status()
            .expect("spawn seeding process");
        assert!(status.success(), "seeding failed: {status}");
        println!("seeding wall time: {:.1} s", t.elapsed().as_secs_f64());
    }
    let mut expected = expected_from_json(
        &serde_json::from_slice(&std::fs::read(expect_path(&db)).expect("expect.json"))
            .expect("expect.json"),
    );
    expected.tld = count_in_sql(&db, TLD).await;
    assert_eq!(
        expected.rows,
        n as u64,
        "{} holds another size: delete it to reseed",
        db.display()
    );

    // On PostgreSQL: the seeded file moved into a throwaway cluster, which
    // lives until the end of the run.
    let on_postgres = std::env::var("HERALD_BENCH_BACKEND").as_deref() == Ok("postgres");
    let cluster = on_postgres.then(postgres::PgCluster::start);
    let url = match &cluster {
        Some(cluster) => {
            let url = cluster.create_database("herald_bench").await;
            let t = Instant::now();
            let counts = herald_store::migrate_store(&db, &url, false, |_| {})
                .await
                .expect("migrate-store");
            println!(
                "backend: PostgreSQL (migrate-store copied {:?} in {:.1} s)",
                counts.tables,
                t.elapsed().as_secs_f64()
            );
            Some(url)
        }
        None => {
            println!("backend: SQLite");
            None
        }
    };

    let rss_before = status_kb("VmRSS:");
    let t = Instant::now();
    let store = match &url {
        Some(url) => Store::open_postgres(url).await.expect("open store"),
        None => Store::open(&db).await.expect("open store"),
    };
    let open_time = t.elapsed();
    assert_eq!(store.destinations.destination_count() as u64, expected.rows);
    let rss_loaded = status_kb("VmRSS:");
    println!(
        "Store::open (migrations check + loading {} rows into the index): {:.2} s",
        expected.rows,
        open_time.as_secs_f64()
    );

    let hash = herald::auth::password::hash(ADMIN_PASSWORD).expect("hash");
    match store.users.create_user(ADMIN, &hash, true).await {
        Ok(_) | Err(herald_store::StoreError::UserExists(_)) => {}
        Err(e) => panic!("create admin: {e}"),
    }
    let database = url.as_deref().map_or_else(|| db.clone(), PathBuf::from);
    let mut config = Config::loopback(SERVER_NAME, database);
    // Beside the temp database, not in the working directory (where a
    // PostgreSQL `database` would put it).
    config.signing_key_path = Some(dir.path().join("herald.signing.key"));
    let (addr, client, token) = serve_and_sign_in(&store, config, ADMIN, ADMIN_PASSWORD).await;
    let base = format!("http://{addr}");

    let cases = cases(&expected);
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for case in &cases {
        outcomes.push(measure(&client, &base, &token, &store, case).await);
    }
    let measuring = started.elapsed();

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| case | median ms | p90 ms | target ms | | store only, median ms |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---|---:|");
    let mut over = 0;
    for o in &outcomes {
        let target = o.kind.target_ms();
        let ok = o.median <= target;
        if !ok {
            over += 1;
        }
        let _ = writeln!(
            table,
            "| {} | {:.2} | {:.2} | {} | {} | {:.2} |",
            o.name,
            o.median,
            o.p90,
            target,
            if ok { "ok" } else { "**over**" },
            o.store_median,
        );
    }
    println!(
        "\n{} destinations, {} destination_rooms rows; {} cases, up to {SAMPLES} samples each \
         after {WARMUP} warm-up requests, keep-alive HTTP/1.1 on {addr}; measuring took {:.1} s \
         (samples per case: {}..{})\n",
        expected.rows,
        expected.rows,
        outcomes.len(),
        measuring.as_secs_f64(),
        outcomes.iter().map(|o| o.samples).min().unwrap_or(0),
        outcomes.iter().map(|o| o.samples).max().unwrap_or(0),
    );
    println!("{table}");
    println!(
        "RSS: {} before open, {} after loading the index, {} after the run (peak {})",
        mb(rss_before),
        mb(rss_loaded),
        mb(status_kb("VmRSS:")),
        mb(status_kb("VmHWM:")),
    );
    println!(
        "{} of {} cases over target (a case is ok when its median is within target)",
        over,
        outcomes.len()
    );

    store.close().await;
    if on_postgres {
        return;
    }
    if env_number("HERALD_BENCH_STARTS", 3) > 0 {
        starts(&db, &token, &expected, env_number("HERALD_BENCH_STARTS", 3)).await;
    }

    // The same list requests while the intake writes the index (on a copy).
    if std::env::var("HERALD_BENCH_UNDER_INTAKE").as_deref() != Ok("0") {
        let list_cases: Vec<intake_load::ListCase> = cases
            .iter()
            .filter(|c| matches!(c.check, Check::List(_)))
            .map(|c| intake_load::ListCase {
                name: c.name.clone(),
                path: c.path.clone(),
                target_ms: c.kind.target_ms(),
            })
            .collect();
        intake_load::run(&db, ADMIN, ADMIN_PASSWORD, SERVER_NAME, &list_cases).await;
    }
}

/// A `kB` field of another process's `/proc/<pid>/status`.
fn status_kb_of(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts `herald serve` on `db` `times` times: from the start of the
/// process to its first right answer to the list (polled every 2 ms, up to
/// 2 minutes), and its RSS then and after a common filter and a summary.
async fn starts(db: &Path, token: &str, e: &Expected, times: u64) {
    let bin = env!("CARGO_BIN_EXE_herald");
    let dir = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::new();
    let mut lines = Vec::new();
    for run in 1..=times {
        let port = process::free_port();
        let config = dir.path().join("herald.toml");
        std::fs::write(
            &config,
            format!(
                "server_name = \"{SERVER_NAME}\"\ndatabase = {db:?}\nlisten = \"127.0.0.1:{port}\"\n"
            ),
        )
        .expect("write config");
        let log = dir.path().join(format!("herald-{run}.log"));
        let started = Instant::now();
        let child = process::Process(
            std::process::Command::new(bin)
                .args(["serve", "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("start herald"),
        );
        let pid = child.0.id();
        let base = format!("http://127.0.0.1:{port}");
        let list = format!("{base}{PREFIX}/destinations?limit=1");
        let deadline = started + Duration::from_secs(120);
        let ready = loop {
            if let Ok((_, body)) = timed_get(&client, &list, token).await {
                assert_eq!(body["total"].as_u64(), Some(e.rows), "{body}");
                break started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "herald did not answer within 2 minutes: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let rss_ready = status_kb_of(pid, "VmRSS:");
        let filter = format!("{base}{PREFIX}/destinations?destination={COMMON}");
        let (_, body) = timed_get(&client, &filter, token).await.expect("filter");
        assert_eq!(body["total"].as_u64(), Some(e.common));
        let summary = format!("{HERALD_PREFIX}/summary");
        let _ = timed_get(&client, &format!("{base}{summary}"), token).await;
        let rss_used = status_kb_of(pid, "VmRSS:");
        let peak = status_kb_of(pid, "VmHWM:");
        drop(child);
        lines.push(format!(
            "| {run} | {:.2} | {} | {} | {} |",
            ready.as_secs_f64(),
            mb(rss_ready),
            mb(rss_used),
            mb(peak)
        ));
    }
    println!(
        "\n`herald serve` on the {} destinations (page cache warm): from the process's start to \
         its first right answer to the list, and its RSS\n",
        e.rows
    );
    println!(
        "| start | ready s | RSS ready | RSS after a common filter and the summary | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|");
    for line in lines {
        println!("{line}");
    }
}

fn main() {
    let n = rows_from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match std::env::var_os("HERALD_BENCH_SEED_DB") {
        Some(db) => runtime.block_on(seed(Path::new(&db), n)),
        None => runtime.block_on(bench(n)),
    }
}
