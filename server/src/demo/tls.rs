//! A self-signed certificate for 127.0.0.1, written as PEM files: the demo's
//! Herald and its simulated homeservers present it, and trust only it. The
//! demo also makes one for another name, which one simulated homeserver
//! presents (Herald trusts it as an issuer, so the handshake fails on the
//! name alone).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::federation_listener::{load_tls_config, TlsError};
use herald_federation::connect::{federation_tls_config, TlsConfigError};

/// Why the certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Server(#[from] TlsError),
    #[error(transparent)]
    Client(#[from] TlsConfigError),
}

/// The certificate and its key, on disk.
#[derive(Debug, Clone)]
pub struct LoopbackCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl LoopbackCert {
    /// Generates one into `dir` (`loopback.crt`, `loopback.key`).
    pub fn generate(dir: &Path) -> Result<LoopbackCert, CertError> {
        LoopbackCert::generate_named(dir, "loopback", "127.0.0.1")
    }

    /// Generates a self-signed one for `name` into `dir` (`<stem>.crt`,
    /// `<stem>.key`).
    pub fn generate_named(dir: &Path, stem: &str, name: &str) -> Result<LoopbackCert, CertError> {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        for (path, text) in [
            (&cert_path, certified.cert.pem()),
            (&key_path, certified.key_pair.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(|source| CertError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(LoopbackCert {
            cert_path,
            key_path,
        })
    }

    /// A TLS server configuration presenting it.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CertError> {
        Ok(load_tls_config(&self.cert_path, &self.key_path)?)
    }

    /// A TLS client configuration trusting only it.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, CertError> {
        Ok(federation_tls_config(
            true,
            Some(std::slice::from_ref(&self.cert_path)),
        )?)
    }
}
