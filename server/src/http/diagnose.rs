//! `POST /_herald/admin/v1/federation/destinations/<d>/diagnose`: an admin
//! asks Herald to diagnose a destination from its own vantage point
//! (`herald_federation::diagnose`) and gets the report
//! (`herald_shared::DiagnoseReport`). Any valid server name may be
//! diagnosed, known as a destination or not (admins check servers before
//! Herald ever sends to them); an invalid one is `400 M_INVALID_PARAM`.
//!
//! Bounds ([`Diagnoses`]): one diagnosis per destination at a time and at
//! most `[diagnose] max_concurrent` in all; a request past either is
//! answered `429 M_LIMIT_EXCEEDED` at once rather than queued (a
//! diagnosis takes seconds, and the admin's second click should not start
//! a second one). Each step's time is bounded by `[diagnose] step_timeout`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use herald_federation::diagnose::{DiagnoseError, Diagnoser};
use herald_federation::resolve::ServerName;
use herald_shared::{percent_decode_path, DiagnoseReport};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::require_admin;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

const PREFIX: &str = "/_herald/admin/v1/federation/destinations/";

/// How long a refused caller is told to wait: about one diagnosis.
const RETRY_AFTER_MS: u64 = 5_000;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/_herald/admin/v1/federation/destinations/{destination}/diagnose",
        post(diagnose),
    )
}

/// The diagnoser and the diagnoses under way.
pub struct Diagnoses {
    diagnoser: Diagnoser,
    /// Destinations being diagnosed now.
    under_way: Arc<Mutex<HashSet<String>>>,
    /// One permit per diagnosis under way, all destinations together.
    slots: Arc<Semaphore>,
}

/// A diagnosis's place: frees its destination and slot when dropped (also
/// when the admin's request is dropped half-way).
struct Place {
    destination: String,
    under_way: Arc<Mutex<HashSet<String>>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.under_way.lock().remove(&self.destination);
    }
}

impl Diagnoses {
    pub fn new(diagnoser: Diagnoser, max_concurrent: usize) -> Diagnoses {
        Diagnoses {
            diagnoser,
            under_way: Arc::new(Mutex::new(HashSet::new())),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// A place for a diagnosis of `destination`, or 429.
    fn begin(&self, destination: &str) -> ApiResult<Place> {
        let busy = |why: &str| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", why)
                .with("retry_after_ms", RETRY_AFTER_MS.into())
        };
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("Too many diagnoses under way; try again shortly."))?;
        // One name however it is written (DNS names ignore case).
        let key = destination.to_ascii_lowercase();
        if !self.under_way.lock().insert(key.clone()) {
            return Err(busy("This destination is being diagnosed already."));
        }
        Ok(Place {
            destination: key,
            under_way: self.under_way.clone(),
            _slot: slot,
        })
    }

    /// Diagnoses `destination` within the bounds.
    pub async fn run(&self, destination: &str) -> ApiResult<DiagnoseReport> {
        if ServerName::parse(destination).is_err() {
            return Err(invalid_name(destination));
        }
        let _place = self.begin(destination)?;
        self.diagnoser
            .diagnose(destination)
            .await
            .map_err(|DiagnoseError::InvalidServerName(name)| invalid_name(&name))
    }
}

fn invalid_name(name: &str) -> ApiError {
    let shown: String = name.chars().take(100).collect();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
        format!("{shown:?} is not a valid server name"),
    )
}

async fn diagnose(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<DiagnoseReport>> {
    let segment = uri
        .path()
        .strip_prefix(PREFIX)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let destination = percent_decode_path(segment);
    let admin = require_admin(&state, &headers, &uri).await?;
    tracing::info!(destination = ?destination, admin = ?admin.user, "diagnosis asked");
    Ok(Json(state.diagnoses.run(&destination).await?))
}
