//! Two stores opened on one PostgreSQL database stand in for two Herald
//! instances (two real clients of one database): what one writes reaches
//! the other's index, reset broadcast and queued broadcast within a
//! second, including after the other's listener connection was killed
//! while the write was made (catch-up). On SQLite nothing is told.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use common::{event, Backend, TestDb};
use herald_shared::DestinationRoom;
use herald_store::{DestinationRow, Queued, RetryTimings, Store};
use sqlx::Connection;
use tokio::sync::broadcast;

/// How long a test waits for what must arrive within a second.
const BOUND: Duration = Duration::from_secs(5);
/// What the issue asks: every instance sees another's write within this.
const WITHIN: Duration = Duration::from_secs(1);

/// Polls `check` until it answers, for at most [`BOUND`]; what it answered
/// and how long that took.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return (found, started.elapsed());
        }
        assert!(started.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next queued notice naming `name` (others are skipped), within
/// [`BOUND`]; how long it took.
async fn queued_for(rx: &mut broadcast::Receiver<Queued>, name: &str) -> (Queued, Duration) {
    let started = Instant::now();
    loop {
        let left = BOUND.saturating_sub(started.elapsed());
        let heard = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no queued notice for {name} within {BOUND:?}"))
            .unwrap();
        let names_it = match &heard {
            Queued::Destinations(names) => names.iter().any(|n| n == name),
            Queued::Rescan => true,
        };
        if names_it {
            return (heard, started.elapsed());
        }
    }
}

async fn two_instances() -> (TestDb, Store, Store) {
    let db = TestDb::new(Backend::Postgres).await;
    let one = db.open().await;
    let two = db.open().await;
    (db, one, two)
}

/// Puts "down.example" in backoff (last retry at 6000) through `one` and
/// waits (bounded) until `two`'s index holds it.
async fn backoff_known_to_both(one: &Store, two: &Store) {
    let timings = RetryTimings {
        failure_ts: Some(5_000),
        retry_last_ts: 6_000,
        retry_interval: 600_000,
    };
    one.destinations
        .set_retry_timings("down.example", timings)
        .await
        .unwrap();
    until("the backoff", || {
        two.destinations
            .indexed("down.example")
            .filter(|r| r.retry_last_ts == Some(6_000))
    })
    .await;
}

#[tokio::test]
async fn rows_written_through_one_show_in_the_other() {
    let (_db, one, two) = two_instances().await;
    let row = DestinationRow::new("put.example", Some(1_000), Some(60_000), Some(900), Some(7));
    one.destinations
        .put_destinations(std::slice::from_ref(&row))
        .await
        .unwrap();
    let (seen, took) = until("the put row", || {
        two.destinations
            .indexed("put.example")
            .filter(|seen| *seen == row)
    })
    .await;
    assert_eq!(seen, row);
    assert!(took < WITHIN, "took {took:?}");

    // Rooms: the count the rooms list answers.
    let rooms = [
        DestinationRoom {
            room_id: "!a:example".into(),
            stream_ordering: 3,
        },
        DestinationRoom {
            room_id: "!b:example".into(),
            stream_ordering: 4,
        },
    ];
    one.destinations
        .put_destination_rooms("rooms.example", &rooms)
        .await
        .unwrap();
    let query = herald_shared::RoomsQuery {
        from: 0,
        limit: 10,
        dir: herald_shared::Direction::Forwards,
    };
    let started = Instant::now();
    loop {
        let page = two
            .destinations
            .destination_rooms("rooms.example", query)
            .await
            .unwrap();
        if page.total == 2 && two.destinations.indexed("rooms.example").is_some() {
            break;
        }
        assert!(started.elapsed() < BOUND, "room count never reached 2");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.elapsed() < WITHIN, "took {:?}", started.elapsed());

    // A backoff the sender stores.
    let timings = RetryTimings {
        failure_ts: Some(5_000),
        retry_last_ts: 6_000,
        retry_interval: 600_000,
    };
    one.destinations
        .set_retry_timings("rooms.example", timings)
        .await
        .unwrap();
    let (_, took) = until("the backoff", || {
        two.destinations
            .indexed("rooms.example")
            .filter(|r| r.retry_interval == Some(600_000) && r.retry_last_ts == Some(6_000))
    })
    .await;
    assert!(took < WITHIN, "took {took:?}");

    // Forget: the row leaves the other's index too.
    one.destinations
        .forget("put.example", Some("@admin:example"))
        .await
        .unwrap()
        .unwrap();
    let (_, took) = until("the forget", || {
        two.destinations
            .indexed("put.example")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(took < WITHIN, "took {took:?}");
    assert_eq!(two.destinations.destination_count(), 1);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_reset_through_one_is_broadcast_by_the_other() {
    let (_db, one, two) = two_instances().await;
    backoff_known_to_both(&one, &two).await;
    let mut resets_two = two.destinations.subscribe_resets();
    let mut resets_one = one.destinations.subscribe_resets();
    let started = Instant::now();
    let outcome = one
        .destinations
        .reset_retry_timings("down.example", Some("@admin:example"))
        .await
        .unwrap();
    assert_eq!(outcome, herald_store::ResetOutcome::Reset);
    let heard = tokio::time::timeout(BOUND, resets_two.recv())
        .await
        .expect("the other instance broadcast the reset")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(&*heard, "down.example");
    assert!(took < WITHIN, "took {took:?}");
    // Broadcast after the row was re-read: a woken queue reads no backoff.
    let row = two.destinations.indexed("down.example").unwrap();
    assert_eq!(row.retry_last_ts, Some(0), "{row:?}");
    // The instance that reset told its own listeners once, itself.
    assert_eq!(&*resets_one.recv().await.unwrap(), "down.example");
    assert!(resets_one.try_recv().is_err());
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn pdus_queued_through_one_reach_the_others_queued_broadcast() {
    let (_db, one, two) = two_instances().await;
    let mut queued_two = two.outbox.subscribe_queued();
    let mut queued_one = one.outbox.subscribe_queued();
    let started = Instant::now();
    one.outbox
        .enqueue_pdus(vec![event(
            "$one",
            "!room:example",
            &["a.example", "b.example"],
        )])
        .await
        .unwrap();
    let (heard, _) = queued_for(&mut queued_two, "a.example").await;
    let took = started.elapsed();
    let Queued::Destinations(names) = heard else {
        panic!("a rescan instead of the names: {heard:?}");
    };
    let mut names = names.to_vec();
    names.sort();
    assert_eq!(names, ["a.example", "b.example"]);
    assert!(took < WITHIN, "took {took:?}");
    // The other's index knows the destinations and their room.
    until("the queued destinations", || {
        two.destinations
            .indexed("b.example")
            .filter(|_| two.destinations.indexed("a.example").is_some())
    })
    .await;

    // An event for more destinations than one payload holds: every name
    // arrives, in several notices of one commit.
    let many: Vec<String> = (0..1_000).map(|i| format!("d{i:04}.example")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    one.outbox
        .enqueue_pdus(vec![event("$many", "!room:example", &refs)])
        .await
        .unwrap();
    let mut heard: Vec<String> = Vec::new();
    let started = Instant::now();
    while heard.len() < many.len() {
        let left = BOUND.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, queued_two.recv()).await {
            Ok(Ok(Queued::Destinations(names))) => heard.extend(names.iter().cloned()),
            other => panic!("not the names: {other:?} after {} of them", heard.len()),
        }
    }
    heard.sort();
    assert_eq!(heard, many);

    // An EDU too; and the store never hears its own notices: the first one
    // `one` hears is `two`'s.
    two.outbox
        .enqueue_edus(vec![herald_store::NewEdu {
            edu_type: "m.typing".into(),
            content_json: "{}".into(),
            destinations: vec!["c.example".into()],
        }])
        .await
        .unwrap();
    let first = tokio::time::timeout(BOUND, queued_one.recv())
        .await
        .expect("one hears two's EDU")
        .unwrap();
    assert_eq!(
        first,
        Queued::Destinations(vec!["c.example".to_owned()].into())
    );
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_write_made_while_the_listener_is_cut_still_shows() {
    let (db, one, two) = two_instances().await;
    let herald_store::DatabaseTarget::Postgres(url) = &db.target else {
        unreachable!()
    };
    let (cluster, database) = url.rsplit_once('/').unwrap();
    let mut queued_two = two.outbox.subscribe_queued();
    // A backoff both know of, reset while the listener is cut.
    backoff_known_to_both(&one, &two).await;
    let mut resets_two = two.destinations.subscribe_resets();
    // `one`'s pool opens all its connections now: the writes below must not
    // need a new one (a connection handed back is briefly not idle).
    let d = &one.destinations;
    let reads = tokio::join!(
        d.destination("a"),
        d.destination("b"),
        d.destination("c"),
        d.destination("d"),
        d.destination("e"),
        d.destination("f"),
        d.destination("g"),
        d.destination("h"),
    );
    assert!(reads.0.is_ok() && reads.7.is_ok());
    let pid = two.notices_backend_pid().unwrap();
    // Keep the listener from coming back until the write is committed: no
    // new connection to the database (the stores' pools keep theirs).
    // (From another database: PostgreSQL refuses it from this one.)
    let mut admin = sqlx::PgConnection::connect(&format!("{cluster}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    let row = DestinationRow::new("missed.example", Some(2_000), Some(60_000), None, None);
    one.destinations
        .put_destinations(std::slice::from_ref(&row))
        .await
        .unwrap();
    one.outbox
        .enqueue_pdus(vec![event("$missed", "!room:example", &["missed.example"])])
        .await
        .unwrap();
    one.destinations
        .reset_retry_timings("down.example", None)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let started = Instant::now();
    until("the row written while cut", || {
        two.destinations
            .indexed("missed.example")
            .filter(|seen| seen.retry_last_ts == Some(2_000))
    })
    .await;
    let (heard, _) = queued_for(&mut queued_two, "missed.example").await;
    assert_eq!(heard, Queued::Rescan);
    // The listener pauses at most a second between tries.
    assert!(
        started.elapsed() < WITHIN * 2,
        "took {:?}",
        started.elapsed()
    );
    assert_ne!(two.notices_backend_pid(), Some(pid));
    // The reset it missed is broadcast once the index is reloaded.
    let heard = tokio::time::timeout(BOUND, resets_two.recv())
        .await
        .expect("the missed reset")
        .unwrap();
    assert_eq!(&*heard, "down.example");

    // And it listens again: a later write shows as before.
    let later = DestinationRow::new("later.example", None, None, None, Some(9));
    one.destinations
        .put_destinations(std::slice::from_ref(&later))
        .await
        .unwrap();
    until("a later write", || {
        two.destinations.indexed("later.example")
    })
    .await;
    admin.close().await.unwrap();
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn sqlite_has_no_notices() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    assert_eq!(store.notices_backend_pid(), None);
    let mut queued = store.outbox.subscribe_queued();
    store
        .outbox
        .enqueue_pdus(vec![event("$e", "!room:example", &["a.example"])])
        .await
        .unwrap();
    assert!(matches!(
        queued.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    store.close().await;
}

/// A TCP proxy on 127.0.0.1 the test controls: [`Proxy::freeze`] stops
/// every connection open now from forwarding anything, keeping it open (a
/// network cut that sends no reset), while new connections go through;
/// [`Proxy::thaw`] lets the frozen ones go on (the link is back).
struct Proxy {
    port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: tokio::sync::watch::Sender<usize>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen_below, watch) = tokio::sync::watch::channel(0);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(Proxy::pump(id, ri, wo, watch.clone()));
                tokio::spawn(Proxy::pump(id, ro, wi, watch.clone()));
            }
        });
        Proxy {
            port,
            frozen_below,
            accepted,
        }
    }

    async fn pump(
        id: usize,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen_below: tokio::sync::watch::Receiver<usize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            if frozen_below.wait_for(|below| id >= *below).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn freeze(&self) {
        let open = self.accepted.load(std::sync::atomic::Ordering::SeqCst);
        self.frozen_below.send_replace(open);
    }

    fn thaw(&self) {
        self.frozen_below.send_replace(0);
    }
}

#[tokio::test]
async fn a_listener_cut_silently_is_replaced_and_catches_up() {
    let db = TestDb::new(Backend::Postgres).await;
    let herald_store::DatabaseTarget::Postgres(url) = &db.target else {
        unreachable!()
    };
    // postgresql://herald@127.0.0.1:PORT/DB
    let (head, database) = url.rsplit_once('/').unwrap();
    let port: u16 = head.rsplit_once(':').unwrap().1.parse().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], port).into()).await;
    let one = db.open().await;
    let via_proxy = format!("postgresql://herald@127.0.0.1:{}/{database}", proxy.port);
    let two = Store::open_postgres(&via_proxy).await.unwrap();
    let mut queued_two = two.outbox.subscribe_queued();
    let pid = two.notices_backend_pid().unwrap();

    proxy.freeze();
    let cut_at = Instant::now();
    let row = DestinationRow::new("silent.example", Some(3_000), Some(60_000), None, None);
    one.destinations
        .put_destinations(std::slice::from_ref(&row))
        .await
        .unwrap();
    // The silent listener is noticed (its pings stop coming): a new one
    // listens, through a new connection.
    let started = Instant::now();
    while two.notices_backend_pid() == Some(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the silent listener was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = cut_at.elapsed();
    assert!(
        noticed < Duration::from_secs(12),
        "replaced after {noticed:?}"
    );
    // The link is back for the store's other connections too.
    proxy.thaw();
    until("the row written while cut", || {
        two.destinations
            .indexed("silent.example")
            .filter(|seen| *seen == row)
    })
    .await;
    let (heard, _) = queued_for(&mut queued_two, "silent.example").await;
    assert_eq!(heard, Queued::Rescan);
    eprintln!("listener replaced {noticed:?} after the cut");
    one.close().await;
    two.close().await;
}
