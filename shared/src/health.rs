//! Why a destination fails and what happened to it: the fixed set of
//! failure kinds, the stored last error, the history log's entries, and the
//! bodies of Herald's own destination endpoints under
//! `/_herald/admin/v1/federation/` (details with health, history, forget).
//! The federation client classifies, the store keeps, the API serves and
//! the console shows these same types.

use serde::{Deserialize, Serialize};

use crate::{Destination, DestinationDetails, DestinationQueue, DestinationStatus};

/// Why a request or transaction to a destination failed. A fixed,
/// documented set (README, "Failure kinds"); the wire name is snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No such name, or no answer from DNS (A/AAAA/SRV).
    Dns,
    /// The IP range filter or the federation whitelist refused it.
    Blocked,
    /// TCP connect refused, unreachable or timed out (the address tried).
    Connect,
    /// TLS handshake failed: untrusted or expired certificate, wrong name.
    Tls,
    /// Connected, but no answer in time.
    Timeout,
    /// An HTTP error status (with the Matrix `errcode` and `error`).
    Http,
    /// A 2xx answer that is not the JSON expected, or too large.
    InvalidResponse,
    /// The transaction was accepted but the destination refused PDUs in it.
    PduRejected,
}

impl FailureKind {
    /// Every kind, in the order the README and metrics list them.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Dns,
        FailureKind::Blocked,
        FailureKind::Connect,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::Http,
        FailureKind::InvalidResponse,
        FailureKind::PduRejected,
    ];

    /// The wire name (`dns`, `blocked`, …), also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::Blocked => "blocked",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Http => "http",
            FailureKind::InvalidResponse => "invalid_response",
            FailureKind::PduRejected => "pdu_rejected",
        }
    }

    /// The kind a wire name names; `None` for anything else.
    pub fn parse(text: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// A few words for an admin (the console's label).
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Dns => "DNS",
            FailureKind::Blocked => "Blocked",
            FailureKind::Connect => "Connection",
            FailureKind::Tls => "TLS",
            FailureKind::Timeout => "Timeout",
            FailureKind::Http => "HTTP error",
            FailureKind::InvalidResponse => "Invalid response",
            FailureKind::PduRejected => "PDUs rejected",
        }
    }
}

/// The longest message stored for a failure (characters); longer ones are
/// cut and end in `…`.
pub const MAX_FAILURE_MESSAGE: usize = 300;

/// Cuts `text` to [`MAX_FAILURE_MESSAGE`] characters on one line.
pub fn failure_message(text: &str) -> String {
    one_line(text, MAX_FAILURE_MESSAGE)
}

/// A remote's text as one line of at most `max` characters: control
/// characters (newlines included) become spaces, and a longer text ends in
/// `…`. Whatever Herald keeps or shows of another server's words goes
/// through it.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// A failure as the federation client or the sender reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// One line an admin understands (at most [`MAX_FAILURE_MESSAGE`]).
    pub message: String,
    /// The address tried (`ip:port`), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Failure {
    /// A failure with its message made one line and cut to the bound.
    pub fn new(kind: FailureKind, message: &str, address: Option<String>) -> Failure {
        Failure {
            kind,
            message: failure_message(message),
            address,
        }
    }
}

/// The last failure stored for a destination. Kept after a success (the
/// status says whether it still fails); replaced by the next failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When it happened (ms since the epoch).
    pub ts: i64,
    pub kind: FailureKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What Herald adds to a destination beyond Synapse's columns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DestinationExtras {
    pub last_error: Option<LastError>,
    /// When a transaction was last delivered to it (ms since the epoch).
    pub last_delivered_ts: Option<i64>,
}

/// One row of Herald's `GET /_herald/admin/v1/federation/destinations`: the
/// Synapse row plus the derived status, the next retry and the extras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationHealthRow {
    #[serde(flatten)]
    pub row: Destination,
    pub status: DestinationStatus,
    /// When the next try may go (ms since the epoch); `None` when not in backoff.
    pub next_retry_ts: Option<i64>,
    #[serde(flatten)]
    pub extras: DestinationExtras,
}

/// Herald's list: Synapse's envelope with [`DestinationHealthRow`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationHealthPage {
    pub destinations: Vec<DestinationHealthRow>,
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// Herald's `GET /_herald/admin/v1/federation/destinations/<d>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationHealth {
    #[serde(flatten)]
    pub details: DestinationDetails,
    pub status: DestinationStatus,
    pub next_retry_ts: Option<i64>,
    #[serde(flatten)]
    pub extras: DestinationExtras,
    pub queue: DestinationQueue,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    /// It started failing (`kind`, `message`); later failures of the same
    /// outage add to `count` and move `last_ts`.
    Failing,
    /// It answered again after failing; `outage_ms` long.
    Recovered,
    /// An admin (`actor`) reset its backoff.
    Reset,
    /// The sender began catching it up (too much missed to replay).
    CatchUpEntered,
    /// Catch-up ended: it is up to date.
    CatchUpLeft,
    /// Queued PDUs/EDUs were dropped (`count`, `message` says which).
    QueueDropped,
    /// An admin (`actor`) forgot it: rows and queues removed.
    Forgotten,
}

impl HistoryEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Failing => "failing",
            HistoryEvent::Recovered => "recovered",
            HistoryEvent::Reset => "reset",
            HistoryEvent::CatchUpEntered => "catch_up_entered",
            HistoryEvent::CatchUpLeft => "catch_up_left",
            HistoryEvent::QueueDropped => "queue_dropped",
            HistoryEvent::Forgotten => "forgotten",
        }
    }

    pub const ALL: [HistoryEvent; 7] = [
        HistoryEvent::Failing,
        HistoryEvent::Recovered,
        HistoryEvent::Reset,
        HistoryEvent::CatchUpEntered,
        HistoryEvent::CatchUpLeft,
        HistoryEvent::QueueDropped,
        HistoryEvent::Forgotten,
    ];

    pub fn parse(text: &str) -> Option<HistoryEvent> {
        HistoryEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// One entry of a destination's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Increasing; the pagination key.
    pub id: i64,
    /// When it began (ms since the epoch).
    pub ts: i64,
    pub event: HistoryEvent,
    /// `failing`: when the last failure of the outage was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<i64>,
    /// `failing`: failures in this outage; `queue_dropped`: items dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `recovered`: how long it had been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_ms: Option<i64>,
    /// `reset`, `forgotten`: the admin's user ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// `GET /_herald/admin/v1/federation/destinations/<d>/history`: newest
/// first; `next_token` (an entry id) asks for older entries with `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub destination: String,
    pub entries: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `DELETE /_herald/admin/v1/federation/destinations/<d>`: what was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    pub destination: String,
    pub rooms: u64,
    pub queued_pdus: u64,
    pub queued_edus: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_wire_name() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for event in HistoryEvent::ALL {
            assert_eq!(HistoryEvent::parse(event.as_str()), Some(event));
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
        }
    }

    #[test]
    fn messages_are_one_line_and_bounded() {
        assert_eq!(failure_message("a\nb\u{0}c"), "a b c");
        let long = "é".repeat(1000);
        let cut = failure_message(&long);
        assert_eq!(cut.chars().count(), MAX_FAILURE_MESSAGE);
        assert!(cut.ends_with('…'));
        assert_eq!(failure_message(&"x".repeat(MAX_FAILURE_MESSAGE)).len(), 300);
    }
}
