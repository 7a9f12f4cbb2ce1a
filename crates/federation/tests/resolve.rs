//! Server-name resolution (`herald_federation::resolve`) against real
//! sockets on 127.0.0.1: a hand-written DNS responder (hickory-proto message
//! encoding) answering the A/AAAA/SRV records each test sets, and an HTTPS
//! server with a self-signed certificate (rcgen) serving
//! `/.well-known/matrix/server`. Every name is under `example.test` and every
//! address answered is loopback. The well-known fetch's IP filter whitelists
//! loopback here, except in the tests of that filter, which bind servers on
//! distinct 127.0.0.x addresses and allow only some of them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod dns_responder;

use dns_responder::DnsServer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_federation::dns::Dns;
use herald_federation::ip_filter::IpFilter;
use herald_federation::resolve::{Host, ResolveError, ServerResolver, Step};
use herald_federation::well_known::{
    tls_client_config, ManualClock, WellKnownConfig, WellKnownError, WellKnownResolver,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WK: &str = "/.well-known/matrix/server";

// ---------- HTTPS server ----------

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn json(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn status(status: u16) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: b"{}".to_vec(),
    }
}

fn redirect(code: u16, to: &str) -> Reply {
    Reply {
        status: code,
        headers: vec![("Location".into(), to.into())],
        body: vec![],
    }
}

struct HttpsServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    /// (Host header, path) of each request.
    requests: Arc<Mutex<Vec<(String, String)>>>,
    /// Keyed by path.
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    cert: rustls::pki_types::CertificateDer<'static>,
}

impl HttpsServer {
    async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// Listening on `ip` (a loopback address), with a certificate for the
    /// test names and the 127.0.0.1-127.0.0.3 literals.
    async fn start_on(ip: &str) -> Self {
        let names = vec![
            "a.example.test".to_owned(),
            "other.example.test".to_owned(),
            "good.example.test".to_owned(),
            "mixed.example.test".to_owned(),
            "front.example.test".to_owned(),
            "127.0.0.1".to_owned(),
            "127.0.0.2".to_owned(),
            "127.0.0.3".to_owned(),
        ];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let (h, q, r) = (hits.clone(), requests.clone(), routes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, h, q, r) = (acceptor.clone(), h.clone(), q.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                        .unwrap_or("")
                        .to_owned();
                    if path == WK {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    q.lock().push((host, path.clone()));
                    let reply = r.lock().get(&path).cloned().unwrap_or_else(|| status(404));
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut bytes = out.into_bytes();
                    bytes.extend_from_slice(&reply.body);
                    let _ = tls.write_all(&bytes).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            port,
            hits,
            requests,
            routes,
            cert,
        }
    }

    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().insert(path.to_owned(), reply);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ---------- setup ----------

struct Env {
    dns: DnsServer,
    https: HttpsServer,
    clock: Arc<ManualClock>,
    resolver: ServerResolver,
}

async fn env() -> Env {
    let dns = DnsServer::start().await;
    let https = HttpsServer::start().await;
    // The well-known host of most tests.
    dns.a("a.example.test", "127.0.0.1");
    dns.a("other.example.test", "127.0.0.1");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(https.cert.clone()).unwrap();
    let mut config =
        WellKnownConfig::new(tls_client_config(roots).unwrap()).with_ip_filter(loopback_allowed());
    config.port = https.port;
    config.timeout = Duration::from_secs(5);
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let resolver = ServerResolver::new(
        Dns::with_nameserver(dns.addr),
        WellKnownResolver::new(Dns::with_nameserver(dns.addr), config, clock.clone()),
    );
    Env {
        dns,
        https,
        clock,
        resolver,
    }
}

/// Synapse's default blacklist with loopback whitelisted.
fn loopback_allowed() -> IpFilter {
    IpFilter::new(None, &["127.0.0.0/8", "::1/128"]).unwrap()
}

/// A resolver over `e`'s DNS whose well-known fetch trusts the certificates
/// of `servers`, uses `filter`, and defaults to `port`.
fn resolver_with(e: &Env, servers: &[&HttpsServer], filter: IpFilter, port: u16) -> ServerResolver {
    let mut roots = rustls::RootCertStore::empty();
    for s in servers {
        roots.add(s.cert.clone()).unwrap();
    }
    let mut config = WellKnownConfig::new(tls_client_config(roots).unwrap()).with_ip_filter(filter);
    config.port = port;
    config.timeout = Duration::from_secs(5);
    ServerResolver::new(
        Dns::with_nameserver(e.dns.addr),
        WellKnownResolver::new(Dns::with_nameserver(e.dns.addr), config, e.clock.clone()),
    )
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn name(s: &str) -> Host {
    Host::Name(s.to_owned())
}

// ---------- the spec's steps ----------

#[tokio::test]
async fn step1_ip_literal() {
    let e = env().await;
    let r = e.resolver.resolve("127.0.0.5").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.5:8448"]));
    assert_eq!(r.host_header, "127.0.0.5");
    assert_eq!(r.tls_name, Host::Ip("127.0.0.5".parse().unwrap()));
    assert_eq!(r.step, Step::IpLiteral);

    let r = e.resolver.resolve("[::1]:1234").await.unwrap();
    assert_eq!(r.candidates, addrs(&["[::1]:1234"]));
    assert_eq!(r.host_header, "[::1]:1234");
    assert_eq!(r.tls_name, Host::Ip("::1".parse().unwrap()));
    assert_eq!(e.https.hits(), 0);
}

#[tokio::test]
async fn step2_explicit_port() {
    let e = env().await;
    e.dns.a("host.example.test", "127.0.0.7");
    e.dns.a("host.example.test", "::1");
    let r = e.resolver.resolve("host.example.test:9000").await.unwrap();
    let mut got = r.candidates.clone();
    got.sort();
    assert_eq!(got, addrs(&["127.0.0.7:9000", "[::1]:9000"]));
    assert_eq!(r.host_header, "host.example.test:9000");
    assert_eq!(r.tls_name, name("host.example.test"));
    assert_eq!(r.step, Step::ExplicitPort);
    assert_eq!(e.https.hits(), 0, "no well-known with an explicit port");
}

#[tokio::test]
async fn step3_1_delegated_to_ip_literal() {
    let e = env().await;
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9:8500"}"#));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.9:8500"]));
    assert_eq!(r.host_header, "127.0.0.9:8500");
    assert_eq!(r.tls_name, Host::Ip("127.0.0.9".parse().unwrap()));
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    // The well-known request itself went to the server name's host.
    assert_eq!(
        e.https.requests.lock()[0],
        ("a.example.test".to_owned(), WK.to_owned())
    );
}

#[tokio::test]
async fn step3_2_delegated_to_name_with_port() {
    let e = env().await;
    e.https
        .route(WK, json(r#"{"m.server": "fed.example.test:4443"}"#));
    e.dns.a("fed.example.test", "127.0.0.10");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.10:4443"]));
    assert_eq!(r.host_header, "fed.example.test:4443");
    assert_eq!(r.tls_name, name("fed.example.test"));
    assert_eq!(r.step, Step::WellKnownExplicitPort);
}

#[tokio::test]
async fn step3_3_delegated_srv() {
    let e = env().await;
    e.https
        .route(WK, json(r#"{"m.server": "deleg.example.test"}"#));
    e.dns.srv(
        "_matrix-fed._tcp.deleg.example.test",
        10,
        0,
        7777,
        "target.example.test",
    );
    e.dns.srv(
        "_matrix._tcp.deleg.example.test",
        10,
        0,
        6666,
        "legacy.example.test",
    );
    e.dns.a("target.example.test", "127.0.0.11");
    e.dns.a("legacy.example.test", "127.0.0.12");
    e.dns.a("deleg.example.test", "127.0.0.13");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.11:7777"]));
    assert_eq!(r.host_header, "deleg.example.test");
    assert_eq!(r.tls_name, name("deleg.example.test"));
    assert_eq!(r.step, Step::WellKnownSrv);
}

#[tokio::test]
async fn step3_4_delegated_legacy_srv() {
    let e = env().await;
    e.https
        .route(WK, json(r#"{"m.server": "deleg.example.test"}"#));
    e.dns.srv(
        "_matrix._tcp.deleg.example.test",
        10,
        0,
        6666,
        "legacy.example.test",
    );
    e.dns.a("legacy.example.test", "127.0.0.12");
    e.dns.a("deleg.example.test", "127.0.0.13");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.12:6666"]));
    assert_eq!(r.host_header, "deleg.example.test");
    assert_eq!(r.tls_name, name("deleg.example.test"));
    assert_eq!(r.step, Step::WellKnownLegacySrv);
}

#[tokio::test]
async fn step3_5_delegated_default_port() {
    let e = env().await;
    e.https
        .route(WK, json(r#"{"m.server": "deleg.example.test"}"#));
    e.dns.a("deleg.example.test", "127.0.0.13");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.13:8448"]));
    assert_eq!(r.host_header, "deleg.example.test");
    assert_eq!(r.tls_name, name("deleg.example.test"));
    assert_eq!(r.step, Step::WellKnownDefaultPort);
}

#[tokio::test]
async fn step4_srv_without_well_known() {
    let e = env().await;
    // No route: the well-known answers 404.
    e.dns.srv(
        "_matrix-fed._tcp.a.example.test",
        20,
        0,
        1002,
        "t2.example.test",
    );
    e.dns.srv(
        "_matrix-fed._tcp.a.example.test",
        10,
        0,
        1001,
        "t1.example.test",
    );
    e.dns
        .srv("_matrix._tcp.a.example.test", 0, 0, 1000, "t0.example.test");
    e.dns.a("t1.example.test", "127.0.0.20");
    e.dns.a("t2.example.test", "127.0.0.21");
    e.dns.a("t0.example.test", "127.0.0.22");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.20:1001", "127.0.0.21:1002"]));
    assert_eq!(r.host_header, "a.example.test");
    assert_eq!(r.tls_name, name("a.example.test"));
    assert_eq!(r.step, Step::Srv);
    assert_eq!(e.https.hits(), 1);
}

#[tokio::test]
async fn step5_legacy_srv() {
    let e = env().await;
    e.dns
        .srv("_matrix._tcp.a.example.test", 0, 0, 1000, "t0.example.test");
    e.dns.a("t0.example.test", "127.0.0.22");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.22:1000"]));
    assert_eq!(r.host_header, "a.example.test");
    assert_eq!(r.tls_name, name("a.example.test"));
    assert_eq!(r.step, Step::LegacySrv);
}

#[tokio::test]
async fn step6_default_port() {
    let e = env().await;
    e.dns.a("a.example.test", "::1");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    let mut got = r.candidates.clone();
    got.sort();
    assert_eq!(got, addrs(&["127.0.0.1:8448", "[::1]:8448"]));
    assert_eq!(r.host_header, "a.example.test");
    assert_eq!(r.tls_name, name("a.example.test"));
    assert_eq!(r.step, Step::DefaultPort);
}

#[tokio::test]
async fn srv_dot_target_means_unavailable() {
    let e = env().await;
    e.dns.srv("_matrix-fed._tcp.a.example.test", 0, 0, 0, ".");
    let err = e.resolver.resolve("a.example.test").await.unwrap_err();
    assert!(matches!(err, ResolveError::ServiceUnavailable(_)), "{err}");
}

#[tokio::test]
async fn unknown_name_has_no_addresses_and_bad_names_are_refused() {
    let e = env().await;
    let err = e
        .resolver
        .resolve("nowhere.example.test")
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::NoAddresses(_)), "{err}");
    assert!(err.is_retryable());
    for bad in ["", "a.example.test:x", "bad_name.test", "::1"] {
        let err = e.resolver.resolve(bad).await.unwrap_err();
        assert!(matches!(err, ResolveError::InvalidServerName(_)), "{bad:?}");
    }
}

// ---------- well-known edge cases ----------

#[tokio::test]
async fn redirect_chain_is_followed() {
    let e = env().await;
    e.https.route(WK, redirect(302, "/step2"));
    let to_other = format!("https://other.example.test:{}/step3", e.https.port);
    e.https.route("/step2", redirect(301, &to_other));
    e.https
        .route("/step3", json(r#"{"m.server": "127.0.0.30:1"}"#));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.candidates, addrs(&["127.0.0.30:1"]));
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    let requests = e.https.requests.lock().clone();
    assert_eq!(
        requests[2].0,
        format!("other.example.test:{}", e.https.port)
    );
}

#[tokio::test]
async fn redirect_loop_falls_through() {
    let e = env().await;
    e.https.route(WK, redirect(302, "/loop"));
    e.https.route("/loop", redirect(307, WK));
    let err = e
        .resolver
        .well_known()
        .fetch("a.example.test")
        .await
        .unwrap_err();
    assert!(matches!(err, WellKnownError::RedirectLoop(_)), "{err}");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
    assert_eq!(r.candidates, addrs(&["127.0.0.1:8448"]));
}

#[tokio::test]
async fn oversize_body_falls_through() {
    let e = env().await;
    let big = format!(
        r#"{{"m.server": "127.0.0.9", "pad": "{}"}}"#,
        "x".repeat(60 * 1024)
    );
    e.https.route(WK, json(&big));
    let err = e
        .resolver
        .well_known()
        .fetch("a.example.test")
        .await
        .unwrap_err();
    assert!(matches!(err, WellKnownError::TooLarge), "{err}");
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
}

#[tokio::test]
async fn invalid_answers_fall_through() {
    for (reply, check) in [
        (json("{not json"), "json"),
        (json(r#"{"m.server": 5}"#), "missing"),
        (json(r#"{"m.server": "bad name!"}"#), "name"),
        (status(404), "status"),
    ] {
        let e = env().await;
        e.https.route(WK, reply);
        let err = e
            .resolver
            .well_known()
            .fetch("a.example.test")
            .await
            .unwrap_err();
        let ok = match check {
            "json" => matches!(err, WellKnownError::InvalidJson(_)),
            "missing" => matches!(err, WellKnownError::MissingServer),
            "name" => matches!(err, WellKnownError::InvalidServerName(_)),
            _ => matches!(err, WellKnownError::Status(404)),
        };
        assert!(ok, "{check}: {err}");
        assert!(!err.is_temporary());
        let r = e.resolver.resolve("a.example.test").await.unwrap();
        assert_eq!(r.step, Step::DefaultPort, "{check}");
        assert_eq!(r.host_header, "a.example.test");
    }
}

#[tokio::test]
async fn untrusted_certificate_falls_through() {
    let e = env().await;
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    // A resolver whose TLS roots do not include the test certificate.
    let mut config =
        WellKnownConfig::new(tls_client_config(rustls::RootCertStore::empty()).unwrap())
            .with_ip_filter(loopback_allowed());
    config.port = e.https.port;
    let resolver = ServerResolver::new(
        Dns::with_nameserver(e.dns.addr),
        WellKnownResolver::new(Dns::with_nameserver(e.dns.addr), config, e.clock.clone()),
    );
    let r = resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
}

// ---------- caching ----------

#[tokio::test]
async fn cache_follows_max_age() {
    let e = env().await;
    let mut reply = json(r#"{"m.server": "127.0.0.9"}"#);
    reply
        .headers
        .push(("Cache-Control".into(), "public, max-age=600".into()));
    e.https.route(WK, reply);
    e.resolver.resolve("a.example.test").await.unwrap();
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 1, "second call within max-age is cached");
    e.clock.advance(Duration::from_secs(400));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 1);
    e.clock.advance(Duration::from_secs(201));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 2, "refetched after max-age");
    assert_eq!(r.step, Step::WellKnownIpLiteral);
}

#[tokio::test]
async fn cache_period_is_clamped() {
    // max-age below 5 min counts as 5 min.
    let e = env().await;
    let mut reply = json(r#"{"m.server": "127.0.0.9"}"#);
    reply
        .headers
        .push(("Cache-Control".into(), "max-age=10".into()));
    e.https.route(WK, reply);
    e.resolver.resolve("a.example.test").await.unwrap();
    e.clock.advance(Duration::from_secs(200));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 1);
    e.clock.advance(Duration::from_secs(101));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 2);

    // max-age above 48 h counts as 48 h.
    let e = env().await;
    let mut reply = json(r#"{"m.server": "127.0.0.9"}"#);
    reply
        .headers
        .push(("Cache-Control".into(), "max-age=1000000".into()));
    e.https.route(WK, reply);
    e.resolver.resolve("a.example.test").await.unwrap();
    e.clock.advance(Duration::from_secs(38 * 3600));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 1);
    e.clock.advance(Duration::from_secs(10 * 3600 + 1));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 2);
}

#[tokio::test]
async fn default_cache_period_is_a_day_with_jitter() {
    let e = env().await;
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    e.resolver.resolve("a.example.test").await.unwrap();
    // 24 h -10% = 21.6 h, refreshed in its last 20%: not before 17.28 h.
    e.clock.advance(Duration::from_secs(17 * 3600));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 1);
    // 24 h +10% = 26.4 h at most.
    e.clock.advance(Duration::from_secs(10 * 3600));
    e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(e.https.hits(), 2);
}

#[tokio::test]
async fn errors_are_cached_an_hour() {
    let e = env().await;
    // 404: no delegation.
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    // 1 h -10% = 54 min, refreshed in its last 20%: not before 43.2 min.
    e.clock.advance(Duration::from_secs(40 * 60));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort, "the failure is still cached");
    assert_eq!(e.https.hits(), 1);
    e.clock.advance(Duration::from_secs(27 * 60));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    assert_eq!(e.https.hits(), 2);
}

#[tokio::test]
async fn transient_failure_keeps_the_previous_answer() {
    let e = env().await;
    let mut reply = json(r#"{"m.server": "127.0.0.9"}"#);
    reply
        .headers
        .push(("Cache-Control".into(), "max-age=600".into()));
    e.https.route(WK, reply);
    e.resolver.resolve("a.example.test").await.unwrap();
    // In the last 20% of the period a refresh is tried; it fails with 503
    // (retried, as the domain had a valid answer) and the old answer stays.
    e.https.route(WK, status(503));
    e.clock.advance(Duration::from_secs(500));
    let r = e.resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    assert_eq!(e.https.hits(), 1 + 3);
}

// ---------- IP range filter on the well-known fetch ----------

#[tokio::test]
async fn default_filter_refuses_a_loopback_well_known_host() {
    let e = env().await;
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    // The default config: Synapse's blacklist, no whitelist.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.https.cert.clone()).unwrap();
    let mut config = WellKnownConfig::new(tls_client_config(roots).unwrap());
    config.port = e.https.port;
    let well_known =
        WellKnownResolver::new(Dns::with_nameserver(e.dns.addr), config, e.clock.clone());
    let err = well_known.fetch("a.example.test").await.unwrap_err();
    assert!(
        matches!(&err, WellKnownError::Blocked { host, ip }
            if host == "a.example.test" && *ip == "127.0.0.1".parse::<IpAddr>().unwrap()),
        "{err}"
    );
    assert!(err.is_temporary());
    assert_eq!(e.https.hits(), 0, "nothing was connected to");

    // Resolution falls through as with any well-known failure: here to 8448.
    let resolver = ServerResolver::new(Dns::with_nameserver(e.dns.addr), well_known);
    let r = resolver.resolve("a.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
    assert_eq!(r.candidates, addrs(&["127.0.0.1:8448"]));
    assert_eq!(r.host_header, "a.example.test");
    assert_eq!(e.https.requests.lock().len(), 0);

    // And to SRV when there is one.
    e.dns.srv(
        "_matrix-fed._tcp.b.example.test",
        10,
        0,
        1001,
        "t1.example.test",
    );
    e.dns.a("b.example.test", "127.0.0.5");
    e.dns.a("t1.example.test", "127.0.0.20");
    let r = resolver.resolve("b.example.test").await.unwrap();
    assert_eq!(r.step, Step::Srv);
    assert_eq!(r.candidates, addrs(&["127.0.0.20:1001"]));
    assert_eq!(e.https.hits(), 0);
}

#[tokio::test]
async fn a_name_with_any_blocked_address_is_not_fetched() {
    let e = env().await;
    let allowed = HttpsServer::start_on("127.0.0.2").await;
    allowed.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    let only_2 = || IpFilter::new(None, &["127.0.0.2/32"]).unwrap();

    // Control: a name on the allowed address alone is fetched.
    e.dns.a("good.example.test", "127.0.0.2");
    let resolver = resolver_with(&e, &[&allowed], only_2(), allowed.port);
    let r = resolver.resolve("good.example.test").await.unwrap();
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    assert_eq!(allowed.hits(), 1);

    // One blocked address among the answers refuses the whole name (as
    // Synapse's blocking resolver), even though the allowed one would serve.
    e.dns.a("mixed.example.test", "127.0.0.2");
    e.dns.a("mixed.example.test", "127.0.0.1");
    let err = resolver
        .well_known()
        .fetch("mixed.example.test")
        .await
        .unwrap_err();
    assert!(matches!(err, WellKnownError::Blocked { .. }), "{err}");
    let r = resolver.resolve("mixed.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
    assert_eq!(allowed.hits(), 1, "no new request");
    assert_eq!(e.https.hits(), 0);
}

#[tokio::test]
async fn redirect_to_a_blocked_ip_literal_is_refused() {
    let e = env().await;
    // The well-known host, on an allowed address.
    let front = HttpsServer::start_on("127.0.0.2").await;
    e.dns.a("front.example.test", "127.0.0.2");
    // The redirect target, on 127.0.0.1, which the filter blocks.
    let target = format!("https://127.0.0.1:{}{WK}", e.https.port);
    front.route(WK, redirect(302, &target));
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));

    // Control: with loopback allowed the redirect is followed to 127.0.0.1.
    let open = resolver_with(&e, &[&front, &e.https], loopback_allowed(), front.port);
    let r = open.resolve("front.example.test").await.unwrap();
    assert_eq!(r.step, Step::WellKnownIpLiteral);
    assert_eq!(r.candidates, addrs(&["127.0.0.9:8448"]));
    assert_eq!((front.hits(), e.https.hits()), (1, 1));

    // Only 127.0.0.2 allowed: the redirect hop is refused before connecting.
    let only_2 = IpFilter::new(None, &["127.0.0.2/32"]).unwrap();
    let closed = resolver_with(&e, &[&front, &e.https], only_2, front.port);
    let err = closed
        .well_known()
        .fetch("front.example.test")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WellKnownError::Blocked { host, .. } if host == "127.0.0.1"),
        "{err}"
    );
    assert_eq!(front.hits(), 2, "the allowed server was asked");
    assert_eq!(e.https.hits(), 1, "the blocked one was not");
    let r = closed.resolve("front.example.test").await.unwrap();
    assert_eq!(r.step, Step::DefaultPort);
    assert_eq!(r.candidates, addrs(&["127.0.0.2:8448"]));
    assert_eq!(e.https.hits(), 1);
}

#[tokio::test]
async fn redirect_to_a_name_on_a_blocked_address_is_refused() {
    let e = env().await;
    let front = HttpsServer::start_on("127.0.0.2").await;
    e.dns.a("front.example.test", "127.0.0.2");
    // other.example.test resolves to 127.0.0.1 (see `env`).
    let target = format!("https://other.example.test:{}{WK}", e.https.port);
    front.route(WK, redirect(301, &target));
    e.https.route(WK, json(r#"{"m.server": "127.0.0.9"}"#));
    let only_2 = IpFilter::new(None, &["127.0.0.2/32"]).unwrap();
    let resolver = resolver_with(&e, &[&front, &e.https], only_2, front.port);
    let err = resolver
        .well_known()
        .fetch("front.example.test")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WellKnownError::Blocked { host, .. } if host == "other.example.test"),
        "{err}"
    );
    assert_eq!((front.hits(), e.https.hits()), (1, 0));
}
