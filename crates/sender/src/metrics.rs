//! What the sender reports as it works, for whoever keeps the metrics (the
//! binary exports them as `herald_sender_*`), and the gauges it is asked
//! for at scrape time. The sender knows only this trait, not the registry.

/// How a transaction ended, for `herald_sender_transactions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// 200: delivered.
    Sent,
    /// The destination could not be reached or answered 5xx/401/429.
    Failed,
    /// It answered another 4xx or something that is not a transaction
    /// response.
    Rejected,
}

impl TxnOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TxnOutcome::Sent => "sent",
            TxnOutcome::Failed => "failed",
            TxnOutcome::Rejected => "rejected",
        }
    }
}

/// Told of what is queued and of every transaction's end.
pub trait SenderMetrics: Send + Sync {
    /// PDUs and EDUs were queued (counted once per destination).
    fn queued(&self, pdus: u64, edus: u64);
    /// A transaction ended; `pdus`/`edus` delivered when it was sent, and
    /// how many PDUs the destination refused.
    fn transaction(&self, outcome: TxnOutcome, pdus: u64, edus: u64, pdu_errors: u64);
    /// `events` PDUs with at least one destination were accepted (Synapse's
    /// `synapse_federation_client_sent_pdu_destinations_count`).
    fn events_queued(&self, _events: u64) {}
    /// An EDU of `edu_type` was delivered in an acknowledged transaction
    /// (Synapse's `synapse_federation_client_sent_edus_by_type`).
    fn edu_sent(&self, _edu_type: &str) {}
}

/// The sender's state read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SenderGauges {
    /// Known destinations with nothing to send.
    pub idle: u64,
    pub sending: u64,
    pub backing_off: u64,
    pub catching_up: u64,
    /// PDUs queued over all destinations (one per event and destination).
    pub queued_pdus: u64,
    /// EDUs queued over all destinations.
    pub queued_edus: u64,
    /// Age of the oldest undelivered PDU, in seconds (0 when none).
    pub oldest_undelivered_secs: f64,
    /// Shards of destinations this instance sends now (256 on SQLite).
    pub shards_held: u64,
}
