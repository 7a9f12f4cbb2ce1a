//! Several `herald serve` processes (the real binary) on one PostgreSQL
//! database from the tests' shared cluster, receivers the demo's simulated
//! homeservers (HTTPS on 127.0.0.1, verifying signatures, counting the
//! transactions they handle at once): two instances split the 256 shards
//! and deliver every event once whichever instance took it in; `kill -9`
//! of one and the other takes its shards over within 10 s (the time is
//! printed) and sends its destinations, a stopped one hands them over at
//! once; an instance joining under load
//! gets its share without a receiver ever seeing two transactions at once;
//! a network cut between one instance and PostgreSQL (a loopback proxy that
//! stops forwarding) makes it stop sending before the other claims its
//! shards, and it gets a share back when the link returns. On SQLite the
//! one instance holds every shard.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "common/backend.rs"]
pub mod backend;
#[path = "common/postgres.rs"]
pub mod postgres;
mod process;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend::{Backend, TestDb};
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_shared::InstancesOverview;
use process::{free_port, Process};
use serde_json::{json, Value};
use tcp_proxy::TcpProxy;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const TOKEN: &str = "sender-secret";

/// The database, the certificate, the shared signing key and the server
/// name every instance sends as (the first instance's federation port).
struct Cluster {
    db: TestDb,
    dir: tempfile::TempDir,
    cert: LoopbackCert,
    federation_port: u16,
    http: reqwest::Client,
    admin_token: Option<String>,
}

/// One `herald serve`.
struct Instance {
    name: String,
    admin: String,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::on(Backend::Postgres).await
    }

    async fn on(backend: Backend) -> Cluster {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let hash = herald::auth::password::hash("admin-password").unwrap();
        store.users.create_user("admin", &hash, true).await.unwrap();
        store.close().await;
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        Cluster {
            db,
            dir,
            cert,
            federation_port: free_port(),
            http: reqwest::Client::new(),
            admin_token: None,
        }
    }

    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
    }

    /// An instance's config; the first one's federation listener is the
    /// server name's (receivers fetch the shared key from it), `database`
    /// is the cluster's URL or the one given (through a proxy).
    fn instance(&self, name: &str, first: bool, database: Option<String>) -> Instance {
        let admin_port = free_port();
        let federation_port = if first {
            self.federation_port
        } else {
            free_port()
        };
        let cert = &self.cert;
        let text = format!(
            "server_name = \"127.0.0.1:{server_port}\"\n\
             instance_name = \"{name}\"\n\
             database = {db:?}\n\
             signing_key_path = {key:?}\n\
             listen = \"127.0.0.1:{admin_port}\"\n\
             federation_listen = \"127.0.0.1:{federation_port}\"\n\
             tls_certificate_path = {cert_path:?}\n\
             tls_private_key_path = {key_path:?}\n\
             ip_range_whitelist = [\"127.0.0.0/8\"]\n\
             federation_custom_ca_list = [{cert_path:?}]\n\
             sender_api_token = \"{TOKEN}\"\n\
             destination_min_retry_interval = \"300ms\"\n\
             [federation]\nmax_long_retries = 0\n",
            server_port = self.federation_port,
            db = database.unwrap_or_else(|| self.db.setting()),
            key = self.dir.path().join("herald.signing.key"),
            cert_path = cert.cert_path,
            key_path = cert.key_path,
        );
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        Instance {
            name: name.to_owned(),
            admin: format!("127.0.0.1:{admin_port}"),
            config,
            log: self.dir.path().join(format!("{name}.log")),
            process: None,
        }
    }

    /// Logs in as the admin once, through `via`.
    async fn token(&mut self, via: &Instance) -> String {
        if let Some(token) = &self.admin_token {
            return token.clone();
        }
        let answer: Value = self
            .http
            .post(format!("http://{}/_matrix/client/v3/login", via.admin))
            .json(&json!({"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "admin"},
                "password": "admin-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = answer["access_token"].as_str().unwrap().to_owned();
        self.admin_token = Some(token.clone());
        token
    }

    /// `GET /_herald/admin/v1/instances` on `via`.
    async fn instances(&mut self, via: &Instance) -> InstancesOverview {
        let token = self.token(via).await;
        let response = self
            .http
            .get(format!("http://{}/_herald/admin/v1/instances", via.admin))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Shards held per instance name, read through `via`.
    async fn shard_counts(&mut self, via: &Instance) -> HashMap<String, u32> {
        self.instances(via)
            .await
            .instances
            .into_iter()
            .map(|i| (i.name, i.shard_count))
            .collect()
    }

    /// Waits (bounded) until the shards held per instance are `want`.
    async fn wait_split(&mut self, via: &Instance, want: &[(&str, u32)], logs: &[&Instance]) {
        let want: HashMap<String, u32> = want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.shard_counts(via).await;
            let got: HashMap<String, u32> = got.into_iter().filter(|(_, c)| *c > 0).collect();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shards {got:?}, want {want:?}\n{}",
                logs_of(logs)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which instance holds each receiver's shard, read through `via`.
    async fn owners(&mut self, via: &Instance, receivers: &[Homeserver]) -> Vec<String> {
        let overview = self.instances(via).await;
        receivers
            .iter()
            .map(|rx| {
                let shard = herald_store::shard_of(rx.name());
                overview
                    .instances
                    .iter()
                    .find(|i| i.shards.contains(&shard))
                    .map(|i| i.name.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Starts receivers (bounded) until each of `names` holds at least
    /// two of them.
    async fn receivers_on_each(
        &mut self,
        via: &Instance,
        names: &[&str],
        behaviour: &Behaviour,
    ) -> Vec<Homeserver> {
        let mut receivers = Vec::new();
        for _ in 0..40 {
            receivers.push(self.receiver(behaviour.clone()).await);
            let owners = self.owners(via, &receivers).await;
            if names
                .iter()
                .all(|n| owners.iter().filter(|o| o == n).count() >= 2)
            {
                return receivers;
            }
        }
        panic!("40 receivers and still not two per instance");
    }
}

impl Instance {
    /// Starts `herald serve` and waits (bounded) until its admin port answers.
    async fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(HERALD)
            .args(["serve", "--config", self.config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn herald");
        self.process = Some(Process(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&self.admin).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not start: {}",
                self.name,
                logs_of(&[self])
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        self.process.take();
    }

    /// SIGTERM, then waits (bounded) for it to exit.
    async fn stop(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while process.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process = None;
    }

    /// Posts events `ids` for `destinations` to its intake API.
    async fn post(&self, http: &reqwest::Client, ids: &[String], destinations: &[&str]) {
        let events: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({
                    "event_id": id,
                    "room_id": "!instances:herald.test",
                    "pdu": {"event_id": id, "room_id": "!instances:herald.test",
                            "type": "m.room.message", "content": {"body": id}},
                    "destinations": destinations,
                })
            })
            .collect();
        let response = http
            .post(format!("http://{}/_herald/v1/send/pdus", self.admin))
            .bearer_auth(TOKEN)
            .json(&json!({ "events": events }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "intake of {}", self.name);
    }
}

impl Instance {
    /// Transactions it delivered (its `/metrics`).
    async fn sent_transactions(&self, http: &reqwest::Client) -> u64 {
        let text = http
            .get(format!("http://{}/metrics", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("synapse_federation_client_sent_transactions_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sent transactions in {text}"))
    }
}

fn logs_of(instances: &[&Instance]) -> String {
    instances
        .iter()
        .map(|i| {
            let text = std::fs::read_to_string(&i.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            format!(
                "--- {} (last lines) ---\n{}",
                i.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn names(receivers: &[Homeserver]) -> Vec<&str> {
    receivers.iter().map(|r| r.name()).collect()
}

/// Waits (bounded) until every receiver holds every event of `expected`.
async fn wait_delivered(receivers: &[Homeserver], expected: &HashSet<String>, logs: &[&Instance]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for rx in receivers {
        loop {
            let got: HashSet<String> = rx.received().event_ids().into_iter().collect();
            let missing: Vec<&String> = expected.difference(&got).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is missing {} of {} events, e.g. {:?}\n{}",
                rx.name(),
                missing.len(),
                expected.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                logs_of(logs)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// No receiver ever handled two transactions at once.
fn assert_never_two_in_flight(receivers: &[Homeserver], logs: &[&Instance]) {
    for rx in receivers {
        assert_eq!(
            rx.received().max_in_flight,
            1,
            "{} saw two transactions in flight at once\n{}",
            rx.name(),
            logs_of(logs)
        );
    }
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("${prefix}{i}")).collect()
}

#[tokio::test]
async fn two_instances_split_the_shards_and_deliver_every_event_once() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, None);
    a.start().await;
    b.start().await;
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    // Both endpoints agree, and each names itself.
    assert_eq!(cluster.instances(&b).await.this_instance, "beta");
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    let mut all = HashSet::new();
    for round in 0..10 {
        let batch = ids(&format!("split{round}_"), 0..5);
        let via = if round % 2 == 0 { &a } else { &b };
        via.post(&cluster.http, &batch, &to).await;
        all.extend(batch);
    }
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    for rx in &receivers {
        let got = rx.received().event_ids();
        assert_eq!(got.len(), all.len(), "{} got an event twice", rx.name());
    }
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // Each sent its own half.
    assert!(a.sent_transactions(&cluster.http).await > 0);
    assert!(b.sent_transactions(&cluster.http).await > 0);
    let metrics = cluster
        .http
        .get(format!("http://{}/metrics", a.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("herald_shards_held 128"), "{metrics}");
    assert!(
        metrics.contains("herald_instance_info{instance=\"alpha\"} 1"),
        "{metrics}"
    );
}

/// On SQLite the one instance holds every shard and says so.
#[tokio::test]
async fn on_sqlite_the_one_instance_holds_every_shard() {
    let mut cluster = Cluster::on(Backend::Sqlite).await;
    let mut a = cluster.instance("solo", true, None);
    a.start().await;
    // Admin only, refused as a Matrix error.
    let anonymous = cluster
        .http
        .get(format!("http://{}/_herald/admin/v1/instances", a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    let overview = cluster.instances(&a).await;
    assert_eq!(overview.this_instance, "solo");
    assert_eq!(overview.instances.len(), 1);
    let solo = &overview.instances[0];
    assert!(solo.live && solo.shard_count == 256 && solo.shards.len() == 256);
    let rx = cluster.receiver(Behaviour::healthy()).await;
    let batch = ids("solo", 0..3);
    a.post(&cluster.http, &batch, &[rx.name()]).await;
    wait_delivered(&[rx], &batch.into_iter().collect(), &[&a]).await;
}

#[tokio::test]
async fn a_killed_instances_shards_are_taken_over_within_10_s() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, None);
    a.start().await;
    b.start().await;
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    // Every receiver has the shared key cached, and beta's queues fill
    // while they fail.
    let first = ids("before", 0..3);
    b.post(&cluster.http, &first, &to).await;
    wait_delivered(&receivers, &first.iter().cloned().collect(), &[&a, &b]).await;
    for rx in &receivers {
        rx.force_status(Some(500));
    }
    let queued = ids("queued", 0..5);
    b.post(&cluster.http, &queued, &to).await;
    b.kill();
    let killed = Instant::now();
    for rx in &receivers {
        rx.force_status(None);
    }
    let deadline = killed + Duration::from_secs(20);
    loop {
        if cluster.shard_counts(&a).await.get("alpha") == Some(&256) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover\n{}",
            logs_of(&[&a, &b])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {} ms", takeover.as_millis());
    assert!(
        takeover <= Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    // The dead one's destinations resume from the shared queue.
    let after = ids("after", 0..3);
    a.post(&cluster.http, &after, &to).await;
    let all: HashSet<String> = first.into_iter().chain(queued).chain(after).collect();
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
}

/// A stopped (SIGTERM) instance frees its shards on the way out: the
/// other holds them all within a few rounds, not after the leases lapse.
#[tokio::test]
async fn a_stopped_instance_hands_its_shards_over_at_once() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, None);
    a.start().await;
    b.start().await;
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    let stopping = Instant::now();
    b.stop().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a, &b]).await;
    let handover = stopping.elapsed();
    eprintln!("handover after SIGTERM: {} ms", handover.as_millis());
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("shard leases freed"), "{}", logs_of(&[&b]));
    // Freed rows are claimed at alpha's next round: well under a lapse.
    assert!(
        handover < Duration::from_secs(5),
        "handover took {handover:?}"
    );
}

#[tokio::test]
async fn an_instance_joining_under_load_never_overlaps_the_other() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, None);
    a.start().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
    let slow = Behaviour {
        delay: Duration::from_millis(150),
        ..Behaviour::healthy()
    };
    let receivers: Vec<Homeserver> = {
        let mut r = Vec::new();
        for _ in 0..8 {
            r.push(cluster.receiver(slow.clone()).await);
        }
        r
    };
    let to = names(&receivers);
    let mut all = HashSet::new();
    // Bounded load: 40 small batches, about 100 ms apart, beta joining
    // after the tenth.
    for round in 0..40 {
        let batch = ids(&format!("join{round}_"), 0..2);
        a.post(&cluster.http, &batch, &to).await;
        all.extend(batch);
        if round == 10 {
            b.start().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // The joining one did send (its share of the receivers got work).
    let owners = cluster.owners(&a, &receivers).await;
    if owners.iter().any(|o| o == "beta") {
        let more = ids("joined", 0..2);
        a.post(&cluster.http, &more, &to).await;
        all.extend(more);
        wait_delivered(&receivers, &all, &[&a, &b]).await;
        assert!(
            b.sent_transactions(&cluster.http).await > 0,
            "{}",
            logs_of(&[&a, &b])
        );
    }
    assert_never_two_in_flight(&receivers, &[&a, &b]);
}

#[tokio::test]
async fn a_network_cut_stops_the_cut_instance_before_the_other_takes_over() {
    let mut cluster = Cluster::new().await;
    let TestDbUrl { direct, port } = url_parts(&cluster.db.setting());
    let proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let through_proxy = direct.replace(&format!("127.0.0.1:{port}"), &proxy.addr().to_string());
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, Some(through_proxy));
    a.start().await;
    b.start().await;
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    let mut all: HashSet<String> = ids("warm", 0..2).into_iter().collect();
    a.post(&cluster.http, &ids("warm", 0..2), &to).await;
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    // Transactions that would stay in flight for 10 s: beta's are in
    // flight when its link is cut, and must be dropped before alpha takes
    // its shards over (about 5 s later) and sends the same queues.
    let hanging = Behaviour {
        delay: Duration::from_secs(10),
        ..Behaviour::healthy()
    };
    let attempts: Vec<usize> = receivers
        .iter()
        .map(|r| r.received().attempts.len())
        .collect();
    for rx in &receivers {
        rx.set_behaviour(hanging.clone());
    }
    let held = ids("held", 0..2);
    a.post(&cluster.http, &held, &to).await;
    all.extend(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (rx, before) in receivers.iter().zip(attempts) {
        while rx.received().attempts.len() == before {
            assert!(
                Instant::now() < deadline,
                "{} got no transaction\n{}",
                rx.name(),
                logs_of(&[&a, &b])
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    proxy.cut();
    let cut = Instant::now();
    // New transactions are answered quickly again.
    for rx in &receivers {
        rx.set_behaviour(Behaviour::healthy());
    }
    // alpha holds everything while beta cannot reach the database.
    cluster.wait_split(&a, &[("alpha", 256)], &[&a, &b]).await;
    eprintln!("takeover after the cut: {} ms", cut.elapsed().as_millis());
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // The link returns: beta gets a share again and sends it.
    proxy.restore();
    cluster
        .wait_split(&a, &[("alpha", 128), ("beta", 128)], &[&a, &b])
        .await;
    let sent_before = b.sent_transactions(&cluster.http).await;
    let after = ids("restored", 0..4);
    b.post(&cluster.http, &after, &to).await;
    all.extend(after);
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    assert!(
        b.sent_transactions(&cluster.http).await > sent_before,
        "beta sends its share again\n{}",
        logs_of(&[&a, &b])
    );
}

struct TestDbUrl {
    direct: String,
    port: u16,
}

/// The URL and PostgreSQL's port in it (`postgresql://herald@127.0.0.1:PORT/db`).
fn url_parts(url: &str) -> TestDbUrl {
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    TestDbUrl {
        direct: url.to_owned(),
        port,
    }
}

/// Every instance must sign with the same key (remote servers fetch it
/// from whichever instance answers): one with another key file is refused
/// at start-up, naming `signing_key_path` and the instance it differs from.
#[tokio::test]
async fn an_instance_with_another_signing_key_is_refused() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    a.start().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
    let b = cluster.instance("beta", false, None);
    let shared_key = cluster.dir.path().join("herald.signing.key");
    let other_key = cluster.dir.path().join("other.signing.key");
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace(&format!("{shared_key:?}"), &format!("{other_key:?}"));
    std::fs::write(&b.config, text).unwrap();
    let log = std::fs::File::create(&b.log).unwrap();
    let mut child = Command::new(HERALD)
        .args(["serve", "--config", b.config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("beta was not refused: {}", logs_of(&[&b]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        err.contains("`signing_key_path`") && err.contains("\"alpha\""),
        "{err}"
    );
    // Nothing was taken from alpha, which still sends everything.
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
}
