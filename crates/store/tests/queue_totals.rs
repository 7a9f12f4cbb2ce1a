//! What the sender page reads from the queue tables of a real SQLite file:
//! the totals over all destinations and the destinations with the most
//! queued, which follow what is queued and what is delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{Backend, TestDb};

use herald_store::delivery::{Delivery, QueueTotals, QueuedDestination};
use herald_store::{NewEdu, NewEvent, Store};

fn event(id: &str, destinations: &[&str]) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        room_id: "!r:x".into(),
        pdu_json: format!(r#"{{"event_id":"{id}"}}"#),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn edu(destinations: &[&str]) -> NewEdu {
    NewEdu {
        edu_type: "m.typing".into(),
        content_json: "{}".into(),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn top(name: &str, pdus: u64, edus: u64) -> QueuedDestination {
    QueuedDestination {
        destination: name.into(),
        pdus,
        edus,
    }
}

async fn totals_and_the_top_destinations_follow_the_queues(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert_eq!(
        store.outbox.queue_totals().await.unwrap(),
        QueueTotals::default()
    );
    assert!(store.outbox.top_queued(10).await.unwrap().is_empty());

    let orderings = store
        .outbox
        .enqueue_pdus(vec![
            event("$1", &["a.example", "b.example", "c.example"]),
            event("$2", &["b.example", "c.example"]),
            event("$3", &["c.example"]),
        ])
        .await
        .unwrap();
    store
        .outbox
        .enqueue_edus(vec![edu(&["a.example"]), edu(&["a.example", "d.example"])])
        .await
        .unwrap();
    assert_eq!(
        store.outbox.queue_totals().await.unwrap(),
        QueueTotals { pdus: 6, edus: 3 }
    );
    // c: 3, a: 1 + 2, b: 2, d: 1 — ties by name.
    assert_eq!(
        store.outbox.top_queued(10).await.unwrap(),
        [
            top("a.example", 1, 2),
            top("c.example", 3, 0),
            top("b.example", 2, 0),
            top("d.example", 0, 1),
        ]
    );
    assert_eq!(
        store.outbox.top_queued(2).await.unwrap(),
        [top("a.example", 1, 2), top("c.example", 3, 0)],
        "bounded by the limit"
    );

    // c acknowledges everything it was sent: it leaves the list.
    store
        .outbox
        .record_delivery(Delivery {
            destination: "c.example".into(),
            pdus: orderings.clone(),
            ..Delivery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.outbox.queue_totals().await.unwrap(),
        QueueTotals { pdus: 3, edus: 3 }
    );
    assert_eq!(
        store.outbox.top_queued(10).await.unwrap(),
        [
            top("a.example", 1, 2),
            top("b.example", 2, 0),
            top("d.example", 0, 1),
        ]
    );
}

/// What the sender page's two queries cost with 1,000,000 PDUs queued for
/// 1,000 destinations (100,000 events × 10 destinations) and 100,000 EDUs:
/// `cargo test --release -p herald-store --test queue_totals -- --ignored
/// --nocapture`. The rows are written with the test's own connection to the
/// file (generated in SQL), then read through the store.
#[tokio::test]
#[ignore = "a measurement: a million rows"]
async fn the_sender_page_queries_at_a_million_queued_pdus() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    drop(Store::open(&path).await.unwrap());
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    for sql in [
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999) \
         INSERT INTO destinations (destination) SELECT 'd' || i || '.example' FROM n",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         INSERT INTO outgoing_events (stream_ordering, event_id, room_id, json, received_ts) \
         SELECT i, '$e' || i, '!r' || (i % 100) || ':x', '{}', 1000 + i FROM n",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000), \
         k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < 9) \
         INSERT INTO destination_pdus (destination, stream_ordering) \
         SELECT 'd' || ((i * 7 + j * 101) % 1000) || '.example', i FROM n, k",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         INSERT INTO destination_edus (destination, edu_type, content, received_ts) \
         SELECT 'd' || (i % 1000) || '.example', 'm.typing', '{}', i FROM n",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    drop(conn);
    let store = Store::open(&path).await.unwrap();
    let totals = store.outbox.queue_totals().await.unwrap();
    assert_eq!(totals.edus, 100_000);
    assert!(totals.pdus > 900_000, "{totals:?}");
    for round in 0..3 {
        let start = Instant::now();
        let totals = store.outbox.queue_totals().await.unwrap();
        let counted = start.elapsed();
        let start = Instant::now();
        let top = store.outbox.top_queued(10).await.unwrap();
        let ranked = start.elapsed();
        assert_eq!(top.len(), 10);
        println!(
            "round {round}: queue_totals {counted:?} ({} PDUs, {} EDUs); top_queued(10) {ranked:?} (first {:?})",
            totals.pdus, totals.edus, top[0]
        );
    }
}

both_backends!(totals_and_the_top_destinations_follow_the_queues,);
