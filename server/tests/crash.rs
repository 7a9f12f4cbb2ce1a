//! Crash safety of the sender with the real binary: `herald serve` runs as
//! a child process on a real SQLite file, and again on PostgreSQL (every
//! test on both); simulated homeservers (HTTPS on
//! 127.0.0.1, verifying Herald's signatures) receive. Events acknowledged by
//! the intake API must reach every reachable receiver, whatever happens to
//! the process in between: a restart with events queued for a receiver that
//! was failing, and `kill -9` at random moments while events pour in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "common/backend.rs"]
pub mod backend;
#[path = "common/postgres.rs"]
pub mod postgres;
mod process;

mod common {
    //! What `both_backends!` names (`crate::common::backend`).
    pub use super::backend;
}

use backend::{Backend, TestDb};

use process::{
    free_port, intake_body, log_tail, seed_from_env, sending_config, start_serve,
    wait_delivered_within, Process,
};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use rand::{Rng, SeedableRng};

const TOKEN: &str = "sender-secret";

/// Herald's config and files, started and killed as the test says.
struct Setup {
    _db: TestDb,
    dir: tempfile::TempDir,
    cert: LoopbackCert,
    config: PathBuf,
    admin: String,
    runs: usize,
}

impl Setup {
    async fn new(min_retry: &str, backend: Backend) -> Setup {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        let (admin_port, federation_port) = (free_port(), free_port());
        let config = dir.path().join("herald.toml");
        let mut text = sending_config(
            dir.path(),
            (&cert.cert_path, &cert.key_path),
            (admin_port, federation_port),
            TOKEN,
            &format!(
                "destination_min_retry_interval = \"{min_retry}\"\n\
                     [federation]\n\
                     max_long_retries = 0\n"
            ),
        );
        if backend == Backend::Postgres {
            // The URL instead of the file, the key in the temp dir.
            let file = format!("database = {:?}\n", dir.path().join("herald.db"));
            let url = format!(
                "database = {:?}\nsigning_key_path = {:?}\n",
                db.setting(),
                dir.path().join("herald.signing.key")
            );
            assert!(text.contains(&file));
            text = text.replace(&file, &url);
        }
        std::fs::write(&config, text).unwrap();
        Setup {
            _db: db,
            dir,
            cert,
            config,
            admin: format!("127.0.0.1:{admin_port}"),
            runs: 0,
        }
    }

    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
    }

    /// Starts `herald serve` and waits until its admin port answers.
    async fn start(&mut self) -> Process {
        self.runs += 1;
        start_serve(&self.config, &self.log_path(self.runs), &self.admin)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("herald-{run}.log"))
    }

    /// Every run's log, for failure messages.
    fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                let tail = log_tail(&self.log_path(run), 30);
                format!("--- run {run} (last lines) ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn intake_url(&self) -> String {
        format!("http://{}/_herald/v1/send/pdus", self.admin)
    }
}

/// Waits (bounded, 60 s) until every receiver holds every event of
/// `expected`.
async fn wait_delivered(setup: &Setup, receivers: &[&Homeserver], expected: &HashSet<String>) {
    wait_delivered_within(receivers, expected, Duration::from_secs(60), || {
        setup.logs()
    })
    .await;
}

async fn queued_events_are_delivered_after_a_restart(backend: Backend) {
    let mut setup = Setup::new("500ms", backend).await;
    let rx = setup.receiver(Behaviour::healthy()).await;
    rx.force_status(Some(500));
    let http = reqwest::Client::new();
    let process = setup.start().await;
    let ids: Vec<String> = (0..30).map(|i| format!("$restart{i}")).collect();
    let response = http
        .post(setup.intake_url())
        .bearer_auth(TOKEN)
        .json(&intake_body(&ids, "!crash:herald.test", &[rx.name()]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // It tried and failed; then the process goes away.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.received().attempts.is_empty() {
        assert!(Instant::now() < deadline, "no attempt\n{}", setup.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(process);
    rx.force_status(None);
    assert!(rx.received().transactions.is_empty());
    let _process = setup.start().await;
    wait_delivered(&setup, &[&rx], &ids.iter().cloned().collect()).await;
    // In order, each once.
    assert_eq!(rx.received().event_ids(), ids);
}

async fn kill_9_at_random_moments_loses_no_acknowledged_event(backend: Backend) {
    let seed = seed_from_env("HERALD_TEST_SEED");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut setup = Setup::new("300ms", backend).await;
    let healthy = setup.receiver(Behaviour::healthy()).await;
    let slow = setup
        .receiver(Behaviour {
            delay: Duration::from_millis(30),
            ..Behaviour::healthy()
        })
        .await;
    let flaky = setup
        .receiver(Behaviour {
            failure_rate: 0.2,
            seed: Some(seed),
            ..Behaviour::healthy()
        })
        .await;
    // Never reachable: must not hold the others back.
    let unreachable = format!("127.0.0.1:{}", free_port());
    let destinations = [
        healthy.name(),
        slow.name(),
        flaky.name(),
        unreachable.as_str(),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acknowledged = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let mut next = 0usize;
    for round in 0..5 {
        let process = setup.start().await;
        let kill_after = Duration::from_millis(rng.gen_range(200..1200));
        let started = Instant::now();
        // Requests in flight while the process dies are not acknowledged;
        // they may or may not be stored, and must not be counted.
        let producer = {
            let (http, url, acked) = (http.clone(), setup.intake_url(), acknowledged.clone());
            let destinations: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
            let first = next;
            tokio::spawn(async move {
                let names: Vec<&str> = destinations.iter().map(String::as_str).collect();
                let mut n = first;
                for _ in 0..500 {
                    let ids: Vec<String> = (n..n + 10).map(|i| format!("$k{round}-{i}")).collect();
                    n += 10;
                    match http
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .json(&intake_body(&ids, "!crash:herald.test", &names))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => acked.lock().extend(ids),
                        _ => break,
                    }
                }
                n
            })
        };
        tokio::time::sleep(kill_after.saturating_sub(started.elapsed())).await;
        drop(process); // SIGKILL
        next = producer.await.unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().clone();
    assert!(
        acknowledged.len() >= 50,
        "too few events accepted: {}",
        acknowledged.len()
    );
    let _process = setup.start().await;
    let start = Instant::now();
    wait_delivered(&setup, &[&healthy, &slow, &flaky], &acknowledged).await;
    eprintln!(
        "{} events acknowledged over 5 killed runs; all delivered {:?} after the last start",
        acknowledged.len(),
        start.elapsed()
    );
}

both_backends!(
    queued_events_are_delivered_after_a_restart,
    kill_9_at_random_moments_loses_no_acknowledged_event,
);
