//! The live federation of `herald demo`: simulated homeservers on 127.0.0.1,
//! one per behaviour an admin meets (healthy, slow, flaky, rate-limiting,
//! rejecting with 401, refusing connections, presenting a certificate for
//! another name, answering past the client timeout, down and coming back),
//! and the configuration that makes Herald fail, back off, recover and catch
//! up within minutes: each failing one is in backoff within a minute of the
//! start, with a different reason.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::homeserver::{Behaviour, Homeserver, HomeserverError};
use super::tls::LoopbackCert;
use crate::config::{Config, ConfigDuration};

/// The simulated homeservers, each with what it does.
pub struct Federation {
    pub homeservers: Vec<(String, Homeserver)>,
    /// The certificate the one with [`Cert::OtherName`] presents; Herald
    /// trusts it as an issuer ([`config`]), so only its name is wrong.
    pub other_name_cert: LoopbackCert,
}

/// The name on the certificate of the homeserver that presents one for
/// another name.
pub const OTHER_NAME: &str = "other-name.example";

/// How long the timing-out homeserver takes to answer anything: past the
/// demo's `client_timeout` (10 s, [`config`]).
pub const TIMING_OUT_DELAY: Duration = Duration::from_secs(30);

/// Which certificate a simulated homeserver presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cert {
    /// The demo's certificate for 127.0.0.1.
    Loopback,
    /// A certificate for [`OTHER_NAME`].
    OtherName,
}

/// The behaviours the demo shows, with their descriptions (the banner
/// prints them; the end-to-end test finds the servers by them).
fn behaviours() -> Vec<(&'static str, Behaviour, Cert)> {
    let healthy = Behaviour::healthy;
    let plain = |(what, behaviour)| (what, behaviour, Cert::Loopback);
    let mut list: Vec<_> = [
        ("healthy", healthy()),
        ("healthy", healthy()),
        ("healthy", healthy()),
        (
            "slow: 1.5 s per transaction",
            Behaviour {
                delay: Duration::from_millis(1500),
                ..healthy()
            },
        ),
        (
            "flaky: 30% of transactions answered 500",
            Behaviour {
                failure_rate: 0.3,
                ..healthy()
            },
        ),
        (
            "rate-limiting: every 3rd transaction answered 429",
            Behaviour {
                rate_limit_every: Some(3),
                ..healthy()
            },
        ),
        (
            "rejecting: answers 401 M_UNAUTHORIZED \"Invalid signature\"",
            Behaviour {
                reject_all: true,
                ..healthy()
            },
        ),
        (
            "refusing: nothing listens on its port",
            Behaviour {
                refuse_connections: true,
                ..healthy()
            },
        ),
        (
            "timing out: answers after 30 s, past the 10 s client timeout",
            Behaviour {
                delay: TIMING_OUT_DELAY,
                delay_every_request: true,
                ..healthy()
            },
        ),
        (
            "down, back after 1 minute",
            Behaviour {
                down_for: Duration::from_secs(60),
                ..healthy()
            },
        ),
        (
            "down, back after 2 minutes",
            Behaviour {
                down_for: Duration::from_secs(120),
                ..healthy()
            },
        ),
    ]
    .into_iter()
    .map(plain)
    .collect();
    list.push((
        "wrong certificate: its TLS certificate is for other-name.example",
        healthy(),
        Cert::OtherName,
    ));
    list
}

impl Federation {
    /// Starts every simulated homeserver, presenting `cert` (one presents
    /// a certificate for [`OTHER_NAME`], written into `dir`) and trusting
    /// `cert`.
    pub async fn start(cert: &LoopbackCert, dir: &Path) -> Result<Federation, HomeserverError> {
        let other_name_cert = LoopbackCert::generate_named(dir, "other-name", OTHER_NAME)?;
        let mut homeservers = Vec::new();
        for (what, behaviour, presents) in behaviours() {
            let server_tls = match presents {
                Cert::Loopback => cert.server_config()?,
                Cert::OtherName => other_name_cert.server_config()?,
            };
            let hs = Homeserver::start(behaviour, server_tls, cert.client_config()?).await?;
            homeservers.push((what.to_owned(), hs));
        }
        Ok(Federation {
            homeservers,
            other_name_cert,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.homeservers
            .iter()
            .map(|(_, hs)| hs.name().to_owned())
            .collect()
    }
}

/// The demo's configuration: Herald as `127.0.0.1:<federation port>` with
/// its key server over TLS (the simulated homeservers fetch its key there),
/// loopback allowed, the demo certificate and the one for another name of
/// `peers` trusted (so that one fails on its name alone), a 10 s client
/// timeout, and short retry
/// intervals: backoff from 5 s doubling to a minute, catch-up after 30 s of
/// backoff, two quick retries inside a transaction; 100 logins per address
/// and per account before `rc_login` holds them back.
pub fn config(
    database: &Path,
    listen: &str,
    federation: SocketAddr,
    cert: &LoopbackCert,
    peers: &Federation,
    sender_token: &str,
) -> Config {
    let mut config = Config {
        server_name: federation.to_string(),
        database: database.to_owned().into(),
        listen: listen.into(),
        federation_listen: Some(federation.to_string()),
        tls_certificate_path: Some(cert.cert_path.clone()),
        tls_private_key_path: Some(cert.key_path.clone()),
        ip_range_whitelist: vec!["127.0.0.0/8".into()],
        federation_custom_ca_list: Some(vec![
            cert.cert_path.clone(),
            peers.other_name_cert.cert_path.clone(),
        ]),
        sender_api_token: Some(sender_token.into()),
        destination_min_retry_interval: ConfigDuration(Duration::from_secs(5)),
        destination_max_retry_interval: ConfigDuration(Duration::from_secs(60)),
        sender_catch_up_after: ConfigDuration(Duration::from_secs(30)),
        ..Config::default()
    };
    config.federation.max_long_retries = 2;
    config.federation.max_long_retry_delay = ConfigDuration(Duration::from_secs(1));
    config.federation.client_timeout = ConfigDuration(Duration::from_secs(10));
    // Whoever tries the demo may sign in and out more often than Synapse's
    // five logins per address and per account allow.
    config.rc_login.address.burst_count = 100.0;
    config.rc_login.account.burst_count = 100.0;
    config
}
