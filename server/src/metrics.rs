//! Herald's Prometheus metrics and `GET /metrics` on the admin listener
//! (OpenMetrics text, unauthenticated as Synapse's metrics listener).
//!
//! The federation client's series keep Synapse's names, so dashboards built
//! for Synapse work: `synapse_http_matrixfederationclient_requests_total
//! {method}` and `..._responses_total{method,code}`; Herald adds the
//! request duration and the number of destinations in backoff (read from
//! the store's index at scrape time). The sender's series (`herald_sender_*`)
//! count PDUs and EDUs queued and sent, transactions by outcome, destinations
//! per sender state and the age of the oldest undelivered event (the last two
//! read at scrape time).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use herald_federation::metrics::ClientMetrics;
use herald_sender::metrics::{SenderGauges, SenderMetrics, TxnOutcome};
use herald_shared::SenderState;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Every series Herald exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
    in_backoff: Gauge,
    pdus_queued: Counter,
    edus_queued: Counter,
    pdus_sent: Counter,
    edus_sent: Counter,
    pdu_errors: Counter,
    transactions: Family<OutcomeLabels, Counter>,
    destinations: Family<StateLabels, Gauge>,
    oldest_undelivered: Gauge<f64, std::sync::atomic::AtomicU64>,
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
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let pdus_queued = counter(
            &mut registry,
            "herald_sender_pdus_queued",
            "PDUs queued for a destination (one per event and destination)",
        );
        let edus_queued = counter(
            &mut registry,
            "herald_sender_edus_queued",
            "EDUs queued for a destination",
        );
        let pdus_sent = counter(
            &mut registry,
            "herald_sender_pdus_sent",
            "PDUs delivered in acknowledged transactions",
        );
        let edus_sent = counter(
            &mut registry,
            "herald_sender_edus_sent",
            "EDUs delivered in acknowledged transactions",
        );
        let pdu_errors = counter(
            &mut registry,
            "herald_sender_pdu_errors",
            "PDUs a destination acknowledged with an error (not retried)",
        );
        let transactions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "herald_sender_transactions",
            "Transactions sent, by outcome (sent, failed, rejected)",
            transactions.clone(),
        );
        let destinations = Family::<StateLabels, Gauge>::default();
        registry.register(
            "herald_sender_destinations",
            "Destinations per sender state (idle, sending, backing_off, catching_up)",
            destinations.clone(),
        );
        let oldest_undelivered = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "herald_sender_oldest_undelivered_age_seconds",
            "Age of the oldest PDU not yet delivered to every destination",
            oldest_undelivered.clone(),
        );
        Metrics {
            registry,
            requests,
            responses,
            duration,
            in_backoff,
            pdus_queued,
            edus_queued,
            pdus_sent,
            edus_sent,
            pdu_errors,
            transactions,
            destinations,
            oldest_undelivered,
        }
    }

    /// PDUs and EDUs were queued (counted once per destination).
    pub fn queued(&self, pdus: u64, edus: u64) {
        self.pdus_queued.inc_by(pdus);
        self.edus_queued.inc_by(edus);
    }

    /// A transaction ended; `pdus`/`edus` delivered when it was sent, and
    /// how many PDUs the destination refused.
    pub fn transaction(&self, outcome: TxnOutcome, pdus: u64, edus: u64, pdu_errors: u64) {
        self.transactions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        if outcome == TxnOutcome::Sent {
            self.pdus_sent.inc_by(pdus);
            self.edus_sent.inc_by(edus);
            self.pdu_errors.inc_by(pdu_errors);
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
    pub fn encode(&self, destinations_in_backoff: u64, sender: SenderGauges) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.in_backoff.set(gauge(destinations_in_backoff));
        for state in SenderState::ALL {
            let n = match state {
                SenderState::Idle => sender.idle,
                SenderState::Sending => sender.sending,
                SenderState::BackingOff => sender.backing_off,
                SenderState::CatchingUp => sender.catching_up,
            };
            self.destinations
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(gauge(n));
        }
        self.oldest_undelivered.set(sender.oldest_undelivered_secs);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Shared by the client and the route.
pub type SharedMetrics = Arc<Metrics>;

impl ClientMetrics for Metrics {
    fn request_sent(&self, method: &str) {
        Metrics::request_sent(self, method)
    }

    fn response_received(&self, method: &str, status: u16, elapsed: Duration) {
        Metrics::response_received(self, method, status, elapsed)
    }
}

impl SenderMetrics for Metrics {
    fn queued(&self, pdus: u64, edus: u64) {
        Metrics::queued(self, pdus, edus)
    }

    fn transaction(&self, outcome: TxnOutcome, pdus: u64, edus: u64, pdu_errors: u64) {
        Metrics::transaction(self, outcome, pdus, edus, pdu_errors)
    }
}

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
        m.queued(3, 1);
        m.transaction(TxnOutcome::Sent, 2, 1, 1);
        m.transaction(TxnOutcome::Failed, 1, 0, 0);
        let text = m.encode(
            7,
            SenderGauges {
                idle: 4,
                sending: 1,
                backing_off: 2,
                catching_up: 1,
                oldest_undelivered_secs: 1.5,
            },
        );
        assert!(text.contains("herald_sender_pdus_queued_total 3\n"));
        assert!(text.contains("herald_sender_pdus_sent_total 2\n"));
        assert!(text.contains("herald_sender_pdu_errors_total 1\n"));
        assert!(text.contains("herald_sender_transactions_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains("herald_sender_destinations{state=\"backing_off\"} 2\n"));
        assert!(text.contains("herald_sender_oldest_undelivered_age_seconds 1.5\n"));
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
