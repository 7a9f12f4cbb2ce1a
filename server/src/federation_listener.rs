//! The federation listener (`federation_listen`): TLS through rustls from
//! PEM files (or plain HTTP behind a TLS-terminating proxy with
//! `federation_tls = false`), serving only federation routes — the key server
//! and version for now — with `404 M_UNRECOGNIZED` for anything else. It is a
//! separate socket from the admin/console listener, as Synapse's federation
//! port is. Its connections, TLS handshakes included, run through
//! `crate::accept` (timeouts, the connection cap, bounded handshakes).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::accept::Limits;
use crate::config::{Config, ConfigError};
use crate::http::error::ApiError;
use crate::state::AppState;

/// How long a client has to finish the TLS handshake on a [`TlsListener`]
/// (the federation listener itself takes `connections.tls_handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("TLS {what} file {}: {reason}", path.display())]
    Malformed {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS certificate {} with private key {}: {source}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The rustls server configuration for a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), offering HTTP/2 and HTTP/1.1.
pub fn load_tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let malformed = |what, path: &Path, reason: String| TlsError::Malformed {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(malformed(
            "certificate",
            cert,
            "no PEM CERTIFICATE block".into(),
        ));
    }
    let key_pem = read("private key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        malformed(
            "private key",
            key,
            format!("no usable PEM PRIVATE KEY block ({e})"),
        )
    })?;
    let config_error = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(config_error)?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)
    .map_err(config_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The application of the federation listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::http::key_server::router())
        .fallback(|| async { ApiError::unrecognized() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::http::json_errors))
        .layer(axum::middleware::from_fn(crate::http::security::headers))
}

/// A bound federation listener, TLS or plain.
pub enum FederationListener {
    Tls(TcpListener, Arc<rustls::ServerConfig>),
    Plain(TcpListener),
}

/// Why the federation listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum FederationListenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} (federation_listen): {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

impl FederationListener {
    /// Loads the TLS files and binds `federation_listen`; `None` when no
    /// federation listener is configured.
    pub async fn bind(
        config: &Config,
    ) -> Result<Option<FederationListener>, FederationListenError> {
        let Some(addr) = config.federation_listen_addr()? else {
            return Ok(None);
        };
        let tls = match (
            config.federation_tls,
            &config.tls_certificate_path,
            &config.tls_private_key_path,
        ) {
            (true, Some(cert), Some(key)) => Some(load_tls_config(cert, key)?),
            (false, None, None) => None,
            // What `Config::validate` refuses, for configs built in code.
            (true, _, _) => {
                return Err(ConfigError::Invalid {
                    key: "tls_certificate_path",
                    message: "federation_listen needs tls_certificate_path and \
                              tls_private_key_path (or federation_tls = false)"
                        .into(),
                }
                .into())
            }
            (false, _, _) => {
                return Err(ConfigError::Invalid {
                    key: "federation_tls",
                    message: "is false but a TLS certificate or key is set".into(),
                }
                .into())
            }
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| FederationListenError::Bind { addr, source })?;
        Ok(Some(match tls {
            Some(tls) => FederationListener::Tls(listener, tls),
            None => FederationListener::Plain(listener),
        }))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            FederationListener::Tls(l, _) | FederationListener::Plain(l) => l.local_addr(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, FederationListener::Tls(..))
    }

    /// Serves `app` until `shutdown` completes (then finishes open requests),
    /// within `limits` (see `crate::accept`).
    pub async fn serve(
        self,
        app: Router,
        limits: Limits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (listener, tls) = match self {
            FederationListener::Tls(l, config) => (l, Some(config)),
            FederationListener::Plain(l) => (l, None),
        };
        crate::accept::serve(listener, tls, app, limits, "federation", shutdown).await
    }
}

/// A TCP listener that hands out connections once their TLS handshake is
/// done, for `axum::serve`: the demo's simulated homeservers and the tests'
/// and benches' federation peers use it (Herald's own listeners use
/// `crate::accept`).
pub struct TlsListener {
    local: SocketAddr,
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, incoming) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            while !tx.is_closed() {
                let (tcp, peer) = match listener.accept().await {
                    Ok(connection) => connection,
                    Err(e) => {
                        // As axum's own listener: per-connection errors are
                        // the client's; others (out of file descriptors)
                        // pass with time.
                        if !crate::accept::is_connection_error(&e) {
                            tracing::error!(error = %e, "federation listener: accept failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        continue;
                    }
                };
                // Small answers go out at once, not after a delayed ACK.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "federation listener: cannot set TCP_NODELAY");
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            incoming,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // Only when the accept task is gone, i.e. never while serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
