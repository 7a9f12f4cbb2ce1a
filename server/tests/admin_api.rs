//! The federation admin API over real HTTP against a real SQLite file and a
//! PostgreSQL database (every test on both),
//! checked against Synapse 1.163's observable behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::backend::Backend;
use common::*;
use serde_json::{json, Value};

const LIST: &str = "/_synapse/admin/v1/federation/destinations";

/// Synapse's own SQL for the list, run on the same database (see
/// `common::oracle`; on PostgreSQL with SQLite's NULL order, which Herald's
/// own list keeps on both backends).
async fn synapse_sql(
    server: &TestServer,
    order_by: &str,
    dir: &str,
    filter: Option<&str>,
    from: i64,
    limit: i64,
) -> (Vec<Value>, i64) {
    match &server.db.target {
        herald_store::DatabaseTarget::Sqlite(path) => {
            let pool = common::sql_pool(path).await;
            let found = oracle::synapse_list_sql(
                oracle::OracleDb::Sqlite(&pool),
                order_by,
                dir,
                filter,
                from,
                limit,
            )
            .await;
            pool.close().await;
            found
        }
        herald_store::DatabaseTarget::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let found = oracle::synapse_list_sql(
                oracle::OracleDb::PostgresSqliteNulls(&pool),
                order_by,
                dir,
                filter,
                from,
                limit,
            )
            .await;
            pool.close().await;
            found
        }
    }
}

async fn auth_is_checked_first_on_every_route(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let alice = s.login(USER, USER_PASSWORD).await;
    for path in [
        format!("{LIST}?from=-1"),
        format!("{LIST}/b.org"),
        format!("{LIST}/unknown.example/rooms?dir=x"),
    ] {
        assert_missing_token(&s.get(&path, None).await);
        let bad = s.get(&path, Some("hrd_nonsense")).await;
        assert_error(&bad, 401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
        assert_eq!(bad.1["soft_logout"], false);
        assert_not_admin(&s.get(&path, Some(&alice)).await);
    }
    let reset = format!("{LIST}/unknown.example/reset_connection");
    assert_missing_token(&s.post_raw(&reset, None, "{}").await);
    assert_not_admin(&s.post_raw(&reset, Some(&alice), "{}").await);
}

async fn token_may_come_from_the_query_but_not_from_both(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let token = s.admin_token().await;
    let (status, body) = s.get(&format!("{LIST}?access_token={token}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 11);
    assert_error(
        &s.get(&format!("{LIST}?access_token={token}"), Some(&token))
            .await,
        401,
        "M_MISSING_TOKEN",
        "Mixing Authorization headers and access_token query parameters.",
    );
    for header in ["Basic abc", "Bearer", "bearer x", "Bearer  x"] {
        assert_error(
            &s.get_with_auth_headers(LIST, &[header]).await,
            401,
            "M_MISSING_TOKEN",
            "Invalid Authorization header.",
        );
    }
    let bearer = format!("Bearer {token}");
    assert_error(
        &s.get_with_auth_headers(LIST, &[&bearer, &bearer]).await,
        401,
        "M_MISSING_TOKEN",
        "Too many Authorization headers.",
    );
}

async fn every_order_and_direction_matches_synapse_sql(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let token = s.admin_token().await;
    for order_by in [
        "destination",
        "retry_last_ts",
        "retry_interval",
        "failure_ts",
        "last_successful_stream_ordering",
    ] {
        for dir in ["f", "b"] {
            for (from, limit) in [(0, 100), (0, 4), (4, 4), (8, 4), (3, 0), (20, 5)] {
                let path =
                    format!("{LIST}?order_by={order_by}&dir={dir}&from={from}&limit={limit}");
                let (status, body) = s.get(&path, Some(&token)).await;
                assert_eq!(status, 200, "{path}: {body}");
                let (rows, total) = synapse_sql(&s, order_by, dir, None, from, limit).await;
                assert_eq!(body["destinations"], Value::Array(rows), "{path}");
                assert_eq!(body["total"], total, "{path}");
                let expect_token = (from + limit < total).then(|| {
                    (from + body["destinations"].as_array().unwrap().len() as i64).to_string()
                });
                assert_eq!(
                    body.get("next_token").and_then(Value::as_str),
                    expect_token.as_deref(),
                    "{path}"
                );
            }
        }
    }
}

async fn ties_break_by_name_ascending_even_backwards_and_nulls_sort_lowest(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let token = s.admin_token().await;
    let names = |body: &Value| -> Vec<String> {
        body["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["destination"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, body) = s
        .get(
            &format!("{LIST}?order_by=retry_last_ts&dir=b"),
            Some(&token),
        )
        .await;
    let n = names(&body);
    // Two rows share the largest retry_last_ts: "B.org" < "b.org" in byte order.
    assert_eq!(&n[..2], ["B.org", "b.org"]);
    // NULL is lowest: last when descending.
    assert_eq!(n.last().unwrap(), "never.example");
    let (_, body) = s
        .get(&format!("{LIST}?order_by=failure_ts"), Some(&token))
        .await;
    let rows = body["destinations"].as_array().unwrap();
    assert!(rows[0]["failure_ts"].is_null());
    // NULL timings show as 0 in the list.
    let never = rows
        .iter()
        .find(|r| r["destination"] == "never.example")
        .unwrap();
    assert_eq!(never["retry_last_ts"], 0);
    assert_eq!(never["retry_interval"], 0);
    assert!(never["last_successful_stream_ordering"].is_null());
    // Byte order: upper case and '[' before lower case.
    let (_, body) = s.get(LIST, Some(&token)).await;
    let n = names(&body);
    assert_eq!(&n[..3], ["B.org", "UPPER.Example.COM", "[::1]:8448"]);
}

async fn destination_filter_is_case_insensitive_and_literal(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let token = s.admin_token().await;
    for filter in [
        "ORG",
        "b.OR",
        "example",
        "%",
        "_",
        "under_",
        "pct%s",
        "[::1]",
        "nothing-matches",
        "e",
    ] {
        for (from, limit) in [(0, 100), (1, 2)] {
            let q = herald_shared::percent_encode(filter);
            let path = format!(
                "{LIST}?destination={q}&from={from}&limit={limit}&order_by=retry_interval&dir=b"
            );
            let (status, body) = s.get(&path, Some(&token)).await;
            assert_eq!(status, 200, "{path}");
            let (rows, total) =
                synapse_sql(&s, "retry_interval", "b", Some(filter), from, limit).await;
            assert_eq!(body["destinations"], Value::Array(rows), "{path}");
            assert_eq!(body["total"], total, "{path}");
        }
    }
    // `_` matches itself only: one row, not "underXscore.org" too.
    let (_, body) = s
        .get(&format!("{LIST}?destination=under_"), Some(&token))
        .await;
    assert_eq!(body["total"], 1);
    // An empty filter lists everything.
    let (_, body) = s.get(&format!("{LIST}?destination="), Some(&token)).await;
    assert_eq!(body["total"], 11);
}

async fn bad_parameters_get_synapses_errors_in_synapses_order(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let cases: &[(&str, &str, &str)] = &[
        ("from=abc", "M_INVALID_PARAM", "Query parameter from must be an integer"),
        ("from=-1", "M_INVALID_PARAM", "Query parameter from must be a positive integer."),
        ("limit=1.5", "M_INVALID_PARAM", "Query parameter limit must be an integer"),
        ("limit=-3", "M_INVALID_PARAM", "Query parameter limit must be a positive integer."),
        (
            "order_by=bogus",
            "M_INVALID_PARAM",
            "Query parameter 'order_by' must be one of ['destination', 'retry_last_ts', 'retry_interval', 'failure_ts', 'last_successful_stream_ordering']",
        ),
        ("dir=x", "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']"),
        ("dir=F", "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']"),
        ("destination=%C3%9C", "M_UNKNOWN", "Query parameter 'destination' must be ascii"),
        // Validation order: from, limit, destination, order_by, dir.
        ("dir=x&order_by=y&limit=z&from=w", "M_INVALID_PARAM", "Query parameter from must be an integer"),
        ("dir=x&order_by=y&limit=z", "M_INVALID_PARAM", "Query parameter limit must be an integer"),
        ("dir=x&order_by=y&destination=%C3%9C", "M_UNKNOWN", "Query parameter 'destination' must be ascii"),
        // Every value of a repeated string parameter must be valid.
        ("order_by=destination&order_by=x", "M_INVALID_PARAM", "Query parameter 'order_by' must be one of ['destination', 'retry_last_ts', 'retry_interval', 'failure_ts', 'last_successful_stream_ordering']"),
        // Deliberate deviations: plain decimal integers only, at most 2^63-1.
        ("from=1_0", "M_INVALID_PARAM", "Query parameter from must be an integer"),
        ("from=%2B5", "M_INVALID_PARAM", "Query parameter from must be an integer"),
        ("from=%205", "M_INVALID_PARAM", "Query parameter from must be an integer"),
        ("limit=9223372036854775808", "M_INVALID_PARAM", "Query parameter limit must be an integer no larger than 9223372036854775807"),
    ];
    for (query, errcode, error) in cases {
        assert_error(
            &s.get(&format!("{LIST}?{query}"), Some(&t)).await,
            400,
            errcode,
            error,
        );
    }
    // The first value of a repeated integer wins; later ones are not read.
    let (status, body) = s
        .get(&format!("{LIST}?from=10&from=x&limit=1"), Some(&t))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["destinations"].as_array().unwrap().len(), 1);
    assert!(body.get("next_token").is_none());
    // Limits up to 2^63-1 are fine.
    let (status, body) = s
        .get(
            &format!("{LIST}?limit=9223372036854775807&from=9223372036854775807"),
            Some(&t),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["destinations"], json!([]));
}

async fn details_follow_synapses_backoff_special_case(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let (status, body) = s.get(&format!("{LIST}/b.org"), Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"destination": "b.org", "retry_last_ts": 1_700_000_000_000i64, "retry_interval": 600_000,
               "failure_ts": 1_699_000_000_000i64, "last_successful_stream_ordering": 50})
    );
    // Not in backoff: the stored failure_ts (123) is hidden.
    let (_, body) = s.get(&format!("{LIST}/UPPER.Example.COM"), Some(&t)).await;
    assert_eq!(
        body,
        json!({"destination": "UPPER.Example.COM", "retry_last_ts": 0, "retry_interval": 0,
               "failure_ts": null, "last_successful_stream_ordering": 3})
    );
    // NULL retry_last_ts is "not in backoff" too.
    let (_, body) = s.get(&format!("{LIST}/never.example"), Some(&t)).await;
    assert_eq!(body["retry_last_ts"], 0);
    assert!(body["failure_ts"].is_null());
    // In backoff with a NULL interval: Synapse shows the null.
    let (_, body) = s.get(&format!("{LIST}/pct%25sign.org"), Some(&t)).await;
    assert!(body["retry_interval"].is_null(), "{body}");
    assert_eq!(body["retry_last_ts"], 5);
    // Lookups are exact: case matters, percent-escapes are decoded.
    assert_error(
        &s.get(&format!("{LIST}/upper.example.com"), Some(&t)).await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
    let (status, body) = s
        .get(&format!("{LIST}/matrix.example.org%3A8448"), Some(&t))
        .await;
    assert_eq!(
        (status, body["destination"].as_str()),
        (200, Some("matrix.example.org:8448"))
    );
    let (status, body) = s
        .get(&format!("{LIST}/%5B%3A%3A1%5D%3A8448"), Some(&t))
        .await;
    assert_eq!(
        (status, body["destination"].as_str()),
        (200, Some("[::1]:8448"))
    );
    // Invalid UTF-8 in the name is just an unknown destination.
    assert_error(
        &s.get(&format!("{LIST}/%FF"), Some(&t)).await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
}

async fn rooms_are_paginated_by_room_id_and_404_comes_before_parameters(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let mut expected: Vec<String> = seed_rooms().into_iter().map(|r| r.room_id).collect();
    expected.sort();
    let ids = |body: &Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = s.get(&format!("{LIST}/b.org/rooms"), Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), expected);
    assert_eq!(body["total"], 15);
    assert!(body.get("next_token").is_none());
    assert_eq!(body["rooms"][0]["stream_ordering"], 1000);
    let (_, body) = s
        .get(
            &format!("{LIST}/b.org/rooms?from=5&limit=5&dir=b"),
            Some(&t),
        )
        .await;
    let mut back = expected.clone();
    back.reverse();
    assert_eq!(ids(&body), back[5..10]);
    assert_eq!(body["next_token"], "10");
    // Pages in the second half (read from the other end by the store).
    for (query, want, next) in [
        ("from=10&limit=3", expected[10..13].to_vec(), Some("13")),
        ("from=12&limit=5", expected[12..15].to_vec(), None),
        ("from=8&limit=100&dir=b", back[8..15].to_vec(), None),
        ("from=14&limit=1&dir=b", back[14..15].to_vec(), None),
    ] {
        let (status, body) = s
            .get(&format!("{LIST}/b.org/rooms?{query}"), Some(&t))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), want, "{query}");
        assert_eq!(body["next_token"].as_str(), next, "{query}");
    }
    assert_error(
        &s.get(&format!("{LIST}/unknown.example/rooms?from=-1"), Some(&t))
            .await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
    assert_error(
        &s.get(&format!("{LIST}/b.org/rooms?from=-1"), Some(&t))
            .await,
        400,
        "M_INVALID_PARAM",
        "Query parameter from must be a positive integer.",
    );
    assert_error(
        &s.get(&format!("{LIST}/b.org/rooms?dir=up"), Some(&t)).await,
        400,
        "M_INVALID_PARAM",
        "Query parameter 'dir' must be one of ['b', 'f']",
    );
    let (_, body) = s.get(&format!("{LIST}/a.org/rooms"), Some(&t)).await;
    assert_eq!(body, json!({"rooms": [], "total": 0}));
}

async fn reset_connection_clears_backoff_once(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let reset = |name: &str| format!("{LIST}/{name}/reset_connection");
    assert_error(
        &s.post_raw(&reset("unknown.example"), Some(&t), "{}").await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
    assert_error(
        &s.post_raw(&reset("a.org"), Some(&t), "{}").await,
        400,
        "M_UNKNOWN",
        "The retry timing does not need to be reset for this destination.",
    );
    assert_error(
        &s.post_raw(&reset("never.example"), Some(&t), "").await,
        400,
        "M_UNKNOWN",
        "The retry timing does not need to be reset for this destination.",
    );
    // The body is ignored, as Synapse does, even when it is not JSON.
    let (status, body) = s
        .post_raw(&reset("matrix.example.org%3A8448"), Some(&t), "not json")
        .await;
    assert_eq!((status, body), (200, json!({})));
    let row = s
        .store
        .destinations
        .destination("matrix.example.org:8448")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.failure_ts, row.retry_last_ts, row.retry_interval),
        (None, Some(0), Some(0))
    );
    assert_eq!(
        row.last_successful_stream_ordering,
        Some(7),
        "delivery progress is kept"
    );
    // The list shows it at once, and a second reset is refused.
    let (_, body) = s
        .get(&format!("{LIST}?destination=matrix.example"), Some(&t))
        .await;
    assert_eq!(body["destinations"][0]["retry_last_ts"], 0);
    assert!(body["destinations"][0]["failure_ts"].is_null());
    assert_eq!(
        s.post_raw(&reset("matrix.example.org%3A8448"), Some(&t), "{}")
            .await
            .0,
        400
    );
}

async fn unknown_paths_wrong_methods_options_and_cors(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    for path in [
        "/_synapse/admin/v1/federation/destinations/b.org/",
        "/_synapse/admin/v1/federation/destinations/b.org/rooms/",
        "/_synapse/admin/v1/federation/destinations//reset_connection",
        "/_synapse/admin/v1/federation/nothing",
        "/_synapse/admin/v2/federation/destinations",
        "/_matrix/client/v3/nothing",
        "/_herald/nothing",
    ] {
        let resp = s.request("GET", path, Some(&t)).await;
        let got = into_json(resp).await;
        assert_eq!(got.0, 404, "{path}");
        assert_error(&got, 404, "M_UNRECOGNIZED", "Unrecognized request");
    }
    // A trailing slash on the list asks for destination "" (Synapse's pattern).
    assert_error(
        &s.get(&format!("{LIST}/"), Some(&t)).await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
    assert_error(
        &s.get(&format!("{LIST}//rooms"), Some(&t)).await,
        404,
        "M_NOT_FOUND",
        "Unknown destination",
    );
    for (method, path) in [
        ("DELETE", LIST.to_owned()),
        ("POST", format!("{LIST}/b.org")),
        ("GET", format!("{LIST}/b.org/reset_connection")),
        ("PUT", format!("{LIST}/b.org/rooms")),
        ("GET", "/_matrix/client/v3/logout".to_owned()),
    ] {
        // 405 comes before auth, as in Synapse.
        let resp = s.request(method, &path, None).await;
        assert_error(
            &into_json(resp).await,
            405,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        );
    }
    for path in [LIST, "/_matrix/client/v3/login", "/_anything/at/all"] {
        let resp = s.request("OPTIONS", path, None).await;
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    }
    let resp = s.request("GET", LIST, None).await;
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, HEAD, POST, PUT, DELETE, OPTIONS"
    );
    assert_eq!(
        h["access-control-allow-headers"],
        "X-Requested-With, Content-Type, Authorization, Date"
    );
    assert_eq!(
        h["access-control-expose-headers"],
        "Synapse-Trace-Id, Server"
    );
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

async fn hostile_input_never_yields_a_500(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let paths = [
        format!("{LIST}?from=%00&limit=%FF%FE"),
        format!("{LIST}?destination=%00"),
        format!("{LIST}?destination=%25%25%25&order_by=%00"),
        format!("{LIST}?&&&=&=x&from"),
        format!("{LIST}?limit=18446744073709551616"),
        format!("{LIST}/%00/rooms?from=1"),
        format!("{LIST}/{}", "x".repeat(5000)),
        format!("{LIST}/b.org/rooms?limit=9223372036854775807&from=9223372036854775807"),
        format!("{LIST}/a%2Fb/rooms"),
        "/_synapse/admin/v1/federation/destinations/%/rooms".to_owned(),
    ];
    for path in &paths {
        let resp = s.request("GET", path, Some(&t)).await;
        let status = resp.status().as_u16();
        assert!(status < 500, "{path}: {status}");
        let (_, body) = into_json(resp).await;
        if status >= 400 {
            assert!(body["errcode"].is_string(), "{path}: {body}");
        }
    }
}

async fn summary_counts_destinations_per_status(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let path = "/_herald/admin/v1/federation/summary";
    assert_missing_token(&s.get(path, None).await);
    let alice = s.login(USER, USER_PASSWORD).await;
    assert_not_admin(&s.get(path, Some(&alice)).await);
    let (status, body) = s.get(path, Some(&t)).await;
    assert_eq!(status, 200, "{body}");
    // The seed rows, by hand: all backoffs in the seed ended long ago.
    // healthy: a.org, [::1]:8448, UPPER.Example.COM, zeta.example
    // retry due: b.org, matrix.example.org:8448, pct%sign.org, under_score.org, underXscore.org
    // never reached: B.org; unknown: never.example
    assert_eq!(body["total"], 11);
    assert_eq!(body["healthy"], 4);
    assert_eq!(body["retry_due"], 5);
    assert_eq!(body["never_reached"], 1);
    assert_eq!(body["unknown"], 1);
    assert_eq!(body["backing_off"], 0);
    // A fresh failure moves a row to "backing off".
    let now = herald_store::now_ms();
    s.store
        .destinations
        .put_destinations(&[row(
            "zeta.example",
            Some(now),
            Some(3_600_000),
            Some(now),
            Some(1),
        )])
        .await
        .unwrap();
    let (_, body) = s.get(path, Some(&t)).await;
    assert_eq!(
        (body["healthy"].as_u64(), body["backing_off"].as_u64()),
        (Some(3), Some(1))
    );
}

async fn queue_view_needs_an_admin_and_a_known_destination(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let t = s.admin_token().await;
    let path = "/_herald/admin/v1/federation/destinations/a.org/queue";
    assert_missing_token(&s.get(path, None).await);
    let alice = s.login(USER, USER_PASSWORD).await;
    assert_not_admin(&s.get(path, Some(&alice)).await);
    let (status, body) = s.get(path, Some(&t)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"destination": "a.org", "state": "idle", "queued_pdus": 0,
                           "queued_edus": 0, "oldest_queued_ts": null})
    );
    // Names are percent-decoded as in Synapse's routes.
    let (status, body) = s
        .get(
            "/_herald/admin/v1/federation/destinations/%5B%3A%3A1%5D%3A8448/queue",
            Some(&t),
        )
        .await;
    assert_eq!(
        (status, &body["destination"]),
        (200, &serde_json::json!("[::1]:8448"))
    );
    let got = s
        .get(
            "/_herald/admin/v1/federation/destinations/unknown.example/queue",
            Some(&t),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND", "Unknown destination");
}

/// The same requests to a server on SQLite and one on PostgreSQL, seeded
/// alike, get the same answers, byte for byte (the summary but the time it
/// was computed for).
#[tokio::test]
async fn sqlite_and_postgresql_answer_alike() {
    let sqlite = TestServer::start_on(Backend::Sqlite, |_| {}).await;
    let pg = TestServer::start_on(Backend::Postgres, |_| {}).await;
    let (ts, tp) = (sqlite.admin_token().await, pg.admin_token().await);
    let mut paths = Vec::new();
    for order_by in [
        "destination",
        "retry_last_ts",
        "retry_interval",
        "failure_ts",
        "last_successful_stream_ordering",
    ] {
        for dir in ["f", "b"] {
            for query in [
                "",
                "&destination=ORG",
                "&from=3&limit=4",
                "&destination=%25",
            ] {
                paths.push(format!("{LIST}?order_by={order_by}&dir={dir}{query}"));
            }
        }
    }
    for name in [
        "b.org",
        "B.org",
        "never.example",
        "%5B%3A%3A1%5D%3A8448",
        "unknown.example",
    ] {
        paths.push(format!("{LIST}/{name}"));
        paths.push(format!("{LIST}/{name}/rooms?limit=4&from=2"));
        paths.push(format!("{LIST}/{name}/rooms?dir=b"));
        paths.push(format!(
            "/_herald/admin/v1/federation/destinations/{name}/queue"
        ));
    }
    for path in &paths {
        let a = sqlite.get(path, Some(&ts)).await;
        let b = pg.get(path, Some(&tp)).await;
        assert_eq!(a, b, "{path}");
    }
    let path = "/_herald/admin/v1/federation/summary";
    let (mut a, mut b) = (
        sqlite.get(path, Some(&ts)).await,
        pg.get(path, Some(&tp)).await,
    );
    for (_, body) in [&mut a, &mut b] {
        body.as_object_mut().unwrap().remove("now_ts");
    }
    assert_eq!(a, b);
}

both_backends!(
    auth_is_checked_first_on_every_route,
    token_may_come_from_the_query_but_not_from_both,
    every_order_and_direction_matches_synapse_sql,
    ties_break_by_name_ascending_even_backwards_and_nulls_sort_lowest,
    destination_filter_is_case_insensitive_and_literal,
    bad_parameters_get_synapses_errors_in_synapses_order,
    details_follow_synapses_backoff_special_case,
    rooms_are_paginated_by_room_id_and_404_comes_before_parameters,
    reset_connection_clears_backoff_once,
    unknown_paths_wrong_methods_options_and_cors,
    hostile_input_never_yields_a_500,
    summary_counts_destinations_per_status,
    queue_view_needs_an_admin_and_a_known_destination,
);
