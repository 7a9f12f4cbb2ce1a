//! What every request handler can reach: the store, the configuration, the
//! server's signing keys, the login rate limiters and password threads, the
//! metrics, the federation sender (off when attached to a Synapse), the
//! diagnoser and, attached, the Synapse Herald signs admins in through.

use std::sync::Arc;

use crate::auth::password::{self, Verifier};
use crate::auth::ratelimit::LoginLimits;
use crate::config::Config;
use crate::http::diagnose::Diagnoses;
use crate::metrics::Metrics;
use crate::synapse::SynapseApi;
use herald_federation::client::{FederationClient, SetupError};
use herald_federation::diagnose::Diagnoser;
use herald_keys::ServerKeys;
use herald_sender::Sender;
use herald_store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Our signing keys: the key server publishes them, federation requests
    /// are signed with them.
    pub keys: Arc<ServerKeys>,
    /// `rc_login`: the login rate limits.
    pub login_limits: Arc<LoginLimits>,
    /// The fixed threads that verify passwords (a bounded queue).
    pub passwords: Verifier,
    /// The Prometheus series (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Delivers what the intake API accepted.
    pub sender: Sender,
    /// Diagnoses destinations (`POST …/destinations/<d>/diagnose`), seeing
    /// what the sender's federation client sees.
    pub diagnoses: Arc<Diagnoses>,
    /// Attached mode (`[synapse]`): the Synapse whose tokens are checked and
    /// to which resets are forwarded. `None` when Herald is the sender.
    pub synapse: Option<SynapseApi>,
}

impl AppState {
    /// The Matrix user ID of a token's owner (`@name:server_name`; attached,
    /// Synapse's user ID as Synapse gave it).
    pub fn user_id(&self, owner: &herald_store::TokenOwner) -> String {
        if self.synapse.is_some() {
            return owner.user.clone();
        }
        format!("@{}:{}", owner.user, self.config.server_name)
    }

    /// Builds the federation client and starts the sender (in the current
    /// tokio runtime); attached (`[synapse]`), the sender stays off and
    /// [`AppState::attach`] names the Synapse.
    pub fn new(store: Store, config: Config, keys: ServerKeys) -> Result<AppState, SetupError> {
        let keys = Arc::new(keys);
        let metrics = Arc::new(Metrics::new(&config.server_name));
        metrics.set_instance(&config.instance_name);
        tokio::spawn(metrics.clone().sample_rates());
        let client = FederationClient::from_settings(
            &config.federation_settings(),
            store.destinations.clone(),
            keys.clone(),
        )?
        .with_metrics(metrics.clone())
        .with_concurrent_tries(herald_sender::MAX_CONCURRENT_TRIES);
        let diagnoses = Arc::new(Diagnoses::new(
            Diagnoser::for_client(
                &client,
                &config.federation_settings(),
                config.diagnose_settings(),
            )?,
            config.diagnose.max_concurrent,
        ));
        let sender = if config.attached() {
            Sender::off(
                store.clone(),
                Arc::new(client),
                &config.sender_settings(),
                metrics.clone(),
            )
        } else {
            Sender::start(
                store.clone(),
                Arc::new(client),
                &config.sender_settings(),
                metrics.clone(),
            )
        };
        Ok(AppState {
            login_limits: Arc::new(LoginLimits::new(&config.rc_login)),
            passwords: Verifier::start(password::hashing_threads(), password::QUEUE),
            store,
            config: Arc::new(config),
            keys,
            metrics,
            sender,
            diagnoses,
            synapse: None,
        })
    }

    /// Attached mode: tokens are Synapse's, resets go to it.
    pub fn attach(mut self, synapse: SynapseApi) -> AppState {
        self.synapse = Some(synapse);
        self
    }
}
