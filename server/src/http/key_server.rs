//! The routes of the federation listener that publish who we are: the key
//! server (`GET /_matrix/key/v2/server`, self-signed, valid for
//! `key_refresh_interval`) and `GET /_matrix/federation/v1/version`. They
//! are served on `federation_listen` only, never on the admin listener.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The key server and version routes (state: [`AppState`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        // Before Matrix 1.6 a key id could follow; Synapse still answers it
        // (with the same body) and logs the request as deprecated.
        .route("/_matrix/key/v2/server/", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys_by_id))
        .route("/_matrix/federation/v1/version", get(version))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The self-signed key server body, valid until now + `key_refresh_interval`.
async fn server_keys(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let refresh =
        u64::try_from(state.config.key_refresh_interval.0.as_millis()).unwrap_or(u64::MAX);
    let valid_until_ts = now_ms().saturating_add(refresh);
    state
        .keys
        .key_server_response(valid_until_ts)
        .map(Json)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign the key server response");
            ApiError::internal()
        })
}

/// The key id is only logged, as sent (still percent-encoded): decoding it
/// could fail, and a request for our keys must not.
async fn server_keys_by_id(uri: Uri, state: State<AppState>) -> ApiResult<Json<Value>> {
    let key_id = uri.path().rsplit('/').next().unwrap_or_default();
    tracing::warn!(
        key_id = ?key_id,
        "request for our server key with a deprecated key id (dropped in Matrix 1.6)"
    );
    server_keys(state).await
}

/// As Synapse's `FederationVersionServlet`, with our name and version.
async fn version() -> Json<Value> {
    Json(json!({
        "server": { "name": "Herald", "version": env!("CARGO_PKG_VERSION") }
    }))
}
