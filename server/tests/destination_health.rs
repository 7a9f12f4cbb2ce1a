//! Herald's own destination endpoints (issue 12) over real HTTP against a
//! real SQLite file: the list and details with status, next retry, last
//! error and last delivery; the history, paginated; forgetting a
//! destination. Failures are recorded through the store as the federation
//! client records them (`tests/federation_client.rs` shows the client
//! classifying real failures; `tests/sender.rs` the sender's entries).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::*;
use herald_shared::{Failure, FailureKind, HistoryEvent};
use herald_store::history::NewEntry;
use herald_store::{NewEdu, NewEvent};
use serde_json::Value;
use sqlx::Row;

const HERALD: &str = "/_herald/admin/v1/federation/destinations";
const SYNAPSE: &str = "/_synapse/admin/v1/federation/destinations";

/// A row of Herald's list without what Herald adds: Synapse's row.
fn synapse_part(row: &Value) -> Value {
    let mut row = row.clone();
    let object = row.as_object_mut().unwrap();
    for key in ["status", "next_retry_ts", "last_error", "last_delivered_ts"] {
        assert!(object.remove(key).is_some(), "{key} missing from {row:?}");
    }
    row
}

async fn fail(server: &TestServer, name: &str, kind: FailureKind, message: &str) {
    let failure = Failure::new(kind, message, Some("127.0.0.1:8448".into()));
    server
        .store
        .destinations
        .record_failure(name, &failure, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_list_is_synapses_list_with_each_rows_health() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    fail(
        &server,
        "b.org",
        FailureKind::Http,
        "401 M_UNAUTHORIZED: Invalid signature",
    )
    .await;
    for query in [
        "",
        "?order_by=failure_ts&dir=b",
        "?from=3&limit=4&order_by=retry_interval",
        "?destination=ORG&limit=2",
    ] {
        let (status, herald) = server.get(&format!("{HERALD}{query}"), Some(&token)).await;
        assert_eq!(status, 200, "{herald}");
        let (_, synapse) = server.get(&format!("{SYNAPSE}{query}"), Some(&token)).await;
        let rows: Vec<Value> = herald["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(synapse_part)
            .collect();
        assert_eq!(Value::from(rows), synapse["destinations"], "{query}");
        assert_eq!(herald["total"], synapse["total"], "{query}");
        assert_eq!(herald["next_token"], synapse["next_token"], "{query}");
    }
    let (_, page) = server
        .get(&format!("{HERALD}?destination=b.org"), Some(&token))
        .await;
    let b = page["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == "b.org")
        .unwrap()
        .clone();
    assert_eq!(b["last_error"]["kind"], "http");
    assert_eq!(
        b["last_error"]["message"],
        "401 M_UNAUTHORIZED: Invalid signature"
    );
    assert_eq!(b["last_error"]["address"], "127.0.0.1:8448");
    assert_eq!(b["status"], "retry_due");
    assert_eq!(b["next_retry_ts"], 1_700_000_000_000i64 + 600_000);
    let never = page["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == "B.org")
        .unwrap()
        .clone();
    assert_eq!(never["last_error"], Value::Null);
    assert_eq!(never["status"], "never_reached");
    // Synapse's validation and auth rules.
    let bad = server.get(&format!("{HERALD}?dir=x"), Some(&token)).await;
    assert_eq!(bad.0, 400, "{bad:?}");
    assert_missing_token(&server.get(HERALD, None).await);
    let user = server.login(USER, USER_PASSWORD).await;
    assert_not_admin(&server.get(HERALD, Some(&user)).await);
}

#[tokio::test]
async fn details_add_status_next_retry_last_error_last_delivery_and_queue() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    fail(
        &server,
        "b.org",
        FailureKind::Tls,
        "TLS with 127.0.0.1:8448 failed: expired",
    )
    .await;
    let (status, details) = server.get(&format!("{HERALD}/b.org"), Some(&token)).await;
    assert_eq!(status, 200, "{details}");
    let (_, synapse) = server.get(&format!("{SYNAPSE}/b.org"), Some(&token)).await;
    for (key, value) in synapse.as_object().unwrap() {
        assert_eq!(&details[key], value, "{key}");
    }
    assert_eq!(details["status"], "retry_due");
    assert_eq!(details["last_error"]["kind"], "tls");
    assert_eq!(details["last_delivered_ts"], Value::Null);
    assert_eq!(details["queue"]["state"], "idle");
    assert_eq!(details["queue"]["queued_pdus"], 0);
    let unknown = server
        .get(&format!("{HERALD}/nowhere.example"), Some(&token))
        .await;
    assert_error(&unknown, 404, "M_NOT_FOUND", "Unknown destination");
    let user = server.login(USER, USER_PASSWORD).await;
    assert_not_admin(&server.get(&format!("{HERALD}/b.org"), Some(&user)).await);
}

#[tokio::test]
async fn history_is_newest_first_in_pages_and_names_the_admin_who_reset() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    fail(&server, "b.org", FailureKind::Connect, "cannot connect").await;
    fail(&server, "b.org", FailureKind::Timeout, "no answer").await;
    let (status, _) = server
        .post_json(
            &format!("{SYNAPSE}/b.org/reset_connection"),
            Some(&token),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..5 {
        server
            .store
            .destinations
            .add_history(
                "b.org",
                HistoryEvent::QueueDropped,
                NewEntry {
                    count: Some(i),
                    ..NewEntry::default()
                },
            )
            .await
            .unwrap();
    }
    let (status, all) = server
        .get(&format!("{HERALD}/b.org/history"), Some(&token))
        .await;
    assert_eq!(status, 200, "{all}");
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 7, "{all}");
    assert_eq!(entries[5]["event"], "reset");
    assert_eq!(entries[5]["actor"], "@admin:herald.test");
    // One outage: the second failure added to the first's count.
    assert_eq!(entries[6]["event"], "failing");
    assert_eq!(entries[6]["count"], 2);
    assert_eq!(entries[6]["kind"], "connect");
    assert!(all.get("next_token").is_none());
    // Pages of 3 walk the same entries.
    let mut walked = Vec::new();
    let mut from = String::new();
    for _ in 0..10 {
        let (status, page) = server
            .get(
                &format!("{HERALD}/b.org/history?limit=3{from}"),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        walked.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_token"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    assert_eq!(&walked, entries);
    for bad in ["limit=0", "limit=201", "limit=x", "from=-1"] {
        let got = server
            .get(&format!("{HERALD}/b.org/history?{bad}"), Some(&token))
            .await;
        assert_eq!(
            (got.0, got.1["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{bad}"
        );
    }
    for query in ["", "?from=5"] {
        let unknown = server
            .get(
                &format!("{HERALD}/nowhere.example/history{query}"),
                Some(&token),
            )
            .await;
        assert_error(&unknown, 404, "M_NOT_FOUND", "Unknown destination");
    }
}

#[tokio::test]
async fn forgetting_removes_the_row_its_rooms_and_queues_and_keeps_its_history() {
    let server = TestServer::start().await;
    let token = server.admin_token().await;
    fail(&server, "b.org", FailureKind::Dns, "no such name").await;
    let events = (0..3)
        .map(|i| NewEvent {
            event_id: format!("$e{i}"),
            room_id: "!r:herald.test".into(),
            pdu_json: format!(r#"{{"event_id":"$e{i}","room_id":"!r:herald.test"}}"#),
            destinations: vec!["b.org".into(), "a.org".into()],
        })
        .collect();
    server.store.outbox.enqueue_pdus(events).await.unwrap();
    server
        .store
        .outbox
        .enqueue_edus(vec![NewEdu {
            edu_type: "m.typing".into(),
            content_json: "{}".into(),
            destinations: vec!["b.org".into()],
        }])
        .await
        .unwrap();
    let (_, before) = server.get(SYNAPSE, Some(&token)).await;
    let (_, rooms) = server
        .get(&format!("{SYNAPSE}/b.org/rooms"), Some(&token))
        .await;
    let rooms = rooms["total"].as_u64().unwrap();

    let response = server
        .request("DELETE", &format!("{HERALD}/b.org"), Some(&token))
        .await;
    let (status, forgotten) = into_json(response).await;
    assert_eq!(status, 200, "{forgotten}");
    assert_eq!(forgotten["destination"], "b.org");
    assert_eq!(forgotten["rooms"], rooms);
    assert_eq!(forgotten["queued_pdus"], 3);
    assert_eq!(forgotten["queued_edus"], 1);

    let (_, after) = server.get(SYNAPSE, Some(&token)).await;
    assert_eq!(after["total"], before["total"].as_u64().unwrap() - 1);
    assert!(!after.to_string().contains("\"b.org\""));
    let gone = server.get(&format!("{SYNAPSE}/b.org"), Some(&token)).await;
    assert_error(&gone, 404, "M_NOT_FOUND", "Unknown destination");
    let (_, filtered) = server
        .get(&format!("{HERALD}?destination=b.org"), Some(&token))
        .await;
    // (The filter ignores case: B.org stays.)
    assert_eq!(filtered["total"], 1, "{filtered}");
    assert_eq!(filtered["destinations"][0]["destination"], "B.org");
    // As an admin's sqlite3 would see it.
    let pool = sql_pool(&server.db_path).await;
    for table in [
        "destinations",
        "destination_rooms",
        "destination_pdus",
        "destination_edus",
        "destination_health",
    ] {
        let n: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {table} WHERE destination = 'b.org'"
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(n, 0, "{table}");
    }
    // Another destination's queue is untouched.
    let (_, a) = server.get(&format!("{HERALD}/a.org"), Some(&token)).await;
    assert_eq!(a["queue"]["queued_pdus"], 3, "{a}");
    // The history stays, with who forgot it and what went.
    let (status, history) = server
        .get(&format!("{HERALD}/b.org/history"), Some(&token))
        .await;
    assert_eq!(status, 200, "{history}");
    let newest = &history["entries"][0];
    assert_eq!(newest["event"], "forgotten");
    assert_eq!(newest["actor"], "@admin:herald.test");
    assert!(
        newest["message"]
            .as_str()
            .unwrap()
            .contains("3 queued PDUs"),
        "{newest}"
    );
    // Twice: unknown now.
    let again = into_json(
        server
            .request("DELETE", &format!("{HERALD}/b.org"), Some(&token))
            .await,
    )
    .await;
    assert_error(&again, 404, "M_NOT_FOUND", "Unknown destination");
    let user = server.login(USER, USER_PASSWORD).await;
    let refused = into_json(
        server
            .request("DELETE", &format!("{HERALD}/a.org"), Some(&user))
            .await,
    )
    .await;
    assert_not_admin(&refused);
}
