//! Attached mode at scale: N destinations (1,000,000 by default) in a real
//! Synapse 1.163 schema on SQLite and on PostgreSQL (a throwaway cluster on
//! 127.0.0.1), Herald attached to it. Measures the load (time, RSS), one
//! refresh cycle's cost (wall time and CPU, Herald's and PostgreSQL's) when
//! nothing changed, after one row changed, with the buckets compared and
//! nothing changed, and after a delete (a walk over every row), and the
//! time from a row changing in Synapse's database to it showing in the
//! index with the default refresh interval.
//!
//! Run: `cargo bench -p herald --bench synapse_refresh [-- sqlite|postgres]`
//! Quick run: `HERALD_BENCH_ROWS=100000 cargo bench -p herald --bench synapse_refresh`
//! Needs `scripts/synapse-schema.sh` (Synapse's venv and PostgreSQL's binaries).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod host;
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::time::{Duration, Instant};

use herald_store::{Store, SynapseSettings};
use host::{cpu_time, env_number, machine, status_kb};

/// Live samples of the change-to-shown delay.
const LIVE_SAMPLES: usize = 5;
/// The longest one change may take to show before the bench gives up.
const LIVE_BOUND: Duration = Duration::from_secs(60);

#[path = "../tests/common/synapse_db.rs"]
#[allow(unused_imports)]
mod synapse_db;

// synapse_db refers to `super::sql_pool` and `super::postgres`.
async fn sql_pool(path: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

use synapse_db::{Arg, SynapseDb};

/// Everything the `postgres` processes on this machine have used.
fn postgres_cpu() -> Duration {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        ticks += fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
    }
    Duration::from_millis(ticks * 10)
}

fn seed_sql(rows: u64, postgres: bool) -> String {
    let columns = "'host' || i || '.example', \
        CASE WHEN i % 10 = 0 THEN NULL WHEN i % 3 = 0 THEN 1700000000000 + i ELSE 0 END, \
        CASE WHEN i % 10 = 0 THEN NULL WHEN i % 3 = 0 THEN 60000 * (1 + i % 50) ELSE 0 END, \
        CASE WHEN i % 3 = 0 THEN 1690000000000 + i ELSE NULL END, \
        CASE WHEN i % 7 = 0 THEN NULL ELSE i END";
    let insert =
        "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
                  last_successful_stream_ordering)";
    if postgres {
        format!(
            "{insert} SELECT {columns} FROM generate_series(0, {}) AS s(i)",
            rows - 1
        )
    } else {
        format!(
            "{insert} WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             SELECT {columns} FROM n",
            rows - 1
        )
    }
}

struct Cost {
    wall: Duration,
    herald_cpu: Duration,
    postgres_cpu: Duration,
}

async fn measure<T>(f: impl std::future::Future<Output = T>) -> (T, Cost) {
    let (cpu0, pg0, t0) = (
        cpu_time().unwrap_or_default(),
        postgres_cpu(),
        Instant::now(),
    );
    let out = f.await;
    let cost = Cost {
        wall: t0.elapsed(),
        herald_cpu: cpu_time().unwrap_or_default().saturating_sub(cpu0),
        postgres_cpu: postgres_cpu().saturating_sub(pg0),
    };
    (out, cost)
}

fn show(what: &str, c: &Cost, postgres: bool) {
    let pg = if postgres {
        format!(
            ", PostgreSQL CPU {:>7.1} ms",
            c.postgres_cpu.as_secs_f64() * 1e3
        )
    } else {
        String::new()
    };
    println!(
        "  {what:<44} wall {:>8.1} ms, Herald CPU {:>7.1} ms{pg}",
        c.wall.as_secs_f64() * 1e3,
        c.herald_cpu.as_secs_f64() * 1e3
    );
}

async fn bench(kind: &str, rows: u64) {
    let postgres = kind == "postgres";
    let dir = tempfile::tempdir().unwrap();
    let pg = postgres.then(postgres::PgCluster::start);
    let db = match &pg {
        Some(pg) => SynapseDb::postgres(pg, "synapse").await,
        None => SynapseDb::sqlite(dir.path()).await,
    };
    let t = Instant::now();
    db.exec(&seed_sql(rows, postgres), &[]).await;
    if postgres {
        db.exec("ANALYZE destinations", &[]).await;
    }
    println!(
        "{kind}: {rows} destinations seeded in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let own = dir.path().join("herald.db");
    let quiet = SynapseSettings {
        database: db.setting(),
        refresh_interval: Duration::from_secs(3600),
    };
    let rss0 = status_kb("VmRSS:").unwrap_or(0);
    let (store, cost) = measure(Store::open_attached(&own, &quiet)).await;
    let store = store.unwrap();
    assert_eq!(store.destinations.destination_count() as u64, rows);
    show("open_attached (check, load, index)", &cost, postgres);
    println!(
        "  RSS after loading: {} MB (+{} MB)",
        status_kb("VmRSS:").unwrap_or(0) / 1024,
        (status_kb("VmRSS:").unwrap_or(0).saturating_sub(rss0)) / 1024
    );
    let d = &store.destinations;
    list_queries(d, rows).await;

    let (report, cost) = measure(d.refresh_now(false)).await;
    let report = report.unwrap().unwrap();
    assert!(!report.compared && report.edits == 0, "{report:?}");
    show("cycle, nothing changed (detector only)", &cost, postgres);

    let (report, cost) = measure(d.refresh_now(true)).await;
    let report = report.unwrap().unwrap();
    // The load computed the buckets in Herald: the database's are the same.
    assert_eq!(
        report,
        herald_store::synapse::refresh::CycleReport {
            compared: true,
            ..Default::default()
        }
    );
    show("cycle, buckets compared, nothing changed", &cost, postgres);

    let name = format!("host{}.example", rows / 2);
    db.exec(
        "UPDATE destinations SET retry_last_ts = ?, retry_interval = ? WHERE destination = ?",
        &[
            Arg::Int(Some(1_800_000_000_000)),
            Arg::Int(Some(123_456)),
            Arg::Text(name.clone()),
        ],
    )
    .await;
    // PostgreSQL's counters move once the writer's statistics are flushed.
    let (report, cost) = measure(d.refresh_now(true)).await;
    let report = report.unwrap().unwrap();
    assert_eq!((report.edits, report.walked), (1, false), "{report:?}");
    assert_eq!(d.indexed(&name).unwrap().retry_interval, Some(123_456));
    show(
        "cycle, one row updated (one bucket fetched)",
        &cost,
        postgres,
    );

    db.exec(
        "DELETE FROM destinations WHERE destination = ?",
        &[Arg::Text(name.clone())],
    )
    .await;
    let (report, cost) = measure(d.refresh_now(true)).await;
    let report = report.unwrap().unwrap();
    assert!(report.walked && report.edits == 1, "{report:?}");
    assert!(d.indexed(&name).is_none());
    show(
        "cycle, one row deleted (walk over every row)",
        &cost,
        postgres,
    );
    store.close().await;

    // Live: the task at the default interval.
    let live = SynapseSettings {
        database: db.setting(),
        refresh_interval: SynapseSettings::DEFAULT_REFRESH,
    };
    let store = Store::open_attached(&own, &live).await.unwrap();
    let mut delays = Vec::new();
    for sample in 0..LIVE_SAMPLES {
        let name = format!("host{}.example", 1 + sample * 7919);
        let value = 900_000 + sample as i64;
        db.exec(
            "UPDATE destinations SET retry_interval = ? WHERE destination = ?",
            &[Arg::Int(Some(value)), Arg::Text(name.clone())],
        )
        .await;
        let t = Instant::now();
        while store.destinations.indexed(&name).unwrap().retry_interval != Some(value) {
            assert!(
                t.elapsed() < LIVE_BOUND,
                "{name} did not show within {LIVE_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.push(t.elapsed());
        // Changes land at different points of the interval.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    delays.sort();
    println!(
        "  change to shown, interval {:?}, {LIVE_SAMPLES} samples: min {:.2} s, median {:.2} s, max {:.2} s",
        SynapseSettings::DEFAULT_REFRESH,
        delays[0].as_secs_f64(),
        delays[LIVE_SAMPLES / 2].as_secs_f64(),
        delays[LIVE_SAMPLES - 1].as_secs_f64()
    );
    store.close().await;
    db.close().await;
}

/// The admin API bench's kinds of list query, on the attached store
/// (direct calls: the HTTP layer is the same as unattached).
async fn list_queries(d: &herald_store::Destinations, rows: u64) {
    use herald_shared::{DestinationsQuery, Direction, OrderBy};
    let cases: Vec<(&str, DestinationsQuery)> = vec![
        ("first page", DestinationsQuery::default()),
        (
            "deep page (from 90%)",
            DestinationsQuery {
                from: rows * 9 / 10,
                ..Default::default()
            },
        ),
        (
            "sorted deep page (retry_last_ts desc, from 50%)",
            DestinationsQuery {
                from: rows / 2,
                order_by: OrderBy::RetryLastTs,
                dir: Direction::Backwards,
                ..Default::default()
            },
        ),
        (
            "filter, common substring (\"host1\")",
            DestinationsQuery {
                destination: Some("host1".into()),
                ..Default::default()
            },
        ),
        (
            "filter, no match",
            DestinationsQuery {
                destination: Some("xqzjvw".into()),
                ..Default::default()
            },
        ),
    ];
    for (what, query) in cases {
        let mut times = Vec::new();
        let mut total = 0;
        for _ in 0..21 {
            let t = Instant::now();
            let page = d.list_destinations(query.clone()).await;
            times.push(t.elapsed());
            total = page.total;
        }
        times.sort();
        println!(
            "  list: {what:<46} median {:>7.2} ms (total {total})",
            times[10].as_secs_f64() * 1e3
        );
    }
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=herald_store=debug` shows where the load's time goes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let rows = env_number("HERALD_BENCH_ROWS", 1_000_000);
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("synapse_refresh on {}", machine());
    for kind in ["sqlite", "postgres"] {
        if only.is_empty() || only.iter().any(|o| o == kind) {
            bench(kind, rows).await;
        }
    }
}
