//! Several `herald serve` processes (the real binary) on one PostgreSQL
//! database of the tests' shared cluster, and what the instance tests share:
//! [`Cluster`] (the database, certificate, shared key and server name, each
//! instance's config), [`Instance`] (one process: start, `kill -9`, SIGTERM,
//! intake, metrics), and the checks on the receivers (every event delivered,
//! never two transactions in flight). Used by `instances.rs` and
//! `instances_chaos.rs`.
// Each test file that includes this module uses what it needs of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{Backend, TestDb};
use crate::process::{free_port, intake_body, intake_event, wait_delivered_within, Process};
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_shared::InstancesOverview;
use serde_json::{json, Value};

pub const HERALD: &str = env!("CARGO_BIN_EXE_herald");
pub const TOKEN: &str = "sender-secret";
/// The room of every event the instance tests post.
const ROOM: &str = "!instances:herald.test";

/// The database, the certificate, the shared signing key and the server
/// name every instance sends as (the first instance's federation port).
pub struct Cluster {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub cert: LoopbackCert,
    pub federation_port: u16,
    pub http: reqwest::Client,
    pub admin_token: Option<String>,
}

/// One `herald serve`.
pub struct Instance {
    pub name: String,
    pub admin: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub process: Option<Process>,
}

impl Cluster {
    pub async fn new() -> Cluster {
        Cluster::on(Backend::Postgres).await
    }

    pub async fn on(backend: Backend) -> Cluster {
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

    pub async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
    }

    /// An instance's config; the first one's federation listener is the
    /// server name's (receivers fetch the shared key from it), `database`
    /// is the cluster's URL or the one given (through a proxy).
    pub fn instance(&self, name: &str, first: bool, database: Option<String>) -> Instance {
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
    pub async fn token(&mut self, via: &Instance) -> String {
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
    pub async fn instances(&mut self, via: &Instance) -> InstancesOverview {
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
    pub async fn shard_counts(&mut self, via: &Instance) -> HashMap<String, u32> {
        self.instances(via)
            .await
            .instances
            .into_iter()
            .map(|i| (i.name, i.shard_count))
            .collect()
    }

    /// Waits (bounded) until the shards held per instance are `want`.
    pub async fn wait_split(&mut self, via: &Instance, want: &[(&str, u32)], logs: &[&Instance]) {
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

    /// Starts "alpha" (the first) and "beta" (on `beta_database` when
    /// given) and waits (bounded) until they hold half the shards each.
    pub async fn start_pair(&mut self, beta_database: Option<String>) -> (Instance, Instance) {
        let mut a = self.instance("alpha", true, None);
        let mut b = self.instance("beta", false, beta_database);
        a.start().await;
        b.start().await;
        self.wait_halves(&a, &b).await;
        (a, b)
    }

    /// Waits (bounded) until "alpha" (`a`, read through) and "beta" (`b`)
    /// hold 128 shards each.
    pub async fn wait_halves(&mut self, a: &Instance, b: &Instance) {
        self.wait_split(a, &[("alpha", 128), ("beta", 128)], &[a, b])
            .await;
    }

    /// Which instance holds each receiver's shard, read through `via`.
    pub async fn owners(&mut self, via: &Instance, receivers: &[Homeserver]) -> Vec<String> {
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
    pub async fn receivers_on_each(
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
    pub async fn start(&mut self) {
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
    pub fn kill(&mut self) {
        self.process.take();
    }

    /// SIGTERM, then waits (bounded) for it to exit.
    pub async fn stop(&mut self) {
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
    pub async fn post(&self, http: &reqwest::Client, ids: &[String], destinations: &[&str]) {
        let response = http
            .post(format!("http://{}/_herald/v1/send/pdus", self.admin))
            .bearer_auth(TOKEN)
            .json(&intake_body(ids, ROOM, destinations))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "intake of {}", self.name);
    }
}

impl Instance {
    /// Posts `events` (each an ID and its destinations) to its intake API;
    /// `Ok` only when the intake acknowledged them (200), else why not
    /// (the instance is dead, or answered something else).
    pub async fn try_post(
        &self,
        http: &reqwest::Client,
        events: &[(String, Vec<String>)],
    ) -> Result<(), String> {
        let events: Vec<Value> = events
            .iter()
            .map(|(id, destinations)| intake_event(id, ROOM, destinations))
            .collect();
        let response = http
            .post(format!("http://{}/_herald/v1/send/pdus", self.admin))
            .bearer_auth(TOKEN)
            .json(&json!({ "events": events }))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("{status}")),
        }
    }

    /// Its admin list of destinations (`?limit=1000`), as answered.
    pub async fn destinations(&self, http: &reqwest::Client, token: &str) -> Value {
        let response = http
            .get(format!(
                "http://{}/_synapse/admin/v1/federation/destinations?limit=1000",
                self.admin
            ))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "destinations of {}", self.name);
        response.json().await.unwrap()
    }
}

impl Instance {
    /// Its `/metrics`, as text.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(format!("http://{}/metrics", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Transactions it delivered (its `/metrics`).
    pub async fn sent_transactions(&self, http: &reqwest::Client) -> u64 {
        let text = self.metrics(http).await;
        text.lines()
            .find(|l| l.starts_with("synapse_federation_client_sent_transactions_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sent transactions in {text}"))
    }
}

pub fn logs_of(instances: &[&Instance]) -> String {
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

pub fn names(receivers: &[Homeserver]) -> Vec<&str> {
    receivers.iter().map(|r| r.name()).collect()
}

/// Waits (bounded, 60 s) until every receiver holds every event of
/// `expected`.
pub async fn wait_delivered(
    receivers: &[Homeserver],
    expected: &HashSet<String>,
    logs: &[&Instance],
) {
    let receivers: Vec<&Homeserver> = receivers.iter().collect();
    wait_delivered_within(&receivers, expected, Duration::from_secs(60), || {
        logs_of(logs)
    })
    .await;
}

/// No receiver ever handled two transactions at once.
pub fn assert_never_two_in_flight(receivers: &[Homeserver], logs: &[&Instance]) {
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

pub fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("${prefix}{i}")).collect()
}
