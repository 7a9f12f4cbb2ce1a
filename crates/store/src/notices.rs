//! Notices between Herald instances sharing one PostgreSQL database
//! (LISTEN/NOTIFY): what another instance wrote reaches this one's
//! destinations index, reset broadcast and sender within a second. SQLite
//! has one Herald process: nothing here runs on it.
//!
//! Three channels, each payload `<instance> <what>` (`instance`: the
//! writing session's `herald.instance`, set on every connection of a store's
//! pool, so a store skips its own notices — it applied those writes itself):
//! - `herald_destinations`: a destination's row or room count changed (a
//!   trigger, migration 0007, notifies in the writing transaction: no write
//!   path can forget it). The names heard within [`WINDOW`] are re-read in
//!   one query and applied to the index; a row gone leaves it.
//! - `herald_resets`: `reset_connection` cleared a backoff (sent by
//!   `reset_retry_timings`'s statement): put on the reset broadcast once the
//!   row is re-read, which wakes the sender's queue and the federation
//!   client's view of the backoff, as a local reset does.
//! - `herald_queued`: the outbox's group commit queued data for these
//!   destinations (names joined by `\n`, in as many payloads as needed up to
//!   16, or `*` for more): told on [`crate::Outbox::subscribe_queued`].
//!
//! The listener pings itself every 2 s (`herald_ping`): a connection that
//! hears nothing for 7 s has gone silent (a network cut) and is replaced.
//! Notices sent while the listener is disconnected are lost: on every
//! reconnect the whole index is reloaded (a backoff that ended meanwhile is
//! broadcast as a reset) and the sender told [`Queued::Rescan`], so nothing
//! missed stays missed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::db::{Db, DbTx};
use super::destinations::decode;
use super::shared_index::Edit;
use super::{Destinations, StoreError};

/// Changed `destinations` rows and room counts (the trigger's channel).
pub(crate) const DESTINATIONS: &str = "herald_destinations";
/// Backoffs an admin reset.
pub(crate) const RESETS: &str = "herald_resets";
/// Destinations that data was queued for.
pub(crate) const QUEUED: &str = "herald_queued";
/// A payload standing for every destination.
pub(crate) const EVERYTHING: &str = "*";

/// Pings on the listener's connection, to tell a silent one.
const PING: &str = "herald_ping";
/// How often the listener pings itself.
const PING_EVERY: Duration = Duration::from_secs(2);
/// A listener that hears nothing (not even its pings) this long is lost.
const SILENCE: Duration = Duration::from_secs(7);

/// How long names are gathered before they are re-read together.
const WINDOW: Duration = Duration::from_millis(50);
/// Most names re-read by one query.
const NAMES_PER_READ: usize = 2_000;
/// Most notices gathered into one batch (a bulk write's flood is then
/// handled in several).
const NOTICES_PER_BATCH: usize = 20_000;
/// Longest queued payload sent; a longer list is sent as [`EVERYTHING`]
/// (PostgreSQL refuses payloads of 8000 bytes).
const MOST_PAYLOAD: usize = 7_000;
/// Most queued payloads one commit sends (about 4,000 names); a commit for
/// more destinations sends [`EVERYTHING`].
const MOST_PAYLOADS: usize = 16;
/// Notices waiting for the processing task before the reader waits.
const BUFFERED: usize = 8_192;
/// Longest pause between two tries to reconnect the listener.
const MOST_PAUSE: Duration = Duration::from_secs(1);

/// What the sender hears of data queued by another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Data was queued for these destinations.
    Destinations(Arc<[String]>),
    /// Notices may have been missed (the listener reconnected): every
    /// destination with queued data (`destinations_with_pending`), and
    /// every backoff, may have changed.
    Rescan,
}

/// A new name for this store's sessions, unique across processes and
/// hosts in practice: process ID, the time, and a counter.
pub(crate) fn new_instance_tag() -> String {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `herald_queued` payloads (without the instance) for `names`: each
/// under [`MOST_PAYLOAD`] bytes, at most [`MOST_PAYLOADS`] of them, or one
/// [`EVERYTHING`] when they would not fit (or a name cannot be told).
pub(crate) fn queued_payloads<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let everything = || vec![EVERYTHING.to_owned()];
    let mut payloads = vec![String::new()];
    for name in names {
        if name.contains('\n') || name == EVERYTHING || name.len() >= MOST_PAYLOAD {
            return everything();
        }
        let full = payloads
            .last()
            .is_none_or(|p| p.len() + 1 + name.len() >= MOST_PAYLOAD);
        if full {
            if payloads.len() == MOST_PAYLOADS {
                return everything();
            }
            payloads.push(String::new());
        }
        if let Some(payload) = payloads.last_mut() {
            if !payload.is_empty() {
                payload.push('\n');
            }
            payload.push_str(name);
        }
    }
    payloads.retain(|p| !p.is_empty());
    payloads
}

/// Starts a bulk write in `tx` (PostgreSQL; nothing on SQLite): the
/// trigger notifies nothing per row until the commit, and other instances
/// are told once, at the commit, to reload every row. For writes of many
/// rows (an import), where a notice per row would cost more than a reload.
pub(crate) async fn bulk_write(tx: &mut DbTx) -> Result<(), sqlx::Error> {
    if let DbTx::Postgres(pg) = tx {
        sqlx::query(
            "SELECT set_config('herald.bulk', 'on', true), \
             pg_notify('herald_destinations', \
             COALESCE(current_setting('herald.instance', true), '') || ' *')",
        )
        .execute(&mut **pg)
        .await?;
    }
    Ok(())
}

/// A listener's connection: a pool of its own (one connection listening,
/// one for its pings, never one of the store's), made anew on every
/// reconnect so a connection that went silent is simply left behind.
struct Connected {
    listener: PgListener,
    pool: PgPool,
    pid: i32,
}

/// Connects a new listener and listens on every channel.
async fn connect(options: &PgConnectOptions) -> Result<Connected, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.clone());
    let connected = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is replaced whole, by `read`.
        listener.eager_reconnect(false);
        listener
            .listen_all([DESTINATIONS, RESETS, QUEUED, PING])
            .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut listener)
            .await?;
        Ok::<_, sqlx::Error>((listener, pid))
    };
    match connected.await {
        Ok((listener, pid)) => Ok(Connected {
            listener,
            pool,
            pid,
        }),
        Err(e) => {
            pool.close().await;
            Err(e)
        }
    }
}

/// The listener, connected and listening (before the index is loaded, so
/// that no write committed after the load goes unheard).
pub(crate) struct Listening {
    connected: Connected,
    options: PgConnectOptions,
    instance: Arc<str>,
}

/// Connects the listener (see [`Connected`]).
pub(crate) async fn listen(url: &str, instance: &str) -> Result<Listening, StoreError> {
    let unreachable = |detail: String| StoreError::PgUnreachable {
        target: crate::synapse::without_password(url),
        detail,
    };
    let options = crate::postgres::connect_options(url, instance)
        .map_err(|e| unreachable(format!("not a PostgreSQL URL: {e}")))?;
    let connected = connect(&options)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(Listening {
        connected,
        options,
        instance: instance.into(),
    })
}

impl Listening {
    /// Starts handling notices for this store: the reader (which
    /// reconnects), its pings, and the task that applies what it hears.
    pub(crate) fn start(
        self,
        destinations: Destinations,
        queued: broadcast::Sender<Queued>,
    ) -> Notices {
        let pid = Arc::new(AtomicI32::new(self.connected.pid));
        let pool = Arc::new(parking_lot::Mutex::new(self.connected.pool.clone()));
        let (tx, rx) = mpsc::channel(BUFFERED);
        let reader = Reader {
            options: self.options,
            tx,
            pid: pid.clone(),
            pool: pool.clone(),
        };
        let tasks = vec![
            tokio::spawn(reader.run(self.connected)),
            tokio::spawn(ping(pool.clone())),
            tokio::spawn(process(rx, self.instance, destinations, queued)),
        ];
        Notices { tasks, pool, pid }
    }

    /// Closes the listener without starting (the store did not open).
    pub(crate) async fn close(self) {
        drop(self.connected.listener);
        self.connected.pool.close().await;
    }
}

/// The running notices of one store; stopped by [`crate::Store::close`].
pub struct Notices {
    tasks: Vec<JoinHandle<()>>,
    /// The listener's pool now.
    pool: Arc<parking_lot::Mutex<PgPool>>,
    pid: Arc<AtomicI32>,
}

impl Notices {
    /// The PostgreSQL backend process of the listener's connection now.
    pub fn backend_pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) async fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let pool = self.pool.lock().clone();
        // A connection that went silent is not waited for.
        let _ = tokio::time::timeout(Duration::from_secs(1), pool.close()).await;
    }
}

/// Pings the listener through its own pool every [`PING_EVERY`], so that a
/// connection that went silent (a network cut without a reset) is noticed.
async fn ping(pool: Arc<parking_lot::Mutex<PgPool>>) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let pool = pool.lock().clone();
        let sent = sqlx::query("SELECT pg_notify('herald_ping', '')").execute(&pool);
        if let Ok(Err(e)) = tokio::time::timeout(PING_EVERY, sent).await {
            tracing::debug!(error = %e, "notices: cannot ping the listener");
        }
    }
}

/// What the reader hands over.
enum Heard {
    Notice(PgNotification),
    /// The listener was lost and listens again: notices may be missing.
    Reconnected,
    /// Nothing heard (a retry's timer).
    Nothing,
}

struct Reader {
    options: PgConnectOptions,
    tx: mpsc::Sender<Heard>,
    pid: Arc<AtomicI32>,
    /// The pool of the connection now, for the pings and the stop.
    pool: Arc<parking_lot::Mutex<PgPool>>,
}

impl Reader {
    /// Reads notices until the store closes. A connection that fails, or
    /// is silent longer than [`SILENCE`] (its own pings would have come),
    /// is left behind and a new one made (pausing up to [`MOST_PAUSE`]
    /// between tries); once it listens, the processing task is told that
    /// notices may be missing.
    async fn run(self, first: Connected) {
        let mut current = Some(first);
        let mut pause = Duration::from_millis(50);
        loop {
            let Some(connected) = current.as_mut() else {
                match connect(&self.options).await {
                    Ok(connected) => {
                        self.pid.store(connected.pid, Ordering::Relaxed);
                        *self.pool.lock() = connected.pool.clone();
                        current = Some(connected);
                        pause = Duration::from_millis(50);
                        tracing::info!("notices from other instances: listening again");
                        if self.tx.send(Heard::Reconnected).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "notices: cannot reconnect yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MOST_PAUSE);
                    }
                }
                continue;
            };
            let lost = match tokio::time::timeout(SILENCE, connected.listener.try_recv()).await {
                Ok(Ok(Some(notice))) if notice.channel() == PING => None,
                Ok(Ok(Some(notice))) => {
                    if self.tx.send(Heard::Notice(notice)).await.is_err() {
                        return;
                    }
                    None
                }
                Ok(Ok(None)) => Some("connection closed".to_owned()),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("nothing heard for {SILENCE:?}")),
            };
            if let Some(why) = lost {
                tracing::warn!(why, "notices from other instances: connection lost");
                // Left behind: closing it may wait on a silent peer.
                current = None;
            }
        }
    }
}

/// What one window's notices ask for.
#[derive(Default)]
struct Batch {
    notices: usize,
    /// Reload the whole index (a reconnect, or a name too long to tell).
    reload: bool,
    names: HashSet<String>,
    resets: HashSet<String>,
    rescan: bool,
    queued: HashSet<String>,
}

impl Batch {
    fn add(&mut self, heard: Heard, instance: &str) {
        self.notices += 1;
        let notice = match heard {
            Heard::Reconnected => {
                self.reload = true;
                self.rescan = true;
                return;
            }
            Heard::Nothing => return,
            Heard::Notice(notice) => notice,
        };
        let Some((from, what)) = notice.payload().split_once(' ') else {
            tracing::debug!(payload = ?notice.payload(), "notices: a payload not Herald's");
            return;
        };
        // Our own writes: applied when they were made.
        if from == instance {
            return;
        }
        match notice.channel() {
            DESTINATIONS if what == EVERYTHING => self.reload = true,
            DESTINATIONS => {
                self.names.insert(what.to_owned());
            }
            RESETS => {
                self.names.insert(what.to_owned());
                self.resets.insert(what.to_owned());
            }
            QUEUED if what == EVERYTHING => self.rescan = true,
            QUEUED => self.queued.extend(
                what.split('\n')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        !self.reload && !self.rescan && self.names.is_empty() && self.queued.is_empty()
    }
}

/// Applies notices a window at a time, in the order heard: rows first, then
/// the resets they carry (so a woken queue reads the cleared backoff), then
/// the queued data.
async fn process(
    mut rx: mpsc::Receiver<Heard>,
    instance: Arc<str>,
    destinations: Destinations,
    queued: broadcast::Sender<Queued>,
) {
    // Rows whose re-read failed, tried again with the next batch.
    let mut pending = Batch::default();
    loop {
        let mut batch = std::mem::take(&mut pending);
        let first = if batch.is_empty() {
            rx.recv().await
        } else {
            // A failed re-read is tried again within a second even if
            // nothing else comes.
            tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .unwrap_or(Some(Heard::Nothing))
        };
        // The store closed.
        let Some(first) = first else { return };
        batch.add(first, &instance);
        let deadline = tokio::time::Instant::now() + WINDOW;
        while batch.notices < NOTICES_PER_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(heard)) => batch.add(heard, &instance),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if let Err(e) = apply_rows(&destinations, &mut batch).await {
            tracing::warn!(error = %e, "notices: cannot re-read destinations; trying again");
            pending.reload = batch.reload;
            pending.names = std::mem::take(&mut batch.names);
        }
        for name in batch.resets.drain() {
            // Nobody listening is fine.
            let _ = destinations.resets.send(name.into());
        }
        if batch.rescan {
            let _ = queued.send(Queued::Rescan);
        } else if !batch.queued.is_empty() {
            let names: Arc<[String]> = batch.queued.drain().collect();
            let _ = queued.send(Queued::Destinations(names));
        }
    }
}

/// Makes the index hold what the database holds for the batch's names (or
/// for every name, on `reload`).
async fn apply_rows(destinations: &Destinations, batch: &mut Batch) -> Result<(), StoreError> {
    if destinations.is_attached() {
        return Ok(());
    }
    if batch.reload {
        let _writer = destinations.writer.lock().await;
        let before = destinations
            .index
            .scan(|index| index.in_backoff())
            .await
            .unwrap_or_default();
        destinations.reload().await?;
        batch.names.clear();
        // Backoffs that ended meanwhile: resets this store may have missed.
        batch.resets.extend(before.into_iter().filter(|name| {
            destinations
                .index
                .get(name)
                .is_none_or(|row| row.retry_last_ts.is_none_or(|ts| ts == 0))
        }));
        return Ok(());
    }
    let names: Vec<String> = batch.names.iter().cloned().collect();
    for chunk in names.chunks(NAMES_PER_READ) {
        destinations.reread(chunk).await?;
        for name in chunk {
            batch.names.remove(name);
        }
    }
    Ok(())
}

impl Destinations {
    /// Re-reads the rows and room counts of `names` in one query and
    /// applies them to the index; a name without a row leaves it. Holds the
    /// writer from the read to the apply, so a write of this store's own
    /// that commits meanwhile is applied after, never overwritten by an
    /// older read.
    async fn reread(&self, names: &[String]) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let _writer = self.writer.lock().await;
        let rows = sqlx::query(
            "SELECT d.destination, d.retry_last_ts, d.retry_interval, d.failure_ts, \
             d.last_successful_stream_ordering, \
             (SELECT COUNT(*) FROM destination_rooms r WHERE r.destination = d.destination) \
             FROM destinations d WHERE d.destination = ANY($1)",
        )
        .bind(names)
        .fetch_all(pool)
        .await?;
        reread_edits(names, &rows, &self.index).await
    }
}

/// The edits that make the index hold `rows` for `names`.
async fn reread_edits(
    names: &[String],
    rows: &[sqlx::postgres::PgRow],
    index: &super::SharedIndex,
) -> Result<(), StoreError> {
    use sqlx::Row as _;
    let mut found: HashSet<String> = HashSet::with_capacity(rows.len());
    let mut edits = Vec::with_capacity(rows.len() * 2 + names.len());
    for row in rows {
        let destination = decode(row)?;
        let rooms: i64 = row.try_get(5)?;
        let name = destination.destination.clone();
        edits.push(Edit::Put(destination));
        edits.push(Edit::RoomCount(name.clone(), rooms.max(0) as u64));
        found.insert(name);
    }
    edits.extend(
        names
            .iter()
            .filter(|n| !found.contains(n.as_str()))
            .map(|n| Edit::Remove(n.clone())),
    );
    index.apply(edits).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_names_are_split_into_payloads_under_the_limit() {
        assert!(queued_payloads([]).is_empty());
        assert_eq!(queued_payloads(["a.org", "b.org"]), ["a.org\nb.org"]);
        let names: Vec<String> = (0..1_000).map(|i| format!("d{i:05}.example.org")).collect();
        let payloads = queued_payloads(names.iter().map(String::as_str));
        assert!(payloads.len() > 1, "{}", payloads.len());
        assert!(payloads.iter().all(|p| p.len() < MOST_PAYLOAD));
        let back: Vec<&str> = payloads.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back, names);
    }

    #[test]
    fn too_many_names_or_one_that_cannot_be_told_ask_for_a_rescan() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("d{i:05}.example.org"))
            .collect();
        assert_eq!(queued_payloads(names.iter().map(String::as_str)), ["*"]);
        assert_eq!(queued_payloads(["a.org", "new\nline"]), ["*"]);
        assert_eq!(queued_payloads(["*"]), ["*"]);
        let long = "x".repeat(MOST_PAYLOAD);
        assert_eq!(queued_payloads([long.as_str()]), ["*"]);
    }
}
