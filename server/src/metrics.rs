//! Herald's Prometheus metrics and `GET /metrics` on the admin listener
//! (OpenMetrics text, unauthenticated as Synapse's metrics listener).
//!
//! The federation client's series keep Synapse's names, so dashboards built
//! for Synapse work: `synapse_http_matrixfederationclient_requests_total
//! {method}` and `..._responses_total{method,code}`; Herald adds the
//! request duration and the number of destinations in backoff (read from
//! the store's index at scrape time).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request duration buckets, in seconds (Synapse's federation client spans
/// milliseconds on loopback to a minute's timeout).
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    method: String,
    code: String,
}

/// Every series Herald exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
    in_backoff: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<MethodLabels, Counter>::default();
        registry.register(
            "synapse_http_matrixfederationclient_requests",
            "Outgoing federation requests, by method",
            requests.clone(),
        );
        let responses = Family::<ResponseLabels, Counter>::default();
        registry.register(
            "synapse_http_matrixfederationclient_responses",
            "Federation responses received, by method and HTTP status",
            responses.clone(),
        );
        let duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        registry.register(
            "herald_federation_request_duration_seconds",
            "Time from sending a federation request to its answer, by method",
            duration.clone(),
        );
        let in_backoff = Gauge::default();
        registry.register(
            "herald_destinations_in_backoff",
            "Destinations in backoff (backing off, retry due or never reached)",
            in_backoff.clone(),
        );
        Metrics {
            registry,
            requests,
            responses,
            duration,
            in_backoff,
        }
    }

    /// A federation request is sent (each try counts).
    pub fn request_sent(&self, method: &str) {
        self.requests
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .inc();
    }

    /// A federation response arrived after `elapsed`.
    pub fn response_received(&self, method: &str, status: u16, elapsed: Duration) {
        self.responses
            .get_or_create(&ResponseLabels {
                method: method.to_owned(),
                code: status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the gauges read now.
    pub fn encode(&self, destinations_in_backoff: u64) -> String {
        self.in_backoff
            .set(i64::try_from(destinations_in_backoff).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `GET /metrics`.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let summary = state.store.federation_summary().await;
    let in_backoff = summary.backing_off + summary.retry_due + summary.never_reached;
    let body = state.metrics.encode(in_backoff);
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body).into_response()
}

/// Shared by the client and the route.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_synapses_names_and_labels() {
        let m = Metrics::new();
        m.request_sent("PUT");
        m.request_sent("PUT");
        m.response_received("PUT", 200, Duration::from_millis(30));
        m.response_received("GET", 429, Duration::from_millis(3));
        let text = m.encode(7);
        assert!(
            text.contains("synapse_http_matrixfederationclient_requests_total{method=\"PUT\"} 2\n")
        );
        assert!(text.contains(
            "synapse_http_matrixfederationclient_responses_total{method=\"PUT\",code=\"200\"} 1\n"
        ));
        assert!(text.contains(
            "synapse_http_matrixfederationclient_responses_total{method=\"GET\",code=\"429\"} 1\n"
        ));
        assert!(
            text.contains(
                "herald_federation_request_duration_seconds_bucket{le=\"0.05\",method=\"PUT\"} 1\n"
            ) || text.contains(
                "herald_federation_request_duration_seconds_bucket{method=\"PUT\",le=\"0.05\"} 1\n"
            )
        );
        assert!(text.contains("herald_destinations_in_backoff 7\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
