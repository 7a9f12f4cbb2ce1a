//! The sender's durable intake: accepted PDUs (`outgoing_events`), what each
//! destination still has to receive (`destination_pdus`, `destination_edus`)
//! and, in the same transaction, `destinations` / `destination_rooms`.
//!
//! Writes go through one writer task per store (group commit): callers queue
//! their batch on a channel, the writer takes whatever is waiting, commits it
//! in one transaction and answers every caller after the commit. A failed
//! transaction stores nothing for any of the batches in it. The sender's
//! delivery records ([`super::delivery`]) share the writer, so a busy sender
//! costs one commit per round, not one per transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::db::{on_db, on_tx, Db, DbTx};
use super::delivery::Delivery;
use super::notices::{queued_payloads, Queued};

use super::shared_index::Edit;
use super::{json_array, now_ms, Destinations, StoreError};

/// The sender's outbox: what it accepted, what each destination still has
/// to receive, and what it delivered. Writes go through the group-commit
/// writer; the `destinations` rows and index they touch are kept in step.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) pool: Db,
    writer: Writer,
    destinations: Destinations,
    /// Data queued by other instances sharing the database (see `notices`).
    queued: broadcast::Sender<Queued>,
}

/// Queued notices a slow subscriber may fall behind by before it is told
/// it lagged (and rescans).
const QUEUED_BUFFERED: usize = 1024;

/// Most rows (events plus EDUs) one group commit takes before committing.
/// Runs of a group commit PostgreSQL gave up (a deadlock with another
/// instance's) before its requests are answered with the error.
const COMMIT_RETRIES: u32 = 3;

const MAX_ROWS_PER_COMMIT: usize = 10_000;
/// Batches waiting for the writer before callers wait to queue theirs.
const QUEUE_DEPTH: usize = 1024;

/// A PDU to store, already validated, with the destinations to deliver to
/// (already filtered and deduplicated).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    /// The PDU as canonical JSON text (stored as such: the sender splices it
    /// into transactions as it is).
    pub pdu_json: String,
    pub destinations: Vec<String>,
}

/// An EDU to store once per destination.
#[derive(Debug, Clone)]
pub struct NewEdu {
    pub edu_type: String,
    /// The content as canonical JSON text.
    pub content_json: String,
    pub destinations: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group commit this batch was part of failed (nothing stored).
    #[error("group commit failed: {0}")]
    Commit(Arc<StoreError>),
    #[error("the outbox writer stopped")]
    WriterGone,
    /// An event ID accepted before with another room: the request is not
    /// stored.
    #[error("{event_id} was accepted before in {room_id}")]
    EventInAnotherRoom { event_id: String, room_id: String },
}

pub(super) enum Job {
    Pdus(
        Vec<NewEvent>,
        oneshot::Sender<Result<Vec<i64>, OutboxError>>,
    ),
    Edus(Vec<NewEdu>, oneshot::Sender<Result<(), OutboxError>>),
    Delivered(Delivery, oneshot::Sender<Result<(), OutboxError>>),
}

impl OutboxError {
    /// Whether nothing was stored because the database could not be
    /// reached ([`StoreError::Unavailable`]): the same request may succeed
    /// later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            OutboxError::Store(e) => e.is_unavailable(),
            OutboxError::Commit(e) => e.is_unavailable(),
            OutboxError::WriterGone | OutboxError::EventInAnotherRoom { .. } => false,
        }
    }
}

impl Job {
    fn rows(&self) -> usize {
        match self {
            Job::Pdus(events, _) => events.len().max(1),
            Job::Edus(edus, _) => edus.len().max(1),
            Job::Delivered(d, _) => d.pdus.len() + d.edus.len() + 1,
        }
    }
}

/// The channel to the writer task, started on first use.
pub(super) type Writer = Arc<OnceLock<mpsc::Sender<Job>>>;

impl Outbox {
    pub(crate) fn new(pool: impl Into<Db>, destinations: Destinations) -> Outbox {
        Outbox {
            pool: pool.into(),
            writer: Writer::default(),
            destinations,
            queued: broadcast::channel(QUEUED_BUFFERED).0,
        }
    }

    /// Tells of data queued by other Herald instances sharing this
    /// PostgreSQL database, by destination (never of this store's own
    /// writes; nothing on SQLite). On [`Queued::Rescan`] or a lag, read
    /// [`Outbox::destinations_with_pending`].
    pub fn subscribe_queued(&self) -> broadcast::Receiver<Queued> {
        self.queued.subscribe()
    }

    /// The sender of [`Outbox::subscribe_queued`], for the notices.
    pub(crate) fn queued_sender(&self) -> broadcast::Sender<Queued> {
        self.queued.clone()
    }

    /// Stores events durably and answers their stream orderings (one per
    /// event, in order) once committed. An event ID stored before keeps its
    /// stream ordering; new destinations are added to it.
    pub async fn enqueue_pdus(&self, events: Vec<NewEvent>) -> Result<Vec<i64>, OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Pdus(events, tx)).await?;
        rx.await.map_err(|_| OutboxError::WriterGone)?
    }

    /// Stores EDUs durably, one row per destination; returns once committed.
    pub async fn enqueue_edus(&self, edus: Vec<NewEdu>) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Edus(edus, tx)).await?;
        rx.await.map_err(|_| OutboxError::WriterGone)?
    }

    /// Records what a destination acknowledged (see [`Delivery`]); returns
    /// once committed.
    pub async fn record_delivery(&self, delivery: Delivery) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Delivered(delivery, tx)).await?;
        rx.await.map_err(|_| OutboxError::WriterGone)?
    }

    /// The room of each of these event IDs stored before: `(event_id,
    /// room_id)`.
    pub async fn stored_event_rooms<'a>(
        &self,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // (PostgreSQL holds no event ID with a NUL: none to find.)
        let ids = json_array(event_ids.into_iter().filter(|id| self.pool.can_hold(id)));
        Ok(on_db!(&self.pool, |pool, pg| sqlx::query_as(if pg {
            "SELECT event_id, room_id FROM outgoing_events \
             WHERE event_id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))"
        } else {
            "SELECT event_id, room_id FROM outgoing_events \
             WHERE event_id IN (SELECT value FROM json_each(?))"
        })
        .bind(ids)
        .fetch_all(pool)
        .await?))
    }

    async fn submit(&self, job: Job) -> Result<(), OutboxError> {
        let sender = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            // The writer's copy must not hold the sender, or it would never
            // see the channel close.
            let writer = Outbox {
                writer: Arc::new(OnceLock::new()),
                ..self.clone()
            };
            tokio::spawn(writer.run_writer(rx));
            tx
        });
        sender.send(job).await.map_err(|_| OutboxError::WriterGone)
    }

    async fn run_writer(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut rows = first.rows();
            let mut jobs = vec![first];
            while rows < MAX_ROWS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.rows();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            // Another instance inserting the same events in another order
            // can make PostgreSQL give up one of the two transactions:
            // nothing of it was written, so it runs again.
            let mut tries = 0;
            let committed = loop {
                match self.commit_jobs(&jobs).await {
                    Err(e) if e.is_retryable() && tries < COMMIT_RETRIES => {
                        tries += 1;
                        tracing::info!(error = %e, tries, "outbox commit given up by the database; again");
                    }
                    other => break other,
                }
            };
            match committed {
                Ok(orderings) => {
                    let mut orderings = orderings.into_iter();
                    for job in jobs {
                        match job {
                            Job::Pdus(_, reply) => {
                                let _ = reply.send(orderings.next().unwrap_or(Ok(Vec::new())));
                            }
                            Job::Edus(_, reply) | Job::Delivered(_, reply) => {
                                let _ = reply.send(Ok(()));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, batches = jobs.len(), "outbox commit failed");
                    let e = Arc::new(e);
                    for job in jobs {
                        match job {
                            Job::Pdus(_, reply) => {
                                let _ = reply.send(Err(OutboxError::Commit(e.clone())));
                            }
                            Job::Edus(_, reply) | Job::Delivered(_, reply) => {
                                let _ = reply.send(Err(OutboxError::Commit(e.clone())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// One transaction for all `jobs`; for each PDU job, in job order, its
    /// stream orderings, or why it was refused (an event ID stored before,
    /// or earlier in this commit, with another room: checked inside this
    /// transaction by the only writer, before that job writes anything, so
    /// no concurrent request can slip between the check and the insert).
    /// Each job costs a handful of statements whatever its size (rows go in
    /// as JSON arrays through `json_each`): every statement is a round trip
    /// to SQLite's thread. Updates the destinations index and room counts
    /// after the commit, under the destinations writer lock.
    async fn commit_jobs(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<Vec<i64>, OutboxError>>, StoreError> {
        let now = now_ms();
        let _writer = self.destinations.writer.lock().await;
        // IMMEDIATE: the write lock at once. The first statement reads (the
        // event-ID check); a deferred transaction that read first could not
        // take the lock after another connection wrote (SQLITE_BUSY_SNAPSHOT,
        // which no busy timeout waits out).
        // (PostgreSQL: see `insert_events` and `lock_destinations` for the
        // rows it locks.)
        let mut tx = self.pool.begin_write().await?;
        // Destinations that PDUs were queued for (their rows are created).
        let mut destinations: BTreeSet<&str> = BTreeSet::new();
        let mut orderings = Vec::new();
        // (destination, room) -> newest stream ordering in this commit.
        let mut newest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut delivered: BTreeMap<&str, i64> = BTreeMap::new();
        // What destinations acknowledged, removed from the queues together.
        let mut deliveries: Vec<&Delivery> = Vec::new();
        // Destinations that EDUs were queued for.
        let mut edu_destinations: BTreeSet<&str> = BTreeSet::new();
        for job in jobs {
            match job {
                Job::Pdus(events, _) => match insert_events(&mut tx, events, now).await? {
                    Ok(assigned) => {
                        for (event, &ordering) in events.iter().zip(&assigned) {
                            for destination in &event.destinations {
                                destinations.insert(destination);
                                let key = (destination.as_str(), event.room_id.as_str());
                                let slot = newest.entry(key).or_insert(ordering);
                                *slot = (*slot).max(ordering);
                            }
                        }
                        orderings.push(Ok(assigned));
                    }
                    Err(conflict) => orderings.push(Err(conflict)),
                },
                Job::Edus(edus, _) => {
                    for edu in edus {
                        if edu.destinations.is_empty() {
                            continue;
                        }
                        edu_destinations.extend(edu.destinations.iter().map(String::as_str));
                        on_tx!(&mut tx, |conn, pg| sqlx::query(if pg {
                            "INSERT INTO destination_edus \
                             (destination, edu_type, content, received_ts, canonical) \
                             SELECT value, $1, $2, $3, 1 \
                             FROM jsonb_array_elements_text($4::jsonb) WITH ORDINALITY \
                             ORDER BY ordinality"
                        } else {
                            "INSERT INTO destination_edus \
                             (destination, edu_type, content, received_ts, canonical) \
                             SELECT value, ?, ?, ?, 1 FROM json_each(?)"
                        })
                        .bind(&edu.edu_type)
                        .bind(&edu.content_json)
                        .bind(now)
                        .bind(json_array(edu.destinations.iter()))
                        .execute(conn)
                        .await
                        .map(drop))?;
                    }
                }
                Job::Delivered(delivery, _) => {
                    if let Some(newest) = delivery.newest() {
                        let slot = delivered.entry(&delivery.destination).or_insert(newest);
                        *slot = (*slot).max(newest);
                    }
                    deliveries.push(delivery);
                }
            }
        }
        if !deliveries.is_empty() {
            Delivery::apply_all(&deliveries, &delivered, &mut tx).await?;
        }
        // Rooms each destination gained, for the rooms list's `total`.
        let mut new_rooms: HashMap<String, u64> = HashMap::new();
        if !newest.is_empty() {
            let rows = serde_json::Value::Array(
                newest
                    .iter()
                    .map(|((destination, room_id), ordering)| {
                        serde_json::json!([destination, room_id, ordering])
                    })
                    .collect(),
            )
            .to_string();
            let inserted: Vec<String> = on_tx!(&mut tx, |conn, pg| sqlx::query_scalar(if pg {
                "INSERT INTO destination_rooms (destination, room_id, stream_ordering) \
                 SELECT value->>0, value->>1, CAST(value->>2 AS BIGINT) \
                 FROM jsonb_array_elements($1::jsonb) \
                 ON CONFLICT DO NOTHING RETURNING destination"
            } else {
                "INSERT INTO destination_rooms (destination, room_id, stream_ordering) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                 json_extract(value, '$[2]') FROM json_each(?) WHERE true \
                 ON CONFLICT DO NOTHING RETURNING destination"
            })
            .bind(&rows)
            .fetch_all(conn)
            .await?);
            for destination in inserted {
                *new_rooms.entry(destination).or_default() += 1;
            }
            // The rooms known before: never lower their ordering.
            on_tx!(&mut tx, |conn, pg| sqlx::query(if pg {
                "UPDATE destination_rooms SET stream_ordering = j.so FROM \
                 (SELECT value->>0 AS d, value->>1 AS r, CAST(value->>2 AS BIGINT) AS so \
                 FROM jsonb_array_elements($1::jsonb)) AS j \
                 WHERE destination_rooms.destination = j.d AND destination_rooms.room_id = j.r \
                 AND destination_rooms.stream_ordering < j.so"
            } else {
                "UPDATE destination_rooms SET stream_ordering = j.so FROM \
                 (SELECT json_extract(value, '$[0]') AS d, json_extract(value, '$[1]') AS r, \
                 json_extract(value, '$[2]') AS so FROM json_each(?)) AS j \
                 WHERE destination_rooms.destination = j.d AND destination_rooms.room_id = j.r \
                 AND destination_rooms.stream_ordering < j.so"
            })
            .bind(&rows)
            .execute(conn)
            .await
            .map(drop))?;
        }
        if let DbTx::Postgres(pg) = &mut tx {
            if !(destinations.is_empty() && edu_destinations.is_empty()) {
                // Other instances sharing the database hear of it at the
                // commit (see `notices`).
                let payloads = queued_payloads(destinations.union(&edu_destinations).copied());
                sqlx::query(
                    "SELECT pg_notify('herald_queued', \
                     COALESCE(current_setting('herald.instance', true), '') || ' ' || p) \
                     FROM unnest($1::text[]) AS p",
                )
                .bind(payloads)
                .execute(&mut **pg)
                .await?;
            }
        }
        tx.commit().await?;
        let edits = destinations
            .iter()
            .map(|d| Edit::Known((*d).to_owned()))
            .chain(
                delivered
                    .into_iter()
                    .map(|(d, ordering)| Edit::Delivered(d.to_owned(), ordering)),
            )
            .chain(
                new_rooms
                    .into_iter()
                    .map(|(d, added)| Edit::RoomsAdded(d, added)),
            )
            .collect();
        self.destinations.index.apply(edits).await;
        Ok(orderings)
    }
}

/// Inserts one request's events and their queue rows;
/// the stream ordering of each event, or — before anything is written — the
/// first event ID stored earlier with another room. Events new to the store
/// get orderings in their order in the request; one stored before keeps its
/// own.
///
/// On PostgreSQL the events found are locked (`FOR SHARE`) until the
/// commit, so that pruning cannot delete one this commit queues again (on
/// SQLite, `BEGIN IMMEDIATE` keeps every other writer out).
async fn insert_events(
    tx: &mut DbTx,
    events: &[NewEvent],
    now: i64,
) -> Result<Result<Vec<i64>, OutboxError>, StoreError> {
    // PostgreSQL: another instance may insert one of these events between
    // the check and the insert (see below); the savepoint undoes this job's
    // writes, and only this job's, if that one has another room.
    if matches!(tx, DbTx::Postgres(_)) {
        on_tx!(tx, |conn, _pg| sqlx::query("SAVEPOINT herald_pdus")
            .execute(conn)
            .await
            .map(drop))?;
    }
    let inserted = insert_events_checked(tx, events, now).await?;
    if matches!(tx, DbTx::Postgres(_)) {
        let end = if inserted.is_ok() {
            "RELEASE SAVEPOINT herald_pdus"
        } else {
            "ROLLBACK TO SAVEPOINT herald_pdus"
        };
        on_tx!(tx, |conn, _pg| sqlx::query(end)
            .execute(conn)
            .await
            .map(drop))?;
    }
    Ok(inserted)
}

/// `(event_id, room_id, stream_ordering)` of the events of `ids` already
/// stored; on PostgreSQL locked (`FOR SHARE`) until the commit, so that
/// pruning cannot delete one this commit queues again. PostgreSQL takes the
/// IDs as an array (`= ANY`): looked up by the event-ID index whatever the
/// table's statistics say.
async fn stored_events(
    tx: &mut DbTx,
    ids: &[&str],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(match tx {
        DbTx::Postgres(tx) => {
            sqlx::query_as(
                "SELECT event_id, room_id, stream_ordering FROM outgoing_events \
                 WHERE event_id = ANY($1::text[]) FOR SHARE",
            )
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?
        }
        DbTx::Sqlite(tx) => {
            sqlx::query_as(
                "SELECT event_id, room_id, stream_ordering FROM outgoing_events \
                 WHERE event_id IN (SELECT value FROM json_each(?))",
            )
            .bind(json_array(ids.iter()))
            .fetch_all(&mut **tx)
            .await?
        }
    })
}

/// The body of [`insert_events`].
async fn insert_events_checked(
    tx: &mut DbTx,
    events: &[NewEvent],
    now: i64,
) -> Result<Result<Vec<i64>, OutboxError>, StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let known = stored_events(tx, &ids).await?;
    let mut room_of: HashMap<&str, &str> = HashMap::with_capacity(events.len());
    for event in events {
        if let Some(room) = room_of.insert(&event.event_id, &event.room_id) {
            if room != event.room_id {
                return Ok(Err(OutboxError::EventInAnotherRoom {
                    event_id: event.event_id.clone(),
                    room_id: room.to_owned(),
                }));
            }
        }
    }
    let mut ordering_of: HashMap<String, i64> = HashMap::with_capacity(events.len());
    for (event_id, room_id, ordering) in known {
        if room_of.get(event_id.as_str()) != Some(&room_id.as_str()) {
            return Ok(Err(OutboxError::EventInAnotherRoom { event_id, room_id }));
        }
        ordering_of.insert(event_id, ordering);
    }
    let queued: BTreeSet<&str> = events
        .iter()
        .flat_map(|event| event.destinations.iter().map(String::as_str))
        .collect();
    if !queued.is_empty() {
        // Every queue row names an existing destination row.
        lock_destinations(tx, &queued).await?;
    }
    let new_rows = serde_json::Value::Array(
        events
            .iter()
            .filter(|e| !ordering_of.contains_key(&e.event_id))
            .map(|e| serde_json::json!([e.event_id, e.room_id, e.pdu_json]))
            .collect(),
    );
    // Orderings this statement created: nothing is queued for them yet.
    let mut fresh: HashSet<i64> = HashSet::new();
    if new_rows.as_array().is_some_and(|rows| !rows.is_empty()) {
        // json_each walks the array in order, so orderings follow it
        // (PostgreSQL: in the order of the array's ordinality).
        let inserted: Vec<(String, i64)> = on_tx!(tx, |conn, pg| sqlx::query_as(if pg {
            "INSERT INTO outgoing_events (event_id, room_id, json, received_ts, canonical) \
             SELECT value->>0, value->>1, value->>2, $1, 1 \
             FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY ORDER BY ordinality \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id, stream_ordering"
        } else {
            "INSERT INTO outgoing_events (event_id, room_id, json, received_ts, canonical) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
             json_extract(value, '$[2]'), ?, 1 FROM json_each(?) WHERE true \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id, stream_ordering"
        })
        .bind(now)
        .bind(new_rows.to_string())
        .fetch_all(conn)
        .await?);
        fresh.extend(inserted.iter().map(|(_, ordering)| *ordering));
        ordering_of.extend(inserted);
    }
    // PostgreSQL: an event inserted by another instance after the check
    // above, and committed while this insert waited for it, was skipped by
    // `ON CONFLICT`; this new statement sees it. Its room is checked as
    // above (SQLite's `BEGIN IMMEDIATE` keeps every other writer out).
    let late: Vec<&str> = events
        .iter()
        .filter(|e| !ordering_of.contains_key(&e.event_id))
        .map(|e| e.event_id.as_str())
        .collect();
    if !late.is_empty() {
        for (event_id, room_id, ordering) in stored_events(tx, &late).await? {
            if room_of.get(event_id.as_str()) != Some(&room_id.as_str()) {
                return Ok(Err(OutboxError::EventInAnotherRoom { event_id, room_id }));
            }
            ordering_of.insert(event_id, ordering);
        }
    }
    let mut assigned = Vec::with_capacity(events.len());
    // (destination, ordering), each once (an event may come twice).
    let mut queue_rows: BTreeSet<(&str, i64)> = BTreeSet::new();
    for event in events {
        let Some(&ordering) = ordering_of.get(&event.event_id) else {
            return Err(StoreError::Corrupt {
                what: format!("{} has no stream ordering after its insert", event.event_id),
            });
        };
        assigned.push(ordering);
        for destination in &event.destinations {
            queue_rows.insert((destination, ordering));
        }
    }
    if !queue_rows.is_empty() {
        queue(tx, &queue_rows, &fresh).await?;
    }
    Ok(Ok(assigned))
}

/// Makes sure every destination of `names` has its `destinations` row, and
/// that it stays until the commit. SQLite: an insert (its foreign key and
/// single writer do the rest). PostgreSQL, whose queue has no foreign keys
/// (migration 0008): the rows are locked `FOR KEY SHARE` after the insert,
/// which a forget's `FOR UPDATE` waits for (and then deletes the queue rows
/// this commit adds). A row a forget deleted between the insert and the
/// lock is missing from the lock's answer: inserted again, and locked.
async fn lock_destinations(tx: &mut DbTx, names: &BTreeSet<&str>) -> Result<(), StoreError> {
    match tx {
        DbTx::Sqlite(tx) => {
            sqlx::query(
                "INSERT INTO destinations (destination) SELECT value FROM json_each(?) \
                 WHERE true ON CONFLICT DO NOTHING",
            )
            .bind(json_array(names.iter()))
            .execute(&mut **tx)
            .await?;
        }
        DbTx::Postgres(tx) => {
            let mut missing: Vec<&str> = names.iter().copied().collect();
            // Each round needs a forget to commit between two statements of
            // this one; a few rounds are plenty.
            for _ in 0..LOCK_ROUNDS {
                sqlx::query(
                    "INSERT INTO destinations (destination) \
                     SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
                )
                .bind(&missing)
                .execute(&mut **tx)
                .await?;
                let locked: Vec<String> = sqlx::query_scalar(
                    "SELECT destination FROM destinations WHERE destination = ANY($1::text[]) \
                     ORDER BY destination FOR KEY SHARE",
                )
                .bind(&missing)
                .fetch_all(&mut **tx)
                .await?;
                let locked: HashSet<&str> = locked.iter().map(String::as_str).collect();
                missing.retain(|name| !locked.contains(name));
                if missing.is_empty() {
                    return Ok(());
                }
            }
            return Err(StoreError::Contended(format!(
                "destinations {missing:?} were deleted {LOCK_ROUNDS} times while events were queued for them"
            )));
        }
    }
    Ok(())
}

/// Rounds of [`lock_destinations`] before it gives up.
const LOCK_ROUNDS: usize = 5;

/// Queues `rows` (destination, stream ordering). On PostgreSQL the rows of
/// `fresh` orderings go in as arrays with a plain insert (no speculative
/// insertion for `ON CONFLICT`: nothing can be queued for an ordering the
/// same transaction just created); the others may be queued already.
async fn queue(
    tx: &mut DbTx,
    rows: &BTreeSet<(&str, i64)>,
    fresh: &HashSet<i64>,
) -> Result<(), StoreError> {
    match tx {
        DbTx::Postgres(tx) => {
            let (new, known): (Vec<_>, Vec<_>) = rows
                .iter()
                .partition(|(_, ordering)| fresh.contains(ordering));
            for (part, text) in [
                (
                    new,
                    "INSERT INTO destination_pdus (destination, stream_ordering) \
                     SELECT * FROM unnest($1::text[], $2::bigint[])",
                ),
                (
                    known,
                    "INSERT INTO destination_pdus (destination, stream_ordering) \
                     SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
                ),
            ] {
                if part.is_empty() {
                    continue;
                }
                let (names, orderings): (Vec<&str>, Vec<i64>) = part.into_iter().copied().unzip();
                sqlx::query(text)
                    .bind(names)
                    .bind(orderings)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        DbTx::Sqlite(tx) => {
            let json = serde_json::Value::Array(
                rows.iter()
                    .map(|(destination, ordering)| serde_json::json!([destination, ordering]))
                    .collect(),
            );
            sqlx::query(
                "INSERT INTO destination_pdus (destination, stream_ordering) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                 FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
            )
            .bind(json.to_string())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}
