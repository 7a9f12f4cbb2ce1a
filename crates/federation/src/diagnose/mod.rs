//! Diagnosing one destination from this server's own vantage point: each
//! step of reaching it, in the order the federation client takes them, with
//! its duration, verdict and a one-line message ([`herald_shared::DiagnoseReport`]):
//! `.well-known/matrix/server` (fetched afresh, and what the client's cache
//! holds), SRV `_matrix-fed._tcp` and `_matrix._tcp`, the addresses and
//! what the IP range filter says of them, TCP connect and TLS per address
//! (protocol, certificate subject, names, issuer and expiry, and whether it
//! verifies for the server name, with the reason), then
//! `GET /_matrix/federation/v1/version` and `GET /_matrix/key/v2/server`
//! (key IDs, `valid_until_ts`, each key's self-signature).
//!
//! It reuses the client's parts: the resolver's DNS and well-known fetch
//! (whose IP filter guards every hop), [`ServerName`] parsing, the
//! client's certificate verifier ([`crate::connect::federation_verifier`]),
//! and the same IP filter as sending: when any resolved address is refused
//! (as the client refuses the whole name then), the verdict is `blocked`
//! and nothing is connected to. Each step has its own timeout; at most
//! [`DiagnoseSettings::max_addresses`] addresses are tried. The TLS
//! handshake accepts any certificate (still checking its signatures) so the
//! certificate can be shown, and the chain is then judged by the verifier
//! the client uses; version and key are asked only over an address whose
//! certificate verified (or, with `federation_verify_certificates` false,
//! any that completed the handshake), each on a connection of its own.
//! Certificates are read with x509-parser (a well-kept DER parser) rather
//! than by hand.
//!
//! Here: the settings, the diagnoser and the run that builds the report;
//! the steps are in `resolution` (`.well-known`, SRV, addresses),
//! `connection` (TCP, TLS) and `requests` (version, key).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use herald_keys::{verify_json, VerifyKey};
use herald_shared::{
    CachedDelegation, CertificateSummary, Checks, Cipher, ConnectionReport, DiagnoseReport,
    DiagnoseStep, DnsResult, Ed25519Check, FailureKind, SrvRecord, StepName, Verdict,
    VersionResult, WellKnownResult,
};

use crate::client::{FederationClient, SetupError, USER_AGENT_VALUE};
use crate::clock::now_ms;
use crate::connect::{accept_any_tls_config, federation_verifier, TlsConfigError};
use crate::dns::{Dns, SrvAnswer};
use crate::ip_filter::IpFilter;
use crate::resolve::{Host, ServerName, ServerResolver, DEFAULT_PORT};
use crate::settings::FederationSettings;
mod connection;
mod requests;
mod resolution;

use crate::well_known::{
    cache_period_from_headers, parse_body, SystemClock, WellKnownConfig, WellKnownError,
    WellKnownResolver, MAX_CACHE_PERIOD, MIN_CACHE_PERIOD,
};

/// The most of a remote's text (an error, a body) a message or field keeps.
const MAX_REMOTE_TEXT: usize = 200;
/// The most of the `.well-known` body the report keeps.
const MAX_BODY_SHOWN: usize = 1024;
/// The largest version or key answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A diagnosis's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagnoseSettings {
    /// Time allowed for each step (a DNS look-up, a connect, a handshake,
    /// a request and its answer).
    pub step_timeout: Duration,
    /// Addresses connected to, at most (in the order they would be tried).
    pub max_addresses: usize,
}

impl Default for DiagnoseSettings {
    /// 10 s a step, 4 addresses.
    fn default() -> Self {
        DiagnoseSettings {
            step_timeout: Duration::from_secs(10),
            max_addresses: 4,
        }
    }
}

/// Why no diagnosis was made.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("{0:?} is not a valid server name")]
    InvalidServerName(String),
}

/// Runs diagnoses. Cheap to share (`Arc`).
pub struct Diagnoser {
    resolver: Arc<ServerResolver>,
    ip_filter: IpFilter,
    verifier: Option<Arc<dyn ServerCertVerifier>>,
    handshake: tokio_rustls::TlsConnector,
    settings: DiagnoseSettings,
}

impl std::fmt::Debug for Diagnoser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diagnoser")
            .field("ip_filter", &self.ip_filter)
            .field("verifies", &self.verifier.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where to connect, once resolved.
struct Resolved {
    candidates: Vec<SocketAddr>,
    host_header: String,
    tls_name: rustls::pki_types::ServerName<'static>,
}

/// The report as it is built.
struct Run {
    steps: Vec<DiagnoseStep>,
    well_known: WellKnownResult,
    dns: DnsResult,
    reports: BTreeMap<String, ConnectionReport>,
    errors: BTreeMap<String, String>,
    version: VersionResult,
}

impl Run {
    fn push(
        &mut self,
        step: StepName,
        address: Option<SocketAddr>,
        took: Duration,
        verdict: Verdict,
        message: String,
        kind: Option<FailureKind>,
    ) {
        debug!(step = step.as_str(), verdict = verdict.as_str(), message = ?message, "diagnose step");
        self.steps.push(DiagnoseStep {
            step,
            address: address.map(|a| a.to_string()),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            verdict,
            message,
            kind,
        });
    }

    fn skip(&mut self, step: StepName, why: &str) {
        self.push(
            step,
            None,
            Duration::ZERO,
            Verdict::Skipped,
            why.to_owned(),
            None,
        );
    }
}

/// Cuts a remote's text to [`MAX_REMOTE_TEXT`] characters (and `…`) on one
/// line.
fn short(text: &str) -> String {
    herald_shared::one_line(text, MAX_REMOTE_TEXT + 1)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn date(ms: i64) -> String {
    // httpdate panics from the year 9999 on; a remote's `valid_until_ts`
    // may say anything.
    let ms = ms.clamp(0, 253_402_300_799_999);
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    httpdate::fmt_http_date(t)
}

impl Diagnoser {
    pub fn new(
        resolver: Arc<ServerResolver>,
        ip_filter: IpFilter,
        verifier: Option<Arc<dyn ServerCertVerifier>>,
        settings: DiagnoseSettings,
    ) -> Result<Diagnoser, TlsConfigError> {
        Ok(Diagnoser {
            resolver,
            ip_filter,
            verifier,
            handshake: tokio_rustls::TlsConnector::from(accept_any_tls_config()?),
            settings,
        })
    }

    /// A diagnoser seeing what `client` sees: its resolver (and well-known
    /// cache), and the IP filter and certificate checks `settings` give it.
    pub fn for_client(
        client: &FederationClient,
        settings: &FederationSettings,
        diagnose: DiagnoseSettings,
    ) -> Result<Diagnoser, SetupError> {
        let verifier = federation_verifier(
            settings.verify_certificates,
            settings.custom_ca_list.as_deref(),
        )?;
        Ok(Diagnoser::new(
            client.resolver().clone(),
            settings.ip_filter()?,
            verifier,
            diagnose,
        )?)
    }

    /// A diagnoser with a resolver of its own (the system's DNS, an empty
    /// well-known cache), for a command-line tool that has no client.
    pub fn from_settings(
        settings: &FederationSettings,
        diagnose: DiagnoseSettings,
    ) -> Result<Diagnoser, SetupError> {
        let tls = settings.tls_config()?;
        let ip_filter = settings.ip_filter()?;
        let dns = Dns::system().map_err(|e| SetupError::Dns(e.to_string()))?;
        let well_known = WellKnownResolver::new(
            dns.clone(),
            WellKnownConfig::new(tls).with_ip_filter(ip_filter.clone()),
            Arc::new(SystemClock),
        );
        let verifier = federation_verifier(
            settings.verify_certificates,
            settings.custom_ca_list.as_deref(),
        )?;
        Ok(Diagnoser::new(
            Arc::new(ServerResolver::new(dns, well_known)),
            ip_filter,
            verifier,
            diagnose,
        )?)
    }

    pub fn settings(&self) -> DiagnoseSettings {
        self.settings
    }

    /// `f` within the step timeout, and how long it took.
    async fn step<T>(&self, f: impl Future<Output = T>) -> (Option<T>, Duration) {
        let began = Instant::now();
        let out = tokio::time::timeout(self.settings.step_timeout, f)
            .await
            .ok();
        (out, began.elapsed())
    }

    /// Diagnoses `server_name`. Fails only when it is not a valid server
    /// name; every other outcome is in the report.
    pub async fn diagnose(&self, server_name: &str) -> Result<DiagnoseReport, DiagnoseError> {
        let name = ServerName::parse(server_name)
            .map_err(|_| DiagnoseError::InvalidServerName(server_name.to_owned()))?;
        let began = Instant::now();
        let started_ts = now_ms();
        let mut run = Run {
            steps: Vec::new(),
            well_known: WellKnownResult::default(),
            dns: DnsResult::default(),
            reports: BTreeMap::new(),
            errors: BTreeMap::new(),
            version: VersionResult::default(),
        };
        let target = self.well_known(&name, &mut run).await;
        let mut usable = None;
        match self.resolve(&target, &mut run).await {
            Some(resolved) => usable = self.connections(&resolved, &mut run).await,
            None => {
                run.skip(StepName::Connect, "no address to connect to");
                run.skip(StepName::Tls, "no connection");
            }
        }
        let mut key_ok = false;
        let mut version_ok = false;
        match usable {
            Some((addr, resolved)) => {
                version_ok = self.version(addr, &resolved, &mut run).await;
                key_ok = self.key(server_name, addr, &resolved, &mut run).await;
            }
            None => {
                let why = "no address completed TCP and TLS";
                run.skip(StepName::Version, why);
                run.version.error = Some(why.to_owned());
                run.skip(StepName::Key, why);
            }
        }
        let federation_ok = version_ok && key_ok;
        let failed_step = if federation_ok {
            None
        } else {
            run.steps.iter().position(|s| s.verdict.is_failure())
        };
        info!(
            server_name,
            federation_ok,
            failed = ?failed_step.and_then(|i| run.steps.get(i)).map(|s| s.step.as_str()),
            "diagnosis done"
        );
        Ok(DiagnoseReport {
            server_name: server_name.to_owned(),
            federation_ok,
            started_ts,
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
            failed_step,
            steps: run.steps,
            well_known_result: run.well_known,
            dns_result: run.dns,
            connection_reports: run.reports,
            connection_errors: run.errors,
            version: run.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_a_remote_names_is_shown_without_a_panic() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(date(-5), date(0));
    }

    #[test]
    fn remote_text_is_cut_to_one_short_line() {
        assert_eq!(short("a\nb\r\u{0}c"), "a b  c");
        let long = "x".repeat(500);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), MAX_REMOTE_TEXT + 1);
        assert!(cut.ends_with('…'));
    }
}
