//! Notices between Herald instances sharing one PostgreSQL database
//! (LISTEN/NOTIFY): what another instance wrote reaches this one's
//! destinations index, reset broadcast and sender within a second. SQLite
//! has one Herald process: nothing here runs on it.
//!
//! Three channels, each payload `<instance> <what>` (`instance`: the
//! writing session's `herald.instance`, set on every connection of a store's
//! pool, so a store skips its own notices — it applied those writes itself):
//! - `herald_destinations`: a destination's row or room count changed (a
//!   trigger, migration 0007, notifies in the writing transaction: no write
//!   path can forget it). The names heard within 50 ms are re-read in
//!   one query and applied to the index; a row gone leaves it.
//! - `herald_resets`: `reset_connection` cleared a backoff (sent by
//!   `reset_retry_timings`'s statement): put on the reset broadcast once the
//!   row is re-read, which wakes the sender's queue and the federation
//!   client's view of the backoff, as a local reset does.
//! - `herald_queued`: the outbox's group commit queued data for these
//!   destinations (names joined by `\n`, in as many payloads as needed up to
//!   16, or `*` for more): told on [`crate::Outbox::subscribe_queued`].
//!
//! The listener pings itself every 2 s (`herald_ping`): a connection that
//! hears nothing for 7 s has gone silent (a network cut) and is replaced.
//! Notices sent while the listener is disconnected are lost: on every
//! reconnect the whole index is reloaded (a backoff that ended meanwhile is
//! broadcast as a reset) and the sender told [`Queued::Rescan`], so nothing
//! missed stays missed.

mod apply;
mod listener;

pub(crate) use listener::listen;
pub use listener::Notices;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::db::DbTx;

/// Changed `destinations` rows and room counts (the trigger's channel).
pub(crate) const DESTINATIONS: &str = "herald_destinations";
/// Backoffs an admin reset.
pub(crate) const RESETS: &str = "herald_resets";
/// Destinations that data was queued for.
pub(crate) const QUEUED: &str = "herald_queued";
/// A payload standing for every destination.
pub(crate) const EVERYTHING: &str = "*";
/// Pings on the listener's connection, to tell a silent one.
const PING: &str = "herald_ping";

/// Longest queued payload sent; a longer list is sent as [`EVERYTHING`]
/// (PostgreSQL refuses payloads of 8000 bytes).
const MOST_PAYLOAD: usize = 7_000;
/// Most queued payloads one commit sends (about 4,000 names); a commit for
/// more destinations sends [`EVERYTHING`].
const MOST_PAYLOADS: usize = 16;

/// What the sender hears of data queued by another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Data was queued for these destinations.
    Destinations(Arc<[String]>),
    /// Notices may have been missed (the listener reconnected): every
    /// destination with queued data (`destinations_with_pending`), and
    /// every backoff, may have changed.
    Rescan,
}

/// A new name for this store's sessions, unique across processes and
/// hosts in practice: process ID, the time, and a counter.
pub(crate) fn new_instance_tag() -> String {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `herald_queued` payloads (without the instance) for `names`: each
/// under [`MOST_PAYLOAD`] bytes, at most [`MOST_PAYLOADS`] of them, or one
/// [`EVERYTHING`] when they would not fit (or a name cannot be told).
pub(crate) fn queued_payloads<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let everything = || vec![EVERYTHING.to_owned()];
    let mut payloads = vec![String::new()];
    for name in names {
        if name.contains('\n') || name == EVERYTHING || name.len() >= MOST_PAYLOAD {
            return everything();
        }
        let full = payloads
            .last()
            .is_none_or(|p| p.len() + 1 + name.len() >= MOST_PAYLOAD);
        if full {
            if payloads.len() == MOST_PAYLOADS {
                return everything();
            }
            payloads.push(String::new());
        }
        if let Some(payload) = payloads.last_mut() {
            if !payload.is_empty() {
                payload.push('\n');
            }
            payload.push_str(name);
        }
    }
    payloads.retain(|p| !p.is_empty());
    payloads
}

/// Starts a bulk write in `tx` (PostgreSQL; nothing on SQLite): the
/// trigger notifies nothing per row until the commit, and other instances
/// are told once, at the commit, to reload every row. For writes of many
/// rows (an import), where a notice per row would cost more than a reload.
pub(crate) async fn bulk_write(tx: &mut DbTx) -> Result<(), sqlx::Error> {
    if let DbTx::Postgres(pg) = tx {
        bulk_write_pg(pg).await?;
    }
    Ok(())
}

/// [`bulk_write`] on a PostgreSQL transaction's connection.
pub(crate) async fn bulk_write_pg(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('herald.bulk', 'on', true), \
         pg_notify('herald_destinations', \
         COALESCE(current_setting('herald.instance', true), '') || ' *')",
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_names_are_split_into_payloads_under_the_limit() {
        assert!(queued_payloads([]).is_empty());
        assert_eq!(queued_payloads(["a.org", "b.org"]), ["a.org\nb.org"]);
        let names: Vec<String> = (0..1_000).map(|i| format!("d{i:05}.example.org")).collect();
        let payloads = queued_payloads(names.iter().map(String::as_str));
        assert!(payloads.len() > 1, "{}", payloads.len());
        assert!(payloads.iter().all(|p| p.len() < MOST_PAYLOAD));
        let back: Vec<&str> = payloads.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back, names);
    }

    #[test]
    fn too_many_names_or_one_that_cannot_be_told_ask_for_a_rescan() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("d{i:05}.example.org"))
            .collect();
        assert_eq!(queued_payloads(names.iter().map(String::as_str)), ["*"]);
        assert_eq!(queued_payloads(["a.org", "new\nline"]), ["*"]);
        assert_eq!(queued_payloads(["*"]), ["*"]);
        let long = "x".repeat(MOST_PAYLOAD);
        assert_eq!(queued_payloads([long.as_str()]), ["*"]);
    }
}
