//! The sender page's figures end to end, in one process: events go in
//! through the intake API over HTTP, Herald delivers them to a simulated
//! homeserver (a real HTTPS server on 127.0.0.1 verifying every request)
//! and keeps another's in its queue while that one answers 500; then
//! `GET /_herald/admin/v1/federation/sender` and `GET /metrics` must show
//! what happened: the rates, the queued counts, the states, the oldest
//! undelivered event's age, the destination with the most queued, and the
//! same figures under Synapse's series names.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald::config::ConfigDuration;
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald_shared::{SenderOverview, SenderState};
use herald_store::Store;
use serde_json::{json, Value};

const TOKEN: &str = "sender-page-secret";

struct Herald {
    name: String,
    base: String,
    http: reqwest::Client,
    cert: LoopbackCert,
    _dir: tempfile::TempDir,
}

impl Herald {
    /// Herald with a TLS federation listener (receivers fetch its key), the
    /// intake API and an admin user.
    async fn start() -> Herald {
        let dir = tempfile::tempdir().unwrap();
        let cert = LoopbackCert::generate(dir.path()).unwrap();
        let db = dir.path().join("herald.db");
        let store = Store::open(&db).await.unwrap();
        let hash = herald::auth::password::hash("admin-password").unwrap();
        store.users.create_user("admin", &hash, true).await.unwrap();
        let (name, base) = common::spawn_sending(&store, db.clone(), &cert, |config, _| {
            config.sender_api_token = Some(TOKEN.into());
            config.destination_min_retry_interval = ConfigDuration(Duration::from_secs(600));
        })
        .await;
        Herald {
            name,
            base,
            http: reqwest::Client::new(),
            cert,
            _dir: dir,
        }
    }

    async fn receiver(&self, behaviour: Behaviour) -> Homeserver {
        Homeserver::start_with_cert(behaviour, &self.cert)
            .await
            .unwrap()
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

    async fn send(&self, ids: &[String], destination: &str) {
        let events: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"event_id": id, "room_id": "!room:herald.test",
                       "pdu": {"event_id": id, "room_id": "!room:herald.test",
                               "type": "m.room.message", "content": {"body": id}},
                       "destinations": [destination]})
            })
            .collect();
        let (status, body) = self
            .post("/_herald/v1/send/pdus", TOKEN, json!({ "events": events }))
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

    async fn overview(&self, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .get(format!("{}/_herald/admin/v1/federation/sender", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
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

/// Polls the sender page (every 50 ms, at most `limit`) until `done`.
async fn overview_until(
    herald: &Herald,
    token: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&SenderOverview) -> bool,
) -> SenderOverview {
    let start = Instant::now();
    loop {
        let (status, body) = herald.overview(Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let overview: SenderOverview = serde_json::from_value(body).unwrap();
        if done(&overview) {
            return overview;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}: {overview:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sender_page_shows_rates_queues_states_and_the_top_destination() {
    let herald = Herald::start().await;
    let healthy = herald.receiver(Behaviour::healthy()).await;
    let failing = herald.receiver(Behaviour::healthy()).await;
    failing.force_status(Some(500));

    // Admin only, with Matrix error bodies.
    let (status, body) = herald.overview(None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    let token = herald.admin_token().await;
    let (status, body) = herald.overview(Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queued_pdus"], 0);
    assert_eq!(body["interval_ms"], 5_000);
    assert_eq!(body["top_destinations"], json!([]));

    let delivered: Vec<String> = (0..30).map(|i| format!("$ok{i}")).collect();
    let stuck: Vec<String> = (0..7).map(|i| format!("$stuck{i}")).collect();
    herald.send(&delivered, healthy.name()).await;
    herald.send(&stuck, failing.name()).await;
    // One EDU for the failing server, so that its queue holds both kinds.
    let (status, body) = herald
        .post(
            "/_herald/v1/send/edus",
            TOKEN,
            json!({"edus": [{"edu_type": "m.typing", "content": {}, "destinations": [failing.name()]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let limit = Duration::from_secs(20);
    let start = Instant::now();
    while healthy.pdu_count() < 30 {
        assert!(start.elapsed() < limit, "30 PDUs not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let overview = overview_until(
        &herald,
        &token,
        "the failing server backing off and the healthy one drained",
        limit,
        |o| o.destinations.backing_off == 1 && o.queued_pdus == 7,
    )
    .await;
    assert_eq!(overview.queued_edus, 1);
    assert_eq!(overview.top_destinations.len(), 1, "{overview:?}");
    let top = &overview.top_destinations[0];
    assert_eq!(top.destination, failing.name());
    assert_eq!((top.queued_pdus, top.queued_edus), (7, 1));
    assert_eq!(top.state, SenderState::BackingOff);
    assert!(overview.oldest_undelivered_age_secs >= 0.0);
    assert!(
        !overview.rates.is_empty() && overview.rates.len() <= 60,
        "{overview:?}"
    );
    // Everything delivered so far happened within the last 20 s: the PDUs
    // per second over the listed intervals add up to the 30 PDUs.
    let pdus: f64 = overview
        .rates
        .iter()
        .map(|r| r.pdus_per_sec * r.duration_ms as f64 / 1000.0)
        .sum();
    assert!((pdus - 30.0).abs() < 0.01, "{pdus} PDUs in {overview:?}");
    let transactions: f64 = overview
        .rates
        .iter()
        .map(|r| r.transactions_per_sec * r.duration_ms as f64 / 1000.0)
        .sum();
    let received = healthy.received().transactions.len() as f64;
    assert!(
        (transactions - received).abs() < 0.01,
        "{transactions} transactions, the receiver got {received}"
    );
    let ends: Vec<i64> = overview.rates.iter().map(|r| r.end_ts).collect();
    assert!(
        ends.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {ends:?}"
    );

    // The oldest undelivered event ages.
    let first_age = overview.oldest_undelivered_age_secs;
    let later = overview_until(&herald, &token, "the age to grow", limit, |o| {
        o.oldest_undelivered_age_secs > first_age
    })
    .await;
    assert_eq!(later.queued_pdus, 7);

    // The same figures under Synapse's names, labelled with our server name.
    let metrics = herald.metrics().await;
    let label = format!("{{server_name=\"{}\"}}", herald.name);
    for line in [
        format!("synapse_federation_transaction_queue_pending_pdus{label} 7\n"),
        format!("synapse_federation_transaction_queue_pending_edus{label} 1\n"),
        format!("synapse_federation_client_sent_pdu_destinations_total{label} 37\n"),
        format!("synapse_federation_client_sent_pdu_destinations_count_total{label} 37\n"),
        format!("synapse_federation_client_sent_transactions_total{label} {received}\n"),
        "herald_intake_requests_total{endpoint=\"pdus\",code=\"200\"} 2\n".to_owned(),
        "herald_intake_requests_total{endpoint=\"edus\",code=\"200\"} 1\n".to_owned(),
        "herald_sender_destinations{state=\"backing_off\"} 1\n".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn refused_pdus_and_edu_types_are_counted_under_their_series() {
    let herald = Herald::start().await;
    let rx = herald
        .receiver(Behaviour {
            refuse_event_ids: HashSet::from(["$bad".to_owned()]),
            ..Behaviour::healthy()
        })
        .await;
    herald
        .send(&["$good".to_owned(), "$bad".to_owned()], rx.name())
        .await;
    let (status, body) = herald
        .post(
            "/_herald/v1/send/edus",
            TOKEN,
            json!({"edus": [
                {"edu_type": "m.typing", "content": {}, "destinations": [rx.name()]},
                {"edu_type": "m.typing", "content": {}, "destinations": [rx.name()]},
                {"edu_type": "org.example.custom", "content": {}, "destinations": [rx.name()]},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A bad intake request is counted with its status.
    let (status, _) = herald
        .post("/_herald/v1/send/pdus", TOKEN, json!({"events": "no"}))
        .await;
    assert_eq!(status, 400);

    let label = format!("server_name=\"{}\"", herald.name);
    let expected = [
        "herald_federation_failures_total{kind=\"pdu_rejected\"} 1\n".to_owned(),
        format!(
            "synapse_federation_client_sent_edus_by_type_total{{{label},type=\"m.typing\"}} 2\n"
        ),
        format!("synapse_federation_client_sent_edus_by_type_total{{{label},type=\"other\"}} 1\n"),
        format!("synapse_federation_client_sent_edus_total{{{label}}} 3\n"),
        "herald_intake_requests_total{endpoint=\"pdus\",code=\"400\"} 1\n".to_owned(),
    ];
    let start = Instant::now();
    loop {
        let metrics = herald.metrics().await;
        if expected.iter().all(|line| metrics.contains(line.as_str())) {
            // Every failure kind is there from the start, at 0 if unseen.
            for kind in herald_shared::FailureKind::ALL {
                assert!(
                    metrics.contains(&format!(
                        "herald_federation_failures_total{{kind=\"{}\"}} ",
                        kind.as_str()
                    )),
                    "{metrics}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out; expected {expected:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
