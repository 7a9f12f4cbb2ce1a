//! Running Herald's listeners until Ctrl-C or SIGTERM: the admin/console
//! listener (`listen`) and, when configured, the federation listener
//! (`federation_listen`, see `federation_listener`). Before either serves,
//! the signing key is loaded (or generated on first start) and the TLS files
//! are read, so a bad key or certificate stops start-up with a clear error.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::accept::Limits;
use crate::config::{Config, ConfigError};
use crate::federation_listener::{FederationListenError, FederationListener};
use crate::state::AppState;
use herald_keys::{KeysError, ServerKeys};
use herald_store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Federation(#[from] FederationListenError),
    #[error("federation client: {0}")]
    Client(#[from] herald_federation::client::SetupError),
    #[error(transparent)]
    Synapse(#[from] crate::synapse::SynapseError),
    #[error("[synapse] url: Synapse's TLS client: {0}")]
    SynapseTls(#[from] herald_federation::connect::TlsConfigError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "`signing_key_path`: instance {other:?}, running on this `database`, signs with \
         another key than {path} ({key_id}): every instance must use the same key file"
    )]
    SigningKeyDiffers {
        other: String,
        path: String,
        key_id: String,
    },
    #[error(transparent)]
    Store(#[from] herald_store::StoreError),
}

/// Binds the configured address (reporting the bound one, so port 0 works).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Reads the signing key file, generating it on first start (logged with its
/// key id, never the secret), plus the configured `old_signing_keys`.
pub fn load_keys(config: &Config) -> Result<ServerKeys, KeysError> {
    let path = config.signing_key_path();
    let existed = path.exists();
    let keys = ServerKeys::load(&config.server_name, &path, &config.old_signing_keys)?;
    let key_id = keys.current().key_id();
    if existed {
        tracing::info!(%key_id, path = %path.display(), "loaded signing key");
    } else {
        tracing::info!(%key_id, path = %path.display(), "generated a new signing key");
    }
    Ok(keys)
}

/// On a database several instances share: refuses to start when a live
/// instance signs with another key (remote servers would see signatures
/// by a key the instance they ask does not publish).
async fn check_signing_key(
    store: &Store,
    config: &Config,
    keys: &ServerKeys,
) -> Result<(), ServeError> {
    let current = keys.current();
    let key_id = current.key_id();
    let signing_key = format!("{key_id} {}", current.verify_key());
    let live_ms = i64::try_from(herald_sender::leases::LEASE.as_millis()).unwrap_or(i64::MAX);
    match store
        .leases
        .check_signing_key(&config.instance_name, &signing_key, live_ms)
        .await?
    {
        None => Ok(()),
        Some(other) => Err(ServeError::SigningKeyDiffers {
            other,
            path: config.signing_key_path().display().to_string(),
            key_id,
        }),
    }
}

/// The Synapse of `[synapse]`, checked: `url` must answer as a Synapse, or
/// start-up stops with a message naming the setting.
async fn attach(
    section: &crate::config::SynapseSection,
    config: &Config,
) -> Result<crate::synapse::SynapseApi, ServeError> {
    let api = crate::synapse::SynapseApi::new(
        &section.base_url(),
        section.token_cache.0,
        config.tls_client_config()?,
    )?;
    let version = api.check().await?;
    tracing::info!(url = %api.url(), version = ?version, "attached to Synapse");
    Ok(api)
}

/// Herald with its keys loaded and its listeners bound, ready to serve.
pub struct Server {
    admin: TcpListener,
    federation: Option<FederationListener>,
    state: AppState,
}

/// Where a spawned server listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub admin: SocketAddr,
    pub federation: Option<SocketAddr>,
}

impl Server {
    /// Loads the signing keys and the TLS files and binds the federation
    /// listener, if any; `admin` is the bound `listen` address.
    pub async fn prepare(
        admin: TcpListener,
        store: Store,
        config: Config,
    ) -> Result<Server, ServeError> {
        let keys = load_keys(&config)?;
        check_signing_key(&store, &config, &keys).await?;
        let synapse = match &config.synapse {
            Some(section) => Some(attach(section, &config).await?),
            None => None,
        };
        let federation = FederationListener::bind(&config).await?;
        let mut state = AppState::new(store, config, keys)?;
        if let Some(synapse) = synapse {
            state = state.attach(synapse);
        }
        Ok(Server {
            admin,
            federation,
            state,
        })
    }

    pub fn addresses(&self) -> Result<Addresses, ServeError> {
        Ok(Addresses {
            admin: self.admin.local_addr()?,
            federation: self
                .federation
                .as_ref()
                .map(FederationListener::local_addr)
                .transpose()?,
        })
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run(self) -> Result<(), ServeError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes; then both listeners stop together,
    /// finishing the requests under way.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Addresses { admin, federation } = self.addresses()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let store = self.state.store.clone();
        let limits = Limits::from_config(&self.state.config, crate::accept::open_files_limit());
        tracing::info!(
            max_connections = limits.max_connections,
            header_read_timeout = ?limits.header_read_timeout,
            "connection limits per listener"
        );
        let app = crate::http::router(self.state.clone(), admin);
        let admin_server =
            crate::accept::serve(self.admin, None, app, limits.clone(), "admin", stopped());
        match (self.federation, federation) {
            (Some(listener), Some(addr)) => {
                let tls = listener.is_tls();
                let app = crate::federation_listener::router(self.state.clone());
                tracing::info!(federation = %addr, tls, "federation listening");
                tracing::info!(address = %admin, "listening");
                tokio::try_join!(admin_server, listener.serve(app, limits, stopped()))?;
            }
            _ => {
                tracing::info!(address = %admin, "listening");
                admin_server.await?;
            }
        }
        // The other instances on the database take this one's shards now.
        self.state.sender.leave().await;
        store.close().await;
        Ok(())
    }
}

/// Serves the application on `listener` (and the federation listener, when
/// configured) until shutdown.
pub async fn run(listener: TcpListener, store: Store, config: Config) -> Result<(), ServeError> {
    Server::prepare(listener, store, config).await?.run().await
}

/// Binds `config.listen` (and `federation_listen`) and serves in the
/// background; returns the bound admin address (so `127.0.0.1:0` works). For
/// tests, benchmarks and the demo.
pub async fn spawn(store: Store, config: Config) -> Result<SocketAddr, ServeError> {
    Ok(spawn_all(store, config).await?.admin)
}

/// As [`spawn`], returning the federation listener's address too.
pub async fn spawn_all(store: Store, config: Config) -> Result<Addresses, ServeError> {
    let server = Server::prepare(bind(config.listen_addr()?).await?, store, config).await?;
    let addresses = server.addresses()?;
    tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok(addresses)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
