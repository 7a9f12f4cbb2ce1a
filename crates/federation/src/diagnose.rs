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

/// Cuts a remote's text to [`MAX_REMOTE_TEXT`] characters on one line.
fn short(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX_REMOTE_TEXT {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_REMOTE_TEXT).collect();
    cut.push('…');
    cut
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
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0));
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

    /// The `.well-known` step; the name to resolve next (the delegated one
    /// when there is a valid delegation).
    async fn well_known(&self, name: &ServerName, run: &mut Run) -> ServerName {
        let host = match (&name.host, name.port) {
            (Host::Name(host), None) => host.clone(),
            (Host::Ip(_), _) => {
                run.skip(
                    StepName::WellKnown,
                    "the server name is an IP literal: no delegation is looked up",
                );
                run.well_known.result = "skipped: IP literal".into();
                return name.clone();
            }
            (Host::Name(_), Some(_)) => {
                run.skip(
                    StepName::WellKnown,
                    "the server name has an explicit port: no delegation is looked up",
                );
                run.well_known.result = "skipped: explicit port".into();
                return name.clone();
            }
        };
        let well_known = self.resolver.well_known();
        run.well_known.cached =
            well_known
                .cached(&host)
                .map(|(m_server, expires)| CachedDelegation {
                    m_server,
                    expires_ts: ms_since_epoch(expires),
                });
        let (answer, took) = self.step(well_known.fetch_raw(&host)).await;
        let none_because = |run: &mut Run, verdict: Verdict, why: String| {
            run.well_known.result = why.clone();
            let message = match verdict {
                Verdict::Warn => format!("{why}; resolution goes on without delegation"),
                _ => format!("no delegation ({why})"),
            };
            run.push(StepName::WellKnown, None, took, verdict, message, None);
        };
        let (status, headers, body) = match answer {
            None => {
                none_because(
                    run,
                    Verdict::Warn,
                    format!("no answer within {}", secs(self.settings.step_timeout)),
                );
                return name.clone();
            }
            Some(Err(e)) => {
                let verdict = match e {
                    WellKnownError::Request(..)
                    | WellKnownError::NoAddresses(_)
                    | WellKnownError::Dns(_) => Verdict::None,
                    _ => Verdict::Warn,
                };
                none_because(run, verdict, short(&e.to_string()));
                return name.clone();
            }
            Some(Ok(answer)) => answer,
        };
        run.well_known.status = Some(status.as_u16());
        run.well_known.body = Some(short_body(&body));
        if status != StatusCode::OK {
            let verdict = if status.is_server_error() {
                Verdict::Warn
            } else {
                Verdict::None
            };
            none_because(run, verdict, format!("HTTP {}", status.as_u16()));
            return name.clone();
        }
        match parse_body(&body) {
            Ok(server) => {
                let now = SystemTime::now();
                let period = cache_period_from_headers(&headers, now)
                    .map(|p| p.clamp(MIN_CACHE_PERIOD, MAX_CACHE_PERIOD));
                run.well_known.cache_expires_at = period.map(|p| ms_since_epoch(now + p) / 1000);
                run.well_known.m_server = Some(server.clone());
                // parse_body checked it.
                match ServerName::parse(&server) {
                    Ok(delegated) => {
                        run.push(
                            StepName::WellKnown,
                            None,
                            took,
                            Verdict::Ok,
                            format!("delegates to {}", short(&server)),
                            None,
                        );
                        delegated
                    }
                    Err(_) => {
                        none_because(run, Verdict::Warn, "invalid m.server".into());
                        name.clone()
                    }
                }
            }
            Err(e) => {
                none_because(
                    run,
                    Verdict::Warn,
                    format!("invalid answer: {}", short(&e.to_string())),
                );
                name.clone()
            }
        }
    }

    /// SRV and address steps for `target`; `None` when there is nothing to
    /// connect to (no answer, or blocked).
    async fn resolve(&self, target: &ServerName, run: &mut Run) -> Option<Resolved> {
        let tls_name = match &target.host {
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            Host::Name(name) => match rustls::pki_types::ServerName::try_from(name.clone()) {
                Ok(n) => n,
                Err(_) => {
                    run.push(
                        StepName::Addresses,
                        None,
                        Duration::ZERO,
                        Verdict::Fail,
                        format!("{name:?} is not a valid TLS name"),
                        Some(FailureKind::Dns),
                    );
                    return None;
                }
            },
        };
        run.dns.host_header = Some(target.to_string());
        run.dns.tls_name = Some(target.host.to_string());
        let resolved = |candidates| Resolved {
            candidates,
            host_header: target.to_string(),
            tls_name: tls_name.clone(),
        };
        let host = match &target.host {
            Host::Ip(ip) => {
                run.dns.srv_skipped = true;
                run.skip(StepName::SrvMatrixFed, "IP literal: no SRV look-up");
                run.skip(StepName::SrvMatrix, "IP literal: no SRV look-up");
                let addr = SocketAddr::new(*ip, target.port.unwrap_or(DEFAULT_PORT));
                let candidates = self.filter(
                    run,
                    Duration::ZERO,
                    format!("IP literal {}", target.host),
                    vec![addr],
                )?;
                return Some(resolved(candidates));
            }
            Host::Name(host) => host.clone(),
        };
        // (host, port) pairs to look up.
        let mut lookups: Vec<(String, u16)> = Vec::new();
        if let Some(port) = target.port {
            run.dns.srv_skipped = true;
            run.skip(StepName::SrvMatrixFed, "explicit port: no SRV look-up");
            run.skip(StepName::SrvMatrix, "explicit port: no SRV look-up");
            lookups.push((host.clone(), port));
        } else {
            for (service, step) in [
                ("_matrix-fed._tcp", StepName::SrvMatrixFed),
                ("_matrix._tcp", StepName::SrvMatrix),
            ] {
                if !lookups.is_empty() {
                    run.skip(step, "not needed: an earlier SRV record answered");
                    continue;
                }
                let srv_name = format!("{service}.{host}");
                let (answer, took) = self.step(self.resolver.dns().lookup_srv(&srv_name)).await;
                match answer {
                    None => {
                        let why = format!(
                            "no DNS answer for {srv_name} within {}",
                            secs(self.settings.step_timeout)
                        );
                        run.dns.srv_error = Some(why.clone());
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::Timeout,
                            why,
                            Some(FailureKind::Dns),
                        );
                        return None;
                    }
                    Some(Err(e)) => {
                        let why = short(&e.to_string());
                        run.dns.srv_error = Some(why.clone());
                        run.push(step, None, took, Verdict::Fail, why, Some(FailureKind::Dns));
                        return None;
                    }
                    Some(Ok(SrvAnswer::None)) => {
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::None,
                            format!("no {srv_name} record"),
                            None,
                        );
                    }
                    Some(Ok(SrvAnswer::Unavailable)) => {
                        let why =
                            format!("{srv_name} has target \".\": the service is unavailable");
                        run.dns.srv_error = Some(why.clone());
                        run.push(step, None, took, Verdict::Fail, why, Some(FailureKind::Dns));
                        return None;
                    }
                    Some(Ok(SrvAnswer::Targets(targets))) => {
                        let listed: Vec<String> = targets
                            .iter()
                            .map(|t| format!("{}:{}", t.target, t.port))
                            .collect();
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::Ok,
                            short(&format!("{srv_name} → {}", listed.join(", "))),
                            None,
                        );
                        for t in targets {
                            run.dns.srv_records.push(SrvRecord {
                                service: srv_name.clone(),
                                target: t.target.clone(),
                                port: t.port,
                                priority: t.priority,
                                weight: t.weight,
                            });
                            lookups.push((t.target, t.port));
                        }
                    }
                }
            }
            if lookups.is_empty() {
                lookups.push((host.clone(), DEFAULT_PORT));
            }
        }
        // A/AAAA of each name, within one step's time.
        let dns = self.resolver.dns();
        let looked_up = async {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for (name, port) in &lookups {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    found.push(SocketAddr::new(ip, *port));
                    continue;
                }
                match dns.lookup_ip(name).await {
                    Ok(ips) if ips.is_empty() => {
                        errors.push(format!("{name} has no A/AAAA record"))
                    }
                    Ok(ips) => found.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port))),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (found, errors)
        };
        let names: Vec<&str> = lookups.iter().map(|(n, _)| n.as_str()).collect();
        let names = names.join(", ");
        let (answer, took) = self.step(looked_up).await;
        let (found, errors) = match answer {
            None => {
                run.push(
                    StepName::Addresses,
                    None,
                    took,
                    Verdict::Timeout,
                    format!(
                        "no DNS answer for {names} within {}",
                        secs(self.settings.step_timeout)
                    ),
                    Some(FailureKind::Dns),
                );
                return None;
            }
            Some(answer) => answer,
        };
        if found.is_empty() {
            let why = if errors.is_empty() {
                format!("{names} resolves to no address")
            } else {
                short(&errors.join("; "))
            };
            run.push(
                StepName::Addresses,
                None,
                took,
                Verdict::Fail,
                why,
                Some(FailureKind::Dns),
            );
            return None;
        }
        let candidates = self.filter(run, took, names, found)?;
        Some(resolved(candidates))
    }

    /// The addresses step's verdict: every address through the IP filter.
    /// As the client, one blocked address blocks the name.
    fn filter(
        &self,
        run: &mut Run,
        took: Duration,
        what: String,
        found: Vec<SocketAddr>,
    ) -> Option<Vec<SocketAddr>> {
        run.dns.addrs = found.iter().map(SocketAddr::to_string).collect();
        let blocked: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| !self.ip_filter.is_allowed(a.ip()))
            .collect();
        let listed = run.dns.addrs.join(", ");
        if !blocked.is_empty() {
            run.dns.blocked = blocked.iter().map(SocketAddr::to_string).collect();
            for a in &blocked {
                run.errors.insert(
                    a.to_string(),
                    "blocked by the IP range filter (ip_range_blacklist / ip_range_whitelist)"
                        .into(),
                );
            }
            run.push(
                StepName::Addresses,
                None,
                took,
                Verdict::Blocked,
                short(&format!(
                    "{what} → {listed}: {} blocked by the IP range filter; nothing was connected to",
                    run.dns.blocked.join(", ")
                )),
                Some(FailureKind::Blocked),
            );
            return None;
        }
        run.push(
            StepName::Addresses,
            None,
            took,
            Verdict::Ok,
            short(&format!("{what} → {listed}")),
            None,
        );
        Some(found)
    }

    /// Connect and TLS steps for each address (at most `max_addresses`);
    /// the first address fit for requests.
    async fn connections(
        &self,
        resolved: &Resolved,
        run: &mut Run,
    ) -> Option<(SocketAddr, Resolved)> {
        let mut usable = None;
        let tls_name_text = crate::connect::tls_name_text(&resolved.tls_name);
        for &addr in resolved.candidates.iter().take(self.settings.max_addresses) {
            let key = addr.to_string();
            let (tcp, took) = self.step(TcpStream::connect(addr)).await;
            let tcp = match tcp {
                None => {
                    let why = format!(
                        "no TCP connection to {addr} within {}",
                        secs(self.settings.step_timeout)
                    );
                    run.errors.insert(key, why.clone());
                    run.push(
                        StepName::Connect,
                        Some(addr),
                        took,
                        Verdict::Timeout,
                        why,
                        Some(FailureKind::Connect),
                    );
                    continue;
                }
                Some(Err(e)) => {
                    let why = format!("connecting to {addr}: {e}");
                    run.errors.insert(key, why.clone());
                    run.push(
                        StepName::Connect,
                        Some(addr),
                        took,
                        Verdict::Fail,
                        why,
                        Some(FailureKind::Connect),
                    );
                    continue;
                }
                Some(Ok(tcp)) => tcp,
            };
            let mut report = ConnectionReport {
                connect_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                ..ConnectionReport::default()
            };
            run.push(
                StepName::Connect,
                Some(addr),
                took,
                Verdict::Ok,
                format!("connected to {addr}"),
                None,
            );
            let (tls, took) = self
                .step(self.handshake.connect(resolved.tls_name.clone(), tcp))
                .await;
            let tls = match tls {
                None => {
                    let why = format!(
                        "no TLS handshake with {addr} within {}",
                        secs(self.settings.step_timeout)
                    );
                    run.errors.insert(key.clone(), why.clone());
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Timeout,
                        why,
                        Some(FailureKind::Tls),
                    );
                    continue;
                }
                Some(Err(e)) => {
                    let why = format!(
                        "TLS handshake with {addr} failed: {}",
                        short(&e.to_string())
                    );
                    run.errors.insert(key.clone(), why.clone());
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Fail,
                        why,
                        Some(FailureKind::Tls),
                    );
                    continue;
                }
                Some(Ok(tls)) => tls,
            };
            let (_, session) = tls.get_ref();
            report.cipher = Some(Cipher {
                version: session
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher_suite: session
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default(),
            });
            let chain: Vec<CertificateDer<'static>> = session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            report.certificates = chain.iter().filter_map(|c| summarise(c)).collect();
            let verdict = match (&self.verifier, chain.split_first()) {
                (None, _) => None,
                (Some(_), None) => Some(Err("the server sent no certificate".to_owned())),
                (Some(verifier), Some((leaf, intermediates))) => Some(
                    verifier
                        .verify_server_cert(
                            leaf,
                            intermediates,
                            &resolved.tls_name,
                            &[],
                            UnixTime::now(),
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                ),
            };
            report.checks.valid_certificates = verdict.as_ref().map(Result::is_ok);
            report.checks.certificate_error = verdict
                .as_ref()
                .and_then(|v| v.as_ref().err().map(|e| short(e)));
            let protocol = report
                .cipher
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_default();
            let about = report
                .certificates
                .first()
                .map(|c| {
                    format!(
                        "certificate {} for [{}], issued by {}, expires {}",
                        short(&c.subject),
                        short(&c.names.join(", ")),
                        short(&c.issuer),
                        date(c.not_after_ts)
                    )
                })
                .unwrap_or_else(|| "no certificate".to_owned());
            match verdict {
                Some(Err(e)) => {
                    let why = format!(
                        "{protocol}; {about}; does not verify for {tls_name_text}: {}",
                        short(&e)
                    );
                    run.errors.insert(key.clone(), why.clone());
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Fail,
                        why,
                        Some(FailureKind::Tls),
                    );
                }
                verified => {
                    let how = if verified.is_some() {
                        format!("verifies for {tls_name_text}")
                    } else {
                        "not verified (federation_verify_certificates is false)".to_owned()
                    };
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Ok,
                        format!("{protocol}; {about}; {how}"),
                        None,
                    );
                    if usable.is_none() {
                        usable = Some((
                            addr,
                            Resolved {
                                candidates: vec![addr],
                                host_header: resolved.host_header.clone(),
                                tls_name: resolved.tls_name.clone(),
                            },
                        ));
                    }
                }
            }
        }
        for addr in resolved.candidates.iter().skip(self.settings.max_addresses) {
            run.errors.insert(
                addr.to_string(),
                format!(
                    "not tried: a diagnosis tries at most {} addresses",
                    self.settings.max_addresses
                ),
            );
        }
        usable
    }

    /// `GET path` on a new connection to `addr`: the status and the body
    /// (at most [`MAX_ANSWER`]), within one step's time.
    async fn get(
        &self,
        addr: SocketAddr,
        resolved: &Resolved,
        path: &str,
    ) -> (Option<Result<(StatusCode, Bytes), String>>, Duration) {
        let exchange = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let tls = self
                .handshake
                .connect(resolved.tls_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = Request::get(path)
                .header(HOST, resolved.host_header.as_str())
                .header(USER_AGENT, USER_AGENT_VALUE)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("no answer from {addr}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        self.step(exchange).await
    }

    /// The version step; whether it passed.
    async fn version(&self, addr: SocketAddr, resolved: &Resolved, run: &mut Run) -> bool {
        let (answer, took) = self
            .get(addr, resolved, "/_matrix/federation/v1/version")
            .await;
        let json = match self.judge_answer(answer, StepName::Version, addr, took, run) {
            Some(json) => json,
            None => {
                run.version.error = run.steps.last().map(|s| s.message.clone());
                return false;
            }
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(short);
        run.version.name = text(json.pointer("/server/name"));
        run.version.version = text(json.pointer("/server/version"));
        match (&run.version.name, &run.version.version) {
            (Some(name), version) => {
                let message = format!("{name} {}", version.as_deref().unwrap_or(""));
                run.push(
                    StepName::Version,
                    Some(addr),
                    took,
                    Verdict::Ok,
                    message.trim_end().to_owned(),
                    None,
                );
                true
            }
            (None, _) => {
                let why = "the answer has no server.name".to_owned();
                run.version.error = Some(why.clone());
                run.push(
                    StepName::Version,
                    Some(addr),
                    took,
                    Verdict::Fail,
                    why,
                    Some(FailureKind::InvalidResponse),
                );
                false
            }
        }
    }

    /// A version or key answer: its JSON when it is a 200 JSON object, or
    /// the step pushed as failed.
    fn judge_answer(
        &self,
        answer: Option<Result<(StatusCode, Bytes), String>>,
        step: StepName,
        addr: SocketAddr,
        took: Duration,
        run: &mut Run,
    ) -> Option<Value> {
        let fail = |run: &mut Run, verdict, why: String, kind| {
            run.push(step, Some(addr), took, verdict, why, Some(kind));
        };
        let (status, body) = match answer {
            None => {
                fail(
                    run,
                    Verdict::Timeout,
                    format!("no answer within {}", secs(self.settings.step_timeout)),
                    FailureKind::Timeout,
                );
                return None;
            }
            Some(Err(e)) => {
                fail(run, Verdict::Fail, short(&e), FailureKind::Connect);
                return None;
            }
            Some(Ok(answer)) => answer,
        };
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status != StatusCode::OK {
            let errcode = json
                .as_ref()
                .and_then(|j| j.get("errcode"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let error = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let why = format!("HTTP {} {errcode} {error}", status.as_u16());
            fail(run, Verdict::Fail, short(why.trim_end()), FailureKind::Http);
            return None;
        }
        match json {
            Some(json @ Value::Object(_)) => Some(json),
            _ => {
                fail(
                    run,
                    Verdict::Fail,
                    "the answer is not a JSON object".into(),
                    FailureKind::InvalidResponse,
                );
                None
            }
        }
    }

    /// The key step; whether it passed.
    async fn key(
        &self,
        server_name: &str,
        addr: SocketAddr,
        resolved: &Resolved,
        run: &mut Run,
    ) -> bool {
        let (answer, took) = self.get(addr, resolved, "/_matrix/key/v2/server").await;
        let Some(json) = self.judge_answer(answer, StepName::Key, addr, took, run) else {
            return false;
        };
        let mut checks = Checks::default();
        let mut keys = BTreeMap::new();
        let mut problems = Vec::new();
        let answered_name = json.get("server_name").and_then(Value::as_str);
        checks.matching_server_name = Some(answered_name == Some(server_name));
        if answered_name != Some(server_name) {
            problems.push(format!(
                "server_name is {:?}, not {server_name:?}",
                short(answered_name.unwrap_or(""))
            ));
        }
        let valid_until_ts = json.get("valid_until_ts").and_then(Value::as_i64);
        let future = valid_until_ts.is_some_and(|ts| ts > now_ms());
        checks.future_valid_until_ts = Some(future);
        if !future {
            problems.push(match valid_until_ts {
                Some(ts) => format!("valid_until_ts {} is in the past", date(ts)),
                None => "no valid_until_ts".to_owned(),
            });
        }
        let verify_keys = json
            .get("verify_keys")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key_id, key) in verify_keys
            .iter()
            .filter(|(id, _)| id.starts_with("ed25519:"))
        {
            let text = key.get("key").and_then(Value::as_str).unwrap_or("");
            keys.insert(key_id.clone(), short(text));
            let (valid, matching) = match VerifyKey::from_base64(text) {
                Ok(verify_key) => (
                    true,
                    verify_json(server_name, key_id, &verify_key, &json).is_ok(),
                ),
                Err(_) => (false, false),
            };
            if !valid {
                problems.push(format!("{} is not an ed25519 key", short(key_id)));
            } else if !matching {
                problems.push(format!(
                    "the answer's signature by {} does not verify with the key it publishes",
                    short(key_id)
                ));
            }
            checks.ed25519_checks.insert(
                key_id.clone(),
                Ed25519Check {
                    valid_ed25519: valid,
                    matching_signature: matching,
                },
            );
        }
        checks.has_ed25519_key = Some(!checks.ed25519_checks.is_empty());
        if checks.ed25519_checks.is_empty() {
            problems.push("no ed25519 key in verify_keys".to_owned());
        }
        checks.all_ed25519_checks_ok = Some(
            !checks.ed25519_checks.is_empty()
                && checks
                    .ed25519_checks
                    .values()
                    .all(|c| c.valid_ed25519 && c.matching_signature),
        );
        let ok = problems.is_empty();
        let key_ids: Vec<&str> = keys.keys().map(String::as_str).collect();
        let message = if ok {
            format!(
                "{} valid until {}, self-signature verified",
                short(&key_ids.join(", ")),
                date(valid_until_ts.unwrap_or(0))
            )
        } else {
            short(&problems.join("; "))
        };
        let report = run.reports.entry(addr.to_string()).or_default();
        checks.valid_certificates = report.checks.valid_certificates;
        checks.certificate_error = report.checks.certificate_error.take();
        checks.all_checks_ok = ok && checks.valid_certificates != Some(false);
        report.checks = checks;
        report.ed25519_verify_keys = keys;
        report.valid_until_ts = valid_until_ts;
        if ok {
            run.push(StepName::Key, Some(addr), took, Verdict::Ok, message, None);
        } else {
            run.push(
                StepName::Key,
                Some(addr),
                took,
                Verdict::Fail,
                message,
                Some(FailureKind::InvalidResponse),
            );
        }
        ok
    }
}

/// The `.well-known` body as the report shows it: the first 1 KiB as text.
fn short_body(body: &[u8]) -> String {
    let end = body.len().min(MAX_BODY_SHOWN);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Subject, issuer, names and validity of a DER certificate.
fn summarise(der: &CertificateDer<'_>) -> Option<CertificateSummary> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let common_name = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| name.to_string())
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Some(CertificateSummary {
        subject: common_name(cert.subject()),
        issuer: common_name(cert.issuer()),
        names,
        not_before_ts: validity.not_before.timestamp().saturating_mul(1000),
        not_after_ts: validity.not_after.timestamp().saturating_mul(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_is_cut_to_one_short_line() {
        assert_eq!(short("a\nb\r\u{0}c"), "a b  c");
        let long = "x".repeat(500);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), MAX_REMOTE_TEXT + 1);
        assert!(cut.ends_with('…'));
    }
}
