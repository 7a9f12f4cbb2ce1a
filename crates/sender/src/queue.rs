//! One destination's queue, run by one task while it has something to send
//! (so at most one transaction is in flight per destination). In order: the
//! next ≤ 50 PDUs and ≤ 100 EDUs queued, or, in catch-up, the newest
//! undelivered event of each room (one room per transaction, oldest first).
//! Each transaction goes through the federation client (signing, retries,
//! backoff); an acknowledged one is recorded in the store, a failed one parks
//! the destination until its backoff ends.

use std::sync::Arc;

use serde_json::Value;

use super::history;
use super::metrics::TxnOutcome;
use super::scheduler::Shared;
use super::transaction::{self, Contents, InFlight, MAX_EDUS, MAX_PDUS};
use herald_federation::backoff::Outcome;
use herald_federation::client::{FederationError, RequestOptions};
use herald_shared::HistoryEvent;
use herald_store::delivery::{Delivery, PendingEdu, PendingPdu, Superseded};
use herald_store::history::NewEntry;
use herald_store::{OutboxError, StoreError};

/// How soon a transaction is tried again when its answer found no room in
/// the client's answer budget in time (a shortage here, not the
/// destination's fault: no backoff).
const LOCAL_SHORTAGE_RETRY_MS: i64 = 5_000;

/// The largest `/send` answer accepted: 1 MiB. The answer is
/// `{"pdus": {"<event ID>": {} or {"error": "<text>"}}}` for at most 50
/// PDUs, a few KiB when all goes well, but a receiver may put long error
/// texts in it, and it replays its cached answer when the same transaction
/// ID is sent again: a cap an honest answer can pass would wedge the
/// destination for good (the same over-cap answer, a growing backoff). So
/// the cap is generous; larger, the answer is refused as it streams in and
/// counts as the destination failing. Memory is bounded by the client's
/// byte budget for answer bodies, whatever the cap and the concurrency.
pub const SEND_ANSWER_MAX_SIZE: u64 = 1024 * 1024;

/// How long the queue waits after a database error before trying again.
const STORE_ERROR_WAIT_MS: i64 = 5_000;

/// How soon a failed transaction whose backoff an admin reset meanwhile is
/// tried again.
const RESET_RACE_RETRY_MS: i64 = 1_000;

/// What one step of the queue came to.
enum Step {
    /// A transaction was acknowledged (or nothing was left to send in it).
    Sent,
    /// Nothing is queued.
    Empty,
    /// Catch-up has no room left to send.
    CaughtUp,
    /// Stop until this time (ms since the epoch).
    WaitUntil(i64),
    /// The destination's shard is no longer this instance's (the
    /// transaction in flight, if any, was dropped).
    Lost,
}

#[derive(Debug, thiserror::Error)]
enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Parks the destination if its task ends without saying where it stands
/// (a panic), so that it is tried again rather than forgotten.
struct Park<'a> {
    shared: &'a Shared,
    name: &'a str,
    armed: bool,
}

impl Drop for Park<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .wait_until(self.name, self.shared.now() + STORE_ERROR_WAIT_MS);
        }
    }
}

/// Sends `name`'s queue until it is empty or the destination must wait.
pub(super) async fn run(shared: Arc<Shared>, name: Arc<str>) {
    let mut park = Park {
        shared: &shared,
        name: &name,
        armed: true,
    };
    loop {
        // Before each transaction: is it still ours to send?
        if !shared.ownership.owns(&name) {
            tracing::debug!(destination = ?name, "shard no longer held: another instance sends it");
            shared.forget(&name);
            park.armed = false;
            return;
        }
        let catching_up = shared.with(&name, |d| d.catching_up).unwrap_or(false);
        let step = if catching_up {
            catch_up_step(&shared, &name).await
        } else {
            queue_step(&shared, &name).await
        };
        match step {
            Ok(Step::Sent) => {}
            Ok(Step::CaughtUp) => {
                tracing::info!(destination = ?name, "caught up");
                shared.with(&name, |d| d.catching_up = false);
                history::note(
                    &shared,
                    &name,
                    HistoryEvent::CatchUpLeft,
                    NewEntry::default(),
                )
                .await;
            }
            Ok(Step::Empty) => {
                if shared.finish_if_idle(&name) {
                    park.armed = false;
                    return;
                }
            }
            Ok(Step::WaitUntil(due)) => {
                shared.wait_until(&name, due);
                park.armed = false;
                return;
            }
            Ok(Step::Lost) => {
                tracing::info!(destination = ?name, "shard lost: transaction in flight dropped");
                shared.forget(&name);
                park.armed = false;
                return;
            }
            Err(e) => {
                tracing::error!(destination = ?name, error = %e, "sender queue: database error");
                shared.wait_until(&name, shared.now() + STORE_ERROR_WAIT_MS);
                park.armed = false;
                return;
            }
        }
    }
}

/// Full transactions read after the last one's end before a read from the
/// queue's start again (see `queue_step`).
const CURSOR_READS: u32 = 16;

/// The next PDUs and EDUs in queue order, in one transaction.
async fn queue_step(shared: &Shared, name: &str) -> Result<Step, QueueError> {
    let in_flight = shared.with(name, |d| d.in_flight.clone()).flatten();
    let (pdu_bound, edu_bound) = in_flight
        .as_ref()
        .map_or((i64::MAX, i64::MAX), |t| t.contents.bounds());
    // A long queue is read from where the last full transaction ended;
    // what is queued before that point later (an event queued again, or
    // committed late by another instance) goes when the rest is read short
    // and the queue is read from its start again (and every
    // `CURSOR_READS` full reads).
    let after = match &in_flight {
        None => shared
            .with(name, |d| d.read_after)
            .flatten()
            .map(|(ordering, _)| ordering),
        // A retry reads exactly the span it held, so that its contents
        // (and its transaction ID) stay the same.
        Some(t) => t.contents.pdus.iter().min().map(|m| m - 1),
    };
    let outbox = &shared.store.outbox;
    let mut pdus = outbox
        .pending_pdus_between(name, after.unwrap_or(i64::MIN), pdu_bound, MAX_PDUS)
        .await?;
    if in_flight.is_none() && after.is_some() && pdus.len() < MAX_PDUS as usize {
        pdus = outbox
            .pending_pdus_between(name, i64::MIN, pdu_bound, MAX_PDUS)
            .await?;
    }
    let edus = shared
        .store
        .outbox
        .pending_edus_up_to(name, MAX_EDUS, edu_bound)
        .await?;
    if pdus.is_empty() && edus.is_empty() {
        if in_flight.is_some() {
            // What was in flight is gone; look again without its bounds.
            shared.with(name, |d| d.in_flight = None);
            return Ok(Step::Sent);
        }
        return Ok(Step::Empty);
    }
    let step = send(shared, name, in_flight, &pdus, &edus, None).await?;
    if matches!(step, Step::Sent) {
        let full = pdus.len() == MAX_PDUS as usize;
        let last = pdus.last().map(|p| p.stream_ordering);
        shared.with(name, |d| {
            // Every `CURSOR_READS` full reads, one from the start: what was
            // queued behind the cursor waits at most that long under load.
            let reads = d.read_after.map_or(0, |(_, n)| n + 1);
            d.read_after = last
                .filter(|_| full && reads < CURSOR_READS)
                .map(|ordering| (ordering, reads));
        });
    }
    Ok(step)
}

/// Catch-up: the newest undelivered event of each room after
/// `last_successful_stream_ordering`, one room per transaction.
async fn catch_up_step(shared: &Shared, name: &str) -> Result<Step, QueueError> {
    let drop_volatile = shared
        .with(name, |d| !std::mem::replace(&mut d.volatile_dropped, true))
        .unwrap_or(false);
    if drop_volatile {
        let dropped = shared.store.outbox.drop_volatile_edus(name).await?;
        tracing::info!(destination = ?name, dropped_edus = dropped, "catching up: presence, typing and receipts dropped");
        history::dropped(
            shared,
            name,
            dropped,
            "catching up: presence, typing and receipt EDUs",
        )
        .await;
    }
    let after = shared
        .store
        .destinations
        .indexed(name)
        .and_then(|row| row.last_successful_stream_ordering)
        .unwrap_or(0);
    let events = shared
        .store
        .outbox
        .catch_up_events(name, after, MAX_PDUS)
        .await?;
    if events.is_empty() {
        return Ok(Step::CaughtUp);
    }
    for event in events {
        let Some(pdu) = event.pdu else {
            // Nothing to send for this room: move past it.
            shared
                .store
                .outbox
                .record_delivery(Delivery {
                    destination: name.to_owned(),
                    passed: Some(event.stream_ordering),
                    ..Delivery::default()
                })
                .await?;
            continue;
        };
        let in_flight = shared.with(name, |d| d.in_flight.clone()).flatten();
        let edu_bound = in_flight
            .as_ref()
            .filter(|t| t.contents.pdus == [pdu.stream_ordering])
            .map_or(i64::MAX, |t| t.contents.bounds().1);
        let edus = shared
            .store
            .outbox
            .pending_edus_up_to(name, MAX_EDUS, edu_bound)
            .await?;
        let superseded = Some(Superseded {
            room_id: pdu.room_id.clone(),
            up_to: pdu.stream_ordering,
        });
        match send(shared, name, in_flight, &[pdu], &edus, superseded).await? {
            Step::Sent => {}
            other => return Ok(other),
        }
    }
    Ok(Step::Sent)
}

/// Sends one transaction and records what came of it.
async fn send(
    shared: &Shared,
    name: &str,
    in_flight: Option<InFlight>,
    pdus: &[PendingPdu],
    edus: &[PendingEdu],
    superseded: Option<Superseded>,
) -> Result<Step, QueueError> {
    let contents = Contents {
        pdus: pdus.iter().map(|p| p.stream_ordering).collect(),
        edus: edus.iter().map(|e| e.id).collect(),
    };
    let txn = match in_flight {
        Some(t) if t.contents == contents => t,
        _ => InFlight {
            txn_id: shared.txn_ids.next().await?,
            origin_server_ts: shared.now(),
            contents,
        },
    };
    shared.with(name, |d| d.in_flight = Some(txn.clone()));
    let body = transaction::body(&shared.origin, txn.origin_server_ts, pdus, edus);
    let path = format!("/_matrix/federation/v1/send/{}", txn.txn_id);
    // Synapse's options for transactions.
    let options = RequestOptions {
        long_retries: true,
        backoff_on_404: true,
        try_trailing_slash_on_400: true,
        max_response_size: Some(SEND_ANSWER_MAX_SIZE),
        ..RequestOptions::default()
    };
    // The answer must be a JSON object (as Synapse's `JsonParser`); any
    // other body fails the request, and the client counts it against the
    // destination's backoff.
    // Dropped (the request with it) the moment the shard stops being
    // ours: a receiver never has two instances' transactions in flight.
    // Counted as under way (until recorded) before the last check, so that
    // a shard being given up is freed only once nothing can still go out.
    let _sending = shared.ownership.sending(name);
    // Checked again just before sending: the reads before may have waited
    // out a lapse of the lease.
    if !shared.ownership.owns(name) {
        return Ok(Step::Lost);
    }
    let request = shared
        .client
        .put_canonical_json::<serde_json::Map<String, Value>>(name, &path, &body, options);
    let answer = tokio::select! {
        // The loss first: a request whose answer comes with it is dropped.
        biased;
        () = shared.ownership.lost(name) => return Ok(Step::Lost),
        answer = request => answer,
    };
    match answer {
        Ok(answer) => {
            let errors = transaction::pdu_errors(&Value::Object(answer));
            for (event_id, error) in &errors {
                tracing::warn!(destination = ?name, event_id = ?event_id, error = ?error, "destination refused a PDU");
            }
            history::pdus_rejected(shared, name, pdus.len(), &errors).await;
            shared
                .store
                .outbox
                .record_delivery(Delivery {
                    destination: name.to_owned(),
                    pdus: txn.contents.pdus.clone(),
                    edus: txn.contents.edus.clone(),
                    superseded,
                    passed: None,
                })
                .await?;
            shared.with(name, |d| d.in_flight = None);
            for edu in edus {
                shared.metrics.edu_sent(&edu.edu_type);
            }
            shared.metrics.transaction(
                TxnOutcome::Sent,
                pdus.len() as u64,
                edus.len() as u64,
                errors.len() as u64,
            );
            tracing::debug!(destination = ?name, txn_id = txn.txn_id, pdus = pdus.len(), edus = edus.len(), "transaction sent");
            Ok(Step::Sent)
        }
        Err(e) => failed(shared, name, e, &txn.contents).await,
    }
}

/// After a failed transaction: when to try again, and whether the outage
/// is long enough for catch-up.
async fn failed(
    shared: &Shared,
    name: &str,
    error: FederationError,
    contents: &Contents,
) -> Result<Step, QueueError> {
    let now = shared.now();
    match &error {
        // Never sendable: the queue must not wait behind it forever.
        FederationError::InvalidRequest(reason) => {
            tracing::error!(destination = ?name, reason = ?reason, pdus = ?contents.pdus, edus = ?contents.edus, "transaction cannot be built; its PDUs and EDUs are dropped");
            shared
                .store
                .outbox
                .drop_queued(name, &contents.pdus, &contents.edus)
                .await?;
            let count = (contents.pdus.len() + contents.edus.len()) as u64;
            history::dropped(shared, name, count, "the transaction cannot be built").await;
            shared.with(name, |d| d.in_flight = None);
            shared.metrics.transaction(TxnOutcome::Rejected, 0, 0, 0);
            return Ok(Step::Sent);
        }
        FederationError::DeniedByWhitelist(_) => {
            let dropped = shared.store.outbox.drop_all_queued(name).await?;
            tracing::warn!(destination = ?name, dropped, "not in federation_domain_whitelist (any more): its queue is dropped");
            history::dropped(shared, name, dropped, "not in federation_domain_whitelist").await;
            shared.with(name, |d| d.in_flight = None);
            return Ok(Step::Sent);
        }
        _ => {}
    }
    if let FederationError::NotRetrying {
        retry_last_ts,
        retry_interval,
        ..
    } = error
    {
        enter_catch_up_if_long(shared, name, retry_interval);
        return Ok(Step::WaitUntil(
            retry_last_ts.saturating_add(retry_interval),
        ));
    }
    if let FederationError::AnswerBudget { .. } = error {
        // Our own shortage (the answers held in memory), not the
        // destination's: the same transaction again shortly, no backoff.
        shared.metrics.transaction(TxnOutcome::Failed, 0, 0, 0);
        tracing::info!(destination = ?name, error = ?error.to_string(), retry_in_ms = LOCAL_SHORTAGE_RETRY_MS, "transaction answer found no memory in time; trying again shortly");
        return Ok(Step::WaitUntil(now.saturating_add(LOCAL_SHORTAGE_RETRY_MS)));
    }
    // The client has stored what this failure does to the backoff.
    let backoff = shared.store.destinations.retry_timings(name).await?;
    match backoff {
        Some(t) if t.retry_last_ts.saturating_add(t.retry_interval) > now => {
            shared.metrics.transaction(TxnOutcome::Failed, 0, 0, 0);
            let due = t.retry_last_ts.saturating_add(t.retry_interval);
            tracing::info!(destination = ?name, error = ?error.to_string(), retry_in_ms = due.saturating_sub(now), "transaction failed; backing off");
            enter_catch_up_if_long(shared, name, t.retry_interval);
            Ok(Step::WaitUntil(due))
        }
        _ if counts_against(&error) => {
            // A failure that put it in backoff, cleared since by an admin's
            // reset (between the client's record and the read above): the
            // reset asks for a try now, not the wait of a rejection.
            shared.metrics.transaction(TxnOutcome::Failed, 0, 0, 0);
            tracing::info!(destination = ?name, error = ?error.to_string(), "transaction failed; its backoff was reset meanwhile: trying again");
            Ok(Step::WaitUntil(now.saturating_add(RESET_RACE_RETRY_MS)))
        }
        _ => {
            // Answered, but not with success (a 4xx that says nothing
            // about its health): no backoff, but not at once either. (An
            // answer that is not a transaction response is a failure: the
            // client has put the destination in backoff.)
            shared.metrics.transaction(TxnOutcome::Rejected, 0, 0, 0);
            let wait = i64::try_from(shared.retry_rejected_after.as_millis()).unwrap_or(i64::MAX);
            tracing::warn!(destination = ?name, error = ?error.to_string(), retry_in_ms = wait, "transaction rejected");
            Ok(Step::WaitUntil(now.saturating_add(wait)))
        }
    }
}

/// Whether the client counted `error` against the destination's backoff
/// (everything but a 4xx that says nothing of its health, with Synapse's
/// transaction options: a 404 counts).
fn counts_against(error: &FederationError) -> bool {
    match error {
        FederationError::Http { status, .. } => {
            Outcome::of_status(*status, true) == Outcome::Failure
        }
        // The backoff store failed: nothing was counted.
        FederationError::Store(_) => false,
        _ => true,
    }
}

/// A backoff over `sender_catch_up_after` (an hour by default): send the newest event per room when it ends,
/// and drop the presence, typing and receipt EDUs queued meanwhile.
fn enter_catch_up_if_long(shared: &Shared, name: &str, retry_interval: i64) {
    if retry_interval <= shared.catch_up_after_ms {
        return;
    }
    let entered = shared.with(name, |d| {
        if !d.catching_up {
            tracing::info!(destination = ?name, retry_interval_ms = retry_interval, "long backoff: catch-up from now on");
            d.catching_up = true;
            d.volatile_dropped = false;
            d.in_flight = None;
            true
        } else {
            false
        }
    });
    if entered == Some(true) {
        history::entered_catch_up(shared, name, Some(shared.now() + retry_interval));
    }
}
