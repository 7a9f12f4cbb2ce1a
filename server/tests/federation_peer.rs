//! Herald's federation client against peers that check it the way a real
//! homeserver does, all on 127.0.0.1 over real sockets.
//!
//! Herald runs with its federation listener over TLS (an rcgen certificate
//! for 127.0.0.1) as `server_name = "127.0.0.1:<federation port>"`, and the
//! client sends as that server with the key the listener publishes. Each peer
//! is a separate HTTPS server that, on every request, parses
//! `Authorization: X-Matrix`, fetches `https://<origin>/_matrix/key/v2/server`
//! over TLS, checks that answer's self-signatures and `valid_until_ts`, picks
//! the key the header names and verifies the request (method, URI as
//! received, its own name as destination, JSON body); anything wrong is
//! `401 M_UNAUTHORIZED`.
//!
//! Covered here: signed GET and PUT accepted by such a peer; a request
//! signed by another key claiming Herald's name refused with 401, counted as
//! a backoff failure; a body that trickles in is cut off by the timeout; a
//! certificate for another name is refused though its CA is trusted; backoff
//! growing through the client (5xx and 401) to its cap, and cleared by a
//! success. The rest of the client's behaviour (429 retries, 404, content
//! type, size limits, redirects, IP and domain filters, trailing slash, the
//! reset wake-up, untrusted certificates) is in `tests/federation_client.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald::config::{Config, ConfigDuration};
use herald::federation_listener::TlsListener;
use herald_federation::backoff::RetryLimiter;
use herald_federation::client::{FederationClient, FederationError, RequestOptions};
use herald_federation::dns::Dns;
use herald_federation::resolve::ServerResolver;
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::x_matrix::{verify_request, XMatrix};
use herald_keys::{verify_json, ServerKeys, SigningKey, VerifyKey};
use herald_store::RetryTimings;
use herald_store::Store;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A certificate (PEM) and its private key.
struct Cert {
    pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

/// A self-signed certificate for 127.0.0.1: Herald's federation listener and
/// the peers present it, the client and the peers trust it.
fn loopback_cert() -> &'static Cert {
    static CERT: OnceLock<Cert> = OnceLock::new();
    CERT.get_or_init(|| {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        Cert {
            pem: certified.cert.pem(),
            key_der: certified.key_pair.serialize_der(),
            key_pem: certified.key_pair.serialize_pem(),
        }
    })
}

/// A test CA (PEM) and two certificates it issued: one for `127.0.0.1`, one
/// for `other.test` only.
fn ca_and_leaves() -> (String, Cert, Cert) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Herald test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let leaf = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Cert {
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    };
    let (loopback, other) = (leaf("127.0.0.1"), leaf("other.test"));
    (ca.pem(), loopback, other)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Herald serving its key on a TLS federation listener, and what a client
/// sending as it needs.
struct Herald {
    /// `127.0.0.1:<federation port>`.
    name: String,
    config: Config,
    keys: Arc<ServerKeys>,
    store: Store,
    /// The backoff clock of the clients built here (ms since the epoch).
    clock: Arc<AtomicI64>,
    dir: tempfile::TempDir,
}

impl Herald {
    async fn start() -> Herald {
        let dir = tempfile::tempdir().unwrap();
        let cert = loopback_cert();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, &cert.pem).unwrap();
        std::fs::write(&key_path, &cert.key_pem).unwrap();
        let store = Store::open(&dir.path().join("herald.db")).await.unwrap();
        // The server name carries the federation port, so pick a free port
        // first; another process may take it meanwhile: then pick again.
        for attempt in 1.. {
            let port = TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let name = format!("127.0.0.1:{port}");
            let mut config = Config::loopback(&name, dir.path().join("herald.db"));
            config.federation_listen = Some(name.clone());
            config.tls_certificate_path = Some(cert_path.clone());
            config.tls_private_key_path = Some(key_path.clone());
            // Its client: peers on loopback, trusted through our test cert.
            config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
            config.federation_custom_ca_list = Some(vec![cert_path.clone()]);
            config.validate().unwrap();
            match herald::serve::spawn_all(store.clone(), config.clone()).await {
                Ok(addresses) => {
                    assert_eq!(addresses.federation, Some(name.parse().unwrap()));
                    let keys = Arc::new(herald::serve::load_keys(&config).unwrap());
                    return Herald {
                        name,
                        config,
                        keys,
                        store,
                        clock: Arc::new(AtomicI64::new(now_ms())),
                        dir,
                    };
                }
                Err(e) if attempt < 5 => eprintln!("port {port} taken, again: {e}"),
                Err(e) => panic!("herald did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// A client sending as Herald, with its key.
    fn client(&self) -> FederationClient {
        self.client_with(self.keys.clone(), |_| {})
    }

    /// A client sending with `keys` (Herald's, or an impostor's claiming its
    /// name), from Herald's config as `tweak` changes it.
    fn client_with(
        &self,
        keys: Arc<ServerKeys>,
        tweak: impl FnOnce(&mut Config),
    ) -> FederationClient {
        let mut config = self.config.clone();
        tweak(&mut config);
        config.validate().unwrap();
        let mut settings = config.client_settings();
        settings.retry_delay_scale = 0.01;
        let tls = config.tls_client_config().unwrap();
        // Destinations are IP literals: no name here needs DNS.
        let dns = || Dns::with_nameserver("127.0.0.1:9".parse().unwrap());
        let well_known = WellKnownResolver::new(
            dns(),
            WellKnownConfig::new(tls.clone()),
            Arc::new(SystemClock),
        );
        let clock = self.clock.clone();
        let limiter = RetryLimiter::with_clock(
            self.store.destinations.clone(),
            config.backoff_policy(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        FederationClient::new(
            keys,
            Arc::new(ServerResolver::new(dns(), well_known)),
            limiter,
            config.ip_filter().unwrap(),
            tls,
            settings,
        )
    }

    /// Moves the backoff clock on.
    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    async fn backoff(&self, destination: &str) -> Option<RetryTimings> {
        self.store
            .destinations
            .retry_timings(destination)
            .await
            .unwrap()
    }
}

/// What a peer answers a request that authenticated.
enum Reply {
    Json(u16, Value),
    /// `200 application/json` whose body comes one byte at a time.
    Trickle {
        bytes: usize,
        every: Duration,
    },
}

/// A request a peer got: its method, URI, and the origin it authenticated
/// as (or why not).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    verdict: Result<String, String>,
}

#[derive(Clone)]
struct PeerState {
    name: String,
    /// Fetches origins' keys, trusting only the loopback certificate.
    https: reqwest::Client,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    key_fetches: Arc<AtomicUsize>,
    trickled: Arc<AtomicUsize>,
}

/// Another homeserver on 127.0.0.1.
struct Peer {
    addr: SocketAddr,
    state: PeerState,
}

impl Peer {
    /// A peer presenting `cert`.
    async fn start(cert: &Cert) -> Peer {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener::new(tcp, Arc::new(config)).unwrap();
        let https = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(loopback_cert().pem.as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let state = PeerState {
            name: addr.to_string(),
            https,
            script: Arc::default(),
            seen: Arc::default(),
            key_fetches: Arc::default(),
            trickled: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Peer { addr, state }
    }

    /// Its server name, `127.0.0.1:<port>`.
    fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Answers the next authenticated request with `reply` (by default
    /// `200 {"ok": true}`).
    fn then(&self, reply: Reply) -> &Self {
        self.state.script.lock().push_back(reply);
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    fn key_fetches(&self) -> usize {
        self.state.key_fetches.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<PeerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let uri = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let verdict = authenticate(&state, &method, &uri, &headers, &body).await;
    state.seen.lock().push(Seen {
        method: method.to_string(),
        uri,
        verdict: verdict.clone(),
    });
    if let Err(reason) = verdict {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"errcode": "M_UNAUTHORIZED", "error": reason})),
        )
            .into_response();
    }
    let reply = state.script.lock().pop_front();
    match reply.unwrap_or(Reply::Json(200, json!({"ok": true}))) {
        Reply::Json(status, v) => {
            (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response()
        }
        Reply::Trickle { bytes, every } => {
            let trickled = state.trickled.clone();
            let body = futures_util::stream::unfold(0, move |sent| {
                let trickled = trickled.clone();
                async move {
                    if sent == bytes {
                        return None;
                    }
                    if sent > 0 {
                        tokio::time::sleep(every).await;
                    }
                    trickled.fetch_add(1, Ordering::SeqCst);
                    Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), sent + 1))
                }
            });
            (
                [("content-type", "application/json")],
                Body::from_stream(body),
            )
                .into_response()
        }
    }
}

/// What a homeserver does with an incoming federation request: the origin's
/// key from its key server over TLS, then the X-Matrix signature.
async fn authenticate(
    state: &PeerState,
    method: &Method,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let header = headers
        .get("authorization")
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let x = XMatrix::parse(header).map_err(|e| e.to_string())?;

    let url = format!("https://{}/_matrix/key/v2/server", x.origin);
    let response = state
        .https
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{url}: {}", response.status()));
    }
    let keys: Value = response.json().await.map_err(|e| format!("{url}: {e}"))?;
    state.key_fetches.fetch_add(1, Ordering::SeqCst);
    if keys["server_name"] != x.origin.as_str() {
        return Err(format!("{url} is for {}", keys["server_name"]));
    }
    let published = |key_id: &str| -> Result<VerifyKey, String> {
        let key = keys["verify_keys"][key_id]["key"]
            .as_str()
            .ok_or_else(|| format!("{} publishes no key {key_id}", x.origin))?;
        VerifyKey::from_base64(key).map_err(|e| e.to_string())
    };
    let self_signatures = keys["signatures"][&x.origin]
        .as_object()
        .filter(|s| !s.is_empty())
        .ok_or("the key server answer is not self-signed")?;
    for key_id in self_signatures.keys() {
        verify_json(&x.origin, key_id, &published(key_id)?, &keys)
            .map_err(|e| format!("key server answer: {e}"))?;
    }
    match keys["valid_until_ts"].as_i64() {
        Some(t) if t > now_ms() => {}
        other => return Err(format!("keys not valid now (valid_until_ts {other:?})")),
    }
    let key = published(&x.key_id)?;

    let content: Option<Value> = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(body).map_err(|e| e.to_string())?)
    };
    verify_request(
        &x,
        method.as_str(),
        uri,
        &state.name,
        content.as_ref(),
        &key,
    )
    .map_err(|e| e.to_string())?;
    Ok(x.origin)
}

/// The request, failing the test rather than hanging.
async fn bounded<T>(request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the request finished")
}

#[tokio::test]
async fn a_peer_fetching_our_key_accepts_signed_get_and_put() {
    let herald = Herald::start().await;
    let client = herald.client();
    let peer = Peer::start(loopback_cert()).await;
    peer.then(Reply::Json(200, json!({"displayname": "Remote"})));

    let profile =
        "/_matrix/federation/v1/query/profile?user_id=%40alice%3A127.0.0.1&field=displayname";
    let got: Value = bounded(client.get_json(&peer.name(), profile, RequestOptions::default()))
        .await
        .unwrap();
    assert_eq!(got, json!({"displayname": "Remote"}));

    let txn = json!({
        "origin": herald.name,
        "origin_server_ts": 1_700_000_000_000_u64,
        "pdus": [{"content": {"body": "héllo ✓"}, "type": "m.room.message"}],
        "edus": [],
    });
    let got: Value = bounded(client.put_json(
        &peer.name(),
        "/_matrix/federation/v1/send/txn1",
        Some(&txn),
        RequestOptions::default(),
    ))
    .await
    .unwrap();
    assert_eq!(got, json!({"ok": true}));

    let seen = peer.seen();
    let requests: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.uri.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("GET", profile),
            ("PUT", "/_matrix/federation/v1/send/txn1")
        ]
    );
    for s in &seen {
        assert_eq!(s.verdict, Ok(herald.name.clone()), "{s:?}");
    }
    assert_eq!(
        peer.key_fetches(),
        2,
        "the key was fetched for each request"
    );
    assert_eq!(herald.backoff(&peer.name()).await, None);
}

#[tokio::test]
async fn another_key_claiming_our_name_is_refused_and_backs_off() {
    let herald = Herald::start().await;
    let peer = Peer::start(loopback_cert()).await;
    // Same key id as Herald's current key, another secret.
    let version = herald.keys.current().version().to_owned();
    let forger = Arc::new(ServerKeys::new(
        herald.name.clone(),
        SigningKey::generate(&version).unwrap(),
    ));
    let e = bounded(herald.client_with(forger, |_| {}).get_json::<Value>(
        &peer.name(),
        "/_matrix/federation/v1/version",
        RequestOptions::default(),
    ))
    .await
    .unwrap_err();
    match &e {
        FederationError::Http {
            status: 401,
            error: Some(m),
            ..
        } => assert_eq!(m.errcode, "M_UNAUTHORIZED"),
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(peer.seen()[0]
        .verdict
        .as_ref()
        .unwrap_err()
        .contains("signature"));
    // A 401 is a failure of the destination: it backs off, from the minimum.
    let timings = herald.backoff(&peer.name()).await.expect("in backoff");
    assert_eq!(timings.retry_interval, 600_000);

    // A key Herald does not publish: refused too. Ignoring backoff, its
    // failure leaves the backoff as it was.
    let stranger = Arc::new(ServerKeys::new(
        herald.name.clone(),
        SigningKey::generate("a_stranger").unwrap(),
    ));
    let ignore_backoff = RequestOptions {
        ignore_backoff: true,
        ..Default::default()
    };
    let e = bounded(herald.client_with(stranger, |_| {}).get_json::<Value>(
        &peer.name(),
        "/_matrix/federation/v1/version",
        ignore_backoff,
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, FederationError::Http { status: 401, .. }),
        "{e}"
    );
    assert!(
        peer.seen()[1]
            .verdict
            .as_ref()
            .unwrap_err()
            .contains("ed25519:a_stranger"),
        "{:?}",
        peer.seen()[1]
    );
    assert_eq!(herald.backoff(&peer.name()).await, Some(timings));

    // Herald's own key gets through, and the success clears the backoff.
    let _: Value = bounded(herald.client().get_json(
        &peer.name(),
        "/_matrix/federation/v1/version",
        ignore_backoff,
    ))
    .await
    .unwrap();
    assert_eq!(peer.seen()[2].verdict, Ok(herald.name.clone()));
    assert_eq!(herald.backoff(&peer.name()).await, None);
}

#[tokio::test]
async fn a_body_that_trickles_in_times_out() {
    let herald = Herald::start().await;
    let peer = Peer::start(loopback_cert()).await;
    // The answer's headers at once, then a byte every 200 ms for 20 s.
    let trickle = || Reply::Trickle {
        bytes: 100,
        every: Duration::from_millis(200),
    };

    // An explicit timeout.
    peer.then(trickle());
    let client = herald.client();
    let options = RequestOptions {
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let started = Instant::now();
    let e = bounded(client.get_json::<Value>(&peer.name(), "/_matrix/slow", options))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
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
    assert!(e.to_string().contains("within 1s"), "{e}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&elapsed),
        "{elapsed:?}"
    );
    let trickled = peer.state.trickled.load(Ordering::SeqCst);
    assert!((3..100).contains(&trickled), "{trickled} bytes came");
    // A body that never ends is the destination failing: it backs off.
    let t = herald.backoff(&peer.name()).await.unwrap();
    assert!(t.failure_ts.is_some() && t.retry_interval > 0, "{t:?}");

    // The configured `federation.client_timeout` holds the same way (for
    // the headers and the body together).
    peer.then(trickle());
    let client = herald.client_with(herald.keys.clone(), |c| {
        c.federation.client_timeout = ConfigDuration(Duration::from_secs(1))
    });
    let started = Instant::now();
    let ignore_backoff = RequestOptions {
        ignore_backoff: true,
        ..Default::default()
    };
    let e = bounded(client.get_json::<Value>(&peer.name(), "/_matrix/slow", ignore_backoff))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(e, FederationError::SendFailed { .. }), "{e}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // Both were authenticated requests the peer answered.
    assert_eq!(peer.seen().len(), 2);
    assert!(peer.seen().iter().all(|s| s.verdict.is_ok()));
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let herald = Herald::start().await;
    let (ca_pem, for_loopback, for_other) = ca_and_leaves();
    let ca_path: PathBuf = herald.dir.path().join("test-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let trusting_ca = |c: &mut Config| c.federation_custom_ca_list = Some(vec![ca_path.clone()]);
    let client = herald.client_with(herald.keys.clone(), trusting_ca);

    // Issued by the trusted CA, but for other.test: refused at the handshake.
    let other = Peer::start(&for_other).await;
    let e = bounded(client.get_json::<Value>(
        &other.name(),
        "/_matrix/federation/v1/version",
        RequestOptions::default(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, FederationError::SendFailed { .. }), "{e}");
    assert!(
        source_chain(&e).contains("NotValidForName"),
        "not a name mismatch: {}",
        source_chain(&e)
    );
    assert!(other.seen().is_empty(), "no request reached it");

    // The same CA's certificate for 127.0.0.1 is accepted.
    let right = Peer::start(&for_loopback).await;
    let _: Value = bounded(client.get_json(
        &right.name(),
        "/_matrix/federation/v1/version",
        RequestOptions::default(),
    ))
    .await
    .unwrap();
    assert_eq!(right.seen()[0].verdict, Ok(herald.name.clone()));
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" <- {s:?}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn backoff_grows_through_the_client_to_its_cap_and_a_success_clears_it() {
    let herald = Herald::start().await;
    const MIN: i64 = 600_000;
    const MAX: i64 = 2_000_000;
    let client = herald.client_with(herald.keys.clone(), |c| {
        c.destination_max_retry_interval = ConfigDuration(Duration::from_millis(MAX as u64))
    });
    let peer = Peer::start(loopback_cert()).await;
    let t0 = herald.clock.load(Ordering::SeqCst);

    // 5xx and 401 alike: each failure, once due, grows the interval ×2
    // (× 0.8..1.4) until it sits at the cap; failure_ts stays the first.
    let failures = [
        (500, "M_UNKNOWN"),
        (503, "M_UNKNOWN"),
        (401, "M_UNAUTHORIZED"),
        (502, "M_UNKNOWN"),
        (500, "M_UNKNOWN"),
    ];
    let mut previous = 0;
    for (i, (status, errcode)) in failures.into_iter().enumerate() {
        peer.then(Reply::Json(status, json!({"errcode": errcode})));
        let e = bounded(client.get_json::<Value>(
            &peer.name(),
            "/_matrix/federation/v1/version",
            RequestOptions::default(),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(e, FederationError::Http { status: s, .. } if s == status),
            "{e}"
        );
        let now = herald.clock.load(Ordering::SeqCst);
        let timings = herald.backoff(&peer.name()).await.expect("in backoff");
        assert_eq!((timings.failure_ts, timings.retry_last_ts), (Some(t0), now));
        let interval = timings.retry_interval;
        if previous == 0 {
            assert_eq!(interval, MIN);
        } else {
            let grown = (previous * 16 / 10..=previous * 28 / 10).contains(&interval);
            assert!(grown || interval == MAX, "{previous} → {interval}");
            assert!(interval <= MAX, "{interval} over the cap");
        }
        assert_eq!(peer.seen().len(), i + 1, "5xx and 401 are not retried");

        // Not due yet: the peer is not contacted.
        herald.advance(interval - 1);
        let e = bounded(client.get_json::<Value>(
            &peer.name(),
            "/_matrix/federation/v1/version",
            RequestOptions::default(),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(e, FederationError::NotRetrying { retry_interval, .. } if retry_interval == interval),
            "{e}"
        );
        assert_eq!(peer.seen().len(), i + 1);
        herald.advance(1);
        previous = interval;
    }
    // 600 s × ≥ 1.6⁴ > 2000 s: capped by now.
    assert_eq!(previous, MAX);

    // Due again, and the peer answers: the backoff is gone.
    let _: Value = bounded(client.get_json(
        &peer.name(),
        "/_matrix/federation/v1/version",
        RequestOptions::default(),
    ))
    .await
    .unwrap();
    assert_eq!(herald.backoff(&peer.name()).await, None);
    let row = herald
        .store
        .destinations
        .destination(&peer.name())
        .await
        .unwrap()
        .expect("row");
    assert_eq!((row.failure_ts, row.retry_interval), (None, Some(0)));
    assert!(peer.seen().iter().all(|s| s.verdict.is_ok()));
}
