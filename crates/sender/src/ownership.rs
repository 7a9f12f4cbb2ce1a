//! Which destinations this instance may send now: the shards it holds
//! (see `herald_store::leases`) and until when it may trust that, by its
//! own monotonic clock. On SQLite it holds every shard for good; on
//! PostgreSQL the lease task ([`super::leases`]) publishes a new view each
//! round, and a view that is not renewed in time stops counting by itself
//! (before any other instance can claim the shards).
//!
//! The scheduler creates no entry for a destination it does not own, each
//! queue task looks before each transaction, and an in-flight transaction
//! is dropped when its shard goes ([`Ownership::lost`]). A shard being
//! given up is *draining*: no new transaction starts in it, but one in
//! flight may finish (the receiver has most likely taken it; dropped, its
//! events would go again under the next owner's new transaction ID), until
//! the view runs out; the lease task frees it once none is in flight
//! ([`Ownership::sending_in`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use herald_store::{shard_of, ShardSet};
use tokio::sync::watch;

/// Shards held and until when (`None`: for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    pub shards: ShardSet,
    /// Shards being given up: nothing new starts in them, what is in flight
    /// goes on (until `valid_until`).
    pub draining: ShardSet,
    pub valid_until: Option<Instant>,
}

impl View {
    /// The shards that count now (none once `valid_until` has passed).
    pub fn held_now(&self) -> ShardSet {
        match self.valid_until {
            Some(until) if Instant::now() >= until => ShardSet::default(),
            _ => self.shards,
        }
    }

    /// The shards a transaction in flight may go on in now.
    fn kept_now(&self) -> ShardSet {
        match self.valid_until {
            Some(until) if Instant::now() >= until => ShardSet::default(),
            _ => self.shards.union(&self.draining),
        }
    }
}

/// The current view, shared by the scheduler, the queue tasks and the
/// lease task.
pub struct Ownership {
    view: watch::Sender<View>,
    /// Transactions under way per shard (from just before the last check
    /// of ownership to their end).
    sending: [AtomicU32; SHARDS_USIZE],
}

const SHARDS_USIZE: usize = herald_store::SHARDS as usize;

/// One transaction under way in its shard, counted until dropped.
pub struct Sending<'a> {
    count: &'a AtomicU32,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ownership {
    /// Every shard, for good (SQLite: one server per database).
    pub fn everything() -> Ownership {
        Ownership {
            view: watch::Sender::new(View {
                shards: ShardSet::all(),
                draining: ShardSet::default(),
                valid_until: None,
            }),
            sending: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Nothing yet (PostgreSQL, until the first leases).
    pub fn nothing() -> Ownership {
        Ownership {
            view: watch::Sender::new(View {
                shards: ShardSet::default(),
                draining: ShardSet::default(),
                valid_until: Some(Instant::now()),
            }),
            sending: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Whether `destination` is ours to send now (no hashing when every
    /// shard is ours for good: SQLite's hot path).
    pub fn owns(&self, destination: &str) -> bool {
        {
            let view = self.view.borrow();
            if view.valid_until.is_none() && view.shards == ShardSet::all() {
                return true;
            }
        }
        self.owns_shard(shard_of(destination))
    }

    pub fn owns_shard(&self, shard: u16) -> bool {
        self.view.borrow().held_now().contains(shard)
    }

    /// The shards that count now.
    pub fn held(&self) -> ShardSet {
        self.view.borrow().held_now()
    }

    /// Counts a transaction to `destination` as under way until the guard
    /// drops; taken before the last ownership check, so that a shard with
    /// none counted has none that could still start.
    pub fn sending(&self, destination: &str) -> Sending<'_> {
        let count = &self.sending[usize::from(shard_of(destination)) % SHARDS_USIZE];
        count.fetch_add(1, Ordering::AcqRel);
        Sending { count }
    }

    /// Whether any transaction is under way in these shards.
    pub fn sending_in(&self, shards: &ShardSet) -> bool {
        shards
            .iter()
            .any(|s| self.sending[usize::from(s) % SHARDS_USIZE].load(Ordering::Acquire) > 0)
    }

    /// Replaces the view (the lease task).
    pub fn publish(&self, view: View) {
        self.view.send_replace(view);
    }

    /// Resolves once `destination`'s shard is no longer ours: taken away by
    /// a new view, or its view's time run out.
    pub async fn lost(&self, destination: &str) {
        let shard = shard_of(destination);
        let mut changes = self.view.subscribe();
        loop {
            let view = *changes.borrow_and_update();
            if !view.kept_now().contains(shard) {
                return;
            }
            let expiry = async {
                match view.valid_until {
                    Some(until) => tokio::time::sleep_until(until.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = expiry => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The sender is gone: nothing will ever change.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_view_not_renewed_in_time_owns_nothing() {
        let ownership = Ownership::nothing();
        assert!(!ownership.owns("a.example"));
        let shard = shard_of("a.example");
        ownership.publish(View {
            draining: ShardSet::default(),
            shards: [shard].into_iter().collect(),
            valid_until: Some(Instant::now() + Duration::from_millis(200)),
        });
        assert!(ownership.owns("a.example"));
        assert!(!ownership.owns_shard((shard + 1) % 256));
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), ownership.lost("a.example"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(!ownership.owns("a.example"));
        assert!(Ownership::everything().owns("a.example"));
    }

    #[tokio::test]
    async fn a_new_view_without_the_shard_ends_lost_at_once() {
        let ownership = std::sync::Arc::new(Ownership::everything());
        let waiter = {
            let ownership = ownership.clone();
            tokio::spawn(async move { ownership.lost("b.example").await })
        };
        tokio::task::yield_now().await;
        ownership.publish(View::default());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
