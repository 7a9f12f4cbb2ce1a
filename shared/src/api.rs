//! Response bodies of the federation admin API, login API and Herald's own
//! additions, shaped exactly as Synapse 1.163 returns them.

use serde::{Deserialize, Serialize};

/// One row of `GET /_synapse/admin/v1/federation/destinations`.
///
/// `retry_last_ts` and `retry_interval` are 0 when the database holds NULL;
/// `failure_ts` and `last_successful_stream_ordering` stay null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub destination: String,
    pub retry_last_ts: i64,
    pub retry_interval: i64,
    pub failure_ts: Option<i64>,
    pub last_successful_stream_ordering: Option<i64>,
}

/// `GET /_synapse/admin/v1/federation/destinations/<destination>`.
///
/// Synapse answers `failure_ts: null, retry_last_ts: 0, retry_interval: 0`
/// when the destination is not in backoff, and the stored values otherwise
/// (a stored NULL `retry_interval` then shows as null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationDetails {
    pub destination: String,
    pub last_successful_stream_ordering: Option<i64>,
    pub failure_ts: Option<i64>,
    pub retry_last_ts: i64,
    pub retry_interval: Option<i64>,
}

impl DestinationDetails {
    /// The same values as a list row (a null interval as 0), so that the
    /// details derive their status exactly as the list does.
    pub fn as_row(&self) -> Destination {
        Destination {
            destination: self.destination.clone(),
            retry_last_ts: self.retry_last_ts,
            retry_interval: self.retry_interval.unwrap_or(0),
            failure_ts: self.failure_ts,
            last_successful_stream_ordering: self.last_successful_stream_ordering,
        }
    }
}

/// Herald's `GET /_herald/admin/v1/federation/destinations/<destination>/queue`:
/// what the sender holds for a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationQueue {
    pub destination: String,
    pub state: SenderState,
    pub queued_pdus: u64,
    pub queued_edus: u64,
    /// When the oldest queued PDU was accepted (ms since the epoch).
    pub oldest_queued_ts: Option<i64>,
}

/// Where the sender stands with a destination (the queue view's `state`,
/// the `herald_sender_destinations{state}` label, the console's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderState {
    /// Nothing queued, or nothing the sender is working on.
    Idle,
    /// A queue task runs for it.
    Sending,
    /// Waiting for its backoff (or a rejection's pause) to end.
    BackingOff,
    /// Sending the newest event of each room after a long outage.
    CatchingUp,
}

impl SenderState {
    /// Every state, in the order the console and metrics list them.
    pub const ALL: [SenderState; 4] = [
        SenderState::Idle,
        SenderState::Sending,
        SenderState::BackingOff,
        SenderState::CatchingUp,
    ];

    /// The wire name (`idle`, `sending`, `backing_off`, `catching_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            SenderState::Idle => "idle",
            SenderState::Sending => "sending",
            SenderState::BackingOff => "backing_off",
            SenderState::CatchingUp => "catching_up",
        }
    }

    /// The state a wire name names; `None` for anything else.
    pub fn parse(text: &str) -> Option<SenderState> {
        SenderState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One row of `GET .../destinations/<destination>/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRoom {
    pub room_id: String,
    pub stream_ordering: i64,
}

/// The destinations list envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationsPage {
    pub destinations: Vec<Destination>,
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// The rooms-of-a-destination envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsPage {
    pub rooms: Vec<DestinationRoom>,
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// A Matrix error body: `{"errcode": "...", "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixError {
    pub errcode: String,
    pub error: String,
    /// Present on `M_LIMIT_EXCEEDED` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Body of `POST /_matrix/client/v3/login` with `m.login.password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordLogin {
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: UserIdentifier,
    pub password: String,
}

/// The `m.id.user` identifier of a login request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: String,
}

impl PasswordLogin {
    pub fn new(user: &str, password: &str) -> Self {
        PasswordLogin {
            kind: "m.login.password".into(),
            identifier: UserIdentifier {
                kind: "m.id.user".into(),
                user: user.into(),
            },
            password: password.into(),
        }
    }
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub user_id: String,
    pub access_token: String,
    pub home_server: String,
    pub device_id: String,
}

/// `GET /_matrix/client/v3/account/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user_id: String,
    #[serde(default)]
    pub is_guest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}
