//! The destinations index as `Store::open` loads it from a real SQLite file
//! (rusqlite, straight into the arena) or from PostgreSQL (streamed): after a reopen, every row with its
//! NULLs, every sort order and each destination's room count (from the
//! intake, from `put_destination_rooms`, after a forget) are what SQL says.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{event, Backend, TestDb};

use herald_shared::{DestinationsQuery, Direction, OrderBy, RoomsQuery};
use herald_store::{DestinationRow, Store};

/// The list in Herald's order (SQLite's: NULL first ascending, last
/// descending; names in byte order), as SQL sorts it on either backend.
async fn sql_names(db: &TestDb, order: OrderBy, dir: Direction) -> Vec<String> {
    let dir = if dir == Direction::Forwards {
        "ASC NULLS FIRST"
    } else {
        "DESC NULLS LAST"
    };
    db.strings(&format!(
        "SELECT destination FROM destinations ORDER BY {} {dir}, destination ASC",
        order.as_str()
    ))
    .await
}

async fn rooms_total(store: &Store, name: &str) -> u64 {
    store
        .destinations
        .destination_rooms(name, RoomsQuery::default())
        .await
        .unwrap()
        .total
}

async fn a_reopened_store_loads_rows_orders_and_room_counts_as_sql_has_them(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let mut rows = Vec::new();
    for i in 0..300i64 {
        let opt = |k: i64| (i % k != 0).then_some((i * 7919) % 101 - 50);
        let name = match i % 4 {
            0 => format!("Matrix{i}.Example.org"),
            1 => format!("m{i}.example.com:8448"),
            _ => format!("h{i}.example.net"),
        };
        rows.push(DestinationRow::new(&name, opt(2), opt(3), opt(5), opt(7)));
    }
    store.destinations.put_destinations(&rows).await.unwrap();
    // Rooms: two through the intake, three set directly, then one forgotten.
    store
        .outbox
        .enqueue_pdus(vec![
            event("$a", "!a:x", &["h2.example.net", "Matrix0.Example.org"]),
            event("$b", "!b:x", &["h2.example.net"]),
        ])
        .await
        .unwrap();
    let rooms: Vec<herald_shared::DestinationRoom> = (0..3)
        .map(|k| herald_shared::DestinationRoom {
            room_id: format!("!r{k}:x"),
            stream_ordering: 5 + k,
        })
        .collect();
    store
        .destinations
        .put_destination_rooms("m1.example.com:8448", &rooms)
        .await
        .unwrap();
    assert_eq!(rooms_total(&store, "h2.example.net").await, 2);
    assert_eq!(rooms_total(&store, "m1.example.com:8448").await, 3);
    assert!(store
        .destinations
        .forget("Matrix0.Example.org", None)
        .await
        .unwrap()
        .is_some());
    rows.retain(|r| r.destination != "Matrix0.Example.org");
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.destinations.destination_count(), rows.len());
    for row in &rows {
        assert_eq!(
            store.destinations.indexed(&row.destination).as_ref(),
            Some(row)
        );
    }
    assert_eq!(rooms_total(&store, "h2.example.net").await, 2);
    assert_eq!(rooms_total(&store, "m1.example.com:8448").await, 3);
    assert_eq!(rooms_total(&store, "Matrix0.Example.org").await, 0);
    assert_eq!(rooms_total(&store, "h6.example.net").await, 0);
    for order in OrderBy::ALL {
        for dir in [Direction::Forwards, Direction::Backwards] {
            let page = store
                .destinations
                .list_destinations(DestinationsQuery {
                    limit: 1000,
                    order_by: order,
                    dir,
                    ..Default::default()
                })
                .await;
            let names: Vec<String> = page
                .destinations
                .into_iter()
                .map(|d| d.destination)
                .collect();
            assert_eq!(names, sql_names(&db, order, dir).await, "{order:?} {dir:?}");
        }
    }
    let filtered = store
        .destinations
        .list_destinations(DestinationsQuery {
            destination: Some("MATRIX".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(filtered.total, 74);
}

both_backends!(a_reopened_store_loads_rows_orders_and_room_counts_as_sql_has_them,);
