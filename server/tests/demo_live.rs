//! The demo's simulated homeservers fail each in its own way, seen from the
//! network with the TLS trust Herald's demo configuration gives it: the
//! rejecting one answers 401 `M_UNAUTHORIZED` "Invalid signature", the
//! refusing one refuses connections (and keeps doing so), the one with a
//! certificate for another name fails the handshake on the name alone (the
//! certificate is trusted and verifies for its own name), the timing-out
//! one answers nothing within the demo's client timeout, and the healthy
//! ones answer. That Herald backs off from each within a minute is checked
//! against the real binary by end2end/tests/demo.spec.ts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald::demo::homeserver::Homeserver;
use herald::demo::live::{self, Federation, OTHER_NAME, TIMING_OUT_DELAY};
use herald::demo::tls::LoopbackCert;
use herald_federation::connect::federation_tls_config;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Demo {
    federation: Federation,
    tls: Arc<rustls::ClientConfig>,
    client_timeout: Duration,
    _dir: tempfile::TempDir,
}

async fn demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let federation = Federation::start(&cert, dir.path()).await.unwrap();
    let config = live::config(
        &dir.path().join("demo.db"),
        "127.0.0.1:0",
        "127.0.0.1:8448".parse().unwrap(),
        &cert,
        &federation,
        "token",
    );
    config.validate().unwrap();
    let tls = federation_tls_config(true, config.federation_custom_ca_list.as_deref()).unwrap();
    Demo {
        federation,
        tls,
        client_timeout: config.federation.client_timeout.0,
        _dir: dir,
    }
}

impl Demo {
    fn servers(&self, prefix: &str) -> Vec<&Homeserver> {
        let found: Vec<&Homeserver> = self
            .federation
            .homeservers
            .iter()
            .filter(|(what, _)| what.starts_with(prefix))
            .map(|(_, hs)| hs)
            .collect();
        assert!(!found.is_empty(), "no demo homeserver is {prefix:?}");
        found
    }

    fn http(&self, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.tls).clone())
            .no_proxy()
            .timeout(timeout)
            .build()
            .unwrap()
    }

    async fn handshake(
        &self,
        addr: SocketAddr,
        name: ServerName<'static>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
    }
}

fn loopback_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

#[tokio::test]
async fn each_failing_demo_homeserver_fails_its_own_way() {
    let demo = demo().await;
    let http = demo.http(Duration::from_secs(10));

    // Healthy: answers over TLS for 127.0.0.1.
    for hs in demo.servers("healthy") {
        let answer = http
            .get(format!(
                "https://{}/_matrix/federation/v1/version",
                hs.name()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }

    // Rejecting: 401 M_UNAUTHORIZED "Invalid signature" to a transaction.
    let rejecting = demo.servers("rejecting")[0];
    let answer = http
        .put(format!(
            "https://{}/_matrix/federation/v1/send/1",
            rejecting.name()
        ))
        .json(&serde_json::json!({"pdus": [], "edus": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid signature"),
        "{body}"
    );

    // Refusing: every connection refused, not only the first.
    let refusing = demo.servers("refusing")[0];
    for _ in 0..3 {
        let e = TcpStream::connect(refusing.addr()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }

    // Wrong certificate: the handshake for 127.0.0.1 fails on the name; the
    // same certificate verifies for the name it is for, so it is trusted and
    // only the name is wrong.
    let other = demo.servers("wrong certificate")[0];
    let e = demo
        .handshake(other.addr(), loopback_name())
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    demo.handshake(other.addr(), ServerName::try_from(OTHER_NAME).unwrap())
        .await
        .unwrap();
    // (A healthy one, by contrast, passes the handshake for 127.0.0.1.)
    demo.handshake(demo.servers("healthy")[0].addr(), loopback_name())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_timing_out_demo_homeserver_answers_past_the_client_timeout() {
    let demo = demo().await;
    assert!(
        TIMING_OUT_DELAY > demo.client_timeout * 2,
        "the delay {TIMING_OUT_DELAY:?} must be well past the client timeout {:?}",
        demo.client_timeout
    );
    let slow = demo.servers("timing out")[0];
    // Its TLS handshake succeeds; no answer comes in a second, to a
    // transaction or to the version request Diagnose makes.
    demo.handshake(slow.addr(), loopback_name()).await.unwrap();
    let http = demo.http(Duration::from_secs(1));
    let version = http
        .get(format!(
            "https://{}/_matrix/federation/v1/version",
            slow.name()
        ))
        .send()
        .await
        .unwrap_err();
    assert!(version.is_timeout(), "{version:?}");
    let send = http
        .put(format!(
            "https://{}/_matrix/federation/v1/send/1",
            slow.name()
        ))
        .json(&serde_json::json!({"pdus": [], "edus": []}))
        .send()
        .await
        .unwrap_err();
    assert!(send.is_timeout(), "{send:?}");
    // The transaction reached it (it is slow, not unreachable).
    assert_eq!(slow.received().attempts, vec!["1".to_owned()]);
}
