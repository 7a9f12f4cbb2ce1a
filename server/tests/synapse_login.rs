//! Attached mode's logins and token verdicts against a fake Synapse: a real
//! axum server on 127.0.0.1 written here that answers the client and admin
//! endpoints Herald calls as Synapse 1.163 does, and counts what it is
//! asked, so the tests see when Herald asked Synapse and when it used its
//! `token_cache`. Herald runs in-process, attached to a real Synapse schema.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::synapse_db::SynapseDb;
use common::*;
use herald::config::{Config, ConfigDuration, SynapseSection};
use herald_store::{Store, SynapseSettings};
use parking_lot::Mutex;
use serde_json::{json, Value};

const LIST: &str = "/_synapse/admin/v1/federation/destinations";
/// The short `token_cache` of the test that sees it expire.
const TOKEN_CACHE: Duration = Duration::from_millis(300);
/// The `token_cache` of the others: nothing expires while they run, so
/// Synapse being asked again shows a verdict not kept (or forgotten).
const LONG_CACHE: Duration = Duration::from_secs(600);
/// The bound on any wait for Herald to do something.
const WITHIN: Duration = Duration::from_secs(20);

const ADMIN_TOKEN: &str = "syt_admin_token";
const ALICE_TOKEN: &str = "syt_alice_token";

/// What the fake Synapse knows and how often it was asked.
#[derive(Default)]
struct Fake {
    /// Valid tokens: user ID, server admin.
    tokens: Mutex<HashMap<String, (String, bool)>>,
    /// Answer 500 on whoami.
    whoami_fails: AtomicBool,
    logins: AtomicUsize,
    whoamis: AtomicUsize,
    admin_checks: AtomicUsize,
    logouts: AtomicUsize,
    resets: AtomicUsize,
    last_login: Mutex<Option<Value>>,
    last_reset_auth: Mutex<Option<String>>,
}

type FakeState = Arc<Fake>;

fn matrix_error(status: StatusCode, errcode: &str, error: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"errcode": errcode, "error": error})))
}

fn unknown_token() -> (StatusCode, Json<Value>) {
    // Synapse's `InvalidClientTokenError` (soft_logout false).
    (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": false}),
        ),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

impl Fake {
    fn owner(&self, headers: &HeaderMap) -> Result<(String, bool), (StatusCode, Json<Value>)> {
        let Some(token) = bearer(headers) else {
            return Err(matrix_error(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "Missing access token",
            ));
        };
        self.tokens
            .lock()
            .get(&token)
            .cloned()
            .ok_or_else(unknown_token)
    }
}

async fn server_version() -> Json<Value> {
    Json(json!({"server_version": "1.163.0"}))
}

async fn login(
    State(fake): State<FakeState>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    fake.logins.fetch_add(1, Ordering::SeqCst);
    *fake.last_login.lock() = Some(body.clone());
    let user = body["identifier"]["user"].as_str().unwrap_or_default();
    let (token, user_id, admin, password) = match user {
        "admin" => (ADMIN_TOKEN, "@admin:synapse.test", true, "admin-pw"),
        "alice" => (ALICE_TOKEN, "@alice:synapse.test", false, "alice-pw"),
        _ => ("", "", false, ""),
    };
    if token.is_empty() || body["password"] != password {
        return matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid username or password",
        );
    }
    fake.tokens
        .lock()
        .insert(token.to_owned(), (user_id.to_owned(), admin));
    (
        StatusCode::OK,
        Json(
            json!({"user_id": user_id, "access_token": token, "home_server": "synapse.test", "device_id": "DEVICE"}),
        ),
    )
}

async fn whoami(State(fake): State<FakeState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    fake.whoamis.fetch_add(1, Ordering::SeqCst);
    if fake.whoami_fails.load(Ordering::SeqCst) {
        return matrix_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        );
    }
    match fake.owner(&headers) {
        Ok((user_id, _)) => (
            StatusCode::OK,
            Json(json!({"user_id": user_id, "device_id": "DEVICE", "is_guest": false})),
        ),
        Err(e) => e,
    }
}

async fn user_admin(
    State(fake): State<FakeState>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    fake.admin_checks.fetch_add(1, Ordering::SeqCst);
    match fake.owner(&headers) {
        Ok((_, false)) => matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "You are not a server admin",
        ),
        Ok((_, true)) => {
            let admin = fake
                .tokens
                .lock()
                .values()
                .any(|(id, admin)| *id == user && *admin);
            (StatusCode::OK, Json(json!({"admin": admin})))
        }
        Err(e) => e,
    }
}

async fn logout(State(fake): State<FakeState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    fake.logouts.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = fake.owner(&headers) {
        return e;
    }
    if let Some(token) = bearer(&headers) {
        fake.tokens.lock().remove(&token);
    }
    (StatusCode::OK, Json(json!({})))
}

async fn reset_connection(
    State(fake): State<FakeState>,
    Path(destination): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    fake.resets.fetch_add(1, Ordering::SeqCst);
    *fake.last_reset_auth.lock() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match fake.owner(&headers) {
        Ok((_, true)) => {}
        Ok((_, false)) => {
            return matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "You are not a server admin",
            )
        }
        Err(e) => return e,
    }
    match destination.as_str() {
        "b.org" => (StatusCode::OK, Json(json!({}))),
        "a.org" => matrix_error(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "The retry timing does not need to be reset for this destination.",
        ),
        _ => matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Unknown destination"),
    }
}

/// The fake Synapse, serving until `stop` is sent.
struct FakeSynapse {
    state: FakeState,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSynapse {
    async fn start() -> FakeSynapse {
        let state = FakeState::default();
        let app = Router::new()
            .route("/_synapse/admin/v1/server_version", get(server_version))
            .route("/_matrix/client/v3/login", post(login))
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route("/_synapse/admin/v1/users/{user}/admin", get(user_admin))
            .route("/_matrix/client/v3/logout", post(logout))
            .route(
                "/_synapse/admin/v1/federation/destinations/{d}/reset_connection",
                post(reset_connection),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeSynapse {
            state,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving and waits until every connection is closed.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WITHIN, &mut self.task)
            .await
            .expect("the fake Synapse stops")
            .unwrap();
    }

    fn count(&self, which: fn(&Fake) -> &AtomicUsize) -> usize {
        which(&self.state).load(Ordering::SeqCst)
    }
}

/// Herald attached to a real Synapse schema and to the fake Synapse.
struct Attached {
    fake: FakeSynapse,
    base: String,
    client: reqwest::Client,
    _db: SynapseDb,
    _dir: tempfile::TempDir,
}

async fn attach(token_cache: Duration) -> Attached {
    let fake = FakeSynapse::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = SynapseDb::sqlite(dir.path()).await;
    for r in seed_rows() {
        db.put_row(&r).await;
    }
    let own = dir.path().join("herald.db");
    let interval = Duration::from_millis(200);
    let store = Store::open_attached(
        &own,
        &SynapseSettings {
            database: db.setting(),
            refresh_interval: interval,
        },
    )
    .await
    .unwrap();
    let mut config = Config::loopback(SERVER_NAME, own);
    config.synapse = Some(SynapseSection {
        database: db.setting(),
        url: format!("http://{}", fake.addr),
        refresh_interval: ConfigDuration(interval),
        token_cache: ConfigDuration(token_cache),
    });
    let addr = herald::serve::spawn(store, config).await.unwrap();
    Attached {
        fake,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _db: db,
        _dir: dir,
    }
}

impl Attached {
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_json(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.post("/_matrix/client/v3/login", None, login_body(user, password))
            .await
    }

    /// Asks `path` until Synapse has been asked `whoami` more than `before`
    /// times, within [`WITHIN`]; the last answer.
    async fn until_asked(&self, path: &str, token: &str, before: usize) -> (u16, Value) {
        let start = Instant::now();
        loop {
            let got = self.get(path, token).await;
            if self.fake.count(|f| &f.whoamis) > before {
                return got;
            }
            assert!(
                start.elapsed() < WITHIN,
                "Herald did not ask Synapse again within {WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_admin_logs_in_through_synapse_and_its_verdict_is_cached() {
    let a = attach(TOKEN_CACHE).await;
    let (status, body) = a.login("admin", "admin-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], ADMIN_TOKEN);
    assert_eq!(body["user_id"], "@admin:synapse.test");
    assert_eq!(a.fake.count(|f| &f.logins), 1);
    // The body is forwarded as the client sent it.
    assert_eq!(
        a.fake.state.last_login.lock().clone().unwrap(),
        login_body("admin", "admin-pw")
    );

    let asked = Instant::now();
    let (status, body) = a.get(LIST, ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], seed_rows().len());
    assert_eq!(a.fake.count(|f| &f.whoamis), 1);
    assert_eq!(a.fake.count(|f| &f.admin_checks), 1);

    // Within token_cache Synapse is not asked again: ten more requests ask
    // it at most once per token_cache gone by (once, on a machine not too
    // loaded to make them within 300 ms).
    for _ in 0..10 {
        let (status, _) = a.get(LIST, ADMIN_TOKEN).await;
        assert_eq!(status, 200);
    }
    let periods = (asked.elapsed().as_millis() / TOKEN_CACHE.as_millis()) as usize;
    assert!(
        a.fake.count(|f| &f.whoamis) <= 1 + periods,
        "the verdict was not cached: {} whoami in {periods} periods",
        a.fake.count(|f| &f.whoamis)
    );
    assert_eq!(
        a.fake.count(|f| &f.whoamis),
        a.fake.count(|f| &f.admin_checks)
    );

    // After token_cache: asked again.
    tokio::time::sleep_until((asked + TOKEN_CACHE).into()).await;
    let before = a.fake.count(|f| &f.whoamis);
    let (status, body) = a.until_asked(LIST, ADMIN_TOKEN, before).await;
    assert_eq!(status, 200, "{body}");
    assert!(a.fake.count(|f| &f.admin_checks) >= 2);
}

#[tokio::test]
async fn a_non_admin_may_ask_whoami_but_not_the_list() {
    let a = attach(LONG_CACHE).await;
    let (status, body) = a.login("alice", "alice-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_not_admin(&a.get(LIST, ALICE_TOKEN).await);
    let (status, body) = a
        .get("/_matrix/client/v3/account/whoami", ALICE_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:synapse.test");
    assert_eq!(body["device_id"], "DEVICE");
    // The reset is refused by Herald before Synapse is asked.
    assert_not_admin(
        &a.post(
            &format!("{LIST}/b.org/reset_connection"),
            Some(ALICE_TOKEN),
            json!({}),
        )
        .await,
    );
    assert_eq!(a.fake.count(|f| &f.resets), 0);
    // One verdict (a user, not an admin: Synapse's 403), kept.
    assert_eq!(a.fake.count(|f| &f.whoamis), 1);
    assert_eq!(a.fake.count(|f| &f.admin_checks), 1);
}

#[tokio::test]
async fn unknown_tokens_are_cached_and_synapse_failing_is_not() {
    let a = attach(LONG_CACHE).await;
    let got = a.get(LIST, "syt_nobody").await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
    assert_eq!(got.1["soft_logout"], false);
    assert_eq!(a.fake.count(|f| &f.whoamis), 1);
    let got = a.get(LIST, "syt_nobody").await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
    assert_eq!(a.fake.count(|f| &f.whoamis), 1, "a 401 was not cached");

    // Synapse failing: its 500 is passed on and not kept.
    a.fake.state.whoami_fails.store(true, Ordering::SeqCst);
    let (status, _) = a.login("admin", "admin-pw").await;
    assert_eq!(status, 200);
    let before = a.fake.count(|f| &f.whoamis);
    let got = a.get(LIST, ADMIN_TOKEN).await;
    assert_error(&got, 500, "M_UNKNOWN", "Internal server error");
    a.fake.state.whoami_fails.store(false, Ordering::SeqCst);
    let (status, body) = a.get(LIST, ADMIN_TOKEN).await;
    assert_eq!(status, 200, "the 500 was cached: {body}");
    assert_eq!(a.fake.count(|f| &f.whoamis), before + 2);
}

#[tokio::test]
async fn logout_wrong_password_reset_and_synapse_down() {
    let mut a = attach(LONG_CACHE).await;
    // A wrong password: Synapse's 403 passed on.
    let got = a.login("admin", "wrong").await;
    assert_error(&got, 403, "M_FORBIDDEN", "Invalid username or password");
    assert_eq!(a.fake.count(|f| &f.logins), 1);

    let (status, _) = a.login("admin", "admin-pw").await;
    assert_eq!(status, 200);
    let (status, _) = a.get(LIST, ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(a.fake.count(|f| &f.whoamis), 1);

    // reset_connection: forwarded with the admin's token; Synapse's
    // answers passed on.
    let reset = |d: &str| format!("{LIST}/{d}/reset_connection");
    let (status, body) = a.post(&reset("b.org"), Some(ADMIN_TOKEN), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        a.fake.state.last_reset_auth.lock().as_deref(),
        Some(&*format!("Bearer {ADMIN_TOKEN}"))
    );
    let got = a.post(&reset("a.org"), Some(ADMIN_TOKEN), json!({})).await;
    assert_error(
        &got,
        400,
        "M_UNKNOWN",
        "The retry timing does not need to be reset for this destination.",
    );
    let got = a
        .post(&reset("nowhere.example"), Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_error(&got, 404, "M_NOT_FOUND", "Unknown destination");
    assert_eq!(a.fake.count(|f| &f.resets), 3);

    // Logout: forwarded; the token is refused at once, although its
    // verdict was cached (Synapse not asked for the resets).
    assert_eq!(a.fake.count(|f| &f.whoamis), 1);
    let (status, body) = a
        .post("/_matrix/client/v3/logout", Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({}));
    assert_eq!(a.fake.count(|f| &f.logouts), 1);
    let got = a.get(LIST, ADMIN_TOKEN).await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
    assert_eq!(a.fake.count(|f| &f.whoamis), 2);

    // Synapse down: 502 M_UNKNOWN, for a login and an unknown token alike.
    a.fake.stop().await;
    let got = a.login("admin", "admin-pw").await;
    assert_eq!(got.0, 502, "{}", got.1);
    assert_eq!(got.1["errcode"], "M_UNKNOWN");
    let got = a.get(LIST, "syt_never_seen").await;
    assert_eq!(got.0, 502, "{}", got.1);
    assert_eq!(got.1["errcode"], "M_UNKNOWN");
    assert!(
        got.1["error"].as_str().unwrap().contains("[synapse] url"),
        "{}",
        got.1
    );
}
