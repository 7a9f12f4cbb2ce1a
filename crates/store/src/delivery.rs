//! What the sender reads and records per destination: the next batch of
//! queued PDUs and EDUs, the newest undelivered event of each room (catch-up),
//! what a destination acknowledged ([`Delivery`], committed by the outbox's
//! group-commit writer), the destinations with anything queued (start-up),
//! and blocks of transaction IDs that keep growing across restarts.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::db::{on_db, on_tx, Db, DbTx};
use super::{Outbox, StoreError};

/// EDU types that describe a moment and are dropped from a destination's
/// queue when it enters catch-up after a long outage (Synapse drops
/// presence, typing and receipts; to-device-like EDUs stay).
pub const VOLATILE_EDU_TYPES: [&str; 3] = ["m.presence", "m.typing", "m.receipt"];

/// A PDU waiting for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPdu {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub pdu_json: String,
    /// `pdu_json` is canonical JSON (the intake wrote it so); older rows
    /// may not be.
    pub canonical: bool,
}

/// An EDU waiting for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEdu {
    pub id: i64,
    pub edu_type: String,
    pub content_json: String,
    /// `content_json` is canonical JSON (see [`PendingPdu::canonical`]).
    pub canonical: bool,
}

/// The newest event of a room a destination has not been sent, for
/// catch-up. `pdu` is `None` when the event is not in `outgoing_events`
/// (rows written by something other than the intake, e.g. imported data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUpEvent {
    pub stream_ordering: i64,
    pub room_id: String,
    pub pdu: Option<PendingPdu>,
}

/// What a destination acknowledged in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub destination: String,
    /// Stream orderings of the PDUs it was sent.
    pub pdus: Vec<i64>,
    /// IDs of the EDUs it was sent.
    pub edus: Vec<i64>,
    /// Catch-up: the room whose newest event it was sent; the PDUs of that
    /// room queued for it up to that event are superseded and leave its
    /// queue.
    pub superseded: Option<Superseded>,
    /// Catch-up passed a room whose newest event Herald does not hold
    /// (imported rows): `last_successful_stream_ordering` moves past it,
    /// nothing leaves the queue.
    pub passed: Option<i64>,
}

/// A room's queued PDUs up to a stream ordering, superseded by its newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub room_id: String,
    pub up_to: i64,
}

impl Delivery {
    /// The newest stream ordering it covers: the destination's
    /// `last_successful_stream_ordering` from now on.
    pub fn newest(&self) -> Option<i64> {
        self.pdus
            .iter()
            .copied()
            .max()
            .max(self.superseded.as_ref().map(|s| s.up_to))
            .max(self.passed)
    }

    /// Removes the PDUs and EDUs it was sent from its queues. By primary
    /// key on both backends: on PostgreSQL the orderings go in as an array
    /// (`= ANY`), which keeps both key columns in the index condition
    /// whatever the statistics say (a queue's are always stale; a plan that
    /// matched the destination alone read its whole backlog per delivery).
    async fn dequeue(&self, tx: &mut DbTx) -> Result<(), StoreError> {
        for (ids, pg_text, sqlite_text) in [
            (
                &self.pdus,
                "DELETE FROM destination_pdus WHERE destination = $1 \
                 AND stream_ordering = ANY($2::bigint[])",
                "DELETE FROM destination_pdus WHERE destination = ? \
                 AND stream_ordering IN (SELECT value FROM json_each(?))",
            ),
            (
                &self.edus,
                "DELETE FROM destination_edus WHERE destination = $1 AND id = ANY($2::bigint[])",
                "DELETE FROM destination_edus WHERE destination = ? \
                 AND id IN (SELECT value FROM json_each(?))",
            ),
        ] {
            if ids.is_empty() {
                continue;
            }
            match tx {
                DbTx::Postgres(tx) => sqlx::query(pg_text)
                    .bind(&self.destination)
                    .bind(ids)
                    .execute(&mut **tx)
                    .await
                    .map(drop)?,
                DbTx::Sqlite(tx) => sqlx::query(sqlite_text)
                    .bind(&self.destination)
                    .bind(int_array(ids))
                    .execute(&mut **tx)
                    .await
                    .map(drop)?,
            }
        }
        if let Some(Superseded { room_id, up_to }) = &self.superseded {
            on_tx!(tx, |conn| sqlx::query(
                "DELETE FROM destination_pdus WHERE destination = $1 AND stream_ordering <= $2 \
                 AND stream_ordering IN (SELECT stream_ordering FROM outgoing_events \
                 WHERE room_id = $3 AND stream_ordering <= $2)",
            )
            .bind(&self.destination)
            .bind(up_to)
            .bind(room_id)
            .execute(conn)
            .await
            .map(drop))?;
        }
        Ok(())
    }

    /// Removes what `deliveries` delivered from the queues and moves each
    /// destination's `last_successful_stream_ordering` forward (never
    /// back): a handful of statements for the whole group commit, whatever
    /// the number of transactions in it on PostgreSQL (rows go in as
    /// arrays; every statement is a round trip, and the writer is serial).
    /// `newest` is each destination's newest ordering delivered (the
    /// writer computes it for the index edits already).
    pub(super) async fn apply_all(
        deliveries: &[&Delivery],
        newest: &BTreeMap<&str, i64>,
        tx: &mut DbTx,
    ) -> Result<(), StoreError> {
        for delivery in deliveries {
            delivery.dequeue(tx).await?;
        }
        let now = super::now_ms();
        // One entry per destination: PostgreSQL refuses an upsert that
        // touches a row twice.
        let reached: BTreeSet<&str> = deliveries
            .iter()
            .filter(|d| !d.pdus.is_empty() || !d.edus.is_empty())
            .map(|d| d.destination.as_str())
            .collect();
        match tx {
            // Two statements for all of them (each is a round trip).
            DbTx::Postgres(tx) => {
                if !reached.is_empty() {
                    sqlx::query(
                        "INSERT INTO destination_health (destination, last_delivered_ts) \
                         SELECT d, $2 FROM unnest($1::text[]) AS d \
                         ON CONFLICT (destination) \
                         DO UPDATE SET last_delivered_ts = excluded.last_delivered_ts",
                    )
                    .bind(reached.into_iter().collect::<Vec<_>>())
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                if !newest.is_empty() {
                    let (names, orderings): (Vec<&str>, Vec<i64>) = newest.iter().unzip();
                    sqlx::query(
                        "UPDATE destinations SET last_successful_stream_ordering = j.so \
                         FROM unnest($1::text[], $2::bigint[]) AS j(d, so) \
                         WHERE destinations.destination = j.d \
                         AND (last_successful_stream_ordering IS NULL \
                         OR last_successful_stream_ordering < j.so)",
                    )
                    .bind(names)
                    .bind(orderings)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            // A statement per destination, by primary key (SQLite's
            // statements cost no network).
            DbTx::Sqlite(tx) => {
                for destination in reached {
                    sqlx::query(
                        "INSERT INTO destination_health (destination, last_delivered_ts) \
                         VALUES (?, ?) ON CONFLICT (destination) \
                         DO UPDATE SET last_delivered_ts = excluded.last_delivered_ts",
                    )
                    .bind(destination)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                for (destination, ordering) in newest {
                    let (destination, ordering) = (*destination, *ordering);
                    sqlx::query(
                        "UPDATE destinations SET last_successful_stream_ordering = ?1 \
                         WHERE destination = ?2 AND (last_successful_stream_ordering IS NULL \
                         OR last_successful_stream_ordering < ?1)",
                    )
                    .bind(ordering)
                    .bind(destination)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}

fn int_array(values: &[i64]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

fn decode_pdu<'r, R: Row>(r: &'r R) -> Result<PendingPdu, sqlx::Error>
where
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(PendingPdu {
        stream_ordering: r.try_get(0)?,
        event_id: r.try_get(1)?,
        room_id: r.try_get(2)?,
        pdu_json: r.try_get(3)?,
        canonical: r.try_get::<i64, _>(4)? != 0,
    })
}

impl Outbox {
    /// Up to `limit` PDUs still to deliver to `destination`, oldest first.
    pub async fn pending_pdus(
        &self,
        destination: &str,
        limit: u32,
    ) -> Result<Vec<PendingPdu>, StoreError> {
        self.pending_pdus_between(destination, i64::MIN, i64::MAX, limit)
            .await
    }

    /// The same, only those with a stream ordering after `after` and up to
    /// `up_to`: a transaction retried with what it held before, or the
    /// next batch of a long queue read from where the last one ended (on
    /// PostgreSQL a deleted row's index entry stays until vacuum, and a
    /// read from the start of a long-drained queue walks them all).
    pub async fn pending_pdus_between(
        &self,
        destination: &str,
        after: i64,
        up_to: i64,
        limit: u32,
    ) -> Result<Vec<PendingPdu>, StoreError> {
        let pdus = on_db!(&self.pool, |pool| sqlx::query(
            "SELECT p.stream_ordering, e.event_id, e.room_id, e.json, e.canonical \
             FROM destination_pdus p \
             JOIN outgoing_events e ON e.stream_ordering = p.stream_ordering \
             WHERE p.destination = $1 AND p.stream_ordering > $2 AND p.stream_ordering <= $3 \
             ORDER BY p.stream_ordering LIMIT $4",
        )
        .bind(destination)
        .bind(after)
        .bind(up_to)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_pdu)
        .collect::<Result<_, _>>());
        Ok(pdus?)
    }

    /// Up to `limit` EDUs still to deliver to `destination`, oldest first.
    pub async fn pending_edus(
        &self,
        destination: &str,
        limit: u32,
    ) -> Result<Vec<PendingEdu>, StoreError> {
        self.pending_edus_up_to(destination, limit, i64::MAX).await
    }

    /// The same, only those with an ID up to `up_to`.
    pub async fn pending_edus_up_to(
        &self,
        destination: &str,
        limit: u32,
        up_to: i64,
    ) -> Result<Vec<PendingEdu>, StoreError> {
        let rows: Vec<(i64, String, String, i64)> = on_db!(&self.pool, |pool| {
            sqlx::query_as(
            "SELECT id, edu_type, content, canonical FROM destination_edus WHERE destination = $1 \
             AND id <= $2 ORDER BY id LIMIT $3",
        )
        .bind(destination)
        .bind(up_to)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, edu_type, content_json, canonical)| PendingEdu {
                id,
                edu_type,
                content_json,
                canonical: canonical != 0,
            })
            .collect())
    }

    /// Catch-up: for up to `limit` rooms whose newest event for
    /// `destination` is after `after`, that event, oldest first.
    pub async fn catch_up_events(
        &self,
        destination: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<CatchUpEvent>, StoreError> {
        type Row = (i64, String, Option<String>, Option<String>, Option<i64>);
        let rows: Vec<Row> = on_db!(&self.pool, |pool| sqlx::query_as(
            "SELECT r.stream_ordering, r.room_id, e.event_id, e.json, e.canonical \
             FROM destination_rooms r \
             LEFT JOIN outgoing_events e ON e.stream_ordering = r.stream_ordering \
             WHERE r.destination = $1 AND r.stream_ordering > $2 \
             ORDER BY r.stream_ordering LIMIT $3",
        )
        .bind(destination)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(stream_ordering, room_id, event_id, json, canonical)| {
                let canonical = canonical.is_some_and(|c| c != 0);
                CatchUpEvent {
                    pdu: event_id.zip(json).map(|(event_id, pdu_json)| PendingPdu {
                        stream_ordering,
                        event_id,
                        room_id: room_id.clone(),
                        pdu_json,
                        canonical,
                    }),
                    stream_ordering,
                    room_id,
                }
            })
            .collect())
    }

    /// Drops the presence, typing and receipt EDUs queued for
    /// `destination` (catch-up after a long outage); how many.
    pub async fn drop_volatile_edus(&self, destination: &str) -> Result<u64, StoreError> {
        Ok(on_db!(&self.pool, |pool, pg| sqlx::query(if pg {
            "DELETE FROM destination_edus WHERE destination = $1 \
             AND edu_type IN (SELECT value FROM jsonb_array_elements_text($2::jsonb))"
        } else {
            "DELETE FROM destination_edus WHERE destination = ? \
             AND edu_type IN (SELECT value FROM json_each(?))"
        })
        .bind(destination)
        .bind(super::json_array(VOLATILE_EDU_TYPES))
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// Removes these PDUs and EDUs from `destination`'s queue undelivered
    /// (they can never be sent); `last_successful_stream_ordering` stays.
    pub async fn drop_queued(
        &self,
        destination: &str,
        pdus: &[i64],
        edus: &[i64],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |conn, pg| sqlx::query(if pg {
            "DELETE FROM destination_pdus WHERE destination = $1 AND stream_ordering IN \
             (SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text($2::jsonb))"
        } else {
            "DELETE FROM destination_pdus WHERE destination = ? \
             AND stream_ordering IN (SELECT value FROM json_each(?))"
        })
        .bind(destination)
        .bind(int_array(pdus))
        .execute(conn)
        .await
        .map(drop))?;
        on_tx!(&mut tx, |conn, pg| sqlx::query(if pg {
            "DELETE FROM destination_edus WHERE destination = $1 AND id IN \
             (SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text($2::jsonb))"
        } else {
            "DELETE FROM destination_edus WHERE destination = ? \
             AND id IN (SELECT value FROM json_each(?))"
        })
        .bind(destination)
        .bind(int_array(edus))
        .execute(conn)
        .await
        .map(drop))?;
        tx.commit().await?;
        Ok(())
    }

    /// Empties `destination`'s queue (it may no longer be federated with);
    /// how many rows went.
    pub async fn drop_all_queued(&self, destination: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut dropped = 0;
        for table in ["destination_pdus", "destination_edus"] {
            dropped += on_tx!(&mut tx, |conn| sqlx::query(&format!(
                "DELETE FROM {table} WHERE destination = $1"
            ))
            .bind(destination)
            .execute(conn)
            .await?
            .rows_affected());
        }
        tx.commit().await?;
        Ok(dropped)
    }

    /// Every destination with a PDU or EDU still queued (start-up).
    pub async fn destinations_with_pending(&self) -> Result<Vec<String>, StoreError> {
        Ok(on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT DISTINCT destination FROM destination_pdus \
             UNION SELECT DISTINCT destination FROM destination_edus",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Every destination with a PDU queued after stream ordering `pdus` or
    /// an EDU after ID `edus` still undelivered (two range reads of
    /// indexes: what was queued lately, here or through another instance).
    pub async fn destinations_queued_after(
        &self,
        pdus: i64,
        edus: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT DISTINCT destination FROM destination_pdus WHERE stream_ordering > $1 \
             UNION SELECT DISTINCT destination FROM destination_edus WHERE id > $2",
        )
        .bind(pdus)
        .bind(edus)
        .fetch_all(pool)
        .await?))
    }

    /// The newest stream ordering and EDU ID ever queued (both from a
    /// primary key's end): when either moves, something was queued, by
    /// this instance or another on the same database.
    pub async fn queue_marks(&self) -> Result<(i64, i64), StoreError> {
        Ok(on_db!(&self.pool, |pool| sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(stream_ordering), 0) FROM outgoing_events), \
             (SELECT COALESCE(MAX(id), 0) FROM destination_edus)",
        )
        .fetch_one(pool)
        .await?))
    }

    /// Reserves `count` transaction IDs and returns the first. IDs handed
    /// out are never handed out again, even after a crash: the reservation
    /// is committed before any of them is used.
    pub async fn reserve_txn_ids(&self, count: u32) -> Result<i64, StoreError> {
        // (`herald_meta.value`: PostgreSQL would not know which `value`.)
        let end: String = on_db!(&self.pool, |pool| sqlx::query_scalar(
            "INSERT INTO herald_meta (key, value) VALUES ('txn_ids_reserved', $1) \
             ON CONFLICT (key) DO UPDATE SET \
             value = CAST(CAST(herald_meta.value AS BIGINT) + $2 AS TEXT) \
             RETURNING value",
        )
        .bind(i64::from(count).to_string())
        .bind(i64::from(count))
        .fetch_one(pool)
        .await?);
        let end: i64 = end.parse().map_err(|_| StoreError::Corrupt {
            what: format!("herald_meta txn_ids_reserved = {end:?}"),
        })?;
        Ok(end - i64::from(count) + 1)
    }
}

impl Outbox {
    /// When the oldest PDU still queued for some destination was accepted.
    /// Scans the queue (metrics scrapes only).
    pub async fn oldest_undelivered_ts(&self) -> Result<Option<i64>, StoreError> {
        Ok(on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT received_ts FROM outgoing_events WHERE stream_ordering = \
             (SELECT MIN(stream_ordering) FROM destination_pdus)",
        )
        .fetch_optional(pool)
        .await?))
    }
}

/// What is queued over all destinations (the sender page and the
/// `..._pending_pdus`/`_edus` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub pdus: u64,
    pub edus: u64,
}

/// One of the destinations with the most queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDestination {
    pub destination: String,
    pub pdus: u64,
    pub edus: u64,
}

impl Outbox {
    /// How many PDUs and EDUs are queued over all destinations. Counts the
    /// queue tables (metrics scrapes and the sender page only).
    pub async fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        let (pdus, edus): (i64, i64) = on_db!(&self.pool, |pool| sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM destination_pdus), \
             (SELECT COUNT(*) FROM destination_edus)",
        )
        .fetch_one(pool)
        .await?);
        Ok(QueueTotals {
            pdus: pdus.max(0) as u64,
            edus: edus.max(0) as u64,
        })
    }

    /// The `limit` destinations with the most queued (PDUs + EDUs), most
    /// first, ties by name. One pass over each queue table's primary index
    /// (grouped by destination); at most `limit` rows come back.
    pub async fn top_queued(&self, limit: u32) -> Result<Vec<QueuedDestination>, StoreError> {
        // CASTs: PostgreSQL's SUM of a BIGINT is NUMERIC; a subquery needs an alias.
        let rows: Vec<(String, i64, i64)> = on_db!(&self.pool, |pool| sqlx::query_as(
            "SELECT destination, CAST(SUM(pdus) AS BIGINT), CAST(SUM(edus) AS BIGINT) FROM ( \
               SELECT destination, COUNT(*) AS pdus, CAST(0 AS BIGINT) AS edus \
               FROM destination_pdus GROUP BY destination \
               UNION ALL \
               SELECT destination, CAST(0 AS BIGINT), COUNT(*) FROM destination_edus \
               GROUP BY destination \
             ) AS queued GROUP BY destination ORDER BY SUM(pdus) + SUM(edus) DESC, destination \
             LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(destination, pdus, edus)| QueuedDestination {
                destination,
                pdus: pdus.max(0) as u64,
                edus: edus.max(0) as u64,
            })
            .collect())
    }
}

/// What is queued for one destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuedCounts {
    pub pdus: u64,
    pub edus: u64,
    /// When the oldest queued PDU was accepted.
    pub oldest_pdu_ts: Option<i64>,
}

impl Outbox {
    /// How much is queued for `destination` (the admin's queue view).
    pub async fn queued_counts(&self, destination: &str) -> Result<QueuedCounts, StoreError> {
        if !self.pool.can_hold(destination) {
            return Ok(QueuedCounts::default());
        }
        let (pdus, first): (i64, Option<i64>) = on_db!(&self.pool, |pool| {
            sqlx::query_as(
            "SELECT COUNT(*), MIN(stream_ordering) FROM destination_pdus WHERE destination = $1",
        )
        .bind(destination)
        .fetch_one(pool)
        .await?
        });
        let edus: i64 = on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM destination_edus WHERE destination = $1"
        )
        .bind(destination)
        .fetch_one(pool)
        .await?);
        let oldest_pdu_ts = match first {
            Some(so) => on_db!(&self.pool, |pool| sqlx::query_scalar(
                "SELECT received_ts FROM outgoing_events WHERE stream_ordering = $1",
            )
            .bind(so)
            .fetch_optional(pool)
            .await?),
            None => None,
        };
        Ok(QueuedCounts {
            pdus: pdus.max(0) as u64,
            edus: edus.max(0) as u64,
            oldest_pdu_ts,
        })
    }
}

/// The oldest accepted events (up to `$1`) that no destination needs any
/// more: below every queued ordering, and no room's newest event for any
/// destination (catch-up may still send those).
const PRUNABLE: &str = "SELECT e.stream_ordering FROM outgoing_events e WHERE e.stream_ordering < \
     (SELECT COALESCE(MIN(stream_ordering), 9223372036854775807) FROM destination_pdus) \
     AND NOT EXISTS (SELECT 1 FROM destination_rooms r \
     WHERE r.room_id = e.room_id AND r.stream_ordering = e.stream_ordering) \
     ORDER BY e.stream_ordering LIMIT $1";

impl Outbox {
    /// Deletes up to `limit` accepted events no destination needs any more:
    /// queued for none, and not the newest event of a room for any
    /// destination (catch-up may still send those). How many went.
    pub async fn prune_delivered_events(&self, limit: u32) -> Result<u64, StoreError> {
        let limit = i64::from(limit);
        match &self.pool {
            // One statement, under the single writer, so that an event queued
            // again (keeping its old ordering) by an intake commit is either
            // seen as queued or pruned before that commit, which then stores
            // it anew; the queue's foreign key backs this up.
            Db::Sqlite(pool) => Ok(sqlx::query(&format!(
                "DELETE FROM outgoing_events WHERE stream_ordering IN ({PRUNABLE})"
            ))
            .bind(limit)
            .execute(pool)
            .await?
            .rows_affected()),
            // No foreign key here (migration 0008), and a statement's
            // snapshot would miss a queue row committed while it waited for
            // a lock. So: lock the candidates first, skipping any an intake
            // holds `FOR SHARE` (it is queuing them again); an intake that
            // comes later waits, then finds them gone and stores them anew.
            // Then delete in a second statement, whose snapshot holds every
            // commit made before the locks, only those still unqueued.
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let candidates: Vec<i64> =
                    sqlx::query_scalar(&format!("{PRUNABLE} FOR UPDATE OF e SKIP LOCKED"))
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                if candidates.is_empty() {
                    return Ok(0);
                }
                let deleted = sqlx::query(
                    "DELETE FROM outgoing_events e WHERE e.stream_ordering = ANY($1::bigint[]) \
                     AND NOT EXISTS (SELECT 1 FROM destination_pdus p \
                     WHERE p.stream_ordering = e.stream_ordering) \
                     AND NOT EXISTS (SELECT 1 FROM destination_rooms r \
                     WHERE r.room_id = e.room_id AND r.stream_ordering = e.stream_ordering)",
                )
                .bind(&candidates)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }
        }
    }
}
