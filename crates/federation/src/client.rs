//! The federation client, after Synapse's `MatrixFederationHttpClient`:
//! signed (`Authorization: X-Matrix …`) JSON requests and file downloads to
//! other servers, with `federation_domain_whitelist`, the per-destination
//! backoff ([`RetryLimiter`]), server-name resolution, the IP range filter
//! on every resolved address, TLS, keep-alive connections, Synapse's retry
//! schedule (woken early by an admin's `reset_connection`), response checks
//! (`application/json`, a size cap per call: 100 MiB, within the answer
//! budget, unless the caller asks for less) and typed errors.
//!
//! Bounds against hostile servers: each try has one deadline
//! (`client_timeout`) for its connection, the answer's headers and its
//! whole body, so a body trickled forever ends with the try; a body over
//! the call's cap is refused as it streams in, never buffered whole; a try
//! that opens a connection holds one of the client's try slots
//! ([`FederationClient::with_concurrent_tries`]) until its body is read; a
//! try on a kept-alive connection needs no slot (its connection is open
//! already), so healthy destinations are not queued behind thousands that
//! never answer. A quarter of the slots are reserved for destinations that
//! answered well last time and are not in backoff, so one whose kept-alive
//! connection was closed (remotes close idle ones, nginx after 75 s) is not
//! queued behind them either. Answer bodies held in memory, all requests
//! together, are bounded by a byte budget
//! ([`FederationClient::with_answer_budget`], 64 MiB by default) whatever
//! the slots and the callers' concurrency (time spent waiting for it is
//! added to the try's deadline, up to `client_timeout` in all, and a body
//! that gets none in that time fails without counting against the
//! destination's backoff), and each connection reads at most 64 KiB ahead
//! (`connect`). Server-name resolution (`.well-known`
//! fetches included, capped at 50 KiB) runs before a slot is taken, within
//! the try's deadline.
//!
//! Where Herald differs from Synapse 1.163, on purpose (DESIGN.md): 5xx
//! answers are not retried within a request (only 429 and failures to get
//! an answer are); an address outside the IP filter is refused even when
//! given as an IP literal; and the backoff is recorded once the answer's
//! body is read and parsed, so a destination that answers 200 with a body
//! that is not the JSON expected (or too large, or too slow) counts as
//! failing and backs off. Synapse records success as soon as the headers
//! say 2xx (its `_handle_response` runs after the retry limiter is left),
//! so such a destination is tried again and again and looks healthy.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT,
};
use hyper::{Method, Request, Response};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::{BackoffError, BackoffStore, Outcome, RetryLimiter, StorageError, Timings};
use super::connect::{tls_name_text, Conn, Pool, PoolKey};
use super::dns::Dns;
use super::ip_filter::IpFilter;
use super::metrics::ClientMetrics;
use super::resolve::{ResolveError, ServerResolver};
use super::settings::FederationSettings;
use super::well_known::{SystemClock, WellKnownConfig, WellKnownResolver};
use herald_keys::ServerKeys;
use herald_shared::FailureKind;

/// Synapse's `MAX_RESPONSE_SIZE` for JSON answers: 100 MiB.
pub const MAX_RESPONSE_SIZE: u64 = 100 * 1024 * 1024;

/// How much of an error answer's body is kept.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Bytes of answer bodies held in memory at once, all requests together
/// ([`FederationClient::with_answer_budget`]): 64 MiB.
pub const DEFAULT_ANSWER_BUDGET: usize = 64 * 1024 * 1024;

/// The share of try slots reserved for destinations that answered well
/// last time: one in four.
const RESERVED_SHARE: usize = 4;

/// The `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// Per-request options; `Default` is Synapse's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Time allowed for the answer's headers and again for its body;
    /// `None` = `federation.client_timeout`. Given, the request is not
    /// retried (Synapse).
    pub timeout: Option<Duration>,
    /// Use the long retry schedule (`max_long_retries`).
    pub long_retries: bool,
    /// Send even when the destination is in backoff; a failure then does
    /// not grow the backoff.
    pub ignore_backoff: bool,
    /// Count a 404 as the destination failing.
    pub backoff_on_404: bool,
    /// On 400 `M_UNRECOGNIZED`, try once more with a `/` after the path
    /// (for Synapse ≤ 0.99.3).
    pub try_trailing_slash_on_400: bool,
    /// Retry when the name does not resolve.
    pub retry_on_dns_fail: bool,
    /// Largest answer body accepted for this call (JSON calls);
    /// `None` = `max_response_size` of the client's settings. Either way
    /// at most the client's whole answer budget.
    pub max_response_size: Option<u64>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            timeout: None,
            long_retries: false,
            ignore_backoff: false,
            backoff_on_404: false,
            try_trailing_slash_on_400: false,
            retry_on_dns_fail: true,
            max_response_size: None,
        }
    }
}

/// A Matrix error body (`{"errcode": …, "error": …}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MatrixError {
    pub errcode: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// Why a federation request failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("federation with {0} is not allowed by federation_domain_whitelist")]
    DeniedByWhitelist(String),
    #[error("{destination} resolves to {ip}, a blocked address (ip_range_blacklist)")]
    BlockedIp { destination: String, ip: IpAddr },
    #[error(
        "not retrying {destination} yet: last tried at {retry_last_ts}, next try {retry_interval} ms later"
    )]
    NotRetrying {
        destination: String,
        retry_last_ts: i64,
        retry_interval: i64,
    },
    #[error("{destination} answered {status}{}", matrix_error_suffix(.error))]
    Http {
        destination: String,
        status: u16,
        /// The address that answered.
        address: Option<SocketAddr>,
        /// The body as a Matrix error, when it is one.
        error: Option<Box<MatrixError>>,
        /// The body (at most 64 KiB).
        body: Bytes,
    },
    #[error("request to {destination} failed: {source}")]
    SendFailed {
        destination: String,
        /// Whether trying again may work.
        retryable: bool,
        /// What failed: `Dns`, `Connect`, `Tls` or `Timeout` (or
        /// `InvalidResponse` for an answer that is not HTTP).
        kind: FailureKind,
        /// The address tried, when one was.
        address: Option<SocketAddr>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{destination} sent more than {limit} bytes")]
    TooLarge { destination: String, limit: u64 },
    #[error("invalid answer from {destination}: {reason}")]
    InvalidResponse { destination: String, reason: String },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot build the request: {0}")]
    InvalidRequest(String),
    #[error("backoff store: {0}")]
    Store(#[from] StorageError),
    /// The answer's body waited `client_timeout` for room in the answer
    /// budget, held by other answers: a local shortage, no fault of the
    /// destination's (its backoff is left as it is).
    #[error("no room in the answer budget for the answer from {destination} within {waited:?}")]
    AnswerBudget {
        destination: String,
        waited: Duration,
    },
    /// Writing the answer's body here failed (`get_file`'s writer): no
    /// fault of the destination's.
    #[error("could not write the answer from {destination}: {source}")]
    LocalWrite {
        destination: String,
        #[source]
        source: std::io::Error,
    },
}

fn matrix_error_suffix(error: &Option<Box<MatrixError>>) -> String {
    match error.as_deref() {
        Some(MatrixError {
            errcode,
            error: Some(text),
        }) => format!(": {errcode}: {text}"),
        Some(MatrixError { errcode, .. }) => format!(": {errcode}"),
        None => String::new(),
    }
}

impl FederationError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            FederationError::DeniedByWhitelist(_)
            | FederationError::BlockedIp { .. }
            | FederationError::TooLarge { .. }
            | FederationError::InvalidResponse { .. }
            | FederationError::InvalidRequest(_) => false,
            FederationError::NotRetrying { .. }
            | FederationError::Store(_)
            | FederationError::AnswerBudget { .. }
            | FederationError::LocalWrite { .. } => true,
            FederationError::Http { status, .. } => *status == 429 || *status >= 500,
            FederationError::SendFailed { retryable, .. } => *retryable,
            FederationError::Resolve(e) => e.is_retryable(),
        }
    }

    /// A try that failed at `kind` (trying again may work).
    fn send_failed(
        destination: &str,
        kind: FailureKind,
        address: Option<SocketAddr>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> FederationError {
        FederationError::SendFailed {
            destination: destination.to_owned(),
            retryable: true,
            kind,
            address,
            source: source.into(),
        }
    }
}

/// The client's settings (Synapse's `federation:` section and, for tests, a
/// scale on the sleeps between retries); the binary builds them from its
/// config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub client_timeout: Duration,
    /// Time allowed to open a connection (TCP and TLS handshake) to one
    /// resolved address; past it the next address is tried.
    pub connect_timeout: Duration,
    pub max_short_retries: u32,
    pub max_long_retries: u32,
    pub max_short_retry_delay: Duration,
    pub max_long_retry_delay: Duration,
    /// `None` = federate with everyone.
    pub domain_whitelist: Option<HashSet<String>>,
    /// Largest JSON answer accepted.
    pub max_response_size: u64,
    /// Multiplies every sleep between retries: 1 in production, small in
    /// tests.
    pub retry_delay_scale: f64,
    /// Whether requests carry the X-Matrix `Authorization` header: always
    /// true but in `benches/client_load.rs`, which turns it off to measure
    /// what signing costs on the same request path. Never set it otherwise:
    /// unsigned requests are refused by every Matrix server.
    #[doc(hidden)]
    pub sign_requests: bool,
}

impl Default for ClientSettings {
    /// Synapse's defaults: a 60 s timeout, 3 short retries up to 2 s apart,
    /// 10 long ones up to 60 s apart, federating with everyone.
    fn default() -> Self {
        ClientSettings {
            client_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_short_retries: 3,
            max_long_retries: 10,
            max_short_retry_delay: Duration::from_secs(2),
            max_long_retry_delay: Duration::from_secs(60),
            domain_whitelist: None,
            max_response_size: MAX_RESPONSE_SIZE,
            retry_delay_scale: 1.0,
            sign_requests: true,
        }
    }
}

impl ClientSettings {
    /// Synapse's delay before the next try, without jitter, when
    /// `retries_left` retries remain (before this one is used).
    pub fn retry_delay(&self, long_retries: bool, retries_left: u32) -> Duration {
        if long_retries {
            let exp = self
                .max_long_retries
                .saturating_add(1)
                .saturating_sub(retries_left);
            let secs = 4f64.powi(exp.min(64) as i32);
            Duration::from_secs_f64(secs.min(self.max_long_retry_delay.as_secs_f64()))
        } else {
            let exp = self.max_short_retries.saturating_sub(retries_left);
            let secs = 0.5 * 2f64.powi(exp.min(64) as i32);
            Duration::from_secs_f64(secs.min(self.max_short_retry_delay.as_secs_f64()))
        }
    }
}

/// A 2xx answer whose body is still to be read, with its connection, the
/// try slot it holds (when it opened a connection) and the try's deadline.
struct Answer {
    response: Response<Incoming>,
    conn: Conn,
    slot: Option<OwnedSemaphorePermit>,
    deadline: Instant,
    /// The try's time allowed (for messages).
    timeout: Duration,
}

/// What one try may take: its time, and whether it may take a reserved
/// try slot.
#[derive(Debug, Clone, Copy)]
struct TryTerms {
    timeout: Duration,
    priority: bool,
}

/// A 2xx answer and the backoff read before the request, to be recorded
/// once the body is judged.
struct Answered {
    answer: Answer,
    timings: Timings,
}

/// Sends signed requests to other servers. Share it (`Arc`): it holds the
/// connection pool.
pub struct FederationClient {
    keys: Arc<ServerKeys>,
    resolver: Arc<ServerResolver>,
    limiter: RetryLimiter,
    ip_filter: IpFilter,
    pool: Pool,
    settings: ClientSettings,
    metrics: Option<Arc<dyn ClientMetrics>>,
    /// Bounds the tries under way at once on connections they opened
    /// (connecting, waiting for the answer, reading its body); a request
    /// sleeping between retries holds none, nor does a try on a kept-alive
    /// connection, so destinations that do not answer cannot hold back the
    /// others.
    tries: Option<TrySlots>,
    /// Bytes of answer bodies held at once (one permit a byte).
    answer_budget: Arc<Semaphore>,
    answer_budget_total: usize,
    /// Destinations whose last request here ended well (a usable 2xx
    /// answer) and has not failed since: their tries may take reserved
    /// slots. One name per destination that ever answered well.
    answered_well: parking_lot::Mutex<HashSet<String>>,
    /// Admins' resets not yet applied to the resolver's caches: each try
    /// drains it first, so a request that starts after a reset resolves the
    /// destination afresh.
    resets: parking_lot::Mutex<tokio::sync::broadcast::Receiver<Arc<str>>>,
}

/// The try slots: ordinary ones, for every try, and a reserve only tries
/// to destinations that answered well last time (and are not in backoff)
/// may take, so that thousands of never-answering destinations cannot queue
/// a healthy one whose kept-alive connection was closed.
struct TrySlots {
    ordinary: Arc<Semaphore>,
    reserved: Option<Arc<Semaphore>>,
}

/// Why the client could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] super::connect::TlsConfigError),
    #[error(transparent)]
    IpFilter(#[from] super::ip_filter::IpFilterError),
    #[error("cannot read the system's DNS configuration: {0}")]
    Dns(String),
}

impl FederationClient {
    /// `tls` is usually [`FederationSettings::tls_config`].
    pub fn new(
        keys: Arc<ServerKeys>,
        resolver: Arc<ServerResolver>,
        limiter: RetryLimiter,
        ip_filter: IpFilter,
        tls: Arc<rustls::ClientConfig>,
        settings: ClientSettings,
    ) -> FederationClient {
        let mut pool = Pool::new(tls);
        pool.connect_timeout = settings.connect_timeout;
        let resets = parking_lot::Mutex::new(limiter.subscribe_resets());
        FederationClient {
            resets,
            keys,
            resolver,
            limiter,
            ip_filter,
            pool,
            settings,
            metrics: None,
            tries: None,
            answer_budget: Arc::new(Semaphore::new(DEFAULT_ANSWER_BUDGET)),
            answer_budget_total: DEFAULT_ANSWER_BUDGET,
            answered_well: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// The client as `settings` describe it: the system's DNS, TLS per
    /// `verify_certificates` / `custom_ca_list`, the IP ranges, the backoff
    /// policy and retry settings; backoff kept in `backoff_store`.
    pub fn from_settings(
        settings: &FederationSettings,
        backoff_store: impl BackoffStore,
        keys: Arc<ServerKeys>,
    ) -> Result<FederationClient, SetupError> {
        let tls = settings.tls_config()?;
        let ip_filter = settings.ip_filter()?;
        let dns = Dns::system().map_err(|e| SetupError::Dns(e.to_string()))?;
        let well_known = WellKnownResolver::new(
            dns.clone(),
            WellKnownConfig::new(tls.clone()).with_ip_filter(ip_filter.clone()),
            Arc::new(SystemClock),
        );
        let resolver = Arc::new(ServerResolver::new(dns, well_known));
        let limiter = RetryLimiter::new(backoff_store, settings.backoff);
        Ok(FederationClient::new(
            keys,
            resolver,
            limiter,
            ip_filter,
            tls,
            settings.client.clone(),
        ))
    }

    /// Counts requests and answers in `metrics` (Synapse's series).
    pub fn with_metrics(mut self, metrics: Arc<dyn ClientMetrics>) -> FederationClient {
        self.metrics = Some(metrics);
        self
    }

    /// At most `n` tries on new connections under way at once (the
    /// sender's bound on open connections); the others wait for a slot. A
    /// quarter of them (`n / 4`) are reserved for the first try of a
    /// request to a destination that answered well last time and is not
    /// in backoff: such a try takes an ordinary slot when one is free, a
    /// reserved one otherwise, so it is not queued behind every try to
    /// servers that never answer (which, failing, never take reserved
    /// ones). A destination first contacted takes ordinary slots only.
    pub fn with_concurrent_tries(mut self, n: usize) -> FederationClient {
        let n = n.max(1);
        let reserved = n / RESERVED_SHARE;
        self.tries = Some(TrySlots {
            ordinary: Arc::new(Semaphore::new(n - reserved)),
            reserved: (reserved > 0).then(|| Arc::new(Semaphore::new(reserved))),
        });
        self
    }

    /// At most `bytes` of answer bodies held in memory at once, all
    /// requests together (default [`DEFAULT_ANSWER_BUDGET`]): a body's bytes
    /// are counted as they stream in and until the answer is parsed (a
    /// file's until each piece is written), and a try past the budget
    /// waits for others to give bytes back: the wait does not count
    /// against the try's deadline, and past `client_timeout` of waiting
    /// the call fails with [`FederationError::AnswerBudget`], which leaves
    /// the destination's backoff alone (the shortage is local). A JSON
    /// answer's cap is at most the whole budget.
    pub fn with_answer_budget(mut self, bytes: usize) -> FederationClient {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        self.answer_budget = Arc::new(Semaphore::new(bytes));
        self.answer_budget_total = bytes;
        self
    }

    /// Bytes of the answer budget free now (for tests and metrics).
    pub fn answer_budget_available(&self) -> usize {
        self.answer_budget.available_permits()
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The resolver (its well-known cache), for a diagnosis.
    pub fn resolver(&self) -> &Arc<ServerResolver> {
        &self.resolver
    }

    /// Forgets the cached resolution (`.well-known`, SRV, A/AAAA) of every
    /// destination an admin reset since the last call; after missed resets,
    /// every cached resolution.
    fn apply_resets(&self) {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut resets = self.resets.lock();
        loop {
            match resets.try_recv() {
                Ok(name) => self.resolver.forget(&name),
                Err(TryRecvError::Lagged(_)) => self.resolver.forget_all(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// Idle keep-alive connections (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        destination: &str,
        path_and_query: &str,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        self.request_json(Method::GET, destination, path_and_query, None, options)
            .await
    }

    pub async fn put_json<T: DeserializeOwned>(
        &self,
        destination: &str,
        path_and_query: &str,
        body: Option<&Value>,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        self.request_json(Method::PUT, destination, path_and_query, body, options)
            .await
    }

    /// `PUT` with a body that is canonical JSON text already (the sender's
    /// transactions, spliced from stored canonical PDUs): signed and sent as
    /// it is, not parsed and written again. Text that is not canonical JSON
    /// makes a signature the destination refuses.
    pub async fn put_canonical_json<T: DeserializeOwned>(
        &self,
        destination: &str,
        path_and_query: &str,
        canonical_body: &str,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        self.request_canonical(
            Method::PUT,
            destination,
            path_and_query,
            Some(canonical_body),
            options,
        )
        .await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        destination: &str,
        path_and_query: &str,
        body: Option<&Value>,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        self.request_json(Method::POST, destination, path_and_query, body, options)
            .await
    }

    pub async fn delete_json<T: DeserializeOwned>(
        &self,
        destination: &str,
        path_and_query: &str,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        self.request_json(Method::DELETE, destination, path_and_query, None, options)
            .await
    }

    /// Any method, a JSON answer (`application/json`, at most
    /// `max_response_size` bytes) parsed into `T`.
    pub async fn request_json<T: DeserializeOwned>(
        &self,
        method: Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&Value>,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        let canonical = body
            .map(herald_keys::to_canonical_json)
            .transpose()
            .map_err(|e| {
                FederationError::InvalidRequest(format!("the body cannot be canonical JSON: {e}"))
            })?;
        self.request_canonical(
            method,
            destination,
            path_and_query,
            canonical.as_deref(),
            options,
        )
        .await
    }

    /// [`request_json`](Self::request_json) with the body as canonical JSON
    /// text.
    async fn request_canonical<T: DeserializeOwned>(
        &self,
        method: Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&str>,
        options: RequestOptions,
    ) -> Result<T, FederationError> {
        let Answered { answer, timings } = self
            .send(method, destination, path_and_query, body, options)
            .await?;
        // A body is held whole in the answer budget: none can be larger.
        let limit = options
            .max_response_size
            .unwrap_or(self.settings.max_response_size)
            .min(self.answer_budget_total as u64);
        let result = async {
            check_content_type(destination, answer.response.headers())?;
            let mut bytes = Vec::new();
            // The body's share of the answer budget, given back once parsed.
            let mut held = None;
            self.read_body(destination, answer, &mut bytes, limit, Some(&mut held))
                .await?;
            serde_json::from_slice(&bytes).map_err(|e| FederationError::InvalidResponse {
                destination: destination.to_owned(),
                reason: format!("the body is not the JSON expected: {e}"),
            })
        }
        .await;
        // An answer that cannot be used is the destination failing (see
        // the module comment): not a success that clears the backoff. A
        // body that found no room in the answer budget says nothing of it.
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(FederationError::AnswerBudget { .. }) => Outcome::NotCounted,
            Err(_) => Outcome::Failure,
        };
        self.record(destination, timings, outcome, result.as_ref().err())
            .await;
        result
    }

    /// Stores what a request did to the destination's backoff and, for a
    /// failure that counts against it, why it failed (its last error and
    /// history, through the backoff store).
    async fn record(
        &self,
        destination: &str,
        timings: Timings,
        outcome: Outcome,
        error: Option<&FederationError>,
    ) {
        match outcome {
            Outcome::Success => {
                let mut well = self.answered_well.lock();
                if !well.contains(destination) {
                    well.insert(destination.to_owned());
                }
            }
            Outcome::Failure => {
                self.answered_well.lock().remove(destination);
            }
            Outcome::NotCounted => {}
        }
        if let Err(e) = self.limiter.record(destination, timings, outcome).await {
            warn!(destination, error = %e, "could not store the destination's backoff");
        }
        let noted = match outcome {
            Outcome::Success => self.limiter.succeeded(destination).await,
            Outcome::Failure => match error.and_then(crate::failure::failure_of) {
                Some(failure) => {
                    if let Some(m) = &self.metrics {
                        m.failure_recorded(failure.kind);
                    }
                    self.limiter
                        .failed(destination, &failure, timings.backoff_on_failure)
                        .await
                }
                None => Ok(()),
            },
            Outcome::NotCounted => Ok(()),
        };
        if let Err(e) = noted {
            warn!(destination, error = %e, "could not store the destination's last error");
        }
    }

    /// A GET whose body (any content type) is streamed to `out`, refused
    /// past `max_size` bytes. Returns the length and the answer's headers.
    pub async fn get_file<W: AsyncWrite + Unpin + Send>(
        &self,
        destination: &str,
        path_and_query: &str,
        out: &mut W,
        max_size: u64,
        options: RequestOptions,
    ) -> Result<(u64, HeaderMap), FederationError> {
        let Answered { answer, timings } = self
            .send(Method::GET, destination, path_and_query, None, options)
            .await?;
        let headers = answer.response.headers().clone();
        let result = self
            .read_body(destination, answer, out, max_size, None)
            .await;
        // A file over the caller's limit says nothing of the server's
        // health (its backoff is neither cleared nor grown), nor does a
        // failure to write it here; a body that broke off or did not
        // arrive in time is the server failing.
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(
                FederationError::TooLarge { .. }
                | FederationError::LocalWrite { .. }
                | FederationError::AnswerBudget { .. },
            ) => Outcome::NotCounted,
            Err(_) => Outcome::Failure,
        };
        self.record(destination, timings, outcome, result.as_ref().err())
            .await;
        Ok((result?, headers))
    }

    /// Whitelist, backoff, signed request with retries, backoff recorded
    /// for a failure (a 2xx answer's is recorded once its body is read);
    /// then once more with a trailing slash when asked and warranted.
    async fn send(
        &self,
        method: Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&str>,
        options: RequestOptions,
    ) -> Result<Answered, FederationError> {
        let first = self
            .send_limited(method.clone(), destination, path_and_query, body, options)
            .await;
        match first {
            Err(FederationError::Http {
                status: 400,
                error: Some(ref e),
                ..
            }) if options.try_trailing_slash_on_400 && e.errcode == "M_UNRECOGNIZED" => {
                let with_slash = match path_and_query.split_once('?') {
                    Some((path, query)) => format!("{path}/?{query}"),
                    None => format!("{path_and_query}/"),
                };
                info!(destination, "retrying the request with a trailing slash");
                self.send_limited(method, destination, &with_slash, body, options)
                    .await
            }
            other => other,
        }
    }

    async fn send_limited(
        &self,
        method: Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&str>,
        options: RequestOptions,
    ) -> Result<Answered, FederationError> {
        if let Some(allowed) = &self.settings.domain_whitelist {
            if !allowed.contains(destination) {
                return Err(FederationError::DeniedByWhitelist(destination.to_owned()));
            }
        }
        let timings = match self
            .limiter
            .check(destination, options.ignore_backoff)
            .await
        {
            Ok(t) => t,
            Err(BackoffError::NotRetrying {
                destination,
                retry_last_ts,
                retry_interval,
            }) => {
                return Err(FederationError::NotRetrying {
                    destination,
                    retry_last_ts,
                    retry_interval,
                })
            }
            Err(BackoffError::Store(e)) => return Err(FederationError::Store(e)),
        };
        // Reserved slots are for destinations that answered well last time
        // and are not backing off.
        let priority =
            timings.retry.retry_interval == 0 && self.answered_well.lock().contains(destination);
        let result = self
            .send_with_retries(method, destination, path_and_query, body, options, priority)
            .await;
        let error = match result {
            Ok(answer) => return Ok(Answered { answer, timings }),
            Err(e) => e,
        };
        let outcome = match &error {
            FederationError::Http { status, .. } => {
                Some(Outcome::of_status(*status, options.backoff_on_404))
            }
            FederationError::InvalidRequest(_) => None,
            _ => Some(Outcome::Failure),
        };
        if let Some(outcome) = outcome {
            self.record(destination, timings, outcome, Some(&error))
                .await;
        }
        Err(error)
    }

    async fn send_with_retries(
        &self,
        method: Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&str>,
        options: RequestOptions,
        mut priority: bool,
    ) -> Result<Answer, FederationError> {
        let bad = |m: String| FederationError::InvalidRequest(m);
        if !path_and_query.starts_with('/')
            || path_and_query
                .parse::<hyper::http::uri::PathAndQuery>()
                .is_err()
        {
            return Err(bad(format!("`{path_and_query}` is not a path")));
        }
        let canonical = body;
        // Signed over the very bytes that are sent.
        let auth = if self.settings.sign_requests {
            let auth = herald_keys::x_matrix::sign_canonical_request(
                &self.keys,
                method.as_str(),
                path_and_query,
                destination,
                canonical,
            );
            Some(
                HeaderValue::from_str(&auth.to_header())
                    .map_err(|_| bad("the X-Matrix header is not a valid header value".into()))?,
            )
        } else {
            None
        };
        let content = canonical.map(|text| Bytes::copy_from_slice(text.as_bytes()));
        let timeout = options.timeout.unwrap_or(self.settings.client_timeout);
        let mut retries_left = if options.long_retries {
            self.settings.max_long_retries
        } else {
            self.settings.max_short_retries
        };
        loop {
            debug!(destination, %method, path_and_query, ?timeout, "sending federation request");
            let attempt = self
                .attempt(
                    &method,
                    destination,
                    path_and_query,
                    content.clone(),
                    auth.as_ref(),
                    TryTerms { timeout, priority },
                )
                .await;
            let error = match attempt {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            // Failing now: its next tries take ordinary slots.
            priority = false;
            let worth_retrying = match &error {
                FederationError::SendFailed { retryable, .. } => *retryable,
                FederationError::Http { status: 429, .. } => true,
                FederationError::Resolve(e) => options.retry_on_dns_fail && e.is_retryable(),
                _ => false,
            };
            info!(destination, %method, path_and_query, error = ?error.to_string(), "federation request failed");
            if !worth_retrying || retries_left == 0 || options.timeout.is_some() {
                return Err(error);
            }
            let jitter = rand::thread_rng().gen_range(0.8..1.4);
            let delay = self
                .settings
                .retry_delay(options.long_retries, retries_left)
                .mul_f64(jitter * self.settings.retry_delay_scale.max(0.0));
            debug!(destination, ?delay, "waiting before trying again");
            let mut reset = self.limiter.reset_signal(destination);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = reset.wait() => info!(destination, "destination reset: trying again now"),
            }
            retries_left -= 1;
        }
    }

    /// A try slot, when the client has a bound (waits for one): an
    /// ordinary one, or for a `priority` try whichever of an ordinary and
    /// a reserved one comes first.
    async fn try_slot(&self, priority: bool) -> Option<OwnedSemaphorePermit> {
        let slots = self.tries.as_ref()?;
        let ordinary = slots.ordinary.clone();
        match &slots.reserved {
            Some(reserved) if priority => {
                if let Ok(slot) = ordinary.clone().try_acquire_owned() {
                    return Some(slot);
                }
                tokio::select! {
                    slot = reserved.clone().acquire_owned() => slot.ok(),
                    slot = ordinary.acquire_owned() => slot.ok(),
                }
            }
            _ => ordinary.acquire_owned().await.ok(),
        }
    }

    /// One try: resolve, filter, connect, send, and take the answer's
    /// headers (an error answer's body too), all within `timeout` (the
    /// time spent waiting for a try slot aside); a 2xx answer carries what
    /// is left of it for its body.
    async fn attempt(
        &self,
        method: &Method,
        destination: &str,
        path_and_query: &str,
        content: Option<Bytes>,
        auth: Option<&HeaderValue>,
        terms: TryTerms,
    ) -> Result<Answer, FederationError> {
        let TryTerms { timeout, priority } = terms;
        let mut deadline = Instant::now() + timeout;
        let late = |what: &str, kind: FailureKind, address: Option<SocketAddr>| {
            let at = address.map(|a| format!(" from {a}")).unwrap_or_default();
            FederationError::send_failed(
                destination,
                kind,
                address,
                format!("{what}{at} within {timeout:?}"),
            )
        };
        self.apply_resets();
        let resolution = tokio::time::timeout_at(deadline, self.resolver.resolve(destination))
            .await
            .map_err(|_| late("no resolution", FailureKind::Dns, None))??;
        if let Some(ip) = resolution
            .candidates
            .iter()
            .map(|a| a.ip())
            .find(|ip| !self.ip_filter.is_allowed(*ip))
        {
            // As Synapse's resolver: one blocked address blocks the name,
            // so a name cannot mix public and internal addresses.
            info!(destination, %ip, "blocked address in the destination's resolution");
            return Err(FederationError::BlockedIp {
                destination: destination.to_owned(),
                ip,
            });
        }
        let tls_name = resolution.tls_server_name()?;
        let host = HeaderValue::from_str(&resolution.host_header).map_err(|_| {
            FederationError::InvalidRequest(format!("bad Host {:?}", resolution.host_header))
        })?;
        let build = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(HOST, host.clone())
                .header(USER_AGENT, USER_AGENT_VALUE);
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if content.is_some() {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            request
                .body(Full::new(content.clone().unwrap_or_default()))
                .map_err(|e| FederationError::InvalidRequest(e.to_string()))
        };
        let mut last_error: Option<(SocketAddr, std::io::Error)> = None;
        for addr in &resolution.candidates {
            let key = PoolKey {
                addr: *addr,
                tls_name: tls_name_text(&tls_name),
            };
            // A kept-alive connection needs no slot; opening one does, and
            // the wait for it does not count against the deadline.
            let (mut conn, mut slot) = match self.pool.take(&key) {
                Some(conn) => (conn, None),
                None => {
                    let waiting = Instant::now();
                    let slot = self.try_slot(priority).await;
                    deadline += waiting.elapsed();
                    let connect =
                        tokio::time::timeout_at(deadline, self.pool.connect(*addr, &tls_name));
                    match connect.await {
                        Ok(Ok(conn)) => (conn, slot),
                        Ok(Err(e)) => {
                            debug!(destination, %addr, error = ?e.to_string(), "could not connect");
                            last_error = Some((*addr, e));
                            continue;
                        }
                        Err(_) => {
                            return Err(late("no connection", FailureKind::Connect, Some(*addr)))
                        }
                    }
                }
            };
            if let Some(m) = &self.metrics {
                m.request_sent(method.as_str());
            }
            let sent_at = std::time::Instant::now();
            let no_answer = || late("no answer", FailureKind::Timeout, Some(*addr));
            let broken = |e: hyper::Error| {
                let kind = if e.is_parse() {
                    FailureKind::InvalidResponse
                } else {
                    FailureKind::Connect
                };
                FederationError::send_failed(destination, kind, Some(*addr), e)
            };
            let first = tokio::time::timeout_at(deadline, conn.sender.send_request(build()?))
                .await
                .map_err(|_| no_answer())?;
            let response = match first {
                Ok(r) => r,
                Err(e) if conn.reused && (e.is_canceled() || e.is_incomplete_message()) => {
                    // The server closed the idle connection: once more on a new one.
                    debug!(destination, %addr, error = ?e.to_string(), "kept-alive connection was closed");
                    if slot.is_none() {
                        let waiting = Instant::now();
                        slot = self.try_slot(priority).await;
                        deadline += waiting.elapsed();
                    }
                    let again = async {
                        let mut conn = self.pool.connect(*addr, &tls_name).await?;
                        let response = conn
                            .sender
                            .send_request(build().map_err(std::io::Error::other)?)
                            .await
                            .map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>((conn, response))
                    };
                    let (fresh, response) = tokio::time::timeout_at(deadline, again)
                        .await
                        .map_err(|_| no_answer())?
                        .map_err(|e| {
                            let kind = crate::failure::connect_kind(&e);
                            FederationError::send_failed(destination, kind, Some(*addr), e)
                        })?;
                    conn = fresh;
                    response
                }
                Err(e) => return Err(broken(e)),
            };
            let status = response.status().as_u16();
            debug!(destination, status, "answer");
            if let Some(m) = &self.metrics {
                m.response_received(method.as_str(), status, sent_at.elapsed());
            }
            let answer = Answer {
                response,
                conn,
                slot,
                deadline,
                timeout,
            };
            if (200..300).contains(&status) {
                return Ok(answer);
            }
            let mut body = Vec::new();
            // The error body is best effort (as Synapse): a failure to read
            // it leaves it empty, and it waits for the budget within the
            // deadline.
            let _ = tokio::time::timeout_at(
                deadline,
                self.read_body(destination, answer, &mut body, MAX_ERROR_BODY, None),
            )
            .await;
            let error = serde_json::from_slice::<MatrixError>(&body)
                .ok()
                .map(Box::new);
            return Err(FederationError::Http {
                destination: destination.to_owned(),
                status,
                address: Some(*addr),
                error,
                body: Bytes::from(body),
            });
        }
        Err(match last_error {
            Some((addr, e)) => {
                let kind = crate::failure::connect_kind(&e);
                FederationError::send_failed(destination, kind, Some(addr), e)
            }
            None => FederationError::send_failed(
                destination,
                FailureKind::Dns,
                None,
                "no address to connect to",
            ),
        })
    }

    /// Streams an answer's body to `out` by the try's deadline,
    /// refusing more than `limit` bytes; the connection goes back to the
    /// pool when the body was read to its end. Each piece takes its bytes
    /// from the answer budget first: given back once written to `out` when
    /// `held` is `None` (a file), kept in `held` (for the caller to give
    /// back once done with the bytes) otherwise. Time spent waiting for the
    /// budget (other answers' bytes, not this destination's doing) moves
    /// the deadline on by as much; that wait is bounded in all by
    /// `client_timeout`, past which the body fails with
    /// [`FederationError::AnswerBudget`].
    async fn read_body<W: AsyncWrite + Unpin + Send>(
        &self,
        destination: &str,
        answer: Answer,
        out: &mut W,
        limit: u64,
        mut held: Option<&mut Option<OwnedSemaphorePermit>>,
    ) -> Result<u64, FederationError> {
        // The slot is given back when the body is read or abandoned.
        let Answer {
            response,
            conn,
            slot: _slot,
            mut deadline,
            timeout,
        } = answer;
        let address = Some(conn.key.addr);
        let late = || {
            FederationError::send_failed(
                destination,
                FailureKind::Timeout,
                address,
                format!("the whole answer did not arrive within {timeout:?}"),
            )
        };
        let too_large = || FederationError::TooLarge {
            destination: destination.to_owned(),
            limit,
        };
        let local = |source| FederationError::LocalWrite {
            destination: destination.to_owned(),
            source,
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let budget_wait = self.settings.client_timeout;
        let mut budget_waited = Duration::ZERO;
        let mut body = response.into_body();
        let mut length: u64 = 0;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(late()),
                Ok(None) => break,
                Ok(Some(frame)) => frame,
            };
            let frame = frame.map_err(|e| {
                FederationError::send_failed(destination, FailureKind::Connect, address, e)
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            length = length.saturating_add(data.len() as u64);
            if length > limit {
                warn!(destination, limit, "answer too large");
                return Err(too_large());
            }
            let bytes = u32::try_from(data.len().min(self.answer_budget_total)).unwrap_or(u32::MAX);
            let asked = Instant::now();
            let permit = tokio::time::timeout(
                budget_wait.saturating_sub(budget_waited),
                self.answer_budget.clone().acquire_many_owned(bytes),
            )
            .await;
            let waited = asked.elapsed();
            budget_waited += waited;
            deadline += waited;
            let permit = match permit {
                Ok(permit) => permit.map_err(|e| {
                    FederationError::send_failed(destination, FailureKind::Connect, address, e)
                })?,
                Err(_) => {
                    warn!(destination, waited = ?budget_waited, "no room in the answer budget");
                    return Err(FederationError::AnswerBudget {
                        destination: destination.to_owned(),
                        waited: budget_waited,
                    });
                }
            };
            tokio::time::timeout_at(deadline, out.write_all(&data))
                .await
                .map_err(|_| late())?
                .map_err(local)?;
            match held.as_deref_mut() {
                Some(Some(kept)) => kept.merge(permit),
                Some(slot) => *slot = Some(permit),
                None => drop(permit),
            }
        }
        tokio::time::timeout_at(deadline, out.flush())
            .await
            .map_err(|_| late())?
            .map_err(local)?;
        self.pool.put(conn);
        Ok(length)
    }
}

/// Synapse's `check_content_type_is`: the media type must be
/// `application/json` (parameters such as `charset` allowed).
fn check_content_type(destination: &str, headers: &HeaderMap) -> Result<(), FederationError> {
    let invalid = |reason: String| FederationError::InvalidResponse {
        destination: destination.to_owned(),
        reason,
    };
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(invalid("no Content-Type header".into()));
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("unreadable Content-Type header".into()))?;
    let media_type = text.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(invalid(format!(
            "Content-Type is {text:?}, not application/json"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_synapse() {
        let s = ClientSettings::default();
        // Short: retries_left 3, 2, 1 → 0.5 s, 1 s, 2 s.
        let short: Vec<_> = (1..=3)
            .rev()
            .map(|left| s.retry_delay(false, left))
            .collect();
        assert_eq!(
            short,
            [
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(2)
            ]
        );
        // Long: 4, 16, then 60 s (4^3 = 64 capped).
        let long: Vec<_> = (8..=10)
            .rev()
            .map(|left| s.retry_delay(true, left))
            .collect();
        assert_eq!(
            long,
            [
                Duration::from_secs(4),
                Duration::from_secs(16),
                Duration::from_secs(60)
            ]
        );
        assert_eq!(s.retry_delay(true, 1), Duration::from_secs(60));
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert!(check_content_type("d", &h).is_err());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(check_content_type("d", &h).is_err());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_content_type("d", &h).is_ok());
    }

    #[test]
    fn default_options_are_synapses() {
        let o = RequestOptions::default();
        assert!(o.retry_on_dns_fail && !o.long_retries && !o.ignore_backoff);
        assert!(!o.backoff_on_404 && !o.try_trailing_slash_on_400 && o.timeout.is_none());
    }
}
