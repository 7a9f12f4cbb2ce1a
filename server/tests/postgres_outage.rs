//! PostgreSQL lost while `herald serve` runs (the real binary, a throwaway
//! cluster of this test's own, stopped with `pg_ctl` and started again on
//! the same port): the intake answers 503 with a Matrix error while it
//! cannot commit (never a 500, never an acknowledgement of something not
//! stored), answers 200 again once the database is back, and every event
//! it acknowledged reaches the loopback receiver exactly once. Meanwhile
//! the admin endpoints that need the database (history, login) answer 503
//! too, and the list served from the index keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "common/postgres.rs"]
pub mod postgres;
mod process;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use postgres::{fresh_database, PgCluster};
use process::{
    free_port, intake_body, log_tail, sending_config_on, start_serve, wait_delivered_within,
    Process,
};
use serde_json::Value;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const TOKEN: &str = "sender-secret";

struct Setup {
    cluster: PgCluster,
    dir: tempfile::TempDir,
    cert: LoopbackCert,
    config: PathBuf,
    admin: String,
    http: reqwest::Client,
}

impl Setup {
    async fn new() -> Setup {
        let (cluster, url) = fresh_database("outage").await;
        let out = Command::new(HERALD)
            .args([
                "user",
                "add",
                "admin",
                "--password",
                "pw",
                "--admin",
                "--database",
                &url,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        let (admin_port, federation_port) = (free_port(), free_port());
        let config = dir.path().join("herald.toml");
        let text = sending_config_on(
            &url,
            dir.path(),
            (&cert.cert_path, &cert.key_path),
            (admin_port, federation_port),
            TOKEN,
            "destination_min_retry_interval = \"300ms\"\n\
             [federation]\n\
             max_long_retries = 0\n",
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            cluster,
            dir,
            cert,
            config,
            admin: format!("127.0.0.1:{admin_port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn start(&self) -> Process {
        start_serve(&self.config, &self.log_path(), &self.admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("herald.log")
    }

    fn logs(&self) -> String {
        log_tail(&self.log_path(), 40)
    }

    async fn login(&self) -> (u16, Value) {
        let body = serde_json::to_value(herald_shared::PasswordLogin::new("admin", "pw")).unwrap();
        let response = self
            .http
            .post(format!("http://{}/_matrix/client/v3/login", self.admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts events `ids` for `to`; the status and the JSON body.
    async fn post(&self, ids: &[String], to: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("http://{}/_herald/v1/send/pdus", self.admin))
            .bearer_auth(TOKEN)
            .json(&intake_body(ids, "!outage:herald.test", &[to]))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn intake_answers_503_while_postgresql_is_down_and_loses_nothing() {
    let setup = Setup::new().await;
    let rx = Homeserver::start_with_cert(Behaviour::healthy(), &setup.cert)
        .await
        .unwrap();
    let _server = setup.start().await;
    let (status, login) = setup.login().await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let list = "/_synapse/admin/v1/federation/destinations";
    let history = format!(
        "/_herald/admin/v1/federation/destinations/{}/history",
        rx.name()
    );
    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0;
    let mut batch = |n: usize| -> Vec<String> {
        let ids = (next..next + n).map(|i| format!("$outage{i}")).collect();
        next += n;
        ids
    };

    // Up: acknowledged.
    for _ in 0..3 {
        let ids = batch(5);
        let (status, body) = setup.post(&ids, rx.name()).await;
        assert_eq!(status, 200, "{body}\n{}", setup.logs());
        acknowledged.extend(ids);
    }

    let (status, body) = setup.get(list, &token).await;
    assert_eq!(status, 200, "{body}");

    // Down: 503 with a Matrix error, never a 500. A request that raced the
    // stop may still have been stored (200): then it counts.
    setup.cluster.halt();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    while refused < 2 {
        assert!(
            Instant::now() < deadline,
            "no 503 while PostgreSQL was down\n{}",
            setup.logs()
        );
        let ids = batch(5);
        let (status, body) = setup.post(&ids, rx.name()).await;
        match status {
            200 => acknowledged.extend(ids),
            503 => {
                assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
                assert!(
                    body["error"]
                        .as_str()
                        .unwrap()
                        .contains("database is unavailable"),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("{other} {body} while PostgreSQL was down\n{}", setup.logs()),
        }
    }

    // The list is served from memory (the token was verified before, by
    // the list above);
    // what needs the database answers 503.
    let (status, body) = setup.get(list, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["destinations"][0]["destination"], rx.name(), "{body}");
    for (status, body) in [setup.get(&history, &token).await, setup.login().await] {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    }

    // Back on the same port: 200 again (bounded), nothing lost, each once.
    setup.cluster.resume();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = batch(5);
        let (status, body) = setup.post(&ids, rx.name()).await;
        match status {
            200 => {
                acknowledged.extend(ids);
                break;
            }
            503 => {}
            other => panic!(
                "{other} {body} after PostgreSQL came back\n{}",
                setup.logs()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "intake did not recover\n{}",
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = batch(5);
    let (status, body) = setup.post(&ids, rx.name()).await;
    assert_eq!(status, 200, "{body}");
    acknowledged.extend(ids);

    let expected: HashSet<String> = acknowledged.iter().cloned().collect();
    wait_delivered_within(&[&rx], &expected, Duration::from_secs(60), || setup.logs()).await;
    // Once: a transaction retried with its same ID (its delivery not
    // recorded before the stop) is one delivery, as receivers count it.
    let mut txn_ids = HashSet::new();
    let received: Vec<String> = rx
        .received()
        .transactions
        .into_iter()
        .filter(|t| txn_ids.insert(t.txn_id.clone()))
        .flat_map(|t| t.event_ids)
        .collect();
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "an event was delivered twice");
}
