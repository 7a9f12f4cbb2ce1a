//! The federation client (`herald_federation::client`) against real HTTPS
//! receivers on 127.0.0.1 (axum over the federation listener's
//! `TlsListener`, an rcgen certificate for the IP trusted through
//! `federation_custom_ca_list`). Receivers check what they get: the X-Matrix
//! signature against the sender's key, `Host`, `User-Agent`, canonical JSON
//! bodies, method and URI with query. Destinations are IP literals with
//! ports, so the TLS name is 127.0.0.1; `ip_range_whitelist` lets them pass
//! the default blacklist except in the test that shows it blocks them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald::config::Config;
use herald::federation_listener::TlsListener;
use herald_federation::backoff::RetryLimiter;
use herald_federation::client::{
    ClientSettings, FederationClient, FederationError, RequestOptions,
};
use herald_federation::dns::Dns;
use herald_federation::resolve::ServerResolver;
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::signing::{SigningKey, VerifyKey};
use herald_keys::x_matrix::{verify_request, XMatrix};
use herald_keys::{to_canonical_json, ServerKeys};
use herald_store::RetryTimings;
use herald_store::Store;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const ORIGIN: &str = "origin.test";

/// One certificate for 127.0.0.1, shared by every receiver: (cert PEM, key DER).
fn certificate() -> &'static (String, Vec<u8>) {
    static CERT: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        (certified.cert.pem(), certified.key_pair.serialize_der())
    })
}

/// What a receiver answers next.
#[derive(Clone)]
enum Reply {
    Json(u16, Value),
    Raw(u16, &'static str, Vec<u8>),
    Redirect(&'static str),
    /// A chunked body of this many bytes.
    Stream(usize),
    Slow(Duration),
    /// Headers after the first delay, the body after the second.
    SlowBody(Duration, Duration),
    /// `200 {"ok": true}` with `Connection: close`: the connection is not
    /// kept alive.
    Closing,
    /// This many bytes of body at once, then nothing for this long, then
    /// `{}` (JSON: spaces, then the object).
    Stall(usize, Duration),
}

/// What a receiver got, and whether it checked out.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    host: String,
    user_agent: String,
    content_type: Option<String>,
    body: Vec<u8>,
    /// The X-Matrix signature and canonical body check.
    verified: Result<(), String>,
}

struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone)]
struct ReceiverState {
    name: String,
    verify_key: VerifyKey,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(verify_key: VerifyKey) -> Receiver {
        let (cert_pem, key_der) = certificate();
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener::new(tcp, Arc::new(config)).unwrap();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = ReceiverState {
            name: addr.to_string(),
            verify_key,
            script: script.clone(),
            seen: seen.clone(),
        };
        let app = axum::Router::new().fallback(receive).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script, seen }
    }

    fn name(&self) -> String {
        self.addr.to_string()
    }

    fn then(&self, reply: Reply) -> &Self {
        self.script.lock().push_back(reply);
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    fn assert_all_verified(&self) {
        for s in self.seen() {
            assert_eq!(s.verified, Ok(()), "{s:?}");
            assert_eq!(s.host, self.name());
            assert_eq!(
                s.user_agent,
                format!("Herald/{}", env!("CARGO_PKG_VERSION"))
            );
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let uri_text = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let verified = (|| {
        let auth = header("authorization").ok_or("no Authorization")?;
        let x = XMatrix::parse(&auth).map_err(|e| e.to_string())?;
        if x.origin != ORIGIN {
            return Err(format!("origin {}", x.origin));
        }
        let content: Option<Value> = if body.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if to_canonical_json(&v).map_err(|e| e.to_string())?.as_bytes() != &body[..] {
                return Err("body is not canonical JSON".into());
            }
            if header("content-type").as_deref() != Some("application/json") {
                return Err("body without Content-Type: application/json".into());
            }
            Some(v)
        };
        verify_request(
            &x,
            method.as_str(),
            &uri_text,
            &state.name,
            content.as_ref(),
            &state.verify_key,
        )
        .map_err(|e| e.to_string())
    })();
    state.seen.lock().push(Seen {
        method: method.to_string(),
        uri: uri_text,
        host: header("host").unwrap_or_default(),
        user_agent: header("user-agent").unwrap_or_default(),
        content_type: header("content-type"),
        body: body.to_vec(),
        verified,
    });
    let reply = state.script.lock().pop_front();
    match reply.unwrap_or(Reply::Json(200, json!({"ok": true}))) {
        Reply::Json(status, v) => {
            (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response()
        }
        Reply::Raw(status, content_type, bytes) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            bytes,
        )
            .into_response(),
        Reply::Redirect(location) => (
            StatusCode::FOUND,
            [("location", location), ("content-type", "application/json")],
            "{}",
        )
            .into_response(),
        Reply::Stream(n) => {
            let chunks = (0..n.div_ceil(4096)).map(move |i| {
                let len = 4096.min(n - i * 4096);
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; len]))
            });
            (
                [("content-type", "application/json")],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        }
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            axum::Json(json!({"slow": true})).into_response()
        }
        Reply::Closing => {
            ([("connection", "close")], axum::Json(json!({"ok": true}))).into_response()
        }
        Reply::Stall(n, pause) => {
            let first =
                futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![b' '; n]))]);
            let rest = futures_util::stream::once(async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
            });
            (
                [("content-type", "application/json")],
                Body::from_stream(futures_util::StreamExt::chain(first, rest)),
            )
                .into_response()
        }
        Reply::SlowBody(headers, body) => {
            tokio::time::sleep(headers).await;
            let later = futures_util::stream::once(async move {
                tokio::time::sleep(body).await;
                Ok::<_, std::io::Error>(Bytes::from_static(br#"{"slow": true}"#))
            });
            (
                [("content-type", "application/json")],
                Body::from_stream(later),
            )
                .into_response()
        }
    }
}

struct Env {
    client: Arc<FederationClient>,
    store: Store,
    verify_key: VerifyKey,
    _dir: tempfile::TempDir,
}

/// The environment's client rebuilt with other limits (it must be the only
/// handle to it).
fn reconfigured(
    client: Arc<FederationClient>,
    change: impl FnOnce(FederationClient) -> FederationClient,
) -> Arc<FederationClient> {
    Arc::new(change(
        Arc::try_unwrap(client).ok().expect("only one handle"),
    ))
}

async fn env_with(tweak: impl FnOnce(&mut Config, &mut ClientSettings)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ca: PathBuf = dir.path().join("ca.pem");
    std::fs::write(&ca, &certificate().0).unwrap();
    let mut config = Config::loopback(ORIGIN, dir.path().join("herald.db"));
    config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
    config.federation_custom_ca_list = Some(vec![ca]);
    let mut settings = config.client_settings();
    settings.retry_delay_scale = 0.01;
    tweak(&mut config, &mut settings);
    config.validate().unwrap();
    let store = Store::open_target(&config.database.target()).await.unwrap();
    let key = SigningKey::generate("a_test").unwrap();
    let verify_key = key.verify_key();
    let keys = Arc::new(ServerKeys::new(ORIGIN, key));
    let tls = config.tls_client_config().unwrap();
    // No name here needs DNS: destinations are IP literals.
    let dns = || Dns::with_nameserver("127.0.0.1:9".parse().unwrap());
    let well_known = WellKnownResolver::new(
        dns(),
        WellKnownConfig::new(tls.clone()),
        Arc::new(SystemClock),
    );
    let resolver = Arc::new(ServerResolver::new(dns(), well_known));
    let limiter = RetryLimiter::new(store.destinations.clone(), config.backoff_policy());
    let client = FederationClient::new(
        keys,
        resolver,
        limiter,
        config.ip_filter().unwrap(),
        tls,
        settings,
    );
    Env {
        client: Arc::new(client),
        store,
        verify_key,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(|_, _| {}).await
}

async fn backoff(store: &Store, destination: &str) -> Option<RetryTimings> {
    store.destinations.retry_timings(destination).await.unwrap()
}

#[tokio::test]
async fn get_and_put_are_signed_and_canonical() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(200, json!({"name": "remote"})));
    let got: Value = env
        .client
        .get_json(
            &r.name(),
            "/_matrix/federation/v1/query/profile?user_id=%40a%3Aorigin.test&field=displayname",
            RequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, json!({"name": "remote"}));
    let body = json!({"pdus": [], "origin": ORIGIN, "b": 1, "a": "é"});
    let got: Value = env
        .client
        .put_json(
            &r.name(),
            "/_matrix/federation/v1/send/txn1",
            Some(&body),
            RequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, json!({"ok": true}));
    let seen = r.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "/_matrix/federation/v1/query/profile?user_id=%40a%3Aorigin.test&field=displayname"
    );
    assert!(seen[0].body.is_empty());
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(seen[1].uri, "/_matrix/federation/v1/send/txn1");
    assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[1].body, to_canonical_json(&body).unwrap().into_bytes());
    r.assert_all_verified();
    // Both went over one kept-alive connection, now idle again.
    assert_eq!(env.client.idle_connections(), 1);
    assert_eq!(backoff(&env.store, &r.name()).await, None);
}

#[tokio::test]
async fn post_and_delete_and_get_file() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    let _: Value = env
        .client
        .post_json(
            &r.name(),
            "/_matrix/x",
            Some(&json!({})),
            RequestOptions::default(),
        )
        .await
        .unwrap();
    let _: Value = env
        .client
        .delete_json(&r.name(), "/_matrix/y", RequestOptions::default())
        .await
        .unwrap();
    r.then(Reply::Raw(200, "image/png", vec![7u8; 5000]));
    let mut file = Vec::new();
    let (len, headers) = env
        .client
        .get_file(
            &r.name(),
            "/_matrix/media/z",
            &mut file,
            10_000,
            RequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((len, file.len()), (5000, 5000));
    assert_eq!(headers["content-type"], "image/png");
    r.then(Reply::Raw(200, "image/png", vec![7u8; 5000]));
    let mut file = Vec::new();
    let e = env
        .client
        .get_file(
            &r.name(),
            "/_matrix/media/z",
            &mut file,
            4999,
            RequestOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::TooLarge { limit: 4999, .. }),
        "{e}"
    );
    let methods: Vec<_> = r.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["POST", "DELETE", "GET", "GET"]);
    assert_eq!(r.seen()[0].body, b"{}");
    r.assert_all_verified();
}

/// A writer whose every write fails (a full disk, say).
struct FailingWriter;

impl tokio::io::AsyncWrite for FailingWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::Error::other("disk full")))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A file over the caller's limit says nothing of the server's health
/// (its backoff is neither cleared nor grown), and a failure to write the
/// file here is no failure of the server's.
#[tokio::test]
async fn get_file_counts_neither_a_too_large_file_nor_a_local_write_error() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    let name = r.name();
    // In backoff but due: the request goes ahead, and a success would clear it.
    let long_ago = chrono_ms() - 3_600_000;
    let due = RetryTimings {
        failure_ts: Some(long_ago),
        retry_last_ts: long_ago,
        retry_interval: 1_000,
    };
    env.store
        .destinations
        .set_retry_timings(&name, due)
        .await
        .unwrap();
    r.then(Reply::Raw(200, "image/png", vec![7u8; 5000]));
    let e = env
        .client
        .get_file(
            &name,
            "/_matrix/media/big",
            &mut Vec::new(),
            100,
            RequestOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::TooLarge { .. }), "{e}");
    assert_eq!(backoff(&env.store, &name).await, Some(due));
    // Healthy, and the local write fails: the backoff stays clear.
    env.store
        .destinations
        .set_retry_timings(&name, RetryTimings::default())
        .await
        .unwrap();
    r.then(Reply::Raw(200, "image/png", vec![7u8; 5000]));
    let e = env
        .client
        .get_file(
            &name,
            "/_matrix/media/z",
            &mut FailingWriter,
            10_000,
            RequestOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    let after = backoff(&env.store, &name).await.unwrap_or_default();
    assert_eq!(after.retry_interval, 0, "{after:?}");
    assert_eq!(r.seen().len(), 2);
}

#[tokio::test]
async fn a_429_is_retried_then_succeeds() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(429, json!({"errcode": "M_LIMIT_EXCEEDED"})))
        .then(Reply::Json(429, json!({"errcode": "M_LIMIT_EXCEEDED"})))
        .then(Reply::Json(200, json!({"third": true})));
    let got: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(got, json!({"third": true}));
    assert_eq!(r.seen().len(), 3);
    r.assert_all_verified();
    assert_eq!(backoff(&env.store, &r.name()).await, None);
}

#[tokio::test]
async fn a_500_is_not_retried_but_counts_as_a_failure() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(
        500,
        json!({"errcode": "M_UNKNOWN", "error": "boom"}),
    ));
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    match &e {
        FederationError::Http {
            status: 500,
            error: Some(m),
            ..
        } => {
            assert_eq!(
                (m.errcode.as_str(), m.error.as_deref()),
                ("M_UNKNOWN", Some("boom"))
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert_eq!(r.seen().len(), 1);
    let timings = backoff(&env.store, &r.name()).await.expect("in backoff");
    assert_eq!(timings.retry_interval, 600_000);
    // Now in backoff: not contacted, unless backoff is ignored.
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::NotRetrying {
                retry_interval: 600_000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(r.seen().len(), 1);
    let options = RequestOptions {
        ignore_backoff: true,
        ..Default::default()
    };
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", options)
        .await
        .unwrap();
    assert_eq!(r.seen().len(), 2);
    // Success cleared the backoff.
    assert_eq!(backoff(&env.store, &r.name()).await, None);
}

#[tokio::test]
async fn a_404_counts_only_with_backoff_on_404() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(404, json!({"errcode": "M_NOT_FOUND"})));
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::Http { status: 404, .. }));
    assert!(!e.is_retryable());
    assert_eq!(backoff(&env.store, &r.name()).await, None);
    r.then(Reply::Json(404, json!({"errcode": "M_NOT_FOUND"})));
    let options = RequestOptions {
        backoff_on_404: true,
        ..Default::default()
    };
    env.client
        .get_json::<Value>(&r.name(), "/_matrix/a", options)
        .await
        .unwrap_err();
    assert!(backoff(&env.store, &r.name()).await.is_some());
    assert_eq!(r.seen().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_then_send_failed() {
    let env = env().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = Instant::now();
    let e = env
        .client
        .get_json::<Value>(&name, "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::SendFailed {
                retryable: true,
                ..
            }
        ),
        "{e}"
    );
    // 3 retries: 0.5 + 1 + 2 s × 0.8..1.4, scaled by 0.01.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(28), "{elapsed:?}");
    let timings = backoff(&env.store, &name).await.expect("failure recorded");
    assert_eq!(timings.retry_interval, 600_000);
}

#[tokio::test]
async fn an_explicit_timeout_means_no_retries() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(429, json!({"errcode": "M_LIMIT_EXCEEDED"})));
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", options)
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::Http { status: 429, .. }),
        "{e}"
    );
    assert_eq!(r.seen().len(), 1);
    // And the timeout holds: a slow answer fails once, retryable.
    r.then(Reply::Slow(Duration::from_secs(3)));
    let options = RequestOptions {
        timeout: Some(Duration::from_millis(300)),
        ignore_backoff: true,
        ..Default::default()
    };
    let started = Instant::now();
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/slow", options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FederationError::SendFailed {
                retryable: true,
                ..
            }
        ),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.seen().len(), 2);
}

#[tokio::test]
async fn answers_must_be_json_and_not_too_large() {
    let env = env_with(|_, s| s.max_response_size = 100_000).await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Raw(200, "text/html", b"<html></html>".to_vec()));
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::InvalidResponse { .. }), "{e}");
    assert!(!e.is_retryable());
    // An answer that cannot be used is the destination failing: backoff.
    let t = backoff(&env.store, &r.name()).await.unwrap();
    assert!(t.failure_ts.is_some() && t.retry_interval > 0, "{t:?}");
    // A chunked body (no Content-Length) is cut off while streaming.
    r.then(Reply::Stream(300_000));
    let ignore_backoff = RequestOptions {
        ignore_backoff: true,
        ..RequestOptions::default()
    };
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/b", ignore_backoff)
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::TooLarge { limit: 100_000, .. }),
        "{e}"
    );
    // JSON but not the type asked for is no better.
    r.then(Reply::Json(200, json!(["a", "list"])));
    let e = env
        .client
        .get_json::<serde_json::Map<String, Value>>(&r.name(), "/_matrix/c", ignore_backoff)
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::InvalidResponse { .. }), "{e}");
    // A usable answer clears the backoff.
    r.then(Reply::Json(200, json!({"ok": 1})));
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/d", ignore_backoff)
        .await
        .unwrap();
    let t = backoff(&env.store, &r.name()).await.unwrap_or_default();
    assert_eq!((t.failure_ts, t.retry_interval), (None, 0), "{t:?}");
    assert_eq!(r.seen().len(), 4);
}

/// The cap is per call: a caller asks for less than the client's
/// `max_response_size` (the sender's `/send` answers: 1 MiB, so a long but
/// honest answer — a receiver replays it for the same transaction ID —
/// passes, and cannot wedge the destination).
#[tokio::test]
async fn a_call_can_cap_the_answer_below_the_default() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    let capped = RequestOptions {
        max_response_size: Some(herald_sender::SEND_ANSWER_MAX_SIZE),
        ..RequestOptions::default()
    };
    // 50 PDUs with 2 KB error texts each: about 100 KB, accepted.
    let pdus: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("$event{i}"), json!({"error": "x".repeat(2_000)})))
        .collect();
    let long = json!({ "pdus": pdus });
    r.then(Reply::Json(200, long.clone()));
    let got: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", capped)
        .await
        .unwrap();
    assert_eq!(got, long);
    r.then(Reply::Stream(1_100_000));
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", capped)
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::TooLarge { limit, .. } if limit == 1024 * 1024),
        "{e}"
    );
}

#[tokio::test]
async fn the_default_limit_is_100_mib_by_content_length() {
    let env = env().await;
    assert_eq!(env.client.settings().max_response_size, 100 * 1024 * 1024);
    // A raw server declaring a 200 MiB body: refused from the header.
    let (cert_pem, key_der) = certificate();
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = tcp.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Two connections: one per client below.
        for _ in 0..2 {
            let (stream, _) = tcp.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(stream).await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 209715200\r\n\r\n";
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&[b' '; 1024]).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    // With the default 64 MiB answer budget, a JSON answer is capped at
    // the budget (it is held whole in it).
    let e = env
        .client
        .get_json::<Value>(&name, "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::TooLarge { limit, .. } if limit == 64 * 1024 * 1024),
        "{e}"
    );
    // With a budget larger than 100 MiB, the cap is the 100 MiB limit (the
    // first refusal put the server in backoff).
    let client = reconfigured(env.client, |c| c.with_answer_budget(128 * 1024 * 1024));
    let options = RequestOptions {
        ignore_backoff: true,
        ..RequestOptions::default()
    };
    let e = client
        .get_json::<Value>(&name, "/_matrix/a", options)
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::TooLarge { limit, .. } if limit == 100 * 1024 * 1024),
        "{e}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Redirect("/_matrix/elsewhere"));
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::Http { status: 302, .. }),
        "{e}"
    );
    let uris: Vec<_> = r.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/_matrix/a"]);
}

#[tokio::test]
async fn the_default_blacklist_blocks_loopback() {
    let env = env_with(|c, _| c.ip_range_whitelist.clear()).await;
    let r = Receiver::start(env.verify_key).await;
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, FederationError::BlockedIp { ip, .. } if ip.is_loopback()),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert!(r.seen().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn the_domain_whitelist_denies_others_before_anything_else() {
    let env = env_with(|c, s| {
        c.federation_domain_whitelist = Some(vec!["allowed.test".into()]);
        s.domain_whitelist = Some(["allowed.test".to_owned()].into());
    })
    .await;
    let r = Receiver::start(env.verify_key).await;
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FederationError::DeniedByWhitelist(d) if *d == r.name()),
        "{e}"
    );
    assert!(r.seen().is_empty());
    assert_eq!(backoff(&env.store, &r.name()).await, None);
}

#[tokio::test]
async fn trailing_slash_on_400_unrecognized() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(
        400,
        json!({"errcode": "M_UNRECOGNIZED", "error": "no"}),
    ));
    let options = RequestOptions {
        try_trailing_slash_on_400: true,
        ..Default::default()
    };
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a?x=1", options)
        .await
        .unwrap();
    let uris: Vec<_> = r.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/_matrix/a?x=1", "/_matrix/a/?x=1"]);
    r.assert_all_verified();
}

/// An admin's reset while a try is under way is not undone when that try
/// fails later: the failure is recorded as a first failure after the reset
/// (a fresh backoff at `destination_min_retry_interval`, as Synapse starts
/// one after a reset), not grown from the timings read before it.
#[tokio::test]
async fn a_reset_during_a_slow_failing_answer_is_not_overwritten() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    let name = r.name();
    // An hour of backoff, due: the request goes ahead.
    let long_ago = chrono_ms() - 7_200_000;
    env.store
        .destinations
        .set_retry_timings(
            &name,
            RetryTimings {
                failure_ts: Some(long_ago),
                retry_last_ts: long_ago,
                retry_interval: 3_600_000,
            },
        )
        .await
        .unwrap();
    // Headers at once, the body too late for the 2 s deadline.
    r.then(Reply::SlowBody(Duration::ZERO, Duration::from_secs(5)));
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(2)),
        ..RequestOptions::default()
    };
    let request = tokio::spawn({
        let (client, name) = (env.client.clone(), name.clone());
        async move {
            client
                .get_json::<Value>(&name, "/_matrix/slow", options)
                .await
        }
    });
    let waiting = Instant::now();
    while r.seen().is_empty() {
        assert!(waiting.elapsed() < Duration::from_secs(5), "no request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reset_at = chrono_ms();
    env.store
        .destinations
        .reset_retry_timings(&name, None)
        .await
        .unwrap();
    let e = request.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("within 2s"), "{e}");
    let t = backoff(&env.store, &name).await.unwrap();
    assert!(t.failure_ts.unwrap() >= reset_at, "{t:?}");
    assert!(
        t.retry_interval < 3_600_000,
        "grown from before the reset: {t:?}"
    );
}

#[tokio::test]
async fn a_reset_wakes_a_retry_sleep() {
    // Real delays: long retries sleep 4 s × 0.8..1.4 before the second try.
    let env = env_with(|_, s| s.retry_delay_scale = 1.0).await;
    let r = Receiver::start(env.verify_key).await;
    let name = r.name();
    // In backoff but due, so the request goes ahead and a reset has
    // something to clear.
    let long_ago = chrono_ms() - 3_600_000;
    env.store
        .destinations
        .set_retry_timings(
            &name,
            RetryTimings {
                failure_ts: Some(long_ago),
                retry_last_ts: long_ago,
                retry_interval: 1_000,
            },
        )
        .await
        .unwrap();
    r.then(Reply::Json(429, json!({"errcode": "M_LIMIT_EXCEEDED"})));
    let client = env.client.clone();
    // The client itself listens for resets (to forget cached resolutions).
    let listening = env.store.destinations.reset_listeners();
    let started = Instant::now();
    let request = tokio::spawn({
        let name = name.clone();
        async move {
            let options = RequestOptions {
                long_retries: true,
                ..Default::default()
            };
            client.get_json::<Value>(&name, "/_matrix/a", options).await
        }
    });
    // The reset must come while the client sleeps before its retry, i.e.
    // once it listens for resets (it subscribes after the 429).
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.store.destinations.reset_listeners() <= listening {
        assert!(
            Instant::now() < deadline,
            "the client never waited for a reset (seen: {:?})",
            r.seen()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.store
        .destinations
        .reset_retry_timings(&name, None)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), request)
        .await
        .expect("the reset woke the sleep")
        .unwrap()
        .unwrap();
    assert_eq!(got, json!({"ok": true}));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(r.seen().len(), 2);
    assert_eq!(backoff(&env.store, &name).await, None);
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn certificates_are_verified_unless_turned_off() {
    // System roots only: our self-signed receiver is refused.
    let env = env_with(|c, _| c.federation_custom_ca_list = None).await;
    let r = Receiver::start(env.verify_key).await;
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", options)
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::SendFailed { .. }), "{e}");
    assert!(r.seen().is_empty());
    // federation_verify_certificates = false: accepted.
    let env = env_with(|c, _| {
        c.federation_custom_ca_list = None;
        c.federation_verify_certificates = false;
    })
    .await;
    let r = Receiver::start(env.verify_key).await;
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap();
    r.assert_all_verified();
}

#[tokio::test]
async fn a_request_sleeping_between_retries_holds_no_try_slot() {
    // One try at a time; the sleep before the retry is 0.8–1.4 s.
    let env = env_with(|_, s| s.retry_delay_scale = 2.0).await;
    let client = reconfigured(env.client, |c| c.with_concurrent_tries(1));
    let slow = Receiver::start(env.verify_key).await;
    slow.then(Reply::Json(429, json!({"errcode": "M_LIMIT_EXCEEDED"})))
        .then(Reply::Json(200, json!({"slow": true})));
    let quick = Receiver::start(env.verify_key).await;
    quick.then(Reply::Json(200, json!({"quick": true})));
    // The client itself listens for resets (to forget cached resolutions).
    let listening = env.store.destinations.reset_listeners();

    let first = {
        let (client, name) = (client.clone(), slow.name());
        tokio::spawn(async move {
            client
                .get_json::<Value>(&name, "/_matrix/slow", RequestOptions::default())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // It got its 429 and gave the slot back: it now sleeps before its
    // retry, listening for resets.
    while env.store.destinations.reset_listeners() <= listening {
        assert!(Instant::now() < deadline, "the first request never slept");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // While the first sleeps before its retry, the only slot is free.
    let asked = Instant::now();
    let got: Value = client
        .get_json(&quick.name(), "/_matrix/quick", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(got, json!({"quick": true}));
    assert!(
        asked.elapsed() < Duration::from_millis(600),
        "waited {:?} for the slot",
        asked.elapsed()
    );
    assert_eq!(
        slow.seen().len(),
        1,
        "the quick request did not wait for the retry"
    );
    assert_eq!(first.await.unwrap().unwrap(), json!({"slow": true}));
    assert_eq!(slow.seen().len(), 2);
}

/// One deadline per try covers the answer's headers and its whole body:
/// 0.7 s to the headers and 0.7 s more to the body is past a 1 s timeout
/// (two separate 1 s timeouts would let it through, and a body trickled
/// forever would get a fresh timeout after headers that took nearly one).
#[tokio::test]
async fn one_deadline_covers_the_headers_and_the_whole_body() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::SlowBody(
        Duration::from_millis(700),
        Duration::from_millis(700),
    ));
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(1)),
        ..RequestOptions::default()
    };
    let started = Instant::now();
    let e = env
        .client
        .get_json::<Value>(&r.name(), "/_matrix/a", options)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, FederationError::SendFailed { .. }), "{e}");
    assert!(e.to_string().contains("within 1s"), "{e}");
    // The error (not a late success) and its "within 1s" are what catch two
    // separate timeouts; the time only bounds the wait, loosely, since it
    // also holds TLS setup and the SQLite write on a loaded machine.
    assert!(took < Duration::from_secs(3), "{took:?}");
    // It counts against the destination.
    let t = backoff(&env.store, &r.name()).await.unwrap();
    assert!(t.retry_interval > 0, "{t:?}");
}

/// A server that accepts TCP connections and never says anything; counts
/// them.
async fn silent_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = tcp.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = tcp.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (name, accepted)
}

/// With one try slot, held by a connection to a server that accepts TCP
/// and never answers (no TLS handshake: `connect_timeout` ends it), a
/// destination with a kept-alive connection is still served at once: a try
/// on an open connection needs no slot. A cold destination waits for the
/// slot, which the silent one gives back after its connect timeout.
#[tokio::test]
async fn a_kept_alive_destination_does_not_wait_behind_one_that_never_answers() {
    let env = env_with(|_, s| {
        s.connect_timeout = Duration::from_secs(2);
        s.max_short_retries = 0;
    })
    .await;
    let client = reconfigured(env.client, |c| c.with_concurrent_tries(1));
    let warm = Receiver::start(env.verify_key).await;
    let cold = Receiver::start(env.verify_key).await;
    let _: Value = client
        .get_json(&warm.name(), "/_matrix/warm", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(client.idle_connections(), 1);
    let (silent, accepted) = silent_server().await;
    let started = Instant::now();
    let hanging = {
        let (client, silent) = (client.clone(), silent.clone());
        tokio::spawn(async move {
            client
                .get_json::<Value>(&silent, "/_matrix/x", RequestOptions::default())
                .await
        })
    };
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "never connected"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let asked = Instant::now();
    let got: Value = client
        .get_json(&warm.name(), "/_matrix/warm", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(got, json!({"ok": true}));
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "the kept-alive destination waited {:?}",
        asked.elapsed()
    );
    // The cold one needs the slot: it gets it when the silent one's
    // connect timeout ends.
    let _: Value = client
        .get_json(&cold.name(), "/_matrix/cold", RequestOptions::default())
        .await
        .unwrap();
    let e = hanging.await.unwrap().unwrap_err();
    assert!(matches!(e, FederationError::SendFailed { .. }), "{e}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(4)).contains(&took),
        "{took:?}"
    );
    assert_eq!(warm.seen().len(), 2);
    assert_eq!(cold.seen().len(), 1);
}

/// A try keeps its slot until its body is read, so answers being read at
/// once (and the memory they hold) are bounded by the slots: with one
/// slot, a cold destination waits while another's body is still coming.
#[tokio::test]
async fn a_try_holds_its_slot_until_its_body_is_read() {
    let env = env().await;
    let client = reconfigured(env.client, |c| c.with_concurrent_tries(1));
    let slow = Receiver::start(env.verify_key).await;
    slow.then(Reply::SlowBody(Duration::ZERO, Duration::from_millis(800)));
    let other = Receiver::start(env.verify_key).await;
    let reading = {
        let (client, name) = (client.clone(), slow.name());
        tokio::spawn(async move {
            client
                .get_json::<Value>(&name, "/_matrix/slow", RequestOptions::default())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let asked = Instant::now();
    let _: Value = client
        .get_json(&other.name(), "/_matrix/b", RequestOptions::default())
        .await
        .unwrap();
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "got a slot after {:?}, while the other body was still coming",
        asked.elapsed()
    );
    assert_eq!(reading.await.unwrap().unwrap(), json!({"slow": true}));
}

/// Finding M4 of the review: with every ordinary try slot held by tries to
/// servers that never answer (and more such tries queued for them), a
/// destination that answered well last time but whose connection was
/// closed (remotes close idle connections before our pool does) takes a
/// reserved slot at once instead of queueing behind them.
#[tokio::test]
async fn a_cold_healthy_destination_gets_a_reserved_slot_while_silent_servers_hold_the_others() {
    let env = env_with(|_, s| {
        s.connect_timeout = Duration::from_secs(10);
        s.max_short_retries = 0;
    })
    .await;
    // 4 slots: 3 ordinary, 1 reserved.
    let client = reconfigured(env.client, |c| c.with_concurrent_tries(4));
    let healthy = Receiver::start(env.verify_key).await;
    healthy.then(Reply::Closing);
    let _: Value = client
        .get_json(&healthy.name(), "/_matrix/first", RequestOptions::default())
        .await
        .unwrap();
    let mut silent = Vec::new();
    let mut hanging = Vec::new();
    for _ in 0..6 {
        let (name, accepted) = silent_server().await;
        silent.push(accepted);
        let client = client.clone();
        hanging.push(tokio::spawn(async move {
            client
                .get_json::<Value>(&name, "/_matrix/x", RequestOptions::default())
                .await
        }));
    }
    let connected = || {
        silent
            .iter()
            .map(|a| a.load(std::sync::atomic::Ordering::SeqCst))
            .sum::<usize>()
    };
    let started = Instant::now();
    while connected() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the silent servers got {} connections",
            connected()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The ordinary slots are all held; the other silent tries wait for one
    // and never take the reserved slot.
    assert_eq!(connected(), 3);
    let asked = Instant::now();
    let got: Value = tokio::time::timeout(
        Duration::from_secs(8),
        client.get_json(&healthy.name(), "/_matrix/again", RequestOptions::default()),
    )
    .await
    .expect("the healthy destination waited for a slot held by a silent server")
    .unwrap();
    assert_eq!(got, json!({"ok": true}));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(connected(), 3);
    assert_eq!(healthy.seen().len(), 2);
    for task in hanging {
        task.abort();
    }
}

/// Answer bodies held in memory are bounded by the client's byte budget,
/// whatever the slots: with a 100 kB budget, one answer stalled after
/// 60 kB holds that much, and a second 60 kB answer (on a kept-alive
/// connection, which takes no slot) waits until the first one's deadline
/// gives the bytes back.
#[tokio::test]
async fn answer_bodies_share_one_byte_budget() {
    let env = env().await;
    let client = reconfigured(env.client, |c| c.with_answer_budget(100_000));
    let stalling = Receiver::start(env.verify_key).await;
    stalling.then(Reply::Stall(60_000, Duration::from_secs(10)));
    let other = Receiver::start(env.verify_key).await;
    // Warm: the second request runs on a kept-alive connection.
    let _: Value = client
        .get_json(&other.name(), "/_matrix/warm", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(client.answer_budget_available(), 100_000);
    let options = RequestOptions {
        timeout: Some(Duration::from_millis(1500)),
        ..RequestOptions::default()
    };
    let stalled = {
        let (client, name) = (client.clone(), stalling.name());
        tokio::spawn(async move {
            client
                .get_json::<Value>(&name, "/_matrix/stall", options)
                .await
        })
    };
    let started = Instant::now();
    while client.answer_budget_available() > 40_000 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stalled body never took its bytes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    other.then(Reply::Stream(60_000));
    let asked = Instant::now();
    let e = client
        .get_json::<Value>(&other.name(), "/_matrix/big", RequestOptions::default())
        .await
        .unwrap_err();
    // A body of spaces is not JSON: read whole, it fails to parse.
    assert!(matches!(e, FederationError::InvalidResponse { .. }), "{e}");
    let waited = asked.elapsed();
    let e = stalled.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("within 1.5s"), "{e}");
    assert!(
        waited >= Duration::from_millis(800),
        "the second body did not wait for the budget: {waited:?}"
    );
    assert_eq!(client.answer_budget_available(), 100_000);
}

/// Waiting for the answer budget is a local shortage, not the destination
/// failing: the wait does not count against the answer's deadline, and a
/// wait past `client_timeout` fails without touching the backoff.
#[tokio::test]
async fn a_wait_for_the_answer_budget_is_not_charged_to_the_destination() {
    let env = env_with(|_, s| s.client_timeout = Duration::from_secs(2)).await;
    let client = reconfigured(env.client, |c| c.with_answer_budget(100_000));
    let stalling = Receiver::start(env.verify_key).await;
    stalling.then(Reply::Stall(60_000, Duration::from_secs(10)));
    let healthy = Receiver::start(env.verify_key).await;
    let _: Value = client
        .get_json(&healthy.name(), "/_matrix/warm", RequestOptions::default())
        .await
        .unwrap();
    let stalled = {
        let (client, name) = (client.clone(), stalling.name());
        let options = RequestOptions {
            timeout: Some(Duration::from_secs(3)),
            ..RequestOptions::default()
        };
        tokio::spawn(async move {
            client
                .get_json::<Value>(&name, "/_matrix/stall", options)
                .await
        })
    };
    let started = Instant::now();
    while client.answer_budget_available() > 40_000 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stalled body never took its bytes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // 60 kB of valid JSON, more than the 40 kB left.
    let big = json!({"pad": " ".repeat(60_000)});
    let short = RequestOptions {
        timeout: Some(Duration::from_millis(300)),
        ..RequestOptions::default()
    };
    // The budget stays held past client_timeout (2 s): the request fails,
    // and the healthy destination is not put in backoff for it.
    healthy.then(Reply::Json(200, big.clone()));
    let e = client
        .get_json::<Value>(&healthy.name(), "/_matrix/starved", short)
        .await
        .unwrap_err();
    assert!(matches!(e, FederationError::AnswerBudget { .. }), "{e:?}");
    assert!(e.is_retryable());
    let after = backoff(&env.store, &healthy.name())
        .await
        .unwrap_or_default();
    assert_eq!(after.retry_interval, 0, "{after:?}");
    assert!(
        client.answer_budget_available() <= 40_000,
        "the stalled body gave its bytes back too early for this test"
    );
    // The stalled body gives its bytes back at 3 s, within this request's
    // client_timeout but long after its own 300 ms: it gets them and
    // succeeds.
    healthy.then(Reply::Json(200, big.clone()));
    let answer: Value = client
        .get_json(&healthy.name(), "/_matrix/waits", short)
        .await
        .unwrap();
    assert_eq!(answer, big);
    let e = stalled.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("within 3s"), "{e}");
    let after = backoff(&env.store, &healthy.name())
        .await
        .unwrap_or_default();
    assert_eq!(after.retry_interval, 0, "{after:?}");
    assert_eq!(healthy.seen().len(), 3);
    assert_eq!(client.answer_budget_available(), 100_000);
}

// Why a destination failed (issue 12): every failure kind the client
// tells apart is stored as the destination's last error, with the address
// tried, and opens (then extends) an outage in its history.

async fn last_error(store: &Store, name: &str) -> herald_shared::LastError {
    let mut extras = store.destinations.extras(&[name.to_owned()]).await.unwrap();
    extras
        .remove(name)
        .and_then(|e| e.last_error)
        .unwrap_or_else(|| panic!("no last error stored for {name}"))
}

async fn history(store: &Store, name: &str) -> Vec<herald_shared::HistoryEntry> {
    store
        .destinations
        .history(name, None, 200)
        .await
        .unwrap()
        .map(|p| p.entries)
        .unwrap_or_default()
}

/// A one-try request (no retries) that must fail.
async fn fails(client: &FederationClient, name: &str) -> FederationError {
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    client
        .get_json::<Value>(name, "/_matrix/federation/v1/version", options)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_http_error_is_stored_with_its_errcode_text_and_address() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Json(
        401,
        json!({"errcode": "M_UNAUTHORIZED", "error": "Invalid signature\nforged line"}),
    ));
    fails(&env.client, &r.name()).await;
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.kind, herald_shared::FailureKind::Http);
    assert_eq!(
        e.message,
        "401 M_UNAUTHORIZED: Invalid signature forged line"
    );
    assert_eq!(e.address.as_deref(), Some(r.name().as_str()));
    // The outage is open in the history.
    let h = history(&env.store, &r.name()).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].event, herald_shared::HistoryEvent::Failing);
    assert_eq!(h[0].kind, Some(herald_shared::FailureKind::Http));
    assert_eq!(h[0].count, Some(1));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure_naming_the_address() {
    let env = env().await;
    let (closed, _) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        (addr.to_string(), ())
    };
    fails(&env.client, &closed).await;
    let e = last_error(&env.store, &closed).await;
    assert_eq!(e.kind, herald_shared::FailureKind::Connect, "{e:?}");
    assert_eq!(e.address.as_deref(), Some(closed.as_str()));
    assert!(e.message.contains(&closed), "{e:?}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let env = env_with(|c, _| c.federation_custom_ca_list = None).await;
    let r = Receiver::start(env.verify_key).await;
    fails(&env.client, &r.name()).await;
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.kind, herald_shared::FailureKind::Tls, "{e:?}");
    assert!(e.message.contains("certificate"), "{e:?}");
    assert!(r.seen().is_empty());
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Slow(Duration::from_secs(10)));
    fails(&env.client, &r.name()).await;
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.kind, herald_shared::FailureKind::Timeout, "{e:?}");
    assert_eq!(e.address.as_deref(), Some(r.name().as_str()));
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_an_invalid_response() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    r.then(Reply::Raw(200, "application/json", b"<html>".to_vec()));
    fails(&env.client, &r.name()).await;
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.kind, herald_shared::FailureKind::InvalidResponse, "{e:?}");
}

#[tokio::test]
async fn a_blocked_address_is_stored_as_blocked_without_a_connection() {
    let env = env_with(|c, _| c.ip_range_whitelist.clear()).await;
    let r = Receiver::start(env.verify_key).await;
    fails(&env.client, &r.name()).await;
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.kind, herald_shared::FailureKind::Blocked, "{e:?}");
    assert_eq!(e.address.as_deref(), Some("127.0.0.1"));
    assert!(r.seen().is_empty());
}

#[tokio::test]
async fn a_name_without_dns_answers_is_a_dns_failure() {
    // The resolver asks 127.0.0.1:9, where nothing answers.
    let env = env().await;
    fails(&env.client, "nowhere.test").await;
    let e = last_error(&env.store, "nowhere.test").await;
    assert_eq!(e.kind, herald_shared::FailureKind::Dns, "{e:?}");
    assert_eq!(e.address, None);
}

#[tokio::test]
async fn an_outage_counts_its_failures_and_a_success_records_the_recovery() {
    let env = env().await;
    let r = Receiver::start(env.verify_key).await;
    let down = || Reply::Json(503, json!({"errcode": "M_UNKNOWN", "error": "down"}));
    // A failure counted against the backoff opens the outage...
    r.then(down());
    fails(&env.client, &r.name()).await;
    // ...and later ones (here ignoring the backoff) add to its count.
    let ignoring = RequestOptions {
        ignore_backoff: true,
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    for _ in 0..2 {
        r.then(down());
        let e = env
            .client
            .get_json::<Value>(&r.name(), "/_matrix/a", ignoring)
            .await
            .unwrap_err();
        assert!(matches!(e, FederationError::Http { status: 503, .. }));
    }
    env.store
        .destinations
        .reset_retry_timings(&r.name(), Some("@admin:origin.test"))
        .await
        .unwrap();
    r.then(Reply::Json(200, json!({"ok": true})));
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap();
    let h = history(&env.store, &r.name()).await;
    let events: Vec<_> = h.iter().map(|e| e.event).collect();
    use herald_shared::HistoryEvent::*;
    // Newest first.
    assert_eq!(events, [Recovered, Reset, Failing], "{h:?}");
    assert_eq!(h[1].actor.as_deref(), Some("@admin:origin.test"));
    let failing = &h[2];
    assert_eq!(failing.count, Some(3), "{failing:?}");
    assert!(failing.last_ts >= Some(failing.ts));
    assert_eq!(failing.message.as_deref(), Some("503 M_UNKNOWN: down"));
    assert!(h[0].outage_ms.is_some_and(|ms| ms >= 0));
    // Another success adds nothing.
    let _: Value = env
        .client
        .get_json(&r.name(), "/_matrix/a", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(history(&env.store, &r.name()).await.len(), 3);
    // The last error stays after the recovery (the status says it is over).
    let e = last_error(&env.store, &r.name()).await;
    assert_eq!(e.message, "503 M_UNKNOWN: down");
}
