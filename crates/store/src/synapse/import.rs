//! `herald import-synapse`: copies Synapse's `destinations` and
//! `destination_rooms` into Herald's own database, streamed (never holding
//! every row) in one transaction (a failure halfway changes nothing), then
//! moves Herald's next stream ordering above every imported one and reloads
//! the index.

use futures_util::TryStreamExt;

use super::source::Source;
use crate::db::{on_db, on_tx};
use crate::{Store, StoreError};

/// Rows written between two progress reports.
const BATCH: usize = 5_000;

/// Where an import is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Which table is being copied now.
    pub table: ImportTable,
    /// Rows of it copied so far.
    pub done: u64,
    /// Rows it held when the import began.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTable {
    Destinations,
    DestinationRooms,
}

impl ImportTable {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportTable::Destinations => "destinations",
            ImportTable::DestinationRooms => "destination_rooms",
        }
    }
}

/// What an import copied, and where Herald's stream orderings now start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportCounts {
    pub destinations: u64,
    pub destination_rooms: u64,
    /// The largest stream ordering the imported rows name (Herald's next
    /// one is above it).
    pub max_stream_ordering: Option<i64>,
}

/// Copies Synapse's rows at `from` (an SQLite path or a `postgresql://`
/// URL, opened read-only and checked as attached mode does) into `into`.
/// Refuses a Herald database that already holds destinations or rooms
/// unless `replace`, which deletes them first (with their rooms; Herald's
/// own history, health and queues stay). `progress` is told after each
/// batch.
pub async fn import_synapse(
    from: &str,
    into: &Store,
    replace: bool,
    mut progress: impl FnMut(ImportProgress),
) -> Result<ImportCounts, StoreError> {
    into.destinations.writable()?;
    let source = Source::open(from).await.map_err(|e| match e {
        StoreError::Synapse {
            target, problem, ..
        } => StoreError::Synapse {
            setting: "--from",
            target,
            problem,
        },
        other => other,
    })?;
    let result = copy(&source, into, replace, &mut progress).await;
    source.close().await;
    result
}

async fn copy(
    source: &Source,
    into: &Store,
    replace: bool,
    progress: &mut impl FnMut(ImportProgress),
) -> Result<ImportCounts, StoreError> {
    let pool = &into.pool;
    let _writer = into.destinations.writer.lock().await;
    let (have_d, have_r): (i64, i64) = on_db!(pool, |pool| sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM destinations), (SELECT COUNT(*) FROM destination_rooms)",
    )
    .fetch_one(pool)
    .await?);
    if (have_d > 0 || have_r > 0) && !replace {
        return Err(StoreError::NotEmpty {
            destinations: have_d.max(0) as u64,
            rooms: have_r.max(0) as u64,
        });
    }
    let (total_d, total_r) = source.counts().await?;
    let mut counts = ImportCounts::default();
    // One transaction: an import that fails halfway (Synapse's database
    // gone, a bad row) leaves Herald's rows as they were.
    let mut tx = pool.begin().await?;
    // Other instances sharing the database reload once, not per row.
    crate::notices::bulk_write(&mut tx).await?;
    if replace {
        // Queued PDUs name their destination (a foreign key on SQLite, the
        // intake's locks on PostgreSQL): their rows cannot be replaced.
        // PostgreSQL: first keep other instances' intake out (it locks the
        // destinations it queues for, which this waits for, then blocks),
        // so that the count below stays true until the commit.
        if let crate::db::DbTx::Postgres(tx) = &mut tx {
            sqlx::query("LOCK TABLE destinations IN EXCLUSIVE MODE")
                .execute(&mut **tx)
                .await?;
        }
        let queued: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(
            "SELECT COUNT(*) FROM destination_pdus"
        )
        .fetch_one(conn)
        .await?);
        if queued > 0 {
            return Err(StoreError::QueuedPdus {
                pdus: queued.max(0) as u64,
            });
        }
        // Rooms first: they name their destination.
        for table in ["destination_rooms", "destinations"] {
            on_tx!(&mut tx, |conn| sqlx::query(&format!("DELETE FROM {table}"))
                .execute(conn)
                .await
                .map(drop))?;
        }
    }
    let mut in_batch = 0usize;
    let mut rows = source.rows_by_name();
    progress(ImportProgress {
        table: ImportTable::Destinations,
        done: 0,
        total: total_d,
    });
    while let Some(row) = rows.try_next().await? {
        on_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts, \
             last_successful_stream_ordering) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&row.destination)
        .bind(row.retry_last_ts)
        .bind(row.retry_interval)
        .bind(row.failure_ts)
        .bind(row.last_successful_stream_ordering)
        .execute(conn)
        .await
        .map(drop))?;
        counts.destinations += 1;
        counts.max_stream_ordering = counts
            .max_stream_ordering
            .max(row.last_successful_stream_ordering);
        in_batch += 1;
        if in_batch == BATCH {
            in_batch = 0;
            progress(ImportProgress {
                table: ImportTable::Destinations,
                done: counts.destinations,
                total: total_d.max(counts.destinations),
            });
        }
    }
    drop(rows);
    progress(ImportProgress {
        table: ImportTable::Destinations,
        done: counts.destinations,
        total: total_d.max(counts.destinations),
    });
    let mut rooms = source.rooms_stream();
    progress(ImportProgress {
        table: ImportTable::DestinationRooms,
        done: 0,
        total: total_r,
    });
    while let Some((destination, room_id, stream_ordering)) = rooms.try_next().await? {
        // A room whose destination row Synapse lacks (its foreign key is not
        // enforced on SQLite) gets an empty one, as Herald's own writes do.
        on_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO destinations (destination) VALUES ($1) ON CONFLICT DO NOTHING"
        )
        .bind(&destination)
        .execute(conn)
        .await
        .map(drop))?;
        on_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO destination_rooms (destination, room_id, stream_ordering) \
             VALUES ($1, $2, $3) ON CONFLICT (destination, room_id) \
             DO UPDATE SET stream_ordering = excluded.stream_ordering",
        )
        .bind(&destination)
        .bind(&room_id)
        .bind(stream_ordering)
        .execute(conn)
        .await
        .map(drop))?;
        counts.destination_rooms += 1;
        counts.max_stream_ordering = counts.max_stream_ordering.max(Some(stream_ordering));
        in_batch += 1;
        if in_batch == BATCH {
            in_batch = 0;
            progress(ImportProgress {
                table: ImportTable::DestinationRooms,
                done: counts.destination_rooms,
                total: total_r.max(counts.destination_rooms),
            });
        }
    }
    drop(rooms);
    tx.commit().await?;
    progress(ImportProgress {
        table: ImportTable::DestinationRooms,
        done: counts.destination_rooms,
        total: total_r.max(counts.destination_rooms),
    });
    crate::orderings::orderings_above_imported(pool).await?;
    into.destinations.reload().await?;
    Ok(counts)
}
