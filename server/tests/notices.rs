//! Several Herald instances on one PostgreSQL database, seen from the
//! instance that sends: a running Herald (its sender, federation client
//! and admin API on 127.0.0.1) and, beside it, a second store opened on the
//! same database standing in for another instance (a real second client of
//! the database). What the other instance writes wakes this one within a
//! second: data queued there is sent from here, a reset there ends the
//! backoff here, rows written there show in this one's admin list.
//! (Two `herald serve` processes on one database wait for shard leases.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::backend::{Backend, TestDb};

use std::time::{Duration, Instant};

use herald::config::ConfigDuration;
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_store::{DestinationRow, NewEvent, Store};
use serde_json::Value;

/// What the issue asks: the owner hears another instance within this.
const WITHIN: Duration = Duration::from_secs(1);
/// How long a test waits for it at most.
const BOUND: Duration = Duration::from_secs(5);

/// This instance (a running Herald) and the other (a store).
struct Instances {
    db: TestDb,
    _dir: tempfile::TempDir,
    cert: LoopbackCert,
    base: String,
    here: Store,
    other: Store,
}

impl Instances {
    /// Herald with a TLS federation listener (receivers fetch its key) and
    /// a client trusting the test certificate; failed transactions back
    /// off for `backoff` at least.
    async fn start(backoff: Duration) -> Instances {
        let db = TestDb::new(Backend::Postgres).await;
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        let here = db.open().await;
        let hash = herald::auth::password::hash("admin-password").unwrap();
        here.users.create_user("admin", &hash, true).await.unwrap();
        let (_, base) = common::spawn_sending(&here, db.setting(), &cert, |config, _| {
            config.signing_key_path = Some(dir.path().join("signing.key"));
            config.destination_min_retry_interval = ConfigDuration(backoff);
        })
        .await;
        let other = db.open().await;
        Instances {
            db,
            _dir: dir,
            cert,
            base,
            here,
            other,
        }
    }

    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
    }

    /// Queues an event for `destination` through the other instance.
    async fn queue_there(&self, id: &str, destination: &str) {
        let pdu = serde_json::json!({
            "event_id": id, "room_id": "!r:herald.test", "type": "m.room.message",
            "content": {"body": id},
        });
        self.other
            .outbox
            .enqueue_pdus(vec![NewEvent {
                event_id: id.into(),
                room_id: "!r:herald.test".into(),
                pdu_json: pdu.to_string(),
                destinations: vec![destination.to_owned()],
            }])
            .await
            .unwrap();
    }

    async fn admin_get(&self, path: &str) -> Value {
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&common::login_body("admin", "admin-password"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        http.get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn close(self) {
        self.other.close().await;
        self.here.close().await;
        drop(self.db);
    }
}

/// Waits (bounded by [`BOUND`]) until `done` holds; how long it took.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn data_queued_on_another_instance_is_sent_from_this_one_within_a_second() {
    let instances = Instances::start(Duration::from_millis(800)).await;
    let rx = instances.receiver(Behaviour::healthy()).await;
    let queued_at = Instant::now();
    instances.queue_there("$there", rx.name()).await;
    wait_for("the event queued on the other instance", || {
        rx.received().event_ids() == ["$there"]
    })
    .await;
    let took = queued_at.elapsed();
    assert!(took < WITHIN, "sent {took:?} after the other queued it");
    instances.close().await;
}

#[tokio::test]
async fn a_reset_on_another_instance_ends_the_backoff_here_at_once() {
    // Ten minutes of backoff: only the reset can bring it back in time.
    let instances = Instances::start(Duration::from_secs(600)).await;
    let rx = instances.receiver(Behaviour::healthy()).await;
    rx.force_status(Some(503));
    instances.queue_there("$x", rx.name()).await;
    let start = Instant::now();
    loop {
        let row = instances.here.destinations.destination(rx.name()).await;
        if row
            .unwrap()
            .is_some_and(|r| r.retry_interval.unwrap_or(0) > 0)
        {
            break;
        }
        assert!(start.elapsed() < BOUND, "no backoff recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rx.force_status(None);
    let reset_at = Instant::now();
    let outcome = instances
        .other
        .destinations
        .reset_retry_timings(rx.name(), Some("@admin:herald.test"))
        .await
        .unwrap();
    assert_eq!(outcome, herald_store::ResetOutcome::Reset);
    // Sent: the sender's queue woke, and the federation client's retry
    // limiter let the request through.
    wait_for("the retry after the reset there", || {
        rx.received().event_ids() == ["$x"]
    })
    .await;
    let took = reset_at.elapsed();
    assert!(took < WITHIN, "sent {took:?} after the reset there");
    instances.close().await;
}

#[tokio::test]
async fn rows_written_on_another_instance_show_in_this_ones_admin_list() {
    let instances = Instances::start(Duration::from_millis(800)).await;
    let row = DestinationRow::new(
        "elsewhere.example",
        Some(1_000),
        Some(60_000),
        Some(900),
        None,
    );
    let written_at = Instant::now();
    instances
        .other
        .destinations
        .put_destinations(std::slice::from_ref(&row))
        .await
        .unwrap();
    let path = "/_synapse/admin/v1/federation/destinations?destination=elsewhere";
    let listed = loop {
        let page = instances.admin_get(path).await;
        if page["total"] == 1 {
            break page["destinations"][0].clone();
        }
        assert!(written_at.elapsed() < BOUND, "never listed: {page}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        written_at.elapsed() < WITHIN,
        "listed {:?} after",
        written_at.elapsed()
    );
    assert_eq!(listed["destination"], "elsewhere.example");
    assert_eq!(listed["retry_interval"], 60_000);
    instances.close().await;
}

/// An import is one bulk write: the instances already running reload once
/// (one notice, not one per row) and hold what was imported, `--replace`
/// included.
#[tokio::test]
async fn an_import_by_another_process_reaches_a_running_store() {
    use common::synapse_db::SynapseDb;
    let dir = tempfile::tempdir().unwrap();
    let syn = SynapseDb::sqlite(dir.path()).await;
    for r in common::seed_rows() {
        syn.put_row(&r).await;
    }
    syn.put_rooms("b.org", &common::seed_rooms()).await;
    syn.close().await;
    let own = TestDb::new(Backend::Postgres).await;
    let running = own.open().await;
    let import = |replace: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["import-synapse", "--from", &syn.setting(), "--database"])
            .arg(own.setting());
        if replace {
            cmd.arg("--replace");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for replace in [false, true] {
        if replace {
            // Something else first, which the replacing import removes.
            running
                .destinations
                .put_destinations(&[DestinationRow::new("gone.example", None, None, None, None)])
                .await
                .unwrap();
        }
        import(replace);
        let imported_at = Instant::now();
        wait_for("the imported rows", || {
            running.destinations.destination_count() == 11
                && running.destinations.indexed("gone.example").is_none()
        })
        .await;
        assert!(
            imported_at.elapsed() < WITHIN,
            "{:?}",
            imported_at.elapsed()
        );
        common::assert_holds_the_seed(&running).await;
    }
    running.close().await;
}
