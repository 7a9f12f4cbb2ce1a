//! What the sender page reads from the queue tables of a real SQLite file:
//! the totals over all destinations and the destinations with the most
//! queued, which follow what is queued and what is delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

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

#[tokio::test]
async fn totals_and_the_top_destinations_follow_the_queues() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("herald.db")).await.unwrap();
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
