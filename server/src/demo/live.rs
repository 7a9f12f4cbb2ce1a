//! The live federation of `herald demo`: simulated homeservers on 127.0.0.1,
//! one per behaviour an admin meets (healthy, slow, flaky, rate-limiting,
//! rejecting, down and coming back), and the configuration that makes Herald
//! fail, back off, recover and catch up within minutes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::homeserver::{Behaviour, Homeserver, HomeserverError};
use super::tls::LoopbackCert;
use crate::config::{Config, ConfigDuration};

/// The simulated homeservers, each with what it does.
pub struct Federation {
    pub homeservers: Vec<(String, Homeserver)>,
}

/// The behaviours the demo shows, with their descriptions.
fn behaviours() -> Vec<(&'static str, Behaviour)> {
    let healthy = Behaviour::healthy;
    vec![
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
            "rejecting: answers 401 to everything",
            Behaviour {
                reject_all: true,
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
}

impl Federation {
    /// Starts every simulated homeserver, presenting `cert` and trusting it.
    pub async fn start(cert: &LoopbackCert) -> Result<Federation, HomeserverError> {
        let mut homeservers = Vec::new();
        for (what, behaviour) in behaviours() {
            let hs = Homeserver::start_with_cert(behaviour, cert).await?;
            homeservers.push((what.to_owned(), hs));
        }
        Ok(Federation { homeservers })
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
/// loopback allowed and the demo certificate trusted, and short retry
/// intervals: backoff from 5 s doubling to a minute, catch-up after 30 s of
/// backoff, two quick retries inside a transaction; 100 logins per address
/// and per account before `rc_login` holds them back.
pub fn config(
    database: &Path,
    listen: &str,
    federation: SocketAddr,
    cert: &LoopbackCert,
    sender_token: &str,
) -> Config {
    let mut config = Config {
        server_name: federation.to_string(),
        database: database.to_owned(),
        listen: listen.into(),
        federation_listen: Some(federation.to_string()),
        tls_certificate_path: Some(cert.cert_path.clone()),
        tls_private_key_path: Some(cert.key_path.clone()),
        ip_range_whitelist: vec!["127.0.0.0/8".into()],
        federation_custom_ca_list: Some(vec![cert.cert_path.clone()]),
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
