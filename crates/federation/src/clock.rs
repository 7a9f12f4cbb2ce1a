//! The wall clock every crate above reads, in milliseconds since the Unix
//! epoch (Synapse's timestamps), and [`Clock`], the injectable form the
//! retry limiter and the sender take so tests can drive time by hand.

use std::sync::Arc;

/// Milliseconds since the epoch, from wherever the caller wants them.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The wall clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}
