//! On PostgreSQL the PDU queue has no foreign keys (migration 0008): the
//! locks that replace them, checked against a second connection that holds
//! a lock the way a concurrent forget or intake does, at the moment that
//! used to need the keys.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use common::{event, Backend, TestDb};
use herald_store::delivery::Delivery;
use herald_store::DatabaseTarget;
use sqlx::{Connection, PgConnection};

fn url(db: &TestDb) -> String {
    match &db.target {
        DatabaseTarget::Postgres(url) => url.clone(),
        DatabaseTarget::Sqlite(_) => unreachable!("these tests run on PostgreSQL"),
    }
}

/// Waits (at most 10 s) until a session of the test's database waits for a
/// lock: the store's statement has reached the row the other connection
/// holds.
async fn until_a_session_waits_for_a_lock(db: &TestDb) {
    let started = Instant::now();
    loop {
        let waiting = db
            .i64s(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        if waiting[0] > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no session waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No queue row names a destination or an event that is gone (what the
/// foreign keys would have refused).
async fn assert_no_orphans(db: &TestDb) {
    let orphans = db
        .strings(
            "SELECT p.destination || ' ' || p.stream_ordering FROM destination_pdus p \
             WHERE NOT EXISTS (SELECT 1 FROM destinations d WHERE d.destination = p.destination) \
             OR NOT EXISTS (SELECT 1 FROM outgoing_events e \
             WHERE e.stream_ordering = p.stream_ordering)",
        )
        .await;
    assert!(orphans.is_empty(), "queue rows naming nothing: {orphans:?}");
}

/// The event IDs queued for `destination`, in queue order.
async fn queued_ids(store: &herald_store::Store, destination: &str) -> Vec<String> {
    let queued = store.outbox.pending_pdus(destination, 10).await.unwrap();
    queued.into_iter().map(|p| p.event_id).collect()
}

/// A connection of the test's own that has run `sql` (which begins a
/// transaction and takes a lock) and holds what it took.
async fn holding(db: &TestDb, sql: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&url(db)).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn
}

/// `$a` and then `$b`, of one room, queued for `d.example` and delivered:
/// their orderings. `$a` is prunable, `$b` is the room's newest.
async fn two_delivered_events(store: &herald_store::Store) -> Vec<i64> {
    let o = store
        .outbox
        .enqueue_pdus(vec![
            event("$a", "!r:x", &["d.example"]),
            event("$b", "!r:x", &["d.example"]),
        ])
        .await
        .unwrap();
    store
        .outbox
        .record_delivery(Delivery {
            destination: "d.example".into(),
            pdus: o.clone(),
            ..Delivery::default()
        })
        .await
        .unwrap();
    o
}

/// A forget that holds the destination's row when an intake queues for it,
/// and commits (deleting the row and its queue) while the intake waits: the
/// intake's events are queued for a destination row of their own, never for
/// a row that is gone.
#[tokio::test]
async fn an_intake_waiting_behind_a_forget_queues_for_the_destination_anew() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    store
        .outbox
        .enqueue_pdus(vec![event("$old", "!r:x", &["d.example"])])
        .await
        .unwrap();
    // The statements `Destinations::forget` runs, paused before its deletes.
    let mut forget = holding(
        &db,
        "BEGIN; SELECT 1 FROM destinations WHERE destination = 'd.example' FOR UPDATE",
    )
    .await;
    let outbox = store.outbox.clone();
    let intake = tokio::spawn(async move {
        outbox
            .enqueue_pdus(vec![event("$new", "!r:x", &["d.example"])])
            .await
    });
    until_a_session_waits_for_a_lock(&db).await;
    sqlx::raw_sql(
        "DELETE FROM destination_rooms WHERE destination = 'd.example'; \
         DELETE FROM destination_pdus WHERE destination = 'd.example'; \
         DELETE FROM destination_health WHERE destination = 'd.example'; \
         DELETE FROM destinations WHERE destination = 'd.example'; COMMIT",
    )
    .execute(&mut forget)
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), intake)
        .await
        .expect("the intake finished once the forget committed")
        .unwrap()
        .unwrap();
    assert_eq!(
        db.strings("SELECT destination FROM destinations").await,
        ["d.example"]
    );
    assert_eq!(queued_ids(&store, "d.example").await, ["$new"]);
    assert_no_orphans(&db).await;
    store.close().await;
}

/// Pruning beside an intake that is queuing a delivered event again (it
/// holds the event `FOR SHARE`): the event is skipped, not waited for and
/// then deleted under the queue row the intake commits.
#[tokio::test]
async fn pruning_skips_an_event_an_intake_is_queuing_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let o = two_delivered_events(&store).await;
    // What the intake's `stored_events` does for an event it queues again.
    let mut intake = holding(
        &db,
        "BEGIN; SELECT 1 FROM outgoing_events WHERE event_id = '$a' FOR SHARE",
    )
    .await;
    let pruned = tokio::time::timeout(
        Duration::from_secs(10),
        store.outbox.prune_delivered_events(100),
    )
    .await
    .expect("pruning does not wait for the intake's lock")
    .unwrap();
    assert_eq!(pruned, 0, "$b is its room's newest event; $a is locked");
    sqlx::raw_sql(&format!(
        "INSERT INTO destination_pdus (destination, stream_ordering) VALUES ('d.example', {}); COMMIT",
        o[0]
    ))
    .execute(&mut intake)
    .await
    .unwrap();
    assert_eq!(store.outbox.prune_delivered_events(100).await.unwrap(), 0);
    assert_eq!(queued_ids(&store, "d.example").await, ["$a"]);
    // Delivered again, it goes.
    store
        .outbox
        .record_delivery(Delivery {
            destination: "d.example".into(),
            pdus: vec![o[0]],
            ..Delivery::default()
        })
        .await
        .unwrap();
    assert_eq!(store.outbox.prune_delivered_events(100).await.unwrap(), 1);
    assert_eq!(
        db.strings("SELECT event_id FROM outgoing_events").await,
        ["$b"]
    );
    assert_no_orphans(&db).await;
    store.close().await;
}

/// An intake queuing a delivered event again while pruning holds it (`FOR
/// UPDATE`, its first statement) and then deletes it: the intake waits,
/// finds the event gone, and stores it anew under a new ordering.
#[tokio::test]
async fn an_intake_waiting_behind_pruning_stores_the_event_anew() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let o = two_delivered_events(&store).await;
    // What `prune_delivered_events` does, paused between its statements.
    let mut prune = holding(
        &db,
        "BEGIN; SELECT 1 FROM outgoing_events WHERE event_id = '$a' FOR UPDATE",
    )
    .await;
    let outbox = store.outbox.clone();
    let intake = tokio::spawn(async move {
        outbox
            .enqueue_pdus(vec![event("$a", "!r:x", &["e.example"])])
            .await
    });
    until_a_session_waits_for_a_lock(&db).await;
    sqlx::raw_sql("DELETE FROM outgoing_events WHERE event_id = '$a'; COMMIT")
        .execute(&mut prune)
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), intake)
        .await
        .expect("the intake finished once pruning committed")
        .unwrap()
        .unwrap();
    assert!(again[0] > o[1], "a new ordering: {again:?} after {o:?}");
    assert_eq!(queued_ids(&store, "e.example").await, ["$a"]);
    assert_no_orphans(&db).await;
    store.close().await;
}
