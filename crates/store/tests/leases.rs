//! Shard leases on one PostgreSQL database: two instances split the 256
//! shards between them without ever holding one shard both, a lease that
//! lapsed is lost (not renewed) and free for another, released shards are
//! free at once, an instance that leaves frees everything and is no longer
//! live; the instances listing says who holds what. On SQLite the
//! one server holds everything and nothing is written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::{Backend, TestDb};
use herald_store::{ShardSet, SHARDS};

const LEASE_MS: i64 = 5_000;

#[tokio::test]
async fn two_instances_split_the_shards_without_overlap() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let leases = &store.leases;
    assert!(leases.is_shared());

    // Alone, `a` takes everything.
    let a = leases.tick("a", 1, LEASE_MS).await.unwrap();
    assert_eq!((a.held.len(), a.target), (256, 256));
    // `b` joins: its share is half, but nothing is free yet.
    let b = leases.tick("b", 2, LEASE_MS).await.unwrap();
    assert_eq!((b.held.len(), b.target), (0, 128));
    assert_eq!(b.live, vec!["a".to_owned(), "b".into()]);
    // `a` renews everything, sees its share is half, gives the rest up.
    let a = leases.tick("a", 1, LEASE_MS).await.unwrap();
    assert_eq!((a.held.len(), a.target), (256, 128));
    let excess: ShardSet = a.held.iter().skip(128).collect();
    leases.release("a", &excess).await.unwrap();
    let b = leases.tick("b", 2, LEASE_MS).await.unwrap();
    assert_eq!(b.held.len(), 128);
    let a = leases.tick("a", 1, LEASE_MS).await.unwrap();
    assert_eq!(a.held.len(), 128);
    assert!(a.held.minus(&b.held) == a.held, "no shard held by both");

    let rows = leases.instances("a", 1, LEASE_MS).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.live && r.shard_count == 128));

    // `a` stops cleanly: not live any more, its shards free for `b` at once.
    leases.leave("a").await.unwrap();
    let b = leases.tick("b", 2, LEASE_MS).await.unwrap();
    assert_eq!((b.held.len(), b.live.clone()), (256, vec!["b".to_owned()]));
    let rows = leases.instances("b", 2, LEASE_MS).await.unwrap();
    assert!(!rows[0].live && rows[0].shard_count == 0, "{rows:?}");
    store.close().await;
}

#[tokio::test]
async fn a_lapsed_lease_is_lost_and_another_instance_claims_it() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let leases = &store.leases;
    let short = 300;
    assert_eq!(leases.tick("a", 1, short).await.unwrap().held.len(), 256);
    // `a` misses its renewals past the lease: its heartbeat is stale too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let b = loop {
        let b = leases.tick("b", 2, short).await.unwrap();
        if b.held.len() == usize::from(SHARDS) || std::time::Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(b.held.len(), 256, "b claimed every lapsed shard");
    // `a` comes back: nothing of its old leases is renewed.
    let a = leases.tick("a", 1, LEASE_MS).await.unwrap();
    assert!(a.held.is_empty(), "{:?}", a.held);
    store.close().await;
}

#[tokio::test]
async fn on_sqlite_the_one_server_holds_every_shard() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    assert!(!store.leases.is_shared());
    let tick = store.leases.tick("main", 1, LEASE_MS).await.unwrap();
    assert_eq!(tick.held, ShardSet::all());
    assert_eq!(
        db.i64s("SELECT COUNT(*) FROM herald_shards").await,
        vec![256]
    );
    store.close().await;
}

/// Two instances (two stores, two pools) reserving transaction IDs at the
/// same time get disjoint blocks: a receiver never sees one ID twice.
#[tokio::test]
async fn transaction_id_blocks_are_disjoint_across_instances() {
    let db = TestDb::new(Backend::Postgres).await;
    let (one, two) = (db.open().await, db.open().await);
    let reserve = |store: herald_store::Store| async move {
        let mut starts = Vec::new();
        for _ in 0..50 {
            starts.push(store.outbox.reserve_txn_ids(10).await.unwrap());
        }
        store.close().await;
        starts
    };
    let (a, b) = tokio::join!(
        tokio::spawn(reserve(one.clone())),
        tokio::spawn(reserve(two.clone()))
    );
    let mut ids: Vec<i64> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .flat_map(|start| start..start + 10)
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "an ID was handed out twice");
}

/// The catch-up's reads: the marks move with what is queued, and the
/// destinations queued after given marks are those of the newer rows only.
async fn what_was_queued_lately_is_read_by_range(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let outbox = &store.outbox;
    assert_eq!(outbox.queue_marks().await.unwrap(), (0, 0));
    let first = outbox
        .enqueue_pdus(vec![common::event("$1", "!r:x", &["old.example"])])
        .await
        .unwrap();
    let (pdus, edus) = outbox.queue_marks().await.unwrap();
    assert_eq!((pdus, edus), (first[0], 0));
    outbox
        .enqueue_pdus(vec![common::event("$2", "!r:x", &["new.example"])])
        .await
        .unwrap();
    outbox
        .enqueue_edus(vec![herald_store::NewEdu {
            edu_type: "m.typing".into(),
            content_json: "{}".into(),
            destinations: vec!["edu.example".into()],
        }])
        .await
        .unwrap();
    let mut lately = outbox.destinations_queued_after(pdus, edus).await.unwrap();
    lately.sort();
    assert_eq!(lately, vec!["edu.example", "new.example"]);
    let mut all = outbox.destinations_with_pending().await.unwrap();
    all.sort();
    assert_eq!(all, vec!["edu.example", "new.example", "old.example"]);
    assert!(outbox.queue_marks().await.unwrap() > (pdus, edus));
    store.close().await;
}

both_backends!(what_was_queued_lately_is_read_by_range);
