//! The federation sender: what a homeserver hands Herald to send, and its
//! delivery. [`intake`] checks what the intake API received and stores it
//! through the store's outbox before answering; then [`Sender::notify`]
//! wakes the destinations. [`scheduler`] keeps who sends when (a due-time
//! queue and one timer task); [`queue`] runs one destination's
//! transactions, in order or in catch-up; [`transaction`] builds them and
//! hands out their IDs; [`metrics`] is what it reports. Several instances
//! may share a PostgreSQL database: `ownership` says which destinations
//! this one may send now (its shards) and [`leases`] keeps them.
//!
//! It sends through `herald-federation`'s client and keeps everything in
//! `herald-store`; it knows nothing of HTTP routes or of the config file.

mod history;
pub mod intake;
pub mod leases;
pub mod metrics;
mod ownership;
mod queue;
mod scheduler;
pub mod transaction;

use std::sync::Arc;
use std::time::Duration;

use herald_federation::FederationClient;
use herald_shared::{DestinationQueue, SenderState};
use herald_store::{Store, StoreError};
use metrics::{SenderGauges, SenderMetrics};
use ownership::Ownership;
use scheduler::{Shared, Wake};

/// Where the sender reads the time (due times, transaction timestamps):
/// the same clock type as the retry limiter's, so tests drive both alike.
pub use herald_federation::clock::{system_clock, Clock};
pub use intake::{EdusBody, IntakeError, PdusBody};
pub use queue::SEND_ANSWER_MAX_SIZE;

/// What the sender is built from (the binary fills it from its config).
#[derive(Debug, Clone, PartialEq)]
pub struct SenderSettings {
    /// Our name: the `origin` of every transaction, never a destination.
    pub server_name: String,
    /// `federation_domain_whitelist`: `None` = everyone.
    pub domain_whitelist: Option<Vec<String>>,
    /// How long a destination that rejected a transaction (a 4xx that does
    /// not count as a failure) waits before it is tried again
    /// (`destination_min_retry_interval`).
    pub retry_rejected_after: Duration,
    /// A backoff longer than this sends a destination into catch-up
    /// (`sender_catch_up_after`).
    pub catch_up_after: Duration,
    /// This instance's name among those sharing a PostgreSQL database.
    pub instance_name: String,
}

/// Destinations sending at once (each has at most one transaction in
/// flight, which may be sleeping between retries); the others wait for a
/// slot.
const MAX_SENDING: usize = 4096;

/// Federation tries on new connections under way at once (connecting,
/// waiting for the answer, reading its body), set on the client: a
/// destination sleeping between retries holds none, nor does a try on a
/// kept-alive connection, so unreachable servers cannot hold back healthy
/// ones (answers held in memory are bounded by the client's byte budget).
pub const MAX_CONCURRENT_TRIES: usize = 1024;

/// How often delivered events are pruned, and how many at most per round.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
const PRUNE_BATCH: u32 = 10_000;

/// Removes, every `PRUNE_EVERY`, accepted events no destination needs any
/// more (`Outbox::prune_delivered_events`) and history entries past their
/// bounds (`Destinations::prune_history`), a batch at a time.
async fn prune(store: Store) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        prune_in_batches("delivered events", || {
            store.outbox.prune_delivered_events(PRUNE_BATCH)
        })
        .await;
        prune_in_batches("history entries", || {
            store.destinations.prune_history(PRUNE_BATCH)
        })
        .await;
    }
}

/// Runs `round` until it removes less than a batch (or fails).
async fn prune_in_batches<F>(what: &str, mut round: impl FnMut() -> F)
where
    F: std::future::Future<Output = Result<u64, StoreError>>,
{
    loop {
        match round().await {
            Ok(n) if n == u64::from(PRUNE_BATCH) => tokio::task::yield_now().await,
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(removed = n, what, "pruned");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, what, "pruning failed");
                break;
            }
        }
    }
}

/// The running sender. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Starts the sender: its timer task, the task that wakes what other
    /// instances sharing the database queue (PostgreSQL), and the
    /// resumption of every destination with queued data (spread out).
    pub fn start(
        store: Store,
        client: Arc<FederationClient>,
        settings: &SenderSettings,
        metrics: Arc<dyn SenderMetrics>,
    ) -> Sender {
        Sender::start_with_clock(store, client, settings, metrics, system_clock())
    }

    /// The same, reading the time from `clock`.
    pub fn start_with_clock(
        store: Store,
        client: Arc<FederationClient>,
        settings: &SenderSettings,
        metrics: Arc<dyn SenderMetrics>,
        clock: Clock,
    ) -> Sender {
        // Several instances may share PostgreSQL: this one sends only the
        // shards its leases hold. On SQLite it is the only one.
        let shared_db = store.leases.is_shared();
        let ownership = if shared_db {
            Ownership::nothing()
        } else {
            Ownership::everything()
        };
        let shared = Arc::new(Shared::new(
            store.clone(),
            client,
            settings,
            metrics,
            MAX_SENDING,
            clock,
            ownership,
        ));
        tokio::spawn(
            shared
                .clone()
                .run_timers(store.destinations.subscribe_resets()),
        );
        tokio::spawn(shared.clone().run_queued(store.outbox.subscribe_queued()));
        if shared_db {
            // Resumes each shard's queued destinations as it is gained.
            tokio::spawn(leases::run(shared.clone()));
        } else {
            tokio::spawn(shared.clone().resume());
        }
        tokio::spawn(prune(store));
        Sender { shared }
    }

    /// A sender that does not run: no timers, no resumption, no pruning;
    /// it only answers what Herald's own (empty) outbox holds. For attached
    /// mode, where the Synapse beside Herald sends its own federation
    /// traffic.
    pub fn off(
        store: Store,
        client: Arc<FederationClient>,
        settings: &SenderSettings,
        metrics: Arc<dyn SenderMetrics>,
    ) -> Sender {
        let shared = Arc::new(Shared::new(
            store,
            client,
            settings,
            metrics,
            MAX_SENDING,
            system_clock(),
            Ownership::everything(),
        ));
        Sender { shared }
    }

    /// Data was queued for these destinations.
    pub fn notify<'a>(&self, destinations: impl IntoIterator<Item = &'a str>) {
        for name in destinations {
            self.shared.wake(name, Wake::NewData);
        }
    }

    /// What the sender holds for `name`: its state and what is queued.
    pub async fn queue(&self, name: &str) -> Result<DestinationQueue, StoreError> {
        let counts = self.shared.store.outbox.queued_counts(name).await?;
        Ok(DestinationQueue {
            destination: name.to_owned(),
            state: self.shared.state_of(name),
            queued_pdus: counts.pdus,
            queued_edus: counts.edus,
            oldest_queued_ts: counts.oldest_pdu_ts,
        })
    }

    /// Shutdown: stops sending and, on PostgreSQL, frees this instance's
    /// shards for the others at once.
    pub async fn leave(&self) {
        leases::leave(&self.shared).await;
    }

    /// This instance's `instance_name`.
    pub fn instance_name(&self) -> &str {
        &self.shared.instance_name
    }

    /// When this instance's sender started (ms since the epoch).
    pub fn started_ts(&self) -> i64 {
        self.shared.started_ts
    }

    /// How many shards this instance sends now (256 on SQLite).
    pub fn shards_held(&self) -> usize {
        self.shared.ownership.held().len()
    }

    /// Whether this instance sends `name` now (its shard is held).
    pub fn owns(&self, name: &str) -> bool {
        self.shared.ownership.owns(name)
    }

    /// Where the sender stands with `name` now.
    pub fn state_of(&self, name: &str) -> SenderState {
        self.shared.state_of(name)
    }

    /// Destinations per state, what is queued and the oldest undelivered PDU's age, for the
    /// metrics; `known` is how many destinations the store knows.
    pub async fn gauges(&self, known: usize) -> SenderGauges {
        let mut gauges = self.shared.gauges(known);
        gauges.shards_held = self.shards_held() as u64;
        match self.shared.store.outbox.queue_totals().await {
            Ok(totals) => {
                gauges.queued_pdus = totals.pdus;
                gauges.queued_edus = totals.edus;
            }
            Err(e) => tracing::warn!(error = %e, "cannot count what is queued"),
        }
        match self.shared.store.outbox.oldest_undelivered_ts().await {
            Ok(Some(ts)) => {
                gauges.oldest_undelivered_secs = (self.shared.now() - ts).max(0) as f64 / 1000.0;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the oldest undelivered event"),
        }
        gauges
    }
}
