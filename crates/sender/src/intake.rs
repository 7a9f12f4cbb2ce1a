//! Checking what a homeserver hands Herald to send, before it is stored:
//! the bodies of `POST /_herald/v1/send/pdus` and `/edus` (the binary's HTTP
//! layer authenticates and reads them, then calls [`Sender::accept_pdus`] /
//! [`Sender::accept_edus`]).
//!
//! A request is stored whole or not at all: an event ID without `$`, a room
//! ID without `!`, a `pdu.room_id` other than `room_id`, or a destination
//! that is not a server name is [`IntakeError::InvalidParam`]; a PDU or EDU
//! content that is not canonical JSON (a float, an integer past 2^53)
//! [`IntakeError::BadJson`]; a PDU over 65,536 bytes
//! [`IntakeError::TooLarge`] (the spec's limit: no server would take it); an
//! event ID seen before (checked inside the commit) or twice in the request
//! with another room [`IntakeError::InvalidParam`]. Destinations that
//! `federation_domain_whitelist` does not allow, and our own server name, are
//! skipped silently; repeated destinations count once. The answer comes once
//! the rows are committed; concurrent requests share commits.

use std::collections::{BTreeSet, HashMap, HashSet};

use herald_federation::resolve::ServerName;
use herald_keys::to_canonical_json;
use herald_store::{NewEdu, NewEvent, OutboxError};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Sender;

/// Matrix identifiers are at most 255 bytes.
const MAX_ID_BYTES: usize = 255;
/// The spec's limit on a PDU, as canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// `POST /_herald/v1/send/pdus`.
#[derive(Debug, Deserialize)]
pub struct PdusBody {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Deserialize)]
pub struct EventIn {
    pub event_id: String,
    pub room_id: String,
    pub pdu: Map<String, Value>,
    pub destinations: Vec<String>,
}

/// `POST /_herald/v1/send/edus`.
#[derive(Debug, Deserialize)]
pub struct EdusBody {
    pub edus: Vec<EduIn>,
}

#[derive(Debug, Deserialize)]
pub struct EduIn {
    pub edu_type: String,
    pub content: Map<String, Value>,
    pub destinations: Vec<String>,
}

/// Why a request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// `M_INVALID_PARAM`: an identifier, destination or room is wrong.
    #[error("{0}")]
    InvalidParam(String),
    /// `M_BAD_JSON`: content that cannot be sent as canonical JSON.
    #[error("{0}")]
    BadJson(String),
    /// `M_TOO_LARGE`: a PDU over the spec's limit.
    #[error("{0}")]
    TooLarge(String),
    /// Nothing was stored: the database cannot be reached now (try again).
    #[error("intake not stored: {0}")]
    Unavailable(OutboxError),
    /// Nothing was stored: the database failed.
    #[error("intake not stored: {0}")]
    Storage(OutboxError),
}

impl From<OutboxError> for IntakeError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::EventInAnotherRoom { .. } => IntakeError::InvalidParam(e.to_string()),
            e if e.is_unavailable() => IntakeError::Unavailable(e),
            e => IntakeError::Storage(e),
        }
    }
}

impl Sender {
    /// Validates `body`, stores its events durably and wakes their
    /// destinations; the stream orderings, one per event, in order.
    pub async fn accept_pdus(&self, body: PdusBody) -> Result<Vec<i64>, IntakeError> {
        let mut events = Vec::with_capacity(body.events.len());
        for (i, event) in body.events.into_iter().enumerate() {
            if !is_matrix_id(&event.event_id, '$') {
                return Err(invalid(format!("events[{i}].event_id is not an event ID")));
            }
            if !is_matrix_id(&event.room_id, '!') {
                return Err(invalid(format!("events[{i}].room_id is not a room ID")));
            }
            if let Some(room) = event.pdu.get("room_id") {
                if room.as_str() != Some(event.room_id.as_str()) {
                    return Err(invalid(format!(
                        "events[{i}].pdu.room_id differs from events[{i}].room_id"
                    )));
                }
            }
            let destinations = self.destinations(event.destinations, "events", i)?;
            let pdu_json = canonical(Value::Object(event.pdu), "events", i, "pdu")?;
            if pdu_json.len() > MAX_PDU_BYTES {
                return Err(IntakeError::TooLarge(format!(
                    "events[{i}].pdu is over {MAX_PDU_BYTES} bytes"
                )));
            }
            events.push(NewEvent {
                event_id: event.event_id,
                room_id: event.room_id,
                pdu_json,
                destinations,
            });
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        one_room_per_event(&events)?;
        let queued = events.iter().map(|e| e.destinations.len() as u64).sum();
        let with_destinations = events.iter().filter(|e| !e.destinations.is_empty()).count() as u64;
        let woken = wake_list(events.iter().map(|e| &e.destinations));
        // Stored and announced in a task of its own: a client that goes away
        // mid-request cannot leave committed rows unannounced.
        let sender = self.clone();
        tokio::spawn(async move {
            let orderings = sender.shared.store.outbox.enqueue_pdus(events).await?;
            sender.shared.metrics.queued(queued, 0);
            sender.shared.metrics.events_queued(with_destinations);
            sender.notify(woken.iter().map(String::as_str));
            Ok(orderings)
        })
        .await
        .map_err(|_| IntakeError::Storage(OutboxError::WriterGone))?
    }

    /// Validates `body`, stores its EDUs durably (one row per destination)
    /// and wakes their destinations.
    pub async fn accept_edus(&self, body: EdusBody) -> Result<(), IntakeError> {
        let mut edus = Vec::with_capacity(body.edus.len());
        for (i, edu) in body.edus.into_iter().enumerate() {
            if edu.edu_type.is_empty()
                || edu.edu_type.len() > MAX_ID_BYTES
                || edu.edu_type.chars().any(char::is_control)
            {
                // A control character (a NUL: PostgreSQL stores none) would
                // fail the whole group commit it joined.
                return Err(invalid(format!(
                    "edus[{i}].edu_type must be 1 to 255 bytes without control characters"
                )));
            }
            let destinations = self.destinations(edu.destinations, "edus", i)?;
            let content_json = canonical(Value::Object(edu.content), "edus", i, "content")?;
            edus.push(NewEdu {
                edu_type: edu.edu_type,
                content_json,
                destinations,
            });
        }
        if edus.iter().all(|e| e.destinations.is_empty()) {
            return Ok(());
        }
        let queued = edus.iter().map(|e| e.destinations.len() as u64).sum();
        let woken = wake_list(edus.iter().map(|e| &e.destinations));
        let sender = self.clone();
        tokio::spawn(async move {
            sender.shared.store.outbox.enqueue_edus(edus).await?;
            sender.shared.metrics.queued(0, queued);
            sender.notify(woken.iter().map(String::as_str));
            Ok(())
        })
        .await
        .map_err(|_| IntakeError::Storage(OutboxError::WriterGone))?
    }

    /// Validates, filters (whitelist, ourselves) and deduplicates
    /// destinations, keeping their first-seen order.
    fn destinations(
        &self,
        given: Vec<String>,
        list: &str,
        i: usize,
    ) -> Result<Vec<String>, IntakeError> {
        let mut out: Vec<String> = Vec::with_capacity(given.len());
        let mut seen: HashSet<String> = HashSet::with_capacity(given.len());
        let shared = &self.shared;
        for destination in given {
            if ServerName::parse(&destination).is_err() {
                return Err(invalid(format!(
                    "{list}[{i}].destinations: `{destination}` is not a server name"
                )));
            }
            let allowed = shared
                .domain_whitelist
                .as_ref()
                .is_none_or(|list| list.contains(&destination));
            if !allowed || destination == shared.origin || !seen.insert(destination.clone()) {
                continue;
            }
            out.push(destination);
        }
        Ok(out)
    }
}

/// An event ID is one event: refused if it comes twice in this request with
/// two rooms (the store refuses one stored before with another room, inside
/// its commit).
fn one_room_per_event(events: &[NewEvent]) -> Result<(), IntakeError> {
    let mut rooms: HashMap<&str, &str> = HashMap::with_capacity(events.len());
    for e in events {
        if rooms
            .insert(&e.event_id, &e.room_id)
            .is_some_and(|r| r != e.room_id)
        {
            return Err(invalid(format!("{} is given with two rooms", e.event_id)));
        }
    }
    Ok(())
}

/// A PDU or EDU content as canonical JSON, or why not.
fn canonical(value: Value, list: &str, i: usize, field: &str) -> Result<String, IntakeError> {
    to_canonical_json(&value).map_err(|e| {
        IntakeError::BadJson(format!(
            "{list}[{i}].{field} cannot be sent as canonical JSON: {e}"
        ))
    })
}

/// Every destination named, once.
fn wake_list<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let set: BTreeSet<&String> = lists.flatten().collect();
    set.into_iter().cloned().collect()
}

/// The spec's identifier grammar, loosely: the sigil, then 1 to 254 bytes
/// of printable, non-space characters.
fn is_matrix_id(id: &str, sigil: char) -> bool {
    id.len() <= MAX_ID_BYTES
        && id.strip_prefix(sigil).is_some_and(|rest| {
            !rest.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

fn invalid(message: String) -> IntakeError {
    IntakeError::InvalidParam(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_matrix_id("$abc:example.org", '$'));
        assert!(is_matrix_id(
            "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg",
            '$'
        ));
        assert!(is_matrix_id("!room:example.org", '!'));
        assert!(!is_matrix_id("!room:example.org", '$'));
        assert!(!is_matrix_id("$", '$'));
        assert!(!is_matrix_id("$a b", '$'));
        assert!(!is_matrix_id(&format!("${}", "a".repeat(255)), '$'));
    }
}
