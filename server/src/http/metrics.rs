//! `GET /metrics` on the admin listener: the OpenMetrics text of
//! [`crate::metrics::Metrics`], with the gauges read from the store's index
//! and the sender at scrape time (unauthenticated, as Synapse's metrics
//! listener).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::CONTENT_TYPE_OPENMETRICS;
use crate::state::AppState;

/// `GET /metrics`.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let summary = state.store.destinations.federation_summary().await;
    let in_backoff = summary.backing_off + summary.retry_due + summary.never_reached;
    let sender = state
        .sender
        .gauges(state.store.destinations.destination_count())
        .await;
    let body = state.metrics.encode(in_backoff, sender);
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body).into_response()
}
