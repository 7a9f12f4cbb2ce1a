//! Herald's Prometheus metrics and `GET /metrics` on the admin listener
//! (OpenMetrics text, unauthenticated as Synapse's metrics listener), and
//! the sender's recent rates the sender page draws ([`Metrics::rates`]).
//!
//! Series Synapse's Grafana dashboard (`contrib/grafana/synapse.json`) reads
//! keep Synapse 1.163's names, types and labels — including its
//! `server_name` label, our `server_name` — where they mean the same:
//! the federation client's `synapse_http_matrixfederationclient_requests_total
//! {method}` and `..._responses_total{method,code}`; the sender's
//! `synapse_federation_client_sent_transactions_total`,
//! `..._sent_pdu_destinations_total` (PDUs queued, one per event and
//! destination), `..._sent_pdu_destinations_count_total` (events queued for
//! at least one destination), `..._sent_edus_total`,
//! `..._sent_edus_by_type_total{type}` and the gauges
//! `synapse_federation_transaction_queue_pending_destinations` (sending),
//! `..._pending_pdus` and `..._pending_edus` (queued). Herald's own series:
//! the request duration, the destinations in backoff, the failures recorded
//! per kind (`herald_federation_failures_total{kind}`, every kind at 0 from
//! the start), the intake API's answers and the sender's `herald_sender_*`
//! (PDUs and EDUs queued and sent, transactions by outcome, destinations per
//! state, the oldest undelivered event's age). Gauges are read at scrape
//! time.
//!
//! The rates cost sending nothing: a task snapshots the delivered counters
//! every [`RATE_INTERVAL`] into a ring of [`RATE_SAMPLES`] snapshots (five
//! minutes), and the rates are the differences.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use herald_federation::metrics::ClientMetrics;
use herald_sender::metrics::{SenderGauges, SenderMetrics, TxnOutcome};
use herald_shared::{FailureKind, RateSample, SenderState};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request duration buckets, in seconds (Synapse's federation client spans
/// milliseconds on loopback to a minute's timeout).
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// How often the delivered counters are snapshot for the sender page.
pub const RATE_INTERVAL: Duration = Duration::from_secs(5);
/// How many snapshots are kept: five minutes of [`RATE_INTERVAL`]s.
pub const RATE_SAMPLES: usize = 60;

/// EDU types that get their own `type` label in
/// `synapse_federation_client_sent_edus_by_type_total`; any other is counted
/// as `other`. The intake accepts any type name, and a label per name would
/// let a sender grow the registry without bound.
pub const EDU_TYPE_LABELS: [&str; 9] = [
    "m.typing",
    "m.presence",
    "m.receipt",
    "m.direct_to_device",
    "m.device_list_update",
    "m.signing_key_update",
    "org.matrix.signing_key_update",
    "m.unstable.signing_key_update",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntakeLabels {
    endpoint: &'static str,
    code: u16,
}

/// The delivered counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Snapshot {
    ts: i64,
    transactions: u64,
    pdus: u64,
    edus: u64,
}

/// The Synapse-named series of the sender (registered with `server_name`).
struct SynapseSender {
    sent_transactions: Counter,
    sent_pdu_destinations: Counter,
    sent_pdu_destinations_count: Counter,
    sent_edus: Counter,
    sent_edus_by_type: Family<TypeLabels, Counter>,
    pending_destinations: Gauge,
    pending_pdus: Gauge,
    pending_edus: Gauge,
}

/// Every series Herald exports.
pub struct Metrics {
    registry: Registry,
    /// `herald_shards_held` and `herald_instance_info{instance}`.
    shards_held: Gauge,
    instance_info: Family<InstanceLabels, Gauge>,
    requests: Family<MethodLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
    in_backoff: Gauge,
    failures: Family<KindLabels, Counter>,
    intake: Family<IntakeLabels, Counter>,
    pdus_queued: Counter,
    edus_queued: Counter,
    pdus_sent: Counter,
    edus_sent: Counter,
    pdu_errors: Counter,
    transactions: Family<OutcomeLabels, Counter>,
    destinations: Family<StateLabels, Gauge>,
    oldest_undelivered: Gauge<f64, AtomicU64>,
    synapse: SynapseSender,
    /// Snapshots of the delivered counters, oldest first, at most
    /// `RATE_SAMPLES`.
    history: Mutex<VecDeque<Snapshot>>,
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

impl Metrics {
    /// The registry, with Synapse's series labelled `server_name`.
    pub fn new(server_name: &str) -> Metrics {
        let mut registry = Registry::default();
        let synapse_registry =
            registry.sub_registry_with_label(("server_name".into(), server_name.to_owned().into()));
        let requests = Family::<MethodLabels, Counter>::default();
        synapse_registry.register(
            "synapse_http_matrixfederationclient_requests",
            "Outgoing federation requests, by method",
            requests.clone(),
        );
        let responses = Family::<ResponseLabels, Counter>::default();
        synapse_registry.register(
            "synapse_http_matrixfederationclient_responses",
            "Federation responses received, by method and HTTP status",
            responses.clone(),
        );
        let sent_edus_by_type = Family::<TypeLabels, Counter>::default();
        let synapse = SynapseSender {
            sent_transactions: counter(
                synapse_registry,
                "synapse_federation_client_sent_transactions",
                "Transactions delivered (answered 200)",
            ),
            sent_pdu_destinations: counter(
                synapse_registry,
                "synapse_federation_client_sent_pdu_destinations",
                "Total number of PDUs queued for sending across all destinations",
            ),
            sent_pdu_destinations_count: counter(
                synapse_registry,
                "synapse_federation_client_sent_pdu_destinations_count",
                "Number of PDUs queued for sending to one or more destinations",
            ),
            sent_edus: counter(
                synapse_registry,
                "synapse_federation_client_sent_edus",
                "Total number of EDUs successfully sent",
            ),
            sent_edus_by_type: {
                synapse_registry.register(
                    "synapse_federation_client_sent_edus_by_type",
                    "Number of EDUs successfully sent, by type (unlisted types as other)",
                    sent_edus_by_type.clone(),
                );
                sent_edus_by_type
            },
            pending_destinations: gauge(
                synapse_registry,
                "synapse_federation_transaction_queue_pending_destinations",
                "Destinations with a transaction under way (the sender's sending state)",
            ),
            pending_pdus: gauge(
                synapse_registry,
                "synapse_federation_transaction_queue_pending_pdus",
                "PDUs queued over all destinations",
            ),
            pending_edus: gauge(
                synapse_registry,
                "synapse_federation_transaction_queue_pending_edus",
                "EDUs queued over all destinations",
            ),
        };
        let duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        registry.register(
            "herald_federation_request_duration_seconds",
            "Time from sending a federation request to its answer, by method",
            duration.clone(),
        );
        let in_backoff = gauge(
            &mut registry,
            "herald_destinations_in_backoff",
            "Destinations in backoff (backing off, retry due or never reached)",
        );
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "herald_federation_failures",
            "Failures recorded for destinations, by kind (pdu_rejected: transactions in which PDUs were refused)",
            failures.clone(),
        );
        for kind in FailureKind::ALL {
            let _ = failures.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
        }
        let intake = Family::<IntakeLabels, Counter>::default();
        registry.register(
            "herald_intake_requests",
            "Intake API answers, by endpoint (pdus, edus) and HTTP status",
            intake.clone(),
        );
        for endpoint in ["pdus", "edus"] {
            for code in [200, 400, 500] {
                let _ = intake.get_or_create(&IntakeLabels { endpoint, code });
            }
        }
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
        for outcome in [TxnOutcome::Sent, TxnOutcome::Failed, TxnOutcome::Rejected] {
            let _ = transactions.get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            });
        }
        let destinations = Family::<StateLabels, Gauge>::default();
        registry.register(
            "herald_sender_destinations",
            "Destinations per sender state (idle, sending, backing_off, catching_up)",
            destinations.clone(),
        );
        let shards_held = gauge(
            &mut registry,
            "herald_shards_held",
            "Shards of destinations (of 256) this instance sends now",
        );
        let instance_info = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "herald_instance_info",
            "This instance's instance_name (always 1)",
            instance_info.clone(),
        );
        let oldest_undelivered = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "herald_sender_oldest_undelivered_age_seconds",
            "Age of the oldest PDU not yet delivered to every destination",
            oldest_undelivered.clone(),
        );
        Metrics {
            registry,
            shards_held,
            instance_info,
            requests,
            responses,
            duration,
            in_backoff,
            failures,
            intake,
            pdus_queued,
            edus_queued,
            pdus_sent,
            edus_sent,
            pdu_errors,
            transactions,
            destinations,
            oldest_undelivered,
            synapse,
            history: Mutex::new(VecDeque::with_capacity(RATE_SAMPLES)),
        }
    }

    /// PDUs and EDUs were queued (counted once per destination).
    pub fn queued(&self, pdus: u64, edus: u64) {
        self.pdus_queued.inc_by(pdus);
        self.edus_queued.inc_by(edus);
        self.synapse.sent_pdu_destinations.inc_by(pdus);
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
            self.synapse.sent_transactions.inc();
            self.synapse.sent_edus.inc_by(edus);
            if pdu_errors > 0 {
                self.failure_recorded(FailureKind::PduRejected);
            }
        }
    }

    /// A failure of `kind` was recorded for a destination.
    pub fn failure_recorded(&self, kind: FailureKind) {
        self.failures
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The intake API answered `status` on `endpoint` (`pdus` or `edus`).
    pub fn intake_answered(&self, endpoint: &'static str, status: u16) {
        self.intake
            .get_or_create(&IntakeLabels {
                endpoint,
                code: status,
            })
            .inc();
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

    /// Names this instance in `herald_instance_info{instance}`.
    pub fn set_instance(&self, instance_name: &str) {
        self.instance_info
            .get_or_create(&InstanceLabels {
                instance: instance_name.to_owned(),
            })
            .set(1);
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
        self.shards_held.set(gauge(sender.shards_held));
        self.synapse.pending_destinations.set(gauge(sender.sending));
        self.synapse.pending_pdus.set(gauge(sender.queued_pdus));
        self.synapse.pending_edus.set(gauge(sender.queued_edus));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn snapshot(&self, ts: i64) -> Snapshot {
        Snapshot {
            ts,
            transactions: self.synapse.sent_transactions.get(),
            pdus: self.pdus_sent.get(),
            edus: self.edus_sent.get(),
        }
    }

    /// Records the delivered counters as of `now_ms` (every
    /// [`RATE_INTERVAL`], by [`Metrics::sample_rates`]).
    pub fn sample(&self, now_ms: i64) {
        let snapshot = self.snapshot(now_ms);
        let mut history = self.history.lock();
        if history.len() == RATE_SAMPLES {
            history.pop_front();
        }
        history.push_back(snapshot);
    }

    /// The rates between consecutive snapshots, oldest first, and from the
    /// newest snapshot to `now_ms` (the interval still open).
    pub fn rates(&self, now_ms: i64) -> Vec<RateSample> {
        let now = self.snapshot(now_ms);
        let history = self.history.lock();
        history
            .iter()
            .zip(history.iter().skip(1).chain(std::iter::once(&now)))
            .filter(|(a, b)| b.ts > a.ts)
            .map(|(a, b)| {
                let ms = (b.ts - a.ts) as u64;
                let per_sec =
                    |from: u64, to: u64| to.saturating_sub(from) as f64 * 1000.0 / ms as f64;
                RateSample {
                    end_ts: b.ts,
                    duration_ms: ms,
                    transactions_per_sec: per_sec(a.transactions, b.transactions),
                    pdus_per_sec: per_sec(a.pdus, b.pdus),
                    edus_per_sec: per_sec(a.edus, b.edus),
                }
            })
            .collect()
    }

    /// Snapshots the counters every [`RATE_INTERVAL`], forever (a task of
    /// its own; the first snapshot at once).
    pub async fn sample_rates(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(herald_store::now_ms());
        }
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

    fn failure_recorded(&self, kind: FailureKind) {
        Metrics::failure_recorded(self, kind)
    }
}

impl SenderMetrics for Metrics {
    fn queued(&self, pdus: u64, edus: u64) {
        Metrics::queued(self, pdus, edus)
    }

    fn transaction(&self, outcome: TxnOutcome, pdus: u64, edus: u64, pdu_errors: u64) {
        Metrics::transaction(self, outcome, pdus, edus, pdu_errors)
    }

    fn events_queued(&self, events: u64) {
        self.synapse.sent_pdu_destinations_count.inc_by(events);
    }

    fn edu_sent(&self, edu_type: &str) {
        let label = EDU_TYPE_LABELS
            .iter()
            .find(|t| **t == edu_type)
            .copied()
            .unwrap_or("other");
        self.synapse
            .sent_edus_by_type
            .get_or_create(&TypeLabels { r#type: label })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_synapses_names_and_labels() {
        let m = Metrics::new("herald.test");
        m.request_sent("PUT");
        m.request_sent("PUT");
        m.response_received("PUT", 200, Duration::from_millis(30));
        m.response_received("GET", 429, Duration::from_millis(3));
        m.queued(3, 1);
        SenderMetrics::events_queued(&m, 2);
        m.transaction(TxnOutcome::Sent, 2, 1, 1);
        m.transaction(TxnOutcome::Failed, 1, 0, 0);
        SenderMetrics::edu_sent(&m, "m.typing");
        SenderMetrics::edu_sent(&m, "com.example.whatever");
        ClientMetrics::failure_recorded(&m, FailureKind::Tls);
        m.intake_answered("pdus", 413);
        let text = m.encode(
            7,
            SenderGauges {
                idle: 4,
                sending: 1,
                backing_off: 2,
                catching_up: 1,
                queued_pdus: 12,
                queued_edus: 5,
                oldest_undelivered_secs: 1.5,
                shards_held: 128,
            },
        );
        m.set_instance("herald-1");
        let text = text + &m.encode(7, SenderGauges::default());
        for line in [
            "herald_shards_held 128\n",
            "herald_instance_info{instance=\"herald-1\"} 1\n",
            "herald_sender_pdus_queued_total 3\n",
            "herald_sender_pdus_sent_total 2\n",
            "herald_sender_pdu_errors_total 1\n",
            "herald_sender_transactions_total{outcome=\"failed\"} 1\n",
            "herald_sender_transactions_total{outcome=\"rejected\"} 0\n",
            "herald_sender_destinations{state=\"backing_off\"} 2\n",
            "herald_sender_oldest_undelivered_age_seconds 1.5\n",
            "synapse_http_matrixfederationclient_requests_total{server_name=\"herald.test\",method=\"PUT\"} 2\n",
            "synapse_http_matrixfederationclient_responses_total{server_name=\"herald.test\",method=\"PUT\",code=\"200\"} 1\n",
            "synapse_http_matrixfederationclient_responses_total{server_name=\"herald.test\",method=\"GET\",code=\"429\"} 1\n",
            "synapse_federation_client_sent_transactions_total{server_name=\"herald.test\"} 1\n",
            "synapse_federation_client_sent_pdu_destinations_total{server_name=\"herald.test\"} 3\n",
            "synapse_federation_client_sent_pdu_destinations_count_total{server_name=\"herald.test\"} 2\n",
            "synapse_federation_client_sent_edus_total{server_name=\"herald.test\"} 1\n",
            "synapse_federation_client_sent_edus_by_type_total{server_name=\"herald.test\",type=\"m.typing\"} 1\n",
            "synapse_federation_client_sent_edus_by_type_total{server_name=\"herald.test\",type=\"other\"} 1\n",
            "synapse_federation_transaction_queue_pending_destinations{server_name=\"herald.test\"} 1\n",
            "synapse_federation_transaction_queue_pending_pdus{server_name=\"herald.test\"} 12\n",
            "synapse_federation_transaction_queue_pending_edus{server_name=\"herald.test\"} 5\n",
            "herald_federation_failures_total{kind=\"tls\"} 1\n",
            "herald_federation_failures_total{kind=\"pdu_rejected\"} 1\n",
            "herald_federation_failures_total{kind=\"dns\"} 0\n",
            "herald_intake_requests_total{endpoint=\"pdus\",code=\"413\"} 1\n",
            "herald_destinations_in_backoff 7\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        for kind in FailureKind::ALL {
            assert!(text.contains(&format!(
                "herald_federation_failures_total{{kind=\"{}\"}}",
                kind.as_str()
            )));
        }
        assert!(
            text.contains(
                "herald_federation_request_duration_seconds_bucket{le=\"0.05\",method=\"PUT\"} 1\n"
            ) || text.contains(
                "herald_federation_request_duration_seconds_bucket{method=\"PUT\",le=\"0.05\"} 1\n"
            )
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rates_are_the_differences_between_snapshots_and_the_ring_is_bounded() {
        let m = Metrics::new("herald.test");
        assert!(m.rates(1_000).is_empty(), "no snapshot yet");
        m.sample(0);
        m.transaction(TxnOutcome::Sent, 10, 4, 0);
        m.transaction(TxnOutcome::Failed, 7, 0, 0);
        m.sample(5_000);
        m.transaction(TxnOutcome::Sent, 5, 0, 0);
        let rates = m.rates(7_500);
        assert_eq!(rates.len(), 2);
        assert_eq!(
            rates[0],
            RateSample {
                end_ts: 5_000,
                duration_ms: 5_000,
                transactions_per_sec: 0.2,
                pdus_per_sec: 2.0,
                edus_per_sec: 0.8,
            }
        );
        assert_eq!(rates[1].end_ts, 7_500);
        assert_eq!(rates[1].duration_ms, 2_500);
        assert_eq!(rates[1].transactions_per_sec, 0.4);
        assert_eq!(rates[1].pdus_per_sec, 2.0);
        for i in 2..200 {
            m.sample(i * 5_000);
        }
        let rates = m.rates(200 * 5_000);
        assert_eq!(rates.len(), RATE_SAMPLES, "at most RATE_SAMPLES intervals");
        assert_eq!(rates[0].end_ts, (200 - RATE_SAMPLES as i64 + 1) * 5_000);
    }
}
