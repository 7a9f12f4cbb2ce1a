//! Keeping the attached index fresh. Synapse's `destinations` has no change
//! column, so each `refresh_interval` the task:
//!
//! 1. asks a cheap change detector whether the table may have changed
//!    ([`Source::change_marker`]: SQLite's `PRAGMA data_version`, which moves
//!    on any commit by another connection; PostgreSQL's insert/update/delete
//!    counters for `destinations`). Unchanged: nothing else is read. Every
//!    [`FORCED_EVERY`] cycles it looks anyway, in case the counters lag or
//!    statistics are off.
//! 2. reads per-bucket row counts and checksums computed in the database
//!    ([`Source::bucket_sums`]: ~1000 numbers at 1M rows), and compares them
//!    with the last cycle's (the first cycle's "last" are computed in Herald
//!    from the rows the start-up load read: [`super::buckets`]);
//! 3. fetches only the rows of buckets whose checksum moved and applies
//!    those that differ from the index as `Edit::Put`. When a bucket lost
//!    rows (a delete, or a row that moved), or too many buckets moved, it
//!    instead walks Synapse's rows and the index side by side in name order
//!    and applies every difference (puts and removes).
//!
//! Worst-case delay from Synapse's commit to the index: one interval plus a
//! cycle on SQLite; on PostgreSQL one interval plus the statistics flush
//! (about a second after the writer's commit, up to ten seconds when the
//! writing connection goes idle right after a flush), bounded by
//! `FORCED_EVERY` intervals in any case.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use futures_util::TryStreamExt;
use herald_shared::{DestinationsQuery, Direction, OrderBy};

use super::source::Source;
use super::Attached;
use crate::shared_index::{Edit, SharedIndex};
use crate::{DestinationIndex, DestinationRow, StoreError};

/// Cycles after which the buckets are compared even if the detector is still.
pub(crate) const FORCED_EVERY: u32 = 5;

/// More changed buckets than this (a quarter of them) and one walk over
/// every row costs about as much as fetching them; below it, a busy
/// Synapse's many updates cost a fetch of their buckets, not a walk.
const MOST_BUCKETS_FETCHED: usize = 256;

/// Index names compared per read of the index during a walk.
const WALK_CHUNK: u64 = 10_000;

/// Edits applied per call while walking.
const EDITS_PER_APPLY: usize = 10_000;

/// The refresh's state between cycles.
pub(crate) struct Cycles {
    pub(crate) seen: Seen,
    /// SQLite: the connection `PRAGMA data_version` is asked on.
    pub(crate) held: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
    /// Cycles run by the task (every `FORCED_EVERY`th compares anyway).
    pub(crate) count: u32,
}

/// What the last cycle saw.
pub(crate) struct Seen {
    pub(crate) marker: Option<i64>,
    pub(crate) buckets: HashMap<i64, (i64, i64)>,
}

impl Seen {
    /// The detector, read before the rows, and the index with the buckets
    /// of the very rows it holds: one statement reads both
    /// ([`Source::load_index`]), so they are the same snapshot, and a
    /// change committed after it moves the detector past `marker` and is
    /// found by the first cycle.
    pub(crate) async fn load(
        source: &Source,
        held: &mut Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
    ) -> Result<(Seen, DestinationIndex), StoreError> {
        let started = std::time::Instant::now();
        let marker = source.change_marker(held).await?;
        let (index, sums) = source.load_index().await?;
        let seen = Seen {
            marker: Some(marker),
            buckets: sums.into_buckets()?,
        };
        tracing::debug!(
            rows = index.len(),
            took = ?started.elapsed(),
            "loaded Synapse's destinations and their buckets"
        );
        Ok((seen, index))
    }
}

async fn buckets(source: &Source) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
    Ok(source
        .bucket_sums()
        .await?
        .into_iter()
        .map(|(b, count, sum)| (b, (count, sum)))
        .collect())
}

/// What one cycle did (for the benchmark and the logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleReport {
    /// Whether the buckets were read (the detector moved, or forced).
    pub compared: bool,
    /// Buckets whose rows were fetched.
    pub buckets_fetched: usize,
    /// Whether every row was walked.
    pub walked: bool,
    /// Edits applied to the index.
    pub edits: usize,
}

/// Starts the refresh task; it ends when told to stop, when every handle is
/// gone, or never otherwise (a failing cycle is logged and retried).
pub(crate) fn spawn(
    index: SharedIndex,
    attached: Weak<Attached>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        break;
                    }
                }
                _ = tokio::time::sleep(interval) => {}
            }
            let Some(attached) = attached.upgrade() else {
                break;
            };
            match run_cycle(&attached, &index, false).await {
                Ok(report) => {
                    if failing {
                        tracing::info!("Synapse's database answers again");
                        failing = false;
                    }
                    if report.edits > 0 {
                        tracing::debug!(?report, "refreshed destinations from Synapse");
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot refresh destinations from Synapse's database");
                    }
                    failing = true;
                }
            }
        }
        tracing::debug!("the refresh from Synapse's database stopped");
    });
}

/// One cycle (see the module comment); `forced` compares the buckets
/// whatever the detector says.
pub(crate) async fn run_cycle(
    attached: &Attached,
    index: &SharedIndex,
    forced: bool,
) -> Result<CycleReport, StoreError> {
    let source = &attached.source;
    let mut state = attached.applying.lock().await;
    let Cycles { seen, held, count } = &mut *state;
    *count = count.wrapping_add(1);
    let forced = forced || count.is_multiple_of(FORCED_EVERY);
    let mut report = CycleReport::default();
    let marker = match source.change_marker(held).await {
        Ok(marker) => marker,
        Err(e) => {
            *held = None;
            return Err(e);
        }
    };
    if !forced && seen.marker == Some(marker) {
        return Ok(report);
    }
    report.compared = true;
    let now = buckets(source).await?;
    let lost_rows = seen
        .buckets
        .iter()
        .any(|(b, (count, _))| now.get(b).is_none_or(|(n, _)| n < count));
    let moved: Vec<i64> = now
        .iter()
        .filter(|(b, sums)| seen.buckets.get(b) != Some(sums))
        .map(|(b, _)| *b)
        .collect();
    // Rows Synapse has now: the index must hold as many once the moved
    // buckets are applied, or a delete hid behind an insert in one bucket
    // (SQLite reuses the highest rowid after deleting it).
    let rows_now: i64 = now.values().map(|(count, _)| *count).sum();
    if lost_rows || moved.len() > MOST_BUCKETS_FETCHED {
        report.walked = true;
        report.edits = walk(source, index).await?;
    } else if !moved.is_empty() {
        report.buckets_fetched = moved.len();
        let rows = source.rows_in_buckets(&moved).await?;
        let edits: Vec<Edit> = rows
            .into_iter()
            .filter(|row| index.get(&row.destination).as_ref() != Some(row))
            .map(Edit::Put)
            .collect();
        report.edits = edits.len();
        if !edits.is_empty() {
            index.apply(edits).await;
        }
    }
    if !report.walked && index.len() as i64 != rows_now {
        report.walked = true;
        report.edits += walk(source, index).await?;
    }
    seen.marker = Some(marker);
    seen.buckets = now;
    Ok(report)
}

/// Walks Synapse's rows and the index in name order and applies every
/// difference; returns how many edits it applied.
async fn walk(source: &Source, index: &SharedIndex) -> Result<usize, StoreError> {
    let mut rows = source.rows_by_name();
    let mut names: Vec<String> = Vec::new();
    let mut next_name = 0usize;
    let mut from = 0u64;
    let mut edits = Vec::new();
    let mut applied = 0usize;
    let mut row: Option<DestinationRow> = rows.try_next().await?;
    loop {
        if next_name == names.len() {
            names = index_names(index, from).await;
            from += names.len() as u64;
            next_name = 0;
        }
        let name = names.get(next_name);
        match (row.take(), name) {
            (None, None) => break,
            (Some(r), None) => {
                edits.push(Edit::Put(r));
                row = rows.try_next().await?;
            }
            (None, Some(n)) => {
                edits.push(Edit::Remove(n.clone()));
                next_name += 1;
            }
            (Some(r), Some(n)) => match r.destination.as_bytes().cmp(n.as_bytes()) {
                std::cmp::Ordering::Less => {
                    edits.push(Edit::Put(r));
                    row = rows.try_next().await?;
                }
                std::cmp::Ordering::Greater => {
                    edits.push(Edit::Remove(n.clone()));
                    next_name += 1;
                    row = Some(r);
                }
                std::cmp::Ordering::Equal => {
                    if index.get(n).as_ref() != Some(&r) {
                        edits.push(Edit::Put(r));
                    }
                    next_name += 1;
                    row = rows.try_next().await?;
                }
            },
        }
    }
    // Edits wait until the walk is done: applying them during it would
    // move the index's positions under `from`.
    drop(rows);
    for chunk in edits.chunks(EDITS_PER_APPLY) {
        applied += chunk.len();
        index.apply(chunk.to_vec()).await;
    }
    Ok(applied)
}

/// The index's names from position `from` in name order, one chunk.
async fn index_names(index: &SharedIndex, from: u64) -> Vec<String> {
    let query = DestinationsQuery {
        from,
        limit: WALK_CHUNK,
        destination: None,
        order_by: OrderBy::Destination,
        dir: Direction::Forwards,
    };
    index
        .read_briefly(move |ix| ix.page(&query))
        .await
        .map(|page| {
            page.destinations
                .into_iter()
                .map(|d| d.destination)
                .collect()
        })
        .unwrap_or_default()
}
