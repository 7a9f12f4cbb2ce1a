//! A simulated remote homeserver on 127.0.0.1: a real HTTPS server with its
//! own signing key and key server, that receives federation transactions
//! (`PUT /_matrix/federation/v1/send/{txnId}`) the way a homeserver does: it
//! reads `Authorization: X-Matrix`, fetches the origin's key from the
//! origin's key server over TLS (cached), checks that answer's
//! self-signature and validity and the request's signature, and only then
//! looks at the body. It records what it accepted, and behaves as told
//! ([`Behaviour`]): slow, flaky (500s), rate-limiting (429), rejecting (401),
//! down for a while or for good (connections refused), refusing some PDUs.
//! Its name is `127.0.0.1:<port>`.
//!
//! The demo runs several; the sender's tests and benchmarks use them as
//! receivers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::federation_listener::TlsListener;
use herald_keys::x_matrix::{verify_request, XMatrix};
use herald_keys::{verify_json, ServerKeys, SigningKey, VerifyKey};
use herald_store::now_ms;

/// How a simulated homeserver behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Time taken before answering a transaction.
    pub delay: Duration,
    /// Share of transactions answered `500` (0.0–1.0).
    pub failure_rate: f64,
    /// Every n-th transaction is answered `429` with `retry_after_ms`.
    pub rate_limit_every: Option<u64>,
    /// Every transaction is answered `401` (as if our key were wrong).
    pub reject_all: bool,
    /// Every transaction is answered `200` with an HTML page, not JSON (as
    /// a misconfigured reverse proxy does).
    pub html_answers: bool,
    /// Every transaction's answer carries `Connection: close`, so each
    /// one comes over a new connection (as from a server that closes idle
    /// connections before the sender's pool does).
    pub close_connections: bool,
    /// `delay` holds back every answer (the key server's and
    /// `/_matrix/federation/v1/version` too), not only transactions'.
    pub delay_every_request: bool,
    /// Not listening for this long after start (connections refused).
    pub down_for: Duration,
    /// Never listening: its port is bound (so nothing else takes it) but
    /// not listened on, so every connection is refused.
    pub refuse_connections: bool,
    /// PDUs (by `event_id`) acknowledged with an error.
    pub refuse_event_ids: HashSet<String>,
    /// Seed of the draws for `failure_rate` (tests, to replay a run);
    /// `None`: from the operating system.
    pub seed: Option<u64>,
}

impl Behaviour {
    pub fn healthy() -> Behaviour {
        Behaviour::default()
    }
}

/// A transaction it accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedTxn {
    pub txn_id: String,
    pub origin: String,
    pub origin_server_ts: i64,
    /// Each PDU's `event_id` field (test PDUs carry one), or `""`.
    pub event_ids: Vec<String>,
    /// Each PDU's `room_id`.
    pub room_ids: Vec<String>,
    pub edu_types: Vec<String>,
}

/// What it saw.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Accepted transactions, in arrival order.
    pub transactions: Vec<ReceivedTxn>,
    /// The transaction ID of every `PUT /send` that reached it, answered
    /// or not, in arrival order.
    pub attempts: Vec<String>,
    /// When each of `attempts` arrived (tests measure the gaps between
    /// tries by these, not by polling).
    pub attempt_times: Vec<std::time::Instant>,
    /// Requests refused because the signature did not check out.
    pub unauthenticated: u64,
    /// Answers it gave, by status.
    pub statuses: HashMap<u16, u64>,
    /// The most `PUT /send` requests it was handling at once (a sender
    /// keeps one transaction in flight per destination: more than one
    /// means two senders overlapped).
    pub max_in_flight: u64,
}

impl Received {
    /// Every PDU event ID received, in order (repeats included).
    pub fn event_ids(&self) -> Vec<String> {
        self.transactions
            .iter()
            .flat_map(|t| t.event_ids.iter().cloned())
            .collect()
    }
}

/// Why it could not start.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
    #[error("cannot make its signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Cert(#[from] super::tls::CertError),
}

struct Inner {
    name: String,
    keys: ServerKeys,
    behaviour: Mutex<Behaviour>,
    /// Answer every transaction with this status, when set (tests).
    forced_status: Mutex<Option<u16>>,
    received: Mutex<Received>,
    counter: AtomicU64,
    /// `PUT /send` requests being handled now.
    in_flight: AtomicU64,
    /// Fetches origins' keys (HTTPS, trusting the client TLS config given).
    http: reqwest::Client,
    /// Origins' verify keys by (origin, key id), until `valid_until_ts`.
    key_cache: Mutex<HashMap<(String, String), (VerifyKey, i64)>>,
    key_fetches: AtomicU64,
    /// Draws for `failure_rate`.
    rng: Mutex<rand::rngs::StdRng>,
}

/// A running simulated homeserver. Dropping it does not stop it; it stops
/// with the runtime.
#[derive(Clone)]
pub struct Homeserver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Homeserver {
    /// Starts one on a free port of 127.0.0.1, presenting `server_tls`,
    /// fetching origins' keys with `client_tls`.
    pub async fn start(
        behaviour: Behaviour,
        server_tls: Arc<rustls::ServerConfig>,
        client_tls: Arc<rustls::ClientConfig>,
    ) -> Result<Homeserver, HomeserverError> {
        let port = if behaviour.refuse_connections {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            Port::Held(socket)
        } else {
            Port::Listening(TcpListener::bind("127.0.0.1:0").await?)
        };
        let addr = match &port {
            Port::Held(socket) => socket.local_addr()?,
            Port::Listening(tcp) => tcp.local_addr()?,
        };
        let name = addr.to_string();
        let key = SigningKey::generate("sim1").map_err(|e| HomeserverError::Key(e.to_string()))?;
        let down_for = behaviour.down_for;
        let rng = match behaviour.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        let inner = Arc::new(Inner {
            keys: ServerKeys::new(name.clone(), key),
            name,
            behaviour: Mutex::new(behaviour),
            forced_status: Mutex::new(None),
            received: Mutex::new(Received::default()),
            counter: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            http: key_client(client_tls)?,
            key_cache: Mutex::new(HashMap::new()),
            key_fetches: AtomicU64::new(0),
            rng: Mutex::new(rng),
        });
        let app = Router::new()
            .route("/_matrix/key/v2/server", get(key_server))
            .route("/_matrix/federation/v1/version", get(version))
            .route("/_matrix/federation/v1/send/{txn_id}", put(receive))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})),
                )
            })
            // A transaction of 50 PDUs at the spec's 64 KiB each is over
            // axum's default 2 MB.
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(inner.clone());
        let tcp = match port {
            Port::Listening(tcp) => tcp,
            Port::Held(socket) => {
                // Bound and never listened on, until the runtime stops.
                tokio::spawn(async move {
                    let _held = socket;
                    std::future::pending::<()>().await
                });
                return Ok(Homeserver { addr, inner });
            }
        };
        if down_for.is_zero() {
            let listener = TlsListener::new(tcp, server_tls)?;
            tokio::spawn(async move { axum::serve(listener, app).await });
        } else {
            // Down: nothing listens on the port until the time is up.
            drop(tcp);
            tokio::spawn(async move {
                tokio::time::sleep(down_for).await;
                for _ in 0..50 {
                    match TcpListener::bind(addr).await {
                        Ok(tcp) => {
                            if let Ok(listener) = TlsListener::new(tcp, server_tls) {
                                tracing::info!(server = %addr, "simulated homeserver is back");
                                let _ = axum::serve(listener, app).await;
                            }
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                tracing::warn!(server = %addr, "simulated homeserver could not take its port back");
            });
        }
        Ok(Homeserver { addr, inner })
    }

    /// Starts one presenting `cert` and trusting only it (the setup of the
    /// demo and the tests).
    pub async fn start_with_cert(
        behaviour: Behaviour,
        cert: &super::tls::LoopbackCert,
    ) -> Result<Homeserver, HomeserverError> {
        Homeserver::start(behaviour, cert.server_config()?, cert.client_config()?).await
    }

    /// Its server name, `127.0.0.1:<port>`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of what it has seen so far.
    pub fn received(&self) -> Received {
        self.inner.received.lock().clone()
    }

    /// How many PDUs it accepted (repeats included).
    pub fn pdu_count(&self) -> usize {
        self.inner
            .received
            .lock()
            .transactions
            .iter()
            .map(|t| t.event_ids.len())
            .sum()
    }

    /// How often it fetched an origin's keys.
    pub fn key_fetches(&self) -> u64 {
        self.inner.key_fetches.load(Ordering::Relaxed)
    }

    /// Answers every transaction with `status` from now on (`None`: behave
    /// as configured again).
    pub fn force_status(&self, status: Option<u16>) {
        *self.inner.forced_status.lock() = status;
    }

    /// Changes its behaviour.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.inner.behaviour.lock() = behaviour;
    }
}

/// Its port: listened on, or only bound ([`Behaviour::refuse_connections`]).
enum Port {
    Listening(TcpListener),
    Held(tokio::net::TcpSocket),
}

/// Waits `delay` when [`Behaviour::delay_every_request`] says so.
async fn delay_if_everywhere(inner: &Inner) {
    let delay = {
        let behaviour = inner.behaviour.lock();
        behaviour.delay_every_request.then_some(behaviour.delay)
    };
    if let Some(delay) = delay.filter(|d| !d.is_zero()) {
        tokio::time::sleep(delay).await;
    }
}

async fn key_server(State(inner): State<Arc<Inner>>) -> Response {
    delay_if_everywhere(&inner).await;
    let valid_until = u64::try_from(now_ms() + 3_600_000).unwrap_or(0);
    match inner.keys.key_server_response(valid_until) {
        Ok(body) => Json(body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errcode": "M_UNKNOWN", "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn version(State(inner): State<Arc<Inner>>) -> Json<Value> {
    delay_if_everywhere(&inner).await;
    Json(json!({"server": {"name": "Herald simulated homeserver", "version": "1"}}))
}

fn error(status: u16, errcode: &str, text: &str) -> (u16, Value) {
    (status, json!({"errcode": errcode, "error": text}))
}

/// Counts a `PUT /send` as in flight until it is answered or dropped (the
/// sender gave up on it and the connection went).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> InFlight<'a> {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut received = inner.received.lock();
        received.max_in_flight = received.max_in_flight.max(now);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    Path(txn_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&inner);
    if inner.behaviour.lock().html_answers {
        let mut received = inner.received.lock();
        received.attempts.push(txn_id);
        received.attempt_times.push(std::time::Instant::now());
        *received.statuses.entry(200).or_default() += 1;
        return axum::response::Html("<html><body>Welcome to nginx!</body></html>").into_response();
    }
    let (status, answer) = answer(&inner, &txn_id, &uri, &headers, &body).await;
    *inner.received.lock().statuses.entry(status).or_default() += 1;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(answer)).into_response();
    if inner.behaviour.lock().close_connections {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn answer(
    inner: &Inner,
    txn_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (u16, Value) {
    {
        let mut received = inner.received.lock();
        received.attempts.push(txn_id.to_owned());
        received.attempt_times.push(std::time::Instant::now());
    }
    let behaviour = inner.behaviour.lock().clone();
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    if let Some(status) = *inner.forced_status.lock() {
        return error(status, "M_UNKNOWN", "told to fail");
    }
    let n = inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
    if behaviour.reject_all {
        return error(401, "M_UNAUTHORIZED", "Invalid signature (simulated)");
    }
    if behaviour
        .rate_limit_every
        .is_some_and(|every| every > 0 && n.is_multiple_of(every))
    {
        return (
            429,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 500}),
        );
    }
    if behaviour.failure_rate > 0.0 && inner.rng.lock().gen_bool(behaviour.failure_rate.min(1.0)) {
        return error(500, "M_UNKNOWN", "Internal server error (simulated)");
    }
    let content: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(400, "M_NOT_JSON", &format!("Content not JSON: {e}")),
    };
    let uri = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let origin = match authenticate(inner, uri, headers, &content).await {
        Ok(origin) => origin,
        Err(reason) => {
            inner.received.lock().unauthenticated += 1;
            tracing::warn!(server = %inner.name, %reason, "refused an unauthenticated transaction");
            return error(401, "M_UNAUTHORIZED", &reason);
        }
    };
    if content["origin"].as_str() != Some(origin.as_str()) {
        return error(
            400,
            "M_FORBIDDEN",
            "origin differs from the authenticated server",
        );
    }
    let pdus = content["pdus"].as_array().cloned().unwrap_or_default();
    let edus = content["edus"].as_array().cloned().unwrap_or_default();
    if pdus.len() > 50 || edus.len() > 100 {
        return error(400, "M_BAD_JSON", "too many PDUs or EDUs");
    }
    let field = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let event_ids: Vec<String> = pdus.iter().map(|p| field(p, "event_id")).collect();
    let mut results = Map::new();
    for id in event_ids.iter().filter(|id| !id.is_empty()) {
        let result = if behaviour.refuse_event_ids.contains(id) {
            json!({"error": "Event refused (simulated)"})
        } else {
            json!({})
        };
        results.insert(id.clone(), result);
    }
    inner.received.lock().transactions.push(ReceivedTxn {
        txn_id: txn_id.to_owned(),
        origin,
        origin_server_ts: content["origin_server_ts"].as_i64().unwrap_or(0),
        room_ids: pdus.iter().map(|p| field(p, "room_id")).collect(),
        event_ids,
        edu_types: edus.iter().map(|e| field(e, "edu_type")).collect(),
    });
    (200, json!({ "pdus": results }))
}

/// The origin the request is signed by, once its signature checks out.
async fn authenticate(
    inner: &Inner,
    uri: &str,
    headers: &HeaderMap,
    content: &Value,
) -> Result<String, String> {
    let header = headers
        .get("authorization")
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let x = XMatrix::parse(header).map_err(|e| e.to_string())?;
    let key = origin_key(inner, &x.origin, &x.key_id).await?;
    verify_request(&x, "PUT", uri, &inner.name, Some(content), &key).map_err(|e| e.to_string())?;
    Ok(x.origin)
}

/// `origin`'s key `key_id`, from the cache or its key server.
async fn origin_key(inner: &Inner, origin: &str, key_id: &str) -> Result<VerifyKey, String> {
    let cache_key = (origin.to_owned(), key_id.to_owned());
    if let Some((key, until)) = inner.key_cache.lock().get(&cache_key) {
        if *until > now_ms() {
            return Ok(*key);
        }
    }
    let keys = fetch_keys(&inner.http, origin).await?;
    inner.key_fetches.fetch_add(1, Ordering::Relaxed);
    if keys["server_name"] != origin {
        return Err(format!(
            "{origin}'s key server answers for {}",
            keys["server_name"]
        ));
    }
    let published = |id: &str| -> Result<VerifyKey, String> {
        let text = keys["verify_keys"][id]["key"]
            .as_str()
            .ok_or_else(|| format!("{origin} publishes no key {id}"))?;
        VerifyKey::from_base64(text).map_err(|e| e.to_string())
    };
    let self_signatures = keys["signatures"][origin]
        .as_object()
        .filter(|s| !s.is_empty())
        .ok_or("the key server answer is not self-signed")?;
    for id in self_signatures.keys() {
        verify_json(origin, id, &published(id)?, &keys)
            .map_err(|e| format!("key server answer: {e}"))?;
    }
    let until = keys["valid_until_ts"].as_i64().unwrap_or(0);
    if until <= now_ms() {
        return Err(format!("{origin}'s keys expired at {until}"));
    }
    let key = published(key_id)?;
    inner.key_cache.lock().insert(cache_key, (key, until));
    Ok(key)
}

/// The client that fetches origins' keys: TLS as `tls` says, no proxy, no
/// redirects, 10 s per fetch.
fn key_client(tls: Arc<rustls::ClientConfig>) -> Result<reqwest::Client, HomeserverError> {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| HomeserverError::Key(format!("key client: {e}")))
}

/// `GET https://<origin>/_matrix/key/v2/server`, for origins named by an IP
/// literal and port (the demo's and the tests'); at most 64 KiB.
async fn fetch_keys(client: &reqwest::Client, origin: &str) -> Result<Value, String> {
    let addr: SocketAddr = origin
        .parse()
        .map_err(|_| format!("{origin}: only 127.0.0.1:<port> origins are fetched here"))?;
    let fetch = async {
        let mut response = client
            .get(format!("https://{addr}/_matrix/key/v2/server"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > 64 * 1024 {
                return Err("key answer over 64 KiB".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    fetch
        .await
        .map_err(|e: String| format!("fetching {origin}'s keys: {e}"))
}
