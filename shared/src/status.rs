//! A destination's health as an admin reads it, derived from the five
//! columns of the admin API, and the counts per status that Herald's summary
//! endpoint (`GET /_herald/admin/v1/federation/summary`) returns.

use serde::{Deserialize, Serialize};

use crate::Destination;

/// The derived status of a destination at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationStatus {
    /// Not in backoff and something was delivered (or nothing failed).
    Healthy,
    /// In backoff; the next retry is in the future.
    BackingOff,
    /// In backoff, but the backoff has ended: the next attempt is due.
    RetryDue,
    /// In backoff and nothing was ever delivered to it.
    NeverReached,
    /// Never contacted: no delivery, no failure.
    Unknown,
}

impl DestinationStatus {
    pub const ALL: [DestinationStatus; 5] = [
        DestinationStatus::Healthy,
        DestinationStatus::BackingOff,
        DestinationStatus::RetryDue,
        DestinationStatus::NeverReached,
        DestinationStatus::Unknown,
    ];

    /// The status of a row at `now_ms` (milliseconds since the epoch).
    pub fn of(d: &Destination, now_ms: i64) -> DestinationStatus {
        DestinationStatus::from_columns(
            d.retry_last_ts,
            d.retry_interval,
            d.failure_ts,
            d.last_successful_stream_ordering,
            now_ms,
        )
    }

    /// The same from the raw columns (NULL timings as 0).
    pub fn from_columns(
        retry_last_ts: i64,
        retry_interval: i64,
        failure_ts: Option<i64>,
        last_successful_stream_ordering: Option<i64>,
        now_ms: i64,
    ) -> DestinationStatus {
        let in_backoff = retry_last_ts != 0;
        let next_retry = retry_last_ts.saturating_add(retry_interval);
        match (in_backoff, last_successful_stream_ordering) {
            (false, None) if failure_ts.is_none() => DestinationStatus::Unknown,
            (false, _) => DestinationStatus::Healthy,
            (true, None) => DestinationStatus::NeverReached,
            (true, Some(_)) if next_retry > now_ms => DestinationStatus::BackingOff,
            (true, Some(_)) => DestinationStatus::RetryDue,
        }
    }

    /// Whether the destination is in backoff (a failure recorded and not
    /// cleared): the states in which `reset_connection` has work to do.
    pub fn in_backoff(self) -> bool {
        matches!(
            self,
            DestinationStatus::BackingOff
                | DestinationStatus::RetryDue
                | DestinationStatus::NeverReached
        )
    }

    /// The name shown to admins.
    pub fn label(self) -> &'static str {
        match self {
            DestinationStatus::Healthy => "healthy",
            DestinationStatus::BackingOff => "backing off",
            DestinationStatus::RetryDue => "retry due",
            DestinationStatus::NeverReached => "never reached",
            DestinationStatus::Unknown => "unknown",
        }
    }

    /// The identifier used in JSON and CSS classes.
    pub fn key(self) -> &'static str {
        match self {
            DestinationStatus::Healthy => "healthy",
            DestinationStatus::BackingOff => "backing_off",
            DestinationStatus::RetryDue => "retry_due",
            DestinationStatus::NeverReached => "never_reached",
            DestinationStatus::Unknown => "unknown",
        }
    }
}

/// When the destination will be tried again (`retry_last_ts +
/// retry_interval`), if it is in backoff.
pub fn next_retry_ts(d: &Destination) -> Option<i64> {
    (d.retry_last_ts != 0).then(|| d.retry_last_ts.saturating_add(d.retry_interval))
}

/// `GET /_herald/admin/v1/federation/summary`: destinations per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationSummary {
    pub total: u64,
    pub healthy: u64,
    pub backing_off: u64,
    pub retry_due: u64,
    pub never_reached: u64,
    pub unknown: u64,
    /// The time the statuses were computed for (ms since the epoch).
    pub now_ts: i64,
}

impl FederationSummary {
    pub fn add(&mut self, status: DestinationStatus) {
        self.total += 1;
        *self.count_mut(status) += 1;
    }

    pub fn count(&self, status: DestinationStatus) -> u64 {
        match status {
            DestinationStatus::Healthy => self.healthy,
            DestinationStatus::BackingOff => self.backing_off,
            DestinationStatus::RetryDue => self.retry_due,
            DestinationStatus::NeverReached => self.never_reached,
            DestinationStatus::Unknown => self.unknown,
        }
    }

    fn count_mut(&mut self, status: DestinationStatus) -> &mut u64 {
        match status {
            DestinationStatus::Healthy => &mut self.healthy,
            DestinationStatus::BackingOff => &mut self.backing_off,
            DestinationStatus::RetryDue => &mut self.retry_due,
            DestinationStatus::NeverReached => &mut self.never_reached,
            DestinationStatus::Unknown => &mut self.unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(last: i64, interval: i64, failure: Option<i64>, ok: Option<i64>) -> Destination {
        Destination {
            destination: "x.org".into(),
            retry_last_ts: last,
            retry_interval: interval,
            failure_ts: failure,
            last_successful_stream_ordering: ok,
        }
    }

    #[test]
    fn every_status() {
        let now = 1_000_000;
        assert_eq!(
            DestinationStatus::of(&d(0, 0, None, None), now),
            DestinationStatus::Unknown
        );
        assert_eq!(
            DestinationStatus::of(&d(0, 0, None, Some(5)), now),
            DestinationStatus::Healthy
        );
        // Reset by an admin after failing: not in backoff any more.
        assert_eq!(
            DestinationStatus::of(&d(0, 0, Some(9), None), now),
            DestinationStatus::Healthy
        );
        assert_eq!(
            DestinationStatus::of(&d(now - 10, 600_000, Some(1), Some(5)), now),
            DestinationStatus::BackingOff
        );
        assert_eq!(
            DestinationStatus::of(&d(now - 10, 5, Some(1), Some(5)), now),
            DestinationStatus::RetryDue
        );
        assert_eq!(
            DestinationStatus::of(&d(now - 10, 600_000, Some(1), None), now),
            DestinationStatus::NeverReached
        );
        assert_eq!(next_retry_ts(&d(100, 50, None, None)), Some(150));
        let resettable: Vec<_> = DestinationStatus::ALL
            .into_iter()
            .filter(|s| s.in_backoff())
            .collect();
        assert_eq!(
            resettable,
            [
                DestinationStatus::BackingOff,
                DestinationStatus::RetryDue,
                DestinationStatus::NeverReached
            ]
        );
        assert_eq!(next_retry_ts(&d(0, 50, None, None)), None);
    }

    #[test]
    fn summary_counts() {
        let mut s = FederationSummary::default();
        s.add(DestinationStatus::Healthy);
        s.add(DestinationStatus::Healthy);
        s.add(DestinationStatus::Unknown);
        assert_eq!(
            (s.total, s.count(DestinationStatus::Healthy), s.unknown),
            (3, 2, 1)
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["backing_off"], 0);
        assert_eq!(
            serde_json::to_value(DestinationStatus::NeverReached).unwrap(),
            "never_reached"
        );
    }
}
