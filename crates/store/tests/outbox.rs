//! The outbox's group commit against a real SQLite file: stream orderings
//! in request order, an event queued again keeping its ordering, and an
//! event ID refused in another room with nothing of its request stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{event, Backend, TestDb};

use herald_store::OutboxError;

async fn an_event_queued_again_keeps_its_ordering_and_new_ones_follow_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let first = store
        .outbox
        .enqueue_pdus(vec![event("$old", "!old:x", &["a.example"])])
        .await
        .unwrap();
    let again = store
        .outbox
        .enqueue_pdus(vec![
            event("$n1", "!new:x", &["b.example"]),
            event("$old", "!old:x", &["b.example"]),
            event("$n2", "!new:x", &["b.example", "a.example"]),
        ])
        .await
        .unwrap();
    assert_eq!(again[1], first[0]);
    assert!(
        first[0] < again[0] && again[0] < again[2],
        "{first:?} {again:?}"
    );
    let queued = store.outbox.pending_pdus("b.example", 10).await.unwrap();
    let ids: Vec<&str> = queued.iter().map(|p| p.event_id.as_str()).collect();
    assert_eq!(ids, ["$old", "$n1", "$n2"]);
    let refused = store
        .outbox
        .enqueue_pdus(vec![
            event("$n3", "!new:x", &["c.example"]),
            event("$old", "!elsewhere:x", &["c.example"]),
        ])
        .await;
    assert!(
        matches!(&refused, Err(OutboxError::EventInAnotherRoom { event_id, room_id })
            if event_id == "$old" && room_id == "!old:x"),
        "{refused:?}"
    );
    assert!(store
        .outbox
        .pending_pdus("c.example", 10)
        .await
        .unwrap()
        .is_empty());
}

async fn an_event_twice_in_one_request_is_stored_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let got = store
        .outbox
        .enqueue_pdus(vec![
            event("$twice", "!r:x", &["a.example"]),
            event("$other", "!r:x", &["a.example"]),
            event("$twice", "!r:x", &["b.example"]),
        ])
        .await
        .unwrap();
    assert_eq!(got[0], got[2]);
    assert!(got[0] < got[1]);
    for destination in ["a.example", "b.example"] {
        let queued = store.outbox.pending_pdus(destination, 10).await.unwrap();
        assert_eq!(queued[0].event_id, "$twice", "{destination}");
        assert!(queued[0].canonical);
    }
    let refused = store
        .outbox
        .enqueue_pdus(vec![
            event("$new", "!r:x", &["c.example"]),
            event("$new", "!s:x", &["c.example"]),
        ])
        .await;
    assert!(
        matches!(refused, Err(OutboxError::EventInAnotherRoom { .. })),
        "{refused:?}"
    );
    assert!(store
        .outbox
        .pending_pdus("c.example", 10)
        .await
        .unwrap()
        .is_empty());
}

both_backends!(
    an_event_queued_again_keeps_its_ordering_and_new_ones_follow_in_order,
    an_event_twice_in_one_request_is_stored_once,
);

/// Two instances on one PostgreSQL take in the same events at the same
/// moment (a client retrying through another instance): each request is
/// answered with the one stream ordering per event, or, for an event given
/// with another room, refused with nothing of its request stored — never an
/// error. Requests list the events in opposite orders, so the two inserts
/// wait on each other (a deadlock PostgreSQL breaks is run again).
#[tokio::test]
async fn two_stores_taking_in_the_same_events_at_once_agree() {
    let db = TestDb::new(Backend::Postgres).await;
    let one = db.open().await;
    let two = db.open().await;
    for round in 0..30 {
        let ids: Vec<String> = (0..20).map(|i| format!("$r{round}e{i}")).collect();
        let forward: Vec<_> = ids
            .iter()
            .map(|id| event(id, "!r:x", &["a.example"]))
            .collect();
        let mut backward: Vec<_> = ids
            .iter()
            .map(|id| event(id, "!r:x", &["b.example"]))
            .collect();
        backward.reverse();
        let (a, b) = tokio::join!(
            one.outbox.enqueue_pdus(forward),
            two.outbox.enqueue_pdus(backward)
        );
        let (a, mut b) = (a.unwrap(), b.unwrap());
        b.reverse();
        assert_eq!(a, b, "round {round}: one ordering per event");
        // The same event with another room, at once through both: the
        // request with the other room is refused, and stores nothing.
        let id = format!("$r{round}clash");
        let fresh = format!("$r{round}fresh");
        let (a, b) = tokio::join!(
            one.outbox
                .enqueue_pdus(vec![event(&id, "!r:x", &["c.example"])]),
            two.outbox.enqueue_pdus(vec![
                event(&fresh, "!other:x", &["d.example"]),
                event(&id, "!other:x", &["d.example"]),
            ])
        );
        match (&a, &b) {
            (Ok(_), Err(OutboxError::EventInAnotherRoom { .. }))
            | (Err(OutboxError::EventInAnotherRoom { .. }), Ok(_)) => {}
            other => panic!("round {round}: {other:?}"),
        }
        if b.is_err() {
            let stored = one
                .outbox
                .stored_event_rooms([fresh.as_str()])
                .await
                .unwrap();
            assert!(stored.is_empty(), "round {round}: {stored:?} stored");
        }
    }
    one.close().await;
    two.close().await;
}
