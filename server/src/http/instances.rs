//! `GET /_herald/admin/v1/instances`: the Herald instances sharing this
//! database, when each started and last sent its heartbeat, whether it is
//! live, and the shards of destinations each holds, with this instance's
//! name (on SQLite: this one, holding every shard). Admin token, as the
//! rest of Herald's admin API; the console's instances page draws it.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Json, Router};
use herald_shared::InstancesOverview;

use crate::auth::require_admin;
use crate::http::error::ApiResult;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/_herald/admin/v1/instances", get(instances))
}

async fn instances(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<InstancesOverview>> {
    require_admin(&state, &headers, &uri).await?;
    let instances = state
        .store
        .leases
        .instances(
            state.sender.instance_name(),
            state.sender.started_ts(),
            herald_sender::leases::lease_ms(),
        )
        .await?;
    Ok(Json(InstancesOverview {
        this_instance: state.sender.instance_name().to_owned(),
        shards_total: u32::from(herald_store::SHARDS),
        instances,
    }))
}
