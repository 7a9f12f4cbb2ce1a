//! What the sender reads and records, on a real SQLite file and on
//! PostgreSQL with the same code: EDUs in arrival order, catch-up and
//! superseded PDUs, dropped queues, transaction-ID blocks that keep growing
//! across a reopen, stream orderings above imported rows, pruning, forget
//! and each destination's last error and delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{event, Backend, TestDb};
use herald_shared::{DestinationRoom, Failure, FailureKind};
use herald_store::delivery::{Delivery, Superseded};
use herald_store::{DestinationRow, NewEdu};

fn edu(edu_type: &str, content: &str, destinations: &[&str]) -> NewEdu {
    NewEdu {
        edu_type: edu_type.into(),
        content_json: content.into(),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

async fn queues_edus_in_order_and_drops_the_volatile_ones(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store
        .outbox
        .enqueue_edus(vec![
            edu("m.typing", r#"{"n":1}"#, &["a.example", "b.example"]),
            edu("m.direct_to_device", r#"{"n":2}"#, &["a.example"]),
            edu("m.presence", r#"{"n":3}"#, &["a.example"]),
        ])
        .await
        .unwrap();
    let queued = store.outbox.pending_edus("a.example", 10).await.unwrap();
    let contents: Vec<&str> = queued.iter().map(|e| e.content_json.as_str()).collect();
    assert_eq!(contents, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    assert!(queued.windows(2).all(|w| w[0].id < w[1].id));
    assert!(queued.iter().all(|e| e.canonical));
    let up_to = store
        .outbox
        .pending_edus_up_to("a.example", 10, queued[1].id)
        .await
        .unwrap();
    assert_eq!(up_to.len(), 2);
    assert_eq!(
        store.outbox.drop_volatile_edus("a.example").await.unwrap(),
        2
    );
    let left = store.outbox.pending_edus("a.example", 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].edu_type, "m.direct_to_device");
    store
        .outbox
        .record_delivery(Delivery {
            destination: "a.example".into(),
            edus: vec![left[0].id],
            ..Delivery::default()
        })
        .await
        .unwrap();
    assert!(store
        .outbox
        .pending_edus("a.example", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.outbox.destinations_with_pending().await.unwrap(),
        ["b.example"]
    );
    assert_eq!(store.outbox.drop_all_queued("b.example").await.unwrap(), 1);
    assert!(store
        .outbox
        .destinations_with_pending()
        .await
        .unwrap()
        .is_empty());
    store.close().await;
}

async fn catch_up_supersedes_a_rooms_older_pdus(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let o = store
        .outbox
        .enqueue_pdus(vec![
            event("$r1", "!r:x", &["a.example"]),
            event("$s1", "!s:x", &["a.example"]),
            event("$r2", "!r:x", &["a.example"]),
        ])
        .await
        .unwrap();
    let counts = store.outbox.queued_counts("a.example").await.unwrap();
    assert_eq!((counts.pdus, counts.edus), (3, 0));
    assert!(counts.oldest_pdu_ts.is_some());
    assert_eq!(
        store.outbox.oldest_undelivered_ts().await.unwrap(),
        counts.oldest_pdu_ts
    );
    // The newest event of each room, oldest first.
    let catch_up = store
        .outbox
        .catch_up_events("a.example", 0, 10)
        .await
        .unwrap();
    let got: Vec<(i64, &str)> = catch_up
        .iter()
        .map(|c| (c.stream_ordering, c.room_id.as_str()))
        .collect();
    assert_eq!(got, [(o[1], "!s:x"), (o[2], "!r:x")]);
    assert_eq!(catch_up[1].pdu.as_ref().unwrap().event_id, "$r2");
    store
        .outbox
        .record_delivery(Delivery {
            destination: "a.example".into(),
            superseded: Some(Superseded {
                room_id: "!r:x".into(),
                up_to: o[2],
            }),
            ..Delivery::default()
        })
        .await
        .unwrap();
    let left = store.outbox.pending_pdus("a.example", 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_id, "$s1");
    assert_eq!(
        store
            .destinations
            .indexed("a.example")
            .unwrap()
            .last_successful_stream_ordering,
        Some(o[2])
    );
    // Dropped undelivered: the ordering does not move.
    store
        .outbox
        .drop_queued("a.example", &[o[1]], &[])
        .await
        .unwrap();
    assert!(store
        .outbox
        .pending_pdus("a.example", 10)
        .await
        .unwrap()
        .is_empty());
    let row = store.destinations.destination("a.example").await.unwrap();
    assert_eq!(row.unwrap().last_successful_stream_ordering, Some(o[2]));
    // Nothing is queued: only each room's newest event stays.
    assert_eq!(store.outbox.prune_delivered_events(100).await.unwrap(), 1);
    assert_eq!(store.outbox.prune_delivered_events(100).await.unwrap(), 0);
    store.close().await;
}

async fn transaction_ids_and_orderings_keep_growing_across_a_reopen(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let first = store.outbox.reserve_txn_ids(100).await.unwrap();
    let second = store.outbox.reserve_txn_ids(100).await.unwrap();
    assert_eq!(second, first + 100);
    // Rows imported with orderings far ahead: new events come after them.
    store
        .destinations
        .put_destinations(&[DestinationRow::new(
            "imported.example",
            None,
            None,
            None,
            Some(5_000),
        )])
        .await
        .unwrap();
    store
        .destinations
        .put_destination_rooms(
            "rooms.example",
            &[DestinationRoom {
                room_id: "!old:x".into(),
                stream_ordering: 7_000,
            }],
        )
        .await
        .unwrap();
    let o = store
        .outbox
        .enqueue_pdus(vec![event("$e", "!r:x", &["a.example"])])
        .await
        .unwrap();
    assert!(o[0] > 7_000, "{o:?}");
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.outbox.reserve_txn_ids(1).await.unwrap(), second + 100);
    let again = store
        .outbox
        .enqueue_pdus(vec![event("$f", "!r:x", &["a.example"])])
        .await
        .unwrap();
    assert!(again[0] > o[0]);
    store.close().await;
}

async fn forget_removes_a_destination_and_keeps_its_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store
        .outbox
        .enqueue_pdus(vec![
            event("$1", "!r:x", &["gone.example", "kept.example"]),
            event("$2", "!s:x", &["gone.example"]),
        ])
        .await
        .unwrap();
    store
        .outbox
        .enqueue_edus(vec![edu("m.typing", "{}", &["gone.example"])])
        .await
        .unwrap();
    let failure = Failure::new(
        FailureKind::Tls,
        "bad certificate",
        Some("127.0.0.1:1".into()),
    );
    store
        .destinations
        .record_failure("gone.example", &failure, true)
        .await
        .unwrap();
    let names = vec!["gone.example".to_owned(), "kept.example".to_owned()];
    let extras = store.destinations.extras(&names).await.unwrap();
    let last = extras["gone.example"].last_error.as_ref().unwrap();
    assert_eq!(
        (last.kind, last.message.as_str()),
        (FailureKind::Tls, "bad certificate")
    );
    assert!(!extras.contains_key("kept.example"));

    let forgotten = store
        .destinations
        .forget("gone.example", Some("@admin:x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            forgotten.rooms,
            forgotten.queued_pdus,
            forgotten.queued_edus
        ),
        (2, 2, 1)
    );
    assert!(store.destinations.indexed("gone.example").is_none());
    assert!(store
        .destinations
        .forget("gone.example", None)
        .await
        .unwrap()
        .is_none());
    assert!(store.destinations.extras(&names).await.unwrap().is_empty());
    let history = store
        .destinations
        .history("gone.example", None, 10)
        .await
        .unwrap()
        .unwrap();
    let events: Vec<_> = history.entries.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["forgotten", "failing"]);
    assert_eq!(history.entries[0].actor.as_deref(), Some("@admin:x"));
    assert_eq!(
        store
            .outbox
            .pending_pdus("kept.example", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
}

both_backends!(
    queues_edus_in_order_and_drops_the_volatile_ones,
    catch_up_supersedes_a_rooms_older_pdus,
    transaction_ids_and_orderings_keep_growing_across_a_reopen,
    forget_removes_a_destination_and_keeps_its_history,
);
