//! The IP range filter the federation client applies to every address a
//! destination resolves to, before connecting (so DNS cannot point Herald at
//! internal services): Synapse's `ip_range_blacklist` (its
//! `DEFAULT_IP_RANGE_BLOCKLIST` when unset, plus `0.0.0.0` and `::` always)
//! and `ip_range_whitelist`, which wins over the blacklist.
//!
//! Every IPv4 range also covers the IPv6 addresses that carry an IPv4
//! address a packet may end up at (the embedded address is checked against
//! the IPv4 ranges):
//!
//! - IPv4-compatible `::a.b.c.d`, IPv4-mapped `::ffff:a.b.c.d` and 6to4
//!   `2002:aabb:ccdd::/48`, as Synapse's `generate_ip_set`;
//! - beyond Synapse, the NAT64 well-known prefix `64:ff9b::a.b.c.d`
//!   (RFC 6052: on a network with NAT64, `[64:ff9b::7f00:1]` reaches
//!   127.0.0.1), SIIT's IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765) and
//!   Teredo `2001:0::/32` (RFC 4380; both its server address and its
//!   de-obfuscated client address are checked).
//!
//! The embedded address is checked rather than the whole prefix blocked, so
//! a public IPv4 server stays reachable from an IPv6-only host through DNS64
//! and NAT64 (RFC 6052 forbids the well-known prefix for non-global IPv4).
//! The NAT64 local-use prefix `64:ff9b:1::/48` (RFC 8215) is blocked
//! outright in the default list instead: where its IPv4 address sits
//! depends on the operator's prefix length, so it cannot be read back, and
//! its translator is on the local network by definition. ISATAP interface
//! identifiers (`…:0:5efe:a.b.c.d` under any prefix) are not decoded: they
//! need an ISATAP router configured on Herald's own host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Synapse 1.163's `DEFAULT_IP_RANGE_BLOCKLIST` (synapse/config/server.py),
/// plus the NAT64 local-use prefix (Herald's addition, see the module
/// comment).
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
    // NAT64 local-use prefix (RFC 8215); not in Synapse's list.
    "64:ff9b:1::/48",
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
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => {
                self.ranges.iter().any(|r| r.contains_v6(v6))
                    || embedded_v4(v6)
                        .into_iter()
                        .flatten()
                        .any(|v4| self.contains_v4(v4))
            }
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|r| r.contains_v4(ip))
    }

    /// Whether an IPv6 range holds `ip` itself (embedded addresses aside).
    fn contains_v6_range(&self, ip: Ipv6Addr) -> bool {
        self.ranges.iter().any(|r| r.contains_v6(ip))
    }
}

/// The NAT64 well-known prefix, `64:ff9b::/96` (RFC 6052): its 96 bits.
const NAT64_WELL_KNOWN_96: u128 = 0x0064_ff9b_0000_0000_0000_0000;
/// Teredo, `2001:0::/32` (RFC 4380).
const TEREDO: u128 = 0x2001_0000;

/// The IPv4 addresses an IPv6 address carries (at most two: Teredo has a
/// server and a client): IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 well-known
/// prefix (`64:ff9b::a.b.c.d`), 6to4 (`2002:aabb:ccdd::/48`) and Teredo
/// (`2001:0:<server>:<flags>:<port>:<client XOR ffff:ffff>`).
fn embedded_v4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    let high96 = bits >> 32;
    if high96 == 0xffff || high96 == 0 || high96 == 0xffff_0000 || high96 == NAT64_WELL_KNOWN_96 {
        return [Some(low), None];
    }
    if bits >> 112 == 0x2002 {
        return [Some(Ipv4Addr::from((bits >> 80) as u32)), None];
    }
    if bits >> 96 == TEREDO {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return [Some(server), Some(client)];
    }
    [None, None]
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
    /// not in the whitelist (Synapse's `_is_ip_blocked`). An IPv6 address
    /// is checked part by part: the address itself against the IPv6 ranges,
    /// and each IPv4 address it carries on its own, so whitelisting one of
    /// a Teredo address's two (its server's, say) does not free the other.
    /// An IPv6 whitelist range holding the whole address frees it all.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let v6 = match ip {
            IpAddr::V4(_) => {
                return !self.blacklist.contains(ip) || self.whitelist.contains(ip);
            }
            IpAddr::V6(v6) => v6,
        };
        if self.whitelist.contains_v6_range(v6) {
            return true;
        }
        let embedded = embedded_v4(v6);
        let itself_blocked = self.blacklist.contains_v6_range(v6)
            && !embedded
                .iter()
                .flatten()
                .any(|v4| self.whitelist.contains_v4(*v4));
        let embedded_blocked = embedded
            .iter()
            .flatten()
            .any(|v4| self.blacklist.contains_v4(*v4) && !self.whitelist.contains_v4(*v4));
        !itself_blocked && !embedded_blocked
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

    /// Every IPv6 form that carries an IPv4 address is checked against the
    /// IPv4 ranges: the loopback, private and link-local forms are refused,
    /// the public ones allowed.
    #[test]
    fn ipv6_forms_that_embed_an_ipv4_address() {
        let f = IpFilter::new::<&str>(None, &[]).unwrap();
        for (form, blocked, allowed) in [
            ("mapped", "::ffff:127.0.0.1", "::ffff:8.8.8.8"),
            ("compatible", "::7f00:1", "::808:808"),
            ("translated", "::ffff:0:7f00:1", "::ffff:0:808:808"),
            ("NAT64", "64:ff9b::7f00:1", "64:ff9b::808:808"),
            ("NAT64 private", "64:ff9b::a00:1", "64:ff9b::101:101"),
            ("NAT64 metadata", "64:ff9b::a9fe:a9fe", "64:ff9b::102:304"),
            ("6to4", "2002:7f00:1::1", "2002:808:808::1"),
            ("6to4 private", "2002:c0a8:101::", "2002:101:101::"),
            // Teredo: server 127.0.0.1, client 8.8.8.8 (stored inverted).
            (
                "Teredo server",
                "2001:0:7f00:1:0:0:f7f7:f7f7",
                "2001:0:808:808:0:0:fefe:fefe",
            ),
            // Teredo: server 8.8.8.8, client 127.0.0.1 (inverted 80ff:fffe).
            (
                "Teredo client",
                "2001:0:808:808:0:0:80ff:fffe",
                "2001:0:101:101::f7f7:f7f7",
            ),
        ] {
            assert!(!f.is_allowed(ip(blocked)), "{form}: {blocked}");
            assert!(f.is_allowed(ip(allowed)), "{form}: {allowed}");
        }
        // The NAT64 local-use prefix is blocked whatever it embeds.
        for local_use in ["64:ff9b:1::808:808", "64:ff9b:1:ffff::1"] {
            assert!(!f.is_allowed(ip(local_use)), "{local_use}");
        }
        // Next to the prefixes, nothing is decoded.
        for plain in ["64:ff9b:2::7f00:1", "2001:1::7f00:1", "2003:7f00:1::1"] {
            assert!(f.is_allowed(ip(plain)), "{plain}");
        }
        // A custom list covers the embedded forms of its IPv4 ranges too,
        // and the whitelist frees them as it frees the IPv4 range.
        let custom = IpFilter::new(Some(&["203.0.113.0/24"]), &[]).unwrap();
        assert!(!custom.is_allowed(ip("64:ff9b::cb00:7101")));
        assert!(custom.is_allowed(ip("64:ff9b::7f00:1")));
        let freed = IpFilter::new(None, &["127.0.0.0/8"]).unwrap();
        assert!(freed.is_allowed(ip("64:ff9b::7f00:1")));
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

    /// A Teredo address carries two IPv4 addresses: whitelisting one (its
    /// server's, 127.0.0.1 here) does not free the other (a blocked client
    /// address); each is checked on its own.
    #[test]
    fn whitelisting_one_teredo_address_does_not_free_the_other() {
        let f = IpFilter::new(None, &["127.0.0.1"]).unwrap();
        // Server 127.0.0.1, client 10.0.0.1 (inverted f5ff:fffe).
        assert!(!f.is_allowed(ip("2001:0:7f00:1:0:0:f5ff:fffe")));
        // Server 10.0.0.1, client 127.0.0.1 (inverted 80ff:fffe).
        assert!(!f.is_allowed(ip("2001:0:a00:1:0:0:80ff:fffe")));
        // Server 127.0.0.1, client 8.8.8.8: the whitelist frees the server.
        assert!(f.is_allowed(ip("2001:0:7f00:1:0:0:f7f7:f7f7")));
        // Both whitelisted: allowed.
        let both = IpFilter::new(None, &["127.0.0.1", "10.0.0.0/8"]).unwrap();
        assert!(both.is_allowed(ip("2001:0:7f00:1:0:0:f5ff:fffe")));
        // An IPv6 range in the whitelist that covers the whole address frees it.
        let whole = IpFilter::new(None, &["2001:0:7f00:1::/64"]).unwrap();
        assert!(whole.is_allowed(ip("2001:0:7f00:1:0:0:f5ff:fffe")));
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
