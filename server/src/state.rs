//! What every request handler can reach: the store, the configuration, the
//! server's signing keys, the login rate limiters and the metrics.

use std::sync::Arc;

use crate::auth::ratelimit::Limiter;
use crate::config::Config;
use crate::keys::ServerKeys;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Our signing keys: the key server publishes them, federation requests
    /// are signed with them.
    pub keys: Arc<ServerKeys>,
    pub failed_logins_by_user: Arc<Limiter>,
    pub failed_logins_by_address: Arc<Limiter>,
    /// The Prometheus series (`GET /metrics`).
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(store: Store, config: Config, keys: ServerKeys) -> AppState {
        AppState {
            failed_logins_by_user: Arc::new(Limiter::new(config.rc_login.failed_attempts)),
            failed_logins_by_address: Arc::new(Limiter::new(config.rc_login.address)),
            store,
            config: Arc::new(config),
            keys: Arc::new(keys),
            metrics: Arc::new(Metrics::new()),
        }
    }
}
