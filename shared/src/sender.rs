//! The sender page's body: `GET /_herald/admin/v1/federation/sender`, what
//! the federation sender is doing as a whole — its recent rates, what is
//! queued, destinations per state, the oldest undelivered event's age and
//! the destinations with the most queued. The server fills it; the console's
//! `/sender` page draws it.

use serde::{Deserialize, Serialize};

use crate::SenderState;

/// One interval of the sender's recent history, oldest first in
/// [`SenderOverview::rates`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateSample {
    /// When the interval ended (ms since the epoch).
    pub end_ts: i64,
    /// How long it lasted, in milliseconds (the newest, still open interval
    /// is shorter than the others).
    pub duration_ms: u64,
    /// Transactions delivered (answered 200) per second.
    pub transactions_per_sec: f64,
    /// PDUs delivered per second (one per event and destination).
    pub pdus_per_sec: f64,
    /// EDUs delivered per second.
    pub edus_per_sec: f64,
}

/// How many destinations the sender holds in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderStateCounts {
    pub idle: u64,
    pub sending: u64,
    pub backing_off: u64,
    pub catching_up: u64,
}

/// A destination among those with the most queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedDestination {
    pub destination: String,
    pub queued_pdus: u64,
    pub queued_edus: u64,
    pub state: SenderState,
}

/// `GET /_herald/admin/v1/federation/sender`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderOverview {
    /// When the figures were read (ms since the epoch).
    pub now_ts: i64,
    /// The length of one interval of `rates`, in milliseconds.
    pub interval_ms: u64,
    /// The last minutes, one sample per interval, oldest first; the last
    /// one is the interval still open.
    pub rates: Vec<RateSample>,
    /// PDUs queued, over all destinations (one per event and destination).
    pub queued_pdus: u64,
    /// EDUs queued, over all destinations.
    pub queued_edus: u64,
    pub destinations: SenderStateCounts,
    /// Age of the oldest PDU not yet delivered to every destination, in
    /// seconds (0 when nothing is queued).
    pub oldest_undelivered_age_secs: f64,
    /// The destinations with the most queued (PDUs + EDUs), most first; at
    /// most [`TOP_DESTINATIONS`].
    pub top_destinations: Vec<QueuedDestination>,
}

/// How many destinations `top_destinations` lists at most.
pub const TOP_DESTINATIONS: u32 = 10;

impl SenderOverview {
    /// The highest rate in `rates` (transactions or PDUs), for a chart's
    /// scale; at least 1.
    pub fn peak_rate(&self) -> f64 {
        self.rates
            .iter()
            .flat_map(|r| [r.transactions_per_sec, r.pdus_per_sec])
            .fold(1.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_json_and_scales_to_the_highest_rate() {
        let overview = SenderOverview {
            now_ts: 1_000,
            interval_ms: 5_000,
            rates: vec![
                RateSample {
                    end_ts: 500,
                    duration_ms: 5_000,
                    transactions_per_sec: 2.0,
                    pdus_per_sec: 7.5,
                    edus_per_sec: 0.0,
                },
                RateSample {
                    end_ts: 1_000,
                    duration_ms: 500,
                    transactions_per_sec: 0.0,
                    pdus_per_sec: 0.0,
                    edus_per_sec: 1.0,
                },
            ],
            queued_pdus: 3,
            queued_edus: 1,
            destinations: SenderStateCounts {
                idle: 1,
                sending: 2,
                backing_off: 0,
                catching_up: 0,
            },
            oldest_undelivered_age_secs: 1.5,
            top_destinations: vec![QueuedDestination {
                destination: "a.example".into(),
                queued_pdus: 3,
                queued_edus: 1,
                state: SenderState::BackingOff,
            }],
        };
        let text = serde_json::to_string(&overview).unwrap();
        assert!(text.contains("\"state\":\"backing_off\""), "{text}");
        let back: SenderOverview = serde_json::from_str(&text).unwrap();
        assert_eq!(back, overview);
        assert_eq!(overview.peak_rate(), 7.5);
    }
}
