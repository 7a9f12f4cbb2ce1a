//! The sender's intake API over real HTTP against a temp SQLite file and a
//! PostgreSQL database (every test on both):
//! stream orderings, the rows stored, `destinations` / `destination_rooms`
//! as the admin API shows them, skipped destinations, every 400 storing
//! nothing, authentication, EDUs, and concurrent requests sharing commits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::backend::Backend;
use common::*;
use herald::config::Config;
use herald_store::Store;
use serde_json::{json, Value};

const TOKEN: &str = "sender-secret";
const PDUS: &str = "/_herald/v1/send/pdus";
const EDUS: &str = "/_herald/v1/send/edus";
const LIST: &str = "/_synapse/admin/v1/federation/destinations";

async fn start(backend: Backend) -> TestServer {
    TestServer::start_on(backend, |c| c.sender_api_token = Some(TOKEN.into())).await
}

fn event(id: &str, room: &str, destinations: &[&str]) -> Value {
    json!({
        "event_id": id,
        "room_id": room,
        "pdu": {"room_id": room, "type": "m.room.message", "content": {"body": id}},
        "destinations": destinations,
    })
}

async fn send(s: &TestServer, events: Vec<Value>) -> Vec<i64> {
    let (status, body) = s
        .post_json(PDUS, Some(TOKEN), json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["stream_orderings"]
        .as_array()
        .expect("stream_orderings")
        .iter()
        .map(|v| v.as_i64().expect("integer"))
        .collect()
}

async fn count(s: &TestServer, table: &str) -> i64 {
    s.db.i64s(&format!("SELECT COUNT(*) FROM {table}")).await[0]
}

async fn counts(s: &TestServer) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "outgoing_events",
        "destination_pdus",
        "destination_edus",
        "destinations",
        "destination_rooms",
    ] {
        out.push(count(s, table).await);
    }
    out
}

async fn outbox(s: &TestServer, destination: &str) -> Vec<(i64, String)> {
    s.store
        .outbox
        .pending_pdus(destination, 1000)
        .await
        .expect("pending")
        .into_iter()
        .map(|p| (p.stream_ordering, p.event_id))
        .collect()
}

async fn accepted_events_are_stored_in_order_and_fill_destination_rooms(backend: Backend) {
    let s = start(backend).await;
    let t = s.admin_token().await;
    let orderings = send(
        &s,
        vec![
            event("$e1", "!r1:herald.test", &["one.example", "two.example"]),
            event("$e2", "!r1:herald.test", &["one.example"]),
            event("$e3", "!r2:herald.test", &["two.example:8448"]),
        ],
    )
    .await;
    assert_eq!(orderings.len(), 3);
    assert!(orderings.windows(2).all(|w| w[0] < w[1]), "{orderings:?}");
    let more = send(&s, vec![event("$e4", "!r2:herald.test", &["one.example"])]).await;
    assert!(more[0] > orderings[2]);

    let pending = s
        .store
        .outbox
        .pending_pdus("one.example", 10)
        .await
        .unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.event_id.as_str())
            .collect::<Vec<_>>(),
        ["$e1", "$e2", "$e4"]
    );
    let pdu: Value = serde_json::from_str(&pending[0].pdu_json).unwrap();
    assert_eq!(pdu["content"]["body"], "$e1");
    assert_eq!(pending[0].room_id, "!r1:herald.test");
    assert_eq!(
        outbox(&s, "two.example").await,
        [(orderings[0], "$e1".to_owned())]
    );

    // destination_rooms holds the newest ordering per room, shown at once.
    let (status, body) = s.get(&format!("{LIST}/one.example/rooms"), Some(&t)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    assert_eq!(
        body["rooms"],
        json!([
            {"room_id": "!r1:herald.test", "stream_ordering": orderings[1]},
            {"room_id": "!r2:herald.test", "stream_ordering": more[0]},
        ])
    );
    let (status, body) = s
        .get(
            &format!("{LIST}?from=0&limit=100&destination=example"),
            Some(&t),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].as_str().unwrap())
        .collect();
    for name in ["one.example", "two.example", "two.example:8448"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let (status, body) = s.get(&format!("{LIST}/two.example"), Some(&t)).await;
    assert_eq!(status, 200, "{body}");

    // Resubmitting an event keeps its ordering and never lowers a room's.
    let again = send(
        &s,
        vec![event(
            "$e1",
            "!r1:herald.test",
            &["one.example", "three.example"],
        )],
    )
    .await;
    assert_eq!(again, [orderings[0]]);
    let rooms = s.db.i64s(
        "SELECT stream_ordering FROM destination_rooms WHERE destination = 'one.example' AND room_id = '!r1:herald.test'",
    )
    .await[0];
    assert_eq!(rooms, orderings[1]);
    assert_eq!(count(&s, "outgoing_events").await, 4);
    assert_eq!(
        outbox(&s, "three.example").await,
        [(orderings[0], "$e1".to_owned())]
    );
}

async fn orderings_keep_growing_across_a_reopen(backend: Backend) {
    let s = start(backend).await;
    let first = send(&s, vec![event("$a", "!r:herald.test", &["x.example"])]).await;
    // A second store and server on the same file, as after a restart.
    let store = Store::open_target(&s.db.target).await.expect("reopen");
    let mut config = Config::loopback(SERVER_NAME, s.db.setting());
    config.signing_key_path = Some(s.db.dir().join(format!("{SERVER_NAME}.signing.key")));
    config.sender_api_token = Some(TOKEN.into());
    let addr = herald::serve::spawn(store.clone(), config)
        .await
        .expect("serve");
    let (status, body) = into_json(
        s.client
            .post(format!("http://{addr}{PDUS}"))
            .bearer_auth(TOKEN)
            .json(&json!({"events": [event("$b", "!r:herald.test", &["x.example"])]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["stream_orderings"][0].as_i64().unwrap() > first[0],
        "{body}"
    );
    assert_eq!(
        store
            .outbox
            .pending_pdus("x.example", 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn whitelist_self_and_duplicates_are_skipped(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.sender_api_token = Some(TOKEN.into());
        c.federation_domain_whitelist = Some(vec!["a.example".into(), SERVER_NAME.into()]);
    })
    .await;
    let before = count(&s, "destinations").await;
    let so = send(
        &s,
        vec![event(
            "$w",
            "!r:herald.test",
            &["a.example", "c.example", SERVER_NAME, "a.example"],
        )],
    )
    .await;
    assert_eq!(outbox(&s, "a.example").await, [(so[0], "$w".to_owned())]);
    assert!(outbox(&s, "c.example").await.is_empty());
    assert!(outbox(&s, SERVER_NAME).await.is_empty());
    assert_eq!(count(&s, "destination_pdus").await, 1);
    assert_eq!(count(&s, "destinations").await, before + 1);
    // An event whose destinations are all skipped is still accepted.
    let so = send(&s, vec![event("$none", "!r:herald.test", &["c.example"])]).await;
    assert_eq!(so.len(), 1);
    assert_eq!(count(&s, "destination_pdus").await, 1);
}

async fn every_bad_request_stores_nothing(backend: Backend) {
    let s = start(backend).await;
    let good = event("$ok", "!r:herald.test", &["a.example"]);
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "M_NOT_JSON"),
        ("".into(), 400, "M_NOT_JSON"),
        ("{\"events\": [".into(), 400, "M_NOT_JSON"),
        ("[]".into(), 400, "M_BAD_JSON"),
        ("{}".into(), 400, "M_BAD_JSON"),
        (json!({"events": {}}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"room_id": "!r:herald.test", "pdu": {}, "destinations": []}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "pdu": {}, "destinations": []}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "destinations": []}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "pdu": {}}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": 1, "room_id": "!r:herald.test", "pdu": {}, "destinations": []}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "pdu": [], "destinations": []}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "pdu": {}, "destinations": "a.example"}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "pdu": {}, "destinations": [1]}]}).to_string(), 400, "M_BAD_JSON"),
        (json!({"events": [good, event("x", "!r:herald.test", &["a.example"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$", "!r:herald.test", &["a.example"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$x", "#r:herald.test", &["a.example"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$x y", "!r:herald.test", &["a.example"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$x", "!r:herald.test", &["a.example", "bad name"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$x", "!r:herald.test", &["https://a.example"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, event("$x", "!r:herald.test", &["a.example:99999"])]}).to_string(), 400, "M_INVALID_PARAM"),
        (json!({"events": [good, {"event_id": "$x", "room_id": "!r:herald.test", "pdu": {"room_id": "!other:herald.test"}, "destinations": []}]}).to_string(), 400, "M_INVALID_PARAM"),
    ];
    let before = counts(&s).await;
    for (body, status, errcode) in &cases {
        let got = into_json(
            s.client
                .post(s.url(PDUS))
                .bearer_auth(TOKEN)
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.0, *status, "{body}: {}", got.1);
        assert_eq!(got.1["errcode"], *errcode, "{body}: {}", got.1);
        assert_eq!(counts(&s).await, before, "{body} stored something");
    }
    let edu_cases = [
        json!({"edus": [{"edu_type": "m.typing", "content": {}, "destinations": ["a.example"]}, {"edu_type": "m.typing", "content": {}, "destinations": ["bad name"]}]}),
        json!({"edus": [{"edu_type": "m.typing", "content": {}, "destinations": ["a.example"]}, {"content": {}, "destinations": []}]}),
        json!({"edus": [{"edu_type": "m.typing", "content": 3, "destinations": ["a.example"]}]}),
        json!({"edus": [{"edu_type": "", "content": {}, "destinations": ["a.example"]}]}),
        // A NUL (which PostgreSQL cannot store) or another control character.
        json!({"edus": [{"edu_type": "m.typing\u{0}", "content": {}, "destinations": ["a.example"]}]}),
        json!({"edus": [{"edu_type": "m.\ntyping", "content": {}, "destinations": ["a.example"]}]}),
    ];
    for body in edu_cases {
        let got = s.post_json(EDUS, Some(TOKEN), body.clone()).await;
        assert_eq!(got.0, 400, "{body}: {}", got.1);
        assert_eq!(counts(&s).await, before, "{body} stored something");
    }

    // Too large: 413.
    let huge = format!(
        "{{\"events\": [{{\"event_id\": \"$big\", \"room_id\": \"!r:herald.test\", \"destinations\": [\"a.example\"], \"pdu\": {{\"x\": \"{}\"}}}}]}}",
        "a".repeat(11 * 1024 * 1024)
    );
    let got = into_json(
        s.client
            .post(s.url(PDUS))
            .bearer_auth(TOKEN)
            .body(huge.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.0, 413, "{}", got.1);
    assert_eq!(got.1["errcode"], "M_TOO_LARGE");
    assert_eq!(counts(&s).await, before);
}

async fn authentication(backend: Backend) {
    let s = start(backend).await;
    let body = json!({"events": [event("$a", "!r:herald.test", &["a.example"])]});
    let got = s.post_json(PDUS, None, body.clone()).await;
    assert_missing_token(&got);
    let got = s.post_json(PDUS, Some("wrong"), body.clone()).await;
    assert_eq!(got.0, 401, "{}", got.1);
    assert_eq!(got.1["errcode"], "M_UNKNOWN_TOKEN");
    let admin = s.admin_token().await;
    for path in [PDUS, EDUS] {
        let got = s.post_json(path, Some(&admin), json!({})).await;
        assert_eq!(got.0, 401, "{}", got.1);
        assert_eq!(got.1["errcode"], "M_UNKNOWN_TOKEN");
    }
    let got = s.post_json(EDUS, None, json!({"edus": []})).await;
    assert_missing_token(&got);
    assert_eq!(count(&s, "outgoing_events").await, 0);
    assert_eq!(send(&s, vec![]).await, Vec::<i64>::new());

    // No token configured: the API does not exist.
    let off = TestServer::start_on(backend, |_| {}).await;
    for token in [None, Some(TOKEN), Some("")] {
        let got = off.post_json(PDUS, token, body.clone()).await;
        assert_error(&got, 404, "M_UNRECOGNIZED", "Unrecognized request");
    }
    let got = off.post_json(EDUS, Some(TOKEN), json!({"edus": []})).await;
    assert_eq!(got.0, 404, "{}", got.1);
    assert_eq!(count(&off, "outgoing_events").await, 0);
}

async fn edus_are_stored_per_destination(backend: Backend) {
    let s = start(backend).await;
    let before = count(&s, "destinations").await;
    let (status, body) = s
        .post_json(
            EDUS,
            Some(TOKEN),
            json!({"edus": [
                {"edu_type": "m.typing", "content": {"room_id": "!r:herald.test", "typing": true},
                 "destinations": ["a.example", "b.example", "a.example", SERVER_NAME]},
                {"edu_type": "m.receipt", "content": {}, "destinations": ["a.example"]},
            ]}),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let a = s.store.outbox.pending_edus("a.example", 10).await.unwrap();
    assert_eq!(
        a.iter().map(|e| e.edu_type.as_str()).collect::<Vec<_>>(),
        ["m.typing", "m.receipt"]
    );
    assert!(a[0].id < a[1].id);
    let content: Value = serde_json::from_str(&a[0].content_json).unwrap();
    assert_eq!(content["typing"], true);
    assert_eq!(
        s.store
            .outbox
            .pending_edus("b.example", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s
        .store
        .outbox
        .pending_edus(SERVER_NAME, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(count(&s, "destination_edus").await, 3);
    // EDUs alone do not create destinations rows (as in Synapse).
    assert_eq!(count(&s, "destinations").await, before);
}

async fn concurrent_requests_are_all_acknowledged(backend: Backend) {
    let s = start(backend).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = s.client.clone();
        let url = s.url(PDUS);
        tasks.push(tokio::spawn(async move {
            let body = json!({"events": [
                event(&format!("$c{i}a"), &format!("!r{}:herald.test", i % 5), &["a.example", "b.example"]),
                event(&format!("$c{i}b"), "!shared:herald.test", &["a.example"]),
            ]});
            let resp = client.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
            into_json(resp).await
        }));
    }
    let mut all = Vec::new();
    let mut newest_shared = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let so: Vec<i64> = serde_json::from_value(body["stream_orderings"].clone()).unwrap();
        assert_eq!(so.len(), 2);
        assert!(so[0] < so[1]);
        newest_shared = newest_shared.max(so[1]);
        all.extend(so);
    }
    let mut distinct = all.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 100);
    assert_eq!(count(&s, "outgoing_events").await, 100);
    assert_eq!(outbox(&s, "a.example").await.len(), 100);
    assert_eq!(outbox(&s, "b.example").await.len(), 50);
    let t = s.admin_token().await;
    let (_, body) = s.get(&format!("{LIST}/a.example/rooms"), Some(&t)).await;
    assert_eq!(body["total"], 6, "{body}");
    let shared = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == "!shared:herald.test")
        .unwrap()["stream_ordering"]
        .as_i64()
        .unwrap();
    assert_eq!(shared, newest_shared);
}

async fn pdus_that_cannot_be_sent_are_refused_whole(backend: Backend) {
    let s = start(backend).await;
    let before = counts(&s).await;
    let mut float = event("$f", "!r:x", &["a.example"]);
    float["pdu"]["content"]["n"] = json!(1.5);
    let got = s
        .post_json(
            PDUS,
            Some(TOKEN),
            json!({ "events": [event("$ok", "!r:x", &["a.example"]), float] }),
        )
        .await;
    assert_eq!(got.0, 400, "{}", got.1);
    assert_eq!(got.1["errcode"], "M_BAD_JSON");
    assert!(
        got.1["error"].as_str().unwrap().contains("events[1].pdu"),
        "{}",
        got.1
    );

    let mut big = event("$big", "!r:x", &["a.example"]);
    big["pdu"]["content"]["body"] = json!("x".repeat(70_000));
    let got = s
        .post_json(PDUS, Some(TOKEN), json!({ "events": [big] }))
        .await;
    assert_eq!(
        (got.0, got.1["errcode"].as_str()),
        (400, Some("M_TOO_LARGE")),
        "{}",
        got.1
    );

    let mut float_edu =
        json!({"edu_type": "m.typing", "content": {"n": 0.5}, "destinations": ["a.example"]});
    let got = s
        .post_json(EDUS, Some(TOKEN), json!({ "edus": [float_edu.take()] }))
        .await;
    assert_eq!(
        (got.0, got.1["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{}",
        got.1
    );
    assert_eq!(counts(&s).await, before, "nothing stored");
}

async fn an_event_id_is_one_event_in_one_room(backend: Backend) {
    let s = start(backend).await;
    send(&s, vec![event("$e", "!one:x", &["a.example"])]).await;
    let got = s
        .post_json(
            PDUS,
            Some(TOKEN),
            json!({ "events": [event("$e", "!two:x", &["b.example"])] }),
        )
        .await;
    assert_eq!(
        (got.0, got.1["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{}",
        got.1
    );
    let got = s
        .post_json(
            PDUS,
            Some(TOKEN),
            json!({ "events": [event("$d", "!one:x", &["a.example"]), event("$d", "!two:x", &["a.example"])] }),
        )
        .await;
    assert_eq!(
        (got.0, got.1["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{}",
        got.1
    );
    // The same event again in its own room is fine and keeps its ordering.
    let again = send(&s, vec![event("$e", "!one:x", &["b.example"])]).await;
    let first = send(&s, vec![event("$e", "!one:x", &["a.example"])]).await;
    assert_eq!(again, first);
}

/// Two requests racing with the same new event ID in two rooms: the check
/// runs inside the commit, so exactly one is stored and the other is
/// refused, with nothing of it kept (before, both passed a check made
/// before the commit and both were acknowledged).
async fn racing_requests_cannot_store_one_event_id_in_two_rooms(backend: Backend) {
    let s = start(backend).await;
    for round in 0..20 {
        let id = format!("$race{round}");
        let mut tasks = Vec::new();
        for (room, destination) in [("!one:x", "a.example"), ("!two:x", "b.example")] {
            let client = s.client.clone();
            let url = s.url(PDUS);
            let body = json!({"events": [
                event(&format!("$own{round}{destination}"), room, &[destination]),
                event(&id, room, &[destination]),
            ]});
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                into_json(resp).await
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            if status != 200 {
                assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
            }
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(statuses, [200, 400], "round {round}");
    }
    // One event per race, and only the winners' own events beside them.
    assert_eq!(count(&s, "outgoing_events").await, 40);
    let rooms =
        s.db.i64s("SELECT COUNT(*) FROM outgoing_events GROUP BY room_id ORDER BY room_id")
            .await;
    assert_eq!(rooms.iter().sum::<i64>(), 40);
    let split =
        s.db.i64s(
            "SELECT COUNT(*) FROM outgoing_events o JOIN outgoing_events r \
             ON r.event_id = '$own' || substr(o.event_id, 6) || 'a.example' \
             OR r.event_id = '$own' || substr(o.event_id, 6) || 'b.example' \
             WHERE o.event_id LIKE '$race%' AND r.room_id != o.room_id",
        )
        .await[0];
    assert_eq!(
        split, 0,
        "a race's event and its winner's own event share a room"
    );
}

both_backends!(
    accepted_events_are_stored_in_order_and_fill_destination_rooms,
    orderings_keep_growing_across_a_reopen,
    whitelist_self_and_duplicates_are_skipped,
    every_bad_request_stores_nothing,
    authentication,
    edus_are_stored_per_destination,
    concurrent_requests_are_all_acknowledged,
    pdus_that_cannot_be_sent_are_refused_whole,
    an_event_id_is_one_event_in_one_room,
    racing_requests_cannot_store_one_event_id_in_two_rooms,
);
