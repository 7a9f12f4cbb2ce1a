//! Per-destination backoff on a real SQLite file and on PostgreSQL: what the retry limiter
//! reads and writes in `destinations`, Synapse's upsert rule, and the reset
//! signal an admin's `reset_connection` fires.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::{Backend, TestDb};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_federation::backoff::{BackoffError, BackoffPolicy, Outcome, RetryLimiter};
use herald_store::Store;
use herald_store::{ResetOutcome, RetryTimings};

const MIN: i64 = 600_000;

struct Fixture {
    _db: TestDb,
    store: Store,
    now: Arc<AtomicI64>,
    limiter: RetryLimiter,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let clock = now.clone();
    let limiter = RetryLimiter::with_clock(
        store.destinations.clone(),
        BackoffPolicy {
            min_interval: Duration::from_millis(MIN as u64),
            multiplier: 2.0,
            max_interval: Duration::from_secs(7 * 86_400),
        },
        Arc::new(move || clock.load(Ordering::SeqCst)),
    );
    Fixture {
        _db: db,
        store,
        now,
        limiter,
    }
}

async fn failures_back_off_and_success_clears_it(backend: Backend) {
    let f = fixture(backend).await;
    let t0 = f.now.load(Ordering::SeqCst);

    // Never contacted: go ahead; it fails: the row appears in backoff.
    let timings = f.limiter.check("a.test", false).await.expect("may try");
    f.limiter
        .record("a.test", timings, Outcome::Failure)
        .await
        .expect("record");
    let stored = f
        .store
        .destinations
        .retry_timings("a.test")
        .await
        .expect("read")
        .expect("in backoff");
    assert_eq!(
        stored,
        RetryTimings {
            failure_ts: Some(t0),
            retry_last_ts: t0,
            retry_interval: MIN
        }
    );

    // Until the interval has passed, no request goes out.
    f.now.store(t0 + MIN - 1, Ordering::SeqCst);
    match f.limiter.check("a.test", false).await {
        Err(BackoffError::NotRetrying {
            retry_last_ts,
            retry_interval,
            ..
        }) => assert_eq!((retry_last_ts, retry_interval), (t0, MIN)),
        other => panic!("expected NotRetrying, got {other:?}"),
    }
    // Ignoring backoff goes ahead, and its failure does not grow the backoff.
    let ignoring = f
        .limiter
        .check("a.test", true)
        .await
        .expect("ignores backoff");
    f.limiter
        .record("a.test", ignoring, Outcome::Failure)
        .await
        .expect("record");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("a.test")
            .await
            .expect("read"),
        Some(stored)
    );

    // Once due, another failure doubles it (× 0.8–1.4) and keeps failure_ts.
    let t1 = t0 + MIN;
    f.now.store(t1, Ordering::SeqCst);
    let timings = f.limiter.check("a.test", false).await.expect("due");
    f.limiter
        .record("a.test", timings, Outcome::Failure)
        .await
        .expect("record");
    let grown = f
        .store
        .destinations
        .retry_timings("a.test")
        .await
        .expect("read")
        .expect("in backoff");
    assert_eq!((grown.failure_ts, grown.retry_last_ts), (Some(t0), t1));
    assert!(
        (MIN * 16 / 10..=MIN * 28 / 10).contains(&grown.retry_interval),
        "{}",
        grown.retry_interval
    );

    // A 403 says the server is up but changes nothing; a 2xx clears it all.
    f.now.store(t1 + grown.retry_interval, Ordering::SeqCst);
    let timings = f.limiter.check("a.test", false).await.expect("due");
    f.limiter
        .record("a.test", timings, Outcome::of_status(403, false))
        .await
        .expect("record");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("a.test")
            .await
            .expect("read"),
        Some(grown)
    );
    f.limiter
        .record("a.test", timings, Outcome::of_status(200, false))
        .await
        .expect("record");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("a.test")
            .await
            .expect("read"),
        None
    );
    let row = f
        .store
        .destinations
        .destination("a.test")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (row.failure_ts, row.retry_last_ts, row.retry_interval),
        (None, Some(0), Some(0))
    );
}

async fn a_backoff_never_shrinks_under_concurrent_requests(backend: Backend) {
    let f = fixture(backend).await;
    let big = RetryTimings {
        failure_ts: Some(1),
        retry_last_ts: 5_000,
        retry_interval: 4 * MIN,
    };
    f.store
        .destinations
        .set_retry_timings("b.test", big)
        .await
        .expect("set");
    // A request that started earlier and read a smaller interval fails late:
    // an older try with a smaller interval does not overwrite.
    let stale = RetryTimings {
        failure_ts: Some(1),
        retry_last_ts: 4_000,
        retry_interval: MIN,
    };
    f.store
        .destinations
        .set_retry_timings("b.test", stale)
        .await
        .expect("set");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("b.test")
            .await
            .expect("read"),
        Some(big)
    );
    // A later try, or a reset, does.
    let later = RetryTimings {
        retry_last_ts: 6_000,
        ..stale
    };
    f.store
        .destinations
        .set_retry_timings("b.test", later)
        .await
        .expect("set");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("b.test")
            .await
            .expect("read"),
        Some(later)
    );
    f.store
        .destinations
        .set_retry_timings("b.test", RetryTimings::default())
        .await
        .expect("set");
    assert_eq!(
        f.store
            .destinations
            .retry_timings("b.test")
            .await
            .expect("read"),
        None
    );
    // The admin API's list sees every write (the index follows the table).
    let page = f
        .store
        .destinations
        .list_destinations(Default::default())
        .await;
    assert_eq!(page.destinations[0].retry_interval, 0);
}

async fn an_admin_reset_wakes_whoever_waits_for_that_destination(backend: Backend) {
    let f = fixture(backend).await;
    for name in ["c.test", "d.test"] {
        let timings = f.limiter.check(name, false).await.expect("may try");
        f.limiter
            .record(name, timings, Outcome::Failure)
            .await
            .expect("record");
    }
    let mut c = f.limiter.reset_signal("c.test");
    let mut d = f.limiter.reset_signal("d.test");
    assert_eq!(
        f.store
            .destinations
            .reset_retry_timings("c.test", None)
            .await
            .expect("reset"),
        ResetOutcome::Reset
    );
    tokio::time::timeout(Duration::from_secs(5), c.wait())
        .await
        .expect("c woke");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), d.wait())
            .await
            .is_err(),
        "d was not reset"
    );
    // And the reset destination may be tried at once.
    f.limiter
        .check("c.test", false)
        .await
        .expect("reset: may try");
}

both_backends!(
    failures_back_off_and_success_clears_it,
    a_backoff_never_shrinks_under_concurrent_requests,
    an_admin_reset_wakes_whoever_waits_for_that_destination,
);
