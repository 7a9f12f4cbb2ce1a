//! The intake API's HTTP side: how a homeserver hands Herald events and EDUs
//! to send. The checks and the storing are `herald_sender::intake`'s; this
//! module authenticates, reads the body and shapes the answer.
//!
//! - `POST /_herald/v1/send/pdus` `{"events": [{"event_id", "room_id", "pdu":
//!   {…}, "destinations": ["…"]}]}` → `200 {"stream_orderings": [n, …]}`, one
//!   per event in order. An event ID accepted before keeps its ordering.
//! - `POST /_herald/v1/send/edus` `{"edus": [{"edu_type", "content": {…},
//!   "destinations": ["…"]}]}` → `200 {}`.
//!
//! Both answer only after the rows are committed (SQLite WAL, `synchronous =
//! FULL`). Authentication is `Authorization: Bearer <sender_api_token>` (or
//! `?access_token=`), compared in constant time; admin access tokens are not
//! accepted. With no `sender_api_token` configured the API does not exist:
//! `404 M_UNRECOGNIZED`. A missing token is `401 M_MISSING_TOKEN`, a wrong
//! one `401 M_UNKNOWN_TOKEN`; malformed JSON, or a body that breaks off
//! (a broken chunked encoding), `400 M_NOT_JSON`; a missing
//! field or a wrong type `400 M_BAD_JSON`; a body over 10 MiB `413
//! M_TOO_LARGE`; what the sender refuses, as `herald_sender::IntakeError`
//! says.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use herald_sender::{EdusBody, IntakeError, PdusBody};
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_herald/v1/send/pdus", post(send_pdus))
        .route("/_herald/v1/send/edus", post(send_edus))
}

async fn send_pdus(State(state): State<AppState>, request: Request) -> Response {
    let accepted = async {
        let body: PdusBody = authenticated_body(&state.config, request).await?;
        state.sender.accept_pdus(body).await.map_err(intake_error)
    };
    let response = match accepted.await {
        Ok(orderings) => Json(json!({ "stream_orderings": orderings })).into_response(),
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .intake_answered("pdus", response.status().as_u16());
    response
}

async fn send_edus(State(state): State<AppState>, request: Request) -> Response {
    let accepted = async {
        let body: EdusBody = authenticated_body(&state.config, request).await?;
        state.sender.accept_edus(body).await.map_err(intake_error)
    };
    let response = match accepted.await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .intake_answered("edus", response.status().as_u16());
    response
}

fn intake_error(e: IntakeError) -> ApiError {
    match e {
        IntakeError::InvalidParam(m) => {
            ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", m)
        }
        IntakeError::BadJson(m) => ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", m),
        IntakeError::TooLarge(m) => ApiError::new(StatusCode::BAD_REQUEST, "M_TOO_LARGE", m),
        IntakeError::Unavailable(e) => {
            tracing::warn!(error = %e, "intake not stored: the database is unavailable");
            ApiError::database_unavailable()
        }
        IntakeError::Storage(e) => {
            tracing::error!(error = %e, "intake not stored");
            ApiError::internal()
        }
    }
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
    // Past the limit, or a body that broke off: either way nothing is stored.
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::bad_json(format!("Could not read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", e.to_string())
        }
        _ => ApiError::bad_json("Content not JSON."),
    })
}

/// True when reading a body failed because it passed the limit (rather than
/// because the client sent a broken body or went away).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("", "secret"));
    }
}
