//! The intake API: how a homeserver hands Herald events and EDUs to send.
//!
//! - `POST /_herald/v1/send/pdus` `{"events": [{"event_id", "room_id", "pdu":
//!   {…}, "destinations": ["…"]}]}` → `200 {"stream_orderings": [n, …]}`, one
//!   per event in order. An event ID accepted before keeps its ordering.
//! - `POST /_herald/v1/send/edus` `{"edus": [{"edu_type", "content": {…},
//!   "destinations": ["…"]}]}` → `200 {}`.
//!
//! Both answer only after the rows are committed (SQLite WAL, `synchronous =
//! FULL`); concurrent requests share commits. Authentication is
//! `Authorization: Bearer <sender_api_token>` (or `?access_token=`), compared
//! in constant time; admin access tokens are not accepted. With no
//! `sender_api_token` configured the API does not exist: `404
//! M_UNRECOGNIZED`. A missing token is `401 M_MISSING_TOKEN`, a wrong one
//! `401 M_UNKNOWN_TOKEN`.
//!
//! A request is stored whole or not at all: malformed JSON is `400
//! M_NOT_JSON`; a missing field or a wrong type `400 M_BAD_JSON`; an event
//! ID without `$`, a room ID without `!`, a `pdu.room_id` other than
//! `room_id`, or a destination that is not a server name `400
//! M_INVALID_PARAM`; a body over 10 MiB `413 M_TOO_LARGE`; a PDU or EDU
//! content that is not canonical JSON (a float, an integer past 2^53) `400
//! M_BAD_JSON`, a PDU over 65,536 bytes `400 M_TOO_LARGE` (the spec's limit:
//! no server would take it); an event ID seen before (or twice in the
//! request) with another room `400 M_INVALID_PARAM`. Destinations
//! that `federation_domain_whitelist` does not allow, and our own
//! `server_name`, are skipped silently; repeated destinations count once.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::federation::resolve::ServerName;
use crate::keys::canonical::to_canonical_json;
use crate::state::AppState;
use crate::store::outbox::{NewEdu, NewEvent, OutboxError};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Matrix identifiers are at most 255 bytes.
const MAX_ID_BYTES: usize = 255;
/// The spec's limit on a PDU, as canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_herald/v1/send/pdus", post(send_pdus))
        .route("/_herald/v1/send/edus", post(send_edus))
}

#[derive(Deserialize)]
struct PdusBody {
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
struct EventIn {
    event_id: String,
    room_id: String,
    pdu: Map<String, Value>,
    destinations: Vec<String>,
}

#[derive(Deserialize)]
struct EdusBody {
    edus: Vec<EduIn>,
}

#[derive(Deserialize)]
struct EduIn {
    edu_type: String,
    content: Map<String, Value>,
    destinations: Vec<String>,
}

async fn send_pdus(State(state): State<AppState>, request: Request) -> Response {
    match accept_pdus(&state, request).await {
        Ok(orderings) => Json(json!({ "stream_orderings": orderings })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn send_edus(State(state): State<AppState>, request: Request) -> Response {
    match accept_edus(&state, request).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accept_pdus(state: &AppState, request: Request) -> ApiResult<Vec<i64>> {
    let body: PdusBody = authenticated_body(&state.config, request).await?;
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
        let destinations = destinations(&state.config, event.destinations, "events", i)?;
        let pdu_json = canonical(Value::Object(event.pdu), "events", i, "pdu")?;
        if pdu_json.len() > MAX_PDU_BYTES {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_TOO_LARGE",
                format!("events[{i}].pdu is over {MAX_PDU_BYTES} bytes"),
            ));
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
    same_rooms_as_before(state, &events).await?;
    let queued = events.iter().map(|e| e.destinations.len() as u64).sum();
    let woken = wake_list(events.iter().map(|e| &e.destinations));
    // Stored and announced in a task of its own: a client that goes away
    // mid-request cannot leave committed rows unannounced.
    let (store, sender, metrics) = (
        state.store.clone(),
        state.sender.clone(),
        state.metrics.clone(),
    );
    tokio::spawn(async move {
        let orderings = store.enqueue_pdus(events).await?;
        metrics.queued(queued, 0);
        sender.notify(woken.iter().map(String::as_str));
        Ok(orderings)
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(outbox_error)
}

/// An event ID is one event: refused if it came before, or earlier in this
/// request, with another room.
async fn same_rooms_as_before(state: &AppState, events: &[NewEvent]) -> ApiResult<()> {
    let mut rooms: HashMap<&str, &str> = HashMap::with_capacity(events.len());
    for e in events {
        if rooms
            .insert(&e.event_id, &e.room_id)
            .is_some_and(|r| r != e.room_id)
        {
            return Err(invalid(format!("{} is given with two rooms", e.event_id)));
        }
    }
    let stored = state
        .store
        .stored_event_rooms(events.iter().map(|e| e.event_id.as_str()))
        .await?;
    for (event_id, room_id) in stored {
        if rooms.get(event_id.as_str()).is_some_and(|r| *r != room_id) {
            return Err(invalid(format!(
                "{event_id} was accepted before in {room_id}"
            )));
        }
    }
    Ok(())
}

/// A PDU or EDU content as canonical JSON, or why not.
fn canonical(value: Value, list: &str, i: usize, field: &str) -> ApiResult<String> {
    to_canonical_json(&value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            format!("{list}[{i}].{field} cannot be sent as canonical JSON: {e}"),
        )
    })
}

/// Every destination named, once.
fn wake_list<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = lists.flatten().collect();
    set.into_iter().cloned().collect()
}

async fn accept_edus(state: &AppState, request: Request) -> ApiResult<()> {
    let body: EdusBody = authenticated_body(&state.config, request).await?;
    let mut edus = Vec::with_capacity(body.edus.len());
    for (i, edu) in body.edus.into_iter().enumerate() {
        if edu.edu_type.is_empty() || edu.edu_type.len() > MAX_ID_BYTES {
            return Err(invalid(format!(
                "edus[{i}].edu_type must be 1 to 255 bytes"
            )));
        }
        let destinations = destinations(&state.config, edu.destinations, "edus", i)?;
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
    let (store, sender, metrics) = (
        state.store.clone(),
        state.sender.clone(),
        state.metrics.clone(),
    );
    tokio::spawn(async move {
        store.enqueue_edus(edus).await?;
        metrics.queued(0, queued);
        sender.notify(woken.iter().map(String::as_str));
        Ok(())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(outbox_error)
}

/// Checks the sender token, then reads and parses the body.
async fn authenticated_body<T: DeserializeOwned>(
    config: &Config,
    request: Request,
) -> ApiResult<T> {
    let Some(expected) = config.sender_api_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::unrecognized());
    };
    let (parts, body) = request.into_parts();
    let given = crate::auth::access_token(&parts.headers, &parts.uri)?;
    if !token_matches(&given, expected) {
        return Err(ApiError::unknown_token());
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // Past the limit, or the client went away: either way nothing is stored.
    let bytes = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", e.to_string())
        }
        _ => ApiError::bad_json("Content not JSON."),
    })
}

/// Validates, filters (whitelist, ourselves) and deduplicates destinations,
/// keeping their first-seen order.
fn destinations(
    config: &Config,
    given: Vec<String>,
    list: &str,
    i: usize,
) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(given.len());
    for destination in given {
        if ServerName::parse(&destination).is_err() {
            return Err(invalid(format!(
                "{list}[{i}].destinations: `{destination}` is not a server name"
            )));
        }
        let allowed = config
            .federation_domain_whitelist
            .as_ref()
            .is_none_or(|list| list.contains(&destination));
        if !allowed || destination == config.server_name || !seen.insert(destination.clone()) {
            continue;
        }
        out.push(destination);
    }
    Ok(out)
}

/// The spec's identifier grammar, loosely: the sigil, then 1 to 254 bytes
/// of printable, non-space characters.
fn is_matrix_id(id: &str, sigil: char) -> bool {
    id.len() <= MAX_ID_BYTES
        && id.strip_prefix(sigil).is_some_and(|rest| {
            !rest.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// Compares digests so the time taken says nothing about the token.
fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
}

fn outbox_error(e: OutboxError) -> ApiError {
    tracing::error!(error = %e, "intake not stored");
    ApiError::internal()
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

    #[test]
    fn tokens() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("", "secret"));
    }
}
