//! `/.well-known/matrix/server` delegation: the HTTPS fetch (reqwest, one
//! request per hop; redirects followed here with a bound and loop check so
//! that every hop's addresses pass the IP filter first; body at most 50 KiB)
//! and Synapse's cache (`WellKnownResolver` in Synapse's
//! `well_known_resolver.py`): Cache-Control/Expires periods clamped to
//! 5 min..48 h, 24 h ±10% by default, failures cached 1 h (2 min when the
//! domain recently had a valid answer), refresh in the last 20% of a period,
//! and the previous answer kept on a transient failure.
//!
//! Every address a hop would connect to (the well-known host's, and each
//! redirect target's, whether a name or an IP literal) goes through the
//! configured [`IpFilter`] first, as Synapse's well-known agent sits behind
//! its IP-blocklisting resolver and agent: when a name resolves to any
//! blocked address, or an IP literal is blocked, the hop is refused without
//! connecting ([`WellKnownError::Blocked`]), so DNS or a redirect cannot
//! point the fetch at internal services.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CACHE_CONTROL, EXPIRES, HOST, LOCATION};
use reqwest::{StatusCode, Url};
use tracing::{debug, info, warn};

use super::dns::{Dns, DnsError};
use super::ip_filter::IpFilter;
use super::resolve::ServerName;

/// Default period when the response says nothing about caching.
pub const DEFAULT_CACHE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// ± this fraction of jitter on default and failure periods.
pub const CACHE_PERIOD_JITTER: f64 = 0.1;
/// How long a failed or invalid look-up is remembered.
pub const INVALID_CACHE_PERIOD: Duration = Duration::from_secs(3600);
/// How long a failure is remembered when the domain had a valid answer lately.
pub const DOWN_CACHE_PERIOD: Duration = Duration::from_secs(2 * 60);
/// A valid answer is "recent" for its cache period plus this.
pub const REMEMBER_HAD_VALID: Duration = Duration::from_secs(2 * 3600);
pub const MAX_CACHE_PERIOD: Duration = Duration::from_secs(48 * 3600);
pub const MIN_CACHE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// Largest body read.
pub const MAX_BODY: usize = 50 * 1024;
/// Refresh once less than this fraction of the period is left.
pub const GRACE_PERIOD_FACTOR: f64 = 0.2;
/// Attempts when the domain had a valid answer lately (else one).
pub const RETRY_ATTEMPTS: u32 = 3;
/// Pause between those attempts.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Redirects followed before giving up (Twisted's `RedirectAgent` limit).
pub const MAX_REDIRECTS: usize = 20;

/// Wall-clock time, injectable so tests can move it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(now: SystemTime) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

/// Why a fetch of `/.well-known/matrix/server` gave no delegation. None of
/// these is fatal to resolution: the spec then goes on to SRV records.
#[derive(Debug, thiserror::Error)]
pub enum WellKnownError {
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{0} has no addresses")]
    NoAddresses(String),
    /// The host (a name resolving to at least one blocked address, or a
    /// blocked IP literal) is refused by the IP range filter; nothing was
    /// connected to.
    #[error("{host}: address {ip} is blocked by the IP range filter")]
    Blocked { host: String, ip: IpAddr },
    /// No answer: connecting, the TLS handshake or the HTTP exchange failed.
    #[error("request to {0} failed: {1}")]
    Request(String, reqwest::Error),
    #[error("timed out")]
    Timeout,
    #[error("non-200 response {0}")]
    Status(u16),
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("body could not be read: {0}")]
    Body(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("redirect loop at {0}")]
    RedirectLoop(String),
    #[error("bad redirect to {0:?}")]
    BadRedirect(String),
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("no string m.server in the response")]
    MissingServer,
    #[error("m.server {0:?} is not a valid server name")]
    InvalidServerName(String),
}

impl WellKnownError {
    /// Synapse's `_FetchWellKnownFailure.temporary`: transport trouble
    /// (a blocked address included, as Synapse's blocklisting surfaces as a
    /// connection failure), 5xx and oversized bodies are temporary (a
    /// previous answer is kept); a non-200 answer or an invalid body is not.
    pub fn is_temporary(&self) -> bool {
        match self {
            WellKnownError::Status(code) => (500..600).contains(code),
            WellKnownError::InvalidJson(_)
            | WellKnownError::MissingServer
            | WellKnownError::InvalidServerName(_) => false,
            _ => true,
        }
    }
}

/// How the well-known fetch connects.
#[derive(Clone)]
pub struct WellKnownConfig {
    /// HTTPS port of the well-known server: 443 in production; tests use
    /// their own. A port in a redirect's URL wins.
    pub port: u16,
    /// TLS client configuration (roots, verification); the federation
    /// client uses the same.
    pub tls: Arc<rustls::ClientConfig>,
    pub user_agent: String,
    /// Per request (each redirect hop included).
    pub timeout: Duration,
    /// Addresses the fetch may connect to (`ip_range_blacklist` /
    /// `ip_range_whitelist`, the same filter as the federation client's).
    pub ip_filter: IpFilter,
}

impl WellKnownConfig {
    /// Port 443, a 30 s timeout and Synapse's default IP blacklist (no
    /// whitelist); see [`WellKnownConfig::with_ip_filter`].
    // The default ranges are constants covered by ip_filter's tests.
    #[allow(clippy::expect_used)]
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            port: 443,
            tls,
            user_agent: concat!("Herald/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(30),
            ip_filter: IpFilter::new::<&str>(None, &[])
                .expect("the default IP range blacklist parses"),
        }
    }

    /// The same with `ip_filter` (e.g. `FederationSettings::ip_filter`).
    pub fn with_ip_filter(mut self, ip_filter: IpFilter) -> Self {
        self.ip_filter = ip_filter;
        self
    }
}

impl std::fmt::Debug for WellKnownConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WellKnownConfig")
            .field("port", &self.port)
            .field("user_agent", &self.user_agent)
            .field("timeout", &self.timeout)
            .field("ip_filter", &self.ip_filter)
            .finish_non_exhaustive()
    }
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) trusting `roots`.
pub fn tls_client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Roots from the operating system's certificate store.
pub fn system_roots() -> rustls::RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        warn!(error = %e, "could not load a system certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    debug!(added, ignored, "system TLS roots loaded");
    roots
}

#[derive(Debug, Clone)]
struct CacheEntry {
    result: Option<String>,
    expires: SystemTime,
    ttl: Duration,
}

/// A successful fetch: the delegated server name and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub server: String,
    pub cache_period: Duration,
}

/// Fetches and caches `.well-known/matrix/server`, keyed by server name.
pub struct WellKnownResolver {
    dns: Dns,
    config: WellKnownConfig,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// Server name → (had a valid answer, until when we remember that).
    had_valid: Mutex<HashMap<String, (bool, SystemTime)>>,
}

impl std::fmt::Debug for WellKnownResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WellKnownResolver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn jittered(period: Duration) -> Duration {
    period.mul_f64(
        rand::thread_rng().gen_range(1.0 - CACHE_PERIOD_JITTER..=1.0 + CACHE_PERIOD_JITTER),
    )
}

impl WellKnownResolver {
    pub fn new(dns: Dns, config: WellKnownConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            dns,
            config,
            clock,
            cache: Mutex::new(HashMap::new()),
            had_valid: Mutex::new(HashMap::new()),
        }
    }

    /// The delegated server name for `host` (a hostname without port), or
    /// `None` when there is no valid delegation. Served from the cache when
    /// fresh.
    pub async fn get(&self, host: &str) -> Option<String> {
        let now = self.clock.now();
        let prev = {
            let mut cache = self.cache.lock();
            match cache.get(host) {
                Some(e) if e.expires > now => {
                    let refresh_at = e
                        .expires
                        .checked_sub(e.ttl.mul_f64(GRACE_PERIOD_FACTOR))
                        .unwrap_or(e.expires);
                    if now < refresh_at {
                        return e.result.clone();
                    }
                    e.result.clone()
                }
                Some(_) => {
                    cache.remove(host);
                    None
                }
                None => None,
            }
        };

        let (result, period) = match self.fetch(host).await {
            Ok(fetched) => (Some(fetched.server), fetched.cache_period),
            Err(e) => {
                if let (Some(prev), true) = (&prev, e.is_temporary()) {
                    info!(host, error = ?e.to_string(), "well-known fetch failed; keeping the previous answer");
                    return Some(prev.clone());
                }
                info!(host, error = ?e.to_string(), "no valid well-known");
                let base = if self.had_valid(host) {
                    DOWN_CACHE_PERIOD
                } else {
                    INVALID_CACHE_PERIOD
                };
                (None, jittered(base))
            }
        };
        if !period.is_zero() {
            let now = self.clock.now();
            self.cache.lock().insert(
                host.to_owned(),
                CacheEntry {
                    result: result.clone(),
                    expires: now + period,
                    ttl: period,
                },
            );
        }
        result
    }

    /// What the cache holds for `host`: the delegation (`None`: "no valid
    /// delegation" is cached) and when it expires; `None` when nothing is.
    pub fn cached(&self, host: &str) -> Option<(Option<String>, SystemTime)> {
        self.cache
            .lock()
            .get(host)
            .map(|e| (e.result.clone(), e.expires))
    }

    /// Drops the cached answer for `host` (and the memory of a recent valid
    /// one), so the next [`get`](Self::get) fetches again.
    pub fn forget(&self, host: &str) {
        self.cache.lock().remove(host);
        self.had_valid.lock().remove(host);
    }

    /// Drops every cached answer.
    pub fn forget_all(&self) {
        self.cache.lock().clear();
        self.had_valid.lock().clear();
    }

    /// One fetch as [`fetch`](Self::fetch) makes it (redirects followed,
    /// every hop's addresses through the IP filter), without retries,
    /// parsing or the cache: the last hop's status, headers and body (at
    /// most 50 KiB), for a diagnosis.
    pub async fn fetch_raw(
        &self,
        host: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), WellKnownError> {
        self.get_following_redirects(host).await
    }

    fn had_valid(&self, host: &str) -> bool {
        let now = self.clock.now();
        matches!(self.had_valid.lock().get(host), Some((true, until)) if *until > now)
    }

    /// Fetch without the cache (retrying 3 times, 0.5 s apart, when the
    /// domain had a valid answer lately), parse `m.server`, and work out the
    /// cache period.
    pub async fn fetch(&self, host: &str) -> Result<Fetched, WellKnownError> {
        let attempts = if self.had_valid(host) {
            RETRY_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 0;
        let (status, headers, body) = loop {
            attempt += 1;
            let outcome = self.get_following_redirects(host).await;
            match outcome {
                Ok((status, _, _)) if status.is_server_error() && attempt < attempts => {
                    info!(host, %status, "well-known fetch failed; retrying");
                }
                Ok(ok) => break ok,
                Err(WellKnownError::TooLarge) => return Err(WellKnownError::TooLarge),
                // A policy refusal: trying again would refuse again.
                Err(e @ WellKnownError::Blocked { .. }) => return Err(e),
                Err(e) if attempt < attempts => {
                    info!(host, error = ?e.to_string(), "well-known fetch failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        if status != StatusCode::OK {
            return Err(WellKnownError::Status(status.as_u16()));
        }
        let server = parse_body(&body)?;
        info!(host, server, "well-known delegation");
        let cache_period = match cache_period_from_headers(&headers, self.clock.now()) {
            None => jittered(DEFAULT_CACHE_PERIOD),
            Some(p) => p.clamp(MIN_CACHE_PERIOD, MAX_CACHE_PERIOD),
        };
        self.had_valid.lock().insert(
            host.to_owned(),
            (true, self.clock.now() + cache_period + REMEMBER_HAD_VALID),
        );
        Ok(Fetched {
            server,
            cache_period,
        })
    }

    async fn get_following_redirects(
        &self,
        host: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), WellKnownError> {
        let mut url = Url::parse(&format!("https://{host}/.well-known/matrix/server"))
            .map_err(|_| WellKnownError::BadRedirect(host.to_owned()))?;
        let mut seen = HashSet::new();
        for _ in 0..=MAX_REDIRECTS {
            if !seen.insert(url.clone()) {
                return Err(WellKnownError::RedirectLoop(url.to_string()));
            }
            let (status, headers, body) =
                tokio::time::timeout(self.config.timeout, self.get_once(&url))
                    .await
                    .map_err(|_| WellKnownError::Timeout)??;
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok((status, headers, body));
            }
            let location = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| WellKnownError::BadRedirect(String::new()))?;
            debug!(from = %url, to = location, "well-known redirect");
            url = join(&url, location)
                .ok_or_else(|| WellKnownError::BadRedirect(location.to_owned()))?;
        }
        Err(WellKnownError::TooManyRedirects)
    }

    /// The addresses `host` (a name or an IP literal) may be connected to:
    /// all of them, or an error when any is blocked by the IP filter (as
    /// Synapse's `_IPBlockingResolver`, which then answers no address at
    /// all, and its `BlocklistingAgentWrapper` for IP literals).
    async fn allowed_addresses(&self, host: &str) -> Result<Vec<IpAddr>, WellKnownError> {
        let literal = host.parse::<IpAddr>().ok();
        let ips: Vec<IpAddr> = match literal {
            Some(ip) => vec![ip],
            None => self.dns.lookup_ip(host).await?,
        };
        if ips.is_empty() {
            return Err(WellKnownError::NoAddresses(host.to_owned()));
        }
        if let Some(&ip) = ips
            .iter()
            .find(|ip| !self.config.ip_filter.is_allowed(**ip))
        {
            info!(
                host,
                %ip,
                ip_literal = literal.is_some(),
                "well-known fetch refused: address blocked by ip_range_blacklist"
            );
            return Err(WellKnownError::Blocked {
                host: host.to_owned(),
                ip,
            });
        }
        Ok(ips)
    }

    /// One GET, to the addresses the IP filter allowed and no others: the
    /// hop's client resolves the host to exactly those (reqwest connects to
    /// an IP literal as it is, after the filter passed it). A URL without a
    /// port goes to the configured port, with a `Host` of the bare name.
    async fn get_once(
        &self,
        url: &Url,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), WellKnownError> {
        let host = url
            .host_str()
            .ok_or_else(|| WellKnownError::BadRedirect(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let port = url.port().unwrap_or(self.config.port);
        let ips = self.allowed_addresses(&host).await?;
        debug!(url = %url, addresses = ?ips, "well-known request");
        let addrs: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let failed = |e: reqwest::Error| WellKnownError::Request(authority.clone(), e);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*self.config.tls).clone())
            .resolve_to_addrs(&host, &addrs)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .user_agent(self.config.user_agent.as_str())
            .build()
            .map_err(failed)?;
        let mut target = url.clone();
        target
            .set_port(Some(port))
            .map_err(|()| WellKnownError::BadRedirect(url.to_string()))?;
        let host_header = HeaderValue::from_str(&authority)
            .map_err(|_| WellKnownError::BadRedirect(url.to_string()))?;
        let mut response = client
            .get(target)
            .header(HOST, host_header)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                warn!(host, limit = MAX_BODY, "well-known body too large");
                return Err(WellKnownError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }
}

/// Resolves a `Location` against the URL that answered with it (RFC 3986,
/// by the url crate); only https targets are followed.
fn join(base: &Url, location: &str) -> Option<Url> {
    if location.is_empty() || location.contains(char::is_whitespace) {
        return None;
    }
    let next = base.join(location).ok()?;
    (next.scheme() == "https" && next.host_str().is_some()).then_some(next)
}

/// `{"m.server": "<server name>"}` → the server name, checked.
pub fn parse_body(body: &[u8]) -> Result<String, WellKnownError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let server = value
        .get("m.server")
        .and_then(|v| v.as_str())
        .ok_or(WellKnownError::MissingServer)?;
    if ServerName::parse(server).is_err() {
        return Err(WellKnownError::InvalidServerName(server.to_owned()));
    }
    Ok(server.to_owned())
}

/// Synapse's `_cache_period_from_headers`: `no-store` → 0, `max-age=N` → N,
/// else `Expires` relative to now (an unparsable date → 0), else nothing.
pub fn cache_period_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut directives: HashMap<String, Option<String>> = HashMap::new();
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let mut kv = directive.splitn(2, '=');
            let key = kv.next().unwrap_or("").trim().to_ascii_lowercase();
            let val = kv.next().map(|v| v.trim().to_owned());
            directives.insert(key, val);
        }
    }
    if directives.contains_key("no-store") {
        return Some(Duration::ZERO);
    }
    if let Some(Some(max_age)) = directives.get("max-age") {
        if let Ok(secs) = max_age.parse::<i64>() {
            return Some(Duration::from_secs(secs.max(0).unsigned_abs()));
        }
    }
    let expires = headers.get_all(EXPIRES).iter().next_back()?;
    let parsed = expires
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok());
    Some(match parsed {
        Some(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cache_period_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = |h: HeaderMap| cache_period_from_headers(&h, now);
        assert_eq!(p(headers(&[])), None);
        assert_eq!(
            p(headers(&[(&CACHE_CONTROL, "public, max-age=600")])),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            p(headers(&[(&CACHE_CONTROL, "no-store, max-age=600")])),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        assert_eq!(
            p(headers(&[(&EXPIRES, &later)])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(p(headers(&[(&EXPIRES, "garbage")])), Some(Duration::ZERO));
    }

    #[test]
    fn redirect_join() {
        let base = Url::parse("https://a.test/.well-known/matrix/server").unwrap();
        assert_eq!(
            join(&base, "other").unwrap().path(),
            "/.well-known/matrix/other"
        );
        let rooted = join(&base, "/x?y=1").unwrap();
        assert_eq!(
            format!("{}?{}", rooted.path(), rooted.query().unwrap_or("")),
            "/x?y=1"
        );
        let abs = join(&base, "https://b.test:8443/w").unwrap();
        assert_eq!(
            (abs.host_str().unwrap(), abs.port()),
            ("b.test", Some(8443))
        );
        assert!(join(&base, "http://b.test/w").is_none());
    }
}
