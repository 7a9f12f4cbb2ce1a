//! `GET /_herald/admin/v1/federation/sender`: what the federation sender is
//! doing as a whole, for the console's sender page — its rates over the last
//! five minutes (the metrics' snapshots), what is queued, destinations per
//! state, the oldest undelivered event's age and the destinations with the
//! most queued (a bounded query of the store). Admin token, as the rest of
//! Herald's admin API.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Json, Router};
use herald_shared::{QueuedDestination, SenderOverview, SenderStateCounts, TOP_DESTINATIONS};

use crate::auth::require_admin;
use crate::http::error::ApiResult;
use crate::metrics::RATE_INTERVAL;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/_herald/admin/v1/federation/sender", get(overview))
}

async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<SenderOverview>> {
    require_admin(&state, &headers, &uri).await?;
    let gauges = state
        .sender
        .gauges(state.store.destinations.destination_count())
        .await;
    let top = state.store.outbox.top_queued(TOP_DESTINATIONS).await?;
    let now_ts = herald_store::now_ms();
    Ok(Json(SenderOverview {
        now_ts,
        interval_ms: RATE_INTERVAL.as_millis() as u64,
        rates: state.metrics.rates(now_ts),
        queued_pdus: gauges.queued_pdus,
        queued_edus: gauges.queued_edus,
        destinations: SenderStateCounts {
            idle: gauges.idle,
            sending: gauges.sending,
            backing_off: gauges.backing_off,
            catching_up: gauges.catching_up,
        },
        oldest_undelivered_age_secs: gauges.oldest_undelivered_secs,
        top_destinations: top
            .into_iter()
            .map(|d| QueuedDestination {
                state: state.sender.state_of(&d.destination),
                destination: d.destination,
                queued_pdus: d.pdus,
                queued_edus: d.edus,
            })
            .collect(),
    }))
}
