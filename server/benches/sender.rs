//! The sender's benchmarks (issue 5), end to end on 127.0.0.1: Herald runs
//! in this process (`serve::spawn_all`, a temp SQLite file, its key server
//! over TLS), events go in through the intake API over HTTP, and the
//! receivers are simulated homeservers (`herald::demo::homeserver`: HTTPS,
//! fetching Herald's key and verifying every transaction's signature).
//!
//! Run: `cargo bench -p herald --bench sender [-- fanout|throughput|scale]`
//! (all three by default; a few minutes).
//!
//! - fanout: one event to `HERALD_BENCH_FANOUT` (1,000) destinations, each
//!   its own receiver (its own port and key cache): time from the intake
//!   request until every receiver has it. Cold (first event: TLS handshakes
//!   and key fetches) and warm (pooled connections), median of 5 warm runs.
//!   Target ≤ 1 s.
//! - throughput: `HERALD_BENCH_EVENTS` (100,000) events, each to
//!   `HERALD_BENCH_DESTS` (10) destinations, posted by 8 clients in requests
//!   of 100 events: PDUs delivered per second and transactions per second,
//!   from the first request to the last PDU received. Target ≥ 20,000 PDUs/s.
//!   On PostgreSQL (`HERALD_BENCH_DATABASE`), `HERALD_BENCH_INSTANCES` (1)
//!   Heralds share the database in this process, each with its own store,
//!   index, sender and listeners and its own `instance_name`, exactly as
//!   separate `herald serve` processes would: the clients post to them in
//!   turn, and the clock starts once the shards are split between them.
//!   PostgreSQL's CPU (every `postgres` process) is reported beside the
//!   bench process's.
//! - scale: `HERALD_BENCH_SCALE` (100,000) destinations in backoff (an hour
//!   to go), each with one queued PDU, resumed at start-up; then idle CPU
//!   over 10 s and RSS; then 1,000 of them (real receivers) become due at
//!   once: time until all have delivered. Run again with a tenth of the
//!   destinations to see the wake-up cost does not depend on the total.
//!
//! Every wait is bounded; a bench that times out exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod host;
mod sending;

use host::{env_number, machine};
use sending::{event, free_port, sending_herald, Sending};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::{Config, ConfigDuration};
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_store::outbox::NewEvent;
use herald_store::{now_ms, DatabaseTarget, DestinationRow, Store};
use serde_json::{json, Value};

const TOKEN: &str = "bench-sender-token";

struct Bench {
    _dir: tempfile::TempDir,
    cert: LoopbackCert,
    store: Store,
    config: Config,
    /// Each instance's intake URL.
    intakes: Vec<String>,
    http: reqwest::Client,
}

impl Bench {
    /// A store and config; Herald is started by [`Bench::serve`].
    async fn new() -> Bench {
        let Sending {
            dir,
            cert,
            store,
            mut config,
        } = sending_herald(TOKEN).await;
        config.federation.max_long_retries = 0;
        config.destination_min_retry_interval = ConfigDuration(Duration::from_secs(1));
        Bench {
            _dir: dir,
            cert,
            store,
            config,
            intakes: Vec::new(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
        }
    }

    async fn serve(&mut self) {
        self.serve_instances(1).await;
    }

    /// Starts `n` Heralds on the bench's database (more than one only on
    /// PostgreSQL), named `bench-1`…, and waits until the shards are split
    /// evenly between them.
    async fn serve_instances(&mut self, n: usize) {
        for i in 1..=n {
            let mut config = self.config.clone();
            config.instance_name = format!("bench-{i}");
            let store = if i == 1 {
                self.store.clone()
            } else {
                config.federation_listen = Some(format!("127.0.0.1:{}", free_port()));
                Store::open_target(&config.database.target())
                    .await
                    .expect("another store on the same database")
            };
            let addresses = herald::serve::spawn_all(store, config)
                .await
                .expect("herald starts");
            self.intakes
                .push(format!("http://{}/_herald/v1/send/pdus", addresses.admin));
        }
        if n == 1 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = self
                .store
                .leases
                .instances("bench-1", 0, 5_000)
                .await
                .expect("instances");
            let even = rows.iter().filter(|r| r.live).count() == n
                && rows.iter().all(|r| {
                    r.shard_count as usize >= 256 / n
                        && r.shard_count as usize <= 256_usize.div_ceil(n)
                });
            if even {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the shards were not split: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn receivers(&self, n: usize) -> Vec<Homeserver> {
        let (server, client) = (
            self.cert.server_config().expect("tls"),
            self.cert.client_config().expect("tls"),
        );
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                Homeserver::start(Behaviour::healthy(), server.clone(), client.clone())
                    .await
                    .expect("receiver"),
            );
        }
        out
    }

    /// Posts `events` to the intake of instance `i` (modulo their number).
    async fn post(&self, i: usize, events: Vec<Value>) {
        let response = self
            .http
            .post(&self.intakes[i % self.intakes.len()])
            .bearer_auth(TOKEN)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("intake reachable");
        assert_eq!(response.status(), 200, "intake refused a request");
    }
}

/// Waits until every receiver has at least `n` PDUs; false on timeout.
async fn wait_all(receivers: &[Homeserver], n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    for rx in receivers {
        while rx.pdu_count() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    true
}

async fn fanout() -> bool {
    let n = env_number("HERALD_BENCH_FANOUT", 1000) as usize;
    let mut bench = Bench::new().await;
    bench.serve().await;
    let receivers = bench.receivers(n).await;
    let names: Vec<String> = receivers.iter().map(|r| r.name().to_owned()).collect();
    let mut warm = Vec::new();
    for round in 0..6 {
        let start = Instant::now();
        bench
            .post(
                0,
                vec![event(&format!("$fan{round}"), "!fan:herald.bench", &names)],
            )
            .await;
        if !wait_all(&receivers, round + 1, Duration::from_secs(60)).await {
            println!("fanout: round {round} timed out");
            return false;
        }
        let took = start.elapsed();
        if round == 0 {
            println!("fanout: 1 event to {n} destinations, cold (TLS + key fetch each): {took:?}");
        } else {
            warm.push(took);
        }
    }
    warm.sort();
    println!(
        "fanout: 1 event to {n} destinations, warm: median {:?} (min {:?}, max {:?}) — target ≤ 1 s",
        warm[warm.len() / 2],
        warm[0],
        warm[warm.len() - 1]
    );
    true
}

async fn throughput() -> bool {
    let events = env_number("HERALD_BENCH_EVENTS", 100_000) as usize;
    let dests = env_number("HERALD_BENCH_DESTS", 10) as usize;
    let instances = env_number("HERALD_BENCH_INSTANCES", 1).max(1) as usize;
    let mut bench = Bench::new().await;
    let on_postgres = matches!(bench.config.database.target(), DatabaseTarget::Postgres(_));
    if instances > 1 && !on_postgres {
        println!("throughput: several instances need HERALD_BENCH_DATABASE=postgresql://…");
        return false;
    }
    bench.serve_instances(instances).await;
    let receivers = bench.receivers(dests).await;
    let names: Vec<String> = receivers.iter().map(|r| r.name().to_owned()).collect();
    // Warm up: connections and key fetches, from every instance.
    for i in 0..instances {
        bench
            .post(
                i,
                vec![event(&format!("$warm{i}"), "!warm:herald.bench", &names)],
            )
            .await;
    }
    if !wait_all(&receivers, instances, Duration::from_secs(30)).await {
        println!("throughput: warm-up timed out");
        return false;
    }
    let cpu0 = cpu_seconds();
    let pg0 = host::postgres_cpu_time().as_secs_f64();
    let start = Instant::now();
    let bench = Arc::new(bench);
    let per_request = 100;
    let clients = 8;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (bench, names) = (bench.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c * per_request;
            while i < events {
                let batch = (i..(i + per_request).min(events))
                    .map(|k| {
                        event(
                            &format!("$t{k}"),
                            &format!("!room{}:herald.bench", k % 50),
                            &names,
                        )
                    })
                    .collect();
                bench.post(c, batch).await;
                i += clients * per_request;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let intake = start.elapsed();
    if !wait_all(&receivers, events + instances, Duration::from_secs(600)).await {
        println!("throughput: delivery timed out");
        return false;
    }
    let took = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let pg = host::postgres_cpu_time().as_secs_f64() - pg0;
    let pdus = events * dests;
    let warm_txns = |r: &Homeserver| {
        let received = r.received();
        received
            .transactions
            .iter()
            .filter(|t| t.event_ids.iter().any(|id| id.starts_with("$warm")))
            .count()
    };
    let txns: usize = receivers
        .iter()
        .map(|r| r.received().transactions.len() - warm_txns(r))
        .sum();
    let dup: usize = receivers
        .iter()
        .map(|r| {
            let ids = r.received().event_ids();
            ids.len() - ids.iter().collect::<HashSet<_>>().len()
        })
        .sum();
    // A postgres process that ended unreaped by another (a restarted
    // cluster's) takes its time with it: no figure then.
    let database = if on_postgres && pg < 0.0 {
        format!("; PostgreSQL CPU not measured (its processes changed), {instances} instance(s)")
    } else if on_postgres {
        format!(
            "; PostgreSQL CPU {pg:.1} s ({:.1} µs per PDU, {:.0} % of all), {instances} instance(s)",
            pg * 1e6 / pdus as f64,
            pg * 100.0 / (pg + cpu).max(f64::EPSILON),
        )
    } else {
        String::new()
    };
    println!(
        "throughput: {events} events × {dests} destinations = {pdus} PDUs in {took:.2?} \
         (intake done after {intake:.2?}): {:.0} PDUs/s, {:.0} transactions/s ({txns} transactions, \
         {:.1} PDUs each), {dup} duplicates; CPU {cpu:.1} s ({:.1} µs per PDU, receivers included){database} \
         — target ≥ 20,000 PDUs/s",
        pdus as f64 / took.as_secs_f64(),
        txns as f64 / took.as_secs_f64(),
        pdus as f64 / txns.max(1) as f64,
        cpu * 1e6 / pdus as f64,
    );
    true
}

async fn scale(total: usize) -> bool {
    let due_count = 1000.min(total);
    let mut bench = Bench::new().await;
    let receivers = bench.receivers(due_count).await;
    // `total` destinations: loopback IP literals (never contacted while
    // in backoff) and, among them, the receivers, all in backoff; the
    // receivers are due a few seconds after start-up.
    let now = now_ms();
    let mut rows = Vec::with_capacity(total);
    let mut names = Vec::with_capacity(total);
    for i in 0..total - due_count {
        let name = format!("127.{}.{}.{}:9", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        rows.push(DestinationRow::new(
            &name,
            Some(now),
            Some(3_600_000),
            Some(now),
            Some(1),
        ));
        names.push(name);
    }
    for rx in &receivers {
        rows.push(DestinationRow::new(
            rx.name(),
            Some(now),
            Some(3_600_000),
            Some(now),
            Some(1),
        ));
        names.push(rx.name().to_owned());
    }
    bench
        .store
        .destinations
        .put_destinations(&rows)
        .await
        .expect("seed rows");
    bench
        .store
        .outbox.enqueue_pdus(vec![NewEvent {
            event_id: "$scale".into(),
            room_id: "!scale:herald.bench".into(),
            pdu_json: json!({"event_id": "$scale", "room_id": "!scale:herald.bench", "type": "m.room.message", "content": {"body": "scale"}}).to_string(),
            destinations: names,
        }])
        .await
        .expect("queue");
    drop(rows);
    // The receivers' backoff ends `setup_ms` after Herald starts.
    let setup_ms = 20_000;
    let now = now_ms();
    let due: Vec<DestinationRow> = receivers
        .iter()
        .map(|rx| DestinationRow::new(rx.name(), Some(now), Some(setup_ms), Some(now), Some(1)))
        .collect();
    bench
        .store
        .destinations
        .put_destinations(&due)
        .await
        .expect("due rows");
    let rss_before = rss_mb();
    let start = Instant::now();
    bench.serve().await;
    // Resumed: every destination holds a timer; nothing is due yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu_seconds();
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu_seconds() - cpu0;
    let rss = rss_mb();
    let due_at = Duration::from_millis(setup_ms as u64);
    let since_start = start.elapsed();
    if since_start > due_at {
        println!("scale: setup took longer than the due time; raise it");
        return false;
    }
    tokio::time::sleep(due_at - since_start).await;
    let woke = Instant::now();
    if !wait_all(&receivers, 1, Duration::from_secs(120)).await {
        println!("scale: the due destinations were not all woken");
        return false;
    }
    let wake = woke.elapsed();
    let sent_early = receivers.iter().all(|r| r.pdu_count() == 1);
    println!(
        "scale: {total} destinations in backoff: idle CPU {:.1}% of one core over {idle:?}, \
         RSS {rss:.0} MB ({rss_before:.0} MB before Herald started: {due_count} receivers, the seeded store); \
         {due_count} becoming due together delivered in {wake:.2?}{}",
        idle_cpu * 100.0 / idle.as_secs_f64(),
        if sent_early { "" } else { " (some twice)" }
    );
    true
}

/// Process CPU time (user + system) in seconds.
fn cpu_seconds() -> f64 {
    host::cpu_time().map_or(0.0, |t| t.as_secs_f64())
}

/// Resident set size in MB.
fn rss_mb() -> f64 {
    host::status_kb("VmRSS:").map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// Runs `scale` for a tenth of `HERALD_BENCH_SCALE` and for all of it, each
/// in a fresh process so that one's memory does not count in the other's RSS.
fn scale_in_own_processes() -> bool {
    let total = env_number("HERALD_BENCH_SCALE", 100_000) as usize;
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    [total / 10, total].iter().all(|n| {
        std::process::Command::new(&exe)
            .args(["scale-one", &n.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("scale-one") {
        let total = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        if !runtime.block_on(scale(total)) {
            std::process::exit(1);
        }
        return;
    }
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    println!("sender bench on {}", machine());
    let mut ok = true;
    for (name, run) in [("fanout", 0), ("throughput", 1), ("scale", 2)] {
        if !wants(name) {
            continue;
        }
        // One runtime per bench, so that one's tasks do not linger into the next.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        ok &= runtime.block_on(async {
            match run {
                0 => fanout().await,
                1 => throughput().await,
                _ => tokio::task::block_in_place(scale_in_own_processes),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    if !ok {
        std::process::exit(1);
    }
}
