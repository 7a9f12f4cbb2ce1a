//! What the sender notes about a destination beyond its backoff: PDUs the
//! destination refused (its last error, kind `pdu_rejected`), catch-up
//! entered and left, and queued items dropped (its history). Best effort:
//! a failure to note is logged and sending goes on.

use herald_shared::{Failure, FailureKind, HistoryEvent};
use herald_store::history::NewEntry;

use super::scheduler::Shared;

/// Adds `event` to `name`'s history, now or (from code that cannot wait) in
/// a task of its own.
pub(super) async fn note(shared: &Shared, name: &str, event: HistoryEvent, entry: NewEntry) {
    if let Err(e) = shared
        .store
        .destinations
        .add_history(name, event, entry)
        .await
    {
        tracing::warn!(destination = ?name, event = event.as_str(), error = %e, "could not note the destination's history");
    }
}

/// The same from code that cannot wait.
pub(super) fn note_later(shared: &Shared, name: &str, event: HistoryEvent, entry: NewEntry) {
    let (destinations, name) = (shared.store.destinations.clone(), name.to_owned());
    tokio::spawn(async move {
        if let Err(e) = destinations.add_history(&name, event, entry).await {
            tracing::warn!(destination = ?name, event = event.as_str(), error = %e, "could not note the destination's history");
        }
    });
}

/// `count` queued items of `name` were dropped, for `why`.
pub(super) async fn dropped(shared: &Shared, name: &str, count: u64, why: &str) {
    if count == 0 {
        return;
    }
    let entry = NewEntry {
        count: Some(i64::try_from(count).unwrap_or(i64::MAX)),
        message: Some(why.to_owned()),
        ..NewEntry::default()
    };
    note(shared, name, HistoryEvent::QueueDropped, entry).await;
}

/// The destination accepted a transaction of `sent` PDUs but refused
/// `errors` (event ID, its error) of them: its last error.
pub(super) async fn pdus_rejected(
    shared: &Shared,
    name: &str,
    sent: usize,
    errors: &[(String, String)],
) {
    let Some((event_id, error)) = errors.first() else {
        return;
    };
    let text = format!(
        "refused {} of {sent} PDUs; {event_id}: {error}",
        errors.len()
    );
    let failure = Failure::new(FailureKind::PduRejected, &text, None);
    if let Err(e) = shared
        .store
        .destinations
        .record_failure(name, &failure, false)
        .await
    {
        tracing::warn!(destination = ?name, error = %e, "could not store the destination's last error");
    }
}
