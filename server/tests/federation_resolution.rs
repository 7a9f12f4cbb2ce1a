//! Server-name resolution through the federation client, end to end, on
//! real sockets: a DNS responder on 127.0.0.1 (hickory-proto encoding, as in
//! `tests/resolve.rs`) answers the test names, `.well-known` servers and
//! federation receivers listen on distinct 127.0.0.x addresses with one rcgen
//! certificate (trusted through `federation_custom_ca_list`), and signed
//! GETs go through `FederationClient` to each destination. The receivers
//! record the TLS SNI, `Host` header, the address the request arrived on and
//! the X-Matrix header, checked against the spec's resolution steps. Then
//! `RequestOptions::retry_on_dns_fail`: a name whose look-ups get SERVFAIL
//! is looked up again (and succeeds) when it is true, once when false.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "../../crates/federation/tests/dns_responder/mod.rs"]
mod dns_responder;

use dns_responder::DnsServer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use herald::config::Config;
use herald_federation::backoff::RetryLimiter;
use herald_federation::client::{
    ClientSettings, FederationClient, FederationError, RequestOptions,
};
use herald_federation::dns::Dns;
use herald_federation::ip_filter::IpFilter;
use herald_federation::resolve::{ResolveError, ServerResolver};
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::signing::{SigningKey, VerifyKey};
use herald_keys::x_matrix::{verify_request, XMatrix};
use herald_keys::ServerKeys;
use herald_store::Store;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ORIGIN: &str = "origin.test";
const WK: &str = "/.well-known/matrix/server";
const PATH: &str = "/_matrix/federation/v1/version";

/// Every request of a test is bounded by this.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("no result within 30 s")
}

// ---------- HTTPS servers (well-known and federation receiver) ----------

/// The test names and the receivers' IP literals: (cert PEM, key DER).
fn certificate() -> &'static (String, Vec<u8>) {
    static CERT: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let names = [
            "host.example.test",
            "deleg.example.test",
            "fed.example.test",
            "srv.example.test",
            "target.example.test",
            "dflt.example.test",
            "flaky.example.test",
            "twoaddr.example.test",
            "127.0.0.61",
        ];
        let certified =
            rcgen::generate_simple_self_signed(names.map(str::to_owned).to_vec()).unwrap();
        (certified.cert.pem(), certified.key_pair.serialize_der())
    })
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// The address the connection was accepted on.
    local: SocketAddr,
    /// The TLS SNI the client sent.
    sni: Option<String>,
    method: String,
    path: String,
    host: String,
    authorization: Option<String>,
}

struct HttpsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body of `/.well-known/matrix/server`; 404 when `None`.
    well_known: Arc<Mutex<Option<String>>>,
}

impl HttpsServer {
    /// Listening on `ip:port` (`port` 0: any).
    async fn start(ip: &str, port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port)).await?;
        Ok(Self::serve(listener))
    }

    fn serve(listener: TcpListener) -> Self {
        use rustls::pki_types::pem::PemObject;
        let (cert_pem, key_der) = certificate();
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.clone().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let well_known: Arc<Mutex<Option<String>>> = Arc::default();
        let (s, w) = (seen.clone(), well_known.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, s, w) = (acceptor.clone(), s.clone(), w.clone());
                tokio::spawn(async move {
                    let Ok(local) = tcp.local_addr() else {
                        return;
                    };
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    // One request per connection (Connection: close); its
                    // head at most 64 KiB.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if head.len() > 64 * 1024 || tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut first = head.split(' ');
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let header = |name: &str| {
                        head.lines().skip(1).find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_owned())
                        })
                    };
                    let seen = Seen {
                        local,
                        sni,
                        method,
                        path: path.clone(),
                        host: header("host").unwrap_or_default(),
                        authorization: header("authorization"),
                    };
                    s.lock().push(seen);
                    let (status, body) = if path == WK {
                        match w.lock().clone() {
                            Some(body) => (200, body),
                            None => (404, "{}".to_owned()),
                        }
                    } else {
                        (200, json!({"server": {"name": "receiver"}}).to_string())
                    };
                    let out = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(out.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            seen,
            well_known,
        }
    }

    fn delegate(&self, to: &str) {
        *self.well_known.lock() = Some(json!({ "m.server": to }).to_string());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    fn federation_requests(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path != WK).collect()
    }
}

// ---------- the client ----------

struct Env {
    dns: DnsServer,
    client: FederationClient,
    verify_key: VerifyKey,
    _dir: tempfile::TempDir,
}

fn loopback_allowed() -> IpFilter {
    IpFilter::new(None, &["127.0.0.0/8"]).unwrap()
}

/// A client resolving through a fresh DNS responder, fetching well-knowns
/// on `well_known_port`, with short retry sleeps.
async fn env(well_known_port: u16, tweak: impl FnOnce(&mut ClientSettings)) -> Env {
    env_filtered(well_known_port, tweak, loopback_allowed()).await
}

/// [`env`] with another IP range filter.
async fn env_filtered(
    well_known_port: u16,
    tweak: impl FnOnce(&mut ClientSettings),
    ip_filter: IpFilter,
) -> Env {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca: PathBuf = dir.path().join("ca.pem");
    std::fs::write(&ca, &certificate().0).unwrap();
    let mut config = Config::loopback(ORIGIN, dir.path().join("herald.db"));
    config.federation_custom_ca_list = Some(vec![ca]);
    let mut settings = config.client_settings();
    settings.retry_delay_scale = 0.2;
    settings.client_timeout = Duration::from_secs(10);
    tweak(&mut settings);
    let store = Store::open_target(&config.database.target()).await.unwrap();
    let key = SigningKey::generate("a_test").unwrap();
    let verify_key = key.verify_key();
    let keys = Arc::new(ServerKeys::new(ORIGIN, key));
    let tls = config.tls_client_config().unwrap();
    let mut wk_config = WellKnownConfig::new(tls.clone()).with_ip_filter(ip_filter.clone());
    wk_config.port = well_known_port;
    wk_config.timeout = Duration::from_secs(5);
    let well_known = WellKnownResolver::new(
        Dns::with_nameserver(dns.addr),
        wk_config,
        Arc::new(SystemClock),
    );
    let resolver = Arc::new(ServerResolver::new(
        Dns::with_nameserver(dns.addr),
        well_known,
    ));
    let limiter = RetryLimiter::new(store.destinations.clone(), config.backoff_policy());
    let client = FederationClient::new(keys, resolver, limiter, ip_filter, tls, settings);
    Env {
        dns,
        client,
        verify_key,
        _dir: dir,
    }
}

impl Env {
    async fn get(
        &self,
        destination: &str,
        options: RequestOptions,
    ) -> Result<Value, FederationError> {
        bounded(self.client.get_json(destination, PATH, options)).await
    }

    /// The request arrived once, at `at`, with this SNI and Host, signed by
    /// us for `destination`.
    fn check(
        &self,
        server: &HttpsServer,
        destination: &str,
        at: SocketAddr,
        sni: Option<&str>,
        host: &str,
    ) {
        let got = server.federation_requests();
        assert_eq!(got.len(), 1, "{got:?}");
        let s = &got[0];
        assert_eq!(s.local, at, "{s:?}");
        assert_eq!(s.sni.as_deref(), sni, "{s:?}");
        assert_eq!(s.host, host, "{s:?}");
        assert_eq!((s.method.as_str(), s.path.as_str()), ("GET", PATH));
        let auth = s.authorization.as_deref().expect("an Authorization header");
        let x = XMatrix::parse(auth).unwrap();
        assert_eq!(x.origin, ORIGIN);
        assert_eq!(x.destination.as_deref(), Some(destination));
        verify_request(&x, "GET", PATH, destination, None, &self.verify_key).unwrap();
    }
}

// ---------- resolution steps, through the client ----------

#[tokio::test]
async fn step1_ip_literal_with_port() {
    let receiver = HttpsServer::start("127.0.0.61", 0).await.unwrap();
    let e = env(1, |_| {}).await;
    let destination = receiver.addr.to_string();
    let got = e
        .get(&destination, RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(got["server"]["name"], "receiver");
    // No SNI for an IP address (RFC 6066); Host is the literal with port.
    e.check(&receiver, &destination, receiver.addr, None, &destination);
    assert_eq!(e.dns.total_queries(), 0, "no DNS for a literal");
}

#[tokio::test]
async fn step2_hostname_with_explicit_port() {
    let receiver = HttpsServer::start("127.0.0.62", 0).await.unwrap();
    // A well-known server on the name's address, which must not be asked.
    let wk = HttpsServer::start("127.0.0.62", 0).await.unwrap();
    wk.delegate("127.0.0.99:1");
    let e = env(wk.addr.port(), |_| {}).await;
    e.dns.a("host.example.test", "127.0.0.62");
    let destination = format!("host.example.test:{}", receiver.addr.port());
    e.get(&destination, RequestOptions::default())
        .await
        .unwrap();
    e.check(
        &receiver,
        &destination,
        receiver.addr,
        Some("host.example.test"),
        &destination,
    );
    assert!(wk.seen().is_empty(), "no well-known with an explicit port");
}

#[tokio::test]
async fn step3_well_known_delegation_to_name_and_port() {
    // deleg.example.test's well-known (on 127.0.0.63) delegates to
    // fed.example.test:<port>, served on 127.0.0.64.
    let wk = HttpsServer::start("127.0.0.63", 0).await.unwrap();
    let receiver = HttpsServer::start("127.0.0.64", 0).await.unwrap();
    let delegated = format!("fed.example.test:{}", receiver.addr.port());
    wk.delegate(&delegated);
    let e = env(wk.addr.port(), |_| {}).await;
    e.dns.a("deleg.example.test", "127.0.0.63");
    e.dns.a("fed.example.test", "127.0.0.64");
    e.get("deleg.example.test", RequestOptions::default())
        .await
        .unwrap();
    // The well-known fetch went to the server name.
    let wk_seen = wk.seen();
    assert_eq!(wk_seen.len(), 1, "{wk_seen:?}");
    assert_eq!(wk_seen[0].path, WK);
    assert_eq!(wk_seen[0].sni.as_deref(), Some("deleg.example.test"));
    assert_eq!(wk_seen[0].host, "deleg.example.test");
    assert_eq!(wk_seen[0].local, wk.addr);
    // The request: to the delegated name's address, Host and SNI of the
    // delegated name, signed for the server name.
    e.check(
        &receiver,
        "deleg.example.test",
        receiver.addr,
        Some("fed.example.test"),
        &delegated,
    );
}

#[tokio::test]
async fn step4_srv_without_well_known() {
    // srv.example.test (127.0.0.65) has no well-known (404) and an SRV
    // record to target.example.test:<port> on 127.0.0.66.
    let wk = HttpsServer::start("127.0.0.65", 0).await.unwrap();
    let receiver = HttpsServer::start("127.0.0.66", 0).await.unwrap();
    let e = env(wk.addr.port(), |_| {}).await;
    e.dns.a("srv.example.test", "127.0.0.65");
    e.dns.srv(
        "_matrix-fed._tcp.srv.example.test",
        10,
        0,
        receiver.addr.port(),
        "target.example.test",
    );
    e.dns.a("target.example.test", "127.0.0.66");
    e.get("srv.example.test", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(wk.seen().len(), 1, "the well-known was asked");
    assert_eq!(wk.seen()[0].path, WK);
    assert!(wk.federation_requests().is_empty());
    // At the SRV target, but Host and SNI are the server name's.
    e.check(
        &receiver,
        "srv.example.test",
        receiver.addr,
        Some("srv.example.test"),
        "srv.example.test",
    );
}

#[tokio::test]
async fn step6_default_port_8448() {
    // dflt.example.test on 127.0.0.67: no well-known (404), no SRV, so
    // port 8448 on its address.
    let receiver = match HttpsServer::start("127.0.0.67", 8448).await {
        Ok(r) => r,
        Err(err) => {
            eprintln!("skipped: cannot bind 127.0.0.67:8448: {err}");
            return;
        }
    };
    let wk = HttpsServer::start("127.0.0.67", 0).await.unwrap();
    let e = env(wk.addr.port(), |_| {}).await;
    e.dns.a("dflt.example.test", "127.0.0.67");
    e.get("dflt.example.test", RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(wk.seen().len(), 1);
    assert!(e.dns.queries("_matrix-fed._tcp.dflt.example.test") >= 1);
    assert!(e.dns.queries("_matrix._tcp.dflt.example.test") >= 1);
    e.check(
        &receiver,
        "dflt.example.test",
        "127.0.0.67:8448".parse().unwrap(),
        Some("dflt.example.test"),
        "dflt.example.test",
    );
}

// ---------- connect_timeout ----------

/// The listener and the connections queued on it, never accepted.
type BlackHole = (TcpListener, Vec<tokio::net::TcpStream>);

/// A listening socket on `ip` whose TCP connects never complete: its
/// accept queue (backlog 0) is filled by connections that are never
/// accepted, and Linux then drops further SYNs. Returns the address and
/// what must stay alive for it to keep dropping them.
async fn black_hole(ip: &str) -> (SocketAddr, BlackHole) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue until a connect no longer completes (on Linux, after
    // one connection for backlog 0).
    let mut filler = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => filler.push(stream),
            Ok(Err(e)) => panic!("connect to the black hole failed instead of hanging: {e}"),
            Err(_) => return (addr, (listener, filler)),
        }
    }
    panic!(
        "{addr} still completes connects after {} were queued",
        filler.len()
    );
}

#[tokio::test]
async fn an_address_that_never_connects_is_given_up_after_connect_timeout() {
    // twoaddr.example.test (127.0.0.71, no well-known) has two SRV
    // targets: first hole.example.test on 127.0.0.72, whose connects hang,
    // then target.example.test on 127.0.0.73, which answers.
    let wk = HttpsServer::start("127.0.0.71", 0).await.unwrap();
    let (hole, _keep) = black_hole("127.0.0.72").await;
    let receiver = HttpsServer::start("127.0.0.73", 0).await.unwrap();
    let request_timeout = Duration::from_secs(20);
    let e = env(wk.addr.port(), |s| {
        s.client_timeout = request_timeout;
        s.connect_timeout = Duration::from_secs(1);
        s.max_short_retries = 0;
    })
    .await;
    e.dns.a("twoaddr.example.test", "127.0.0.71");
    e.dns.srv(
        "_matrix-fed._tcp.twoaddr.example.test",
        10,
        0,
        hole.port(),
        "hole.example.test",
    );
    e.dns.srv(
        "_matrix-fed._tcp.twoaddr.example.test",
        20,
        0,
        receiver.addr.port(),
        "target.example.test",
    );
    e.dns.a("hole.example.test", "127.0.0.72");
    e.dns.a("target.example.test", "127.0.0.73");
    let started = std::time::Instant::now();
    let got = e
        .get("twoaddr.example.test", RequestOptions::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(got["server"]["name"], "receiver");
    // The black hole cost one connect_timeout (1 s), not the request's 20 s.
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} with a 1 s connect_timeout"
    );
    assert!(
        took >= Duration::from_secs(1),
        "took {took:?}: the black hole was not tried first"
    );
    e.check(
        &receiver,
        "twoaddr.example.test",
        receiver.addr,
        Some("twoaddr.example.test"),
        "twoaddr.example.test",
    );
}

/// A name whose AAAA record is `64:ff9b::7f00:1`, 127.0.0.1 in the NAT64
/// well-known prefix (on a network with NAT64 it reaches Herald's own
/// loopback), is refused before any connection by the default blacklist,
/// not tried (and retried) as an address that merely does not answer. The
/// whitelist frees only the receiver's own address (127.0.0.64), not the
/// rest of 127.0.0.0/8.
#[tokio::test]
async fn a_name_resolving_to_loopback_through_nat64_is_refused() {
    let receiver = HttpsServer::start("127.0.0.64", 0).await.unwrap();
    let filter = IpFilter::new(None, &["127.0.0.64/32"]).unwrap();
    let e = env_filtered(1, |_| {}, filter).await;
    e.dns.a("nat64.example.test", "64:ff9b::7f00:1");
    let destination = format!("nat64.example.test:{}", receiver.addr.port());
    let err = e
        .get(&destination, RequestOptions::default())
        .await
        .unwrap_err();
    let nat64: IpAddr = "64:ff9b::7f00:1".parse().unwrap();
    assert!(
        matches!(err, FederationError::BlockedIp { ip, .. } if ip == nat64),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(e.dns.queries("nat64.example.test") >= 1);
    assert!(receiver.seen().is_empty());
    // The same through an IP literal.
    let literal = format!("[64:ff9b::7f00:1]:{}", receiver.addr.port());
    let err = e
        .get(&literal, RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, FederationError::BlockedIp { ip, .. } if ip == nat64),
        "{err}"
    );
}

// ---------- retry_on_dns_fail ----------

const FLAKY: &str = "flaky.example.test";

fn no_dns_retry() -> RequestOptions {
    RequestOptions {
        retry_on_dns_fail: false,
        ..RequestOptions::default()
    }
}

fn is_dns_failure(err: &FederationError) -> bool {
    matches!(err, FederationError::Resolve(ResolveError::Dns(_)))
}

/// How many queries one failed look-up of `host:port` sends to the
/// responder (hickory may ask again, over UDP and TCP): measured with the
/// client and `retry_on_dns_fail` false, which also checks that such a
/// failure is not retried.
async fn queries_per_failed_lookup(e: &Env, port: u16) -> usize {
    e.dns.fail(FLAKY, usize::MAX);
    let destination = format!("{FLAKY}:{port}");
    let err = e.get(&destination, no_dns_retry()).await.unwrap_err();
    assert!(is_dns_failure(&err), "{err}");
    let k = e.dns.queries(FLAKY);
    assert!(k >= 1);
    // Nothing more comes later either: checked throughout 400 ms.
    let window = std::time::Instant::now();
    while window.elapsed() < Duration::from_millis(400) {
        assert_eq!(
            e.dns.queries(FLAKY),
            k,
            "asked again after {:?}",
            window.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.dns.queries(FLAKY), k, "not retried");
    k
}

#[tokio::test]
async fn dns_failure_is_not_retried_when_retry_on_dns_fail_is_false() {
    let receiver = HttpsServer::start("127.0.0.68", 0).await.unwrap();
    let e = env(1, |s| s.max_short_retries = 2).await;
    e.dns.a(FLAKY, "127.0.0.68");
    let k = queries_per_failed_lookup(&e, receiver.addr.port()).await;
    assert!(receiver.seen().is_empty());
    eprintln!("queries per failed look-up: {k}");
}

#[tokio::test]
async fn dns_failure_is_retried_when_retry_on_dns_fail_is_true() {
    let receiver = HttpsServer::start("127.0.0.69", 0).await.unwrap();
    let port = receiver.addr.port();
    let destination = format!("{FLAKY}:{port}");

    let e = env(1, |s| s.max_short_retries = 2).await;
    e.dns.a(FLAKY, "127.0.0.69");
    let k = queries_per_failed_lookup(&e, port).await;

    // Always failing: every try (1 + max_short_retries) looks it up again.
    // A fresh client each time: a failed destination is in backoff.
    let e = env(1, |s| s.max_short_retries = 2).await;
    e.dns.a(FLAKY, "127.0.0.69");
    e.dns.fail(FLAKY, usize::MAX);
    let err = e
        .get(&destination, RequestOptions::default())
        .await
        .unwrap_err();
    assert!(is_dns_failure(&err), "{err}");
    assert_eq!(e.dns.queries(FLAKY), 3 * k, "three tries, each asked");
    assert!(receiver.seen().is_empty());

    // Failing for the first try only: the second one gets through.
    let e = env(1, |s| s.max_short_retries = 2).await;
    e.dns.a(FLAKY, "127.0.0.69");
    e.dns.fail(FLAKY, k);
    e.get(&destination, RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(e.dns.queries(FLAKY), 2 * k, "asked again after the failure");
    e.check(
        &receiver,
        &destination,
        receiver.addr,
        Some(FLAKY),
        &destination,
    );

    // Failing for the first two tries: the third one gets through.
    let receiver = HttpsServer::start("127.0.0.70", 0).await.unwrap();
    let destination = format!("{FLAKY}:{}", receiver.addr.port());
    let e = env(1, |s| s.max_short_retries = 2).await;
    e.dns.a(FLAKY, "127.0.0.70");
    e.dns.fail(FLAKY, 2 * k);
    e.get(&destination, RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(e.dns.queries(FLAKY), 3 * k, "asked a third time");
    e.check(
        &receiver,
        &destination,
        receiver.addr,
        Some(FLAKY),
        &destination,
    );
}
