//! Per-destination backoff, as Synapse's retry limiter
//! (`synapse/util/retryutils.py`): before a request, a destination still in
//! backoff (`retry_last_ts + retry_interval` in the future) is not contacted
//! unless the caller ignores backoff; after it, success clears the backoff,
//! a failure starts it at `destination_min_retry_interval` or multiplies it
//! by `destination_retry_multiplier` × a random 0.8–1.4 up to
//! `destination_max_retry_interval`, and answers that say nothing about the
//! server's health (4xx but 401 and 429, and 404 unless asked) change
//! nothing. A failure recorded after an admin's reset (the try began
//! before it) starts a fresh backoff instead of undoing the reset.
//! Timings live wherever a [`BackoffStore`] keeps them (Herald's
//! store puts them in `destinations`); an admin's `reset_connection` wakes
//! whoever waits on [`RetryLimiter::reset_signal`].

use std::sync::Arc;
use std::time::Duration;

use herald_shared::Failure;
use rand::Rng;
use tokio::sync::broadcast;

use crate::clock::{system_clock, Clock};

/// A destination's backoff, as the retry limiter reads and writes it (the
/// three columns of Synapse's `destinations` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryTimings {
    /// When it started failing (ms since the epoch).
    pub failure_ts: Option<i64>,
    /// The last try that failed; 0 when not in backoff.
    pub retry_last_ts: i64,
    /// How long after `retry_last_ts` to try again (ms); 0 when not in backoff.
    pub retry_interval: i64,
}

/// Why the backoff store failed (its own error, boxed: the client only
/// reports it).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(pub Box<dyn std::error::Error + Send + Sync>);

/// A boxed future, as [`BackoffStore`]'s methods return them.
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Where the retry timings of every destination are kept, and who announces
/// an admin's reset. The federation client knows only this trait, never the
/// database behind it.
pub trait BackoffStore: Send + Sync + 'static {
    /// The stored timings of `destination` (`None` when unknown).
    fn retry_timings<'a>(&'a self, destination: &'a str) -> StoreFuture<'a, Option<RetryTimings>>;
    /// Stores `timings` for `destination` (creating the row if needed).
    fn set_retry_timings<'a>(
        &'a self,
        destination: &'a str,
        timings: RetryTimings,
    ) -> StoreFuture<'a, ()>;
    /// Names of destinations whose backoff an admin reset, told after the commit.
    fn subscribe_resets(&self) -> broadcast::Receiver<Arc<str>>;
    /// Keeps why a request to `destination` failed (its last error); an
    /// `outage` failure (one that counts against its backoff) also opens or
    /// extends its outage in its history. Stores that keep no history
    /// ignore it.
    fn record_failure<'a>(
        &'a self,
        _destination: &'a str,
        _failure: &'a Failure,
        _outage: bool,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    /// A request to `destination` succeeded: ends its open outage, if any.
    /// Called for every success, so it must be cheap when none is open.
    fn record_success<'a>(&'a self, _destination: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// How backoff grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub min_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
}

impl BackoffPolicy {
    /// The interval after one more failure, given the current one and a
    /// jitter factor in 0.8..1.4.
    pub fn next_interval(&self, current_ms: i64, jitter: f64) -> i64 {
        let max = duration_ms(self.max_interval);
        if current_ms <= 0 {
            return duration_ms(self.min_interval).min(max);
        }
        let grown = current_ms as f64 * self.multiplier * jitter;
        if grown >= max as f64 {
            max
        } else {
            grown as i64
        }
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .min(1 << 62)
}

/// What a request's answer means for the destination's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered 2xx: clear the backoff.
    Success,
    /// It could not be reached, or answered 5xx, 401 or 429 (or 404 when
    /// the caller backs off on 404): back off more.
    Failure,
    /// Another 4xx: the server is up, nothing changes.
    NotCounted,
}

impl Outcome {
    /// Synapse's rule for an HTTP status.
    pub fn of_status(status: u16, backoff_on_404: bool) -> Outcome {
        match status {
            200..=299 => Outcome::Success,
            401 | 429 => Outcome::Failure,
            404 if backoff_on_404 => Outcome::Failure,
            400..=499 => Outcome::NotCounted,
            _ => Outcome::Failure,
        }
    }
}

/// Why a request may not go ahead, or its outcome was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BackoffError {
    #[error(
        "not retrying {destination}: last tried at {retry_last_ts}, next try {retry_interval} ms later"
    )]
    NotRetrying {
        destination: String,
        retry_last_ts: i64,
        retry_interval: i64,
    },
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The backoff of one destination as read before a request, handed back
/// with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    pub retry: RetryTimings,
    /// False when the caller ignored backoff: a failure then leaves the
    /// backoff as it was (Synapse's `backoff_on_failure`).
    pub backoff_on_failure: bool,
}

/// The retry limiter of every destination.
#[derive(Clone)]
pub struct RetryLimiter {
    store: Arc<dyn BackoffStore>,
    policy: BackoffPolicy,
    clock: Clock,
}

impl RetryLimiter {
    pub fn new(store: impl BackoffStore, policy: BackoffPolicy) -> RetryLimiter {
        RetryLimiter::with_clock(store, policy, system_clock())
    }

    /// The same with a clock in ms since the epoch (tests).
    pub fn with_clock(
        store: impl BackoffStore,
        policy: BackoffPolicy,
        clock: Clock,
    ) -> RetryLimiter {
        RetryLimiter {
            store: Arc::new(store),
            policy,
            clock,
        }
    }

    /// Whether a request to `destination` may go ahead now.
    pub async fn check(
        &self,
        destination: &str,
        ignore_backoff: bool,
    ) -> Result<Timings, BackoffError> {
        let retry = self
            .store
            .retry_timings(destination)
            .await?
            .unwrap_or_default();
        let next = retry.retry_last_ts.saturating_add(retry.retry_interval);
        if !ignore_backoff && retry.retry_last_ts != 0 && next > (self.clock)() {
            return Err(BackoffError::NotRetrying {
                destination: destination.to_owned(),
                retry_last_ts: retry.retry_last_ts,
                retry_interval: retry.retry_interval,
            });
        }
        Ok(Timings {
            retry,
            backoff_on_failure: !ignore_backoff,
        })
    }

    /// Stores what a request's outcome does to the backoff read by
    /// [`check`](Self::check).
    ///
    /// A failure may come long after the check (up to `client_timeout` for
    /// the body). When the destination was backing off and its backoff has
    /// been cleared meanwhile (an admin's `reset_connection`, or another
    /// request's success), the failure is counted from the cleared timings:
    /// a fresh backoff at `min_interval`, as a failure right after a reset
    /// starts one in Synapse, rather than one grown from the timings read
    /// before the reset (which would undo it). Synapse grows it from the
    /// timings its limiter read on entry, reset or not.
    pub async fn record(
        &self,
        destination: &str,
        mut timings: Timings,
        outcome: Outcome,
    ) -> Result<(), BackoffError> {
        if outcome == Outcome::Failure
            && timings.backoff_on_failure
            && timings.retry.retry_interval != 0
        {
            let now = self
                .store
                .retry_timings(destination)
                .await?
                .unwrap_or_default();
            if now.retry_interval == 0 {
                timings.retry = now;
            }
        }
        let jitter = rand::thread_rng().gen_range(0.8..1.4);
        if let Some(next) = next_timings(&self.policy, timings, outcome, (self.clock)(), jitter) {
            self.store.set_retry_timings(destination, next).await?;
        }
        Ok(())
    }

    /// Keeps why a request to `destination` failed (see
    /// [`BackoffStore::record_failure`]).
    pub async fn failed(
        &self,
        destination: &str,
        failure: &Failure,
        outage: bool,
    ) -> Result<(), BackoffError> {
        Ok(self
            .store
            .record_failure(destination, failure, outage)
            .await?)
    }

    /// A request to `destination` succeeded (see
    /// [`BackoffStore::record_success`]).
    pub async fn succeeded(&self, destination: &str) -> Result<(), BackoffError> {
        Ok(self.store.record_success(destination).await?)
    }

    /// The names of destinations an admin resets, as they are reset.
    pub fn subscribe_resets(&self) -> broadcast::Receiver<Arc<str>> {
        self.store.subscribe_resets()
    }

    /// A signal that fires when an admin resets `destination`'s backoff.
    pub fn reset_signal(&self, destination: &str) -> ResetSignal {
        ResetSignal {
            destination: destination.to_owned(),
            resets: self.store.subscribe_resets(),
        }
    }
}

/// The timings after `outcome`, or `None` when nothing changes.
pub fn next_timings(
    policy: &BackoffPolicy,
    timings: Timings,
    outcome: Outcome,
    now_ms: i64,
    jitter: f64,
) -> Option<RetryTimings> {
    let retry = timings.retry;
    match outcome {
        // Only a destination that was backing off has anything to clear.
        Outcome::Success if retry.retry_interval != 0 => Some(RetryTimings::default()),
        Outcome::Success | Outcome::NotCounted => None,
        Outcome::Failure if !timings.backoff_on_failure => None,
        Outcome::Failure => Some(RetryTimings {
            failure_ts: Some(retry.failure_ts.unwrap_or(now_ms)),
            retry_last_ts: now_ms,
            retry_interval: policy.next_interval(retry.retry_interval, jitter),
        }),
    }
}

/// Waits for an admin's reset of one destination.
pub struct ResetSignal {
    destination: String,
    resets: broadcast::Receiver<Arc<str>>,
}

impl ResetSignal {
    /// Resolves when the destination is reset (or when resets were missed,
    /// which may have included it); never if the store is gone.
    pub async fn wait(&mut self) {
        loop {
            match self.resets.recv().await {
                Ok(name) if *name == *self.destination => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 600_000;
    const WEEK: i64 = 7 * 86_400_000;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            min_interval: Duration::from_millis(MIN as u64),
            multiplier: 2.0,
            max_interval: Duration::from_millis(WEEK as u64),
        }
    }

    fn in_backoff(failure_ts: i64, last: i64, interval: i64) -> Timings {
        Timings {
            retry: RetryTimings {
                failure_ts: Some(failure_ts),
                retry_last_ts: last,
                retry_interval: interval,
            },
            backoff_on_failure: true,
        }
    }

    #[test]
    fn statuses_count_as_synapse_counts_them() {
        assert_eq!(Outcome::of_status(200, false), Outcome::Success);
        assert_eq!(Outcome::of_status(204, true), Outcome::Success);
        for status in [400, 403, 404, 405, 413] {
            assert_eq!(
                Outcome::of_status(status, false),
                Outcome::NotCounted,
                "{status}"
            );
        }
        assert_eq!(Outcome::of_status(404, true), Outcome::Failure);
        for status in [401, 429, 500, 502, 503, 300, 100] {
            assert_eq!(
                Outcome::of_status(status, false),
                Outcome::Failure,
                "{status}"
            );
        }
    }

    #[test]
    fn a_first_failure_starts_at_the_minimum_and_records_when() {
        let fresh = Timings {
            backoff_on_failure: true,
            ..Default::default()
        };
        let next = next_timings(&policy(), fresh, Outcome::Failure, 1_000, 1.3).expect("stored");
        assert_eq!(
            next,
            RetryTimings {
                failure_ts: Some(1_000),
                retry_last_ts: 1_000,
                retry_interval: MIN
            }
        );
    }

    #[test]
    fn later_failures_grow_with_jitter_up_to_the_maximum_keeping_failure_ts() {
        let t = in_backoff(5, 1_000, MIN);
        let next = next_timings(&policy(), t, Outcome::Failure, 9_000, 0.8).expect("stored");
        assert_eq!(next.retry_interval, (MIN as f64 * 2.0 * 0.8) as i64);
        assert_eq!((next.failure_ts, next.retry_last_ts), (Some(5), 9_000));
        let next = next_timings(&policy(), t, Outcome::Failure, 9_000, 1.4).expect("stored");
        assert_eq!(next.retry_interval, (MIN as f64 * 2.0 * 1.4) as i64);
        let near_max = in_backoff(5, 1_000, WEEK - 1);
        let next = next_timings(&policy(), near_max, Outcome::Failure, 9_000, 0.8).expect("stored");
        assert_eq!(next.retry_interval, WEEK);
    }

    #[test]
    fn success_clears_a_backoff_and_other_answers_change_nothing() {
        let t = in_backoff(5, 1_000, MIN);
        assert_eq!(
            next_timings(&policy(), t, Outcome::Success, 9_000, 1.0),
            Some(RetryTimings::default())
        );
        assert_eq!(
            next_timings(&policy(), t, Outcome::NotCounted, 9_000, 1.0),
            None
        );
        let healthy = Timings {
            backoff_on_failure: true,
            ..Default::default()
        };
        assert_eq!(
            next_timings(&policy(), healthy, Outcome::Success, 9_000, 1.0),
            None
        );
        // Ignoring backoff: a failure does not grow it (Synapse).
        let ignoring = Timings {
            backoff_on_failure: false,
            ..t
        };
        assert_eq!(
            next_timings(&policy(), ignoring, Outcome::Failure, 9_000, 1.0),
            None
        );
    }
}
