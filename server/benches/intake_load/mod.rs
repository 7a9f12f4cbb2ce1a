//! The admin list under intake load: the same list requests as the quiet
//! run, asked again while clients post events to the intake API as fast as
//! the server takes them. Every event goes to new loopback destinations
//! (`127.0.0.1:<port>`, refused by the default IP range filter, so the
//! sender fails at once and writes their backoff), so the destinations
//! index is written continuously: new rows from the intake's commits and
//! backoff timings from the sender, while list scans read it.
//!
//! It runs on a copy of the benchmark's database, so the seeded file stays
//! as it was. Bounded: `LOAD_SECONDS` of load, `MAX_REQUESTS` intake
//! requests at most.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::Config;
use herald_store::Store;
use serde_json::{json, Value};

const TOKEN: &str = "bench-intake-secret";
/// Concurrent intake clients, events per request, destinations per event.
const CLIENTS: usize = 4;
const EVENTS_PER_REQUEST: usize = 20;
const DESTINATIONS_PER_EVENT: usize = 10;
/// Distinct new destinations the load spreads over.
const DESTINATION_POOL: u64 = 5_000;
const LOAD_SECONDS: u64 = 20;
const MAX_REQUESTS: u64 = 200_000;
/// Samples per case when quiet; rounds at most under load (each round asks
/// every case once, for `LOAD_SECONDS`).
const SAMPLES: usize = 100;
const MAX_ROUNDS: usize = 5_000;

/// One list request and its target (ms).
pub struct ListCase {
    pub name: String,
    pub path: String,
    pub target_ms: f64,
}

struct Latencies {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn latencies(mut ms: Vec<f64>) -> Latencies {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latencies {
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
        n: ms.len(),
    }
}

/// Times each case in turn (round-robin, so load changes over time reach
/// every case alike), `rounds` times or until `deadline`.
async fn sample(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    cases: &[ListCase],
    rounds: usize,
    deadline: Instant,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(SAMPLES); cases.len()];
    'rounds: for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            if Instant::now() > deadline {
                break 'rounds;
            }
            let t = Instant::now();
            let resp = client
                .get(format!("{base}{}", case.path))
                .bearer_auth(token)
                .send()
                .await
                .expect("list request");
            let status = resp.status();
            let body: Value = resp.json().await.expect("list body");
            let elapsed = t.elapsed();
            assert_eq!(status, 200, "{}: {body}", case.name);
            assert!(body["destinations"].is_array(), "{}: {body}", case.name);
            out[i].push(elapsed.as_secs_f64() * 1e3);
        }
    }
    out
}

/// Posts events until told to stop; returns how many were acknowledged.
async fn intake_client(
    client: reqwest::Client,
    url: String,
    id: usize,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
) -> u64 {
    let mut acked = 0;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && requests.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
        let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
            .map(|e| {
                n += 1;
                let seq = n * CLIENTS as u64 + id as u64;
                let destinations: Vec<String> = (0..DESTINATIONS_PER_EVENT as u64)
                    .map(|d| {
                        let port = 20_000 + (seq * 7 + d * 613) % DESTINATION_POOL;
                        format!("127.0.0.1:{port}")
                    })
                    .collect();
                json!({
                    "event_id": format!("$load{id}_{n}_{e}"),
                    "room_id": format!("!room{}:herald.bench", seq % 500),
                    "pdu": {"type": "m.room.message", "content": {"body": "load"}},
                    "destinations": destinations,
                })
            })
            .collect();
        let resp = client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("intake request");
        assert_eq!(resp.status(), 200, "intake refused the load");
        acked += EVENTS_PER_REQUEST as u64;
    }
    acked
}

/// Runs both phases on a copy of `db` and prints the table.
pub async fn run(db: &Path, admin: &str, password: &str, server_name: &str, cases: &[ListCase]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("herald.db");
    std::fs::copy(db, &copy).expect("copy the database");
    let store = Store::open(&copy).await.expect("open the copy");
    let mut config = Config::loopback(server_name, copy.clone());
    config.sender_api_token = Some(TOKEN.into());
    let (addr, client, token) = super::serve_and_sign_in(&store, config, admin, password).await;
    let base = format!("http://{addr}");

    let quiet = sample(
        &client,
        &base,
        &token,
        cases,
        SAMPLES,
        Instant::now() + Duration::from_secs(60),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let known_before = store.destinations.destination_count();
    let started = Instant::now();
    let load: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(intake_client(
                reqwest::Client::new(),
                format!("{base}/_herald/v1/send/pdus"),
                id,
                stop.clone(),
                requests.clone(),
            ))
        })
        .collect();
    // Sampled for the whole load, however many rounds that takes.
    let loaded = sample(
        &client,
        &base,
        &token,
        cases,
        MAX_ROUNDS,
        started + Duration::from_secs(LOAD_SECONDS),
    )
    .await;
    let measured_for = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for task in load {
        acked += task.await.expect("intake client");
    }
    let loaded_for = started.elapsed();
    let added = store.destinations.destination_count() - known_before;

    println!(
        "\n### The list under intake load\n\n{CLIENTS} intake clients posting \
         {EVENTS_PER_REQUEST} events × {DESTINATIONS_PER_EVENT} destinations per request: \
         {acked} events ({:.0} events/s, {:.0} PDUs queued/s) acknowledged in {:.1} s, \
         {added} new destinations; the sender failing each at once (blocked address) and \
         writing its backoff. List requests measured for {:.1} s meanwhile.\n",
        acked as f64 / loaded_for.as_secs_f64(),
        (acked * DESTINATIONS_PER_EVENT as u64) as f64 / loaded_for.as_secs_f64(),
        loaded_for.as_secs_f64(),
        measured_for.as_secs_f64(),
    );
    println!("| case | quiet p50 | quiet p99 | loaded p50 | loaded p99 | loaded max | samples | target ms | |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut over = 0;
    for (i, case) in cases.iter().enumerate() {
        let q = latencies(quiet[i].clone());
        let l = latencies(loaded[i].clone());
        let ok = l.p99 <= case.target_ms;
        if !ok {
            over += 1;
        }
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            case.name,
            q.p50,
            q.p99,
            l.p50,
            l.p99,
            l.max,
            l.n,
            case.target_ms,
            if ok { "ok" } else { "**over**" }
        );
        let _ = q.n;
    }
    println!(
        "\n{over} of {} cases with a loaded p99 over target",
        cases.len()
    );
    store.close().await;
}
