//! Re-resolve on reset: an admin's `reset_connection` makes the federation
//! client drop the destination's cached `.well-known` (and DNS) answers, so
//! a delegation just fixed is followed by the next request rather than
//! after the cache's 24 h. Real sockets on 127.0.0.1: a DNS responder, a
//! `.well-known` server whose delegation changes (answering with a day's
//! `Cache-Control`), two receivers that say who they are, a real SQLite
//! store whose reset is the one the admin API and the console call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../../crates/federation/tests/dns_responder/mod.rs"]
mod dns_responder;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use dns_responder::DnsServer;
use herald::federation_listener::TlsListener;
use herald_federation::backoff::RetryLimiter;
use herald_federation::client::{ClientSettings, FederationClient, RequestOptions};
use herald_federation::dns::Dns;
use herald_federation::ip_filter::IpFilter;
use herald_federation::resolve::ServerResolver;
use herald_federation::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_federation::{BackoffPolicy, RetryTimings};
use herald_keys::{ServerKeys, SigningKey};
use herald_store::destinations::ResetOutcome;
use herald_store::Store;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const NAME: &str = "deleg.example.test";

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("no result within 30 s")
}

/// An HTTPS server on 127.0.0.1 with `app`; its address.
async fn serve(tls: Arc<rustls::ServerConfig>, app: Router) -> std::net::SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, tls).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A receiver answering version with its own `name`.
async fn receiver(tls: Arc<rustls::ServerConfig>, name: &'static str) -> std::net::SocketAddr {
    let app = Router::new().route(
        "/_matrix/federation/v1/version",
        get(move || async move { Json(json!({"server": {"name": name}})) }),
    );
    serve(tls, app).await
}

#[tokio::test]
async fn reset_connection_drops_the_cached_delegation() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec![NAME.to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, certified.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certified.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
            )
            .unwrap(),
    );

    let a = receiver(server_tls.clone(), "A").await;
    let b = receiver(server_tls.clone(), "B").await;
    let delegation = Arc::new(Mutex::new(a.to_string()));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d, f) = (delegation.clone(), fetches.clone());
    let well_known = Router::new().route(
        "/.well-known/matrix/server",
        get(move || {
            let (d, f) = (d.clone(), f.clone());
            async move {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (
                    [("cache-control", "max-age=86400")],
                    Json(json!({ "m.server": d.lock().clone() })),
                )
            }
        }),
    );
    let wk = serve(server_tls, well_known).await;

    let dns_server = DnsServer::start().await;
    dns_server.a(NAME, "127.0.0.1");
    let dns = Dns::with_nameserver(dns_server.addr);
    let tls = herald_federation::connect::federation_tls_config(
        true,
        Some(std::slice::from_ref(&ca_path)),
    )
    .unwrap();
    let filter = IpFilter::new(None, &["127.0.0.0/8"]).unwrap();
    let mut wk_config = WellKnownConfig::new(tls.clone()).with_ip_filter(filter.clone());
    wk_config.port = wk.port();
    let resolver = Arc::new(ServerResolver::new(
        dns.clone(),
        WellKnownResolver::new(dns, wk_config, Arc::new(SystemClock)),
    ));
    let store = Store::open(&dir.path().join("herald.db")).await.unwrap();
    let policy = BackoffPolicy {
        min_interval: Duration::from_secs(600),
        multiplier: 2.0,
        max_interval: Duration::from_secs(86_400),
    };
    let limiter = RetryLimiter::new(store.destinations.clone(), policy);
    let keys = Arc::new(ServerKeys::new(
        "origin.test",
        SigningKey::generate("k").unwrap(),
    ));
    let client = FederationClient::new(
        keys,
        resolver,
        limiter,
        filter,
        tls,
        ClientSettings::default(),
    );
    let options = RequestOptions {
        ignore_backoff: true,
        ..Default::default()
    };
    let ask = || async {
        let answer: Value =
            bounded(client.get_json(NAME, "/_matrix/federation/v1/version", options))
                .await
                .unwrap();
        answer["server"]["name"].as_str().unwrap().to_owned()
    };

    assert_eq!(ask().await, "A");
    // The admin fixes the delegation; the cache (a day) still says A.
    *delegation.lock() = b.to_string();
    assert_eq!(ask().await, "A");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The destination is backing off, and the admin resets it.
    let now = herald_store::now_ms();
    store
        .destinations
        .set_retry_timings(
            NAME,
            RetryTimings {
                failure_ts: Some(now),
                retry_last_ts: now,
                retry_interval: 600_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .destinations
            .reset_retry_timings(NAME, None)
            .await
            .unwrap(),
        ResetOutcome::Reset
    );
    // The next request fetches the delegation again and goes to B.
    assert_eq!(ask().await, "B");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // And B's delegation is cached again from then on.
    assert_eq!(ask().await, "B");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}
