//! Diagnose (`herald_federation::diagnose`, `POST
//! /_herald/admin/v1/federation/destinations/<d>/diagnose`, `herald
//! federation diagnose`) against real servers on 127.0.0.1: a DNS responder
//! (the federation crate's test responder), HTTPS peers (axum behind
//! `TlsListener`) presenting rcgen certificates from a test CA trusted
//! through `federation_custom_ca_list`, and the demo's simulated
//! homeserver. Each way of failing produces its verdict at the right step:
//! no DNS answer, connection refused, a certificate for another name, an
//! expired certificate, an untrusted CA, a key with a bad self-signature, a
//! 404 on version, a slow answer (the step's timeout), a name resolving
//! only to blocked addresses (nothing connected: the listener counts
//! accepts), an invalid server name (400); and an all-OK run, through the
//! engine, the API and the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
#[path = "../../crates/federation/tests/dns_responder/mod.rs"]
mod dns_responder;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use dns_responder::DnsServer;
use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use herald::federation_listener::TlsListener;
use herald_federation::connect::federation_verifier;
use herald_federation::diagnose::{DiagnoseSettings, Diagnoser};
use herald_federation::dns::Dns;
use herald_federation::ip_filter::IpFilter;
use herald_federation::resolve::ServerResolver;
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::{ServerKeys, SigningKey};
use herald_shared::{DiagnoseReport, FailureKind, StepName, Verdict};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Every wait of a test is bounded by this.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("no result within 60 s")
}

// ---------- certificates ----------

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf certificate for `names` signed by `ca`, as a rustls server
/// configuration; `expired` makes it valid in 2020 only.
fn server_tls(ca: &Ca, names: &[&str], expired: bool) -> Arc<rustls::ServerConfig> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

// ---------- peers ----------

/// How a test peer answers version and key requests.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Healthy,
    Version404,
    SlowVersion,
    BadKeySignature,
}

/// Serves version and key over TLS on 127.0.0.1 as `server_name`
/// (`127.0.0.1:<port>`); the port is the listener's.
async fn start_peer(tls: Arc<rustls::ServerConfig>, behaviour: Peer) -> String {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = tcp.local_addr().unwrap().to_string();
    let keys = ServerKeys::new(name.clone(), SigningKey::generate("good").unwrap());
    let version = move || async move {
        match behaviour {
            Peer::Version404 => (
                StatusCode::NOT_FOUND,
                Json(json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})),
            ),
            Peer::SlowVersion => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (StatusCode::OK, Json(json!({"server": {"name": "slow"}})))
            }
            _ => (
                StatusCode::OK,
                Json(json!({"server": {"name": "TestPeer", "version": "1.2.3"}})),
            ),
        }
    };
    let key = move || {
        let keys = keys.clone();
        async move {
            let until = herald_store::now_ms() as u64 + 86_400_000;
            let mut body = keys.key_server_response(until).unwrap();
            if behaviour == Peer::BadKeySignature {
                // Signed by another key than the one published.
                let other = SigningKey::generate("good").unwrap();
                body["signatures"] = json!({});
                herald_keys::sign_json(keys.server_name(), &other, &mut body).unwrap();
            }
            Json(body)
        }
    };
    let app = Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/key/v2/server", get(key));
    let listener = TlsListener::new(tcp, tls).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    name
}

/// A plain TCP listener that counts the connections it accepts and holds
/// them open without a word.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    (addr, accepted)
}

// ---------- the diagnoser ----------

struct Env {
    dns: DnsServer,
    ca: Ca,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("Herald Test CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    Env {
        dns: DnsServer::start().await,
        ca,
        ca_path,
        _dir: dir,
    }
}

fn loopback_allowed() -> IpFilter {
    IpFilter::new(None, &["127.0.0.0/8"]).unwrap()
}

impl Env {
    fn diagnoser(&self, filter: IpFilter, well_known_port: u16, step: Duration) -> Diagnoser {
        diagnoser(&self.dns, &self.ca_path, filter, well_known_port, step)
    }

    /// A diagnosis of `name` with loopback allowed, within the test's bound.
    async fn diagnose_loopback(&self, name: &str) -> DiagnoseReport {
        bounded(self.diagnoser(loopback_allowed(), 443, STEP).diagnose(name))
            .await
            .unwrap()
    }
}

fn diagnoser(
    dns: &DnsServer,
    ca_path: &Path,
    filter: IpFilter,
    well_known_port: u16,
    step: Duration,
) -> Diagnoser {
    let dns = Dns::with_nameserver(dns.addr);
    let tls = herald_federation::connect::federation_tls_config(true, Some(&[ca_path.to_owned()]))
        .unwrap();
    let mut config = WellKnownConfig::new(tls).with_ip_filter(filter.clone());
    config.port = well_known_port;
    config.timeout = step;
    let well_known = WellKnownResolver::new(dns.clone(), config, Arc::new(SystemClock));
    let verifier = federation_verifier(true, Some(&[ca_path.to_owned()])).unwrap();
    Diagnoser::new(
        Arc::new(ServerResolver::new(dns, well_known)),
        filter,
        verifier,
        DiagnoseSettings {
            step_timeout: step,
            max_addresses: 4,
        },
    )
    .unwrap()
}

/// The (only, or first) step named `name`.
fn step(report: &DiagnoseReport, name: StepName) -> &herald_shared::DiagnoseStep {
    report
        .steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no {name:?} step in {report:#?}"))
}

/// Federation fails, and the failing step is `name` with `verdict`.
fn assert_fails_at(report: &DiagnoseReport, name: StepName, verdict: Verdict) {
    assert!(!report.federation_ok, "{report:#?}");
    let failing = report.failing_step().expect("a failing step");
    assert_eq!(
        (failing.step, failing.verdict),
        (name, verdict),
        "{report:#?}"
    );
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tcp.local_addr().unwrap().port()
}

const STEP: Duration = Duration::from_secs(5);

// ---------- one test per verdict ----------

#[tokio::test]
async fn all_ok_against_a_loopback_homeserver() {
    let e = env().await;
    let name = start_peer(server_tls(&e.ca, &["127.0.0.1"], false), Peer::Healthy).await;
    let report = e.diagnose_loopback(&name).await;
    assert!(report.federation_ok, "{report:#?}");
    assert_eq!(report.failed_step, None);
    for s in [StepName::Addresses, StepName::Connect, StepName::Tls] {
        assert_eq!(step(&report, s).verdict, Verdict::Ok, "{s:?}");
    }
    assert_eq!(step(&report, StepName::WellKnown).verdict, Verdict::Skipped);
    assert_eq!(
        step(&report, StepName::Version).message,
        "TestPeer 1.2.3",
        "{report:#?}"
    );
    assert_eq!(report.version.name.as_deref(), Some("TestPeer"));
    let key = step(&report, StepName::Key);
    assert_eq!(key.verdict, Verdict::Ok);
    assert!(key.message.contains("ed25519:good"), "{}", key.message);
    let conn = &report.connection_reports[&name];
    assert!(conn.checks.all_checks_ok, "{conn:#?}");
    assert_eq!(conn.checks.valid_certificates, Some(true));
    assert_eq!(conn.checks.matching_server_name, Some(true));
    assert!(conn.ed25519_verify_keys.contains_key("ed25519:good"));
    let leaf = &conn.certificates[0];
    assert_eq!(leaf.names, vec!["127.0.0.1".to_owned()]);
    assert_eq!(leaf.issuer, "Herald Test CA");
    assert!(leaf.not_after_ts > herald_store::now_ms());
    assert!(conn.cipher.as_ref().unwrap().version.starts_with("TLS"));
}

#[tokio::test]
async fn the_demo_homeserver_passes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let hs = Homeserver::start_with_cert(Behaviour::healthy(), &cert)
        .await
        .unwrap();
    let dns = DnsServer::start().await;
    let report = bounded(
        diagnoser(&dns, &cert.cert_path, loopback_allowed(), 443, STEP).diagnose(hs.name()),
    )
    .await
    .unwrap();
    assert!(report.federation_ok, "{report:#?}");
    assert_eq!(step(&report, StepName::Key).verdict, Verdict::Ok);
}

#[tokio::test]
async fn no_dns_answer() {
    let e = env().await;
    let report = bounded(
        e.diagnoser(loopback_allowed(), 443, STEP)
            .diagnose("nothing.example.test"),
    )
    .await
    .unwrap();
    assert_fails_at(&report, StepName::Addresses, Verdict::Fail);
    let addresses = step(&report, StepName::Addresses);
    assert_eq!(addresses.kind, Some(FailureKind::Dns));
    assert!(
        addresses
            .message
            .contains("nothing.example.test has no A/AAAA"),
        "{}",
        addresses.message
    );
    // No delegation and no SRV records are allowed: not failures.
    assert_eq!(step(&report, StepName::WellKnown).verdict, Verdict::None);
    assert_eq!(step(&report, StepName::SrvMatrixFed).verdict, Verdict::None);
    assert_eq!(step(&report, StepName::SrvMatrix).verdict, Verdict::None);
    assert!(e.dns.queries("_matrix-fed._tcp.nothing.example.test") > 0);
    assert_eq!(step(&report, StepName::Version).verdict, Verdict::Skipped);
}

#[tokio::test]
async fn srv_and_delegation_are_followed() {
    let e = env().await;
    let name = start_peer(
        server_tls(&e.ca, &["deleg.example.test", "127.0.0.1"], false),
        Peer::Healthy,
    )
    .await;
    let port: u16 = name.rsplit_once(':').unwrap().1.parse().unwrap();
    e.dns.a("deleg.example.test", "127.0.0.1");
    e.dns.a("target.example.test", "127.0.0.1");
    e.dns.srv(
        "_matrix-fed._tcp.deleg.example.test",
        10,
        5,
        port,
        "target.example.test",
    );
    let report = bounded(
        e.diagnoser(loopback_allowed(), 443, STEP)
            .diagnose("deleg.example.test"),
    )
    .await
    .unwrap();
    let srv = step(&report, StepName::SrvMatrixFed);
    assert_eq!(srv.verdict, Verdict::Ok, "{report:#?}");
    assert_eq!(report.dns_result.srv_records[0].port, port);
    assert_eq!(step(&report, StepName::SrvMatrix).verdict, Verdict::Skipped);
    assert_eq!(report.dns_result.addrs, vec![format!("127.0.0.1:{port}")]);
    assert_eq!(
        report.dns_result.tls_name.as_deref(),
        Some("deleg.example.test")
    );
    // The key answer names 127.0.0.1:<port>, not deleg.example.test.
    assert_fails_at(&report, StepName::Key, Verdict::Fail);
    assert!(
        step(&report, StepName::Key)
            .message
            .contains("server_name is"),
        "{report:#?}"
    );
    assert_eq!(step(&report, StepName::Tls).verdict, Verdict::Ok);
}

#[tokio::test]
async fn connection_refused() {
    let e = env().await;
    let name = format!("127.0.0.1:{}", closed_port().await);
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Connect, Verdict::Fail);
    let connect = step(&report, StepName::Connect);
    assert_eq!(connect.kind, Some(FailureKind::Connect));
    assert!(
        connect.message.to_lowercase().contains("refused"),
        "{}",
        connect.message
    );
    assert!(report.connection_errors.contains_key(&name));
    assert_eq!(step(&report, StepName::Key).verdict, Verdict::Skipped);
}

#[tokio::test]
async fn certificate_for_another_name() {
    let e = env().await;
    let name = start_peer(
        server_tls(&e.ca, &["other.example.test"], false),
        Peer::Healthy,
    )
    .await;
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Tls, Verdict::Fail);
    let conn = &report.connection_reports[&name];
    assert_eq!(conn.checks.valid_certificates, Some(false));
    assert_eq!(conn.certificates[0].names, vec!["other.example.test"]);
    let error = conn.checks.certificate_error.as_deref().unwrap();
    assert!(error.contains("not valid for name"), "{error}");
    assert_eq!(step(&report, StepName::Tls).kind, Some(FailureKind::Tls));
    assert_eq!(step(&report, StepName::Version).verdict, Verdict::Skipped);
}

#[tokio::test]
async fn expired_certificate() {
    let e = env().await;
    let name = start_peer(server_tls(&e.ca, &["127.0.0.1"], true), Peer::Healthy).await;
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Tls, Verdict::Fail);
    let conn = &report.connection_reports[&name];
    let error = conn.checks.certificate_error.as_deref().unwrap();
    assert!(error.to_lowercase().contains("expired"), "{error}");
    assert!(conn.certificates[0].not_after_ts < herald_store::now_ms());
    assert!(step(&report, StepName::Tls).message.contains("2020"));
}

#[tokio::test]
async fn untrusted_ca() {
    let e = env().await;
    let stranger = ca("Stranger CA");
    let name = start_peer(server_tls(&stranger, &["127.0.0.1"], false), Peer::Healthy).await;
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Tls, Verdict::Fail);
    let conn = &report.connection_reports[&name];
    let error = conn.checks.certificate_error.as_deref().unwrap();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(conn.certificates[0].issuer, "Stranger CA");
}

#[tokio::test]
async fn key_with_a_bad_self_signature() {
    let e = env().await;
    let name = start_peer(
        server_tls(&e.ca, &["127.0.0.1"], false),
        Peer::BadKeySignature,
    )
    .await;
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Key, Verdict::Fail);
    assert_eq!(step(&report, StepName::Version).verdict, Verdict::Ok);
    let key = step(&report, StepName::Key);
    assert!(key.message.contains("does not verify"), "{}", key.message);
    let checks = &report.connection_reports[&name].checks;
    assert_eq!(checks.all_ed25519_checks_ok, Some(false));
    let check = &checks.ed25519_checks["ed25519:good"];
    assert!(check.valid_ed25519 && !check.matching_signature);
    assert!(!checks.all_checks_ok);
}

#[tokio::test]
async fn not_found_on_version() {
    let e = env().await;
    let name = start_peer(server_tls(&e.ca, &["127.0.0.1"], false), Peer::Version404).await;
    let report = e.diagnose_loopback(&name).await;
    assert_fails_at(&report, StepName::Version, Verdict::Fail);
    let version = step(&report, StepName::Version);
    assert_eq!(version.kind, Some(FailureKind::Http));
    assert!(
        version.message.contains("HTTP 404 M_UNRECOGNIZED"),
        "{}",
        version.message
    );
    assert!(report.version.error.as_deref().unwrap().contains("404"));
    // The key is still checked.
    assert_eq!(step(&report, StepName::Key).verdict, Verdict::Ok);
}

#[tokio::test]
async fn a_slow_answer_times_out_at_its_step() {
    let e = env().await;
    let name = start_peer(server_tls(&e.ca, &["127.0.0.1"], false), Peer::SlowVersion).await;
    let step_timeout = Duration::from_millis(800);
    let report = bounded(
        e.diagnoser(loopback_allowed(), 443, step_timeout)
            .diagnose(&name),
    )
    .await
    .unwrap();
    assert_fails_at(&report, StepName::Version, Verdict::Timeout);
    let version = step(&report, StepName::Version);
    assert_eq!(version.kind, Some(FailureKind::Timeout));
    assert!(
        (800..5000).contains(&version.duration_ms),
        "{}",
        version.duration_ms
    );
    assert_eq!(step(&report, StepName::Key).verdict, Verdict::Ok);
}

#[tokio::test]
async fn a_name_resolving_only_to_blocked_addresses_is_not_connected_to() {
    let e = env().await;
    let (addr, accepted) = counting_listener().await;
    e.dns.a("internal.example.test", "127.0.0.1");
    e.dns.a("target.internal.example.test", "127.0.0.1");
    e.dns.srv(
        "_matrix-fed._tcp.internal.example.test",
        10,
        5,
        addr.port(),
        "target.internal.example.test",
    );
    // Synapse's default blacklist (loopback in it); the well-known fetch
    // would go to the counting listener's port too.
    let default_filter = IpFilter::new::<&str>(None, &[]).unwrap();
    let report = bounded(
        e.diagnoser(default_filter, addr.port(), STEP)
            .diagnose("internal.example.test"),
    )
    .await
    .unwrap();
    assert_fails_at(&report, StepName::Addresses, Verdict::Blocked);
    assert_eq!(
        step(&report, StepName::Addresses).kind,
        Some(FailureKind::Blocked)
    );
    assert_eq!(report.dns_result.blocked, vec![addr.to_string()]);
    assert!(report.connection_errors[&addr.to_string()].contains("blocked"));
    assert!(step(&report, StepName::WellKnown)
        .message
        .contains("blocked"));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a connection was made");
    // The listener does count: one connection of our own is seen.
    let _probe = tokio::net::TcpStream::connect(addr).await.unwrap();
    bounded(async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_invalid_server_name_is_refused() {
    let e = env().await;
    for bad in ["", "a b", "example.org:99999", "[::1", "a_b.org"] {
        assert!(
            e.diagnoser(loopback_allowed(), 443, STEP)
                .diagnose(bad)
                .await
                .is_err(),
            "{bad:?}"
        );
    }
}

// ---------- the API ----------

const PATH: &str = "/_herald/admin/v1/federation/destinations";

fn trusting(cert: &LoopbackCert) -> impl FnOnce(&mut herald::config::Config) + '_ {
    move |config| {
        config.federation_custom_ca_list = Some(vec![cert.cert_path.clone()]);
        config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
        config.diagnose.step_timeout = herald::config::ConfigDuration(Duration::from_secs(2));
    }
}

#[tokio::test]
async fn api_diagnoses_any_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let hs = Homeserver::start_with_cert(Behaviour::healthy(), &cert)
        .await
        .unwrap();
    let server = common::TestServer::start_with(trusting(&cert)).await;
    let token = server.admin_token().await;
    // Not a known destination: diagnosed all the same.
    let (status, body) = bounded(server.post_json(
        &format!("{PATH}/{}/diagnose", hs.name()),
        Some(&token),
        json!({}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["FederationOK"], true, "{body}");
    assert_eq!(body["server_name"], hs.name());
    assert_eq!(body["failed_step"], Value::Null);
    let steps = body["steps"].as_array().unwrap();
    assert_eq!(
        steps.last().unwrap()["step"],
        "key",
        "the key is the last step"
    );
    let report: DiagnoseReport = serde_json::from_value(body).unwrap();
    assert_eq!(step(&report, StepName::Version).verdict, Verdict::Ok);

    // A refused port: 200 with the failing step named.
    let refused = format!("127.0.0.1:{}", closed_port().await);
    let (status, body) = bounded(server.post_json(
        &format!("{PATH}/{refused}/diagnose"),
        Some(&token),
        json!({}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["FederationOK"], false);
    let failed = body["failed_step"].as_u64().unwrap() as usize;
    assert_eq!(body["steps"][failed]["step"], "connect");
    assert_eq!(body["steps"][failed]["verdict"], "fail");
}

#[tokio::test]
async fn api_refuses_bad_input_and_strangers() {
    let server = common::TestServer::start().await;
    let token = server.admin_token().await;
    for bad in ["a%20b", "example.org:99999", "a_b.org", "%5B%3A%3A1"] {
        let got = server
            .post_json(&format!("{PATH}/{bad}/diagnose"), Some(&token), json!({}))
            .await;
        assert_eq!(got.0, 400, "{bad}: {}", got.1);
        assert_eq!(got.1["errcode"], "M_INVALID_PARAM", "{bad}");
    }
    let got = server
        .post_json(&format!("{PATH}/example.org/diagnose"), None, json!({}))
        .await;
    common::assert_missing_token(&got);
    let user = server.login(common::USER, common::USER_PASSWORD).await;
    let got = server
        .post_json(
            &format!("{PATH}/example.org/diagnose"),
            Some(&user),
            json!({}),
        )
        .await;
    common::assert_not_admin(&got);
    let got = server
        .get(&format!("{PATH}/example.org/diagnose"), Some(&token))
        .await;
    assert_eq!(got.0, 405, "{}", got.1);
}

#[tokio::test]
async fn api_blocked_name_connects_to_nothing() {
    // Default IP filter: loopback is blocked.
    let server = common::TestServer::start().await;
    let token = server.admin_token().await;
    let (addr, accepted) = counting_listener().await;
    let (status, body) =
        bounded(server.post_json(&format!("{PATH}/{addr}/diagnose"), Some(&token), json!({})))
            .await;
    assert_eq!(status, 200, "{body}");
    let failed = body["failed_step"].as_u64().unwrap() as usize;
    assert_eq!(body["steps"][failed]["verdict"], "blocked", "{body}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn api_one_diagnosis_per_destination_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let server = Arc::new(common::TestServer::start_with(trusting(&cert)).await);
    let token = server.admin_token().await;
    // Accepts and says nothing: the TLS step waits its 2 s.
    let (addr, accepted) = counting_listener().await;
    let first = {
        let (server, token) = (server.clone(), token.clone());
        tokio::spawn(async move {
            server
                .post_json(&format!("{PATH}/{addr}/diagnose"), Some(&token), json!({}))
                .await
        })
    };
    bounded(async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let second = server
        .post_json(&format!("{PATH}/{addr}/diagnose"), Some(&token), json!({}))
        .await;
    assert_eq!(second.0, 429, "{}", second.1);
    assert_eq!(second.1["errcode"], "M_LIMIT_EXCEEDED");
    assert!(second.1["retry_after_ms"].as_u64().is_some());
    let (status, body) = bounded(first).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let failed = body["failed_step"].as_u64().unwrap() as usize;
    assert_eq!(body["steps"][failed]["step"], "tls", "{body}");
    assert_eq!(body["steps"][failed]["verdict"], "timeout", "{body}");
    // Done: the destination may be diagnosed again.
    let (status, _) =
        bounded(server.post_json(&format!("{PATH}/{addr}/diagnose"), Some(&token), json!({})))
            .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn api_global_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let server = Arc::new(
        common::TestServer::start_with(|config| {
            trusting(&cert)(config);
            config.diagnose.max_concurrent = 1;
        })
        .await,
    );
    let token = server.admin_token().await;
    let (silent, accepted) = counting_listener().await;
    let first = {
        let (server, token) = (server.clone(), token.clone());
        tokio::spawn(async move {
            server
                .post_json(
                    &format!("{PATH}/{silent}/diagnose"),
                    Some(&token),
                    json!({}),
                )
                .await
        })
    };
    bounded(async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Another destination: refused too, the one slot is taken.
    let other = server
        .post_json(
            &format!("{PATH}/127.0.0.1:{}/diagnose", closed_port().await),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(other.0, 429, "{}", other.1);
    assert_eq!(bounded(first).await.unwrap().0, 200);
}

// ---------- the binary ----------

#[tokio::test]
async fn cli_prints_the_report_and_exits_by_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let hs = Homeserver::start_with_cert(Behaviour::healthy(), &cert)
        .await
        .unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "ip_range_whitelist = [\"127.0.0.0/8\"]\n\
             federation_custom_ca_list = [{:?}]\n\
             [diagnose]\nstep_timeout = \"3s\"\n",
            cert.cert_path
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let config = config.to_str().unwrap().to_owned();
    let args = |name: &str, json: bool| {
        let mut a = vec!["federation".into(), "diagnose".into(), name.to_owned()];
        if json {
            a.push("--json".into());
        }
        a.extend(["--config".into(), config.clone()]);
        a
    };
    let ok = bounded(run(args(hs.name(), true))).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: DiagnoseReport = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(report.federation_ok);
    assert_eq!(report.server_name, hs.name());

    let refused = format!("127.0.0.1:{}", closed_port().await);
    let bad = bounded(run(args(&refused, false))).await.unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("federation FAILS"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("=> [fail") && l.contains("TCP connect")),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("is not OK: TCP connect failed"), "{stderr}");

    let invalid = bounded(run(args("a b", false))).await.unwrap();
    assert_eq!(invalid.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("not a valid server name"));
}
