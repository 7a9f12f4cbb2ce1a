//! Which destination sends when. Only destinations with something to do
//! have an entry: one sending (a task runs its queue, [`super::queue`]) or
//! one waiting for a due time (in backoff, or a stored retry). Due times sit
//! in one ordered set; a single timer task sleeps until the earliest, so a
//! hundred thousand destinations in backoff cost memory and no work until
//! they are due. New data, a due timer or an admin's `reset_connection`
//! start a destination's task; it ends, and the entry goes, when the queue
//! is empty, or when its shard is no longer this instance's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, Notify, Semaphore};

use super::metrics::{SenderGauges, SenderMetrics};
use super::ownership::Ownership;
use super::transaction::{InFlight, TxnIds};
use super::{Clock, SenderSettings};
use herald_federation::FederationClient;
use herald_shared::SenderState;
use herald_store::{Queued, Store};

/// Destinations resumed per second at start-up.
const RESUME_PER_SECOND: usize = 100;

/// What the sender needs, shared by the timer task and every queue task.
pub(super) struct Shared {
    pub store: Store,
    pub client: Arc<FederationClient>,
    pub origin: String,
    /// `federation_domain_whitelist` (the intake skips the others).
    pub domain_whitelist: Option<Vec<String>>,
    pub txn_ids: TxnIds,
    pub metrics: Arc<dyn SenderMetrics>,
    /// How long a destination that rejected a transaction (4xx that does
    /// not count as a failure) waits before it is tried again.
    pub retry_rejected_after: Duration,
    /// A backoff longer than this (ms) sends the destination into catch-up
    /// (`sender_catch_up_after`).
    pub catch_up_after_ms: i64,
    /// Queue tasks sending at once.
    pub permits: Semaphore,
    /// The destinations this instance may send now (its shards).
    pub ownership: Ownership,
    /// This instance's `instance_name` and when it started (ms).
    pub instance_name: String,
    pub started_ts: i64,
    /// Set when the instance leaves (shutdown): the lease task publishes
    /// nothing more. Held while a view is published.
    pub leaving: Mutex<bool>,
    /// Where every due time and timestamp of the sender comes from.
    clock: Clock,
    state: Mutex<State>,
    /// Told when the earliest due time may have changed.
    timers_changed: Notify,
}

#[derive(Default)]
struct State {
    destinations: HashMap<Arc<str>, Destination>,
    /// (due ms since the epoch, destination) of every waiting destination.
    timers: BTreeSet<(i64, Arc<str>)>,
    /// The transaction in flight of each destination whose shard was lost
    /// mid-send: if the shard comes back while the same events wait, they
    /// go again under the same ID, which the receiver has perhaps already
    /// accepted (a database outage, where every shard lapses, must not
    /// deliver an event twice). One per such destination; taken back when
    /// it is woken.
    lost_in_flight: HashMap<Arc<str>, InFlight>,
}

/// A destination with something to send.
#[derive(Debug, Default)]
pub(super) struct Destination {
    pub phase: Phase,
    /// Send the newest event of each room rather than the whole queue.
    pub catching_up: bool,
    /// Catch-up has dropped the presence, typing and receipt EDUs queued
    /// when it began.
    pub volatile_dropped: bool,
    /// The transaction last sent and not acknowledged: sent again with the
    /// same ID while its contents are the same.
    pub in_flight: Option<InFlight>,
    /// The last transaction was full and sent up to this stream ordering
    /// (the number of such reads in a row beside it): the next read starts
    /// after it, while the queue is longer than a transaction (see
    /// `queue::queue_step`).
    pub read_after: Option<(i64, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Its task runs; `more`: data arrived since it last looked.
    Sending { more: bool },
    /// Nothing runs until this time (ms since the epoch).
    Waiting { due: i64 },
}

impl Default for Phase {
    fn default() -> Self {
        Phase::Sending { more: false }
    }
}

/// Why a destination is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Data was queued for it: send if it is not waiting for a later time.
    NewData,
    /// An admin reset its backoff: send now.
    Reset,
}

impl Shared {
    pub fn new(
        store: Store,
        client: Arc<FederationClient>,
        settings: &SenderSettings,
        metrics: Arc<dyn SenderMetrics>,
        max_sending: usize,
        clock: Clock,
        ownership: Ownership,
    ) -> Shared {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Shared {
            origin: settings.server_name.clone(),
            domain_whitelist: settings.domain_whitelist.clone(),
            retry_rejected_after: settings.retry_rejected_after,
            catch_up_after_ms: ms(settings.catch_up_after),
            txn_ids: TxnIds::new(store.clone()),
            store,
            client,
            metrics,
            permits: Semaphore::new(max_sending),
            ownership,
            instance_name: settings.instance_name.clone(),
            started_ts: clock(),
            leaving: Mutex::new(false),
            clock,
            state: Mutex::new(State::default()),
            timers_changed: Notify::new(),
        }
    }

    /// Milliseconds since the epoch, by the sender's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Wakes `name` (see [`Wake`]); true when its queue starts now. A
    /// destination of a shard this instance does not hold is left alone
    /// (another instance sends it).
    pub fn wake(self: &Arc<Self>, name: &str, why: Wake) -> bool {
        if !self.ownership.owns(name) {
            return false;
        }
        let now = self.now();
        let start = {
            let mut state = self.state.lock();
            let state = &mut *state;
            match state.destinations.get_mut(name) {
                Some(d) => match d.phase {
                    Phase::Sending { .. } => {
                        d.phase = Phase::Sending { more: true };
                        None
                    }
                    Phase::Waiting { due } if why == Wake::Reset || due <= now => {
                        // Marked sending under the lock, so nothing else
                        // starts it a second time.
                        d.phase = Phase::Sending { more: false };
                        let key = state
                            .destinations
                            .get_key_value(name)
                            .map(|(k, _)| k.clone());
                        key.inspect(|key| {
                            state.timers.remove(&(due, key.clone()));
                        })
                    }
                    Phase::Waiting { .. } => None,
                },
                // A reset of a destination with nothing queued starts nothing.
                None if why == Wake::Reset => None,
                None => {
                    let key: Arc<str> = Arc::from(name);
                    let (due, catching_up) = self.backoff_of(name);
                    if catching_up {
                        super::history::entered_catch_up(self, name, due);
                    }
                    let waiting = due.filter(|&due| due > now);
                    let phase = match waiting {
                        Some(due) => {
                            state.timers.insert((due, key.clone()));
                            Phase::Waiting { due }
                        }
                        None => Phase::Sending { more: false },
                    };
                    let in_flight = state.lost_in_flight.remove(name);
                    state.destinations.insert(
                        key.clone(),
                        Destination {
                            phase,
                            catching_up,
                            in_flight,
                            ..Destination::default()
                        },
                    );
                    if waiting.is_some() {
                        self.timers_changed.notify_one();
                        None
                    } else {
                        Some(key)
                    }
                }
            }
        };
        match start {
            Some(key) => {
                self.start(key);
                true
            }
            None => false,
        }
    }

    /// When `name`'s backoff ends (if it has one) and whether it is long
    /// enough for catch-up, from the index (no SQL).
    fn backoff_of(&self, name: &str) -> (Option<i64>, bool) {
        let Some(row) = self.store.destinations.indexed(name).map(|r| r.to_api()) else {
            return (None, false);
        };
        // The same rule as the admin API's "next retry".
        match herald_shared::next_retry_ts(&row) {
            Some(due) => (Some(due), row.retry_interval > self.catch_up_after_ms),
            None => (None, false),
        }
    }

    /// Starts the task of `key`, already marked sending.
    fn start(self: &Arc<Self>, key: Arc<str>) {
        let shared = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            super::queue::run(shared.clone(), key).await;
        });
    }

    /// Reads or changes `name`'s entry (queue tasks).
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&mut Destination) -> R) -> Option<R> {
        self.state.lock().destinations.get_mut(name).map(f)
    }

    /// The queue found nothing to send: the entry goes unless data arrived
    /// meanwhile. True when the task should end.
    pub fn finish_if_idle(&self, name: &str) -> bool {
        let mut state = self.state.lock();
        match state.destinations.get_mut(name) {
            Some(d) => match d.phase {
                Phase::Sending { more: true } => {
                    d.phase = Phase::Sending { more: false };
                    false
                }
                Phase::Sending { more: false } => {
                    state.destinations.remove(name);
                    true
                }
                // Not ours to remove (cannot happen: only its task ends it).
                Phase::Waiting { .. } => true,
            },
            None => true,
        }
    }

    /// `name`'s shard is no longer ours: its entry (and timer) goes; the
    /// instance that holds the shard now sends it.
    pub fn forget(&self, name: &str) {
        let mut state = self.state.lock();
        if let Some((key, d)) = state.destinations.remove_entry(name) {
            if let Phase::Waiting { due } = d.phase {
                state.timers.remove(&(due, key.clone()));
            }
            if let Some(in_flight) = d.in_flight {
                state.lost_in_flight.insert(key, in_flight);
            }
        }
    }

    /// Removes every waiting destination (a timer, no task running) for
    /// which `gone` is true; the sending ones end by themselves when their
    /// shard is lost. For the lease task, when shards go or its view lapsed.
    pub fn forget_waiting(&self, gone: impl Fn(&str) -> bool) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let waiting: Vec<(Arc<str>, i64)> = state
            .destinations
            .iter()
            .filter_map(|(k, d)| match d.phase {
                Phase::Waiting { due } if gone(k) => Some((k.clone(), due)),
                _ => None,
            })
            .collect();
        for (key, due) in waiting {
            state.timers.remove(&(due, key.clone()));
            if let Some(d) = state.destinations.remove(&key) {
                if let Some(in_flight) = d.in_flight {
                    state.lost_in_flight.insert(key, in_flight);
                }
            }
        }
    }

    /// The queue stops until `due` (ms since the epoch); its task ends.
    pub fn wait_until(&self, name: &str, due: i64) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let Some(key) = state
            .destinations
            .get_key_value(name)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(d) = state.destinations.get_mut(name) {
            if let Phase::Waiting { due: old } = d.phase {
                state.timers.remove(&(old, key.clone()));
            }
            d.phase = Phase::Waiting { due };
        }
        let earliest = state.timers.first().is_none_or(|(first, _)| due < *first);
        state.timers.insert((due, key));
        if earliest {
            self.timers_changed.notify_one();
        }
    }

    /// Starts every waiting destination whose backoff is no longer stored
    /// (resets this task missed). Walks the waiting entries: rare.
    fn wake_reset_ones(self: &Arc<Self>) {
        let waiting: Vec<Arc<str>> = {
            let state = self.state.lock();
            state
                .destinations
                .iter()
                .filter(|(_, d)| matches!(d.phase, Phase::Waiting { .. }))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for name in waiting {
            if self.backoff_of(&name).0.is_none() {
                self.wake(&name, Wake::Reset);
            }
        }
    }

    /// Starts every destination whose time has come; how long until the
    /// next one.
    fn start_due(self: &Arc<Self>) -> Option<Duration> {
        let now = self.now();
        let mut due = Vec::new();
        let next = {
            let mut state = self.state.lock();
            while let Some((at, _)) = state.timers.first() {
                if *at > now {
                    break;
                }
                let Some((at, key)) = state.timers.pop_first() else {
                    break;
                };
                // Only a destination still waiting for this very time.
                if let Some(d) = state.destinations.get_mut(&key) {
                    if d.phase == (Phase::Waiting { due: at }) {
                        d.phase = Phase::Sending { more: false };
                        due.push(key);
                    }
                }
            }
            state.timers.first().map(|(at, _)| *at)
        };
        for key in due {
            self.start(key);
        }
        next.map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
    }

    /// The timer task: sleeps until the earliest due time, a change of it,
    /// or an admin's reset.
    pub async fn run_timers(self: Arc<Self>, mut resets: broadcast::Receiver<Arc<str>>) {
        loop {
            let sleep = self.start_due();
            tokio::select! {
                _ = async {
                    match sleep {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = self.timers_changed.notified() => {}
                reset = resets.recv() => match reset {
                    Ok(name) => {
                        self.wake(&name, Wake::Reset);
                    }
                    // Resets were missed: look at every waiting one.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.wake_reset_ones(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// The queued-data task: data another Herald instance sharing the
    /// PostgreSQL database queued wakes its destinations here, as this
    /// instance's own intake does ([`super::Sender::notify`]). A rescan (the
    /// store's listener reconnected: notices may be lost) or a lag wakes
    /// every destination with queued data, and looks again at every waiting
    /// one's backoff (a reset may have been missed too).
    pub async fn run_queued(self: Arc<Self>, mut queued: broadcast::Receiver<Queued>) {
        loop {
            match queued.recv().await {
                Ok(Queued::Destinations(names)) => {
                    for name in names.iter() {
                        self.wake(name, Wake::NewData);
                    }
                }
                Ok(Queued::Rescan) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.wake_reset_ones();
                    // Spread out as at start-up; notices meanwhile wait in
                    // the broadcast (or lag, which rescans once more).
                    self.clone().resume().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Every destination with queued data, woken at start-up: those in
    /// backoff get their timer, the others start spread out at
    /// `RESUME_PER_SECOND`.
    pub async fn resume(self: Arc<Self>) {
        let names = match self.store.outbox.destinations_with_pending().await {
            Ok(names) => names,
            Err(e) => {
                tracing::error!(error = %e, "cannot list destinations with queued data");
                return;
            }
        };
        if !names.is_empty() {
            tracing::info!(
                destinations = names.len(),
                "resuming destinations with queued data"
            );
        }
        let mut started = 0;
        for name in &names {
            if self.wake(name, Wake::NewData) {
                started += 1;
                if started % RESUME_PER_SECOND == 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Where the sender stands with `name`.
    pub fn state_of(&self, name: &str) -> SenderState {
        match self.state.lock().destinations.get(name) {
            None => SenderState::Idle,
            Some(d) if d.catching_up => SenderState::CatchingUp,
            Some(Destination {
                phase: Phase::Sending { .. },
                ..
            }) => SenderState::Sending,
            Some(_) => SenderState::BackingOff,
        }
    }

    /// Destinations per state, for the metrics.
    pub fn gauges(&self, known: usize) -> SenderGauges {
        let state = self.state.lock();
        let mut gauges = SenderGauges::default();
        for d in state.destinations.values() {
            if d.catching_up {
                gauges.catching_up += 1;
            } else {
                match d.phase {
                    Phase::Sending { .. } => gauges.sending += 1,
                    Phase::Waiting { .. } => gauges.backing_off += 1,
                }
            }
        }
        gauges.idle = (known as u64).saturating_sub(state.destinations.len() as u64);
        gauges
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use herald_federation::{BackoffPolicy, ClientSettings, FederationSettings};
    use herald_keys::{ServerKeys, SigningKey};
    use herald_store::DestinationRow;

    use super::*;
    use crate::metrics::TxnOutcome;

    struct NoMetrics;
    impl SenderMetrics for NoMetrics {
        fn queued(&self, _: u64, _: u64) {}
        fn transaction(&self, _: TxnOutcome, _: u64, _: u64, _: u64) {}
    }

    const T0: i64 = 1_750_000_000_000;
    const BACKOFF: i64 = 600_000;

    /// A destination in a ten-minute backoff is started by the timer when
    /// its time comes, by the sender's clock, and not a millisecond before:
    /// the clock is moved by hand, nothing sleeps.
    #[tokio::test]
    async fn a_backed_off_destination_starts_when_the_clock_reaches_its_due_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.db")).await.unwrap();
        store
            .destinations
            .put_destinations(&[DestinationRow::new(
                "later.example",
                Some(T0),
                Some(BACKOFF),
                Some(T0),
                None,
            )])
            .await
            .unwrap();
        let settings = FederationSettings {
            client: ClientSettings::default(),
            backoff: BackoffPolicy {
                min_interval: Duration::from_secs(600),
                multiplier: 2.0,
                max_interval: Duration::from_secs(86_400),
            },
            verify_certificates: true,
            custom_ca_list: None,
            ip_range_blacklist: None,
            ip_range_whitelist: Vec::new(),
        };
        let keys = Arc::new(ServerKeys::new(
            "herald.test",
            SigningKey::generate("t").unwrap(),
        ));
        let client =
            FederationClient::from_settings(&settings, store.destinations.clone(), keys).unwrap();
        let now = Arc::new(AtomicI64::new(T0 + 1_000));
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let sender_settings = SenderSettings {
            server_name: "herald.test".into(),
            domain_whitelist: None,
            retry_rejected_after: Duration::from_secs(600),
            catch_up_after: Duration::from_secs(3600),
            instance_name: "main".into(),
        };
        let shared = Arc::new(Shared::new(
            store,
            Arc::new(client),
            &sender_settings,
            Arc::new(NoMetrics),
            4,
            clock,
            Ownership::everything(),
        ));

        assert!(!shared.wake("later.example", Wake::NewData));
        assert_eq!(shared.state_of("later.example"), SenderState::BackingOff);
        assert_eq!(
            shared.start_due(),
            Some(Duration::from_millis((BACKOFF - 1_000) as u64))
        );

        now.store(T0 + BACKOFF - 1, Ordering::SeqCst);
        assert_eq!(shared.start_due(), Some(Duration::from_millis(1)));
        assert_eq!(shared.state_of("later.example"), SenderState::BackingOff);

        now.store(T0 + BACKOFF, Ordering::SeqCst);
        assert_eq!(shared.start_due(), None);
        assert_ne!(shared.state_of("later.example"), SenderState::BackingOff);
        // Nothing is queued for it: its task finds the queue empty and ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.state_of("later.example") != SenderState::Idle
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(shared.state_of("later.example"), SenderState::Idle);
    }
}
