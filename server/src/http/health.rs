//! Herald's own destination endpoints under `/_herald/admin/v1/federation/`
//! — what Synapse's API cannot say: the list and details with each
//! destination's derived status, next retry, last error and last delivery
//! (`destinations`, `destinations/<d>`), its history
//! (`destinations/<d>/history`) and forgetting it (`DELETE
//! destinations/<d>`). Same admin auth, path decoding and error bodies as
//! the Synapse-compatible routes in `admin`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use herald_shared::{
    next_retry_ts, DestinationHealth, DestinationHealthPage, DestinationHealthRow,
    DestinationStatus, DestinationsQuery, Forgotten, HistoryPage,
};

use crate::auth::require_admin;
use crate::http::admin::{destination, query, HERALD_PREFIX};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

/// History entries per page unless `limit` says otherwise.
const HISTORY_PAGE: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{HERALD_PREFIX}/destinations"), get(list))
        .route(
            &format!("{HERALD_PREFIX}/destinations/{{destination}}"),
            get(details).delete(forget),
        )
        .route(
            &format!("{HERALD_PREFIX}/destinations/{{destination}}/history"),
            get(history),
        )
}

/// Synapse's list (same parameters, same order and pages) with each row's
/// status, next retry, last error and last delivery.
async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DestinationHealthPage>> {
    require_admin(&state, &headers, &uri).await?;
    let q = DestinationsQuery::from_raw(&query(&uri))?;
    let page = state.store.destinations.list_destinations(q).await;
    let names: Vec<String> = page
        .destinations
        .iter()
        .map(|d| d.destination.clone())
        .collect();
    let mut extras = state.store.destinations.extras(&names).await?;
    let now = herald_store::now_ms();
    let destinations = page
        .destinations
        .into_iter()
        .map(|row| DestinationHealthRow {
            status: DestinationStatus::of(&row, now),
            next_retry_ts: next_retry_ts(&row),
            extras: extras.remove(&row.destination).unwrap_or_default(),
            row,
        })
        .collect();
    Ok(Json(DestinationHealthPage {
        destinations,
        total: page.total,
        next_token: page.next_token,
    }))
}

async fn details(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DestinationHealth>> {
    let name = destination(&uri);
    require_admin(&state, &headers, &uri).await?;
    let Some(details) = state.store.destinations.destination_details(&name).await? else {
        return Err(ApiError::not_found("Unknown destination"));
    };
    let row = details.as_row();
    let extras = state
        .store
        .destinations
        .extras(std::slice::from_ref(&name))
        .await?
        .remove(&name)
        .unwrap_or_default();
    Ok(Json(DestinationHealth {
        status: DestinationStatus::of(&row, herald_store::now_ms()),
        next_retry_ts: next_retry_ts(&row),
        extras,
        queue: state.sender.queue(&name).await?,
        details,
    }))
}

/// Newest first; `from` is a `next_token`, `limit` 1–200.
async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<HistoryPage>> {
    let name = destination(&uri);
    require_admin(&state, &headers, &uri).await?;
    let raw = query(&uri);
    let number = |key: &str, max: i64| -> Result<Option<i64>, ApiError> {
        match raw.first(key) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .filter(|n| (1..=max).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "M_INVALID_PARAM",
                        format!("Query parameter {key} must be a whole number from 1 to {max}."),
                    )
                }),
        }
    };
    let limit = number("limit", i64::from(herald_store::history::MAX_PAGE))?
        .map_or(HISTORY_PAGE, |n| n as u32);
    let from = number("from", i64::MAX)?;
    state
        .store
        .destinations
        .history(&name, from, limit)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Unknown destination"))
}

/// Removes the destination, its rooms and its queues; its history keeps a
/// `forgotten` entry naming the admin.
async fn forget(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Forgotten>> {
    let name = destination(&uri);
    let admin = require_admin(&state, &headers, &uri).await?;
    if state.synapse.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Herald is attached to Synapse and only reads its database: it cannot forget a destination Synapse keeps.",
        ));
    }
    let actor = state.user_id(&admin);
    match state.store.destinations.forget(&name, Some(&actor)).await? {
        Some(forgotten) => {
            tracing::info!(destination = ?name, admin = ?actor, rooms = forgotten.rooms, pdus = forgotten.queued_pdus, edus = forgotten.queued_edus, "destination forgotten");
            Ok(Json(forgotten))
        }
        None => Err(ApiError::not_found("Unknown destination")),
    }
}
