//! Running the HTTP listener until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the configured address (reporting the bound one, so port 0 works).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves the application on `listener` until shutdown.
pub async fn run(listener: TcpListener, store: Store, config: Config) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    let state = AppState::new(store.clone(), config);
    let app = crate::web::router(state, local);
    tracing::info!(address = %local, "listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    store.close().await;
    Ok(())
}

/// Binds `config.listen` and serves in the background; returns the bound
/// address (so `127.0.0.1:0` works). For tests, benchmarks and the demo.
pub async fn spawn(store: Store, config: Config) -> Result<SocketAddr, ServeError> {
    let addr = config.listen.parse().map_err(|_| {
        ServeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{}` is not a socket address", config.listen),
        ))
    })?;
    let listener = bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = run(listener, store, config).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok(local)
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
