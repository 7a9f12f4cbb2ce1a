//! The lease task of an instance sharing a PostgreSQL database with others
//! (see `herald_store::leases`): every [`TICK`], one round — renew the
//! leases held, note the heartbeat, claim up to the fair share — then
//! publish what is held, trusted until the round's start plus [`LEASE`]
//! minus [`SAFETY_MARGIN`] by this machine's monotonic clock: the database
//! lets no other instance claim a shard before the lease it wrote (from the
//! statement's own later time) runs out, so this instance has stopped
//! sending it by then, whatever happens to the link (a round that fails or
//! does not answer within [`ROUND_TIMEOUT`] renews nothing).
//!
//! Shards over the fair share are given up: first published as draining
//! (no new transaction starts in them; one in flight finishes, as its
//! receiver has most likely taken it already and its events would
//! otherwise go again under the next owner's new transaction ID), then
//! freed at a later round once nothing is under way in them (or after
//! [`MAX_DRAIN_ROUNDS`], the straggler dropped). At shutdown (`leave`) every shard is given up at once.
//! Shards gained are caught up: the destinations with something queued in
//! them are woken by the catch-up task, which also runs when the outbox's
//! newest stream ordering or EDU moved (data queued through another
//! instance for destinations this one sends), a round after such a move,
//! and every 30 rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_store::ShardSet;

use super::ownership::View;
use super::scheduler::{Shared, Wake};

/// How long a lease lasts from the statement that writes it.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the lease task runs a round.
pub const TICK: Duration = Duration::from_secs(1);
/// How long before its lease ends this instance stops trusting it (room
/// for the statement's travel time and the clocks' drift).
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2);
/// The longest a round may take; past it the round counts as failed.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Rounds a shard being given up may drain (its transaction in flight
/// finishing) before it is freed anyway, that transaction dropped.
const MAX_DRAIN_ROUNDS: u8 = 10;

/// Every this many rounds, the catch-up looks whatever the marks say.
const SWEEP_EVERY: u64 = 30;

/// Destinations woken per second by a catch-up (as at start-up).
const CATCH_UP_PER_SECOND: usize = 100;

/// What the catch-up task is asked to read: every destination with queued
/// data, or those queued after a stream ordering and EDU ID (an indexed
/// range read). Asks made while it runs are merged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum CatchUp {
    #[default]
    Nothing,
    Since(i64, i64),
    Everything,
}

impl CatchUp {
    fn merge(self, other: CatchUp) -> CatchUp {
        match (self, other) {
            (CatchUp::Everything, _) | (_, CatchUp::Everything) => CatchUp::Everything,
            (CatchUp::Nothing, x) | (x, CatchUp::Nothing) => x,
            (CatchUp::Since(a, b), CatchUp::Since(c, d)) => CatchUp::Since(a.min(c), b.min(d)),
        }
    }
}

/// Asks of the catch-up task, and the signal that there is one.
#[derive(Default)]
struct CatchUpAsks {
    pending: parking_lot::Mutex<CatchUp>,
    signal: tokio::sync::Notify,
}

impl CatchUpAsks {
    fn ask(&self, what: CatchUp) {
        {
            let mut pending = self.pending.lock();
            *pending = pending.merge(what);
        }
        self.signal.notify_one();
    }
}

/// [`LEASE`] in milliseconds (the store's unit).
pub fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the lease task for ever (spawned by `Sender::start` on PostgreSQL).
pub(super) async fn run(shared: Arc<Shared>) {
    let asks = Arc::new(CatchUpAsks::default());
    tokio::spawn(catch_up_task(shared.clone(), asks.clone()));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The outbox's marks at the last round and at the one before.
    let mut marks: Option<(i64, i64)> = None;
    let mut older: Option<(i64, i64)> = None;
    let mut moved_before = false;
    let mut rounds: u64 = 0;
    let mut failing = false;
    // Rounds each shard over the share has been draining (0: not).
    let mut draining_rounds = [0u8; 256];
    // What the last successful round published.
    let mut published = ShardSet::default();
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let round = shared
            .store
            .leases
            .tick(&shared.instance_name, shared.started_ts, lease_ms());
        let outcome = match tokio::time::timeout(ROUND_TIMEOUT, round).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "shard leases: round failed; sending stops when the leases run out");
                }
                failing = true;
                continue;
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(timeout_ms = ROUND_TIMEOUT.as_millis() as u64, "shard leases: the database did not answer; sending stops when the leases run out");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!("shard leases: the database answers again");
            failing = false;
        }
        let before = shared.ownership.held();
        // The view ran out since the last round (the database was out of
        // reach): the shards may have been another instance's meanwhile.
        let lapsed = before.len() < published.len();
        let excess: ShardSet = outcome
            .held
            .iter()
            .rev()
            .take(outcome.held.len().saturating_sub(outcome.target))
            .collect();
        let keep = outcome.held.minus(&excess);
        // Excess shards drain first (nothing new starts in them, what is in
        // flight finishes); one that drained since the last round with
        // nothing under way now, or for [`MAX_DRAIN_ROUNDS`], is freed.
        let mut drained = ShardSet::default();
        for shard in excess.iter() {
            let rounds = &mut draining_rounds[usize::from(shard) % draining_rounds.len()];
            *rounds = rounds.saturating_add(1);
            let one: ShardSet = [shard].into_iter().collect();
            if *rounds > 1 && (!shared.ownership.sending_in(&one) || *rounds > MAX_DRAIN_ROUNDS) {
                drained.insert(shard);
            }
        }
        for (shard, rounds) in draining_rounds.iter_mut().enumerate() {
            if !u16::try_from(shard).is_ok_and(|s| excess.contains(s)) {
                *rounds = 0;
            }
        }
        {
            let leaving = shared.leaving.lock();
            if *leaving {
                return;
            }
            shared.ownership.publish(View {
                shards: keep,
                draining: excess.minus(&drained),
                valid_until: Some(sent + LEASE - SAFETY_MARGIN),
            });
        }
        // Destinations waiting for a due time in shards that went (or, after
        // a lapse, in any shard) lose their entry: another instance may have
        // sent them or reset their backoff meanwhile, and the catch-up below
        // (or the next one, when a shard comes back) builds each entry anew
        // from the database's backoff.
        if lapsed || !published.minus(&keep).is_empty() {
            shared.forget_waiting(|name| lapsed || !keep.holds(name));
        }
        published = keep;
        let free_now = drained;
        if !free_now.is_empty() {
            let release = shared
                .store
                .leases
                .release(&shared.instance_name, &free_now);
            match tokio::time::timeout(ROUND_TIMEOUT, release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "shard leases: cannot free shards (they lapse instead)")
                }
                Err(_) => tracing::warn!(
                    "shard leases: freeing shards took too long (they lapse instead)"
                ),
            }
        }
        let gained = if lapsed { keep } else { keep.minus(&before) };
        let lost = before.minus(&keep);
        if !gained.is_empty() || !lost.is_empty() {
            tracing::info!(
                held = keep.len(),
                gained = gained.len(),
                lost = lost.len(),
                live_instances = outcome.live.len(),
                "shard leases changed"
            );
        }
        // Something queued since the last look (here or through another
        // instance), or new shards: wake what is queued in ours.
        let now_marks =
            match tokio::time::timeout(ROUND_TIMEOUT, shared.store.outbox.queue_marks()).await {
                Ok(Ok(m)) => Some(m),
                _ => None,
            };
        // Another instance's commit may land after a later one's was seen
        // (orderings are taken before commit): what was queued after the
        // marks of two rounds ago is read, again a round after each move,
        // and everything every [`SWEEP_EVERY`] rounds, which bounds the wait.
        let moved = now_marks.is_some() && now_marks != marks;
        rounds += 1;
        if !gained.is_empty() || rounds.is_multiple_of(SWEEP_EVERY) {
            asks.ask(CatchUp::Everything);
        } else if moved || moved_before {
            asks.ask(match older {
                Some((pdus, edus)) => CatchUp::Since(pdus, edus),
                None => CatchUp::Everything,
            });
        }
        moved_before = moved;
        if now_marks.is_some() {
            older = marks;
            marks = now_marks;
        }
    }
}

/// The instance is shutting down: it stops sending at once and frees every
/// shard it holds, so that the others take them over at their next round
/// rather than when the leases lapse.
pub(super) async fn leave(shared: &Shared) {
    {
        let mut leaving = shared.leaving.lock();
        *leaving = true;
        shared.ownership.publish(View::default());
    }
    if !shared.store.leases.is_shared() {
        return;
    }
    let release = shared.store.leases.leave(&shared.instance_name);
    match tokio::time::timeout(ROUND_TIMEOUT, release).await {
        Ok(Ok(())) => tracing::info!("shard leases freed for the other instances"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot free the shard leases (they lapse instead)")
        }
        Err(_) => tracing::warn!("freeing the shard leases took too long (they lapse instead)"),
    }
}

/// Wakes the destinations with something queued in the shards held, each
/// time it is asked (asks made while it runs are merged into one more run).
async fn catch_up_task(shared: Arc<Shared>, asks: Arc<CatchUpAsks>) {
    loop {
        asks.signal.notified().await;
        let what = std::mem::take(&mut *asks.pending.lock());
        let names = match what {
            CatchUp::Nothing => continue,
            CatchUp::Everything => shared.store.outbox.destinations_with_pending().await,
            CatchUp::Since(pdus, edus) => {
                shared
                    .store
                    .outbox
                    .destinations_queued_after(pdus, edus)
                    .await
            }
        };
        let names = match names {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list destinations with queued data");
                // Asked again at the next sweep at the latest.
                continue;
            }
        };
        let held = shared.ownership.held();
        let mut started: usize = 0;
        for name in names.iter().filter(|n| held.holds(n)) {
            if shared.wake(name, Wake::NewData) {
                started += 1;
                if started.is_multiple_of(CATCH_UP_PER_SECOND) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CatchUp;

    #[test]
    fn asks_merge_to_the_widest_read() {
        use CatchUp::*;
        assert_eq!(Nothing.merge(Since(5, 7)), Since(5, 7));
        assert_eq!(Since(5, 9).merge(Since(8, 7)), Since(5, 7));
        assert_eq!(Since(5, 9).merge(Everything), Everything);
        assert_eq!(Everything.merge(Nothing), Everything);
    }
}
