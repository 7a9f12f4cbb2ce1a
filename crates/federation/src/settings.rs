//! Everything the federation client is built from, as plain values: the
//! binary turns its TOML config into a [`FederationSettings`]; this crate
//! never sees the config file.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backoff::BackoffPolicy;
use crate::client::ClientSettings;
use crate::connect::{federation_tls_config, TlsConfigError};
use crate::ip_filter::{IpFilter, IpFilterError};

/// The client's settings, its backoff policy, TLS trust and IP ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationSettings {
    pub client: ClientSettings,
    pub backoff: BackoffPolicy,
    /// Synapse's `federation_verify_certificates`.
    pub verify_certificates: bool,
    /// Synapse's `federation_custom_ca_list` (replaces the system roots).
    pub custom_ca_list: Option<Vec<PathBuf>>,
    /// Synapse's `ip_range_blacklist`; `None` = its default private ranges.
    pub ip_range_blacklist: Option<Vec<String>>,
    pub ip_range_whitelist: Vec<String>,
}

impl FederationSettings {
    /// The TLS client configuration these settings ask for.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
        federation_tls_config(self.verify_certificates, self.custom_ca_list.as_deref())
    }

    /// The IP range filter these settings ask for.
    pub fn ip_filter(&self) -> Result<IpFilter, IpFilterError> {
        IpFilter::new(self.ip_range_blacklist.as_deref(), &self.ip_range_whitelist)
    }
}
