//! The destinations index as the store shares it between the async side
//! and the list scans, so that no async worker ever waits for a scan.
//!
//! A filter or summary scan holds the read lock for 10–25 ms at 1M rows;
//! it runs on a blocking thread ([`SharedIndex::scan`]). Writes are applied
//! on a blocking thread too ([`SharedIndex::apply`]), at most
//! [`ROWS_PER_HOLD`] rows per hold of the write lock, so a writer that waits
//! for a scan waits there, never on a runtime worker. Point reads on the
//! async side ([`SharedIndex::get`], [`SharedIndex::len`]) take the lock
//! with `read_recursive`, which does not queue behind a waiting writer: they
//! wait at most for one hold of [`ROWS_PER_HOLD`] rows (tens of
//! microseconds), never for a scan.
//!
//! Edits that would change nothing (a destination already known, a delivery
//! older than the one recorded) are dropped under a read lock first, so the
//! intake's commits for known destinations never wait for the write lock.
//! A scan may run between two holds of one apply and see part of a commit
//! (a `total` that moves while a large seed is applied); every single row it
//! sees is one that was committed.
//!
//! Why not immutable snapshots (arc-swap): a snapshot per commit would copy
//! the whole index (hundreds of MB at 1M rows) many times a second, and two
//! copies kept in step (left-right) would double its memory.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{DestinationIndex, DestinationRow};

/// Most rows applied per hold of the write lock.
pub const ROWS_PER_HOLD: usize = 256;

/// One change to the index, applied in order.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Insert or replace the row.
    Put(DestinationRow),
    /// A row with no timings, unless the destination is known.
    Known(String),
    /// Move `last_successful_stream_ordering` forward (never back).
    Delivered(String, i64),
    /// Forget the row (a forgotten destination).
    Remove(String),
    /// Set a known destination's room count (rows of `destination_rooms`).
    RoomCount(String, u64),
    /// Add to a known destination's room count.
    RoomsAdded(String, u64),
}

#[derive(Clone, Default)]
pub struct SharedIndex {
    inner: Arc<RwLock<DestinationIndex>>,
}

impl SharedIndex {
    pub fn new(index: DestinationIndex) -> SharedIndex {
        SharedIndex {
            inner: Arc::new(RwLock::new(index)),
        }
    }

    /// Puts `index` in place of the whole index (after an import).
    pub async fn replace(&self, index: DestinationIndex) {
        let inner = self.inner.clone();
        let old =
            tokio::task::spawn_blocking(move || std::mem::replace(&mut *inner.write(), index))
                .await
                .ok();
        drop(old);
    }

    /// The row of `name`; waits at most for one hold of the write lock.
    pub fn get(&self, name: &str) -> Option<DestinationRow> {
        self.inner.read_recursive().get(name)
    }

    /// The room count of `name` (0 when unknown); waits as [`SharedIndex::get`].
    pub fn room_count(&self, name: &str) -> u64 {
        self.inner.read_recursive().room_count(name).unwrap_or(0)
    }

    /// How many destinations it holds.
    pub fn len(&self) -> usize {
        self.inner.read_recursive().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f`, a short read (a page without a filter: a seek and `limit`
    /// rows), over the index on a blocking thread without queueing behind a
    /// waiting writer, as point reads do; `None` if that thread panicked.
    /// Writers wait for it, so it must not be a scan of every row.
    pub async fn read_briefly<R: Send + 'static>(
        &self,
        f: impl FnOnce(&DestinationIndex) -> R + Send + 'static,
    ) -> Option<R> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner.read_recursive()))
            .await
            .ok()
    }

    /// Runs `f`, which may visit every row, over the index on a blocking
    /// thread, in turn with writers; `None` if that thread panicked.
    pub async fn scan<R: Send + 'static>(
        &self,
        f: impl FnOnce(&DestinationIndex) -> R + Send + 'static,
    ) -> Option<R> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner.read()))
            .await
            .ok()
    }

    /// Applies `edits` in order on a blocking thread, [`ROWS_PER_HOLD`] at a
    /// time; returns once they are all visible. Callers serialise their
    /// applies (the destinations writer lock, held until this returns, in a
    /// task no caller can cancel) so the index sees commit order.
    pub async fn apply(&self, edits: Vec<Edit>) {
        if edits.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let work = move || {
            // Rows are removed only by a `Remove` and, but by a `Put`, never lowered: an
            // edit that changes nothing now changes nothing after the ones
            // before it either (batches with a `Put` are applied whole;
            // room counts are always applied).
            let edits: Vec<Edit> = if edits
                .iter()
                .any(|e| matches!(e, Edit::Put(_) | Edit::Remove(_)))
            {
                edits
            } else {
                let index = inner.read_recursive();
                edits
                    .into_iter()
                    .filter(|edit| changes(&index, edit))
                    .collect()
            };
            for chunk in edits.chunks(ROWS_PER_HOLD) {
                let mut index = inner.write();
                for edit in chunk {
                    apply_one(&mut index, edit);
                }
            }
        };
        if tokio::task::spawn_blocking(work).await.is_err() {
            tracing::error!("applying writes to the destinations index panicked");
        }
    }
}

/// Whether `edit` would change `index`.
fn changes(index: &DestinationIndex, edit: &Edit) -> bool {
    match edit {
        Edit::Put(_) | Edit::Remove(_) | Edit::RoomCount(..) => true,
        Edit::RoomsAdded(_, added) => *added > 0,
        Edit::Known(name) => index.get(name).is_none(),
        Edit::Delivered(name, ordering) => index
            .get(name)
            .is_none_or(|row| row.last_successful_stream_ordering < Some(*ordering)),
    }
}

fn apply_one(index: &mut DestinationIndex, edit: &Edit) {
    match edit {
        Edit::Put(row) => index.put(row.clone()),
        Edit::Remove(name) => {
            index.remove(name);
        }
        Edit::Known(name) => {
            if index.get(name).is_none() {
                index.put(DestinationRow::new(name, None, None, None, None));
            }
        }
        Edit::Delivered(name, ordering) => {
            if let Some(mut row) = index.get(name) {
                if row.last_successful_stream_ordering < Some(*ordering) {
                    row.last_successful_stream_ordering = Some(*ordering);
                    index.put(row);
                }
            }
        }
        Edit::RoomCount(name, rooms) => {
            index.set_room_count(name, *rooms);
        }
        Edit::RoomsAdded(name, added) => {
            if let Some(rooms) = index.room_count(name) {
                index.set_room_count(name, rooms.saturating_add(*added));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn row(name: &str) -> DestinationRow {
        DestinationRow::new(name, None, None, None, None)
    }

    /// A scan holds the read lock; a writer queues behind it. On a
    /// one-thread runtime, the writer must not block that thread, and point
    /// reads must not queue behind the writer: before the fix both
    /// deadlocked here (the writer took the lock on the runtime's thread).
    #[test]
    fn a_writer_waiting_for_a_scan_blocks_no_worker_and_no_point_read() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let outcome = runtime.block_on(async {
                let index = SharedIndex::new(DestinationIndex::build(vec![row("a.org")]));
                let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
                let (held_tx, held_rx) = tokio::sync::oneshot::channel();
                let scan = tokio::spawn({
                    let index = index.clone();
                    async move {
                        index
                            .scan(move |i| {
                                let _ = held_tx.send(());
                                let _ = release_rx.recv();
                                i.len()
                            })
                            .await
                    }
                });
                held_rx.await.unwrap();
                let apply = tokio::spawn({
                    let index = index.clone();
                    async move { index.apply(vec![Edit::Known("b.org".into())]).await }
                });
                // Until the writer is queued (a plain read is refused then).
                let mut queued = false;
                for _ in 0..100_000 {
                    if index.inner.try_read().is_none() {
                        queued = true;
                        break;
                    }
                    tokio::task::yield_now().await;
                    std::thread::yield_now();
                }
                assert!(queued, "the writer never queued for the lock");
                // Point reads answer while the writer waits for the scan.
                let before = (
                    index.get("a.org").is_some(),
                    index.get("b.org"),
                    index.len(),
                );
                release_tx.send(()).unwrap();
                assert_eq!(scan.await.unwrap(), Some(1));
                apply.await.unwrap();
                (before, index.get("b.org").is_some(), index.len())
            });
            let _ = done_tx.send(outcome);
        });
        let (before, after_b, after_len) = done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the runtime's thread was blocked by the index lock");
        assert_eq!(before, (true, None, 1));
        assert!(after_b);
        assert_eq!(after_len, 2);
    }

    #[tokio::test]
    async fn edits_apply_in_order_across_holds() {
        let index = SharedIndex::new(DestinationIndex::build(Vec::new()));
        let mut edits: Vec<Edit> = (0..1000)
            .map(|i| Edit::Known(format!("d{i}.org")))
            .collect();
        edits.push(Edit::Delivered("d7.org".into(), 5));
        edits.push(Edit::Delivered("d7.org".into(), 3));
        edits.push(Edit::Known("d7.org".into()));
        index.apply(edits).await;
        assert_eq!(index.len(), 1000);
        let d7 = index.get("d7.org").unwrap();
        assert_eq!(d7.last_successful_stream_ordering, Some(5));
    }
}
