//! The IP range filter the federation client applies to every address a
//! destination resolves to, before connecting (so DNS cannot point Herald at
//! internal services): Synapse's `ip_range_blacklist` (its
//! `DEFAULT_IP_RANGE_BLOCKLIST` when unset, plus `0.0.0.0` and `::` always)
//! and `ip_range_whitelist`, which wins over the blacklist.
//!
//! As Synapse's `generate_ip_set`, every IPv4 range also covers its
//! IPv4-compatible (`::a.b.c.d`), IPv4-mapped (`::ffff:a.b.c.d`) and 6to4
//! (`2002:aabb:ccdd::/48`) IPv6 forms.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Synapse 1.163's `DEFAULT_IP_RANGE_BLOCKLIST` (synapse/config/server.py).
pub const DEFAULT_IP_RANGE_BLACKLIST: &[&str] = &[
    // Localhost.
    "127.0.0.0/8",
    // Private networks.
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    // Carrier grade NAT.
    "100.64.0.0/10",
    // Address registry.
    "192.0.0.0/24",
    // Link-local networks.
    "169.254.0.0/16",
    // Formerly used for 6to4 relay.
    "192.88.99.0/24",
    // Testing networks.
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    // Multicast.
    "224.0.0.0/4",
    // Localhost.
    "::1/128",
    // Link-local addresses.
    "fe80::/10",
    // Unique local addresses.
    "fc00::/7",
    // Testing networks.
    "2001:db8::/32",
    // Multicast.
    "ff00::/8",
    // Site-local addresses.
    "fec0::/10",
];

/// Always blocked, whatever `ip_range_blacklist` says (as Synapse).
const ALWAYS_BLOCKED: &[&str] = &["0.0.0.0", "::"];

/// One CIDR range: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRange {
    V4(u32, u8),
    V6(u128, u8),
}

/// A range that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range such as 10.0.0.0/8 or fc00::/7")]
pub struct IpRangeError(pub String);

impl IpRange {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or `v6/n`. Host bits
    /// beyond the prefix are ignored (as netaddr's `IPNetwork`).
    pub fn parse(text: &str) -> Result<IpRange, IpRangeError> {
        let err = || IpRangeError(text.to_owned());
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                (a, Some(p.parse::<u8>().map_err(|_| err())?))
            }
            None => (trimmed, None),
        };
        match addr.parse::<IpAddr>().map_err(|_| err())? {
            IpAddr::V4(v4) => {
                let len = prefix.unwrap_or(32);
                if len > 32 {
                    return Err(err());
                }
                Ok(IpRange::V4(u32::from(v4) & mask32(len), len))
            }
            IpAddr::V6(v6) => {
                let len = prefix.unwrap_or(128);
                if len > 128 {
                    return Err(err());
                }
                Ok(IpRange::V6(u128::from(v6) & mask128(len), len))
            }
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        match *self {
            IpRange::V4(net, len) => u32::from(ip) & mask32(len) == net,
            IpRange::V6(..) => false,
        }
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        match *self {
            IpRange::V6(net, len) => u128::from(ip) & mask128(len) == net,
            IpRange::V4(..) => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpRange::V4(net, len) => write!(f, "{}/{len}", Ipv4Addr::from(net)),
            IpRange::V6(net, len) => write!(f, "{}/{len}", Ipv6Addr::from(net)),
        }
    }
}

fn mask32(len: u8) -> u32 {
    match len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n)),
    }
}

fn mask128(len: u8) -> u128 {
    match len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n)),
    }
}

/// A set of ranges with Synapse's IPv4-in-IPv6 semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    ranges: Vec<IpRange>,
}

impl IpSet {
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<IpSet, IpRangeError> {
        let ranges = ranges
            .iter()
            .map(|r| IpRange::parse(r.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(IpSet { ranges })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ranges.iter().any(|r| r.contains_v4(v4)),
            IpAddr::V6(v6) => {
                self.ranges.iter().any(|r| r.contains_v6(v6))
                    || embedded_v4(v6)
                        .is_some_and(|v4| self.ranges.iter().any(|r| r.contains_v4(v4)))
            }
        }
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or 6to4
/// (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if bits >> 32 == 0xffff || bits >> 32 == 0 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// `ip_range_blacklist` with `ip_range_whitelist` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilter {
    blacklist: IpSet,
    whitelist: IpSet,
}

/// Which config key held a bad range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {error}")]
pub struct IpFilterError {
    pub key: &'static str,
    pub error: IpRangeError,
}

impl IpFilter {
    /// `blacklist` `None` means Synapse's default list.
    pub fn new<S: AsRef<str>>(
        blacklist: Option<&[S]>,
        whitelist: &[S],
    ) -> Result<IpFilter, IpFilterError> {
        let mut black = match blacklist {
            Some(list) => IpSet::parse(list),
            None => IpSet::parse(DEFAULT_IP_RANGE_BLACKLIST),
        }
        .map_err(|error| IpFilterError {
            key: "ip_range_blacklist",
            error,
        })?;
        black
            .ranges
            .extend(ALWAYS_BLOCKED.iter().filter_map(|r| IpRange::parse(r).ok()));
        let white = IpSet::parse(whitelist).map_err(|error| IpFilterError {
            key: "ip_range_whitelist",
            error,
        })?;
        Ok(IpFilter {
            blacklist: black,
            whitelist: white,
        })
    }

    /// Whether Herald may connect to `ip`: blocked when in the blacklist and
    /// not in the whitelist (Synapse's `_is_ip_blocked`).
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        !self.blacklist.contains(ip) || self.whitelist.contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_blacklist_blocks_private_and_reserved_ranges() {
        let f = IpFilter::new::<&str>(None, &[]).unwrap();
        for blocked in [
            "127.0.0.1",
            "127.255.1.2",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "239.1.1.1",
            "0.0.0.0",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(!f.is_allowed(ip(blocked)), "{blocked}");
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(f.is_allowed(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn whitelist_wins_and_custom_blacklist_replaces_the_default() {
        let f = IpFilter::new(None, &["127.0.0.0/8"]).unwrap();
        assert!(f.is_allowed(ip("127.0.0.1")));
        assert!(f.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(!f.is_allowed(ip("10.0.0.1")));
        let f = IpFilter::new(Some(&["8.8.8.0/24"]), &[]).unwrap();
        assert!(f.is_allowed(ip("127.0.0.1")));
        assert!(!f.is_allowed(ip("8.8.8.8")));
        // 0.0.0.0 and :: stay blocked whatever the list.
        assert!(!f.is_allowed(ip("0.0.0.0")));
        assert!(!f.is_allowed(ip("::")));
        let f = IpFilter::new::<&str>(Some(&[]), &[]).unwrap();
        assert!(f.is_allowed(ip("10.0.0.1")));
    }

    #[test]
    fn bad_ranges_name_the_key() {
        let e = IpFilter::new(Some(&["10.0.0.0/33"]), &[]).unwrap_err();
        assert_eq!(e.key, "ip_range_blacklist");
        let e = IpFilter::new(None, &["localhost"]).unwrap_err();
        assert_eq!(e.key, "ip_range_whitelist");
        assert!(e.to_string().contains("localhost"));
        for bad in [
            "",
            "1.2.3.4/",
            "1.2.3.4/x",
            "::/129",
            "1.2.3/8",
            "1.2.3.4/-1",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            IpRange::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(IpRange::parse("::1").unwrap().to_string(), "::1/128");
    }
}
