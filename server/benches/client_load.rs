//! Loopback load through the federation client (issue 4's benchmark, part 2):
//! signed GETs per second through the real `FederationClient` against a
//! local HTTPS server, next to the same client code sending unsigned GETs.
//! Target: signed throughput ≥ 50% of unsigned.
//!
//! Run: `cargo bench -p herald --bench client_load` (about 30–60 s).
//! Knobs (environment): `HERALD_BENCH_CONCURRENCY` (tasks, default 16),
//! `HERALD_BENCH_REQUESTS` (per run, default 20000), `HERALD_BENCH_SECONDS`
//! (time limit per run, default 10; a run stops at whichever comes first),
//! `HERALD_BENCH_ROUNDS` (default 2; each round runs signed and unsigned,
//! the order alternating between rounds so a change in the machine's load
//! does not favour one side).
//!
//! The server: axum over the federation listener's `TlsListener` on
//! 127.0.0.1 (rustls, an rcgen certificate for 127.0.0.1, HTTP/1.1
//! keep-alive), answering `{}` as `application/json` to
//! `GET /_matrix/federation/v1/version`. It checks every request: method,
//! path, `Host`, and, in a signed run, an `Authorization: X-Matrix` header
//! that parses, names our origin and the server as destination (its
//! signature fully verified against the client's key on the first request
//! and every 64th after, so the server's own verification work stays small
//! next to the client's signing); in an unsigned run, no `Authorization`.
//! Anything else is answered 400, and the client counts every error or
//! non-`{}` answer as a failure; the server's count of requests must equal
//! the client's. The bench fails (non-zero exit) on any failure.
//!
//! The client: `FederationClient::new` as `FederationClient::from_config`
//! builds it, with `ip_range_whitelist = ["127.0.0.0/8"]` so loopback passes
//! the IP filter, the test certificate trusted through
//! `federation_custom_ca_list`, backoff in a temp SQLite store, the
//! destination an IP literal with port (no DNS). Each request is
//! `get_json` with a 10 s timeout (given a timeout the client does not
//! retry, so a failure cannot hide behind a retry).
//!
//! Unsigned: `ClientSettings::sign_requests = false`, a `#[doc(hidden)]`
//! switch that exists only for this comparison. It skips exactly the
//! signing step of `send_with_retries` (`x_matrix::sign_request`: the signed
//! object, its canonical JSON, the ed25519 signature, and the header text)
//! and leaves the `Authorization` header out; whitelist, backoff check,
//! resolution, IP filter, pool, TLS, send, content-type and body checks
//! are the same code. Measuring "unsigned" any other way (a separate hyper
//! client, or subtracting a micro-benchmark's time) would not compare the
//! same request path. The two clients are built identically but for that
//! flag, each with its own pool, warmed up before measuring.
//!
//! Server and client share one tokio runtime (as many workers as CPUs) and
//! so the machine's cores: the figures are for the whole loopback exchange,
//! and the CPU time per request (from /proc/self/stat) is printed next to
//! the throughput, which is less sensitive to other load on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod host;

use host::{cpu_time, env_number, machine};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use herald::config::Config;
use herald::federation_listener::TlsListener;
use herald_federation::backoff::RetryLimiter;
use herald_federation::client::{FederationClient, RequestOptions};
use herald_federation::dns::Dns;
use herald_federation::resolve::ServerResolver;
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::signing::{SigningKey, VerifyKey};
use herald_keys::x_matrix::{verify_request, XMatrix};
use herald_keys::ServerKeys;
use herald_store::Store;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const ORIGIN: &str = "origin.bench";
const PATH: &str = "/_matrix/federation/v1/version";
/// The server verifies the signature of request 0, 64, 128, …
const VERIFY_EVERY: u64 = 64;
const WARMUP_REQUESTS: usize = 500;

// -------------------------------------------------------------- server --

struct ServerState {
    /// `host:port`, the destination the client names.
    name: String,
    verify_key: VerifyKey,
    expect_signed: AtomicBool,
    served: AtomicU64,
    rejected: AtomicU64,
    verified: AtomicU64,
    first_rejection: Mutex<Option<String>>,
}

fn check_request(
    state: &ServerState,
    n: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), String> {
    if method != Method::GET {
        return Err(format!("method {method}"));
    }
    let path_and_query = uri.path_and_query().map_or("", |p| p.as_str());
    if path_and_query != PATH {
        return Err(format!("uri {path_and_query}"));
    }
    let text = |name: header::HeaderName| -> Option<&str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    };
    if text(header::HOST) != Some(state.name.as_str()) {
        return Err(format!("Host {:?}", text(header::HOST)));
    }
    let auth = headers.get(header::AUTHORIZATION);
    if !state.expect_signed.load(Ordering::Relaxed) {
        return match auth {
            None => Ok(()),
            Some(_) => Err("an Authorization header in an unsigned run".into()),
        };
    }
    let auth = auth
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "unreadable Authorization header")?;
    let x = XMatrix::parse(auth).map_err(|e| e.to_string())?;
    if x.origin != ORIGIN || x.destination.as_deref() != Some(state.name.as_str()) {
        return Err(format!(
            "origin {} destination {:?}",
            x.origin, x.destination
        ));
    }
    if n.is_multiple_of(VERIFY_EVERY) {
        verify_request(
            &x,
            method.as_str(),
            path_and_query,
            &state.name,
            None,
            &state.verify_key,
        )
        .map_err(|e| e.to_string())?;
        state.verified.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn answer(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let n = state.served.fetch_add(1, Ordering::Relaxed);
    match check_request(&state, n, &method, &uri, &headers) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        Err(e) => {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            state.first_rejection.lock().get_or_insert(e.clone());
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errcode": "M_UNAUTHORIZED", "error": e})),
            )
                .into_response()
        }
    }
}

/// A self-signed certificate for 127.0.0.1: (cert PEM, key DER).
fn certificate() -> (String, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    (certified.cert.pem(), certified.key_pair.serialize_der())
}

async fn start_server(cert_pem: &str, key_der: &[u8], verify_key: VerifyKey) -> Arc<ServerState> {
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("certificate PEM");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.to_vec().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = tcp.local_addr().expect("local addr");
    // TCP_NODELAY on the server side too (the client's pool sets it): without
    // it a small answer can wait for a delayed ACK (40 ms on Linux).
    let listener = TlsListener::new(tcp, Arc::new(config))
        .expect("TLS listener")
        .tap_io(|tls| {
            let _ = tls.get_ref().0.set_nodelay(true);
        });
    let state = Arc::new(ServerState {
        name: addr.to_string(),
        verify_key,
        expect_signed: AtomicBool::new(true),
        served: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        first_rejection: Mutex::new(None),
    });
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    state
}

// -------------------------------------------------------------- client --

fn build_client(
    config: &Config,
    store: &Store,
    keys: &Arc<ServerKeys>,
    sign: bool,
) -> Arc<FederationClient> {
    let tls = config.tls_client_config().expect("TLS config");
    // No name here needs DNS: the destination is an IP literal.
    let dns = || Dns::with_nameserver("127.0.0.1:9".parse().expect("addr"));
    let well_known = WellKnownResolver::new(
        dns(),
        WellKnownConfig::new(tls.clone()),
        Arc::new(SystemClock),
    );
    let resolver = Arc::new(ServerResolver::new(dns(), well_known));
    let limiter = RetryLimiter::new(store.destinations.clone(), config.backoff_policy());
    let mut settings = config.client_settings();
    settings.sign_requests = sign;
    Arc::new(FederationClient::new(
        keys.clone(),
        resolver,
        limiter,
        config.ip_filter().expect("IP filter"),
        tls,
        settings,
    ))
}

struct RunResult {
    label: &'static str,
    ok: usize,
    failures: usize,
    first_failure: Option<String>,
    wall: Duration,
    /// Successful requests' latencies, sorted.
    latencies: Vec<Duration>,
    cpu: Option<Duration>,
    served: u64,
}

impl RunResult {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
    fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu?;
        Some(cpu.as_secs_f64() * 1e6 / (self.ok + self.failures).max(1) as f64)
    }
}

struct Load {
    concurrency: usize,
    requests: usize,
    time_limit: Duration,
}

/// `load.requests` GETs (or as many as fit in `load.time_limit`) from
/// `load.concurrency` tasks.
async fn run(
    label: &'static str,
    client: &Arc<FederationClient>,
    server: &Arc<ServerState>,
    signed: bool,
    load: &Load,
) -> RunResult {
    server.expect_signed.store(signed, Ordering::SeqCst);
    let served_before = server.served.load(Ordering::SeqCst);
    let next = Arc::new(AtomicUsize::new(0));
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(10)),
        ..RequestOptions::default()
    };
    let cpu_before = cpu_time();
    let started = Instant::now();
    let deadline = started + load.time_limit;
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let destination = server.name.clone();
            let total = load.requests;
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total / 8);
                let (mut failures, mut first_failure) = (0usize, None::<String>);
                while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                    let t = Instant::now();
                    let result: Result<Value, _> =
                        client.get_json(&destination, PATH, options).await;
                    let elapsed = t.elapsed();
                    match result {
                        Ok(v) if v == json!({}) => latencies.push(elapsed),
                        Ok(other) => {
                            failures += 1;
                            first_failure.get_or_insert(format!("unexpected answer {other}"));
                        }
                        Err(e) => {
                            failures += 1;
                            first_failure.get_or_insert(e.to_string());
                        }
                    }
                }
                (latencies, failures, first_failure)
            })
        })
        .collect();
    let mut result = RunResult {
        label,
        ok: 0,
        failures: 0,
        first_failure: None,
        wall: Duration::ZERO,
        latencies: Vec::new(),
        cpu: None,
        served: 0,
    };
    for task in tasks {
        let (latencies, failures, first_failure) = task.await.expect("load task");
        result.ok += latencies.len();
        result.latencies.extend(latencies);
        result.failures += failures;
        if result.first_failure.is_none() {
            result.first_failure = first_failure;
        }
    }
    result.wall = started.elapsed();
    result.cpu = cpu_before.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    result.served = server.served.load(Ordering::SeqCst) - served_before;
    result.latencies.sort_unstable();
    result
}

// ------------------------------------------------------------- machine --

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------- main --

async fn bench() -> bool {
    let load = Load {
        concurrency: env_number("HERALD_BENCH_CONCURRENCY", 16).max(1) as usize,
        requests: env_number("HERALD_BENCH_REQUESTS", 20_000).max(1) as usize,
        time_limit: Duration::from_secs(env_number("HERALD_BENCH_SECONDS", 10).max(1)),
    };
    let rounds = env_number("HERALD_BENCH_ROUNDS", 2).max(1) as usize;

    println!("## Herald federation client load benchmark\n");
    println!("machine: {}", machine());
    println!("load average before: {}", load_average());
    let mut command = String::from("cargo bench -p herald --bench client_load");
    for name in [
        "HERALD_BENCH_CONCURRENCY",
        "HERALD_BENCH_REQUESTS",
        "HERALD_BENCH_SECONDS",
        "HERALD_BENCH_ROUNDS",
    ] {
        if let Ok(v) = std::env::var(name) {
            command = format!("{name}={v} {command}");
        }
    }
    println!("command: {command}");

    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_pem, key_der) = certificate();
    let ca: PathBuf = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).expect("write CA");
    let mut config = Config::loopback(ORIGIN, dir.path().join("herald.db"));
    config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
    config.federation_custom_ca_list = Some(vec![ca]);
    config.validate().expect("config");
    let store = Store::open_target(&config.database.target())
        .await
        .expect("store");
    let key = SigningKey::from_seed("a_bench", &[9; 32]).expect("key");
    let server = start_server(&cert_pem, &key_der, key.verify_key()).await;
    let keys = Arc::new(ServerKeys::new(ORIGIN, key));
    let signed = build_client(&config, &store, &keys, true);
    let unsigned = build_client(&config, &store, &keys, false);
    assert!(signed.settings().sign_requests && !unsigned.settings().sign_requests);

    println!(
        "server: https://{} (keep-alive HTTP/1.1, TLS 1.3), GET {PATH} → {{}}; \
         {} tasks, per run {} requests or {} s, whichever first; {rounds} round(s)\n",
        server.name,
        load.concurrency,
        load.requests,
        load.time_limit.as_secs()
    );

    // Warm-up: opens each client's connections, fills caches.
    let warmup = Load {
        requests: WARMUP_REQUESTS,
        ..load
    };
    let mut results = vec![
        run("warm-up signed", &signed, &server, true, &warmup).await,
        run("warm-up unsigned", &unsigned, &server, false, &warmup).await,
    ];
    let measured_from = results.len();
    for round in 0..rounds {
        let order = if round.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        };
        for sign in order {
            results.push(if sign {
                run("signed", &signed, &server, true, &load).await
            } else {
                run("unsigned", &unsigned, &server, false, &load).await
            });
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| run | requests ok | failures | wall s | requests/s | p50 ms | p99 ms | CPU µs/request |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all_good = true;
    for (i, r) in results.iter().enumerate() {
        let label = if i < measured_from {
            r.label.to_owned()
        } else {
            format!("{} (round {})", r.label, (i - measured_from) / 2 + 1)
        };
        let _ = writeln!(
            table,
            "| {label} | {} | {} | {:.2} | {:.0} | {:.3} | {:.3} | {} |",
            r.ok,
            r.failures,
            r.wall.as_secs_f64(),
            r.per_second(),
            r.percentile(0.50).as_secs_f64() * 1e3,
            r.percentile(0.99).as_secs_f64() * 1e3,
            r.cpu_us_per_request()
                .map_or("?".into(), |us| format!("{us:.0}")),
        );
        if r.failures > 0 {
            all_good = false;
            println!(
                "FAILED: {label}: {} failures, first: {}",
                r.failures,
                r.first_failure.as_deref().unwrap_or("?")
            );
        }
        if r.served != (r.ok + r.failures) as u64 {
            all_good = false;
            println!(
                "FAILED: {label}: the server saw {} requests, the client made {}",
                r.served,
                r.ok + r.failures
            );
        }
    }
    println!("{table}");

    let measured = &results[measured_from..];
    let total = |signed: bool| {
        let runs = measured
            .iter()
            .filter(|r| (r.label == "signed") == signed)
            .collect::<Vec<_>>();
        let ok: usize = runs.iter().map(|r| r.ok).sum();
        let wall: f64 = runs.iter().map(|r| r.wall.as_secs_f64()).sum();
        let cpu: Option<f64> = runs
            .iter()
            .map(|r| r.cpu.map(|c| c.as_secs_f64()))
            .sum::<Option<f64>>();
        (ok as f64 / wall, cpu.map(|c| c * 1e6 / ok.max(1) as f64))
    };
    let (signed_rate, signed_cpu) = total(true);
    let (unsigned_rate, unsigned_cpu) = total(false);
    let ratio = signed_rate / unsigned_rate;
    println!(
        "all rounds: signed {signed_rate:.0} requests/s, unsigned {unsigned_rate:.0} requests/s; \
         signed/unsigned = {:.1}% (target ≥ 50%: {})",
        ratio * 100.0,
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    if let (Some(s), Some(u)) = (signed_cpu, unsigned_cpu) {
        println!(
            "CPU per request (client + server, this process): signed {s:.0} µs, unsigned {u:.0} µs, \
             difference {:.0} µs",
            s - u
        );
    }
    println!(
        "server checks: {} requests, {} rejected, {} signatures fully verified{}",
        server.served.load(Ordering::SeqCst),
        server.rejected.load(Ordering::SeqCst),
        server.verified.load(Ordering::SeqCst),
        server
            .first_rejection
            .lock()
            .as_deref()
            .map_or(String::new(), |e| format!(" (first rejection: {e})"))
    );
    if server.rejected.load(Ordering::SeqCst) > 0 {
        all_good = false;
    }
    println!("load average after: {}", load_average());
    all_good
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if !runtime.block_on(bench()) {
        eprintln!("client_load: some requests failed; the figures above do not count");
        std::process::exit(1);
    }
}
