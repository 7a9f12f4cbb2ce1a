//! Server-name resolution, as the server-server specification's "Resolving
//! server names" says: IP literal; hostname with explicit port;
//! `.well-known/matrix/server` delegation (then IP literal, explicit port,
//! SRV `_matrix-fed._tcp`, deprecated SRV `_matrix._tcp`, port 8448 for the
//! delegated name); SRV `_matrix-fed._tcp` then `_matrix._tcp`; port 8448.
//! The answer is the addresses to try in order, the `Host` header and the
//! name the TLS certificate must be valid for.
//!
//! The final addresses are not filtered here: the federation client checks
//! every `Resolution::candidates` entry against `ip_range_blacklist` before
//! connecting (the `.well-known` fetch checks its own, see `well_known`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use tracing::{debug, warn};

use super::dns::{Dns, DnsError, SrvAnswer};
use super::well_known::WellKnownResolver;

/// Federation's default port.
pub const DEFAULT_PORT: u16 = 8448;

/// The host part of a server name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (letters, digits, `-` and `.`).
    Name(String),
}

impl fmt::Display for Host {
    /// As written in a server name: IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed server name, `host[:port]`, per the spec's grammar (IPv6 literals
/// in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName {
    pub host: Host,
    pub port: Option<u16>,
}

impl ServerName {
    pub fn parse(s: &str) -> Result<Self, ResolveError> {
        let invalid = || ResolveError::InvalidServerName(s.to_owned());
        if s.is_empty() || s.len() > 255 {
            return Err(invalid());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(invalid)?;
            let ip: std::net::Ipv6Addr = rest[..end].parse().map_err(|_| invalid())?;
            let after = &rest[end + 1..];
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if host.is_empty() {
                return Err(invalid());
            }
            let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
                Host::Ip(IpAddr::V4(ip))
            } else if host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                Host::Name(host.to_owned())
            } else {
                return Err(invalid());
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().map_err(|_| invalid())?)
            }
            Some(_) => return Err(invalid()),
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Which rule of the spec produced a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 1: the server name is an IP literal.
    IpLiteral,
    /// 2: hostname with an explicit port.
    ExplicitPort,
    /// 3.1: delegated to an IP literal.
    WellKnownIpLiteral,
    /// 3.2: delegated to a hostname with an explicit port.
    WellKnownExplicitPort,
    /// 3.3: delegated; SRV `_matrix-fed._tcp.<delegated>`.
    WellKnownSrv,
    /// 3.4: delegated; deprecated SRV `_matrix._tcp.<delegated>`.
    WellKnownLegacySrv,
    /// 3.5: delegated; A/AAAA of the delegated hostname, port 8448.
    WellKnownDefaultPort,
    /// 4: SRV `_matrix-fed._tcp.<hostname>`.
    Srv,
    /// 5: deprecated SRV `_matrix._tcp.<hostname>`.
    LegacySrv,
    /// 6: A/AAAA of the hostname, port 8448.
    DefaultPort,
}

/// Where and how to connect to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Addresses to try, in order. The client filters these (IP range
    /// blacklist) before connecting.
    pub candidates: Vec<SocketAddr>,
    /// Value of the `Host` header: the server name, or the delegated server
    /// name after `.well-known`, with its port when it has one.
    pub host_header: String,
    /// The name the certificate must be valid for (and SNI when it is a DNS
    /// name): the (delegated) hostname or IP, never an SRV target.
    pub tls_name: Host,
    pub step: Step,
}

impl Resolution {
    /// `tls_name` for rustls.
    pub fn tls_server_name(&self) -> Result<rustls::pki_types::ServerName<'static>, ResolveError> {
        match &self.tls_name {
            Host::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
            Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| ResolveError::InvalidServerName(name.clone())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// Worth retrying later.
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{0} resolves to no addresses")]
    NoAddresses(String),
    /// An SRV record with target `.`.
    #[error("SRV {0} says the service is unavailable")]
    ServiceUnavailable(String),
}

impl ResolveError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ResolveError::Dns(_) | ResolveError::NoAddresses(_))
    }
}

/// Resolves server names; holds the DNS resolver and the well-known cache.
#[derive(Debug)]
pub struct ServerResolver {
    dns: Dns,
    well_known: WellKnownResolver,
}

impl ServerResolver {
    pub fn new(dns: Dns, well_known: WellKnownResolver) -> Self {
        Self { dns, well_known }
    }

    pub fn well_known(&self) -> &WellKnownResolver {
        &self.well_known
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Drops what is cached for `server_name`: its `.well-known` answer and
    /// the DNS answers (SRV and A/AAAA; hickory clears its whole cache), so
    /// the next resolution starts afresh. Called on an admin's
    /// `reset_connection` (Synapse #5139: a fixed delegation otherwise
    /// waits up to 48 h for the cache).
    pub fn forget(&self, server_name: &str) {
        if let Ok(ServerName {
            host: Host::Name(host),
            port: None,
        }) = ServerName::parse(server_name)
        {
            self.well_known.forget(&host);
        }
        self.dns.clear_cache();
        debug!(server_name, "forgot cached resolution");
    }

    /// Drops every cached `.well-known` and DNS answer.
    pub fn forget_all(&self) {
        self.well_known.forget_all();
        self.dns.clear_cache();
    }

    /// Resolve `server_name` as the spec says.
    pub async fn resolve(&self, server_name: &str) -> Result<Resolution, ResolveError> {
        let name = ServerName::parse(server_name)?;
        let resolution = match &name.host {
            Host::Ip(_) => self.resolve_name(&name, false).await?,
            Host::Name(_) if name.port.is_some() => self.resolve_name(&name, false).await?,
            Host::Name(host) => {
                let delegated = self.well_known.get(host).await.and_then(|d| {
                        match ServerName::parse(&d) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                warn!(server_name, error = ?e.to_string(), "ignoring well-known delegation");
                                None
                            }
                        }
                    });
                match delegated {
                    Some(delegated) => self.resolve_name(&delegated, true).await?,
                    None => self.resolve_name(&name, false).await?,
                }
            }
        };
        debug!(server_name, ?resolution, "resolved");
        Ok(resolution)
    }

    /// Steps 1, 2 and 4–6 for a server name, or 3.1–3.5 for a delegated one.
    async fn resolve_name(
        &self,
        name: &ServerName,
        delegated: bool,
    ) -> Result<Resolution, ResolveError> {
        let host_header = name.to_string();
        let done = |candidates: Vec<SocketAddr>, step: Step| {
            if candidates.is_empty() {
                return Err(ResolveError::NoAddresses(name.host.to_string()));
            }
            Ok(Resolution {
                candidates,
                host_header: host_header.clone(),
                tls_name: name.host.clone(),
                step,
            })
        };
        let pick = |plain: Step, via: Step| if delegated { via } else { plain };
        let host = match &name.host {
            Host::Ip(ip) => {
                let addr = SocketAddr::new(*ip, name.port.unwrap_or(DEFAULT_PORT));
                return done(vec![addr], pick(Step::IpLiteral, Step::WellKnownIpLiteral));
            }
            Host::Name(host) => host,
        };
        if let Some(port) = name.port {
            let candidates = self.addresses(host, port).await?;
            return done(
                candidates,
                pick(Step::ExplicitPort, Step::WellKnownExplicitPort),
            );
        }
        for (service, step) in [
            ("_matrix-fed._tcp", pick(Step::Srv, Step::WellKnownSrv)),
            (
                "_matrix._tcp",
                pick(Step::LegacySrv, Step::WellKnownLegacySrv),
            ),
        ] {
            let srv_name = format!("{service}.{host}");
            match self.dns.lookup_srv(&srv_name).await? {
                SrvAnswer::None => continue,
                SrvAnswer::Unavailable => return Err(ResolveError::ServiceUnavailable(srv_name)),
                SrvAnswer::Targets(targets) => {
                    let mut candidates = Vec::new();
                    let mut last_err = None;
                    for t in targets {
                        match self.addresses(&t.target, t.port).await {
                            Ok(addrs) => candidates.extend(addrs),
                            Err(e) => {
                                warn!(srv = srv_name, target = ?t.target, error = ?e.to_string(), "SRV target did not resolve");
                                last_err = Some(e);
                            }
                        }
                    }
                    if candidates.is_empty() {
                        if let Some(e) = last_err {
                            return Err(e);
                        }
                    }
                    return done(candidates, step);
                }
            }
        }
        let candidates = self.addresses(host, DEFAULT_PORT).await?;
        done(
            candidates,
            pick(Step::DefaultPort, Step::WellKnownDefaultPort),
        )
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(self
            .dns
            .lookup_ip(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_server_names() {
        let ok = |s: &str| ServerName::parse(s).unwrap();
        assert_eq!(ok("1.2.3.4").host, Host::Ip("1.2.3.4".parse().unwrap()));
        assert_eq!(ok("1.2.3.4:1234").port, Some(1234));
        assert_eq!(
            ok("[1234:5678::abcd]").host,
            Host::Ip("1234:5678::abcd".parse().unwrap())
        );
        assert_eq!(ok("[1234:5678::abcd]:5678").port, Some(5678));
        assert_eq!(ok("domain.com").host, Host::Name("domain.com".into()));
        assert_eq!(ok("domain.com:8448").to_string(), "domain.com:8448");
        assert_eq!(ok("[::1]:80").to_string(), "[::1]:80");
        for bad in [
            "",
            ":80",
            "a.com:",
            "a.com:x",
            "a.com:65536",
            "a.com:123456",
            "::1",
            "[::1",
            "[::1]x",
            "[1.2.3.4]",
            "a_b.com",
            "a com",
            "a.com:80:80",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
