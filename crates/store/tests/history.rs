//! A destination's history on a real SQLite file and on PostgreSQL: outages open, count and
//! close (also across a restart), and the bounds hold — the newest 200
//! entries per destination, nothing older than 90 days — without ever
//! dropping an outage still open.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{Backend, TestDb};

use herald_shared::{Failure, FailureKind, HistoryEvent};
use herald_store::history::{NewEntry, MAX_AGE_MS, MAX_ENTRIES_PER_DESTINATION};
use herald_store::Store;

fn failure() -> Failure {
    Failure::new(FailureKind::Connect, "refused", Some("127.0.0.1:1".into()))
}

async fn events(store: &Store, name: &str) -> Vec<HistoryEvent> {
    let page = store.destinations.history(name, None, 200).await.unwrap();
    page.map(|p| p.entries.iter().map(|e| e.event).collect())
        .unwrap_or_default()
}

async fn an_open_outage_survives_a_restart_and_closes_on_success(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store
        .destinations
        .record_failure("a.test", &failure(), true)
        .await
        .unwrap();
    store.close().await;
    let store = db.open().await;
    store
        .destinations
        .record_failure("a.test", &failure(), false)
        .await
        .unwrap();
    store.destinations.record_success("a.test").await.unwrap();
    store.destinations.record_success("a.test").await.unwrap();
    let page = store
        .destinations
        .history("a.test", None, 10)
        .await
        .unwrap()
        .unwrap();
    let got: Vec<_> = page.entries.iter().map(|e| (e.event, e.count)).collect();
    assert_eq!(
        got,
        [
            (HistoryEvent::Recovered, None),
            (HistoryEvent::Failing, Some(2))
        ]
    );
    // A failure that does not count opens nothing.
    store
        .destinations
        .record_failure("b.test", &failure(), false)
        .await
        .unwrap();
    assert!(events(&store, "b.test").await.is_empty());
}

async fn each_destination_keeps_its_newest_entries_and_its_open_outage(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store
        .destinations
        .record_failure("a.test", &failure(), true)
        .await
        .unwrap();
    let extra = 30;
    for i in 0..(MAX_ENTRIES_PER_DESTINATION + extra) {
        let entry = NewEntry {
            count: Some(i),
            ..NewEntry::default()
        };
        store
            .destinations
            .add_history("a.test", HistoryEvent::QueueDropped, entry)
            .await
            .unwrap();
    }
    let page = store
        .destinations
        .history("a.test", None, 200)
        .await
        .unwrap()
        .unwrap();
    let older = store
        .destinations
        .history(
            "a.test",
            page.next_token.as_deref().map(|t| t.parse().unwrap()),
            200,
        )
        .await
        .unwrap()
        .unwrap();
    let all: Vec<_> = page.entries.iter().chain(&older.entries).collect();
    // The newest 200 plus the open outage, the oldest entry of all.
    assert_eq!(all.len() as i64, MAX_ENTRIES_PER_DESTINATION + 1);
    assert_eq!(all[0].count, Some(MAX_ENTRIES_PER_DESTINATION + extra - 1));
    assert_eq!(all.last().unwrap().event, HistoryEvent::Failing);
}

async fn pruning_removes_entries_past_90_days_but_not_an_open_outage(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    for name in ["old.test", "open.test"] {
        store
            .destinations
            .record_failure(name, &failure(), true)
            .await
            .unwrap();
    }
    store.destinations.record_success("old.test").await.unwrap();
    store
        .destinations
        .add_history("new.test", HistoryEvent::Reset, NewEntry::default())
        .await
        .unwrap();
    // Age the first three entries past the bound, as an admin's sqlite3 or
    // psql could.
    let old = herald_store::now_ms() - MAX_AGE_MS - 1_000;
    db.execute(&format!(
        "UPDATE destination_history SET ts = {old}, last_ts = {old} \
         WHERE destination != 'new.test'"
    ))
    .await;
    let removed = store.destinations.prune_history(1_000).await.unwrap();
    assert_eq!(removed, 2, "old.test's outage and its recovery");
    assert!(events(&store, "old.test").await.is_empty());
    assert_eq!(events(&store, "open.test").await, [HistoryEvent::Failing]);
    assert_eq!(events(&store, "new.test").await, [HistoryEvent::Reset]);
    assert_eq!(store.destinations.prune_history(1_000).await.unwrap(), 0);
}

both_backends!(
    an_open_outage_survives_a_restart_and_closes_on_success,
    each_destination_keeps_its_newest_entries_and_its_open_outage,
    pruning_removes_entries_past_90_days_but_not_an_open_outage,
);
