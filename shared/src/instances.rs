//! The instances page's body: `GET /_herald/v1/instances`, the Herald
//! instances sharing one database and the shards of destinations each
//! holds. The server fills it; the console's `/instances` page draws it.

use serde::{Deserialize, Serialize};

/// One Herald instance that has run on this database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// Its `instance_name`.
    pub name: String,
    /// When it (last) started (ms since the epoch).
    pub started_ts: i64,
    /// Its last heartbeat (ms since the epoch, the database's clock).
    pub heartbeat_ts: i64,
    /// Whether its heartbeat is recent enough (within a lease) for it to
    /// count in the split of shards.
    pub live: bool,
    /// How many shards it holds (unexpired leases).
    pub shard_count: u32,
    /// The shards it holds, ascending.
    pub shards: Vec<u16>,
}

/// The whole page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancesOverview {
    /// The instance that answered.
    pub this_instance: String,
    /// How many shards destinations are split into.
    pub shards_total: u32,
    /// Every instance known to the database, by name.
    pub instances: Vec<InstanceRow>,
}
