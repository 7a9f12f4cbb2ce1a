//! Connections for the federation client: the rustls client configuration
//! (`federation_verify_certificates`, `federation_custom_ca_list`), opening
//! a TCP + TLS connection to one resolved address with the destination's
//! TLS name as SNI and certificate name (within a per-address connect
//! timeout), and a small keep-alive pool of HTTP/1.1 connections keyed by
//! (address, TLS name).
//!
//! Why hand-written rather than reqwest or hyper-util's pooled client: a
//! federation request is sent to one *resolved address* at a time, chosen
//! by the spec's resolution (well-known, SRV, port 8448), each address
//! checked by the IP filter, with a TLS name and a `Host` that are not the
//! URL's host (a delegated name's SRV target is connected to, but the
//! certificate must be for the delegated name, and `Host` is the server
//! name). Those clients pool by URL authority and derive SNI and `Host`
//! from it; reaching each candidate address with another TLS name would
//! need a client (and a pool) per destination. The connections themselves
//! are hyper's (`hyper::client::conn::http1`); only the choosing of the
//! address and the keep-alive bookkeeping are ours.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// The most a connection buffers of what the server sends (hyper's read
/// buffer; its default grows to about 400 KiB): an answer's headers must
/// fit, and a thousand connections streaming a body at once stay bounded.
const MAX_BUFFER: usize = 64 * 1024;

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("config key `federation_custom_ca_list`: cannot read {path}: {source}")]
    ReadCa { path: PathBuf, source: io::Error },
    #[error("config key `federation_custom_ca_list`: {path} holds no usable PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The roots in the PEM files of `federation_custom_ca_list`.
pub fn load_custom_roots(paths: &[PathBuf]) -> Result<rustls::RootCertStore, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for path in paths {
        let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
            path: path.clone(),
            source,
        })?;
        let no_cert = || TlsConfigError::NoCertificate { path: path.clone() };
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| no_cert())?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(no_cert());
        }
    }
    Ok(roots)
}

/// The client configuration for federation requests: HTTP/1.1 by ALPN,
/// ring, TLS 1.2 and 1.3; trusting `custom_ca_list` (replacing the system
/// roots) when given; accepting any certificate when `verify` is false.
pub fn federation_tls_config(
    verify: bool,
    custom_ca_list: Option<&[PathBuf]>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let roots = match custom_ca_list {
            Some(paths) => load_custom_roots(paths)?,
            None => super::well_known::system_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        warn!("federation_verify_certificates is false: any TLS certificate is accepted");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate verifier federation's TLS uses when
/// `federation_verify_certificates` is true (webpki against the system's
/// roots or `federation_custom_ca_list`); `None` when it is false. A
/// diagnosis calls it itself on the chain a server sent, to say why a
/// certificate does not verify while still showing it.
pub fn federation_verifier(
    verify: bool,
    custom_ca_list: Option<&[PathBuf]>,
) -> Result<Option<Arc<dyn ServerCertVerifier>>, TlsConfigError> {
    if !verify {
        return Ok(None);
    }
    let roots = match custom_ca_list {
        Some(paths) => load_custom_roots(paths)?,
        None => super::well_known::system_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsConfigError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok(Some(verifier))
}

/// A client configuration (HTTP/1.1 by ALPN) that completes the handshake
/// whatever certificate the server sends, still checking the handshake's
/// signatures: a diagnosis shows the certificate and judges it with
/// [`federation_verifier`] afterwards. Never used to send.
pub fn accept_any_tls_config() -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `federation_verify_certificates = false`: any certificate for any name,
/// while still checking the handshake signatures (so the peer holds the
/// key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which pooled connections may serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls_name: String,
}

/// An HTTP/1.1 connection ready for one request.
pub struct Conn {
    pub key: PoolKey,
    pub sender: SendRequest<Full<Bytes>>,
    /// Taken from the pool rather than opened for this request (a request
    /// that fails on such a connection is worth one more try on a new one:
    /// the server may have closed it while idle).
    pub reused: bool,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Keep-alive connections, per (address, TLS name).
pub struct Pool {
    tls: tokio_rustls::TlsConnector,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// How long a connection may sit idle before it is dropped.
    pub idle_timeout: Duration,
    /// At most this many idle connections per key.
    pub max_idle_per_key: usize,
    /// Time allowed to open one connection (TCP and TLS handshake).
    pub connect_timeout: Duration,
}

impl Pool {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Pool {
        Pool {
            tls: tokio_rustls::TlsConnector::from(tls),
            idle: Mutex::new(HashMap::new()),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_key: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// An idle connection for `key`, if one is still open.
    pub fn take(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < self.idle_timeout
                && !entry.sender.is_closed()
                && entry.sender.is_ready()
            {
                found = Some(entry.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found.map(|sender| Conn {
            key: key.clone(),
            sender,
            reused: true,
        })
    }

    /// Gives a connection back after its response was read to the end.
    pub fn put(&self, conn: Conn) {
        if conn.sender.is_closed() || !conn.sender.is_ready() {
            return;
        }
        let mut idle = self.idle.lock();
        // Drop whatever has expired meanwhile, for every key, so the map
        // does not keep destinations that are no longer contacted.
        idle.retain(|_, list| {
            list.retain(|e| e.since.elapsed() < self.idle_timeout && !e.sender.is_closed());
            !list.is_empty()
        });
        let list = idle.entry(conn.key).or_default();
        if list.len() < self.max_idle_per_key {
            list.push(Idle {
                sender: conn.sender,
                since: Instant::now(),
            });
        }
    }

    /// Number of idle connections (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().values().map(Vec::len).sum()
    }

    /// Opens a TCP + TLS connection to `addr`, verifying the certificate for
    /// `tls_name` (also sent as SNI when it is a DNS name), and starts its
    /// HTTP/1.1 driver. Fails with `TimedOut` when the TCP connect and the
    /// TLS handshake take more than `connect_timeout` together.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tls_name: &ServerName<'static>,
    ) -> io::Result<Conn> {
        let open = async {
            let tcp = TcpStream::connect(addr).await?;
            // Small federation requests should not wait for Nagle.
            tcp.set_nodelay(true)?;
            self.tls.connect(tls_name.clone(), tcp).await
        };
        let tls = match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {addr} within {:?} (connect_timeout)",
                        self.connect_timeout
                    ),
                ))
            }
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_BUFFER)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%addr, error = %e, "federation connection ended");
            }
        });
        Ok(Conn {
            key: PoolKey {
                addr,
                tls_name: tls_name_text(tls_name),
            },
            sender,
            reused: false,
        })
    }
}

/// A TLS server name as text, for pool keys.
pub fn tls_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}
