//! One `herald serve` per database: a second claim on a database is refused
//! (naming `database`) while the first is held, and succeeds once it is
//! dropped, on both backends; other handles on the database are untouched.
//! On PostgreSQL the claim is per `instance_name`: another name runs beside.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use herald_store::serving::keep_serving;
use herald_store::{claim_serving, claim_whole, StoreError};

async fn a_second_claim_waits_then_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = claim_serving(&db.target, "main", Duration::ZERO)
        .await
        .unwrap();
    // The store opens beside a claim (the CLI's commands do not claim).
    let store = db.open().await;
    let started = Instant::now();
    let second = claim_serving(&db.target, "main", Duration::from_millis(300)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited for the holder to go"
    );
    let err = second.unwrap_err();
    assert!(matches!(err, StoreError::Serving { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`database`") && text.contains("another Herald"),
        "{text}"
    );
    drop(first);
    // Released: the next claim holds, at once or after the server noticed.
    let third = claim_serving(&db.target, "main", Duration::from_secs(10))
        .await
        .unwrap();
    drop(third);
    store.close().await;
}

both_backends!(a_second_claim_waits_then_is_refused);

/// Two instance names share a PostgreSQL database; the same name twice
/// does not.
#[tokio::test]
async fn instances_with_other_names_claim_side_by_side_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = claim_serving(&db.target, "a", Duration::ZERO)
        .await
        .unwrap();
    let b = claim_serving(&db.target, "b", Duration::ZERO)
        .await
        .unwrap();
    let again = claim_serving(&db.target, "a", Duration::from_millis(100)).await;
    let text = again.unwrap_err().to_string();
    assert!(text.contains("instance_name \"a\""), "{text}");
    drop((a, b));
}

/// A whole-database claim (`herald migrate-store`) and a server's exclude
/// each other, whatever the server's `instance_name`; the server's refusal
/// names what holds the database.
async fn a_whole_claim_excludes_every_server(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = claim_serving(&db.target, "a", Duration::ZERO)
        .await
        .unwrap();
    let whole = claim_whole(&db.target, Duration::from_millis(100)).await;
    assert!(
        matches!(whole, Err(StoreError::Serving { .. })),
        "{whole:?}"
    );
    drop(server);
    let whole = claim_whole(&db.target, Duration::from_secs(10))
        .await
        .unwrap();
    let server = claim_serving(&db.target, "b", Duration::from_millis(100)).await;
    let text = server.unwrap_err().to_string();
    if backend == Backend::Postgres {
        assert!(text.contains("migrate-store"), "{text}");
    }
    drop(whole);
    // Freed: a server claims again, and the instance lock it took and gave
    // back while refused does not linger.
    let again = claim_serving(&db.target, "b", Duration::from_secs(10))
        .await
        .unwrap();
    drop(again);
}

both_backends!(a_whole_claim_excludes_every_server);

/// Ends the sessions that hold the serving claims on `db` (as a database
/// restart or a cut would), from a connection of the test's own.
async fn end_claim_sessions(db: &TestDb) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&db.setting()).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'herald serve claim' AND datname = current_database()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "no claim session to end");
    admin.close().await.unwrap();
}

/// A claim whose session is lost is taken again by `keep_serving`: a
/// namesake trying meanwhile is refused again once it is back.
#[tokio::test]
async fn a_lost_claim_is_taken_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let claim = claim_serving(&db.target, "a", Duration::ZERO)
        .await
        .unwrap();
    let target = db.target.clone();
    let keeper = tokio::spawn(async move { keep_serving(claim, &target, "a").await });
    end_claim_sessions(&db).await;
    // Free for a moment, then held again: a namesake is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_free = false;
    loop {
        match claim_serving(&db.target, "a", Duration::ZERO).await {
            Ok(mine) => {
                // Taken before the keeper: hand it back and look again.
                seen_free = true;
                drop(mine);
            }
            Err(StoreError::Serving { .. })
                if seen_free || Instant::now() > deadline - Duration::from_secs(15) =>
            {
                break
            }
            Err(StoreError::Serving { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the claim was not taken again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!keeper.is_finished(), "the keeper gave up");
    keeper.abort();
}

/// A namesake that takes a lost claim first makes `keep_serving` return:
/// the server holding it must stop.
#[tokio::test]
async fn a_claim_taken_by_a_namesake_ends_the_keeper() {
    let db = TestDb::new(Backend::Postgres).await;
    let claim = claim_serving(&db.target, "a", Duration::ZERO)
        .await
        .unwrap();
    end_claim_sessions(&db).await;
    // The namesake claims before the keeper looks (it checks every 2 s).
    let namesake = claim_serving(&db.target, "a", Duration::from_secs(10))
        .await
        .unwrap();
    let lost = tokio::time::timeout(
        Duration::from_secs(20),
        keep_serving(claim, &db.target, "a"),
    )
    .await
    .expect("keep_serving noticed the loss");
    assert!(matches!(lost, StoreError::Serving { .. }), "{lost:?}");
    drop(namesake);
}

/// A newer Herald migrating the database under a running one (an upgrade
/// without stopping it) makes `keep_serving` return, naming both schema
/// versions: the older server stops rather than write without the newer
/// schema's rules.
#[tokio::test]
async fn a_newer_schema_ends_the_keeper() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let claim = claim_serving(&db.target, "a", Duration::ZERO)
        .await
        .unwrap();
    let target = db.target.clone();
    let keeper = tokio::spawn(async move { keep_serving(claim, &target, "a").await });
    let known = herald_store::postgres::known_version();
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({}, 'from a newer Herald', true, '\\x00', 0)",
        known + 1
    ))
    .await;
    let lost = tokio::time::timeout(Duration::from_secs(10), keeper)
        .await
        .expect("keep_serving noticed the newer schema")
        .unwrap();
    assert!(
        matches!(lost, StoreError::PgTooNew { found, known: k, .. } if found == known + 1 && k == known),
        "{lost:?}"
    );
    assert!(lost.to_string().contains("newer Herald"), "{lost}");
    store.close().await;
}
