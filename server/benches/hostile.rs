//! Hostile destinations (issue 11, finding 9), end to end on 127.0.0.1:
//! Herald runs in this process (`serve::spawn_all`, a temp SQLite file, the
//! real sender and federation client with their default timeouts, retries
//! and backoff), events go in through the intake API over HTTP, and
//! thousands of destinations misbehave while ten healthy ones
//! (`herald::demo::homeserver`, HTTPS, verifying every transaction's
//! signature) keep receiving:
//!
//! - `HERALD_BENCH_HUGE` (1,000) answer every `/send` `200
//!   application/json` with a body that never fits: a third stream it
//!   endlessly as fast as they can (chunked), a third declare 50 MB and
//!   send it, a third trickle it forever (a byte per 100 ms, chunked);
//! - `HERALD_BENCH_SILENT` (2,000) accept the TCP connection and never
//!   answer (no TLS handshake, no byte);
//! - 10 healthy ones, warmed up first (as destinations Herald already
//!   talks to), get one event every second for `HERALD_BENCH_SECS` (75 s,
//!   past the 60 s request deadline of the trickling ones);
//! - 10 cold healthy ones, warmed up too, that answer every transaction
//!   with `Connection: close` (as servers that close idle connections
//!   before Herald's pool does), so each of their transactions needs a new
//!   connection and a try slot while the hostile ones hold the others;
//!   they get the same events.
//!
//! Each destination is its own server name (`127.0.0.1:<its port>`), so
//! its own connections and backoff. One event goes to all 3,000 hostile
//! ones when the hostile phase starts.
//!
//! Measured: the delay from each healthy event's intake request until all
//! ten warm ones have it, and until all ten cold ones have it (median and
//! worst of each), and this process's RSS sampled every
//! 50 ms (peak, and the baseline with every server up before the hostile
//! event) — the whole process: Herald and the 3,020 servers. Passes when
//! the worst healthy delay (warm and cold) is ≤ 5 s, the peak RSS ≤ 256
//! MB, and every hostile destination has been tried and the huge ones are
//! in backoff (waited for, up to 120 s after the healthy events: tries
//! queued for a slot start late, and the trickling ones take 60 s).
//!
//! Run: `cargo bench -p herald --bench hostile` (about 90 s). Raises this
//! process's soft `RLIMIT_NOFILE` to the hard limit (≈ 9,500 sockets are
//! open at once). Every wait is bounded; a failed run exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod host;
mod sending;

use host::{env_number, machine, status_kb};
use sending::{event, sending_herald, Sending};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::demo::homeserver::{Behaviour, Homeserver};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "bench-hostile-token";

/// What the hostile servers saw and did.
#[derive(Default)]
struct Counters {
    /// TCP connections accepted by the huge-body servers.
    huge_connections: AtomicU64,
    /// Answers they began (headers written).
    huge_answers: AtomicU64,
    /// Body bytes they got out before Herald hung up.
    huge_bytes: AtomicU64,
    /// TCP connections accepted by the silent servers.
    silent_connections: AtomicU64,
}

#[derive(Clone, Copy)]
enum Huge {
    /// Chunked, 16 KiB chunks, as fast as the socket takes them.
    Endless,
    /// `Content-Length: 50 MB`, then the bytes.
    Declared,
    /// Chunked, one byte every 100 ms, forever.
    Trickle,
}

/// One server answering every request `200` with a body that never fits.
async fn huge_server(
    kind: Huge,
    tls: tokio_rustls::TlsAcceptor,
    counters: Arc<Counters>,
) -> String {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let name = tcp.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            counters.huge_connections.fetch_add(1, Ordering::Relaxed);
            let (tls, counters) = (tls.clone(), counters.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await
                else {
                    return;
                };
                // The request's head (and whatever of its body came with it).
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counters.huge_answers.fetch_add(1, Ordering::Relaxed);
                let _ = serve_huge(kind, &mut stream, &counters).await;
            });
        }
    });
    name
}

async fn serve_huge<S: AsyncWriteExt + Unpin>(
    kind: Huge,
    stream: &mut S,
    counters: &Counters,
) -> std::io::Result<()> {
    let chunk = vec![b' '; 16 * 1024];
    match kind {
        Huge::Endless => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            loop {
                stream.write_all(b"4000\r\n").await?;
                stream.write_all(&chunk).await?;
                stream.write_all(b"\r\n").await?;
                counters
                    .huge_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        Huge::Declared => {
            let total: usize = 50 * 1000 * 1000;
            stream
                .write_all(
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                stream.write_all(&chunk[..n]).await?;
                sent += n;
                counters.huge_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            stream.flush().await
        }
        Huge::Trickle => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            loop {
                stream.write_all(b"1\r\n \r\n").await?;
                stream.flush().await?;
                counters.huge_bytes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One server that accepts TCP connections and never says anything (it
/// reads and drops what comes, so it notices when Herald hangs up).
async fn silent_server(counters: Arc<Counters>) -> String {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let name = tcp.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counters.silent_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    name
}

fn rss_mb() -> f64 {
    status_kb("VmRSS:").map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// Soft `RLIMIT_NOFILE` up to the hard limit; the soft limit after.
fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            println!("cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}

/// Waits until every receiver has at least `n` PDUs; the time it took, or
/// `None` past `limit`.
async fn wait_all(receivers: &[Homeserver], n: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    for rx in receivers {
        while rx.pdu_count() < n {
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Some(start.elapsed())
}

async fn run() -> bool {
    let huge_n = env_number("HERALD_BENCH_HUGE", 1000) as usize;
    let silent_n = env_number("HERALD_BENCH_SILENT", 2000) as usize;
    let secs = env_number("HERALD_BENCH_SECS", 75);
    let nofile = raise_nofile();
    println!("machine: {}; RLIMIT_NOFILE soft {nofile}", machine());
    let needed = 3 * (huge_n + silent_n) as u64 + 500;
    if nofile < needed {
        println!("hostile: needs about {needed} open files, the limit is {nofile}");
        return false;
    }

    let Sending {
        dir: _dir,
        cert,
        store,
        config,
    } = sending_herald(TOKEN).await;
    // Everything else as shipped: 60 s request deadline, 5 s connect
    // timeout, 10 long retries, a 10 min first backoff.
    let addresses = herald::serve::spawn_all(store.clone(), config)
        .await
        .expect("herald starts");
    let intake = format!("http://{}/_herald/v1/send/pdus", addresses.admin);
    let http = reqwest::Client::new();
    let post = |events: Vec<Value>| {
        let (http, intake) = (http.clone(), intake.clone());
        async move {
            let response = http
                .post(&intake)
                .bearer_auth(TOKEN)
                .json(&json!({ "events": events }))
                .send()
                .await
                .expect("intake reachable");
            assert_eq!(response.status(), 200, "intake refused a request");
        }
    };

    // The healthy ones, warmed up.
    let (server_tls, client_tls) = (
        cert.server_config().expect("tls"),
        cert.client_config().expect("tls"),
    );
    let mut healthy = Vec::new();
    for _ in 0..10 {
        healthy.push(
            Homeserver::start(Behaviour::healthy(), server_tls.clone(), client_tls.clone())
                .await
                .expect("receiver"),
        );
    }
    let mut cold = Vec::new();
    for _ in 0..10 {
        let behaviour = Behaviour {
            close_connections: true,
            ..Behaviour::healthy()
        };
        cold.push(
            Homeserver::start(behaviour, server_tls.clone(), client_tls.clone())
                .await
                .expect("receiver"),
        );
    }
    let healthy_names: Vec<String> = healthy
        .iter()
        .chain(&cold)
        .map(|r| r.name().to_owned())
        .collect();
    post(vec![event(
        "$warm",
        "!healthy:herald.bench",
        &healthy_names,
    )])
    .await;
    if wait_all(&healthy, 1, Duration::from_secs(30))
        .await
        .is_none()
        || wait_all(&cold, 1, Duration::from_secs(30)).await.is_none()
    {
        println!("hostile: warm-up timed out");
        return false;
    }

    // The hostile ones.
    let counters = Arc::new(Counters::default());
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.clone());
    let mut hostile = Vec::with_capacity(huge_n + silent_n);
    let mut huge_names = Vec::with_capacity(huge_n);
    for i in 0..huge_n {
        let kind = [Huge::Endless, Huge::Declared, Huge::Trickle][i % 3];
        let name = huge_server(kind, acceptor.clone(), counters.clone()).await;
        huge_names.push(name.clone());
        hostile.push(name);
    }
    for _ in 0..silent_n {
        hostile.push(silent_server(counters.clone()).await);
    }
    let baseline = rss_mb();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let kb = status_kb("VmRSS:").unwrap_or(0);
                peak.fetch_max(kb, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let hostile_start = Instant::now();
    post(vec![event("$hostile", "!hostile:herald.bench", &hostile)]).await;

    // One healthy event a second, each timed until all ten warm ones have
    // it, and until all ten cold ones have it.
    let mut delays = Vec::new();
    let mut cold_delays = Vec::new();
    let mut ok = true;
    for round in 0..secs as usize {
        let due = hostile_start + Duration::from_secs(round as u64);
        tokio::time::sleep_until(due.into()).await;
        let start = Instant::now();
        post(vec![event(
            &format!("$h{round}"),
            "!healthy:herald.bench",
            &healthy_names,
        )])
        .await;
        match wait_all(&healthy, round + 2, Duration::from_secs(30)).await {
            Some(_) => delays.push(start.elapsed()),
            None => {
                println!("hostile: healthy event {round} not delivered within 30 s");
                ok = false;
                break;
            }
        }
        match wait_all(&cold, round + 2, Duration::from_secs(30)).await {
            Some(_) => cold_delays.push(start.elapsed()),
            None => {
                println!(
                    "hostile: healthy event {round} not delivered to the cold ones within 30 s"
                );
                ok = false;
                break;
            }
        }
    }
    sampler.abort();
    let peak_mb = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    let hwm_mb = status_kb("VmHWM:").map_or(0.0, |kb| kb as f64 / 1024.0);

    // What became of the hostile destinations: every huge-body one ends in
    // backoff; tries queued for a slot start late (the trickling ones then
    // take their whole 60 s), so wait for the last ones, up to 120 s more.
    let mut huge_backing_off;
    let waited = Instant::now();
    loop {
        huge_backing_off = 0;
        for name in &huge_names {
            if let Ok(Some(t)) = store.destinations.retry_timings(name).await {
                if t.retry_interval > 0 && t.failure_ts.is_some() {
                    huge_backing_off += 1;
                }
            }
        }
        if huge_backing_off == huge_n || waited.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_in_backoff_after = hostile_start.elapsed();
    let huge_answers = counters.huge_answers.load(Ordering::Relaxed);
    let silent_connections = counters.silent_connections.load(Ordering::Relaxed);
    delays.sort();
    let worst = delays.last().copied().unwrap_or_default();
    let median = delays.get(delays.len() / 2).copied().unwrap_or_default();
    cold_delays.sort();
    let cold_worst = cold_delays.last().copied().unwrap_or_default();
    let cold_median = cold_delays
        .get(cold_delays.len() / 2)
        .copied()
        .unwrap_or_default();
    println!(
        "hostile: {huge_n} huge-body + {silent_n} silent destinations, 10 warm + 10 cold healthy ones, {secs} s"
    );
    println!(
        "  healthy delivery (intake request → all 10 have it), {} events: median {median:?}, worst {worst:?} — target ≤ 5 s",
        delays.len()
    );
    println!(
        "  cold healthy delivery (a new connection each transaction), {} events: median {cold_median:?}, worst {cold_worst:?} — target ≤ 5 s",
        cold_delays.len()
    );
    println!(
        "  RSS of the process (Herald + all servers): baseline {baseline:.0} MB with every server up, \
         peak {peak_mb:.0} MB (50 ms samples), VmHWM {hwm_mb:.0} MB — target ≤ 256 MB"
    );
    println!(
        "  huge-body servers: {} connections, {huge_answers} answers begun, {:.1} MB of body sent in all; \
         {huge_backing_off}/{huge_n} in backoff {all_in_backoff_after:.0?} after the hostile event",
        counters.huge_connections.load(Ordering::Relaxed),
        counters.huge_bytes.load(Ordering::Relaxed) as f64 / 1e6,
    );
    println!("  silent servers: {silent_connections} connections accepted");
    ok &= worst <= Duration::from_secs(5);
    ok &= cold_worst <= Duration::from_secs(5);
    ok &= peak_mb.max(hwm_mb) <= 256.0;
    ok &= huge_answers >= huge_n as u64;
    ok &= silent_connections >= silent_n as u64;
    ok &= huge_backing_off == huge_n;
    ok
}

#[tokio::main]
async fn main() {
    let ok = tokio::time::timeout(Duration::from_secs(600), run())
        .await
        .unwrap_or_else(|_| {
            println!("hostile: did not finish within 10 minutes");
            false
        });
    println!("hostile: {}", if ok { "PASS" } else { "FAIL" });
    std::process::exit(if ok { 0 } else { 1 });
}
