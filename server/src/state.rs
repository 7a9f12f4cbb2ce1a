//! What every request handler can reach: the store, the configuration and
//! the login rate limiters.

use std::sync::Arc;

use crate::auth::ratelimit::Limiter;
use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub failed_logins_by_user: Arc<Limiter>,
    pub failed_logins_by_address: Arc<Limiter>,
}

impl AppState {
    pub fn new(store: Store, config: Config) -> AppState {
        AppState {
            failed_logins_by_user: Arc::new(Limiter::new(config.rc_login.failed_attempts)),
            failed_logins_by_address: Arc::new(Limiter::new(config.rc_login.address)),
            store,
            config: Arc::new(config),
        }
    }
}
