//! A failed-login flood against the real binary: `herald serve` as a child
//! process on a temp config and SQLite file (an admin made by `herald user
//! add`, 1,000 destinations), then wrong passwords from many 127.0.0.x
//! addresses (each client socket bound to its own source address), a fixed
//! number at a time, while an admin lists destinations with a valid token.
//! Reports the server's peak RSS (`VmHWM` of `/proc/<pid>/status`), what the
//! flood was answered and the admin's list latency, quiet and during the
//! flood. Used by `benches/login_flood.rs` (release binary) and
//! `tests/login_flood.rs` (the test profile's binary).
#![allow(dead_code)] // the test and the bench use different parts

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::free_port;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "flood-admin-secret";
const SERVER_NAME: &str = "herald.flood";
pub const LIST: &str = "/_synapse/admin/v1/federation/destinations?limit=100";

/// A `herald serve` process on its own temp directory; killed when dropped.
pub struct Herald {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeds `destinations` rows as an admin's `sqlite3` would.
async fn seed_destinations(db: &Path, n: usize) {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        sqlx::query(
            "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
             last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(format!("matrix{i}.example.org"))
        .bind(1_750_000_000_000_i64 + i as i64)
        .bind(if i % 3 == 0 { 600_000_i64 } else { 0 })
        .bind(if i % 3 == 0 {
            Some(1_749_000_000_000_i64)
        } else {
            None
        })
        .bind(i as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

impl Herald {
    /// `bin` with `extra_config` appended to the TOML (e.g. `[rc_login.…]`
    /// sections); returns once it answers on its admin port.
    pub async fn start(bin: &str, extra_config: &str) -> Herald {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("herald.db");
        let config = dir.path().join("herald.toml");
        let port = free_port();
        std::fs::write(
            &config,
            format!(
                "server_name = \"{SERVER_NAME}\"\ndatabase = {db:?}\n\
                 listen = \"127.0.0.1:{port}\"\n{extra_config}"
            ),
        )
        .unwrap();
        let mut add = Command::new(bin)
            .args([
                "user",
                "add",
                ADMIN,
                "--admin",
                "--password",
                "-",
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        writeln!(add.stdin.take().unwrap(), "{ADMIN_PASSWORD}").unwrap();
        assert!(add.wait().unwrap().success(), "herald user add failed");
        seed_destinations(&db, 1000).await;

        let log = dir.path().join("herald.log");
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let herald = Herald {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client
                .get(format!("{}/_matrix/client/versions", herald.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "herald serve did not answer within 60 s:\n{}",
                herald.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        herald
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `kB` field of the server's `/proc/<pid>/status`, e.g. `"VmHWM:"`.
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// POST /login from `client`.
    pub async fn login(
        &self,
        client: &reqwest::Client,
        user: &str,
        password: &str,
    ) -> (u16, Value) {
        let body = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        });
        let resp = client
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
        (status, body)
    }

    /// The admin's access token (logged in from 127.0.0.1).
    pub async fn admin_token(&self) -> String {
        let (status, body) = self
            .login(&reqwest::Client::new(), ADMIN, ADMIN_PASSWORD)
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// A client whose connections come from `address`.
pub fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .build()
        .unwrap()
}

/// The flood: `per_address` wrong passwords from each of `addresses`
/// (127.0.0.2 on), each for a user of its own (so no account's limit
/// stops it), `concurrency` at a time.
pub struct Flood {
    pub addresses: usize,
    pub per_address: usize,
    pub concurrency: usize,
}

/// What the flood was answered: count per (status, errcode), and time.
#[derive(Debug)]
pub struct FloodOutcome {
    pub answers: BTreeMap<(u16, String), usize>,
    pub took: Duration,
}

impl Flood {
    pub async fn run(&self, herald: &Arc<Herald>) -> FloodOutcome {
        assert!(self.addresses <= 250, "127.0.0.2 to 127.0.0.251");
        let clients: Vec<reqwest::Client> = (0..self.addresses)
            .map(|i| client_from(IpAddr::from([127, 0, 0, 2 + i as u8])))
            .collect();
        let clients = Arc::new(clients);
        let total = self.addresses * self.per_address;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.concurrency {
            let (clients, next, herald) = (clients.clone(), next.clone(), herald.clone());
            let addresses = self.addresses;
            workers.spawn(async move {
                let mut answers = BTreeMap::<(u16, String), usize>::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return answers;
                    }
                    // Round-robin over the addresses.
                    let client = &clients[n % addresses];
                    let (status, body) = herald
                        .login(client, &format!("flood{n}"), "wrong password")
                        .await;
                    if status == 429 {
                        assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
                    }
                    let errcode = body["errcode"].as_str().unwrap_or("").to_owned();
                    *answers.entry((status, errcode)).or_default() += 1;
                }
            });
        }
        let mut answers = BTreeMap::new();
        while let Some(part) = workers.join_next().await {
            for (k, v) in part.unwrap() {
                *answers.entry(k).or_default() += v;
            }
        }
        FloodOutcome {
            answers,
            took: started.elapsed(),
        }
    }
}

/// Latencies of the admin's list request, in ms, sorted.
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i]
    }
    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

async fn list_once(client: &reqwest::Client, herald: &Herald, token: &str) -> f64 {
    let t = Instant::now();
    let resp = client
        .get(format!("{}{LIST}", herald.base))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(body["total"], 1000, "{body}");
    assert_eq!(body["destinations"].as_array().unwrap().len(), 100);
    ms
}

/// `samples` list requests one after another (after 5 warm-ups).
pub async fn quiet_latencies(herald: &Herald, token: &str, samples: usize) -> Latencies {
    let client = reqwest::Client::new();
    for _ in 0..5 {
        list_once(&client, herald, token).await;
    }
    let mut ms = Vec::new();
    for _ in 0..samples {
        ms.push(list_once(&client, herald, token).await);
    }
    ms.sort_by(f64::total_cmp);
    Latencies(ms)
}

/// List requests every `every` until `stop` (at most 10,000).
pub async fn latencies_until(
    herald: Arc<Herald>,
    token: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Latencies {
    let client = reqwest::Client::new();
    list_once(&client, &herald, &token).await;
    let mut ms = Vec::new();
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) && ms.len() < 10_000 {
        tick.tick().await;
        ms.push(list_once(&client, &herald, &token).await);
    }
    ms.sort_by(f64::total_cmp);
    Latencies(ms)
}

/// One run: the server quiet, then flooded while the admin lists.
pub struct Run {
    pub rss_start_kb: u64,
    pub peak_kb: u64,
    pub rss_after_kb: u64,
    pub flood: FloodOutcome,
    pub quiet: Latencies,
    pub loaded: Latencies,
    /// The admin's login right after the flood, from an address of its
    /// own: 200, or 429 while `global_failed_attempts` is spent.
    pub admin_after: u16,
}

pub async fn run(bin: &str, extra_config: &str, flood: &Flood, quiet_samples: usize) -> Run {
    let herald = Arc::new(Herald::start(bin, extra_config).await);
    let token = herald.admin_token().await;
    let quiet = quiet_latencies(&herald, &token, quiet_samples).await;
    let rss_start_kb = herald.status_kb("VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let lister = tokio::spawn(latencies_until(
        herald.clone(),
        token.clone(),
        Duration::from_millis(20),
        stop.clone(),
    ));
    let outcome = flood.run(&herald).await;
    stop.store(true, Ordering::Relaxed);
    let loaded = lister.await.unwrap();
    let peak_kb = herald.status_kb("VmHWM:");
    let rss_after_kb = herald.status_kb("VmRSS:");
    let (admin_after, body) = herald
        .login(
            &client_from(IpAddr::from([127, 0, 0, 254])),
            ADMIN,
            ADMIN_PASSWORD,
        )
        .await;
    assert!(
        admin_after == 200 || admin_after == 429,
        "{admin_after} {body}"
    );
    Run {
        rss_start_kb,
        peak_kb,
        rss_after_kb,
        flood: outcome,
        quiet,
        loaded,
        admin_after,
    }
}

impl Run {
    pub fn summary(&self, name: &str) -> String {
        let answers: Vec<String> = self
            .flood
            .answers
            .iter()
            .map(|((status, errcode), n)| format!("{n} × {status} {errcode}"))
            .collect();
        format!(
            "{name}: flood answered in {:.1} s: {}; server RSS {:.0} MB before, peak {:.0} MB \
             (VmHWM), {:.0} MB after; admin list quiet p50 {:.2} ms p99 {:.2} ms max {:.2} ms \
             ({} samples), during the flood p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} samples); \
             the admin's login right after: {}",
            self.flood.took.as_secs_f64(),
            answers.join(", "),
            self.rss_start_kb as f64 / 1024.0,
            self.peak_kb as f64 / 1024.0,
            self.rss_after_kb as f64 / 1024.0,
            self.quiet.percentile(0.5),
            self.quiet.percentile(0.99),
            self.quiet.max(),
            self.quiet.0.len(),
            self.loaded.percentile(0.5),
            self.loaded.percentile(0.99),
            self.loaded.max(),
            self.loaded.0.len(),
            self.admin_after,
        )
    }
}
