//! The Synapse-compatible federation admin API under
//! `/_synapse/admin/v1/federation/`, and Herald's own additions under
//! `/_herald/admin/v1/federation/`. Handlers are thin: check the admin's
//! token, parse parameters in Synapse's order, call the store, shape the
//! answer. Paths are matched on the raw (still percent-encoded) path as
//! Synapse does, and the destination segment is percent-decoded afterwards.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use herald_shared::{
    percent_decode_path, DestinationDetails, DestinationQueue, DestinationsPage, DestinationsQuery,
    FederationSummary, RawQuery, RoomsPage, RoomsQuery,
};
use serde_json::{json, Value};

use crate::auth::require_admin;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use herald_store::destinations::ResetOutcome;

const PREFIX: &str = "/_synapse/admin/v1/federation";
pub(crate) const HERALD_PREFIX: &str = "/_herald/admin/v1/federation";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{HERALD_PREFIX}/summary"), get(summary))
        .route(
            &format!("{HERALD_PREFIX}/destinations/{{destination}}/queue"),
            get(queue),
        )
        .route(&format!("{PREFIX}/destinations"), get(list))
        // Synapse's patterns allow an empty name here (`[^/]*`): a trailing
        // slash asks for destination "" and gets "Unknown destination".
        .route(&format!("{PREFIX}/destinations/"), get(details))
        .route(
            &format!("{PREFIX}/destinations/{{destination}}"),
            get(details),
        )
        .route(&format!("{PREFIX}/destinations//rooms"), get(rooms))
        .route(
            &format!("{PREFIX}/destinations/{{destination}}/rooms"),
            get(rooms),
        )
        // ...but not here (`[^/]+`): no route at all, whatever the method.
        .route(
            &format!("{PREFIX}/destinations//reset_connection"),
            any(|| async { ApiError::unrecognized() }),
        )
        .route(
            &format!("{PREFIX}/destinations/{{destination}}/reset_connection"),
            post(reset_connection),
        )
}

/// The destination named in the path, percent-decoded (invalid UTF-8
/// becomes U+FFFD, as Python's `unquote` does).
pub(crate) fn destination(uri: &Uri) -> String {
    let path = uri.path();
    let rest = path
        .strip_prefix(PREFIX)
        .or_else(|| path.strip_prefix(HERALD_PREFIX))
        .and_then(|r| r.strip_prefix("/destinations/"));
    let segment = rest.and_then(|r| r.split('/').next()).unwrap_or("");
    percent_decode_path(segment)
}

pub(crate) fn query(uri: &Uri) -> RawQuery {
    RawQuery::parse(uri.query().unwrap_or(""))
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DestinationsPage>> {
    require_admin(&state, &headers, &uri).await?;
    let q = DestinationsQuery::from_raw(&query(&uri))?;
    Ok(Json(state.store.destinations.list_destinations(q).await))
}

/// Herald's addition: destinations per derived status (for the console's
/// health summary), computed from the same rows as the list.
async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<FederationSummary>> {
    require_admin(&state, &headers, &uri).await?;
    Ok(Json(state.store.destinations.federation_summary().await))
}

async fn details(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DestinationDetails>> {
    let destination = destination(&uri);
    require_admin(&state, &headers, &uri).await?;
    state
        .store
        .destinations
        .destination_details(&destination)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Unknown destination"))
}

/// Herald's addition: what the sender holds for a destination (its state,
/// queued PDUs and EDUs, the oldest one's age).
async fn queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DestinationQueue>> {
    let destination = destination(&uri);
    require_admin(&state, &headers, &uri).await?;
    if !state
        .store
        .destinations
        .is_destination_known(&destination)
        .await?
    {
        return Err(ApiError::not_found("Unknown destination"));
    }
    Ok(Json(state.sender.queue(&destination).await?))
}

async fn rooms(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<RoomsPage>> {
    let destination = destination(&uri);
    require_admin(&state, &headers, &uri).await?;
    // Synapse looks the destination up before it reads the parameters.
    if !state
        .store
        .destinations
        .is_destination_known(&destination)
        .await?
    {
        return Err(ApiError::not_found("Unknown destination"));
    }
    let q = RoomsQuery::from_raw(&query(&uri))?;
    Ok(Json(
        state
            .store
            .destinations
            .destination_rooms(&destination, q)
            .await?,
    ))
}

async fn reset_connection(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let destination = destination(&uri);
    let admin = require_admin(&state, &headers, &uri).await?;
    if let Some(synapse) = &state.synapse {
        return reset_through_synapse(&state, synapse, &headers, &uri, &destination, &admin).await;
    }
    match state
        .store
        .destinations
        .reset_retry_timings(&destination, Some(&state.user_id(&admin)))
        .await?
    {
        ResetOutcome::Unknown => Err(ApiError::not_found("Unknown destination")),
        ResetOutcome::NotInBackoff => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "The retry timing does not need to be reset for this destination.",
        )),
        ResetOutcome::Reset => {
            // The store tells the sender (`Store::subscribe_resets`), which
            // tries the destination at once if anything is queued for it.
            tracing::info!(destination = ?destination, "retry timings reset by an admin");
            Ok(Json(json!({})))
        }
    }
}

/// Attached: Synapse caches retry timings and only its own reset clears
/// that cache and wakes its queue, so the reset is Synapse's, made with the
/// admin's token; its answer (200, 400, 404) is passed on, and on success
/// the row is read again at once and the reset noted in Herald's history.
async fn reset_through_synapse(
    state: &AppState,
    synapse: &crate::synapse::SynapseApi,
    headers: &HeaderMap,
    uri: &Uri,
    destination: &str,
    admin: &herald_store::TokenOwner,
) -> ApiResult<Json<Value>> {
    // A URL resolves `.` and `..` (even encoded) away: no destination has
    // such a name, and the request must not reach another of Synapse's paths.
    if matches!(destination, "." | "..") {
        return Err(ApiError::not_found("Unknown destination"));
    }
    let token = crate::auth::access_token(headers, uri)?;
    let answer = synapse.reset_connection(&token, destination).await?;
    if !answer.status.is_success() {
        return Err(answer.into_error());
    }
    let actor = state.user_id(admin);
    tracing::info!(destination = ?destination, admin = ?actor, "retry timings reset through Synapse");
    if let Err(e) = state.store.destinations.refresh_one(destination).await {
        tracing::warn!(destination = ?destination, error = %e, "cannot read the reset row from Synapse's database");
    }
    let entry = herald_store::history::NewEntry {
        actor: Some(actor),
        ..Default::default()
    };
    if let Err(e) = state
        .store
        .destinations
        .add_history(destination, herald_shared::HistoryEvent::Reset, entry)
        .await
    {
        tracing::warn!(destination = ?destination, error = %e, "cannot note the reset in the history");
    }
    Ok(Json(answer.body))
}
