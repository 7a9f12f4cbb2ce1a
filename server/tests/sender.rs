//! The federation sender end to end, in one process: events go in through
//! the intake API over HTTP, Herald sends them as signed transactions to
//! simulated homeservers — real HTTPS servers on 127.0.0.1 that fetch
//! Herald's key from its key server and verify every request — and the test
//! reads what they accepted, the database and the admin API. Every test
//! runs on SQLite and on PostgreSQL.
//!
//! Covered: batching limits and order; transaction IDs increasing and kept
//! on a retry; backoff, then the timer's wake-up; an admin's reset waking a
//! destination at once; catch-up sending the newest event per room and
//! dropping presence/typing/receipts; whitelist and self skipped; per-PDU
//! errors recorded and not retried; metrics. Restarts and `kill -9` are in
//! `tests/crash.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::backend::{Backend, TestDb};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::{Config, ConfigDuration};
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_store::{DestinationRow, Store};
use serde_json::{json, Value};

const TOKEN: &str = "sender-secret";

fn now_ms() -> i64 {
    herald_store::now_ms()
}

/// Herald's database (on the test's backend) and the certificate Herald
/// and the receivers share (in a temp directory kept as long).
struct Fixture {
    db: TestDb,
    _dir: tempfile::TempDir,
    cert: LoopbackCert,
}

impl Fixture {
    async fn new(backend: Backend) -> Arc<Fixture> {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        Arc::new(Fixture {
            db,
            _dir: dir,
            cert,
        })
    }

    /// A simulated homeserver trusting the certificate.
    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
    }

    /// Herald with a TLS federation listener (so receivers can fetch its
    /// key), the intake API, an admin user, and a client trusting the
    /// certificate; failed transactions back off at once, briefly.
    async fn herald(self: &Arc<Self>, tweak: impl Fn(&mut Config)) -> Herald {
        let store = Store::open_target(&self.db.target).await.unwrap();
        let hash = herald::auth::password::hash("admin-password").unwrap();
        store.users.create_user("admin", &hash, true).await.unwrap();
        let (name, base) =
            common::spawn_sending(&store, self.db.setting(), &self.cert, |config, name| {
                // Where SQLite's default puts it (on PostgreSQL the default is
                // the working directory).
                config.signing_key_path = Some(self.db.dir().join(format!("{name}.signing.key")));
                config.sender_api_token = Some(TOKEN.into());
                config.destination_min_retry_interval = ConfigDuration(Duration::from_millis(800));
                tweak(config);
            })
            .await;
        Herald {
            name,
            base,
            store,
            http: reqwest::Client::new(),
            fixture: self.clone(),
        }
    }
}

struct Herald {
    name: String,
    base: String,
    store: Store,
    http: reqwest::Client,
    fixture: Arc<Fixture>,
}

impl Herald {
    async fn start(backend: Backend, tweak: impl Fn(&mut Config)) -> Herald {
        Fixture::new(backend).await.herald(tweak).await
    }

    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        self.fixture.receiver(behaviour).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        common::into_json(response).await
    }

    /// Hands events to the intake API; their stream orderings.
    async fn send(&self, events: Vec<Value>) -> Vec<i64> {
        let (status, body) = self
            .post("/_herald/v1/send/pdus", TOKEN, json!({ "events": events }))
            .await;
        assert_eq!(status, 200, "{body}");
        body["stream_orderings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    }

    async fn send_edus(&self, edus: Vec<Value>) {
        let (status, body) = self
            .post("/_herald/v1/send/edus", TOKEN, json!({ "edus": edus }))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn admin_token(&self) -> String {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/login",
                "",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"}, "password": "admin-password"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Herald's queue view of a destination, as the console reads it.
    async fn queue_view(&self, destination: &str) -> Value {
        self.herald_admin(&format!("destinations/{destination}/queue"))
            .await
    }

    /// `GET /_herald/admin/v1/federation/<path>` as the admin (200 expected).
    async fn herald_admin(&self, path: &str) -> Value {
        let token = self.admin_token().await;
        let response = self
            .http
            .get(format!("{}/_herald/admin/v1/federation/{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn queued(&self, destination: &str) -> usize {
        self.store
            .outbox
            .pending_pdus(destination, 10_000)
            .await
            .unwrap()
            .len()
            + self
                .store
                .outbox
                .pending_edus(destination, 10_000)
                .await
                .unwrap()
                .len()
    }

    async fn row(&self, destination: &str) -> DestinationRow {
        self.store
            .destinations
            .destination(destination)
            .await
            .unwrap()
            .unwrap()
    }

    /// Records a two-hour backoff of `destination` (long enough for
    /// catch-up) that ends 1.5 s from now.
    async fn long_outage_ending_soon(&self, destination: &str, last_successful: Option<i64>) {
        self.long_outage(destination, last_successful, 1_500).await;
    }

    /// Records a two-hour backoff of `destination` (long enough for
    /// catch-up) that ends `ends_in_ms` from now.
    async fn long_outage(&self, destination: &str, last_successful: Option<i64>, ends_in_ms: i64) {
        let now = now_ms();
        let interval = 2 * 3_600_000;
        self.store
            .destinations
            .put_destinations(&[DestinationRow::new(
                destination,
                Some(now - interval + ends_in_ms),
                Some(interval),
                Some(now - interval),
                last_successful,
            )])
            .await
            .unwrap();
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn event(id: &str, room: &str, destinations: &[&str]) -> Value {
    json!({
        "event_id": id,
        "room_id": room,
        "pdu": {"event_id": id, "room_id": room, "type": "m.room.message",
                "content": {"body": id}},
        "destinations": destinations,
    })
}

/// Waits (bounded) until `done` holds.
async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks (every 20 ms) that `holds` stays true for all of `window`: a
/// "nothing happens within `window`" assertion that fails as soon as it
/// does happen.
async fn assert_stays(what: &str, window: Duration, mut holds: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        assert!(holds(), "{what}: broken after {:?}", start.elapsed());
        if start.elapsed() >= window {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delivers_everything_in_order_in_batches_within_the_limits(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    let ids: Vec<String> = (0..120).map(|i| format!("$e{i:03}")).collect();
    let events = ids
        .iter()
        .map(|id| event(id, "!room:herald.test", &[rx.name()]))
        .collect();
    let orderings = herald.send(events).await;
    let edus = (0..150)
        .map(|i| json!({"edu_type": "m.direct_to_device", "content": {"n": i}, "destinations": [rx.name()]}))
        .collect();
    herald.send_edus(edus).await;

    wait_for("120 PDUs and 150 EDUs", Duration::from_secs(20), || {
        let r = rx.received();
        r.event_ids().len() >= 120
            && r.transactions
                .iter()
                .map(|t| t.edu_types.len())
                .sum::<usize>()
                >= 150
    })
    .await;
    let received = rx.received();
    assert_eq!(received.event_ids(), ids, "every PDU once, in order");
    assert_eq!(received.unauthenticated, 0);
    assert!(rx.key_fetches() >= 1, "the receiver fetched Herald's key");
    let mut previous = 0u64;
    for txn in &received.transactions {
        assert!(
            txn.event_ids.len() <= 50 && txn.edu_types.len() <= 100,
            "{txn:?}"
        );
        assert_eq!(txn.origin, herald.name);
        let id: u64 = txn.txn_id.parse().unwrap();
        assert!(
            id > previous,
            "transaction IDs increase: {previous} then {id}"
        );
        previous = id;
    }
    assert!(received.transactions.len() >= 3);
    wait_for_queue_empty(&herald, rx.name()).await;
    let row = herald.row(rx.name()).await;
    assert_eq!(
        row.last_successful_stream_ordering,
        orderings.last().copied()
    );
    assert_eq!(row.retry_interval.unwrap_or(0), 0);

    let metrics = herald.metrics().await;
    assert!(
        metrics.contains("herald_sender_pdus_sent_total 120\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_sender_edus_sent_total 150\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_sender_pdus_queued_total 120\n"),
        "{metrics}"
    );
}

async fn wait_for_queue_empty(herald: &Herald, destination: &str) {
    let start = Instant::now();
    while herald.queued(destination).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "queue not emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A long queue is read from where the last full transaction ended
/// (`queue::queue_step`): an event queued again for the destination while
/// the rest of its queue waits (so its ordering lies before that point)
/// still goes, after the rest.
async fn an_event_queued_again_behind_a_long_queue_is_still_sent(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald
        .receiver(Behaviour {
            delay: Duration::from_millis(300),
            ..Behaviour::healthy()
        })
        .await;
    let ids: Vec<String> = (0..200).map(|i| format!("$q{i:03}")).collect();
    let events = ids
        .iter()
        .map(|id| event(id, "!room:herald.test", &[rx.name()]))
        .collect();
    herald.send(events).await;
    // The first transaction is delivered (out of the queue); three more
    // wait, each answered 300 ms after it arrives.
    let start = Instant::now();
    while herald.queued(rx.name()).await > 150 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "first transaction not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    herald
        .send(vec![event("$q000", "!room:herald.test", &[rx.name()])])
        .await;
    wait_for("201 PDUs", Duration::from_secs(20), || {
        rx.pdu_count() >= 201
    })
    .await;
    let mut expected = ids.clone();
    expected.push("$q000".into());
    assert_eq!(
        rx.received().event_ids(),
        expected,
        "the queue in order, then the event queued again"
    );
    wait_for_queue_empty(&herald, rx.name()).await;
}

async fn one_event_reaches_many_destinations(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let mut receivers = Vec::new();
    for _ in 0..20 {
        receivers.push(herald.receiver(Behaviour::healthy()).await);
    }
    let names: Vec<&str> = receivers.iter().map(|r| r.name()).collect();
    herald
        .send(vec![event("$fan", "!r:herald.test", &names)])
        .await;
    for rx in &receivers {
        wait_for("the event everywhere", Duration::from_secs(20), || {
            rx.received().event_ids() == ["$fan"]
        })
        .await;
    }
}

async fn a_failed_transaction_backs_off_and_is_retried_by_the_timer_with_its_id(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    rx.force_status(Some(500));
    herald
        .send(vec![
            event("$a", "!r:herald.test", &[rx.name()]),
            event("$b", "!r:herald.test", &[rx.name()]),
        ])
        .await;
    wait_for("a first attempt", Duration::from_secs(10), || {
        !rx.received().attempts.is_empty()
    })
    .await;
    let failed_txn = rx.received().attempts[0].clone();
    // The failure is recorded as backoff.
    let start = Instant::now();
    loop {
        let row = herald.row(rx.name()).await;
        if row.retry_interval.unwrap_or(0) > 0 {
            assert!(row.failure_ts.is_some());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no backoff recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = herald.queue_view(rx.name()).await;
    assert_eq!(view["state"], "backing_off", "{view}");
    assert_eq!(view["queued_pdus"], 2, "{view}");
    assert!(view["oldest_queued_ts"].as_i64().unwrap() > 0, "{view}");
    // It comes back; no new data arrives: the timer alone sends again.
    rx.force_status(None);
    wait_for("the retry", Duration::from_secs(15), || {
        rx.received().event_ids() == ["$a", "$b"]
    })
    .await;
    let received = rx.received();
    assert_eq!(received.transactions.len(), 1);
    assert_eq!(
        received.transactions[0].txn_id, failed_txn,
        "a retried transaction keeps its ID"
    );
    wait_for_queue_empty(&herald, rx.name()).await;
    let row = herald.row(rx.name()).await;
    assert_eq!(
        row.retry_interval.unwrap_or(0),
        0,
        "success clears the backoff"
    );
    assert!(herald
        .metrics()
        .await
        .contains("herald_sender_transactions_total{outcome=\"failed\"}"));
}

async fn reset_connection_wakes_a_destination_in_backoff_at_once(backend: Backend) {
    // Backoff of 10 minutes: only the reset can bring it back in time.
    let herald = Herald::start(backend, |c| {
        c.destination_min_retry_interval = ConfigDuration(Duration::from_secs(600));
    })
    .await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    rx.force_status(Some(503));
    herald
        .send(vec![event("$x", "!r:herald.test", &[rx.name()])])
        .await;
    let start = Instant::now();
    while herald.row(rx.name()).await.retry_interval.unwrap_or(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no backoff recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.force_status(None);
    // New data does not wake it before its time.
    herald
        .send(vec![event("$y", "!r:herald.test", &[rx.name()])])
        .await;
    assert_stays(
        "new data does not end the backoff",
        Duration::from_millis(500),
        || rx.received().transactions.is_empty(),
    )
    .await;

    let token = herald.admin_token().await;
    let reset_at = Instant::now();
    let (status, body) = herald
        .post(
            &format!(
                "/_synapse/admin/v1/federation/destinations/{}/reset_connection",
                rx.name()
            ),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for("the retry after the reset", Duration::from_secs(5), || {
        rx.received().event_ids() == ["$x", "$y"]
    })
    .await;
    assert!(
        reset_at.elapsed() < Duration::from_secs(2),
        "sent {:?} after the reset",
        reset_at.elapsed()
    );
}

/// Finding 6 of issue 11: a destination answering `200` with an HTML page
/// (not the JSON object a `/send` answer is) is failing, not healthy: the
/// Synapse-style details show `failure_ts` and a `retry_interval` from its
/// first failed try on, never a healthy row while it keeps failing, and its
/// tries come further and further apart (backoff from 800 ms, × 2 × jitter).
async fn a_destination_answering_200_with_a_body_that_is_not_json_backs_off(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald
        .receiver(Behaviour {
            html_answers: true,
            ..Behaviour::healthy()
        })
        .await;
    herald
        .send(vec![event("$html", "!r:herald.test", &[rx.name()])])
        .await;
    let token = herald.admin_token().await;
    let details = || async {
        let response = herald
            .http
            .get(format!(
                "{}/_synapse/admin/v1/federation/destinations/{}",
                herald.base,
                rx.name()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };
    // Each try's arrival time, and the details as they stand after it.
    let start = Instant::now();
    let mut arrivals: Vec<Instant> = Vec::new();
    let mut intervals: Vec<i64> = Vec::new();
    while arrivals.len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} tries in 30 s",
            arrivals.len()
        );
        let attempts = rx.received().attempts.len();
        while arrivals.len() < attempts {
            arrivals.push(Instant::now());
        }
        if !arrivals.is_empty() {
            let d = details().await;
            let interval = d["retry_interval"].as_i64().unwrap_or(0);
            // Between a try and the client's record of it, the row may
            // still show the previous one; after the first, never healthy.
            if intervals.is_empty() && interval == 0 && d["failure_ts"].is_null() {
                assert!(
                    arrivals[0].elapsed() < Duration::from_secs(5),
                    "still healthy 5 s after a failed try: {d}"
                );
            } else {
                assert!(d["failure_ts"].as_i64().unwrap_or(0) > 0, "{d}");
                assert!(interval > 0, "{d}");
                assert!(d["retry_last_ts"].as_i64().unwrap_or(0) > 0, "{d}");
                if intervals.last() != Some(&interval) {
                    intervals.push(interval);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rx.received().transactions.is_empty());
    assert_eq!(rx.received().statuses.get(&200), Some(&4));
    // The backoff grows: 800 ms, then × 2 × 0.8–1.4 each time.
    assert!(intervals.len() >= 3, "{intervals:?}");
    assert!(intervals.windows(2).all(|w| w[1] > w[0]), "{intervals:?}");
    // The gaps by the receiver's own clock at each arrival (the polling
    // above is 20 ms apart and waits on admin calls).
    let times = rx.received().attempt_times;
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(700), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");
    let view = herald.queue_view(rx.name()).await;
    assert_eq!(view["state"], "backing_off", "{view}");
    assert_eq!(view["queued_pdus"], 1, "{view}");
}

async fn catch_up_sends_the_newest_event_of_each_room_and_drops_volatile_edus(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    // Down for two hours by its record; due again in an hour, so that
    // everything below is queued during the outage however slow the
    // machine (a fixed 1.5 s window was not always enough).
    herald.long_outage(rx.name(), None, 3_600_000).await;
    let to = [rx.name()];
    herald
        .send(vec![
            event("$a1", "!a:herald.test", &to),
            event("$a2", "!a:herald.test", &to),
            event("$b1", "!b:herald.test", &to),
            event("$a3", "!a:herald.test", &to),
            event("$c1", "!c:herald.test", &to),
            event("$b2", "!b:herald.test", &to),
        ])
        .await;
    herald
        .send_edus(vec![
            json!({"edu_type": "m.typing", "content": {"typing": true}, "destinations": to}),
            json!({"edu_type": "m.presence", "content": {"push": []}, "destinations": to}),
            json!({"edu_type": "m.receipt", "content": {}, "destinations": to}),
            json!({"edu_type": "m.direct_to_device", "content": {"m": 1}, "destinations": to}),
        ])
        .await;
    assert!(rx.received().transactions.is_empty(), "still in backoff");
    assert_eq!(herald.queue_view(rx.name()).await["state"], "catching_up");
    // The outage ends now: an admin's reset wakes it (the timer's own
    // wake-up is in a_failed_transaction_backs_off_and_is_retried_by_the_timer_with_its_id).
    herald
        .store
        .destinations
        .reset_retry_timings(rx.name(), None)
        .await
        .unwrap();
    wait_for("catch-up", Duration::from_secs(10), || {
        rx.received().event_ids().len() >= 3
    })
    .await;
    // Everything queued has gone (or was dropped): nothing more will come.
    wait_for_queue_empty(&herald, rx.name()).await;
    let received = rx.received();
    // Newest per room, oldest first: a3 (4), c1 (5), b2 (6); one room per
    // transaction.
    assert_eq!(received.event_ids(), ["$a3", "$c1", "$b2"]);
    assert!(received.transactions.iter().all(|t| t.event_ids.len() == 1));
    let edus: Vec<String> = received
        .transactions
        .iter()
        .flat_map(|t| t.edu_types.clone())
        .collect();
    assert_eq!(
        edus,
        ["m.direct_to_device"],
        "presence, typing, receipts dropped"
    );
    wait_for_queue_empty(&herald, rx.name()).await;

    // Caught up: the next events go as usual, all of them.
    herald
        .send(vec![
            event("$a4", "!a:herald.test", &to),
            event("$a5", "!a:herald.test", &to),
        ])
        .await;
    wait_for("normal sending again", Duration::from_secs(10), || {
        rx.received().event_ids().len() == 5
    })
    .await;
    assert_eq!(
        rx.received().event_ids(),
        ["$a3", "$c1", "$b2", "$a4", "$a5"]
    );
    // Its history tells the story, newest first.
    let history = herald
        .herald_admin(&format!("destinations/{}/history", rx.name()))
        .await;
    let events: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "catch_up_left",
            "queue_dropped",
            "reset",
            "catch_up_entered"
        ],
        "{history}"
    );
    assert_eq!(history["entries"][1]["count"], 3, "{history}");
}

async fn whitelist_and_our_own_name_are_skipped(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let allowed = fixture.receiver(Behaviour::healthy()).await;
    let blocked = fixture.receiver(Behaviour::healthy()).await;
    let allowed_name = allowed.name().to_owned();
    let herald = fixture
        .herald(|c| c.federation_domain_whitelist = Some(vec![allowed_name.clone()]))
        .await;
    herald
        .send(vec![event(
            "$w",
            "!r:herald.test",
            &[allowed.name(), blocked.name(), herald.name.as_str()],
        )])
        .await;
    wait_for("the allowed receiver", Duration::from_secs(10), || {
        allowed.received().event_ids() == ["$w"]
    })
    .await;
    assert_stays(
        "nothing goes to a server outside the whitelist",
        Duration::from_millis(300),
        || blocked.received().attempts.is_empty(),
    )
    .await;
    assert!(herald
        .store
        .destinations
        .destination(blocked.name())
        .await
        .unwrap()
        .is_none());
    assert!(herald
        .store
        .destinations
        .destination(&herald.name)
        .await
        .unwrap()
        .is_none());
}

async fn pdus_the_destination_refuses_are_recorded_and_not_retried(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald
        .receiver(Behaviour {
            refuse_event_ids: HashSet::from(["$bad".to_owned()]),
            ..Behaviour::healthy()
        })
        .await;
    herald
        .send(vec![
            event("$ok1", "!r:herald.test", &[rx.name()]),
            event("$bad", "!r:herald.test", &[rx.name()]),
            event("$ok2", "!r:herald.test", &[rx.name()]),
        ])
        .await;
    wait_for("the three PDUs", Duration::from_secs(10), || {
        rx.received().event_ids().len() == 3
    })
    .await;
    wait_for_queue_empty(&herald, rx.name()).await;
    assert_stays("no PDU sent again", Duration::from_millis(300), || {
        rx.received().event_ids() == ["$ok1", "$bad", "$ok2"]
    })
    .await;
    assert_eq!(
        rx.received().event_ids(),
        ["$ok1", "$bad", "$ok2"],
        "sent once"
    );
    // The refusal is the destination's last error; the delivery is recorded.
    let details = herald
        .herald_admin(&format!("destinations/{}", rx.name()))
        .await;
    assert_eq!(details["last_error"]["kind"], "pdu_rejected", "{details}");
    let message = details["last_error"]["message"].as_str().unwrap();
    assert!(message.starts_with("refused 1 of "), "{message}");
    assert!(message.contains("$bad"), "{message}");
    assert!(
        details["last_delivered_ts"].as_i64().unwrap() > 0,
        "{details}"
    );
    assert_eq!(details["status"], "healthy", "{details}");
    let metrics = herald.metrics().await;
    assert!(
        metrics.contains("herald_sender_pdu_errors_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_sender_destinations{state=\"idle\"} 1\n"),
        "{metrics}"
    );
}

async fn catch_up_after_imported_rows_still_delivers_every_room(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    // Copied from Synapse: orderings in the millions, a room it was behind
    // in, and a long backoff ending in a moment.
    herald
        .long_outage_ending_soon(rx.name(), Some(9_000_000))
        .await;
    herald
        .store
        .destinations
        .put_destination_rooms(
            rx.name(),
            &[herald_shared::DestinationRoom {
                room_id: "!imported:synapse.test".into(),
                stream_ordering: 9_100_000,
            }],
        )
        .await
        .unwrap();
    let to = [rx.name()];
    let orderings = herald
        .send(vec![
            event("$x1", "!x:herald.test", &to),
            event("$y1", "!y:herald.test", &to),
            event("$x2", "!x:herald.test", &to),
        ])
        .await;
    assert!(
        orderings[0] > 9_100_000,
        "new orderings start above imported ones: {orderings:?}"
    );
    wait_for("catch-up", Duration::from_secs(10), || {
        rx.received().event_ids().len() >= 2
    })
    .await;
    wait_for_queue_empty(&herald, rx.name()).await;
    assert_eq!(rx.received().event_ids(), ["$y1", "$x2"]);
}

async fn catch_up_does_not_drop_an_old_event_queued_again_in_another_room(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    let other = herald.receiver(Behaviour::healthy()).await;
    // `$old` goes to another server first: it gets an early ordering.
    herald
        .send(vec![event("$old", "!old:herald.test", &[other.name()])])
        .await;
    let first = herald
        .send(vec![event("$n1", "!new:herald.test", &[rx.name()])])
        .await;
    wait_for("$n1", Duration::from_secs(10), || {
        rx.received().event_ids() == ["$n1"]
    })
    .await;
    wait_for_queue_empty(&herald, rx.name()).await;
    // A long outage, ending in a moment.
    herald
        .long_outage_ending_soon(rx.name(), Some(first[0]))
        .await;
    // Meanwhile `$old` is queued for it too (keeping its early ordering),
    // and a new event arrives in the other room.
    herald
        .send(vec![
            event("$old", "!old:herald.test", &[rx.name()]),
            event("$n2", "!new:herald.test", &[rx.name()]),
        ])
        .await;
    wait_for("catch-up and the rest", Duration::from_secs(10), || {
        rx.received().event_ids().len() >= 3
    })
    .await;
    wait_for_queue_empty(&herald, rx.name()).await;
    let got = rx.received().event_ids();
    assert_eq!(
        got,
        ["$n1", "$n2", "$old"],
        "catch-up of !new must not drop !old's event"
    );
}

async fn delivered_events_are_pruned_but_the_newest_of_each_room_stays(backend: Backend) {
    let herald = Herald::start(backend, |_| {}).await;
    let rx = herald.receiver(Behaviour::healthy()).await;
    let down = herald.receiver(Behaviour::healthy()).await;
    down.force_status(Some(500));
    let to = [rx.name()];
    herald
        .send(vec![
            event("$p1", "!a:herald.test", &to),
            event("$p2", "!a:herald.test", &to),
            event("$p3", "!b:herald.test", &to),
            event("$p4", "!a:herald.test", &to),
        ])
        .await;
    wait_for_queue_empty(&herald, rx.name()).await;
    // Still queued for a failing server: kept whatever its room.
    herald
        .send(vec![event("$q1", "!a:herald.test", &[down.name()])])
        .await;
    let pruned = herald
        .store
        .outbox
        .prune_delivered_events(10_000)
        .await
        .unwrap();
    let left = herald
        .fixture
        .db
        .strings("SELECT event_id FROM outgoing_events ORDER BY stream_ordering")
        .await;
    // $p3 and $p4 are the newest of !b and !a for rx; $q1 is queued.
    assert_eq!(left, ["$p3", "$p4", "$q1"], "pruned {pruned}");
    assert_eq!(pruned, 2);
    assert_eq!(
        herald
            .store
            .outbox
            .prune_delivered_events(10_000)
            .await
            .unwrap(),
        0
    );
}

both_backends!(
    delivers_everything_in_order_in_batches_within_the_limits,
    an_event_queued_again_behind_a_long_queue_is_still_sent,
    one_event_reaches_many_destinations,
    a_failed_transaction_backs_off_and_is_retried_by_the_timer_with_its_id,
    reset_connection_wakes_a_destination_in_backoff_at_once,
    a_destination_answering_200_with_a_body_that_is_not_json_backs_off,
    catch_up_sends_the_newest_event_of_each_room_and_drops_volatile_edus,
    whitelist_and_our_own_name_are_skipped,
    pdus_the_destination_refuses_are_recorded_and_not_retried,
    catch_up_after_imported_rows_still_delivers_every_room,
    catch_up_does_not_drop_an_old_event_queued_again_in_another_room,
    delivered_events_are_pruned_but_the_newest_of_each_room_stays,
);
