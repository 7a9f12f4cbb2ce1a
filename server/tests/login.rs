//! The Matrix login routes an admin tool signs in through, over real HTTP,
//! every test on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::backend::Backend;
use common::*;
use herald::config::{RateLimit, RcLogin};
use serde_json::{json, Value};

async fn versions_flows_and_server_version(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert!(body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "v1.1"));
    for v in ["v3", "r0"] {
        let (status, body) = s.get(&format!("/_matrix/client/{v}/login"), None).await;
        assert_eq!(
            (status, body),
            (200, json!({"flows": [{"type": "m.login.password"}]}))
        );
    }
    let (status, body) = s.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(status, 200);
    assert!(body["server_version"]
        .as_str()
        .unwrap()
        .starts_with("Herald "));
}

async fn password_login_whoami_and_logout(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let (status, body) = s
        .post_json(
            "/_matrix/client/v3/login",
            None,
            login_body("admin", ADMIN_PASSWORD),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@admin:herald.test");
    assert_eq!(body["home_server"], "herald.test");
    let device = body["device_id"].as_str().unwrap().to_owned();
    let token = body["access_token"].as_str().unwrap().to_owned();

    let (status, who) = s
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        who,
        json!({"user_id": "@admin:herald.test", "device_id": device, "is_guest": false})
    );
    let (status, _) = s
        .get("/_matrix/client/r0/account/whoami", Some(&token))
        .await;
    assert_eq!(status, 200);

    // Tokens are stored only as hashes.
    let stored =
        s.db.i64s("SELECT CAST(length(token_hash) AS BIGINT) FROM access_tokens")
            .await;
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|&len| len == 32), "{stored:?}");
    assert_ne!(token.len(), 32);

    let (status, body) = s
        .post_json("/_matrix/client/v3/logout", Some(&token), json!({}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
        "Invalid access token passed.",
    );
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", None).await,
        401,
        "M_MISSING_TOKEN",
        "Missing access token",
    );
}

async fn legacy_user_field_full_user_id_and_r0_paths(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    for (path, body) in [
        (
            "/_matrix/client/r0/login",
            json!({"type": "m.login.password", "user": "admin", "password": ADMIN_PASSWORD}),
        ),
        (
            "/_matrix/client/v3/login",
            login_body("@Admin:herald.test", ADMIN_PASSWORD),
        ),
    ] {
        let (status, resp) = s.post_json(path, None, body).await;
        assert_eq!(status, 200, "{path}: {resp}");
        assert_eq!(resp["user_id"], "@admin:herald.test");
    }
    // Passwords are stored as Argon2id hashes.
    let hash =
        s.db.strings("SELECT password_hash FROM users WHERE name = 'admin'")
            .await;
    assert!(hash[0].starts_with("$argon2id$"), "{hash:?}");
}

async fn wrong_credentials_give_one_answer_and_bad_bodies_a_400(backend: Backend) {
    let s = TestServer::start_on(backend, |_| {}).await;
    let login = login_body;
    for body in [
        login("admin", "wrong"),
        login("nobody", "whatever"),
        login("@admin:other.server", ADMIN_PASSWORD),
    ] {
        assert_error(
            &s.post_json("/_matrix/client/v3/login", None, body).await,
            403,
            "M_FORBIDDEN",
            "Invalid username or password",
        );
    }
    let cases: &[(&str, u16, &str, &str)] = &[
        ("{not json", 400, "M_NOT_JSON", "Content not JSON."),
        ("[1,2]", 400, "M_BAD_JSON", "Content must be a JSON object."),
        ("{}", 400, "M_UNKNOWN", "Missing JSON keys."),
    ];
    for (body, status, errcode, error) in cases {
        assert_error(
            &s.post_raw("/_matrix/client/v3/login", None, body).await,
            *status,
            errcode,
            error,
        );
    }
    // Synapse's order: type, password, identifier, then the login type.
    let more: &[(&str, &str, &str)] = &[
        (r#"{"type": 1}"#, "M_INVALID_PARAM", "Bad parameter: type"),
        (
            r#"{"type": "m.login.password", "user": "admin"}"#,
            "M_INVALID_PARAM",
            "Bad parameter: password",
        ),
        (
            r#"{"type": "m.login.password", "password": "x"}"#,
            "M_INVALID_PARAM",
            "Invalid login submission",
        ),
        (
            r#"{"type": "m.login.password", "password": "x", "identifier": "admin"}"#,
            "M_MISSING_PARAM",
            "'identifier' dict has no key 'type'",
        ),
        (
            r#"{"type": "m.login.password", "password": "x", "identifier": {"type": "m.id.phone"}}"#,
            "M_UNKNOWN",
            "Unknown login identifier type",
        ),
        (
            r#"{"type": "m.login.password", "password": "x", "identifier": {"type": "m.id.user"}}"#,
            "M_UNKNOWN",
            "User identifier is missing 'user' key",
        ),
        (
            r#"{"type": "m.login.password", "password": "x", "user": 5}"#,
            "M_INVALID_PARAM",
            "Bad parameter: user",
        ),
        (
            r#"{"type": "m.login.foo", "user": "admin"}"#,
            "M_UNKNOWN",
            "Unknown login type m.login.foo",
        ),
    ];
    for (body, errcode, error) in more {
        assert_error(
            &s.post_raw("/_matrix/client/v3/login", None, body).await,
            400,
            errcode,
            error,
        );
    }
    let long = format!(
        r#"{{"type": "m.login.password", "user": "admin", "password": "{ADMIN_PASSWORD}", "device_id": "{}"}}"#,
        "D".repeat(513)
    );
    let resp = s
        .client
        .post(s.url("/_matrix/client/v3/login"))
        .body(long)
        .send()
        .await
        .unwrap();
    assert_error(
        &into_json(resp).await,
        400,
        "M_INVALID_PARAM",
        "device_id cannot be longer than 512 characters.",
    );
}

async fn failed_logins_are_rate_limited_per_user(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.rc_login.failed_attempts = RateLimit {
            per_second: 0.01,
            burst_count: 3.0,
        };
    })
    .await;
    let login = |password: &str| login_body("alice", password);
    for _ in 0..3 {
        assert_eq!(
            s.post_json("/_matrix/client/v3/login", None, login("wrong"))
                .await
                .0,
            403
        );
    }
    // Even the right password is refused while the account's bucket is empty.
    let (status, body) = s
        .post_json("/_matrix/client/v3/login", None, login(USER_PASSWORD))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000);
    // Another account is not affected by alice's failures.
    assert_eq!(s.login(ADMIN, ADMIN_PASSWORD).await.len(), 47);
}

/// A client whose connections come from `address` (127.0.0.x): the server
/// sees each as a different client address.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login_from(s: &TestServer, address: &str, user: &str, password: &str) -> (u16, Value) {
    let resp = client_from(address)
        .post(s.url("/_matrix/client/v3/login"))
        .json(&login_body(user, password))
        .send()
        .await
        .unwrap();
    into_json(resp).await
}

async fn every_login_attempt_counts_per_address(backend: Backend) {
    // Synapse's `rc_login.address`: successful logins count too.
    let s = TestServer::start_on(backend, |c| {
        c.rc_login.address = RateLimit {
            per_second: 0.01,
            burst_count: 3.0,
        };
    })
    .await;
    for user in ["u1", "u2"] {
        assert_eq!(login_from(&s, "127.0.0.4", user, "x").await.0, 403);
    }
    assert_eq!(
        login_from(&s, "127.0.0.4", ADMIN, ADMIN_PASSWORD).await.0,
        200
    );
    let (status, body) = login_from(&s, "127.0.0.4", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000, "{body}");
    // Another address is not affected.
    assert_eq!(
        login_from(&s, "127.0.0.5", ADMIN, ADMIN_PASSWORD).await.0,
        200
    );
}

async fn successful_logins_are_rate_limited_per_account(backend: Backend) {
    // Synapse's `rc_login.account`.
    let s = TestServer::start_on(backend, |c| {
        c.rc_login.account = RateLimit {
            per_second: 0.01,
            burst_count: 2.0,
        };
    })
    .await;
    for address in ["127.0.0.6", "127.0.0.7"] {
        assert_eq!(login_from(&s, address, USER, USER_PASSWORD).await.0, 200);
    }
    let (status, body) = login_from(&s, "127.0.0.8", USER, USER_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        login_from(&s, "127.0.0.8", ADMIN, ADMIN_PASSWORD).await.0,
        200
    );
}

/// The default limits (Synapse's `rc_login`): wrong passwords for `admin`
/// from one address lock out that address, not the admin.
async fn failures_from_elsewhere_do_not_lock_the_admin_out(backend: Backend) {
    let s = TestServer::start_on(backend, |c| c.rc_login = RcLogin::default()).await;
    for _ in 0..3 {
        let (status, body) = login_from(&s, "127.0.0.2", ADMIN, "wrong").await;
        assert_eq!(status, 403, "{body}");
    }
    // The failing address is held back, even with the right password.
    let (status, body) = login_from(&s, "127.0.0.2", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    // The admin, from an address that has not failed, logs in.
    let (status, body) = login_from(&s, "127.0.0.3", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@admin:herald.test");
    // A fresh address with a wrong password gets its answer, and is then
    // held back too while the account's limit is spent.
    assert_eq!(login_from(&s, "127.0.0.9", ADMIN, "wrong").await.0, 403);
    assert_eq!(
        login_from(&s, "127.0.0.9", ADMIN, ADMIN_PASSWORD).await.0,
        429
    );
}

async fn failed_logins_are_rate_limited_globally(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.rc_login.global_failed_attempts = RateLimit {
            per_second: 0.01,
            burst_count: 4.0,
        };
    })
    .await;
    // Four failures, each from its own address and for its own account.
    for i in 0..4 {
        let (status, _) = login_from(&s, &format!("127.0.1.{i}"), &format!("u{i}"), "x").await;
        assert_eq!(status, 403);
    }
    let (status, body) = login_from(&s, "127.0.1.9", "u9", "x").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
}

async fn login_forwarded_for(
    s: &TestServer,
    forwarded_for: &str,
    user: &str,
    password: &str,
) -> (u16, Value) {
    // Every request from the same TCP source, as behind a reverse proxy.
    let resp = client_from("127.0.0.1")
        .post(s.url("/_matrix/client/v3/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&login_body(user, password))
        .send()
        .await
        .unwrap();
    into_json(resp).await
}

/// Behind a reverse proxy every login comes from one address: with
/// `x_forwarded`, the limits count the client named first in
/// `X-Forwarded-For`, so failures from one client do not lock out another.
async fn x_forwarded_counts_the_forwarded_client(backend: Backend) {
    let s = TestServer::start_on(backend, |c| {
        c.rc_login = RcLogin::default();
        c.x_forwarded = true;
    })
    .await;
    for _ in 0..3 {
        let (status, body) = login_forwarded_for(&s, "10.0.0.1", ADMIN, "wrong").await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = login_forwarded_for(&s, "10.0.0.1", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    // The first value is the client's (Synapse's reading).
    let (status, body) = login_forwarded_for(&s, "10.0.0.2, 10.0.0.1", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
}

/// Without `x_forwarded` (the default) the header is ignored: the TCP
/// source that failed is held back whatever the header says.
async fn without_x_forwarded_the_header_is_ignored(backend: Backend) {
    let s = TestServer::start_on(backend, |c| c.rc_login = RcLogin::default()).await;
    for _ in 0..3 {
        let (status, body) = login_forwarded_for(&s, "10.0.0.1", ADMIN, "wrong").await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = login_forwarded_for(&s, "10.0.0.2", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
}

both_backends!(
    versions_flows_and_server_version,
    password_login_whoami_and_logout,
    legacy_user_field_full_user_id_and_r0_paths,
    wrong_credentials_give_one_answer_and_bad_bodies_a_400,
    failed_logins_are_rate_limited_per_user,
    every_login_attempt_counts_per_address,
    successful_logins_are_rate_limited_per_account,
    failures_from_elsewhere_do_not_lock_the_admin_out,
    failed_logins_are_rate_limited_globally,
    x_forwarded_counts_the_forwarded_client,
    without_x_forwarded_the_header_is_ignored,
);
