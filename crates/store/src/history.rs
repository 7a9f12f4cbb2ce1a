//! Each destination's history (`destination_history`) and its last error
//! and last delivery (`destination_health`): what the federation client
//! and the sender report, kept bounded, read by the admin API.
//!
//! An outage is one `failing` entry: the first failure inserts it, the
//! next ones add to its `count` and move its `last_ts`, and the first
//! success after it adds `recovered` with the outage's length. Which
//! destinations have an outage open is kept in memory (loaded at start),
//! so a success — every request's outcome — costs a hash lookup unless it
//! ends one. Bounds: the newest [`MAX_ENTRIES_PER_DESTINATION`] entries per
//! destination (trimmed as entries are added), nothing older than
//! [`MAX_AGE_MS`] and at most [`MAX_ENTRIES`] in all (pruned in the
//! background by [`Destinations::prune_history`]); an open outage is kept
//! whatever its age.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use herald_shared::{
    DestinationExtras, Failure, FailureKind, HistoryEntry, HistoryEvent, HistoryPage, LastError,
};
use parking_lot::Mutex;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::db::{on_db, on_tx, Db, DbTx};
use super::{now_ms, Destinations, StoreError};

/// Entries kept per destination (the newest).
pub const MAX_ENTRIES_PER_DESTINATION: i64 = 200;
/// Entries older than this are pruned (90 days).
pub const MAX_AGE_MS: i64 = 90 * 86_400_000;
/// Entries kept in all (the oldest go first).
pub const MAX_ENTRIES: i64 = 1_000_000;
/// Most entries one history page holds.
pub const MAX_PAGE: u32 = 200;

/// The outages open now, by destination: the `failing` entry's id and
/// start. Shared by every clone of [`Destinations`].
#[derive(Default)]
pub(crate) struct OpenOutages {
    pub(crate) open: Mutex<HashMap<String, (i64, i64)>>,
    /// Serialises history writes, so that two failures of one destination
    /// never open two outages.
    pub(crate) writer: tokio::sync::Mutex<()>,
}

impl OpenOutages {
    /// The open outages as the table holds them: destinations whose newest
    /// `failing`/`recovered`/`forgotten` entry is `failing`.
    pub(crate) async fn load(pool: &Db) -> Result<OpenOutages, StoreError> {
        let mut open = HashMap::new();
        on_db!(pool, |pool| {
            let mut rows = sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT h.destination, h.id, h.ts FROM destination_history h \
                 WHERE h.event = 'failing' AND h.id = (SELECT MAX(id) FROM destination_history \
                 WHERE destination = h.destination \
                 AND event IN ('failing', 'recovered', 'forgotten'))",
            )
            .fetch(pool);
            while let Some((name, id, ts)) = rows.try_next().await? {
                open.insert(name, (id, ts));
            }
        });
        Ok(OpenOutages {
            open: Mutex::new(open),
            writer: tokio::sync::Mutex::new(()),
        })
    }
}

/// An entry to add (the columns a caller may set).
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    pub count: Option<i64>,
    pub kind: Option<FailureKind>,
    pub message: Option<String>,
    pub outage_ms: Option<i64>,
    pub actor: Option<String>,
}

const SELECT_ENTRY: &str = "SELECT id, ts, event, last_ts, count, kind, message, outage_ms, \
                            actor FROM destination_history";

fn decode_entry<'r, R: Row>(row: &'r R) -> Result<Option<HistoryEntry>, sqlx::Error>
where
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let event: String = row.try_get(2)?;
    // A row this build does not know (a newer Herald's) is skipped.
    let Some(event) = HistoryEvent::parse(&event) else {
        return Ok(None);
    };
    let kind: Option<String> = row.try_get(5)?;
    Ok(Some(HistoryEntry {
        id: row.try_get(0)?,
        ts: row.try_get(1)?,
        event,
        last_ts: row.try_get(3)?,
        count: row.try_get(4)?,
        kind: kind.as_deref().and_then(FailureKind::parse),
        message: row.try_get(6)?,
        outage_ms: row.try_get(7)?,
        actor: row.try_get(8)?,
    }))
}

impl Destinations {
    /// Records a failure: the last error, and in the history the open
    /// outage's count, or — when `outage` (the failure counts against the
    /// destination's backoff) — a new outage.
    pub async fn record_failure(
        &self,
        name: &str,
        failure: &Failure,
        outage: bool,
    ) -> Result<(), StoreError> {
        let (this, name, failure) = (self.clone(), name.to_owned(), failure.clone());
        super::destinations::to_the_end(async move {
            this.record_failure_now(&name, &failure, outage).await
        })
        .await
    }

    async fn record_failure_now(
        &self,
        name: &str,
        failure: &Failure,
        outage: bool,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let _writer = self.outages.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO destination_health (destination, last_error_ts, last_error_kind, \
             last_error_message, last_error_address) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (destination) DO UPDATE SET last_error_ts = excluded.last_error_ts, \
             last_error_kind = excluded.last_error_kind, \
             last_error_message = excluded.last_error_message, \
             last_error_address = excluded.last_error_address",
        )
        .bind(name)
        .bind(now)
        .bind(failure.kind.as_str())
        .bind(&failure.message)
        .bind(&failure.address)
        .execute(conn)
        .await
        .map(drop))?;
        let mut opened = None;
        let open = self.outages.open.lock().get(name).copied();
        if outage || open.is_some() {
            match open {
                Some((id, _)) => {
                    on_tx!(&mut tx, |conn| {
                        sqlx::query(
                        "UPDATE destination_history SET count = count + 1, last_ts = $1 WHERE id = $2",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(conn)
                    .await
                    .map(drop)
                    })?;
                }
                None => {
                    let id = insert_entry(
                        &mut tx,
                        name,
                        now,
                        HistoryEvent::Failing,
                        &NewEntry {
                            count: Some(1),
                            kind: Some(failure.kind),
                            message: Some(failure.message.clone()),
                            ..NewEntry::default()
                        },
                    )
                    .await?;
                    // Open before the commit: a success racing with it
                    // then waits for the writer and closes it.
                    self.outages.open.lock().insert(name.to_owned(), (id, now));
                    opened = Some(id);
                }
            }
        }
        if let Err(e) = tx.commit().await {
            if opened.is_some() {
                self.outages.open.lock().remove(name);
            }
            return Err(e.into());
        }
        if opened.is_some() {
            self.trim_history(name).await?;
        }
        Ok(())
    }

    /// A request to `name` succeeded: ends its outage, if one is open.
    pub async fn record_success(&self, name: &str) -> Result<(), StoreError> {
        if !self.outages.open.lock().contains_key(name) {
            return Ok(());
        }
        let (this, name) = (self.clone(), name.to_owned());
        super::destinations::to_the_end(async move {
            let _writer = this.outages.writer.lock().await;
            let Some((_, since)) = this.outages.open.lock().get(&name).copied() else {
                return Ok(());
            };
            let now = now_ms();
            this.add_entry_now(
                &name,
                now,
                HistoryEvent::Recovered,
                NewEntry {
                    outage_ms: Some((now - since).max(0)),
                    ..NewEntry::default()
                },
            )
            .await?;
            this.outages.open.lock().remove(&name);
            Ok(())
        })
        .await
    }

    /// Adds an entry (a reset, catch-up, a dropped queue) to `name`'s history.
    pub async fn add_history(
        &self,
        name: &str,
        event: HistoryEvent,
        entry: NewEntry,
    ) -> Result<(), StoreError> {
        let (this, name) = (self.clone(), name.to_owned());
        super::destinations::to_the_end(async move {
            let _writer = this.outages.writer.lock().await;
            this.add_entry_now(&name, now_ms(), event, entry).await
        })
        .await
    }

    /// Adds `event` unless the newest of `event` and `closing` in `name`'s
    /// history is already `event` (a catch-up noted and not yet left).
    pub async fn add_history_once(
        &self,
        name: &str,
        event: HistoryEvent,
        closing: HistoryEvent,
        entry: NewEntry,
    ) -> Result<(), StoreError> {
        let (this, name) = (self.clone(), name.to_owned());
        super::destinations::to_the_end(async move {
            let _writer = this.outages.writer.lock().await;
            let newest: Option<String> = on_db!(&this.pool, |pool| sqlx::query_scalar(
                "SELECT event FROM destination_history WHERE destination = $1 \
                 AND event IN ($2, $3) ORDER BY id DESC LIMIT 1",
            )
            .bind(&name)
            .bind(event.as_str())
            .bind(closing.as_str())
            .fetch_optional(pool)
            .await?);
            if newest.as_deref() == Some(event.as_str()) {
                return Ok(());
            }
            this.add_entry_now(&name, now_ms(), event, entry).await
        })
        .await
    }

    /// Adds an entry; the caller holds the history writer.
    pub(crate) async fn add_entry_now(
        &self,
        name: &str,
        now: i64,
        event: HistoryEvent,
        entry: NewEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_entry(&mut tx, name, now, event, &entry).await?;
        tx.commit().await?;
        if event == HistoryEvent::Forgotten {
            self.outages.open.lock().remove(name);
        }
        self.trim_history(name).await
    }

    /// Keeps the newest [`MAX_ENTRIES_PER_DESTINATION`] entries of `name`
    /// (an open outage among older ones stays).
    async fn trim_history(&self, name: &str) -> Result<(), StoreError> {
        let open = self.outages.open.lock().get(name).map(|(id, _)| *id);
        // `$1` twice, `IS DISTINCT FROM` for SQLite's `IS NOT`: one text.
        on_db!(&self.pool, |pool| sqlx::query(
            "DELETE FROM destination_history WHERE destination = $1 AND id <= \
             (SELECT id FROM destination_history WHERE destination = $1 \
             ORDER BY id DESC LIMIT 1 OFFSET $2) AND id IS DISTINCT FROM $3",
        )
        .bind(name)
        .bind(MAX_ENTRIES_PER_DESTINATION)
        .bind(open)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// `name`'s history, newest first: up to `limit` entries older than
    /// the entry `before` (all when `None`). `None` when there is neither
    /// such a destination nor any history of it.
    pub async fn history(
        &self,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        if !self.pool.can_hold(name) {
            return Ok(None);
        }
        let rows: Vec<(i64, Option<HistoryEntry>)> = on_db!(&self.pool, |pool| sqlx::query(
            &format!("{SELECT_ENTRY} WHERE destination = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
        )
        .bind(name)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get::<i64, _>(0)?, decode_entry(row)?)))
        .collect::<Result<_, sqlx::Error>>()?);
        // No entry at all, and no such destination: unknown.
        if rows.is_empty() && self.indexed(name).is_none() {
            let any = match before {
                None => None,
                Some(_) => on_db!(&self.pool, |pool| sqlx::query(
                    "SELECT 1 FROM destination_history WHERE destination = $1 LIMIT 1",
                )
                .bind(name)
                .fetch_optional(pool)
                .await?
                .map(drop)),
            };
            if any.is_none() {
                return Ok(None);
            }
        }
        let more = rows.len() > limit as usize;
        let next_token = if more {
            rows.get(limit as usize - 1).map(|(id, _)| id.to_string())
        } else {
            None
        };
        let entries: Vec<HistoryEntry> = rows
            .into_iter()
            .take(limit as usize)
            .filter_map(|(_, entry)| entry)
            .collect();
        Ok(Some(HistoryPage {
            destination: name.to_owned(),
            entries,
            next_token,
        }))
    }

    /// The last error and last delivery of each of `names` (a page of the
    /// list: one indexed lookup each).
    pub async fn extras(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, DestinationExtras>, StoreError> {
        let mut out = HashMap::with_capacity(names.len());
        if names.is_empty() {
            return Ok(out);
        }
        let list = super::json_array(names.iter().filter(|n| self.pool.can_hold(n)));
        type Health = (
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        on_db!(&self.pool, |pool, pg| {
            let mut rows = sqlx::query_as::<_, Health>(if pg {
                "SELECT destination, last_error_ts, last_error_kind, last_error_message, \
                 last_error_address, last_delivered_ts FROM destination_health \
                 WHERE destination IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))"
            } else {
                "SELECT destination, last_error_ts, last_error_kind, last_error_message, \
                 last_error_address, last_delivered_ts FROM destination_health \
                 WHERE destination IN (SELECT value FROM json_each(?))"
            })
            .bind(&list)
            .fetch(pool);
            while let Some((destination, ts, kind, message, address, delivered)) =
                rows.try_next().await?
            {
                let last_error = match (ts, kind.as_deref().and_then(FailureKind::parse)) {
                    (Some(ts), Some(kind)) => Some(LastError {
                        ts,
                        kind,
                        message: message.unwrap_or_default(),
                        address,
                    }),
                    _ => None,
                };
                out.insert(
                    destination,
                    DestinationExtras {
                        last_error,
                        last_delivered_ts: delivered,
                    },
                );
            }
        });
        Ok(out)
    }

    /// Removes entries past the bounds: older than [`MAX_AGE_MS`] (but an
    /// open outage), then the oldest beyond [`MAX_ENTRIES`]; at most
    /// `batch` rows per call. Returns how many went.
    pub async fn prune_history(&self, batch: u32) -> Result<u64, StoreError> {
        let cutoff = now_ms() - MAX_AGE_MS;
        let open: Vec<i64> = self
            .outages
            .open
            .lock()
            .values()
            .map(|(id, _)| *id)
            .collect();
        let open = serde_json::Value::from(open).to_string();
        let old = on_db!(&self.pool, |pool, pg| sqlx::query(if pg {
            "DELETE FROM destination_history WHERE id IN (SELECT id FROM destination_history \
             WHERE COALESCE(last_ts, ts) < $1 AND id NOT IN \
             (SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text($2::jsonb)) \
             ORDER BY ts LIMIT $3)"
        } else {
            "DELETE FROM destination_history WHERE id IN (SELECT id FROM destination_history \
             WHERE COALESCE(last_ts, ts) < ? \
             AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY ts LIMIT ?)"
        })
        .bind(cutoff)
        .bind(&open)
        .bind(i64::from(batch))
        .execute(pool)
        .await?
        .rows_affected());
        let total: i64 = on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM destination_history"
        )
        .fetch_one(pool)
        .await?);
        let excess = (total - MAX_ENTRIES).clamp(0, i64::from(batch));
        let over = if excess > 0 {
            on_db!(&self.pool, |pool, pg| sqlx::query(if pg {
                "DELETE FROM destination_history WHERE id IN (SELECT id FROM destination_history \
                 WHERE id NOT IN \
                 (SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text($1::jsonb)) \
                 ORDER BY id LIMIT $2)"
            } else {
                "DELETE FROM destination_history WHERE id IN (SELECT id FROM destination_history \
                 WHERE id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
            })
            .bind(&open)
            .bind(excess)
            .execute(pool)
            .await?
            .rows_affected())
        } else {
            0
        };
        Ok(old + over)
    }
}

/// Inserts an entry; its id (`RETURNING`, on both backends).
async fn insert_entry(
    tx: &mut DbTx,
    name: &str,
    now: i64,
    event: HistoryEvent,
    entry: &NewEntry,
) -> Result<i64, StoreError> {
    let last_ts = (event == HistoryEvent::Failing).then_some(now);
    let id = on_tx!(tx, |conn| sqlx::query_scalar(
        "INSERT INTO destination_history (destination, ts, event, last_ts, count, kind, \
         message, outage_ms, actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(name)
    .bind(now)
    .bind(event.as_str())
    .bind(last_ts)
    .bind(entry.count)
    .bind(entry.kind.map(FailureKind::as_str))
    .bind(&entry.message)
    .bind(entry.outage_ms)
    .bind(&entry.actor)
    .fetch_one(conn)
    .await?);
    Ok(id)
}

/// Shared so every clone of [`Destinations`] sees the same open outages.
pub(crate) type SharedOutages = Arc<OpenOutages>;
