//! DNS for federation: A/AAAA and SRV look-ups through hickory-resolver, with
//! the nameserver either the system's or one given address (tests run a DNS
//! responder on 127.0.0.1). hickory caches answers for their TTL, which is what
//! Synapse's SRV cache does too.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

/// One SRV record's target, as the DNS gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    /// Target hostname without the trailing dot.
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// What an SRV look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvAnswer {
    /// No such name, or no SRV records: try the next step.
    None,
    /// A single record with target `.`: the service is decidedly unavailable
    /// (RFC 2782).
    Unavailable,
    /// Records in the order they should be tried (priority, then weight).
    Targets(Vec<SrvTarget>),
}

/// A DNS failure other than "no such name / no records"; worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("DNS look-up of {name} failed: {source}")]
pub struct DnsError {
    pub name: String,
    #[source]
    pub source: ResolveError,
}

/// The DNS resolver federation uses.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

fn options() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    // Both families: the caller gets every address and picks.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    opts
}

impl Dns {
    /// The system's resolver configuration (`/etc/resolv.conf`) and hosts file.
    pub fn system() -> Result<Self, ResolveError> {
        let mut builder = TokioResolver::builder_tokio()?;
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Self {
            resolver: builder.build(),
        })
    }

    /// Ask only the DNS server at `nameserver` (UDP, falling back to TCP for
    /// truncated answers); the hosts file is not read.
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(nameserver, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(nameserver, Protocol::Tcp));
        let mut opts = options();
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Self { resolver }
    }

    /// Forgets every cached answer (A/AAAA and SRV), so the next look-ups
    /// ask the nameserver again. hickory's cache has no per-name removal; an
    /// admin's `reset_connection` is rare enough that re-asking for the
    /// other names costs little.
    pub fn clear_cache(&self) {
        self.resolver.clear_cache();
    }

    /// A and AAAA records of `host`. An empty list means the name has no
    /// addresses (NXDOMAIN or no records).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if is_negative(&e) => Ok(Vec::new()),
            Err(source) => Err(DnsError {
                name: host.to_owned(),
                source,
            }),
        }
    }

    /// SRV records of `name` (e.g. `_matrix-fed._tcp.example.org`), sorted
    /// for trying: ascending priority, then weighted random within a priority.
    pub async fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        let lookup = match self.resolver.srv_lookup(fqdn(name)).await {
            Ok(lookup) => lookup,
            Err(e) if is_negative(&e) => return Ok(SrvAnswer::None),
            Err(source) => {
                return Err(DnsError {
                    name: name.to_owned(),
                    source,
                })
            }
        };
        let targets: Vec<SrvTarget> = lookup
            .iter()
            .map(|srv| SrvTarget {
                target: srv.target().to_utf8().trim_end_matches('.').to_owned(),
                port: srv.port(),
                priority: srv.priority(),
                weight: srv.weight(),
            })
            .collect();
        if targets.is_empty() {
            return Ok(SrvAnswer::None);
        }
        if targets.len() == 1 && targets[0].target.is_empty() {
            return Ok(SrvAnswer::Unavailable);
        }
        Ok(SrvAnswer::Targets(sort_srv(
            targets,
            &mut rand::thread_rng(),
        )))
    }
}

/// NXDOMAIN, or NOERROR without records: the name has none. SERVFAIL,
/// timeouts and the like are failures.
fn is_negative(e: &ResolveError) -> bool {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        })
    )
}

/// Names are looked up as absolute names: no search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// RFC 2782 ordering, as Synapse's `_sort_server_list`: by ascending priority;
/// within a priority, repeatedly pick a record with probability proportional
/// to its weight; zero-weight records left over are shuffled onto the end.
pub fn sort_srv(records: Vec<SrvTarget>, rng: &mut impl rand::Rng) -> Vec<SrvTarget> {
    use rand::seq::SliceRandom;
    let mut priorities: Vec<u16> = records.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut out = Vec::with_capacity(records.len());
    for priority in priorities {
        let mut group: Vec<SrvTarget> = records
            .iter()
            .filter(|r| r.priority == priority)
            .cloned()
            .collect();
        let mut total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
        while !group.is_empty() && total > 0 {
            let mut target = rng.gen_range(1..=total);
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                let w = u32::from(r.weight);
                if target <= w {
                    chosen = i;
                    break;
                }
                target -= w;
            }
            let r = group.remove(chosen);
            total -= u32::from(r.weight);
            out.push(r);
        }
        group.shuffle(rng);
        out.extend(group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(target: &str, priority: u16, weight: u16) -> SrvTarget {
        SrvTarget {
            target: target.into(),
            port: 8448,
            priority,
            weight,
        }
    }

    #[test]
    fn srv_sorted_by_priority_then_weight() {
        let mut rng = rand::thread_rng();
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let sorted = sort_srv(
                vec![t("c", 20, 0), t("a", 10, 90), t("b", 10, 10), t("d", 5, 0)],
                &mut rng,
            );
            let names: Vec<&str> = sorted.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(names[0], "d");
            assert_eq!(names[3], "c");
            if names[1] == "a" {
                heavy_first += 1;
            }
        }
        // Weight 90 of 100: first about 90% of the time.
        assert!((1600..=1990).contains(&heavy_first), "{heavy_first}");
    }
}
