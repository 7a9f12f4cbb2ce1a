//! The `destinations` and `destination_rooms` tables: the admin API's reads
//! (the list through the in-memory index, details and rooms through SQL)
//! and the writes that change a destination's health.

use herald_shared::{
    next_token, DestinationDetails, DestinationRoom, DestinationsPage, DestinationsQuery,
    Direction, FederationSummary, RoomsPage, RoomsQuery,
};
use std::path::Path;

use futures_util::TryStreamExt;
use rusqlite::types::ValueRef;
use rusqlite::OpenFlags;
use sqlx::postgres::PgPool;
use sqlx::{ColumnIndex, Decode, Row, Type};

use std::sync::Arc;

use herald_federation::backoff::{BackoffStore, StorageError, StoreFuture};
use herald_federation::RetryTimings;
use tokio::sync::broadcast;

use super::db::{on_db, on_tx, Db};
use super::shared_index::{Edit, SharedIndex};
use super::{DestinationIndex, DestinationRow, NullsOrder, StoreError};

/// Resets a slow listener may fall behind by before it is told it lagged.
const RESETS_BUFFERED: usize = 256;

/// The `destinations` family: reads for the admin API and the writes that
/// change a destination's health, with the in-memory index kept in step.
#[derive(Clone)]
pub struct Destinations {
    pub(crate) pool: Db,
    pub(crate) index: SharedIndex,
    /// Serialises writes to `destinations` so the index sees them in commit order.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
    /// Destinations whose backoff an admin reset, told after the commit (a
    /// request sleeping between retries, a sender queue, wake up on it).
    pub(crate) resets: broadcast::Sender<Arc<str>>,
    /// Outages open now, and the history's writer (see `history`).
    pub(crate) outages: super::history::SharedOutages,
    /// Attached mode: rows come from Synapse's database (see `synapse`).
    pub(crate) attached: Option<Arc<super::synapse::Attached>>,
}

const SELECT_ROW: &str = "SELECT destination, retry_last_ts, retry_interval, failure_ts, \
                          last_successful_stream_ordering FROM destinations";

/// [`SELECT_ROW`]'s columns and the `rowid`, without the `FROM`.
const SELECT_ROW_ROWID: &str = "SELECT destination, retry_last_ts, retry_interval, failure_ts, \
                                last_successful_stream_ordering, rowid";

/// A `destinations` row read with [`SELECT_ROW`], from either backend.
pub(crate) fn decode<'r, R: Row>(row: &'r R) -> Result<DestinationRow, sqlx::Error>
where
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(DestinationRow {
        destination: row.try_get(0)?,
        retry_last_ts: row.try_get(1)?,
        retry_interval: row.try_get(2)?,
        failure_ts: row.try_get(3)?,
        last_successful_stream_ordering: row.try_get(4)?,
    })
}

/// Every row of `destinations` with its room count, read straight into the
/// index on a connection of its own (rusqlite: sqlx decodes a row in about
/// 2 µs and allocates its name, which made loading 1M rows take seconds).
/// The room counts are read on a second connection meanwhile.
fn load_index(path: &Path) -> Result<DestinationIndex, StoreError> {
    load_index_with(path, true, None)
}

/// Called with each row's `rowid`, name and numeric columns as the load
/// reads it.
pub(crate) type OnRow<'a> = &'a mut dyn FnMut(i64, &str, [Option<i64>; 4]);

/// [`load_index`] of the `destinations` table in the SQLite file at `path`
/// (Herald's, or attached, Synapse's, opened read-only either way), with
/// the room counts or without (attached reads them from Synapse at each
/// request). With `on_row`, the rows are read with their `rowid` and each
/// is also handed to it (attached: the refresh's bucket sums), from the
/// same statement, so from the same snapshot.
pub(crate) fn load_index_with(
    path: &Path,
    room_counts: bool,
    mut on_row: Option<OnRow<'_>>,
) -> Result<DestinationIndex, StoreError> {
    std::thread::scope(|scope| {
        let counts = scope.spawn(|| {
            if room_counts {
                load_room_counts(path)
            } else {
                Ok(RoomCounts::default())
            }
        });
        let conn = open_for_load(path)?;
        let mut builder = DestinationIndex::builder(NullsOrder::Smallest);
        let sql = match on_row {
            Some(_) => format!("{SELECT_ROW_ROWID} FROM destinations"),
            None => SELECT_ROW.to_owned(),
        };
        let mut stmt = conn.prepare(&sql).map_err(load_error)?;
        let mut rows = stmt.query([]).map_err(load_error)?;
        while let Some(row) = rows.next().map_err(load_error)? {
            let name = match row.get_ref(0).map_err(load_error)? {
                ValueRef::Text(bytes) => {
                    std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
                        what: "a destination name that is not UTF-8".into(),
                    })?
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "a destination name that is not text".into(),
                    })
                }
            };
            let column = |i: usize| {
                row.get::<_, Option<i64>>(i)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("destinations row {name:?}: {e}"),
                    })
            };
            let columns = [column(1)?, column(2)?, column(3)?, column(4)?];
            if let Some(on_row) = on_row.as_mut() {
                let rowid: i64 = row.get(5).map_err(load_error)?;
                on_row(rowid, name, columns);
            }
            builder.push_columns(name, columns, 0);
        }
        let mut index = builder.finish();
        let counts = counts
            .join()
            .map_err(|_| StoreError::Task("reading room counts".into()))??;
        for (name, rooms) in counts.iter() {
            index.set_room_count(name, rooms);
        }
        Ok(index)
    })
}

/// A read-only connection for the start-up load.
fn open_for_load(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(load_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(load_error)?;
    Ok(conn)
}

fn load_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt {
            what: e.to_string(),
        },
        _ => StoreError::Load(e.to_string()),
    }
}

/// Room counts by destination, names in one buffer (no string a row).
#[derive(Default)]
struct RoomCounts {
    names: String,
    /// End of each name in `names`, and its count.
    ends: Vec<(usize, u64)>,
}

impl RoomCounts {
    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        let mut start = 0;
        self.ends.iter().map(move |&(end, count)| {
            let name = self.names.get(start..end).unwrap_or("");
            start = end;
            (name, count)
        })
    }
}

/// How many rooms each destination has, for the rooms list's `total`.
fn load_room_counts(path: &Path) -> Result<RoomCounts, StoreError> {
    let conn = open_for_load(path)?;
    let mut stmt = conn
        .prepare("SELECT destination, COUNT(*) FROM destination_rooms GROUP BY destination")
        .map_err(load_error)?;
    let mut rows = stmt.query([]).map_err(load_error)?;
    let mut out = RoomCounts::default();
    while let Some(row) = rows.next().map_err(load_error)? {
        if let ValueRef::Text(bytes) = row.get_ref(0).map_err(load_error)? {
            if let Ok(name) = std::str::from_utf8(bytes) {
                out.names.push_str(name);
                let count: i64 = row.get(1).map_err(load_error)?;
                out.ends.push((out.names.len(), count.max(0) as u64));
            }
        }
    }
    Ok(out)
}

/// [`load_index`] on PostgreSQL: every row of `destinations` streamed
/// into the builder (NULLs ordered as Herald orders them, as on SQLite),
/// then the room counts.
async fn load_index_pg(pool: &PgPool) -> Result<DestinationIndex, StoreError> {
    let mut builder = DestinationIndex::builder(NullsOrder::Smallest);
    let mut rows = sqlx::query(SELECT_ROW).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let name: &str = row.try_get(0)?;
        let columns = [
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        ];
        builder.push_columns(name, columns, 0);
    }
    drop(rows);
    let mut index = tokio::task::spawn_blocking(move || builder.finish())
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
    let mut counts =
        sqlx::query("SELECT destination, COUNT(*) FROM destination_rooms GROUP BY destination")
            .fetch(pool);
    while let Some(row) = counts.try_next().await? {
        let count: i64 = row.try_get(1)?;
        index.set_room_count(row.try_get(0)?, count.max(0) as u64);
    }
    Ok(index)
}

/// The index of Herald's own rows, loaded as at start-up: from the SQLite
/// file with rusqlite, or streamed from PostgreSQL.
async fn load_own_index(pool: &Db) -> Result<DestinationIndex, StoreError> {
    match pool {
        Db::Sqlite(pool) => {
            let path = pool.connect_options().get_filename().to_owned();
            tokio::task::spawn_blocking(move || load_index(&path))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        }
        Db::Postgres(pool) => load_index_pg(pool).await,
    }
}

/// What `reset_connection` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    Unknown,
    NotInBackoff,
    Reset,
}

impl Destinations {
    /// Loads the index from the committed rows of the database at `path`
    /// (or, without `read_rows`, starts with an empty one).
    pub(crate) async fn load(
        pool: Db,
        path: Option<&Path>,
        read_rows: bool,
    ) -> Result<Destinations, StoreError> {
        let index = if read_rows {
            match path {
                Some(path) => {
                    let path = path.to_owned();
                    tokio::task::spawn_blocking(move || load_index(&path))
                        .await
                        .map_err(|e| StoreError::Task(e.to_string()))??
                }
                None => load_own_index(&pool).await?,
            }
        } else {
            DestinationIndex::builder(NullsOrder::Smallest).finish()
        };
        Ok(Destinations {
            index: SharedIndex::new(index),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            resets: broadcast::channel(RESETS_BUFFERED).0,
            outages: Arc::new(super::history::OpenOutages::load(&pool).await?),
            attached: None,
            pool,
        })
    }

    /// Attached: `index` holds Synapse's rows, every read of a row goes to
    /// Synapse's database, every write is refused (see `synapse`).
    pub(crate) async fn attached(
        pool: impl Into<Db>,
        index: DestinationIndex,
        attached: Arc<super::synapse::Attached>,
    ) -> Result<Destinations, StoreError> {
        let pool = pool.into();
        Ok(Destinations {
            index: SharedIndex::new(index),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            resets: broadcast::channel(RESETS_BUFFERED).0,
            outages: Arc::new(super::history::OpenOutages::load(&pool).await?),
            attached: Some(attached),
            pool,
        })
    }

    /// Tells of every `reset_connection` from now on, by destination name.
    pub fn subscribe_resets(&self) -> broadcast::Receiver<Arc<str>> {
        self.resets.subscribe()
    }

    /// How many subscribers of [`Destinations::subscribe_resets`] are
    /// listening now (so tests can wait until a reset will be heard).
    pub fn reset_listeners(&self) -> usize {
        self.resets.receiver_count()
    }

    /// The indexed row of `name`, without SQL.
    pub fn indexed(&self, name: &str) -> Option<DestinationRow> {
        self.index.get(name)
    }

    /// One page of the destinations list, from the in-memory index.
    pub async fn list_destinations(&self, query: DestinationsQuery) -> DestinationsPage {
        // A page of at most this many rows without a filter is brief.
        const BRIEF_PAGE: u64 = 1_000;
        let brief = query.destination.is_none() && query.limit <= BRIEF_PAGE;
        // A filter scans every name: in turn with writers. A short page
        // without one is a seek and `limit` rows: it does not wait behind a
        // writer that waits for someone else's scan.
        let page = move |index: &DestinationIndex| index.page(&query);
        let answer = if brief {
            self.index.read_briefly(page).await
        } else {
            self.index.scan(page).await
        };
        answer.unwrap_or_else(|| DestinationsPage {
            destinations: Vec::new(),
            total: 0,
            next_token: None,
        })
    }

    /// Destinations per derived status, now.
    pub async fn federation_summary(&self) -> FederationSummary {
        let now = super::now_ms();
        self.index
            .scan(move |index| index.summary(now))
            .await
            .unwrap_or_default()
    }

    /// The stored row, if the destination is known.
    pub async fn destination(&self, name: &str) -> Result<Option<DestinationRow>, StoreError> {
        if let Some(attached) = &self.attached {
            return attached.source.destination(name).await;
        }
        if !self.pool.can_hold(name) {
            return Ok(None);
        }
        let row = on_db!(&self.pool, |pool| sqlx::query(&format!(
            "{SELECT_ROW} WHERE destination = $1"
        ))
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(decode)
        .transpose());
        Ok(row?)
    }

    /// `GET destinations/<name>`, as Synapse shapes it: no timings unless
    /// `retry_last_ts` is set and non-zero.
    pub async fn destination_details(
        &self,
        name: &str,
    ) -> Result<Option<DestinationDetails>, StoreError> {
        Ok(self.destination(name).await?.map(|row| {
            let in_backoff = row.retry_last_ts.is_some_and(|ts| ts != 0);
            DestinationDetails {
                destination: row.destination,
                last_successful_stream_ordering: row.last_successful_stream_ordering,
                failure_ts: if in_backoff { row.failure_ts } else { None },
                retry_last_ts: if in_backoff {
                    row.retry_last_ts.unwrap_or(0)
                } else {
                    0
                },
                retry_interval: if in_backoff {
                    row.retry_interval
                } else {
                    Some(0)
                },
            }
        }))
    }

    pub async fn is_destination_known(&self, name: &str) -> Result<bool, StoreError> {
        if let Some(attached) = &self.attached {
            return Ok(attached.source.destination(name).await?.is_some());
        }
        if !self.pool.can_hold(name) {
            return Ok(false);
        }
        let found = on_db!(&self.pool, |pool| sqlx::query(
            "SELECT 1 FROM destinations WHERE destination = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?
        .is_some());
        Ok(found)
    }

    /// Rooms of a destination ordered by room ID.
    pub async fn destination_rooms(
        &self,
        name: &str,
        q: RoomsQuery,
    ) -> Result<RoomsPage, StoreError> {
        if let Some(attached) = &self.attached {
            return attached.source.rooms_page(name, q).await;
        }
        let total = self.index.room_count(name);
        if !self.pool.can_hold(name) {
            return Ok(RoomsPage {
                next_token: None,
                rooms: Vec::new(),
                total,
            });
        }
        // A page in the second half is read from the other end (the count
        // is known): an `OFFSET` walks at most half the rooms.
        let (from, limit, total_n) = (q.from, q.limit, total);
        let end = from.saturating_add(limit).min(total_n);
        let flipped = from < total_n && from > total_n / 2;
        let (backwards, offset, limit) = match flipped {
            true => (
                !matches!(q.dir, Direction::Backwards),
                total_n - end,
                end - from,
            ),
            false => (matches!(q.dir, Direction::Backwards), from, limit),
        };
        let order = if backwards { "DESC" } else { "ASC" };
        // `room_id` compares bytes on both backends (COLLATE "C" on PostgreSQL).
        let mut rows: Vec<(String, i64)> = on_db!(&self.pool, |pool| sqlx::query_as(&format!(
            "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = $1 \
             ORDER BY room_id {order} LIMIT $2 OFFSET $3"
        ))
        .bind(name)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?);
        if flipped {
            rows.reverse();
        }
        let rooms = rows
            .into_iter()
            .map(|(room_id, stream_ordering)| DestinationRoom {
                room_id,
                stream_ordering,
            })
            .collect::<Vec<_>>();
        Ok(RoomsPage {
            next_token: next_token(q.from, q.limit, rooms.len(), total),
            rooms,
            total,
        })
    }

    /// `reset_connection`: clears the backoff of a destination in backoff,
    /// and notes in its history who did (`actor`, an admin's user ID).
    pub async fn reset_retry_timings(
        &self,
        name: &str,
        actor: Option<&str>,
    ) -> Result<ResetOutcome, StoreError> {
        self.writable()?;
        let (this, name, actor) = (self.clone(), name.to_owned(), actor.map(str::to_owned));
        to_the_end(async move {
            let outcome = this.reset_now(&name).await?;
            if outcome == ResetOutcome::Reset {
                let _history = this.outages.writer.lock().await;
                let entry = super::history::NewEntry {
                    actor,
                    ..Default::default()
                };
                let now = super::now_ms();
                // The reset is committed: a history that cannot be written
                // is logged, not the answer.
                if let Err(e) = this
                    .add_entry_now(&name, now, herald_shared::HistoryEvent::Reset, entry)
                    .await
                {
                    tracing::warn!(destination = ?name, error = %e, "could not note the reset in the history");
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn reset_now(&self, name: &str) -> Result<ResetOutcome, StoreError> {
        let _writer = self.writer.lock().await;
        let Some(row) = self.destination(name).await? else {
            return Ok(ResetOutcome::Unknown);
        };
        if row.retry_last_ts.is_none_or(|ts| ts == 0) {
            return Ok(ResetOutcome::NotInBackoff);
        }
        // PostgreSQL: other instances sharing the database hear of it in
        // the same statement (see `notices`).
        on_db!(&self.pool, |pool, pg| sqlx::query(if pg {
            "WITH reset AS (UPDATE destinations \
             SET failure_ts = NULL, retry_last_ts = 0, retry_interval = 0 \
             WHERE destination = $1 RETURNING destination) \
             SELECT pg_notify('herald_resets', \
             COALESCE(current_setting('herald.instance', true), '') || ' ' || destination) \
             FROM reset WHERE octet_length(destination) <= 7000"
        } else {
            "UPDATE destinations SET failure_ts = NULL, retry_last_ts = 0, retry_interval = 0 \
             WHERE destination = $1"
        })
        .bind(name)
        .execute(pool)
        .await
        .map(drop))?;
        self.refresh_index(name).await?;
        // Nobody listening is fine.
        let _ = self.resets.send(name.into());
        Ok(ResetOutcome::Reset)
    }

    /// The backoff of `name` as Synapse's retry limiter reads it: `None`
    /// unless there is a row with a non-zero `retry_last_ts`.
    pub async fn retry_timings(&self, name: &str) -> Result<Option<RetryTimings>, StoreError> {
        if let Some(attached) = &self.attached {
            let row = attached.source.destination(name).await?;
            return Ok(row.and_then(|row| {
                Some(RetryTimings {
                    failure_ts: row.failure_ts,
                    retry_last_ts: row.retry_last_ts.filter(|&ts| ts != 0)?,
                    retry_interval: row.retry_interval.unwrap_or(0),
                })
            }));
        }
        if !self.pool.can_hold(name) {
            return Ok(None);
        }
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
            on_db!(&self.pool, |pool| sqlx::query_as(
                "SELECT failure_ts, retry_last_ts, retry_interval FROM destinations \
                 WHERE destination = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?);
        Ok(row.and_then(|(failure_ts, last, interval)| {
            let retry_last_ts = last.filter(|&ts| ts != 0)?;
            Some(RetryTimings {
                failure_ts,
                retry_last_ts,
                retry_interval: interval.unwrap_or(0),
            })
        }))
    }

    /// Stores the outcome of a retry limiter with Synapse's upsert rule: an
    /// existing row changes only when this resets the backoff (interval or
    /// last try 0), grows the interval, or is a later try — so concurrent
    /// requests never shrink a backoff. Creates the row if needed.
    pub async fn set_retry_timings(
        &self,
        name: &str,
        timings: RetryTimings,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let (this, name) = (self.clone(), name.to_owned());
        to_the_end(async move { this.set_timings_now(&name, timings).await }).await
    }

    async fn set_timings_now(&self, name: &str, timings: RetryTimings) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        on_db!(&self.pool, |pool| sqlx::query(
            "INSERT INTO destinations (destination, failure_ts, retry_last_ts, retry_interval) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (destination) DO UPDATE SET failure_ts = excluded.failure_ts, \
             retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval \
             WHERE excluded.retry_interval = 0 OR excluded.retry_last_ts = 0 \
             OR destinations.retry_interval IS NULL \
             OR destinations.retry_interval < excluded.retry_interval \
             OR destinations.retry_last_ts < excluded.retry_last_ts",
        )
        .bind(name)
        .bind(timings.failure_ts)
        .bind(timings.retry_last_ts)
        .bind(timings.retry_interval)
        .execute(pool)
        .await
        .map(drop))?;
        self.refresh_index(name).await
    }

    /// Inserts or replaces whole rows (demo data, imports, tests), in one
    /// transaction; later stream orderings start above the ones they name.
    pub async fn put_destinations(&self, rows: &[DestinationRow]) -> Result<(), StoreError> {
        self.writable()?;
        let (this, rows) = (self.clone(), rows.to_vec());
        to_the_end(async move { this.put_now(&rows).await }).await
    }

    async fn put_now(&self, rows: &[DestinationRow]) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        for row in rows {
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
                 last_successful_stream_ordering) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (destination) DO UPDATE SET retry_last_ts = excluded.retry_last_ts, \
                 retry_interval = excluded.retry_interval, failure_ts = excluded.failure_ts, \
                 last_successful_stream_ordering = excluded.last_successful_stream_ordering",
            )
            .bind(&row.destination)
            .bind(row.retry_last_ts)
            .bind(row.retry_interval)
            .bind(row.failure_ts)
            .bind(row.last_successful_stream_ordering)
            .execute(conn)
            .await
            .map(drop)
            })?;
        }
        tx.commit().await?;
        if let Some(max) = rows
            .iter()
            .filter_map(|r| r.last_successful_stream_ordering)
            .max()
        {
            super::orderings::raise_next_ordering(&self.pool, max).await?;
        }
        self.index
            .apply(rows.iter().cloned().map(Edit::Put).collect())
            .await;
        Ok(())
    }

    /// Records the newest stream ordering of rooms for a destination
    /// (creating the destination row if needed), in one transaction.
    pub async fn put_destination_rooms(
        &self,
        destination: &str,
        rooms: &[DestinationRoom],
    ) -> Result<(), StoreError> {
        self.writable()?;
        let (this, destination, rooms) = (self.clone(), destination.to_owned(), rooms.to_vec());
        to_the_end(async move { this.put_rooms_now(&destination, &rooms).await }).await
    }

    async fn put_rooms_now(
        &self,
        destination: &str,
        rooms: &[DestinationRoom],
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO destinations (destination) VALUES ($1) ON CONFLICT DO NOTHING"
        )
        .bind(destination)
        .execute(conn)
        .await
        .map(drop))?;
        for room in rooms {
            on_tx!(&mut tx, |conn| {
                sqlx::query(
                "INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES ($1, $2, $3) \
                 ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            )
            .bind(destination)
            .bind(&room.room_id)
            .bind(room.stream_ordering)
            .execute(conn)
            .await
            .map(drop)
            })?;
        }
        tx.commit().await?;
        if let Some(max) = rooms.iter().map(|r| r.stream_ordering).max() {
            super::orderings::raise_next_ordering(&self.pool, max).await?;
        }
        let count: i64 = on_db!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM destination_rooms WHERE destination = $1"
        )
        .bind(destination)
        .fetch_one(pool)
        .await?);
        if let Some(row) = self.destination(destination).await? {
            self.index
                .apply(vec![
                    Edit::Put(row),
                    Edit::RoomCount(destination.to_owned(), count.max(0) as u64),
                ])
                .await;
        }
        Ok(())
    }

    /// Re-reads Herald's own row of `name` and applies it to the index (a
    /// row that is gone leaves it).
    pub(crate) async fn refresh_own(&self, name: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        match self.destination(name).await? {
            Some(row) => self.index.apply(vec![Edit::Put(row)]).await,
            None => self.index.apply(vec![Edit::Remove(name.to_owned())]).await,
        }
        Ok(())
    }

    /// Re-reads one row after a committed write and applies it to the index.
    async fn refresh_index(&self, name: &str) -> Result<(), StoreError> {
        if let Some(row) = self.destination(name).await? {
            self.index.apply(vec![Edit::Put(row)]).await;
        }
        Ok(())
    }

    /// Makes the index what Herald's own tables hold now (after an import
    /// replaced them), loaded as at start-up. Call with the writer held.
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
        let index = load_own_index(&self.pool).await?;
        self.index.replace(index).await;
        Ok(())
    }

    /// How many destinations the index holds.
    pub fn destination_count(&self) -> usize {
        self.index.len()
    }
}

/// Runs a write to its end in a task of its own: the commit, the index edit
/// and the reset broadcast happen together even when the caller goes away
/// (an HTTP client hanging up, a request timing out), so the index never
/// misses a committed row nor applies two writes out of order.
pub(crate) async fn to_the_end<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// The federation client keeps each destination's backoff here.
impl BackoffStore for Destinations {
    fn retry_timings<'a>(&'a self, destination: &'a str) -> StoreFuture<'a, Option<RetryTimings>> {
        Box::pin(async move {
            Destinations::retry_timings(self, destination)
                .await
                .map_err(|e| StorageError(Box::new(e)))
        })
    }

    fn set_retry_timings<'a>(
        &'a self,
        destination: &'a str,
        timings: RetryTimings,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Attached, Synapse keeps the backoff: Herald's sender is off.
            if self.is_attached() {
                return Ok(());
            }
            Destinations::set_retry_timings(self, destination, timings)
                .await
                .map_err(|e| StorageError(Box::new(e)))
        })
    }

    fn subscribe_resets(&self) -> broadcast::Receiver<Arc<str>> {
        Destinations::subscribe_resets(self)
    }

    fn record_failure<'a>(
        &'a self,
        destination: &'a str,
        failure: &'a herald_shared::Failure,
        outage: bool,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.is_attached() {
                return Ok(());
            }
            Destinations::record_failure(self, destination, failure, outage)
                .await
                .map_err(|e| StorageError(Box::new(e)))
        })
    }

    fn record_success<'a>(&'a self, destination: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.is_attached() {
                return Ok(());
            }
            Destinations::record_success(self, destination)
                .await
                .map_err(|e| StorageError(Box::new(e)))
        })
    }
}
