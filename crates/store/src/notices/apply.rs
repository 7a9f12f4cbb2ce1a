//! Applying what the listener heard, a window at a time: the names re-read
//! in one query and put in the index (a row gone leaves it), a reload after
//! a reconnect, then the resets and the queued data told.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::listener::Heard;
use super::{Queued, DESTINATIONS, EVERYTHING, QUEUED, RESETS};
use crate::db::Db;
use crate::destinations::decode;
use crate::shared_index::Edit;
use crate::{Destinations, StoreError};

/// How long names are gathered before they are re-read together.
const WINDOW: Duration = Duration::from_millis(50);
/// Most names re-read by one query.
const NAMES_PER_READ: usize = 2_000;
/// Most notices gathered into one batch (a bulk write's flood is then
/// handled in several).
const NOTICES_PER_BATCH: usize = 20_000;

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
pub(super) async fn process(
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
            // The rescan waits for the reload it follows: told now, the
            // sender's read would meet the same unreachable database.
            if batch.reload && batch.rescan {
                pending.rescan = true;
                batch.rescan = false;
            }
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
    index: &crate::SharedIndex,
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
