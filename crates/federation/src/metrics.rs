//! What the federation client reports as it works, for whoever keeps the
//! metrics (the binary exports them under Synapse's names). The client knows
//! only this trait, not the Prometheus registry behind it.

use std::time::Duration;

use herald_shared::FailureKind;

/// Told of every try and every answer.
pub trait ClientMetrics: Send + Sync {
    /// A request is sent (each try counts).
    fn request_sent(&self, method: &str);
    /// An answer with `status` arrived `elapsed` after the request was sent.
    fn response_received(&self, method: &str, status: u16, elapsed: Duration);
    /// A failure of `kind` was recorded for a destination (each failed
    /// request once, whatever its retries).
    fn failure_recorded(&self, _kind: FailureKind) {}
}
