//! The accept loop both listeners share (the admin/console `listen` and
//! `federation_listen`): hyper-util's HTTP/1.1 + HTTP/2 server per
//! connection, with the limits that keep slow or idle clients from using up
//! the open-files limit (issue 11, finding 2):
//!
//! - a request head must arrive within `header_read_timeout` (hyper's own
//!   HTTP/1.1 timer, plus our watchdog for what hyper does not time: the
//!   bytes before it knows the protocol, and HTTP/2);
//!   hyper also times the wait for every later HTTP/1.1 head, so an idle
//!   kept-alive HTTP/1.1 connection closes after `header_read_timeout`;
//! - an HTTP/2 connection with no request under way for `idle_timeout` is
//!   closed;
//! - a request under way cannot pin its connection: each frame of its body
//!   must arrive within `body_timeout`, and once the first `body_timeout`
//!   has passed the body must keep an average of `MIN_BODY_RATE` (1 KiB/s):
//!   it must be complete by `started + body_timeout + received bytes /
//!   MIN_BODY_RATE`, so a byte every `body_timeout` does not hold it forever
//!   (else reading the body fails, and the handler answers
//!   `400 M_NOT_JSON`), and the client must take each frame
//!   of the answer within `body_timeout` (else the connection is closed: a
//!   client that stops reading, or an HTTP/2 client that opens no window);
//! - at most `max_connections` per listener. At the cap, the connection that
//!   has waited longest without a request under way (slow headers, an idle
//!   keep-alive, an unfinished TLS handshake) is closed for the new one, as
//!   nginx reuses idle keep-alive connections; when every connection has a
//!   request under way, the loop stops accepting until one becomes quiet or
//!   ends (the kernel queues the rest), which the body deadlines bound;
//! - TLS handshakes: at most `max_tls_handshakes` at once, each within
//!   `tls_handshake_timeout`, and abandoned at shutdown;
//! - an accept that fails for want of file descriptors backs off briefly
//!   instead of spinning;
//! - at shutdown the requests under way get `drain_timeout` to finish.
//!
//! `axum::serve` has none of these knobs, hence this loop; the watchdog, the
//! eviction and the body deadlines are ours because neither hyper nor tower
//! has them (tower-http's `RequestBodyTimeoutLayer` bounds the whole body,
//! not a stall, and is not among our features; nothing bounds a stalled
//! answer).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as HttpBody, Buf, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::LazyConfigAcceptor;
use tower::ServiceExt as _;

use crate::config::Config;

/// How long the loop waits after an accept failed for want of resources
/// (file descriptors, memory) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a quiet connection that has answered may take to close: hyper
/// may still be writing the end of its last answer when the body is done.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The most connections per listener when `max_connections` is not set,
/// whatever the open-files limit (the cap's scan for a connection to close
/// is linear).
const DERIVED_CAP_MAX: usize = 16_384;

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_tls_handshakes: usize,
    pub max_connections: usize,
    pub body_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Limits {
    /// The configured limits; without `max_connections`, each listener may
    /// hold a quarter of `open_files` (the soft `RLIMIT_NOFILE`), at most
    /// 16,384.
    pub fn from_config(config: &Config, open_files: u64) -> Limits {
        let c = &config.connections;
        let derived = usize::try_from(open_files / 4)
            .unwrap_or(usize::MAX)
            .clamp(16, DERIVED_CAP_MAX);
        Limits {
            header_read_timeout: c.header_read_timeout.0,
            idle_timeout: c.idle_timeout.0,
            tls_handshake_timeout: c.tls_handshake_timeout.0,
            max_tls_handshakes: c.max_tls_handshakes.max(1),
            max_connections: c.max_connections.unwrap_or(derived).max(1),
            body_timeout: c.body_timeout.0,
            drain_timeout: c.drain_timeout.0,
        }
    }
}

/// Raises the soft open-files limit to the hard one, as Synapse does at
/// start-up (`change_resource_limit`), and returns the soft limit now in
/// force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open files limit");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The soft open-files limit in force (1,024 where it cannot be read).
pub fn open_files_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Serves `app` on `listener` (TLS first when `tls` is given) until
/// `shutdown` completes; then stops accepting, asks every connection to
/// finish (HTTP/1.1 after its current answer, HTTP/2 with GOAWAY) and waits
/// for them, at most `drain_timeout` (the rest are dropped with the
/// runtime).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    limits: Limits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let shared = Arc::new(Shared {
        builder,
        app,
        limits: limits.clone(),
        tls,
        handshakes: Semaphore::new(limits.max_tls_handshakes),
        conns: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(0),
        quieted: Arc::new(Notify::new()),
    });
    let cap = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(cap as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut failing = false;
    let mut at_cap = false;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => {
                    failing = false;
                    connection
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or memory): the connection
                    // stays queued in the kernel; try again shortly.
                    if !failing {
                        tracing::warn!(listener = name, error = %e, "accept failed; backing off");
                        failing = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_cap = false;
                slot
            }
            Err(_) => {
                if !at_cap {
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        "connection cap reached: closing the longest-quiet connections"
                    );
                    at_cap = true;
                }
                let slot = tokio::select! {
                    slot = shared.make_room(&slots) => slot,
                    () = &mut shutdown => break,
                };
                match slot {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        // Small answers go out at once, not after a delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = shared.register();
        let shared = shared.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _registered = Registered {
                shared: &shared,
                id: conn.id,
            };
            shared.connection(tcp, peer, &conn, stop).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let drained = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(cap)).await;
    if drained.is_err() {
        let left = cap as usize - slots.available_permits();
        tracing::warn!(
            listener = name,
            connections = left,
            drain_timeout = ?limits.drain_timeout,
            "stopping with requests still under way"
        );
    }
    Ok(())
}

/// An accept error that concerns one client only (it went away): not a
/// reason to slow down.
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What every connection task of one listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    limits: Limits,
    tls: Option<Arc<ServerConfig>>,
    handshakes: Semaphore,
    /// The open connections, oldest first.
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Fired when a connection becomes quiet (for a loop at the cap).
    quieted: Arc<Notify>,
}

/// One open connection, as its watchdog and the cap see it.
struct Conn {
    id: u64,
    /// Requests under way (until their answer's body is written).
    busy: AtomicUsize,
    /// Since when no request has been under way.
    quiet_since: Mutex<Instant>,
    /// Whether a request has come: before, the header timeout applies;
    /// after, the idle timeout.
    served: AtomicBool,
    /// The cap asked this connection to close (if still quiet).
    evicting: AtomicBool,
    evict: Notify,
    /// Answers whose body is being written.
    writing: AtomicUsize,
    /// When the client last took a frame of an answer (or an answer began).
    last_write: Mutex<Instant>,
    /// Wakes the watchdog when an answer begins.
    wake: Notify,
    /// The listener's [`Shared::quieted`].
    quieted: Arc<Notify>,
}

impl Conn {
    fn is_quiet(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }
}

/// Removes a connection from the registry when its task ends.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.conns.lock().remove(&self.id);
    }
}

/// A request under way; the connection is quiet again once every one is
/// dropped (with its answer's body).
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        conn.served.store(true, Ordering::SeqCst);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.quiet_since.lock() = Instant::now();
            self.0.quieted.notify_waiters();
        }
    }
}

/// The least average rate a request body must keep once its first
/// `body_timeout` has passed: 1 KiB/s (see the module comment).
pub const MIN_BODY_RATE: u32 = 1024;

/// A deadline that never comes in practice (what tokio's `sleep` uses).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A request body whose every frame must arrive within `timeout` of asking,
/// and which must be complete by `started + timeout + received /
/// MIN_BODY_RATE`: one timer, reset to the nearer of the two deadlines.
struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// When the request head was parsed.
    started: Instant,
    /// Bytes of the body received so far.
    received: u64,
    /// Since when the body has been waited for without a frame.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            started: Instant::now(),
            received: 0,
            waiting_since: None,
            timer: None,
        }
    }

    /// When the body must be complete at the rate floor (`None`: too far
    /// to represent, so only the stall deadline counts).
    fn rate_deadline(&self) -> Option<Instant> {
        let earned = Duration::from_secs(self.received) / MIN_BODY_RATE;
        self.started.checked_add(self.timeout)?.checked_add(earned)
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no part of the request body came for {0:?}")]
    Stalled(Duration),
    #[error("the request body came slower than {MIN_BODY_RATE} bytes/s ({0} bytes so far)")]
    TooSlow(u64),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Error = hyper::Error> + Unpin,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting_since = None;
                if let Some(Ok(data)) = &frame {
                    let len = data.data_ref().map_or(0, |d| d.remaining() as u64);
                    this.received = this.received.saturating_add(len);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                // An absurd `body_timeout` means no stall deadline to speak
                // of: 30 years, as tokio's own `sleep` saturates.
                let stall_at = since
                    .checked_add(this.timeout)
                    .unwrap_or_else(|| since + FAR_FUTURE);
                let rate_at = this.rate_deadline();
                let deadline = rate_at.map_or(stall_at, |r| r.min(stall_at));
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.waiting_since = None;
                        if rate_at.is_some_and(|r| r < stall_at) {
                            Poll::Ready(Some(Err(BodyError::TooSlow(this.received))))
                        } else {
                            Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))))
                        }
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body being written: its request stays under way until the
/// body is dropped, and the watchdog closes the connection when the client
/// takes no frame of it for `body_timeout`.
struct Answer {
    inner: Body,
    conn: Arc<Conn>,
    _busy: Busy,
}

impl Answer {
    fn new(inner: Body, busy: Busy) -> Answer {
        let conn = busy.0.clone();
        *conn.last_write.lock() = Instant::now();
        conn.writing.fetch_add(1, Ordering::SeqCst);
        conn.wake.notify_one();
        Answer {
            inner,
            conn,
            _busy: busy,
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.conn.writing.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpBody for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            *self.conn.last_write.lock() = Instant::now();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Shared {
    fn register(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            busy: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
            served: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            writing: AtomicUsize::new(0),
            last_write: Mutex::new(Instant::now()),
            wake: Notify::new(),
            quieted: self.quieted.clone(),
        });
        self.conns.lock().insert(id, conn.clone());
        conn
    }

    /// At the cap: asks the longest-quiet connection to close and waits for
    /// a slot; when none is quiet, waits for one to become so or to end.
    /// `None` only if the semaphore was closed.
    async fn make_room(&self, slots: &Arc<Semaphore>) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            let quieted = self.quieted.notified();
            tokio::pin!(quieted);
            // Registered before the scan, so a connection that becomes
            // quiet after it is not missed.
            quieted.as_mut().enable();
            self.evict_one();
            tokio::select! {
                slot = slots.clone().acquire_owned() => return slot.ok(),
                () = quieted => {}
            }
        }
    }

    /// Asks the quiet connection with the oldest `quiet_since` (not already
    /// asked) to close.
    fn evict_one(&self) {
        let conns = self.conns.lock();
        let victim = conns
            .values()
            .filter(|c| c.is_quiet() && !c.evicting.load(Ordering::SeqCst))
            .min_by_key(|c| *c.quiet_since.lock());
        if let Some(conn) = victim {
            conn.evicting.store(true, Ordering::SeqCst);
            conn.evict.notify_one();
        }
    }

    /// One connection, from its TLS handshake (if any) to its end.
    async fn connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        conn: &Arc<Conn>,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(config) = &self.tls else {
            return self.http(tcp, peer, conn, stop).await;
        };
        let handshake = async {
            // Waiting for the ClientHello costs nothing but the socket (the
            // cap bounds those); the cryptography takes a turn.
            let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await;
            let start = match start {
                Ok(start) => start,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
            };
            let _turn = self.handshakes.acquire().await.ok()?;
            match start.into_stream(config.clone()).await {
                Ok(tls) => Some(tls),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
            }
        };
        let tls = tokio::select! {
            done = tokio::time::timeout(self.limits.tls_handshake_timeout, handshake) => match done {
                Ok(Some(tls)) => tls,
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            () = evicted(conn) => return,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        // The header timeout counts from the end of the handshake.
        *conn.quiet_since.lock() = Instant::now();
        self.http(tls, peer, conn, stop).await;
    }

    /// HTTP/1.1 or HTTP/2 on `io` until the client or the watchdog ends it.
    async fn http<I>(
        &self,
        io: I,
        peer: SocketAddr,
        conn: &Arc<Conn>,
        mut stop: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let owner = conn.clone();
        let body_timeout = self.limits.body_timeout;
        let service = tower::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::start(owner.clone());
            let mut request = request.map(|inner| TimedBody::new(inner, body_timeout));
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                // The request stays under way until its body is written.
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Answer::new(body, busy))),
                )
            }
        });
        let http = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(http);
        let quiet = too_quiet(conn, &self.limits);
        tokio::pin!(quiet);
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        let mut stopping = false;
        loop {
            tokio::select! {
                ended = http.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                why = &mut quiet => {
                    if why == Close::Quiet && conn.served.load(Ordering::SeqCst) {
                        // Let hyper finish writing the last answer (a body
                        // ends before its last bytes are flushed), briefly.
                        http.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CLOSE_GRACE, http.as_mut()).await;
                    }
                    tracing::debug!(%peer, ?why, "closing a connection");
                    return;
                }
                () = &mut stopped, if !stopping => {
                    stopping = true;
                    http.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Completes when the cap asks `conn` to close.
async fn evicted(conn: &Conn) {
    conn.evict.notified().await;
}

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No request under way for its time, or the cap needs its slot.
    Quiet,
    /// The client took no frame of an answer for `body_timeout`.
    Stalled,
}

/// Completes when `conn` has had no request under way for its time (the
/// header timeout before its first request, the idle timeout after), or the
/// cap asks it to close while no request is under way, or the client has
/// taken no frame of an answer for `body_timeout`.
async fn too_quiet(conn: &Conn, limits: &Limits) -> Close {
    let allowed = || {
        if conn.served.load(Ordering::SeqCst) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        }
    };
    let stalled = || {
        conn.writing.load(Ordering::SeqCst) > 0
            && Instant::now() >= *conn.last_write.lock() + limits.body_timeout
    };
    loop {
        // While a request is under way, look again a whole period later,
        // or when its answer's writing stalls.
        let deadline = if conn.is_quiet() {
            *conn.quiet_since.lock() + allowed()
        } else if conn.writing.load(Ordering::SeqCst) > 0 {
            *conn.last_write.lock() + limits.body_timeout
        } else {
            Instant::now() + allowed()
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if conn.is_quiet() && Instant::now() >= *conn.quiet_since.lock() + allowed() {
                    return Close::Quiet;
                }
                if stalled() {
                    return Close::Stalled;
                }
            }
            () = conn.wake.notified() => {}
            () = conn.evict.notified() => {
                if conn.is_quiet() {
                    return Close::Quiet;
                }
                conn.evicting.store(false, Ordering::SeqCst);
            }
        }
    }
}
