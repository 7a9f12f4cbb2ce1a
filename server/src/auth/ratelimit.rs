//! Login rate limits: Synapse's `rc_login` (`address`, `account`,
//! `failed_attempts`, with its names, meanings and defaults) and Herald's
//! `global_failed_attempts`, as token buckets in memory.
//!
//! What each limit counts, checked in this order by `POST /login`:
//! 1. `address`: every login attempt from a client address (Synapse's
//!    `_address_ratelimiter`). It is spent first, but given back when the
//!    attempt is refused for a reason that is not the client's: the global
//!    limit below, or every password thread busy ([`LoginLimits::refund_attempt`]).
//!    The client address is the TCP peer's, or with `x_forwarded` the first
//!    `X-Forwarded-For` value (see `http::login`); an IPv6 address counts as
//!    its /64 ([`address_key`]), since one host is usually given a whole /64.
//! 2. `failed_attempts`: failed logins of an account, checked (not spent)
//!    before the password is verified and spent when it is wrong (Synapse's
//!    `_failed_login_attempts_ratelimiter`, keyed by the user ID).
//! 3. `global_failed_attempts` (Herald's own): failed logins of any account
//!    from any address, checked and spent as `failed_attempts`. It bounds
//!    the password guessing (and the Argon2 work) of an attacker with many
//!    addresses, whom the per-address limit never slows.
//! 4. `account`: successful logins of an account, spent after the password
//!    matched (Synapse's `_account_ratelimiter`).
//!
//! Where Herald departs from Synapse: in Synapse, three wrong passwords for
//! `admin` sent from anywhere make the right one answer 429 from everywhere,
//! so anyone who can reach the login route can lock the admin out. Here the
//! account's `failed_attempts` limit holds back only addresses that have
//! failed a login themselves recently (any account; "recently" = their own
//! bucket of failures, with the `failed_attempts` settings, is not full). An
//! address that has not failed still has its password checked: right, it
//! logs in; wrong, it has now failed and is held back like the others. The
//! price is that a locked account still takes one guess from each fresh
//! address; `address` (5, then one per 5.5 minutes each) and
//! `global_failed_attempts` bound those. A global flood beyond
//! `global_failed_attempts` does hold back every new login until it ebbs
//! (tokens already issued keep working): that limit is the ceiling on what
//! the whole server lets attackers try.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::{RateLimit, RcLogin};

/// Buckets that fill at `per_second` up to `burst_count`; a key is limited
/// while its bucket holds less than one action.
pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<Buckets>,
}

/// Tokens and when they were counted, per key; and the size at which full
/// buckets are next forgotten.
struct Buckets {
    map: HashMap<String, (f64, Instant)>,
    sweep_at: usize,
}

/// Buckets kept before full ones are forgotten.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    fn level(&self, stored: Option<&(f64, Instant)>, now: Instant) -> f64 {
        match stored {
            None => self.limit.burst_count,
            Some(&(tokens, at)) => (tokens
                + now.duration_since(at).as_secs_f64() * self.limit.per_second)
                .min(self.limit.burst_count),
        }
    }

    fn wait_ms(&self, tokens: f64) -> Option<u64> {
        (tokens < 1.0).then(|| (((1.0 - tokens) / self.limit.per_second) * 1000.0).ceil() as u64)
    }

    /// `Some(ms until allowed)` if `key` may not act now.
    pub fn check(&self, key: &str) -> Option<u64> {
        let buckets = self.buckets.lock();
        self.wait_ms(self.level(buckets.map.get(key), Instant::now()))
    }

    /// True while `key` has spent any of its burst (its bucket is not full).
    pub fn has_acted(&self, key: &str) -> bool {
        let buckets = self.buckets.lock();
        self.level(buckets.map.get(key), Instant::now()) < self.limit.burst_count
    }

    /// Spends one action of `key`.
    pub fn record(&self, key: &str) {
        let mut buckets = self.buckets.lock();
        self.spend(&mut buckets, key, Instant::now());
    }

    /// Gives back one action of `key` (spent by [`Limiter::acquire`] for an
    /// action that then did not happen), up to the burst.
    pub fn refund(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if let Some(stored) = buckets.map.get(key).copied() {
            let tokens = (self.level(Some(&stored), now) + 1.0).min(self.limit.burst_count);
            buckets.map.insert(key.to_owned(), (tokens, now));
        }
    }

    /// Spends one action of `key` if it may act now, else `Err(ms until
    /// allowed)` and nothing is spent (Synapse's `ratelimit(update=True)`).
    pub fn acquire(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if let Some(wait) = self.wait_ms(self.level(buckets.map.get(key), now)) {
            return Err(wait);
        }
        self.spend(&mut buckets, key, now);
        Ok(())
    }

    fn spend(&self, buckets: &mut Buckets, key: &str, now: Instant) {
        let tokens = self.level(buckets.map.get(key), now);
        buckets
            .map
            .insert(key.to_owned(), ((tokens - 1.0).max(0.0), now));
        // Keep memory bounded: forget full buckets once the map grows, and
        // sweep again only when it has doubled, so that many keys whose
        // buckets are still refilling do not make every insert a sweep.
        if buckets.map.len() > buckets.sweep_at {
            let limit = self.limit;
            buckets.map.retain(|_, (t, at)| {
                *t + now.duration_since(*at).as_secs_f64() * limit.per_second < limit.burst_count
            });
            buckets.sweep_at = (buckets.map.len() * 2).max(SWEEP_AT);
        }
    }
}

/// The key of the one global bucket.
const EVERYONE: &str = "";

/// The bucket key of a client address: an IPv4 address as itself (also
/// when written IPv4-mapped, `::ffff:a.b.c.d`), an IPv6 address as its /64
/// (`2001:db8:1:2::/64`): a host is commonly given a whole /64, so counting
/// each of its addresses apart would give it unlimited fresh ones.
pub fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Every login limit of the server; see the module comment for the order
/// and for what each counts.
pub struct LoginLimits {
    address: Limiter,
    account: Limiter,
    failed_attempts: Limiter,
    /// Failed logins per address, with `failed_attempts`' settings: only to
    /// tell addresses that failed from those that did not.
    failed_by_address: Limiter,
    global_failed_attempts: Limiter,
}

impl LoginLimits {
    pub fn new(rc: &RcLogin) -> LoginLimits {
        LoginLimits {
            address: Limiter::new(rc.address),
            account: Limiter::new(rc.account),
            failed_attempts: Limiter::new(rc.failed_attempts),
            failed_by_address: Limiter::new(rc.failed_attempts),
            global_failed_attempts: Limiter::new(rc.global_failed_attempts),
        }
    }

    /// Before the password is verified: `Err(ms until allowed)` if this
    /// attempt must be refused. Spends one of the address's attempts, unless
    /// the global limit refuses it; if the attempt then does not reach the
    /// password check (every thread busy), give it back with
    /// [`LoginLimits::refund_attempt`].
    pub fn before_verify(&self, account: &str, address: IpAddr) -> Result<(), u64> {
        // Not the client's fault: checked first, so that it spends nothing.
        if let Some(wait) = self.global_failed_attempts.check(EVERYONE) {
            return Err(wait);
        }
        let address = address_key(address);
        self.address.acquire(&address)?;
        if let Some(wait) = self.failed_attempts.check(account) {
            if self.failed_by_address.has_acted(&address) {
                return Err(wait);
            }
        }
        Ok(())
    }

    /// The attempt `before_verify` let through was refused before its
    /// password was checked, for a reason not the client's: its address
    /// gets the attempt back.
    pub fn refund_attempt(&self, address: IpAddr) {
        self.address.refund(&address_key(address));
    }

    /// The password was wrong (or the user does not exist).
    pub fn failed(&self, account: &str, address: IpAddr) {
        self.failed_attempts.record(account);
        self.failed_by_address.record(&address_key(address));
        self.global_failed_attempts.record(EVERYONE);
    }

    /// The password matched: `Err(ms until allowed)` if the account has
    /// logged in too often (Synapse's `rc_login.account`).
    pub fn succeeded(&self, account: &str) -> Result<(), u64> {
        self.account.acquire(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_a_wait() {
        let l = Limiter::new(RateLimit {
            per_second: 0.5,
            burst_count: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(l.check("a"), None);
            l.record("a");
        }
        let wait = l.check("a").expect("limited after the burst");
        assert!(wait > 1000 && wait <= 2000, "{wait}");
        assert_eq!(l.check("b"), None, "other keys are independent");
        assert!(l.has_acted("a") && !l.has_acted("b"));
        assert!(l.acquire("b").is_ok());
        assert!(l.has_acted("b"));
        let before = l.check("a");
        assert!(l.acquire("a").is_err());
        assert!(l.check("a") <= before, "a refused acquire spends nothing");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slow(burst_count: f64) -> RateLimit {
        RateLimit {
            per_second: 0.001,
            burst_count,
        }
    }

    #[test]
    fn a_locked_account_still_lets_a_clean_address_try() {
        let limits = LoginLimits::new(&RcLogin {
            address: slow(100.0),
            account: slow(100.0),
            failed_attempts: slow(3.0),
            global_failed_attempts: slow(100.0),
        });
        for _ in 0..3 {
            assert!(limits.before_verify("admin", ip("127.0.0.2")).is_ok());
            limits.failed("admin", ip("127.0.0.2"));
        }
        assert!(limits.before_verify("admin", ip("127.0.0.2")).is_err());
        assert!(limits.before_verify("admin", ip("127.0.0.3")).is_ok());
        // Once it fails, the new address is held back too.
        limits.failed("admin", ip("127.0.0.3"));
        assert!(limits.before_verify("admin", ip("127.0.0.3")).is_err());
        // Other accounts are not locked for the failing address.
        assert!(limits.before_verify("alice", ip("127.0.0.2")).is_ok());
    }

    #[test]
    fn global_and_address_and_account_limits() {
        let limits = LoginLimits::new(&RcLogin {
            address: slow(2.0),
            account: slow(1.0),
            failed_attempts: slow(100.0),
            global_failed_attempts: slow(3.0),
        });
        // `address` counts every attempt, failed or not.
        assert!(limits.before_verify("a", ip("127.0.0.1")).is_ok());
        assert!(limits.before_verify("b", ip("127.0.0.1")).is_ok());
        assert!(limits.before_verify("c", ip("127.0.0.1")).is_err());
        // `account` counts successful logins.
        assert!(limits.succeeded("a").is_ok());
        assert!(limits.succeeded("a").is_err());
        assert!(limits.succeeded("b").is_ok());
        // Three failures anywhere fill the global limit for everyone.
        for i in 2..5 {
            let address = ip(&format!("127.0.0.{i}"));
            assert!(limits.before_verify(&format!("u{i}"), address).is_ok());
            limits.failed(&format!("u{i}"), address);
        }
        assert!(limits.before_verify("admin", ip("127.0.0.9")).is_err());
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64() {
        // Keys only: no packet is sent (documentation prefixes).
        assert_eq!(address_key(ip("192.0.2.7")), "192.0.2.7");
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(address_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("::1")), "::/64");
        let limits = LoginLimits::new(&RcLogin {
            address: slow(2.0),
            account: slow(100.0),
            failed_attempts: slow(1.0),
            global_failed_attempts: slow(100.0),
        });
        // Two attempts from two addresses of one /64 spend its allowance.
        assert!(limits.before_verify("a", ip("2001:db8:1:2::1")).is_ok());
        assert!(limits.before_verify("b", ip("2001:db8:1:2::2")).is_ok());
        assert!(limits
            .before_verify("c", ip("2001:db8:1:2:ffff::3"))
            .is_err());
        assert!(limits.before_verify("c", ip("2001:db8:1:3::1")).is_ok());
        // A failure from one address of the /64 holds back the others.
        limits.failed("admin", ip("2001:db8:1:3::1"));
        assert!(limits
            .before_verify("admin", ip("2001:db8:1:3::9"))
            .is_err());
    }

    #[test]
    fn a_refusal_that_is_not_the_clients_fault_keeps_its_allowance() {
        let limits = LoginLimits::new(&RcLogin {
            address: slow(2.0),
            account: slow(100.0),
            failed_attempts: slow(100.0),
            global_failed_attempts: slow(1.0),
        });
        let client = ip("127.0.0.5");
        // The global limit refuses: the client's address spends nothing.
        assert!(limits.before_verify("u1", ip("127.0.0.1")).is_ok());
        limits.failed("u1", ip("127.0.0.1"));
        for _ in 0..5 {
            assert!(limits.before_verify("admin", client).is_err());
        }
        assert!(!limits.address.has_acted(&address_key(client)));
        // Let through, then refused as busy: the attempt is given back.
        let limits = LoginLimits::new(&RcLogin {
            address: slow(1.0),
            account: slow(100.0),
            failed_attempts: slow(100.0),
            global_failed_attempts: slow(100.0),
        });
        for _ in 0..5 {
            assert!(limits.before_verify("admin", client).is_ok());
            limits.refund_attempt(client);
        }
        assert!(!limits.address.has_acted(&address_key(client)));
        assert!(limits.before_verify("admin", client).is_ok());
        assert!(limits.before_verify("admin", client).is_err());
    }
}
