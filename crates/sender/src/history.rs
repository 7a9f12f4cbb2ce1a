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

/// `name` enters catch-up (its backoff ends at `due`), noted in a task of
/// its own, once: not again while the last catch-up noted has not ended.
pub(super) fn entered_catch_up(shared: &Shared, name: &str, due: Option<i64>) {
    let (destinations, name) = (shared.store.destinations.clone(), name.to_owned());
    let minutes = due.map(|due| ((due - shared.now()) / 60_000).max(0));
    let entry = NewEntry {
        message: Some(match minutes {
            Some(m) => format!(
                "long outage: the newest event of each room goes when it is tried again in {m} min"
            ),
            None => "long outage: the newest event of each room goes next".to_owned(),
        }),
        ..NewEntry::default()
    };
    tokio::spawn(async move {
        let noted = destinations
            .add_history_once(
                &name,
                HistoryEvent::CatchUpEntered,
                HistoryEvent::CatchUpLeft,
                entry,
            )
            .await;
        if let Err(e) = noted {
            tracing::warn!(destination = ?name, error = %e, "could not note the destination's history");
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
